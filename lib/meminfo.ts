/**
 * `/proc/meminfo`: memory and swap of a Linux machine, in bytes.
 *
 * Shared by `oom_mitigate`, the health check and `watch_builders`: {@link MemInfo} is a stable type,
 * new fields are only ever added.
 *
 * @module
 */

import { ParseError } from "./errors.ts";
import type { Target } from "./target.ts";

/** Memory and swap figures of a machine, all in bytes. */
export interface MemInfo {
  /** `MemTotal`: usable RAM. */
  totalBytes: number;
  /** `MemFree`: RAM nobody uses (not the same as available). */
  freeBytes: number;
  /**
   * `MemAvailable`: what new work can get without swapping (Linux 3.14+). Older kernels lack it;
   * then `MemFree + Buffers + Cached` stands in and {@link MemInfo.availableEstimated} is true.
   */
  availableBytes: number;
  /** Whether `availableBytes` is the old-kernel estimate. */
  availableEstimated: boolean;
  /** `SwapTotal`. */
  swapTotalBytes: number;
  /** `SwapFree`. */
  swapFreeBytes: number;
  /** Every line by name: `kB` values converted to bytes, unit-less ones (`HugePages_Total`) as is. */
  fields: Record<string, number>;
}

const LINE = /^([A-Za-z0-9_()]+):\s+(\d+)(?:\s+(kB))?\s*$/;

/**
 * Parses `/proc/meminfo` text.
 *
 * Throws {@link ParseError} naming the line when a line is malformed or `MemTotal`, `MemFree`,
 * `SwapTotal` or `SwapFree` is missing.
 *
 * @example
 * ```ts
 * import { parseMeminfo } from "./meminfo.ts";
 * import assert from "node:assert/strict";
 *
 * const info = parseMeminfo(
 *   "MemTotal:       16384000 kB\nMemFree:  1000 kB\nMemAvailable:    8192000 kB\n" +
 *     "SwapTotal:             0 kB\nSwapFree:              0 kB\nHugePages_Total:       0\n",
 * );
 * assert.equal(info.totalBytes, 16384000 * 1024);
 * assert.equal(info.availableBytes, 8192000 * 1024);
 * assert.equal(info.fields.HugePages_Total, 0);
 * ```
 */
export function parseMeminfo(text: string, input = "/proc/meminfo"): MemInfo {
  const fields: Record<string, number> = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === "") continue;
    const match = LINE.exec(line);
    if (!match) {
      throw new ParseError(input, `expected 'Name: value [kB]', got '${line.slice(0, 80)}'`, {
        line: i + 1,
      });
    }
    const value = Number(match[2]);
    fields[match[1]!] = match[3] ? value * 1024 : value;
  }
  const need = (name: string): number => {
    const value = fields[name];
    // Missing at the end of the input.
    if (value === undefined) {
      throw new ParseError(input, `no '${name}' line`, { line: lines.length });
    }
    return value;
  };
  const totalBytes = need("MemTotal");
  const freeBytes = need("MemFree");
  const swapTotalBytes = need("SwapTotal");
  const swapFreeBytes = need("SwapFree");
  const available = fields.MemAvailable;
  return {
    totalBytes,
    freeBytes,
    availableBytes: available ?? freeBytes + (fields.Buffers ?? 0) + (fields.Cached ?? 0),
    availableEstimated: available === undefined,
    swapTotalBytes,
    swapFreeBytes,
    fields,
  };
}

/**
 * Reads and parses a target's `/proc/meminfo`. Throws `TargetError` when it cannot be read, and
 * {@link ParseError} when it is absent or malformed.
 *
 * @example
 * ```ts
 * import { readMeminfo } from "./meminfo.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const info = await readMeminfo(new LocalTarget());
 * assert.ok(info.totalBytes > 0);
 * ```
 */
export async function readMeminfo(target: Target): Promise<MemInfo> {
  const text = await target.readFile("/proc/meminfo");
  if (text === null) throw new ParseError("/proc/meminfo", "the file does not exist (not Linux?)");
  return parseMeminfo(text);
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/**
 * Formats bytes for people: `1.5 GiB`, `512 MiB`, `0 B`.
 *
 * @example
 * ```ts
 * import { formatBytes } from "./meminfo.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatBytes(16 * 1024 ** 3), "16.0 GiB");
 * assert.equal(formatBytes(1536 * 1024), "1.5 MiB");
 * assert.equal(formatBytes(0), "0 B");
 * ```
 */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/**
 * Parses a size with an optional binary unit (`512M`, `2G`, `1.5GiB`, `1048576`) into bytes, as
 * `zramctl --size` reads it.
 *
 * @example
 * ```ts
 * import { parseSize } from "./meminfo.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseSize("2G"), 2 * 1024 ** 3);
 * assert.equal(parseSize("1.5GiB"), 1.5 * 1024 ** 3);
 * assert.equal(parseSize("4096"), 4096);
 * assert.throws(() => parseSize("lots"), /not a size/);
 * ```
 */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text);
  if (!match) throw new ParseError("size", `'${text.slice(0, 40)}' is not a size (e.g. 512M, 2G)`);
  const power = " KMGT".indexOf((match[2] || " ").toUpperCase());
  return Math.round(Number(match[1]) * 1024 ** power);
}
