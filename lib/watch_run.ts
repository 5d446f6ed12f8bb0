/**
 * The whole `watch_builders.ts` run, in-process: one {@link BuilderWatch} per builder, the board,
 * the output (a redrawn TTY view, plain lines, or NDJSON), the optional wrapped Nix build, and
 * the final verdict. The script only parses flags and picks the builders.
 *
 * @module
 */

import { type Finding, type Status, worstStatus } from "./findings.ts";
import type { BuildRecord } from "./internal_json.ts";
import type { Target } from "./target.ts";
import { DEFAULT_THRESHOLDS, type WatchThresholds } from "./watch_alerts.ts";
import { sampleRecord, stateRecord, WatchBoard } from "./watch_board.ts";
import {
  buildFindings,
  formatDuration,
  machineLabel,
  WrappedBuild,
  type WrappedBuildResult,
} from "./watch_build.ts";
import { BuilderWatch, type WatchEvent } from "./watch_session.ts";
import { buildTable, plainSampleLine, renderView, TtyScreen, warningLines } from "./watch_view.ts";

/** A builder to watch. */
export interface WatchTargetSpec {
  /** Its name in the view and in `--json` (`builder1`). */
  label: string;
  /** Opens a fresh target for it (one per connection attempt). */
  open: () => Target;
}

/** How the run shows what it sees. */
export type WatchOutput =
  /** The view, redrawn in place (alternate screen). */
  | "tty"
  /** One line per sample per builder, and a line per warning when it appears. */
  | "plain"
  /** One JSON object per line: samples, state changes, builds, a summary. */
  | "json";

/** Options for {@link runWatch}. */
export interface RunWatchOptions {
  /** The builders. */
  builders: readonly WatchTargetSpec[];
  /** Seconds between samples. */
  intervalS: number;
  /** One sample per builder, then the verdict (`--once`). */
  once?: boolean;
  /** The longest the watch (and a wrapped build) may run, ms. */
  durationMs: number;
  /** How long a builder may take to send its first sample, ms. */
  connectTimeoutMs: number;
  /** When to warn. */
  thresholds?: WatchThresholds;
  /** The output form. */
  output: WatchOutput;
  /** ANSI colours in `tty` output. */
  color?: boolean;
  /** ASCII bars. */
  ascii?: boolean;
  /** `plain` output: also one line per build process (pid, parent, uid, memory, state). */
  verbose?: boolean;
  /** A Nix command to run and follow (`["nix", "build", ...]`). */
  build?: readonly string[];
  /** Whether builders are configured, for the "built locally" warning (default true). */
  buildersConfigured?: boolean;
  /** Aborting it stops the run cleanly (the script's Ctrl-C). */
  signal?: AbortSignal;
  /** Where output goes (default standard output). */
  write?: (text: string) => void;
  /** The terminal size for `tty` output (default `Deno.consoleSize()`, else 80x24). */
  size?: () => { columns: number; rows: number };
}

/** The verdict of a run. */
export interface WatchResult {
  /** The worst status: of the final samples with `once`, else of the whole run. */
  status: Status;
  /** The findings behind it: every warning raised during the run, and the build's verdict. */
  findings: Finding[];
  /** How the wrapped build ended, when there was one. */
  build?: WrappedBuildResult;
}

function defaultWrite(text: string): void {
  const bytes = new TextEncoder().encode(text);
  let done = 0;
  while (done < bytes.length) done += Deno.stdout.writeSync(bytes.subarray(done));
}

function defaultSize(): { columns: number; rows: number } {
  try {
    return Deno.consoleSize();
  } catch {
    return { columns: 80, rows: 24 };
  }
}

/**
 * Watches the builders until the signal aborts, `durationMs` passes, the wrapped build ends, or
 * (with `once`) every builder gave one sample or failed. Never throws for a builder's failure:
 * that is a finding.
 *
 * @example One sample of this machine, as NDJSON
 * ```ts
 * import { runWatch } from "./watch_run.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const result = await runWatch({
 *   builders: [{ label: "localhost", open: () => new LocalTarget() }],
 *   intervalS: 1,
 *   once: true,
 *   durationMs: 10_000,
 *   connectTimeoutMs: 10_000,
 *   output: "json",
 *   write: (text) => (out += text),
 * });
 * const record = JSON.parse(out.trim().split("\n")[0]!);
 * assert.equal(record.type, "sample");
 * assert.equal(record.host, "localhost");
 * assert.ok(record.memory.totalBytes > 0);
 * assert.equal(result.status, record.status);
 * ```
 */
