/**
 * The comparison table every benchmark prints. Kept apart from `main.ts`: a benchmark importing the
 * runner that is importing it would deadlock on the runner's top-level await.
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
 * import { formatTable } from "./_table.ts";
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
