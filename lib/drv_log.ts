/**
 * The check behind `scripts/drv_log.ts`: find a derivation's build log on this machine, a builder,
 * or every builder of the machines file, read it in one streaming pass, and say what it shows or
 * why there is none.
 *
 * @module
 */

import {
  type DeriverLookup,
  explainMissingLog,
  fileStream,
  type LogAttempt,
  type LogMethod,
  logViews,
  openBuildLog,
  type OpenedLog,
} from "./build_log.ts";
import { LocalTarget } from "./local_target.ts";
import { formatBytes } from "./meminfo.ts";
import type { BuildFailure, BuildOutputSummary } from "./build_output.ts";
import type { Finding } from "./findings.ts";
import {
  countNewlines,
  type LogLine,
  type LogScan,
  LogScanner,
  scanLogText,
  tailFile,
} from "./log_scan.ts";
import { logFindings } from "./log_view.ts";
import { ProgressBar } from "./progress.ts";
import type { StorePath } from "./store_path.ts";
import type { Target } from "./target.ts";
import { quoteForMessage, UsageError } from "./errors.ts";

/** One place to look for logs. */
export interface LogSource {
  /** The target. */
  target: Target;
  /** How it is named in reports (default: the target's host). */
  label?: string;
  /** The `nix-store` program there (default `nix-store`). */
  nixStore?: string;
  /** Also try `nix log` there (asks substituters; for the controller). */
  nixLog?: boolean;
}

/** Which view is wanted. */
export type LogView = "default" | "errors" | "tail" | "raw";

/** Options for {@link readDrvLog}. */
export interface ReadDrvLogOptions {
  /** The view (decides what is kept while reading). */
  view: LogView;
  /** Last lines to keep (default 20; the N of `--tail N`). */
  tail?: number;
  /** Context lines around each match (default 3). */
  context?: number;
  /** The log directory on every host (default: `NIX_LOG_DIR` here, else `/nix/var/log/nix`). */
  logDir?: string;
  /** Time-out for reading, in milliseconds (default 600 000). */
  timeoutMs?: number;
  /** Receives every block of the log as read (`--raw`, `--output`); returning false stops reading. */
  onBytes?: (bytes: Uint8Array) => Promise<boolean | void>;
  /** Show a progress bar on stderr while a log is read (only drawn on a terminal). */
  progress?: boolean;
  /** What the build output said about this derivation, if it was given. */
  failure?: BuildFailure;
}

/** What was found for one derivation (or one given log file). */
export interface DrvLogResult {
  /** What was asked about: the store path, or the log file given. */
  subject: string;
  /** The derivation (or output path) asked about; absent for a given log file. */
  drv?: StorePath;
  /** For an output path: the derivation the host that served the log says built it. */
  deriver?: StorePath;
  /** Where the log was read, when it was. */
  found?: {
    host: string;
    label: string;
    method: LogMethod;
    path?: string;
    description: string;
    /** For an output path: the `.drv` whose log this is (`nix-store --query --deriver` there). */
    deriver?: string;
  };
  /** What one pass over it found (absent for `raw`). */
  scan?: LogScan;
  /** For `raw`: bytes and lines passed through. */
  passed?: { bytes: number; lines: number };
  /** The tail was read from the end of a local file: line numbers count from the end. */
  tailFromEnd?: boolean;
  /** Every attempt, in order. */
  attempts: LogAttempt[];
  /** Why no source had the log, where that can be known. */
  reasons: string[];
  /** When no source had the log: the `last N log lines` Nix printed in the build output, scanned. */
  fromBuildOutput?: LogScan;
  /** Set when the source ended with an error: the log may be cut short. */
  truncated?: string;
  /** Set when the reader went away (the pager was quit) before the end. */
  stopped?: boolean;
  /** The findings. */
  findings: Finding[];
}

function describeSource(host: string, method: LogMethod, path: string | undefined): string {
  return path !== undefined && method !== "nix-store -l" && method !== "nix log"
    ? `${path} on ${host}`
    : `${method} on ${host}`;
}