export async function runWatch(options: RunWatchOptions): Promise<WatchResult> {
  const write = options.write ?? defaultWrite;
  const size = options.size ?? defaultSize;
  const thresholds = options.thresholds ?? DEFAULT_THRESHOLDS;
  const labels = options.builders.map((b) => b.label);
  const board = new WatchBoard(labels, { intervalS: options.intervalS, thresholds });
  const raised: { at: number; finding: Finding }[] = [];
  // --once --json prints each builder's record at the end, in the order the builders were given.
  const onceRecords = new Map<string, Record<string, unknown>>();
  const json = (value: unknown) => write(JSON.stringify(value) + "\n");
  const screen = options.output === "tty" && !options.once ? new TtyScreen(Deno.stdout) : null;
  let build: WrappedBuild | null = null;
  let buildStartedAt = 0;
  const nixNotes: string[] = [];
  let drawTimer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;

  const draw = () => {
    drawTimer = undefined;
    if (!screen || stopped) return;
    const { columns, rows } = size();
    const panel = build ? { builds: build.tracker.builds, startedAt: buildStartedAt } : null;
    screen.draw(renderView(board, panel, {
      width: Math.max(40, Math.min(columns, 120)),
      color: options.color ?? false,
      ascii: options.ascii ?? false,
      rows: Math.max(5, rows - 1),
    }));
  };
  const scheduleDraw = () => {
    drawTimer ??= setTimeout(draw, 50);
  };

  const onEvent = (event: WatchEvent) => {
    const change = board.apply(event);
    for (const finding of change.raised) raised.push({ at: Date.now(), finding });
    if (options.output === "json") {
      if (event.kind === "sample" && options.once) {
        onceRecords.set(event.host, sampleRecord(event.sample, board.builder(event.host).findings));
      } else if (event.kind === "sample") {
        json(sampleRecord(event.sample, board.builder(event.host).findings));
      } else if (options.once) {
        if (event.state === "unreachable") onceRecords.set(event.host, stateRecord(event));
      } else if (
        event.state === "stale" || event.state === "unreachable" ||
        (event.state === "live" && !options.once)
      ) {
        json(stateRecord(event));
      }
    } else if (options.output === "plain" || options.once) {
      if (event.kind === "sample") {
        const view = board.builder(event.host);
        const status = worstStatus(view.findings.map((f) => f.status));
        if (!options.once) {
          write(plainSampleLine(event.sample, status) + "\n");
          if (options.verbose) {
            for (const p of event.sample.processes) {
              write(
                `  pid ${p.pid} ppid ${p.ppid} uid ${p.uid} rss ${p.rssKiB} kB ${p.state} ` +
                  `${p.emulated ? `emulated ${p.emulated} ` : ""}${p.name}\n`,
              );
            }
          }
        }
      } else if (!options.once && (event.state === "stale" || event.state === "unreachable")) {
        const time = new Date(event.at).toISOString().replace(/\.\d+Z$/, "Z");
        write(`${time} ${event.host} ${event.state.toUpperCase()} ${event.reason}\n`);
      }
      if (!options.once) {
        for (const line of warningLines(change.raised, { width: 1000 })) write(line + "\n");
      }
    }
    scheduleDraw();
  };

  const watches = options.builders.map((b) =>
    new BuilderWatch({
      host: b.label,
      open: b.open,
      intervalS: options.intervalS,
      ...(options.once ? { count: 1 } : {}),
      connectTimeoutMs: options.connectTimeoutMs,
      streamTimeoutMs: options.durationMs + 60_000,
      onEvent,
    })
  );
  const runs = watches.map((w) => w.run());

  let stop!: () => void;
  const stopping = new Promise<void>((resolve) => (stop = resolve));
  const onAbort = () => {
    build?.interrupt();
    if (!build) stop();
  };
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  const deadline = setTimeout(() => {
    if (build) build.interrupt();
    else stop();
  }, options.durationMs);
  const ticker = screen ? setInterval(scheduleDraw, 1000) : undefined;

  let buildResult: WrappedBuildResult | undefined;
  try {
    if (options.build) {
      build = new WrappedBuild({
        argv: options.build,
        timeoutMs: options.durationMs,
        onEvent: (event) => {
          // Nix's warnings (level 1) would otherwise be lost with the log format: keep them.
          if (event.action === "msg" && event.level === 1) {
            nixNotes.push(event.msg);
            if (options.output === "plain") write(`nix: ${event.msg}\n`);
          }
          scheduleDraw();
        },
        onBuildEnd: (record) => {
          if (options.output === "json") json(buildRecord(record));
        },
        onText: (line) => {
          nixNotes.push(line);
          if (options.output === "plain") write(`nix: ${line}\n`);
        },
      });
      buildStartedAt = Date.now();
      scheduleDraw();
      buildResult = await build.run();
    } else if (options.once) {
      await Promise.race([Promise.all(runs), stopping]);
    } else {
      await stopping;
    }
  } finally {
    stopped = true;
    clearTimeout(deadline);
    clearInterval(ticker);
    clearTimeout(drawTimer);
    options.signal?.removeEventListener("abort", onAbort);
    await Promise.all(watches.map((w) => w.close()));
    screen?.close();
  }

  const findings: Finding[] = [];
  let status: Status;
  if (options.once) {
    findings.push(...board.builders.flatMap((b) => b.findings));
    status = worstStatus(findings.map((f) => f.status));
  } else {
    findings.push(...dedupe(raised.map((r) => r.finding)));
    status = board.worst();
  }
  let verdict: Finding[] = [];
  if (build && buildResult) {
    verdict = buildFindings(build.tracker.builds, {
      code: buildResult.code,
      ...(buildResult.failure ? { failure: buildResult.failure } : {}),
      errors: build.tracker.errors,
      buildersConfigured: options.buildersConfigured ?? true,
    });
    findings.push(...verdict);
    status = worstStatus([status, ...verdict.map((f) => f.status)]);
  }

  if (options.output === "json") {
    for (const label of labels) {
      const record = onceRecords.get(label);
      if (record) json(record);
    }
    const summary: Record<string, unknown> = {
      type: "summary",
      time: new Date().toISOString(),
      status,
      findings: findings.map(({ id, status, summary, fix }) => ({ id, status, summary, fix })),
    };
    if (build && buildResult) {
      summary.nix = {
        argv: build.argv,
        code: buildResult.code,
        elapsedMs: buildResult.elapsedMs,
        stdout: buildResult.stdout,
        errors: build.tracker.errors,
        notes: nixNotes,
      };
    }
    if (!options.once || build) json(summary);
  } else if (options.once) {
    const { columns } = options.output === "tty" ? size() : { columns: 80 };
    const lines = renderView(board, null, {
      width: Math.max(40, Math.min(columns, 120)),
      color: options.color ?? false,
      ascii: options.ascii ?? false,
      live: false,
      wrap: options.output === "tty",
    });
    write(lines.join("\n") + "\n");
  } else {
    // Plain output printed Nix's notes as they came; the screen could not.
    const notes = options.output === "tty" ? nixNotes : [];
    write(finalText(board, raised, build, buildResult, verdict, notes));
  }
  const result: WatchResult = { status, findings };
  if (buildResult) result.build = buildResult;
  return result;
}

