/**
 * The terminal view of `watch_builders.ts`: one block per builder with bars and sparklines that
 * fits 80 columns and is redrawn in place on a TTY (alternate screen), or one plain line per
 * sample otherwise; and the final table of where each derivation was built.
 *
 * @module
 */

import type { Finding, Status } from "./findings.ts";
import type { BuildRecord } from "./internal_json.ts";
import { formatBytes } from "./meminfo.ts";
import type { Sample } from "./watch.ts";
import type { WatchBoard, WatchedBuilder } from "./watch_board.ts";
import { formatDuration, machineLabel } from "./watch_build.ts";

/** Options for the renderers. */
export interface ViewOptions {
  /** Columns (default 80). */
  width?: number;
  /** ANSI colours (default false). */
  color?: boolean;
  /** ASCII only: `#` bars and `_.-=^` sparklines instead of block characters (default false). */
  ascii?: boolean;
  /** The time to show, ms since the epoch (default now). */
  now?: number;
}

const STYLE: Record<string, string> = {
  ok: "\x1b[32m",
  warning: "\x1b[33m",
  critical: "\x1b[31m",
  unknown: "\x1b[35m",
  dim: "\x1b[2m",
  bold: "\x1b[1m",
};
const RESET = "\x1b[0m";

/** A piece of a line and its style (a key of the style table, or none). */
type Seg = [text: string, style?: string | undefined];

function render(segs: Seg[], width: number, color: boolean): string {
  let out = "";
  let room = width;
  for (const [text, style] of segs) {
    if (room <= 0) break;
    const chars = [...text];
    let piece = chars.length > room ? chars.slice(0, Math.max(0, room - 1)).join("") + "…" : text;
    if (chars.length > room && room === 1) piece = "…";
    room -= Math.min(chars.length, room);
    out += color && style && STYLE[style] ? `${STYLE[style]}${piece}${RESET}` : piece;
  }
  return out.replace(/\s+$/, "");
}

const EIGHTHS = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/**
 * A horizontal bar of `width` cells filled to `fraction` (clamped to 0-1), in eighths of a cell.
 *
 * @example
 * ```ts
 * import { bar } from "./watch_view.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(bar(0.5, 8), "████    ");
 * assert.equal(bar(0.53, 8), "████▎   ");
 * assert.equal(bar(1.7, 4, { ascii: true }), "####");
 * ```
 */
export function bar(fraction: number, width: number, options: { ascii?: boolean } = {}): string {
  const f = Number.isFinite(fraction) ? Math.max(0, Math.min(1, fraction)) : 0;
  if (options.ascii) {
    const full = Math.round(f * width);
    return "#".repeat(full) + " ".repeat(width - full);
  }
  const eighths = Math.round(f * width * 8);
  const full = Math.floor(eighths / 8);
  const part = EIGHTHS[eighths % 8] ?? "";
  return ("█".repeat(full) + part).padEnd(width, " ");
}

const SPARKS = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];
const ASCII_SPARKS = ["_", "_", ".", "-", "-", "=", "^", "^"];

/**
 * A sparkline of the last `width` values, each 0-1 (clamped), oldest first, right-aligned.
 *
 * @example
 * ```ts
 * import { sparkline } from "./watch_view.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(sparkline([0, 0.5, 1], 5), "  ▁▅█");
 * assert.equal(sparkline([0, 1], 2, { ascii: true }), "_^");
 * ```
 */
export function sparkline(
  values: readonly number[],
  width: number,
  options: { ascii?: boolean } = {},
): string {
  const chars = options.ascii ? ASCII_SPARKS : SPARKS;
  const line = values.slice(-width).map((v) => {
    const f = Number.isFinite(v) ? Math.max(0, Math.min(1, v)) : 0;
    return chars[Math.min(7, Math.round(f * 7))]!;
  }).join("");
  return line.padStart(width, " ");
}

function short(bytes: number): string {
  return formatBytes(bytes).replace(/\.0 /, " ").replace(/ ([KMGT])iB$/, "$1").replace(/ B$/, "B");
}

function levelStyle(fraction: number, warn: number, crit: number): string {
  return fraction >= crit ? "critical" : fraction >= warn ? "warning" : "ok";
}

function clock(ms: number): string {
  return new Date(ms).toTimeString().slice(0, 8);
}

const STATE_LABEL: Record<WatchedBuilder["state"], [string, string]> = {
  connecting: ["CONNECTING", "dim"],
  live: ["LIVE", "ok"],
  stale: ["STALE", "critical"],
  unreachable: ["UNREACHABLE", "critical"],
  ended: ["ENDED", "dim"],
};