/**
 * Finds and reads one derivation's log from the first source that has it. An output path is
 * resolved to its deriver on each host ({@link openBuildLog}); when none has the log, each host
 * that answered says why ({@link explainMissingLog}).
 *
 * @example A log file on this machine, the failure view
 * ```ts
 * import { readDrvLog } from "./drv_log.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import { parseStorePath } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/drvs/f6`, { recursive: true });
 * await Deno.writeTextFile(`${dir}/drvs/f6/qc9gny4w6ajssphr39im341ph0klsn-fail.drv`, "Running phase: checkPhase\nFAIL: test_io\n");
 * const drv = parseStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv");
 * const result = await readDrvLog([{ target: new LocalTarget(), nixStore: "false" }], drv, { view: "errors", logDir: dir });
 * assert.equal(result.found?.method, "log file");
 * assert.equal(result.scan?.primary?.kind, "test");
 * assert.equal(result.findings[0]?.id, "log/found");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readDrvLog(
  sources: readonly LogSource[],
  drv: StorePath,
  options: ReadDrvLogOptions,
): Promise<DrvLogResult> {
  const result: DrvLogResult = { subject: drv.path, drv, attempts: [], reasons: [], findings: [] };
  const timeoutMs = options.timeoutMs ?? 600_000;
  const answered: LogSource[] = [];
  // What each host said of an output path's deriver: the explanation below does not ask again.
  const derivers = new Map<LogSource, DeriverLookup>();
  let everyDeriverUnknown = !drv.isDerivation;
  const unreachable: { label: string; detail: string }[] = [];
  for (const source of sources) {
    const label = source.label ?? source.target.host;
    const opened = await openBuildLog(source.target, drv, {
      ...(options.logDir !== undefined ? { logDir: options.logDir } : {}),
      ...(source.nixStore !== undefined ? { nixStore: source.nixStore } : {}),
      nixLog: source.nixLog ?? false,
      timeoutMs,
    });
    result.attempts.push(...opened.attempts);
    if (opened.unreachable) {
      unreachable.push({ label, detail: opened.attempts.at(-1)?.detail ?? "unreachable" });
      continue;
    }
    answered.push(source);
    if (opened.deriverAnswer !== undefined) derivers.set(source, opened.deriverAnswer);
    if (opened.deriverLookup !== "unknown") everyDeriverUnknown = false;
    const log = opened.log;
    if (log === undefined) continue;
    if (opened.deriver !== undefined) result.deriver = opened.deriver;
    result.found = {
      host: log.host,
      label,
      method: log.method,
      description: describeSource(label, log.method, log.path),
      ...(log.path !== undefined ? { path: log.path } : {}),
      ...(opened.deriver !== undefined ? { deriver: opened.deriver.path } : {}),
    };
    await consume(result, log, options);
    result.findings.push(...foundFindings(result, label));
    return result;
  }
  // No source had it: say why, where that can be known.
  for (const { label, detail } of unreachable) {
    result.reasons.push(`${label} could not be reached: ${detail}`);
  }
  for (const source of answered) {
    const deriver = derivers.get(source);
    const reasons = await explainMissingLog(source.target, drv, {
      ...(source.nixStore !== undefined ? { nixStore: source.nixStore } : {}),
      ...(deriver !== undefined ? { deriver } : {}),
    }).catch(() => []);
    result.reasons.push(...reasons);
  }
  const failure = options.failure;
  if (failure?.host !== undefined) {
    const asked = sources.map((s) => s.label ?? s.target.host);
    const host = failure.host.replace(/^ssh(-ng)?:\/\//, "").split("?")[0]!;
    if (!asked.some((a) => a.includes(host))) {
      result.reasons.push(
        `the build output says it was built on '${failure.host}', which was not asked: rerun with ` +
          `--host ${host} (or --builders)`,
      );
    }
  }
  if (failure?.host !== undefined && /^ssh:\/\//.test(failure.host)) {
    result.reasons.push(
      `it was built over legacy ${failure.host} (nix-store --serve), which keeps no log on the ` +
        "builder (seen with Nix 2.8): the controller that started the build has it",
    );
  }
  if (failure !== undefined && failure.logTail.length > 0) {
    result.fromBuildOutput = scanLogText(failure.logTail.join("\n") + "\n", {
      tail: failure.logTail.length,
      context: options.context ?? 3,
    });
  }
  const someUnreachable = unreachable.length > 0;
  result.findings.push({
    id: someUnreachable ? "log/source-unreachable" : "log/not-available",
    status: someUnreachable ? "unknown" : "critical",
    summary: someUnreachable
      ? `no log of ${drv.path} found, and ${
        unreachable.map((u) => u.label).join(", ")
      } could not be asked`
      : `build log of ${drv.path} is not available on ${
        sources.map((s) => s.label ?? s.target.host).join(", ") || "any source"
      }`,
    detail: [
      ...result.reasons,
      ...result.attempts.map((a) => `${a.host} · ${a.method}: ${a.outcome}: ${a.detail}`),
    ].join("\n"),
    fix: someUnreachable
      ? "Fix the connection first (scripts/verify_offload.ts), or rerun with a longer --timeout"
      : everyDeriverUnknown && answered.length > 0
      ? "Nothing to fetch: no derivation built this path (it was added or fetched, not built). " +
        "For a package's log, pass its .drv (nix path-info --derivation, nix-instantiate) or the " +
        "failed build's output (--from-build-output)"
      : "Look on the machine that built it (--host BUILDER, or --builders for every builder in " +
        "the machines file); check keep-build-log (scripts/show_config.ts --key keep-build-log)",
    data: { drv: drv.path, attempts: result.attempts, reasons: result.reasons },
  });
  return result;
}

async function consume(
  result: DrvLogResult,
  log: OpenedLog,
  options: ReadDrvLogOptions,
): Promise<void> {
  const view = options.view;
  const tail = options.tail ?? 20;
  const progress = options.progress
    ? new ProgressBar(`${result.found!.label}: ${log.method}`, {
      ...(log.method === "log file" && log.fileSize !== undefined ? { total: log.fileSize } : {}),
    })
    : undefined;
  let read = 0;
  let stop = false;
  const onBlock = async (bytes: Uint8Array) => {
    read += bytes.length;
    progress?.update(read);
    if (options.onBytes && (await options.onBytes(bytes)) === false) stop = true;
  };
  try {
    if (view === "tail" && log.localFile !== undefined && options.onBytes === undefined) {
      // Like `tail -n`: read backwards from the end of the file, not the whole file.
      const lines: LogLine[] = await tailFile(log.localFile, tail);
      result.tailFromEnd = true;
      result.scan = {
        ...emptyScan(false),
        bytes: log.fileSize ?? 0,
        tail: lines,
      };
      return;
    }
    if (view === "raw") {
      let lines = 0;
      let last = 10;
      for await (const chunk of log.chunks()) {
        lines += countNewlines(chunk);
        last = chunk[chunk.length - 1]!;
        await onBlock(chunk);
        if (stop) break;
      }
      result.passed = { bytes: read, lines: lines + (read > 0 && last !== 10 ? 1 : 0) };
    } else {
      const scanner = new LogScanner({
        errors: view !== "tail",
        tail,
        context: options.context ?? 3,
      });
      if (log.localFile !== undefined) {
        using file = await Deno.open(log.localFile);
        await scanner.readFrom((into) => stop ? Promise.resolve(null) : file.read(into), onBlock);
      } else {
        for await (const chunk of log.chunks()) {
          await onBlock(chunk);
          scanner.push(chunk);
          if (stop) break;
        }
      }
      result.scan = scanner.finish();
    }
  } finally {
    progress?.done();
    if (stop) {
      result.stopped = true;
      log.kill();
    }
  }
  if (!stop) {
    const done = await log.done;
    if (!done.ok) result.truncated = done.detail;
  }
}

/**
 * Reads a log file already at hand (saved with `--output`, copied from a builder, a CI artifact),
 * plain or bzip2-compressed, or standard input for `-`.
 *
 * @example
 * ```ts
 * import { readGivenLog } from "./drv_log.ts";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "collect2: error: ld returned 1 exit status\n");
 * const result = await readGivenLog(path, { view: "default" });
 * assert.equal(result.scan?.primary?.kind, "linker");
 * await Deno.remove(path);
 * ```
 */
