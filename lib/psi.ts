/**
 * Pressure stall information (`/proc/pressure/memory`, `cpu`, `io`; cgroup v2 `*.pressure`).
 *
 * Shared by `oom_mitigate`, the health check and `watch_builders`: {@link Pressure} is a stable
 * type, new fields are only ever added.
 *
 * @module
 */

import { ParseError } from "./errors.ts";
import type { Target } from "./target.ts";

/** One PSI line: the share of wall time some (or all) tasks were stalled. */
export interface PressureLine {
  /** Percentage over the last 10 s (0–100). */
  avg10: number;
  /** Percentage over the last 60 s. */
  avg60: number;
  /** Percentage over the last 300 s. */
  avg300: number;
  /** Total stall time since boot, in microseconds (a counter). */
  totalUs: number;
}

/** A whole pressure file. */
export interface Pressure {
  /** `some`: at least one task stalled. */
  some: PressureLine;
  /** `full`: all non-idle tasks stalled at once (absent for `cpu` before Linux 5.13). */
  full?: PressureLine;
}

/** The resources the kernel reports pressure for. */
export type PressureResource = "memory" | "cpu" | "io";

const LINE =
  /^(some|full)\s+avg10=(\d+(?:\.\d+)?)\s+avg60=(\d+(?:\.\d+)?)\s+avg300=(\d+(?:\.\d+)?)\s+total=(\d+)\s*$/;

/**
 * Parses a PSI file (`some ...` and optionally `full ...`).
 *
 * @example
 * ```ts
 * import { parsePressure } from "./psi.ts";
 * import assert from "node:assert/strict";
 *
 * const psi = parsePressure(
 *   "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\nfull avg10=0.75 avg60=0.10 avg300=0.00 total=6543\n",
 * );
 * assert.equal(psi.some.avg10, 1.5);
 * assert.equal(psi.full?.totalUs, 6543);
 * ```
 */
export function parsePressure(text: string, input = "/proc/pressure/memory"): Pressure {
  let some: PressureLine | undefined;
  let full: PressureLine | undefined;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    const match = LINE.exec(line);
    if (!match) {
      throw new ParseError(
        input,
        `expected 'some|full avg10=.. avg60=.. avg300=.. total=..', got '${line.slice(0, 80)}'`,
        { line: i + 1 },
      );
    }
    const parsed: PressureLine = {
      avg10: Number(match[2]),
      avg60: Number(match[3]),
      avg300: Number(match[4]),
      totalUs: Number(match[5]),
    };
    if (match[1] === "some") some = parsed;
    else full = parsed;
  }
  if (some === undefined) throw new ParseError(input, "no 'some' line", { line: lines.length });
  return full === undefined ? { some } : { some, full };
}

/**
 * Reads a target's `/proc/pressure/<resource>`; `null` when the kernel has no PSI (built without
 * `CONFIG_PSI`, or booted with `psi=0`, where the file is absent or unreadable with EOPNOTSUPP).
 *
 * @example
 * ```ts
 * import { readPressure } from "./psi.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [],
 *   paths: { "/proc/pressure/memory": { exists: false } },
 *   files: {},
 * });
 * assert.equal(await readPressure(target), null);
 * ```
 */
export async function readPressure(
  target: Target,
  resource: PressureResource = "memory",
): Promise<Pressure | null> {
  const path = `/proc/pressure/${resource}`;
  let text: string | null;
  try {
    text = await target.readFile(path);
  } catch (error) {
    // psi=0: the file exists but reading it fails with "Operation not supported".
    if (/not supported|EOPNOTSUPP/i.test((error as Error).message)) return null;
    throw error;
  }
  return text === null ? null : parsePressure(text, path);
}

/**
 * The stall percentage between two readings of the same line, from the `total` counter: what
 * share of `elapsedMs` tasks were stalled. Clamped to 0–100.
 *
 * @example
 * ```ts
 * import { stallPercent } from "./psi.ts";
 * import assert from "node:assert/strict";
 *
 * const before = { avg10: 0, avg60: 0, avg300: 0, totalUs: 1_000_000 };
 * const after = { avg10: 0, avg60: 0, avg300: 0, totalUs: 1_500_000 };
 * assert.equal(stallPercent(before, after, 2000), 25);
 * ```
 */
export function stallPercent(before: PressureLine, after: PressureLine, elapsedMs: number): number {
  if (elapsedMs <= 0) return 0;
  const stalledMs = (after.totalUs - before.totalUs) / 1000;
  return Math.min(100, Math.max(0, (stalledMs / elapsedMs) * 100));
}