function metricLine(
  label: string,
  value: string,
  fraction: number | null,
  history: readonly number[],
  extra: string,
  style: string | undefined,
  o: Required<Pick<ViewOptions, "ascii">>,
): Seg[] {
  const open = o.ascii ? "[" : "▕";
  const close = o.ascii ? "]" : "▏";
  const pct = fraction === null ? "   -" : `${String(Math.round(fraction * 100)).padStart(3)}%`;
  return [
    [`  ${label.padEnd(5)}${value.padStart(6)} `],
    [open, "dim"],
    [bar(fraction ?? 0, 16, o), style],
    [close, "dim"],
    [` ${pct} `],
    [sparkline(history, 16, o), style],
    [extra === "" ? "" : `  ${extra}`],
  ];
}

function processSummary(sample: Sample): string {
  const procs = sample.processes;
  if (procs.length === 0) return "none running";
  const total = procs.reduce((a, p) => a + p.rssKiB * 1024, 0);
  const list = procs.map((p) =>
    `${p.name}${p.emulated ? `[${p.emulated}]` : ""} ${short(p.rssKiB * 1024)} ${p.state}`
  );
  return `${procs.length} proc${procs.length === 1 ? "" : "s"} ${short(total)}: ${list.join(", ")}`;
}

/**
 * The lines of one builder's block.
 *
 * @example
 * ```ts
 * import { builderBlock } from "./watch_view.ts";
 * import assert from "node:assert/strict";
 *
 * const lines = builderBlock({
 *   host: "builder2", state: "unreachable", reason: "Connection refused", stateSince: 0,
 *   sample: null, history: { load: [], cpu: [], memory: [], pressure: [] }, findings: [], worst: "critical",
 * });
 * assert.deepEqual(lines, ["builder2  UNREACHABLE  Connection refused"]);
 * ```
 */
export function builderBlock(view: WatchedBuilder, options: ViewOptions = {}): string[] {
  const width = options.width ?? 80;
  const color = options.color ?? false;
  const o = { ascii: options.ascii ?? false };
  const now = options.now ?? Date.now();
  const sample = view.sample;
  const status: Status = view.findings.reduce<Status>(
    (
      w,
      f,
    ) => (f.status === "critical" || (f.status === "warning" && w !== "critical") ? f.status : w),
    "ok",
  );
  // A finished watch (--once) shows its verdict instead of "ENDED".
  const [label, labelStyle] = view.state === "ended" && sample
    ? [status.toUpperCase(), status]
    : STATE_LABEL[view.state];
  // Most important first, so a narrow terminal cuts the least: name, state, verdict, then facts.
  const title: Seg[] = [[view.host, "bold"], ["  "], [label, labelStyle]];
  if (view.state === "live" && status !== "ok") title.push(["  "], [status.toUpperCase(), status]);
  if (view.state === "stale") {
    const silent = sample ? ((now - sample.receivedAt) / 1000).toFixed(1) : "?";
    title.push([
      `  no sample for ${silent} s (last ${sample ? clock(sample.receivedAt) : "never"})`,
    ]);
  } else if (view.reason !== "" && view.state !== "live") {
    title.push([`  ${view.reason}`]);
  } else if (sample) {
    const same = sample.hostname === "" || sample.hostname === view.host;
    title.push([`  ${same ? "" : `${sample.hostname}, `}${sample.cpus ?? "?"} cpus`, "dim"]);
  }
  const lines = [render(title, width, color)];
  if (!sample) return lines;
  const dim = view.state === "live" || view.state === "ended" ? undefined : "dim";
  const pick = (style: string) => dim ?? style;
  const cpus = sample.cpus ?? 1;
  const loadFrac = sample.load.one / cpus;
  lines.push(render(
    metricLine(
      "load",
      sample.load.one.toFixed(2),
      loadFrac,
      view.history.load,
      `5m ${sample.load.five.toFixed(2)} 15m ${sample.load.fifteen.toFixed(2)}`,
      pick(levelStyle(loadFrac, 1, 2)),
      o,
    ),
    width,
    color,
  ));
  const busy = sample.cpuBusyPercent;
  lines.push(render(
    metricLine(
      "cpu",
      busy === null ? "-" : `${Math.round(busy)}%`,
      busy === null ? null : busy / 100,
      view.history.cpu,
      `${sample.load.running} runnable`,
      pick(levelStyle((busy ?? 0) / 100, 0.9, 2)),
      o,
    ),
    width,
    color,
  ));
  const m = sample.memory;
  const memFrac = m.totalBytes > 0 ? m.usedBytes / m.totalBytes : 0;
  const swap = m.swapTotalBytes === 0
    ? "no swap"
    : `swap ${short(m.swapUsedBytes)}/${short(m.swapTotalBytes)}`;
  lines.push(render(
    metricLine(
      "mem",
      short(m.usedBytes),
      memFrac,
      view.history.memory,
      `${short(m.availableBytes)} avail, ${swap}`,
      pick(levelStyle(memFrac, 0.9, 0.95)),
      o,
    ),
    width,
    color,
  ));
  const p = sample.pressure;
  if (p === null) {
    lines.push(
      render([["  psi   (the kernel has no pressure stall information)", "dim"]], width, color),
    );
  } else {
    const now10 = p.someNow ?? p.someAvg10;
    lines.push(render(
      metricLine(
        "psi",
        `${now10.toFixed(1)}%`,
        now10 / 100,
        view.history.pressure,
        `avg ${p.someAvg10.toFixed(1)}/${p.someAvg60.toFixed(1)} full ${p.fullAvg10.toFixed(1)}`,
        pick(levelStyle(now10 / 100, 0.1, 0.4)),
        o,
      ),
      width,
      color,
    ));
  }
  lines.push(render([["  build", "bold"], [` ${processSummary(sample)}`, dim]], width, color));
  return lines;
}