export async function readGivenLog(
  path: string,
  options: ReadDrvLogOptions,
): Promise<DrvLogResult> {
  const result: DrvLogResult = {
    subject: path === "-" ? "(standard input)" : path,
    attempts: [],
    reasons: [],
    findings: [],
  };
  let log: OpenedLog;
  if (path === "-") {
    log = {
      host: "localhost",
      method: "standard input",
      ...logViews(Deno.stdin.readable),
      done: Promise.resolve({ ok: true, detail: "" }),
      kill: () => {},
    };
  } else {
    const info = await Deno.stat(path).catch((error) => {
      throw new UsageError(`--log-file ${quoteForMessage(path)}: ${(error as Error).message}`);
    });
    if (!info.isFile) throw new UsageError(`--log-file ${quoteForMessage(path)} is not a file`);
    const head = new Uint8Array(3);
    {
      using file = await Deno.open(path);
      await file.read(head);
    }
    const compressed = head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68; // "BZh"
    if (compressed) {
      const run = new LocalTarget().stream(["bzip2", "-dc", "--", path], {
        timeoutMs: options.timeoutMs ?? 600_000,
      });
      log = {
        host: "localhost",
        method: "compressed log file",
        path,
        fileSize: info.size,
        ...logViews(run.stdout, run.kill),
        done: run.status.then((r) => ({
          ok: r.code === 0 && r.failure === undefined,
          detail: r.code === 0 ? "" : `bzip2 -dc failed: ${r.stderr.trim() || `exit ${r.code}`}`,
        })),
        kill: run.kill,
      };
    } else {
      log = {
        host: "localhost",
        method: "log file",
        path,
        fileSize: info.size,
        localFile: path,
        ...logViews(fileStream(path)),
        done: Promise.resolve({ ok: true, detail: "" }),
        kill: () => {},
      };
    }
  }
  result.found = {
    host: "localhost",
    label: "localhost",
    method: log.method,
    description: path === "-" ? "from standard input" : `${path}`,
    ...(log.path !== undefined ? { path: log.path } : {}),
  };
  await consume(result, log, options);
  result.findings.push(...foundFindings(result, "localhost"));
  return result;
}

