/**
 * monitoring-plugins (Nagios, Icinga, Naemon, Sensu) conventions: threshold ranges (`10`, `10:`,
 * `~:10`, `10:20`, `@10:20`) and the one-line plugin output `STATUS: summary | perfdata`, with
 * perfdata `'label'=value[UOM];[warn];[crit];[min];[max]`.
 *
 * @module
 */

import { ParseError } from "./errors.ts";
import type { Status } from "./findings.ts";

/**
 * A monitoring-plugins threshold range. A value *alerts* when it lies outside `start..end`, or,
 * with `inside` (the `@` prefix), when it lies inside it (both ends inclusive).
 */
export interface Threshold {
  /** Lower end; `-Infinity` for `~`. */
  start: number;
  /** Upper end; `Infinity` when the range ends with `:`. */
  end: number;
  /** `@`: alert inside the range instead of outside. */
  inside: boolean;
  /** The text it was parsed from. */
  text: string;
}

/** Options for {@link parseThreshold}. */
export interface ParseThresholdOptions {
  /** The input's name in error messages, e.g. the flag (`--warning`). Default `threshold`. */
  input?: string;
  /**
   * Reads one end of the range (default: a decimal number such as `10`, `-5`, `0.5`). Throw an
   * `Error` whose message says what is wrong; it is reported with the input and column.
   */
  parseValue?: (text: string) => number;
}

function parseDecimal(text: string): number {
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)$/.test(text)) throw new Error(`'${text}' is not a number`);
  return Number(text);
}

/**
 * Parses a threshold with monitoring-plugins semantics:
 *
 * | text     | alerts when          |
 * | -------- | -------------------- |
 * | `10`     | value < 0 or > 10    |
 * | `10:`    | value < 10           |
 * | `~:10`   | value > 10           |
 * | `10:20`  | value < 10 or > 20   |
 * | `@10:20` | 10 ≤ value ≤ 20      |
 *
 * Throws {@link ParseError} (input, column, reason) for anything else.
 *
 * @example
 * ```ts
 * import { parseThreshold, thresholdAlerts } from "./nagios.ts";
 * import assert from "node:assert/strict";
 *
 * const low = parseThreshold("10:");
 * assert.equal(thresholdAlerts(low, 9.5), true);
 * assert.equal(thresholdAlerts(low, 10), false);
 * assert.equal(thresholdAlerts(parseThreshold("~:10"), 11), true);
 * assert.equal(thresholdAlerts(parseThreshold("10"), -1), true);
 * assert.equal(thresholdAlerts(parseThreshold("@10:20"), 20), true);
 * assert.throws(() => parseThreshold("20:10", { input: "--warning" }), /--warning:1:1: .*greater/);
 * ```
 */
export function parseThreshold(text: string, options: ParseThresholdOptions = {}): Threshold {
  const input = options.input ?? "threshold";
  const parseValue = options.parseValue ?? parseDecimal;
  const fail = (reason: string, column = 1): never => {
    throw new ParseError(input, reason, { line: 1, column });
  };
  const raw = text;
  if (raw.trim() === "") fail("the threshold is empty (e.g. 10, 10:, ~:10, @10:20)");
  if (raw !== raw.trim()) fail(`'${raw}' has spaces around it`);
  let rest = raw;
  let offset = 1;
  const inside = rest.startsWith("@");
  if (inside) {
    rest = rest.slice(1);
    offset++;
  }
  const value = (part: string, column: number): number => {
    try {
      const n = parseValue(part);
      if (Number.isNaN(n)) throw new Error(`'${part}' is not a number`);
      return n;
    } catch (error) {
      return fail(error instanceof Error ? error.message : String(error), column);
    }
  };
  const colon = rest.indexOf(":");
  let start: number;
  let end: number;
  if (colon < 0) {
    if (rest === "" || rest === "~") fail(`'${raw}' has no upper end`, offset);
    start = 0;
    end = value(rest, offset);
  } else {
    if (rest.indexOf(":", colon + 1) >= 0) {
      fail(`'${raw}' has more than one ':'`, offset + rest.indexOf(":", colon + 1));
    }
    const left = rest.slice(0, colon);
    const right = rest.slice(colon + 1);
    if (left === "") fail(`'${raw}' has nothing before ':' (use ~ for minus infinity)`, offset);
    start = left === "~" ? -Infinity : value(left, offset);
    end = right === "" ? Infinity : value(right, offset + colon + 1);
  }
  if (start > end) fail(`'${raw}': the start is greater than the end`, offset);
  return { start, end, inside, text: raw };
}

/**
 * Whether a value alerts under a threshold (outside the range, or inside it for `@`).
 *
 * @example
 * ```ts
 * import { parseThreshold, thresholdAlerts } from "./nagios.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(thresholdAlerts(parseThreshold("5:10"), 4), true);
 * assert.equal(thresholdAlerts(parseThreshold("5:10"), 7), false);
 * ```
 */
export function thresholdAlerts(threshold: Threshold, value: number): boolean {
  const within = value >= threshold.start && value <= threshold.end;
  return threshold.inside ? within : !within;
}

