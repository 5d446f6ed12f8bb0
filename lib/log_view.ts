/**
 * A scanned build log for people: the failure first (last phase, likely cause, error lines with
 * context), then the tail; and what the excerpt means, as findings with a fix.
 *
 * @module
 */

import { formatBytes } from "./meminfo.ts";
import type { Finding } from "./findings.ts";
import type { LogLine, LogMatch, LogScan } from "./log_scan.ts";

/** What the view says about where the log came from. */
export interface LogOrigin {
  /** The derivation. */
  drv: string;
  /** Where the log was read, e.g. `nix-store -l on builder1`. */
  source: string;
}

/** Options for {@link renderLogView}. */
export interface LogViewOptions {
  /** `default` (failure first, then the tail), `errors` (only the failure), `tail`. */
  view: "default" | "errors" | "tail";
  /** ANSI colours (default false). */
  color?: boolean;
  /** The tail's line numbers are counted from the end (a seeked file tail). */
  tailFromEnd?: boolean;
}

/** The plain-words explanation of each rule, shown as the likely cause. */
export const RULE_EXPLANATIONS: Readonly<Record<string, string>> = {
  "oom-killed":
    "the build was killed (signal 9): on a builder that is almost always the kernel's OOM killer",
  "out-of-memory": "a program ran out of memory",
  "disk-full": "the disk (or a quota) is full",
  "exec-format":
    "a program built for another architecture could not run (Exec format error): emulation " +
    "(binfmt_misc) is missing or broken on the builder",
  "internal-compiler-error":
    "the compiler crashed (internal compiler error); on a loaded builder this is often memory",
  "compiler-error": "a compiler error",
  "linker-error": "a linker error: a library or symbol is missing",
  "cmake-error": "cmake failed: usually a missing dependency (buildInputs) or a bad option",
  "meson-error": "meson failed: usually a missing dependency (buildInputs) or a bad option",
  "configure-error": "./configure failed: usually a missing dependency or tool",
  "pkg-config-missing":
    "pkg-config cannot find a library: add it to buildInputs (and pkg-config to nativeBuildInputs)",
  "stdenv-error": "nixpkgs stdenv could not unpack or find the source",
  "test-failure": "a test failed (checkPhase)",
  "traceback": "a Python program raised an exception",
  "exception": "a program raised an exception",
  "crash": "a program crashed",
  "command-not-found":
    "a command was not found: the package that provides it is missing from nativeBuildInputs",
  "missing-file": "a file was not found",
  "permission-denied":
    "permission denied: a build may only write to $out and its build directory (sandbox)",
  "make-error": "make/ninja reported a failed step; the cause is usually in the lines above it",
  "error": "an error line",
};

const RED = "\x1b[31;1m";
const DIM = "\x1b[2m";
const BOLD = "\x1b[1m";
const RESET = "\x1b[0m";

function paint(color: boolean, code: string, text: string): string {
  return color ? `${code}${text}${RESET}` : text;
}

function gutterWidth(lines: readonly LogLine[]): number {
  return Math.max(4, ...lines.map((l) => String(Math.abs(l.line)).length));
}

function renderLines(
  lines: readonly LogLine[],
  width: number,
  color: boolean,
  fromEnd = false,
): string[] {
  return lines.map((l) => {
    const number = fromEnd ? `-${Math.abs(l.line)}` : String(l.line);
    const gutter = `${l.match ? ">" : " "} ${number.padStart(width)} │ `;
    return l.match
      ? paint(color, RED, `${gutter}${l.text}`)
      : `${paint(color, DIM, gutter)}${l.text}`;
  });
}

/**
 * The likely cause in words, with its line.
 *
 * @example
 * ```ts
 * import { describeCause } from "./log_view.ts";
 * import assert from "node:assert/strict";
 *
 * assert.match(
 *   describeCause({ line: 9, kind: "oom", rule: "oom-killed", weight: 6, text: "Killed" }),
 *   /^line 9: the build was killed \(signal 9\)/,
 * );
 * ```
 */
export function describeCause(match: LogMatch): string {
  return `line ${match.line}: ${RULE_EXPLANATIONS[match.rule] ?? match.kind}`;
}