function emptyScan(scannedErrors: boolean): LogScan {
  return {
    bytes: 0,
    lines: 0,
    endsWithNewline: true,
    binary: false,
    phases: [],
    matches: [],
    matchCount: 0,
    counts: {},
    ruleCounts: {},
    groups: [],
    groupCount: 0,
    tail: [],
    tailTruncated: false,
    scannedErrors,
  };
}

function foundFindings(result: DrvLogResult, label: string): Finding[] {
  const found = result.found!;
  const findings: Finding[] = [];
  const lines = (n: number) => `${n.toLocaleString("en-US")} line${n === 1 ? "" : "s"}`;
  const size = result.scan
    ? result.tailFromEnd
      ? ` (${formatBytes(result.scan.bytes)})`
      : ` (${lines(result.scan.lines)}, ${formatBytes(result.scan.bytes)})`
    : result.passed
    ? ` (${lines(result.passed.lines)}, ${formatBytes(result.passed.bytes)})`
    : "";
  const log: Finding = {
    id: "log/found",
    status: "ok",
    summary: result.drv
      ? `log of ${result.drv.baseName}${
        result.deriver !== undefined ? ` (built by ${result.deriver.baseName})` : ""
      } from ${found.description}${size}`
      : `log ${found.description}${size}`,
    data: {
      subject: result.subject,
      ...(result.deriver !== undefined ? { deriver: result.deriver.path } : {}),
      host: found.host,
      method: found.method,
      ...(found.path !== undefined ? { path: found.path } : {}),
    },
  };
  const attemptsBefore = result.attempts.filter((a) => a.outcome !== "served");
  if (attemptsBefore.length > 0) {
    log.detail = attemptsBefore.map((a) => `${a.host} · ${a.method}: ${a.outcome}: ${a.detail}`)
      .join("\n");
  }
  findings.push(log);
  if (result.truncated !== undefined) {
    findings.push({
      id: "log/truncated",
      status: "warning",
      summary: `reading the log of ${
        result.drv?.baseName ?? result.subject
      } from ${label} ended with an error: it may be cut short`,
      detail: result.truncated,
      fix: "Rerun with a longer --timeout, or read the file directly (--raw --output FILE)",
    });
  }
  if (result.scan !== undefined && result.scan.scannedErrors) {
    findings.push(
      ...logFindings(
        result.scan,
        result.drv?.baseName ?? result.subject,
        result.drv !== undefined ? label : undefined,
      ),
    );
  }
  return findings;
}