/**
 * Formats a number for perfdata: a plain decimal (no exponent), at most `decimals` places, trailing
 * zeros dropped.
 *
 * @example
 * ```ts
 * import { formatPerfNumber } from "./nagios.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatPerfNumber(0.1 + 0.2), "0.3");
 * assert.equal(formatPerfNumber(270553174016), "270553174016");
 * assert.equal(formatPerfNumber(1e-9), "0");
 * ```
 */
export function formatPerfNumber(value: number, decimals = 3): string {
  if (!Number.isFinite(value)) throw new RangeError(`Cannot put ${value} into perfdata`);
  let text = value.toFixed(decimals);
  if (text.includes(".")) text = text.replace(/0+$/, "").replace(/\.$/, "");
  return text === "-0" ? "0" : text;
}

/**
 * Formats a threshold for perfdata, optionally converted into the value's unit by `scale`
 * (e.g. a percentage of a disk into bytes).
 *
 * @example
 * ```ts
 * import { formatThreshold, parseThreshold } from "./nagios.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatThreshold(parseThreshold("10")), "10");
 * assert.equal(formatThreshold(parseThreshold("~:10")), "~:10");
 * assert.equal(formatThreshold(parseThreshold("@1:2")), "@1:2");
 * assert.equal(formatThreshold(parseThreshold("10:"), (v) => v * 1000), "10000:");
 * ```
 */
export function formatThreshold(
  threshold: Threshold,
  scale: (v: number) => number = (v) => v,
): string {
  const at = threshold.inside ? "@" : "";
  const end = threshold.end === Infinity ? "" : formatPerfNumber(scale(threshold.end));
  if (threshold.start === 0 && !threshold.inside && end !== "") return end;
  const start = threshold.start === -Infinity ? "~" : formatPerfNumber(scale(threshold.start));
  return `${at}${start}:${end}`;
}

/** Units of measure that monitoring-plugins perfdata allows. */
export type PerfUom = "" | "s" | "ms" | "us" | "%" | "B" | "KB" | "MB" | "TB" | "c";

/** One perfdata item. */
export interface PerfData {
  /** The label (any text without `=`; quoted on output, `'` doubled). */
  label: string;
  /** The value, in `uom`. */
  value: number;
  /** Unit of measure (default none). */
  uom?: PerfUom;
  /** Warning range, in the value's unit: a {@link Threshold} or its perfdata text. */
  warn?: Threshold | string;
  /** Critical range, in the value's unit. */
  crit?: Threshold | string;
  /** Smallest possible value. */
  min?: number;
  /** Largest possible value. */
  max?: number;
}

/**
 * Formats one perfdata item: `'label'=value[UOM];[warn];[crit];[min];[max]`, trailing empty fields
 * dropped.
 *
 * @example
 * ```ts
 * import { formatPerfData } from "./nagios.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   formatPerfData({ label: "store free", value: 1024, uom: "B", warn: "500:", min: 0, max: 4096 }),
 *   "'store free'=1024B;500:;;0;4096",
 * );
 * assert.equal(formatPerfData({ label: "load", value: 0.25 }), "'load'=0.25");
 * ```
 */
export function formatPerfData(item: PerfData): string {
  if (item.label === "" || item.label.includes("=") || /[\n\r]/.test(item.label)) {
    throw new RangeError(`Perfdata label '${item.label}' is empty or has '=' or a newline`);
  }
  const range = (t: Threshold | string | undefined) =>
    t === undefined ? "" : typeof t === "string" ? t : formatThreshold(t);
  const fields = [
    `'${item.label.replaceAll("'", "''")}'=${formatPerfNumber(item.value)}${item.uom ?? ""}`,
    range(item.warn),
    range(item.crit),
    item.min === undefined ? "" : formatPerfNumber(item.min),
    item.max === undefined ? "" : formatPerfNumber(item.max),
  ];
  while (fields.length > 1 && fields.at(-1) === "") fields.pop();
  return fields.join(";");
}

const NAGIOS_STATUS: Record<Status, string> = {
  ok: "OK",
  warning: "WARNING",
  critical: "CRITICAL",
  unknown: "UNKNOWN",
};

/**
 * The plugin output line: `STATUS: summary | perfdata...` and a newline. The summary is made one
 * line without `|` (which would start the perfdata).
 *
 * @example
 * ```ts
 * import { renderNagios } from "./nagios.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   renderNagios("warning", "store 8% free", [{ label: "store_free", value: 8, uom: "%", warn: "10:" }]),
 *   "WARNING: store 8% free | 'store_free'=8%;10:\n",
 * );
 * assert.equal(renderNagios("ok", "a|b\nc"), "OK: a/b; c\n");
 * ```
 */
export function renderNagios(
  status: Status,
  summary: string,
  perfdata: readonly PerfData[] = [],
): string {
  const text = summary.replace(/\s*[\r\n]+\s*/g, "; ").replaceAll("|", "/").trim();
  const perf = perfdata.map(formatPerfData).join(" ");
  return `${NAGIOS_STATUS[status]}: ${text}${perf === "" ? "" : ` | ${perf}`}\n`;
}