function count(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`;
}

/**
 * Renders one scanned log.
 *
 * @example The default view of a failed C build
 * ```ts
 * import { scanLogText } from "./log_scan.ts";
 * import { renderLogView } from "./log_view.ts";
 * import assert from "node:assert/strict";
 *
 * const scan = scanLogText("Running phase: buildPhase\nfoo.c:3:1: error: expected ';'\nmake: *** [all] Error 1\n");
 * const text = renderLogView(scan, { drv: "/nix/store/x.drv", source: "nix-store -l on localhost" }, { view: "default" });
 * assert.match(text, /last phase: buildPhase \(line 1\)/);
 * assert.match(text, /likely cause: line 2: a compiler error/);
 * assert.match(text, />    2 │ foo\.c:3:1: error: expected ';'/);
 * ```
 */
export function renderLogView(scan: LogScan, origin: LogOrigin, options: LogViewOptions): string {
  const color = options.color ?? false;
  const out: string[] = [];
  out.push(paint(color, BOLD, `── ${origin.drv}`));
  const size = scan.bytes === 0 && scan.lines === 0 && options.tailFromEnd
    ? ""
    : ` · ${count(scan.lines, "line")} · ${formatBytes(scan.bytes)}`;
  out.push(`log: ${origin.source}${options.tailFromEnd ? "" : size}`);
  if (!options.tailFromEnd && scan.bytes === 0) {
    out.push("the log is empty: the builder printed nothing before it failed");
  }
  if (scan.binary) {
    out.push(
      "note: the log contains binary data (NUL bytes); control characters are shown escaped",
    );
  }
  if (!scan.endsWithNewline && scan.bytes > 0) {
    out.push(
      "note: the log does not end with a newline (cut short, or the builder was killed mid-line)",
    );
  }

  if (options.view !== "tail" && scan.scannedErrors) {
    if (scan.lastPhase) {
      out.push(`last phase: ${scan.lastPhase.phase} (line ${scan.lastPhase.line})`);
    } else if (scan.bytes > 0) {
      out.push(
        "last phase: none marked (not a nixpkgs stdenv build, or it failed before the first phase)",
      );
    }
    if (scan.primary) {
      out.push(paint(color, BOLD, `likely cause: ${describeCause(scan.primary)}`));
      out.push(`  ${scan.primary.text}`);
    } else if (scan.bytes > 0) {
      out.push("likely cause: no known error pattern; read the tail");
    }
    if (scan.groups.length > 0) {
      const shownMatches = scan.groups.reduce((n, g) => n + g.matches.length, 0);
      out.push("");
      out.push(
        `error lines: ${count(scan.matchCount, "match", "matches")} in ${
          count(scan.groupCount, "place")
        }` + (scan.groupCount > scan.groups.length ? `, ${scan.groups.length} shown` : ""),
      );
      const width = gutterWidth(scan.groups.flatMap((g) => g.lines));
      scan.groups.forEach((group, i) => {
        if (i > 0) out.push(paint(color, DIM, `  ${" ".repeat(width)} ⋮`));
        out.push(...renderLines(group.lines, width, color));
      });
      const hidden = scan.matchCount - shownMatches;
      if (hidden > 0) {
        out.push(
          `  (${
            count(hidden, "more matching line")
          } not shown: --raw or --output FILE for the whole log)`,
        );
      }
    }
  }

  if (options.view !== "errors" && scan.tail.length > 0) {
    // In the default view, lines the excerpt already shows are not repeated.
    const shown = options.view === "default" && scan.scannedErrors
      ? Math.max(0, ...scan.groups.map((g) => g.lines.at(-1)?.line ?? 0))
      : 0;
    const tail = shown > 0 ? scan.tail.filter((l) => l.line > shown) : scan.tail;
    if (tail.length > 0) {
      out.push("");
      if (options.tailFromEnd) {
        out.push(`last ${count(tail.length, "line")} (numbered from the end):`);
      } else if (tail.length < scan.tail.length) {
        out.push(`end of the log (lines ${tail[0]!.line}–${tail.at(-1)!.line}):`);
      } else {
        out.push(`last ${count(tail.length, "line")} of ${scan.lines.toLocaleString("en-US")}:`);
      }
      if (scan.tailTruncated) out.push("  (the tail was cut to fit in memory)");
      out.push(...renderLines(tail, gutterWidth(tail), color, options.tailFromEnd));
    }
  }
  return out.join("\n") + "\n";
}

/**
 * Findings for what an excerpt shows that needs a specific fix: an OOM kill, a full disk, an
 * architecture that could not run.
 *
 * @example
 * ```ts
 * import { scanLogText } from "./log_scan.ts";
 * import { logFindings } from "./log_view.ts";
 * import assert from "node:assert/strict";
 *
 * const scan = scanLogText("g++: fatal error: Killed signal terminated program cc1plus\n");
 * const [finding] = logFindings(scan, "/nix/store/x.drv", "builder1");
 * assert.equal(finding?.id, "log/oom-killed");
 * assert.match(finding?.fix ?? "", /runbook\/oom_mitigate\.md/);
 * ```
 */
export function logFindings(scan: LogScan, drv: string, host: string | undefined): Finding[] {
  const what = host === undefined ? `the build logged in ${drv}` : `the build of ${drv} on ${host}`;
  const where = host ?? "the machine that built it";
  const findings: Finding[] = [];
  const add = (id: string, summary: string, match: LogMatch | undefined, fix: string) => {
    const finding: Finding = {
      id,
      status: "warning",
      summary,
      fix,
      data: { drv, ...(host !== undefined ? { host } : {}), line: match?.line ?? null },
    };
    if (match !== undefined) finding.detail = `line ${match.line}: ${match.text}`;
    findings.push(finding);
  };
  if ((scan.counts.oom ?? 0) > 0) {
    add(
      "log/oom-killed",
      `${what} was killed or ran out of memory`,
      scan.matches.find((m) => m.kind === "oom"),
      "See runbook/oom_mitigate.md: confirm with the kernel log on the builder " +
        "(scripts/oom_mitigate.ts), then serialise (--option max-jobs 1 --option cores 2) or add " +
        "zram swap",
    );
  }
  if ((scan.counts.disk ?? 0) > 0) {
    add(
      "log/disk-full",
      `${what} ran out of disk space`,
      scan.matches.find((m) => m.kind === "disk"),
      `Free space on ${where}: nix-collect-garbage --delete-older-than 14d; check the ` +
        "filesystem of the build directory (build-dir, usually /tmp) as well as /nix",
    );
  }
  if ((scan.ruleCounts["exec-format"] ?? 0) > 0) {
    add(
      "log/exec-format",
      `a program in ${what} could not run: Exec format error`,
      scan.matches.find((m) => m.rule === "exec-format"),
      `See runbook/check_binfmt.md: ${where} lacks a working binfmt_misc registration for ` +
        "this architecture (scripts/check_binfmt.ts)",
    );
  }
  return findings;
}
