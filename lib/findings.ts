/**
 * The findings model every script reports with, and its renderers.
 *
 * @module
 */

/** A check's verdict, monitoring-plugins style. */
export type Status = "ok" | "warning" | "critical" | "unknown";

/** One thing a check found. */
export interface Finding {
  /** Stable `area/slug` id, documented on the script's runbook page. */
  id: string;
  /** Its verdict. */
  status: Status;
  /** One line saying what was found, naming the thing it is about. */
  summary: string;
  /** More lines of explanation. */
  detail?: string;
  /** What to do about it. */
  fix?: string;
  /** Machine-readable facts behind the finding. */
  data?: unknown;
}

/** A script's whole answer. */
export interface Report {
  /** The script's name, e.g. `show_config`. */
  tool: string;
  /** The project version. */
  version: string;
  /** Where the checks ran. */
  host: string;
  /** The worst status among the findings (`ok` when there are none). */
  status: Status;
  /** What was found, in check order. */
  findings: Finding[];
  /** Structured data the script shows besides findings (parsed settings, machines...). */
  data?: unknown;
}

/** The project version shown by `--version` and in every report. */
export const VERSION = "0.1.0";

const SEVERITY: Record<Status, number> = { ok: 0, unknown: 1, warning: 2, critical: 3 };
const EXIT_CODES: Record<Status, number> = { ok: 0, warning: 1, critical: 2, unknown: 3 };

/**
 * The worst of several statuses: critical > warning > unknown > ok.
 *
 * @example
 * ```ts
 * import { worstStatus } from "./findings.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(worstStatus(["ok", "unknown", "warning"]), "warning");
 * assert.equal(worstStatus([]), "ok");
 * ```
 */
export function worstStatus(statuses: Iterable<Status>): Status {
  let worst: Status = "ok";
  for (const status of statuses) {
    if (SEVERITY[status] > SEVERITY[worst]) worst = status;
  }
  return worst;
}

/**
 * The process exit code for a status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
 *
 * @example
 * ```ts
 * import { exitCodeFor } from "./findings.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(exitCodeFor("critical"), 2);
 * ```
 */
export function exitCodeFor(status: Status): number {
  return EXIT_CODES[status];
}

/**
 * Builds a finding, leaving out empty optional fields (so `--json` stays stable).
 *
 * @example
 * ```ts
 * import { finding } from "./findings.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(finding("binfmt/ok", "ok", "fine", { detail: "" }), {
 *   id: "binfmt/ok",
 *   status: "ok",
 *   summary: "fine",
 * });
 * ```
 */
export function finding(
  id: string,
  status: Status,
  summary: string,
  extra: { detail?: string | undefined; fix?: string | undefined; data?: unknown } = {},
): Finding {
  const f: Finding = { id, status, summary };
  if (extra.detail !== undefined && extra.detail !== "") f.detail = extra.detail;
  if (extra.fix !== undefined) f.fix = extra.fix;
  if (extra.data !== undefined) f.data = extra.data;
  return f;
}

/** What {@link makeReport} needs. */
export interface MakeReportOptions {
  /** The script's name. */
  tool: string;
  /** Where the checks ran. */
  host: string;
  /** Structured data besides findings. */
  data?: unknown;
}

/**
 * Builds a report whose status is the worst of its findings.
 *
 * @example
 * ```ts
 * import { makeReport } from "./findings.ts";
 * import assert from "node:assert/strict";
 *
 * const report = makeReport([{ id: "nix/missing", status: "critical", summary: "nix is not installed" }], {
 *   tool: "doctor",
 *   host: "localhost",
 * });
 * assert.equal(report.status, "critical");
 * ```
 */
export function makeReport(findings: Finding[], options: MakeReportOptions): Report {
  const report: Report = {
    tool: options.tool,
    version: VERSION,
    host: options.host,
    status: worstStatus(findings.map((f) => f.status)),
    findings,
  };
  if (options.data !== undefined) report.data = options.data;
  return report;
}

/**
 * The report as stable, pretty-printed JSON (what `--json` prints).
 *
 * @example
 * ```ts
 * import { makeReport, renderJson } from "./findings.ts";
 * import assert from "node:assert/strict";
 *
 * const json = JSON.parse(renderJson(makeReport([], { tool: "t", host: "h" })));
 * assert.deepEqual(Object.keys(json), ["tool", "version", "host", "status", "findings"]);
 * ```
 */
export function renderJson(report: Report): string {
  return JSON.stringify(report, null, 2) + "\n";
}

/** Options for {@link renderText}. */
export interface RenderTextOptions {
  /** Use ANSI colours. Default: only on a TTY and without `NO_COLOR`. */
  color?: boolean;
  /** Also list OK findings' details. */
  verbose?: boolean;
}

const LABELS: Record<Status, string> = {
  ok: "OK",
  warning: "WARNING",
  critical: "CRITICAL",
  unknown: "UNKNOWN",
};
const COLORS: Record<Status, string> = {
  ok: "\x1b[32m",
  warning: "\x1b[33m",
  critical: "\x1b[31m",
  unknown: "\x1b[35m",
};

/**
 * Whether stdout should get colour: a TTY, and `NO_COLOR` unset.
 *
 * @example
 * ```ts
 * import { shouldColor } from "./findings.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(typeof shouldColor(), "boolean");
 * ```
 */
export function shouldColor(): boolean {
  try {
    if (Deno.env.get("NO_COLOR") !== undefined) return false;
    return Deno.stdout.isTerminal();
  } catch {
    return false;
  }
}

/**
 * The report for people: a header, one aligned line per finding, detail and a `fix:` line under problems.
 *
 * @example
 * ```ts
 * import { makeReport, renderText } from "./findings.ts";
 * import assert from "node:assert/strict";
 *
 * const text = renderText(
 *   makeReport([{ id: "machines/missing-file", status: "critical", summary: "no machines", fix: "create it" }], {
 *     tool: "show_config",
 *     host: "localhost",
 *   }),
 *   { color: false },
 * );
 * assert.match(text, /CRITICAL  machines\/missing-file  no machines\n +fix: create it/);
 * ```
 */
export function renderText(report: Report, options: RenderTextOptions = {}): string {
  const color = options.color ?? shouldColor();
  const paint = (status: Status, text: string) => color ? `${COLORS[status]}${text}\x1b[0m` : text;
  const lines = [
    `${report.tool} on ${report.host}: ${paint(report.status, LABELS[report.status])}`,
  ];
  const labelWidth = Math.max(...report.findings.map((f) => LABELS[f.status].length), 2);
  const idWidth = Math.max(...report.findings.map((f) => f.id.length), 2);
  const indent = " ".repeat(labelWidth + idWidth + 4);
  for (const finding of report.findings) {
    const label = LABELS[finding.status].padEnd(labelWidth);
    lines.push(
      `${paint(finding.status, label)}  ${finding.id.padEnd(idWidth)}  ${finding.summary}`,
    );
    const problem = finding.status !== "ok";
    if (finding.detail && (problem || options.verbose)) {
      for (const line of finding.detail.split("\n")) lines.push(`${indent}${line}`);
    }
    if (finding.fix && problem) {
      const [first, ...rest] = finding.fix.split("\n");
      lines.push(`${indent}fix: ${first}`);
      for (const line of rest) lines.push(`${indent}     ${line}`);
    }
  }
  return lines.join("\n") + "\n";
}