/**
 * Findings for what a build output says beyond the failing builders: derivations that were never
 * built because a dependency failed, and derivations no machine could take.
 *
 * @example
 * ```ts
 * import { buildOutputFindings } from "./drv_log.ts";
 * import { parseBuildOutput } from "./build_output.ts";
 * import assert from "node:assert/strict";
 *
 * const summary = parseBuildOutput(
 *   "error: 1 dependencies of derivation '/nix/store/dsrvvhrhalr8li1i9vq0r2xmb52ywcnk-unit-languagetool.service.drv' failed to build",
 * );
 * const findings = buildOutputFindings(summary);
 * assert.deepEqual(findings.map((f) => f.id), ["build/no-failed-builder", "build/dependency-failed"]);
 * ```
 */
export function buildOutputFindings(summary: BuildOutputSummary): Finding[] {
  const findings: Finding[] = [];
  const roots = summary.failures.filter((f) =>
    f.cause !== "dependency" && f.cause !== "platform" && f.cause !== "no-machine"
  );
  const deps = summary.failures.filter((f) => f.cause === "dependency");
  const unplaced = summary.failures.filter((f) =>
    f.cause === "platform" || f.cause === "no-machine"
  );
  if (summary.failures.length === 0) {
    findings.push({
      id: "build/no-failure-found",
      status: "unknown",
      summary: `the build output (${summary.lines} lines) names no failing derivation`,
      ...(summary.ignored.length > 0
        ? {
          detail: summary.ignored.slice(0, 5).map((i) =>
            `line ${i.line}: ignored '${i.text}': ${i.reason}`
          )
            .join("\n"),
        }
        : {}),
      fix: "Pass the whole output of the failed command (2>&1), or the .drv path itself",
    });
  } else if (roots.length === 0 && unplaced.length === 0) {
    findings.push({
      id: "build/no-failed-builder",
      status: "unknown",
      summary: "the build output names only derivations whose dependencies failed; the failing " +
        "builder itself is not in it",
      fix: "Pass the whole output (the 'builder for ... failed' line comes first), or scroll up " +
        "in the terminal for the first error",
    });
  }
  if (deps.length > 0) {
    findings.push({
      id: "build/dependency-failed",
      status: "ok",
      summary:
        `${deps.length} derivation${deps.length === 1 ? " was" : "s were"} not built because ` +
        "a dependency failed (no logs of their own)",
      detail: deps.slice(0, 20).map((f) => f.drv).join("\n") +
        (deps.length > 20 ? `\n… and ${deps.length - 20} more` : ""),
    });
  }
  for (const f of unplaced) {
    findings.push({
      id: "build/no-machine",
      status: "warning",
      summary: `${f.drv} was never built: ${f.reason}`,
      fix: "scripts/show_config.ts shows which machine takes which system and features " +
        "(runbook/show_config.md)",
      data: { drv: f.drv },
    });
  }
  return findings;
}