/** `nix build` for `["nix", "build", "--impure", ...]`, `nix-build` for `["nix-build", "-A", "x"]`. */
function commandName(argv: readonly string[]): string {
  const [program = "nix", sub] = argv;
  const base = program.slice(program.lastIndexOf("/") + 1);
  return sub !== undefined && /^[a-z][a-z-]*$/.test(sub) ? `${base} ${sub}` : base;
}

function dedupe(findings: readonly Finding[]): Finding[] {
  const seen = new Map<string, Finding>();
  for (const f of findings) {
    const key = `${f.id} ${(f.summary.split(":")[0] ?? "")}`;
    const was = seen.get(key);
    if (!was || worstStatus([was.status, f.status]) === f.status) seen.set(key, f);
  }
  return [...seen.values()];
}

function buildRecord(b: BuildRecord): Record<string, unknown> {
  return {
    type: "build",
    time: new Date(b.endedAt ?? Date.now()).toISOString(),
    drvPath: b.drvPath,
    name: b.name,
    machine: b.machine,
    builder: machineLabel(b.machine),
    status: b.status,
    durationMs: (b.endedAt ?? Date.now()) - b.startedAt,
    ...(b.error ? { error: b.error } : {}),
  };
}

function finalText(
  board: WatchBoard,
  raised: readonly { at: number; finding: Finding }[],
  build: WrappedBuild | null,
  result: WrappedBuildResult | undefined,
  verdict: readonly Finding[],
  notes: readonly string[],
): string {
  const lines: string[] = [];
  const worst = board.worst();
  lines.push(
    `watch_builders: ${worst.toUpperCase()}: ${board.builders.length} builder${
      board.builders.length === 1 ? "" : "s"
    } watched` + (raised.length === 0 ? ", no warnings" : `, ${raised.length} warning(s) raised:`),
  );
  for (const { at, finding } of raised) {
    lines.push(
      `  ${
        new Date(at).toTimeString().slice(0, 8)
      } ${finding.status.toUpperCase()} ${finding.summary}`,
    );
  }
  if (build && result) {
    lines.push("");
    const how = result.failure === "interrupted"
      ? "was interrupted"
      : result.failure === "timeout"
      ? "ran past --duration"
      : `exited with ${result.code}`;
    lines.push(
      `${commandName(build.argv)} ${how} after ${formatDuration(result.elapsedMs)}.`,
    );
    const table = buildTable(build.tracker.builds);
    if (table.length > 0) {
      lines.push(
        "Where each derivation was built:",
        ...table.map((l) => `  ${l}`),
      );
    }
    for (const note of notes.slice(-20)) lines.push(`  nix: ${note}`);
    for (const error of build.tracker.errors) lines.push(...error.split("\n").map((l) => `  ${l}`));
    // Not wrapped: terminals wrap, and scripts read whole lines.
    lines.push(...warningLines(verdict, { width: 100_000 }));
    if (result.stdout !== "") lines.push("", result.stdout.replace(/\n$/, ""));
  }
  return lines.join("\n") + "\n";
}