function wrap(text: string, width: number, indent: string): string[] {
  const out: string[] = [];
  const lead = /^\s*/.exec(text)?.[0] ?? "";
  let line = lead;
  const room = Math.max(10, width - indent.length);
  const words = text.slice(lead.length).split(/\s+/).flatMap((word) => {
    const chars = [...word];
    const parts: string[] = [];
    for (let i = 0; i < chars.length; i += room) parts.push(chars.slice(i, i + room).join(""));
    return parts;
  });
  for (const word of words) {
    if (line.trim() !== "" && [...line].length + 1 + [...word].length > width) {
      out.push(line);
      line = indent + word;
    } else {
      line = line.trim() === "" ? line + word : `${line} ${word}`;
    }
  }
  if (line !== "") out.push(line);
  return out;
}

/**
 * The lines of the warnings panel: each warning wrapped to the width, its fix under it.
 *
 * @example
 * ```ts
 * import { warningLines } from "./watch_view.ts";
 * import assert from "node:assert/strict";
 *
 * const lines = warningLines([{ id: "watch/stale", status: "critical", summary: "b2: no sample", fix: "ssh b2 true" }]);
 * assert.deepEqual(lines, ["CRITICAL b2: no sample", "  fix: ssh b2 true"]);
 * ```
 */
export function warningLines(
  findings: readonly Finding[],
  options: ViewOptions & { compact?: boolean } = {},
): string[] {
  const width = options.width ?? 80;
  const color = options.color ?? false;
  const lines: string[] = [];
  const order: Record<string, number> = { critical: 0, warning: 1, unknown: 2, ok: 3 };
  const sorted = [...findings].sort((a, b) => (order[a.status] ?? 9) - (order[b.status] ?? 9));
  for (const f of sorted) {
    const label = f.status.toUpperCase();
    const fixes = (f.fix ?? "").split("\n").filter((l) => l !== "");
    if (options.compact) {
      // The live view: one line for the warning, one for its first fix, both cut to the width.
      lines.push(render([[label, f.status], [` ${f.summary}`]], width, color));
      if (fixes[0]) lines.push(render([[`  fix: ${fixes[0]}`, "dim"]], width, color));
      continue;
    }
    const [first = "", ...rest] = wrap(`${label} ${f.summary}`, width, "  ");
    lines.push(
      color ? first.replace(label, `${STYLE[f.status] ?? ""}${label}${RESET}`) : first,
      ...rest,
    );
    for (const fix of fixes) lines.push(...wrap(`  fix: ${fix}`, width, "       "));
  }
  return lines;
}

/** The wrapped build's progress, for the view. */
export interface BuildPanel {
  /** The builds so far. */
  builds: readonly BuildRecord[];
  /** When the build started, ms since the epoch. */
  startedAt: number;
}

