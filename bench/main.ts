/**
 * Runs every benchmark in this folder and prints one comparison table per benchmark.
 *
 * Each `bench/*_bench.ts` exports a function named `bench...()` that returns rows (plain objects; the
 * columns are their keys, e.g. `case`, `ours`, `baseline`, `ratio`). Usage: `deno task bench [NAME...]`.
 *
 * @module
 */

/** One row of a comparison table. */
export type BenchRow = Record<string, string | number | boolean | undefined>;

/**
 * Formats rows as an aligned plain-text table.
 *
 * @example
 * ```ts
 * import { formatTable } from "./main.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatTable([{ a: 1, b: "x" }]), "a  b\n-  -\n1  x\n");
 * ```
 */
export function formatTable(rows: BenchRow[]): string {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: BenchRow[string]) => (v === undefined ? "" : String(v));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (values: string[]) =>
    values.map((v, i) => v.padEnd(widths[i]!)).join("  ").trimEnd();
  return [
    line(columns),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map((r) => line(columns.map((c) => cell(r[c])))),
  ].join("\n") + "\n";
}

if (import.meta.main) {
  const dir = new URL(".", import.meta.url).pathname;
  const only = Deno.args;
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith("_bench.ts")) files.push(entry.name);
  }
  files.sort();
  let failed = 0;
  for (const file of files) {
    const name = file.replace(/_bench\.ts$/, "");
    if (only.length > 0 && !only.includes(name)) continue;
    const module = await import(`${dir}${file}`) as Record<string, unknown>;
    const fn = Object.entries(module).find(([k, v]) =>
      k.startsWith("bench") && typeof v === "function"
    );
    if (!fn) continue;
    console.log(`\n## ${name}\n`);
    try {
      const rows = await (fn[1] as () => Promise<BenchRow[]>)();
      console.log(formatTable(rows));
    } catch (error) {
      failed++;
      console.log(`failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  Deno.exit(failed > 0 ? 1 : 0);
}
