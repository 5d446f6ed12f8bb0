/**
 * Runs every benchmark in this folder and prints one comparison table per benchmark.
 *
 * Each `bench/*_bench.ts` exports a function named `bench...()` that returns rows (plain objects; the
 * columns are their keys, e.g. `case`, `ours`, `baseline`, `ratio`). Usage: `deno task bench [NAME...]`.
 *
 * @module
 */

export { type BenchRow, formatTable } from "./_table.ts";
import { type BenchRow, formatTable } from "./_table.ts";

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