function buildPanelLines(panel: BuildPanel, options: Required<ViewOptions>): string[] {
  const { width, color, now } = options;
  const running = panel.builds.filter((b) => b.status === "running");
  const built = panel.builds.filter((b) => b.status === "built").length;
  const failed = panel.builds.filter((b) => b.status === "failed").length;
  const lines = [
    render(
      [
        ["nix build", "bold"],
        [` ${formatDuration(now - panel.startedAt)}: ${running.length} building, ${built} built, `],
        [`${failed} failed`, failed > 0 ? "critical" : undefined],
      ],
      width,
      color,
    ),
  ];
  for (const b of running) {
    lines.push(render(
      [
        [`  ${options.ascii ? ">" : "▶"} ${b.name.padEnd(24).slice(0, 24)} `],
        [machineLabel(b.machine).padEnd(10).slice(0, 10), b.machine === "" ? "warning" : "bold"],
        [` ${formatDuration(now - b.startedAt).padStart(7)}  `],
        [`${b.phase ? `[${b.phase}] ` : ""}${b.lastLine ?? ""}`, "dim"],
      ],
      width,
      color,
    ));
  }
  return lines;
}

/**
 * The whole view: a title line, one block per builder, the wrapped build's progress, then the
 * current warnings, worst first. With `rows` (a screen) each warning takes two lines, and the
 * view at most `rows` lines (when too tall, each builder keeps its title and memory line). `live: false` (a finished `--once`) drops the Ctrl-C hint; `wrap: false` leaves the
 * warnings unwrapped (for scripts that grep them).
 *
 * @example
 * ```ts
 * import { renderView } from "./watch_view.ts";
 * import { WatchBoard } from "./watch_board.ts";
 * import assert from "node:assert/strict";
 *
 * const board = new WatchBoard(["builder1"], { intervalS: 1 });
 * const lines = renderView(board, null, { now: 0, rows: 24 });
 * assert.match(lines[0]!, /^watch_builders  1 builder  every 1 s  /);
 * assert.ok(lines.every((l) => [...l].length <= 80));
 * ```
 */
export function renderView(
  board: WatchBoard,
  panel: BuildPanel | null,
  options: ViewOptions & { rows?: number; live?: boolean; wrap?: boolean } = {},
): string[] {
  const o: Required<ViewOptions> = {
    width: options.width ?? 80,
    color: options.color ?? false,
    ascii: options.ascii ?? false,
    now: options.now ?? Date.now(),
  };
  const n = board.builders.length;
  const status = board.current();
  const title = render(
    [
      ["watch_builders", "bold"],
      [`  ${n} builder${n === 1 ? "" : "s"}  every ${board.intervalS} s  ${clock(o.now)}  `],
      [status.toUpperCase(), status],
      [options.live === false ? "" : "  Ctrl-C quits", "dim"],
    ],
    o.width,
    o.color,
  );
  const blocks = board.builders.map((view) => builderBlock(view, o));
  const findings = board.builders.flatMap((b) => b.findings);
  const rows = options.rows ?? Infinity;
  const live = options.rows !== undefined;
  const warnings = (compact: boolean) =>
    findings.length === 0 ? [] : [
      "",
      ...warningLines(findings, {
        ...o,
        compact,
        ...(options.wrap === false ? { width: 100_000 } : {}),
      }),
    ];
  const panelLines = panel ? ["", ...buildPanelLines(panel, o)] : [];
  // On a screen (rows given) warnings take two lines each; printed once (--once), all of it.
  let lines = [title, ...blocks.flatMap((b) => ["", ...b]), ...panelLines, ...warnings(live)];
  if (lines.length > rows) {
    // Too tall: keep each builder's title and memory line, then cut.
    const compact = board.builders.map((view, i) => {
      const block = blocks[i]!;
      return view.sample ? [block[0]!, block[3]!] : block;
    });
    lines = [title, ...compact.flat(), ...panelLines, ...warnings(true)].slice(0, rows);
  }
  return lines;
}

/**
 * One plain line for a sample (not a TTY): time, builder, status and every figure.
 *
 * @example
 * ```ts
 * import { plainSampleLine } from "./watch_view.ts";
 * import assert from "node:assert/strict";
 *
 * const GiB = 1024 ** 3;
 * const line = plainSampleLine({
 *   host: "builder1", receivedAt: Date.UTC(2026, 10, 25, 14, 2, 3), seq: 4, hostname: "b1", cpus: 2,
 *   load: { one: 1.5, five: 1, fifteen: 0.5, running: 3, tasks: 200 }, cpuBusyPercent: 84,
 *   memory: { totalBytes: 8 * GiB, availableBytes: 6 * GiB, usedBytes: 2 * GiB, swapTotalBytes: 0, swapUsedBytes: 0 },
 *   pressure: { someAvg10: 0, someAvg60: 0, fullAvg10: 0, someNow: 0 }, oomKills: 0,
 *   processes: [{ pid: 9, ppid: 8, uid: 0, rssKiB: 1024, state: "S", emulated: "aarch64", name: "sh" }],
 * }, "ok");
 * assert.equal(
 *   line,
 *   "2026-11-25T14:02:03Z builder1 OK load 1.50/2cpu cpu 84% mem 2G used 6G avail swap 0B/0B " +
 *     "psi 0.0% builds 1 [sh[aarch64] 1M]",
 * );
 * ```
 */
export function plainSampleLine(sample: Sample, status: Status): string {
  const time = new Date(sample.receivedAt).toISOString().replace(/\.\d+Z$/, "Z");
  const m = sample.memory;
  const p = sample.pressure;
  const procs = sample.processes.map((x) =>
    `${x.name}${x.emulated ? `[${x.emulated}]` : ""} ${short(x.rssKiB * 1024)}`
  );
  return [
    time,
    sample.host,
    status.toUpperCase(),
    `load ${sample.load.one.toFixed(2)}/${sample.cpus ?? "?"}cpu`,
    `cpu ${sample.cpuBusyPercent === null ? "-" : `${Math.round(sample.cpuBusyPercent)}%`}`,
    `mem ${short(m.usedBytes)} used ${short(m.availableBytes)} avail`,
    `swap ${short(m.swapUsedBytes)}/${short(m.swapTotalBytes)}`,
    `psi ${p === null ? "-" : `${(p.someNow ?? p.someAvg10).toFixed(1)}%`}`,
    `builds ${procs.length}${procs.length > 0 ? ` [${procs.join(", ")}]` : ""}`,
  ].join(" ");
}

/**
 * The table printed at the end of a wrapped build: where each derivation was built and how long
 * it took (wall time here, including copying to and from the builder).
 *
 * @example
 * ```ts
 * import { buildTable } from "./watch_view.ts";
 * import assert from "node:assert/strict";
 *
 * const lines = buildTable([
 *   { drvPath: "/nix/store/a-hello.drv", name: "hello", machine: "ssh://builder1", startedAt: 0, endedAt: 12300, status: "built" },
 *   { drvPath: "/nix/store/b-x.drv", name: "x", machine: "", startedAt: 0, endedAt: 200, status: "failed" },
 * ]);
 * assert.deepEqual(lines, [
 *   "where     took     result  derivation",
 *   "builder1   12.3 s  built   hello",
 *   "local      200 ms  failed  x",
 * ]);
 * ```
 */
export function buildTable(builds: readonly BuildRecord[], now: number = Date.now()): string[] {
  if (builds.length === 0) return [];
  const where = builds.map((b) => machineLabel(b.machine));
  const w = Math.max(5, ...where.map((s) => s.length));
  return [
    `${"where".padEnd(w)}  ${"took".padEnd(7)}  result  derivation`,
    ...builds.map((b, i) =>
      `${where[i]!.padEnd(w)}  ${formatDuration((b.endedAt ?? now) - b.startedAt).padStart(7)}  ` +
      `${b.status.padEnd(6)}  ${b.name}`
    ),
  ];
}

/**
 * A TTY screen redrawn in place: the alternate screen, cursor hidden, each frame written at once
 * from the top-left; {@link TtyScreen.close} restores the terminal (also from an `unload`
 * handler, so an exit path that forgets it still leaves a usable terminal).
 *
 * @example
 * ```ts ignore
 * import { TtyScreen } from "./watch_view.ts";
 *
 * const screen = new TtyScreen(Deno.stdout);
 * screen.draw(["hello"]);
 * screen.close();
 * ```
 */
export class TtyScreen {
  #out: { writeSync(p: Uint8Array): number };
  #open = false;
  #encoder = new TextEncoder();
  #onUnload = () => this.close();

  /** Takes the output (normally `Deno.stdout`). */
  constructor(out: { writeSync(p: Uint8Array): number }) {
    this.#out = out;
  }

  #write(text: string): void {
    const bytes = this.#encoder.encode(text);
    let done = 0;
    while (done < bytes.length) done += this.#out.writeSync(bytes.subarray(done));
  }

  /** Draws a frame (lines already fitted to the width). */
  draw(lines: readonly string[]): void {
    if (!this.#open) {
      this.#open = true;
      globalThis.addEventListener("unload", this.#onUnload);
      this.#write("\x1b[?1049h\x1b[?25l");
    }
    this.#write("\x1b[H" + lines.map((l) => `${l}\x1b[K`).join("\r\n") + "\x1b[J");
  }

  /** Leaves the alternate screen and shows the cursor again. Safe to call twice. */
  close(): void {
    if (!this.#open) return;
    this.#open = false;
    globalThis.removeEventListener("unload", this.#onUnload);
    try {
      this.#write("\x1b[?25h\x1b[?1049l");
    } catch {
      // the terminal is gone
    }
  }
}
