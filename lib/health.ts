/**
 * The builder health check: is the Nix store answering (through nix-daemon, or directly on a
 * single-user install), is there room in the store and the build directory, memory, swap and
 * memory pressure, OOM kills since the last run, load against cores, binfmt emulation, whether the
 * ssh users of remote builds are trusted, whether nix.conf changed after the daemon started, and
 * whether the clock can be trusted.
 *
 * {@link healthCheck} runs every check against a `Target` (this machine, a builder over ssh, a
 * snapshot) and returns findings plus metrics; {@link renderHealthNagios} and
 * {@link healthMetricFamilies} turn them into a monitoring-plugins line and Prometheus metrics.
 * Against a builder over ssh everything goes over one connection, and the cheap reads are batched
 * into a single remote command.
 *
 * @module
 */

import { ParseError } from "./errors.ts";
import type { Finding, Report, Status } from "./findings.ts";
import { worstStatus } from "./findings.ts";
import type { HostState } from "./health_state.ts";
import { formatBytes, type MemInfo, parseMeminfo, parseSize } from "./meminfo.ts";
import {
  formatThreshold,
  parseThreshold,
  type PerfData,
  renderNagios,
  type Threshold,
  thresholdAlerts,
} from "./nagios.ts";
import { loadNixConf } from "./nix_conf.ts";
import {
  CONFIG_COMMANDS,
  type EffectiveConfig,
  readEffectiveConfig,
  settingList,
} from "./nix_config.ts";
import type { MetricFamily, MetricType } from "./prometheus.ts";
import { readPressure } from "./psi.ts";
import { LocalTarget } from "./local_target.ts";
import { SshTarget } from "./ssh_target.ts";
import { cachingTarget, type PrefetchItem } from "./caching_target.ts";
import { describeFailure, type RunResult, type Target } from "./target.ts";

// ---------------------------------------------------------------------------------------------
// Thresholds

/**
 * A threshold on an amount that has a whole: free disk space, available memory. Its numbers are
 * either percentages of the whole (`10`, `10%`) or sizes (`5G`, `512M`, `1.5GiB`).
 */
export interface SpaceThreshold {
  /** The range, in percent or bytes. */
  range: Threshold;
  /** What the numbers mean. */
  unit: "percent" | "bytes";
}

/**
 * Parses a free-space threshold: monitoring-plugins ranges whose numbers are percentages (bare or
 * with `%`) or sizes with a binary unit. Refuses a range that would alert when everything is free
 * (`10` alerts *above* 10%): for "less than 10% free" write `10:`.
 *
 * @example
 * ```ts
 * import { parseSpaceThreshold } from "./health.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseSpaceThreshold("10%:").range.start, 10);
 * const bytes = parseSpaceThreshold("5G:");
 * assert.equal(bytes.unit, "bytes");
 * assert.equal(bytes.range.start, 5 * 1024 ** 3);
 * assert.throws(() => parseSpaceThreshold("10", "--warning"), /write '10:'/);
 * assert.throws(() => parseSpaceThreshold("10%:5G"), /mixes/);
 * ```
 */
export function parseSpaceThreshold(text: string, input = "threshold"): SpaceThreshold {
  const units = new Set<"percent" | "bytes">();
  const range = parseThreshold(text, {
    input,
    parseValue: (part) => {
      if (/^0+(\.0+)?$/.test(part)) return 0; // zero is zero in either unit
      const percent = /^(\d+(?:\.\d+)?)%?$/.exec(part);
      if (percent) {
        units.add("percent");
        const value = Number(percent[1]);
        if (value > 100) throw new Error(`'${part}' is more than 100%`);
        return value;
      }
      if (/^\d+(\.\d+)?\s*([KMGT]i?B?|B)$/i.test(part)) {
        units.add("bytes");
        return parseSize(part.replace(/B$/i, "").replace(/i$/i, "") || "0");
      }
      throw new Error(`'${part}' is neither a percentage (10, 10%) nor a size (5G, 512M)`);
    },
  });
  if (units.size > 1) {
    throw new ParseError(input, `'${text}' mixes percentages and sizes`, { line: 1, column: 1 });
  }
  const unit = units.has("bytes") ? "bytes" : "percent";
  if (thresholdAlerts(range, unit === "percent" ? 100 : Number.MAX_SAFE_INTEGER)) {
    const hint = !range.inside && range.start === 0 && range.end !== Infinity
      ? `; for "less than ${text} free" write '${text}:'`
      : "";
    throw new ParseError(
      input,
      `'${text}' would alert when everything is free${hint}`,
      { line: 1, column: 1 },
    );
  }
  return { range, unit };
}

/**
 * Parses a duration such as `90s`, `30m`, `6h`, `2d` or `1w` into seconds. Throws
 * {@link ParseError} otherwise.
 *
 * @example
 * ```ts
 * import { parseDuration } from "./health.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseDuration("6h"), 21600);
 * assert.equal(parseDuration("1.5d"), 129600);
 * assert.throws(() => parseDuration("6 hours", "--oom-window"), /--oom-window/);
 * ```
 */
export function parseDuration(text: string, input = "duration"): number {
  const m = /^(\d+(?:\.\d+)?)(s|m|h|d|w)$/.exec(text);
  const unit = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 } as const;
  if (!m || Number(m[1]) <= 0) {
    throw new ParseError(
      input,
      `'${text}' is not a duration (a positive number with s, m, h, d or w: 30m, 6h, 2d)`,
      { line: 1, column: 1 },
    );
  }
  return Number(m[1]) * unit[m[2] as keyof typeof unit];
}

/** Every threshold of the health check. */
export interface HealthThresholds {
  /** Free space in the store and the build directory: WARNING (`-w`). Default `10%:`. */
  spaceWarning: SpaceThreshold;
  /** ...CRITICAL (`-c`). Default `5%:`. */
  spaceCritical: SpaceThreshold;
  /** Available memory (`MemAvailable`) of RAM: WARNING. Default `10%:`. */
  memoryWarning: SpaceThreshold;
  /** ...CRITICAL. Default `5%:`. */
  memoryCritical: SpaceThreshold;
  /** 5-minute load average per core: WARNING. Default `~:2`. */
  loadWarning: Threshold;
  /** ...CRITICAL. Default `~:4`. */
  loadCritical: Threshold;
  /** Memory pressure, PSI `full avg60` in percent: WARNING. Default `~:10`. */
  pressureWarning: Threshold;
  /** ...CRITICAL. Default `~:25`. */
  pressureCritical: Threshold;
  /** New OOM kills: WARNING. Default `0` (any kill). */
  oomWarning: Threshold;
  /** ...CRITICAL. Default none. */
  oomCritical?: Threshold;
  /** Clock skew against the machine running the check, seconds (absolute): WARNING. Default `30`. */
  clockWarning: Threshold;
  /** ...CRITICAL. Default `300`. */
  clockCritical: Threshold;
}

/**
 * The default thresholds.
 *
 * @example
 * ```ts
 * import { defaultThresholds } from "./health.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(defaultThresholds().spaceWarning.range.text, "10%:");
 * ```
 */
export function defaultThresholds(): HealthThresholds {
  return {
    spaceWarning: parseSpaceThreshold("10%:"),
    spaceCritical: parseSpaceThreshold("5%:"),
    memoryWarning: parseSpaceThreshold("10%:"),
    memoryCritical: parseSpaceThreshold("5%:"),
    loadWarning: parseThreshold("~:2"),
    loadCritical: parseThreshold("~:4"),
    pressureWarning: parseThreshold("~:10"),
    pressureCritical: parseThreshold("~:25"),
    oomWarning: parseThreshold("0"),
    clockWarning: parseThreshold("30"),
    clockCritical: parseThreshold("300"),
  };
}

function judge(value: number, warning: Threshold | undefined, critical?: Threshold): Status {
  if (critical && thresholdAlerts(critical, value)) return "critical";
  if (warning && thresholdAlerts(warning, value)) return "warning";
  return "ok";
}

function spaceValue(t: SpaceThreshold, bytes: number, whole: number): number {
  return t.unit === "bytes" ? bytes : whole > 0 ? (bytes / whole) * 100 : 0;
}

function judgeSpace(bytes: number, whole: number, w: SpaceThreshold, c: SpaceThreshold): Status {
  if (thresholdAlerts(c.range, spaceValue(c, bytes, whole))) return "critical";
  if (thresholdAlerts(w.range, spaceValue(w, bytes, whole))) return "warning";
  return "ok";
}

/** A space threshold as perfdata text in bytes. */
function spacePerf(t: SpaceThreshold, whole: number): string {
  return formatThreshold(t.range, (v) => t.unit === "bytes" ? v : Math.round((v / 100) * whole));
}

// ---------------------------------------------------------------------------------------------
// Options and results

/** Options for {@link healthCheck}. */
export interface HealthCheckOptions {
  /** The store directory (default `/nix/store`). */
  storeDir?: string;
  /** Where builds run (default: the `build-dir` setting, else `/tmp`). */
  buildDir?: string;
  /** Thresholds over {@link defaultThresholds}. */
  thresholds?: Partial<HealthThresholds>;
  /** A file on the target with kernel log lines, read instead of `journalctl`/`dmesg`. */
  kernelLog?: string;
  /** Count OOM kills of the last this many seconds (from the kernel log) instead of since the last run. */
  oomWindowS?: number;
  /** What the last run saw on this host (from the state file); without it: the last 24 hours. */
  oomBaseline?: HostState;
  /** "No swap" is a WARNING (default: not an alarm; builders often run without swap). */
  requireSwap?: boolean;
  /** Emulated systems to check (default: the non-native systems in `extra-platforms`). */
  binfmtSystems?: string[];
  /** Also prove emulation by running a tiny program of each system (default false). */
  smoke?: boolean;
  /** The users controllers connect as (default: the user the check runs as on the target). */
  builderUsers?: string[];
  /** Absolute deadline, ms since the epoch: unfinished checks end UNKNOWN by then (default 55 s). */
  deadline?: number;
}

/** One measurement, for Prometheus and (with `perf`) nagios perfdata. */
export interface HealthMetric {
  /** Prometheus metric name (base units: `_bytes`, `_seconds`, `_ratio`, `_total`). */
  name: string;
  /** Its `# HELP` text. */
  help: string;
  /** `gauge` or `counter`. */
  type: MetricType;
  /** Labels of this sample. */
  labels?: Record<string, string>;
  /** The value. */
  value: number;
  /** When set, it is also a perfdata item (the value is converted into its `uom`). */
  perf?: Omit<PerfData, "value"> & { scale?: number };
}

/** What {@link healthCheck} returns. */
export interface HealthResult {
  /** The findings, in check order. */
  findings: Finding[];
  /** The measurements. */
  metrics: HealthMetric[];
  /** What to store for the next run ("OOM kills since the last run"), when the counter was read. */
  oomState?: HostState;
  /** How long the check took, ms. */
  durationMs: number;
  /** How long each check took, ms (the ssh batch as `batch`), to find what is slow. */
  timings: Record<string, number>;
}

const DAEMON_SOCKET = "/nix/var/nix/daemon-socket/socket";
const NIX = ["nix", "--extra-experimental-features", "nix-command"];
const PING_TIMEOUT_MS = 10_000;
const COMMAND_TIMEOUT_MS = 5_000;
/** The clock must be later than this (2025-01-01): an earlier one was reset, e.g. to 1970. */
const SANE_TIME_MS = Date.UTC(2025, 0, 1);
const DEFAULT_OOM_WINDOW_S = 24 * 3600;

/** The commands the check runs (fixed argv, so a snapshot can answer them). */
const CMD = {
  uname: ["uname", "-s"],
  nproc: ["sh", "-c", "nproc 2>/dev/null || getconf _NPROCESSORS_ONLN"],
  date: ["date", "+%s.%N"],
  clkTck: ["getconf", "CLK_TCK"],
  whoami: ["id", "-un"],
  timesync: ["timedatectl", "show", "--property=NTPSynchronized", "--value"],
  // nix-daemon processes of this pid namespace (a container's or a lab's daemon serves another
  // /nix; the mount namespace would not do: on NixOS the daemon unshares its own to remount the
  // read-only store). When a namespace link cannot be read (not root), the process counts.
  daemonScan: [
    "sh",
    "-c",
    "m=$(readlink /proc/$$/ns/pid 2>/dev/null); for d in /proc/[0-9]*; do c=; " +
    '{ read -r c < "$d/comm"; } 2>/dev/null; [ "$c" = nix-daemon ] || continue; ' +
    'n=$(readlink "$d/ns/pid" 2>/dev/null); ' +
    '[ -z "$n" ] || [ -z "$m" ] || [ "$n" = "$m" ] || continue; cat "$d/stat" 2>/dev/null; ' +
    "done; exit 0",
  ],
} as const;

function statfsArgv(path: string): string[] {
  return ["stat", "-f", "-c", "%S %b %f %a %c %d %i %T", "--", path];
}

function dfArgv(path: string): string[] {
  return ["df", "-Pk", "--", path];
}

function userArgv(user: string): string[] {
  return ["sh", "-c", 'id -u -- "$1" && id -Gn -- "$1"', "sh", user];
}

// ---------------------------------------------------------------------------------------------
// Facts shared by several checks

type Platform = "nixos" | "darwin" | "linux" | "other";

interface DaemonProcess {
  pid: number;
  ppid: number;
  /** Clock ticks after boot. */
  startTicks: number;
}

interface DaemonFacts {
  /** Every nix-daemon process (the listener and one per client connection). */
  processes: DaemonProcess[];
  /** The listener: the oldest one whose parent is not a nix-daemon. */
  main?: DaemonProcess;
  /** Its start, seconds since the epoch, when /proc told. */
  startedAt?: number;
  /** Whether the daemon socket exists. */
  socket: boolean;
  /** Whether this install is meant to run a daemon. */
  expected: boolean;
  /** Why it is (or is not) expected. */
  why: string;
}

function lazy<T>(fn: () => Promise<T>): () => Promise<T> {
  let value: Promise<T> | undefined;
  return () => (value ??= fn());
}

class Context {
  readonly target: Target;
  readonly options: HealthCheckOptions;
  readonly t: HealthThresholds;
  readonly deadline: number;
  readonly metrics: HealthMetric[] = [];
  /** Set by the ssh batch: when it ran (ms) and how long it took, for the clock. */
  batchWindow?: { start: number; end: number };
  /** For a snapshot: when it was collected (ms), the "now" of its data. */
  collectedAt?: number;
  /** The check runs on this machine itself (not recorded): its own clock and OS need no command. */
  local = false;

  constructor(target: Target, options: HealthCheckOptions) {
    this.target = target;
    this.options = options;
    this.t = { ...defaultThresholds(), ...options.thresholds };
    this.deadline = options.deadline ?? Date.now() + 55_000;
  }

  timeout(ms: number): number {
    return Math.max(1, Math.min(ms, this.deadline - Date.now()));
  }

  run(argv: readonly string[], timeoutMs = COMMAND_TIMEOUT_MS): Promise<RunResult> {
    return this.target.run(argv, { timeoutMs: this.timeout(timeoutMs) });
  }

  metric(
    name: string,
    help: string,
    value: number,
    extra: { type?: MetricType; labels?: Record<string, string>; perf?: HealthMetric["perf"] } = {},
  ): void {
    const m: HealthMetric = { name, help, type: extra.type ?? "gauge", value };
    if (extra.labels) m.labels = extra.labels;
    if (extra.perf) m.perf = extra.perf;
    this.metrics.push(m);
  }

  readonly os = lazy(async () => {
    if (this.local) {
      return Deno.build.os === "darwin" ? "Darwin" : Deno.build.os === "linux" ? "Linux" : "";
    }
    const r = await this.run(CMD.uname);
    return r.code === 0 ? r.stdout.trim() : "";
  });

  readonly platform = lazy(async (): Promise<Platform> => {
    const os = await this.os();
    if (os === "Darwin") return "darwin";
    if (os !== "Linux") return "other";
    const nixos = await this.target.stat("/etc/NIXOS").catch(() => null);
    return nixos !== null ? "nixos" : "linux";
  });

  readonly config = lazy((): Promise<EffectiveConfig> => readEffectiveConfig(this.target));

  readonly setting = async (name: string): Promise<string | undefined> => {
    const config = await this.config();
    return config.ok ? config.settings.get(name)?.value : undefined;
  };

  readonly bootTime = lazy(async (): Promise<number | undefined> => {
    const stat = await this.target.readFile("/proc/stat").catch(() => null);
    const btime = stat === null ? undefined : /^btime (\d+)$/m.exec(stat)?.[1];
    return btime === undefined ? undefined : Number(btime);
  });

  readonly daemon = lazy(async (): Promise<DaemonFacts> => {
    const [scan, socket, platform] = await Promise.all([
      this.run(CMD.daemonScan),
      this.target.stat(DAEMON_SOCKET).catch(() => null),
      this.platform(),
    ]);
    const processes: DaemonProcess[] = [];
    for (const line of scan.stdout.split("\n")) {
      const close = line.lastIndexOf(")");
      const pid = Number(line.slice(0, line.indexOf(" ")));
      if (close < 0 || !Number.isInteger(pid)) continue;
      const fields = line.slice(close + 2).split(" ");
      // A zombie (Z) or dead (X) daemon serves nobody.
      if (fields[0] === "Z" || fields[0] === "X") continue;
      const ppid = Number(fields[1]);
      const startTicks = Number(fields[19]);
      if (Number.isFinite(ppid) && Number.isFinite(startTicks)) {
        processes.push({ pid, ppid, startTicks });
      }
    }
    const pids = new Set(processes.map((p) => p.pid));
    const main = processes.filter((p) =>
      !pids.has(p.ppid)
    ).sort((a, b) => a.startTicks - b.startTicks)[0];
    const facts: DaemonFacts = {
      processes,
      socket: socket !== null,
      expected: false,
      why: "",
    };
    if (main) {
      facts.main = main;
      const [clk, boot] = await Promise.all([this.run(CMD.clkTck), this.bootTime()]);
      const ticks = /^\d+\s*$/.test(clk.stdout) ? Number(clk.stdout) : 100;
      if (boot !== undefined) facts.startedAt = boot + main.startTicks / ticks;
    }
    if (main) facts.why = `nix-daemon runs (pid ${main.pid})`;
    else if (socket !== null) facts.why = `its socket ${DAEMON_SOCKET} exists`;
    else if (platform === "nixos") facts.why = "NixOS always runs nix-daemon";
    else if (platform === "darwin") facts.why = "Nix on macOS is always a multi-user install";
    facts.expected = facts.why !== "";
    if (!facts.expected) facts.why = `no nix-daemon process and no ${DAEMON_SOCKET}`;
    return facts;
  });
}

function when(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function pct(part: number, whole: number): number {
  return whole > 0 ? (part / whole) * 100 : 0;
}

function fmtPct(value: number): string {
  return `${value < 10 ? value.toFixed(1) : value.toFixed(0)}%`;
}

function platformFix(
  platform: Platform,
  fixes: { nixos: string; darwin: string; linux: string },
): string {
  return platform === "nixos" ? fixes.nixos : platform === "darwin" ? fixes.darwin : fixes.linux;
}

// ---------------------------------------------------------------------------------------------
// The checks

interface PingResult {
  ok: boolean;
  /** nix is not there at all. */
  missing: boolean;
  url?: string;
  version?: string;
  trusted?: boolean;
  reason: string;
}

async function pingStore(ctx: Context, store: "daemon" | undefined): Promise<PingResult> {
  const extra = store ? ["--store", store] : [];
  let argv = [...NIX, "store", "ping", ...extra];
  let result = await ctx.run(argv, PING_TIMEOUT_MS);
  if (
    result.code !== 0 &&
    /not a recognised command|unrecognised|is not a command/.test(result.stderr)
  ) {
    argv = ["nix", "ping-store", ...extra];
    result = await ctx.run(argv, PING_TIMEOUT_MS);
  }
  const text = result.stdout + "\n" + result.stderr;
  const ping: PingResult = {
    ok: result.code === 0 && !result.failure,
    missing: result.failure === "not-found" || result.code === 127,
    reason: "",
  };
  const url = /^Store URL: (.*)$/m.exec(text)?.[1];
  const version = /^Version: (.*)$/m.exec(text)?.[1];
  const trusted = /^Trusted: (.*)$/m.exec(text)?.[1];
  if (url !== undefined) ping.url = url.trim();
  if (version !== undefined) ping.version = version.trim();
  if (trusted !== undefined) ping.trusted = trusted.trim() === "1";
  if (!ping.ok) {
    const error = result.stderr.split("\n").map((l) => l.trim()).filter((l) =>
      l.startsWith("error:")
    ).at(-1);
    ping.reason = result.failure === "timeout"
      ? `no answer within ${Math.round(PING_TIMEOUT_MS / 1000)} s`
      : error ?? describeFailure(argv, result);
  }
  return ping;
}

async function checkStore(ctx: Context): Promise<Finding[]> {
  // The socket alone decides which store to ping in nearly every case: start the ping at once.
  const socket = await ctx.target.stat(DAEMON_SOCKET).catch(() => null);
  const firstPing = pingStore(ctx, socket !== null ? "daemon" : undefined);
  const [daemon, platform] = await Promise.all([ctx.daemon(), ctx.platform()]);
  ctx.metric(
    "nix_builder_daemon_running",
    "1 when a nix-daemon process runs, else 0.",
    daemon.main ? 1 : 0,
  );
  if (daemon.startedAt !== undefined) {
    ctx.metric(
      "nix_builder_daemon_start_time_seconds",
      "When the running nix-daemon started, seconds since the epoch.",
      Math.round(daemon.startedAt),
    );
  }
  if (daemon.expected) {
    // Expected without a socket (a daemon process, NixOS, macOS): ask the daemon itself.
    const ping = socket !== null ? await firstPing : await pingStore(ctx, "daemon");
    ctx.metric("nix_builder_store_up", STORE_UP_HELP, ping.ok ? 1 : 0);
    if (ping.missing) return [nixMissing(ctx, ping)];
    if (ping.ok) {
      const since = daemon.startedAt !== undefined
        ? `, up ${duration(Date.now() / 1000 - daemon.startedAt)}`
        : "";
      return [{
        id: "health/daemon",
        status: "ok",
        summary: `nix-daemon${daemon.main ? ` (pid ${daemon.main.pid}${since})` : ""} answers${
          ping.version ? `: Nix ${ping.version}` : ""
        }`,
        data: { mode: "daemon", ...ping, processes: daemon.processes.length },
      }];
    }
    const running = daemon.main !== undefined;
    return [{
      id: "health/daemon-down",
      status: "critical",
      summary: running
        ? `nix-daemon (pid ${daemon.main!.pid}) does not answer: ${ping.reason}`
        : `nix-daemon is not running (${daemon.why}): ${ping.reason}`,
      detail: "Remote builds that connect as a user other than root, and every ssh-ng:// build " +
        "on a multi-user install, go through the daemon: they fail until it answers.",
      fix: platformFix(platform, {
        nixos:
          "systemctl restart nix-daemon.socket nix-daemon.service; then journalctl -u nix-daemon -b",
        darwin: "sudo launchctl kickstart -k system/org.nixos.nix-daemon; then read " +
          "/var/log/nix-daemon.log",
        linux: "systemctl restart nix-daemon (or start `nix-daemon` however this machine " +
          "starts it); then read its log (journalctl -u nix-daemon -b)",
      }),
      data: { mode: "daemon", ...ping, why: daemon.why },
    }];
  }
  // Without a daemon in sight, `nix store ping` opens the store Nix is set to use (`store`,
  // default auto: the local store when writable, else the daemon).
  const ping = await firstPing;
  ctx.metric("nix_builder_store_up", STORE_UP_HELP, ping.ok ? 1 : 0);
  if (ping.missing) return [nixMissing(ctx, ping)];
  if (ping.ok) {
    return [{
      id: "health/daemon",
      status: "ok",
      summary: `single-user Nix${ping.version ? ` ${ping.version}` : ""}: no nix-daemon; the ` +
        `${ping.url ?? "local"} store answers`,
      detail: "Without a daemon, remote builds run Nix as the ssh user, which must own the store.",
      data: { mode: "single-user", ...ping, why: daemon.why },
    }];
  }
  return [{
    id: "health/store-unreachable",
    status: "critical",
    summary: `the Nix store does not answer (single-user install: ${daemon.why}): ${ping.reason}`,
    detail: "Without a daemon every Nix command, and every remote build, opens the store itself.",
    fix: "Run `nix store ping` as the user builds connect as and fix what it prints: the store " +
      "(/nix/store, /nix/var/nix/db) must belong to that user; a stale lock or a full disk also stop it",
    data: { mode: "single-user", ...ping, why: daemon.why },
  }];
}

function nixMissing(ctx: Context, ping: PingResult): Finding {
  return {
    id: "health/nix-missing",
    status: "critical",
    summary: `nix is not installed on ${ctx.target.host}, or not on the PATH of this session`,
    detail: ping.reason,
    fix: "Install Nix, or put it on the PATH of non-interactive sessions (cron, ssh): on " +
      "non-NixOS machines source /nix/var/nix/profiles/default/etc/profile.d/nix-daemon.sh, " +
      "or run the check with PATH=/nix/var/nix/profiles/default/bin:$PATH",
  };
}

const STORE_UP_HELP =
  "1 when the Nix store answers (through nix-daemon, or directly on a single-user install), else 0.";

async function checkDaemonConfig(ctx: Context): Promise<Finding[]> {
  const daemon = await ctx.daemon();
  if (!daemon.main) {
    if (daemon.expected) return []; // health/daemon-down says it all.
    return [{
      id: "health/daemon-config",
      status: "ok",
      summary: "no nix-daemon: every Nix command reads nix.conf afresh",
    }];
  }
  if (daemon.startedAt === undefined) {
    return [{
      id: "health/daemon-config",
      status: "unknown",
      summary:
        `cannot tell when nix-daemon (pid ${daemon.main.pid}) started: /proc/stat has no btime`,
    }];
  }
  const conf = await loadNixConf(ctx.target, { env: { NIX_USER_CONF_FILES: "" } });
  const files = conf.files.filter((f) => f.status === "read" && f.path !== "NIX_CONFIG");
  const times = await Promise.all(files.map(async (f) => {
    const info = await ctx.target.stat(f.path).catch(() => null);
    return { path: f.path, mtime: info?.mtime ?? 0 };
  }));
  const newest = times.sort((a, b) => b.mtime - a.mtime)[0];
  // btime has whole seconds and mtimes too: a change within 2 s of the start is not one.
  const changed = newest !== undefined && newest.mtime > daemon.startedAt + 2;
  ctx.metric(
    "nix_builder_config_newer_than_daemon",
    "1 when a nix.conf file changed after nix-daemon started (it runs with old settings), else 0.",
    changed ? 1 : 0,
  );
  if (!changed) {
    return [{
      id: "health/daemon-config",
      status: "ok",
      summary: `nix.conf unchanged since nix-daemon started at ${when(daemon.startedAt)}${
        newest ? ` (${newest.path}: ${when(newest.mtime)})` : ""
      }`,
      data: { daemonStartedAt: daemon.startedAt, files: times },
    }];
  }
  const platform = await ctx.platform();
  return [{
    id: "health/daemon-config",
    status: "warning",
    summary: `${newest.path} changed at ${when(newest.mtime)}, after nix-daemon started at ${
      when(daemon.startedAt)
    }: the daemon still runs with the old settings`,
    detail: "nix-daemon reads nix.conf once, when it starts; builds it runs ignore the edit " +
      "(trusted-users, max-jobs, cores, extra-platforms, sandbox paths...).",
    fix: platformFix(platform, {
      nixos: "nixos-rebuild switch restarts the daemon when nix.conf changes; after " +
        "`nixos-rebuild boot` or a hand edit: systemctl restart nix-daemon",
      darwin: "sudo launchctl kickstart -k system/org.nixos.nix-daemon",
      linux: "systemctl restart nix-daemon (when no build is running: running builds are killed)",
    }),
    data: { daemonStartedAt: daemon.startedAt, files: times },
  }];
}

interface FsInfo {
  blockSize: number;
  blocks: number;
  free: number;
  avail: number;
  files: number;
  filesFree: number;
  id: string;
  type: string;
}

async function statfs(ctx: Context, path: string): Promise<FsInfo | string> {
  const argv = statfsArgv(path);
  const result = await ctx.run(argv);
  const fields = result.stdout.trim().split(" ");
  if (result.code === 0 && fields.length >= 8) {
    const [bs, blocks, free, avail, files, filesFree] = fields.map(Number);
    return {
      blockSize: bs!,
      blocks: blocks!,
      free: free!,
      avail: avail!,
      files: files!,
      filesFree: filesFree!,
      id: fields[6]!,
      type: fields.slice(7).join(" "),
    };
  }
  // BSD/macOS stat has no -f FORMAT: POSIX df.
  const df = await ctx.run(dfArgv(path));
  const line = df.stdout.trim().split("\n")[1];
  const m = line ? /\s(\d+)\s+(\d+)\s+(\d+)\s+\d+%\s+(.*)$/.exec(line) : null;
  if (df.code === 0 && m) {
    const total = Number(m[1]);
    const used = Number(m[2]);
    return {
      blockSize: 1024,
      blocks: total,
      free: total - used,
      avail: Number(m[3]),
      files: 0,
      filesFree: 0,
      id: m[4]!,
      type: "",
    };
  }
  const why = result.stderr.trim().split("\n").at(-1) || describeFailure(argv, result);
  return why.replace(/^stat: /, "");
}

async function checkSpace(ctx: Context): Promise<Finding[]> {
  const platform = await ctx.platform();
  const storeDir = ctx.options.storeDir ?? "/nix/store";
  const storeFs = statfs(ctx, storeDir);
  const buildSetting = ctx.options.buildDir ?? await ctx.setting("build-dir");
  const buildDir = buildSetting && buildSetting.trim() !== "" ? buildSetting.trim() : "/tmp";
  const [store, build] = await Promise.all([storeFs, statfs(ctx, buildDir)]);
  const findings: Finding[] = [];
  const gcFix = platformFix(platform, {
    nixos: "nix-collect-garbage --delete-older-than 14d (as root); keep it so with " +
      "nix.gc.automatic = true; nix.settings.min-free/max-free make builds collect garbage " +
      "when space runs low",
    darwin: "sudo nix-collect-garbage --delete-older-than 14d; keep it so with " +
      "nix.gc.automatic = true; nix.settings.min-free/max-free",
    linux: "nix-collect-garbage --delete-older-than 14d (as the store owner); add " +
      "min-free = 1G and max-free = 10G to /etc/nix/nix.conf so builds collect garbage themselves",
  });
  const one = (
    role: "store" | "build_dir",
    id: "health/store-space" | "health/build-dir-space",
    path: string,
    fs: FsInfo | string,
  ) => {
    const label = role === "store" ? "store" : "build dir";
    if (typeof fs === "string") {
      findings.push({
        id,
        status: "unknown",
        summary: `cannot read free space of ${label} ${path}: ${fs}`,
        fix: role === "store"
          ? "Is Nix installed here? Pass --store-path if the store lives elsewhere"
          : "Pass --build-dir with the directory builds use (the build-dir setting, or the " +
            "daemon's TMPDIR)",
      });
      return;
    }
    const labels = { role, path };
    const size = fs.blocks * fs.blockSize;
    if (size === 0) {
      findings.push({
        id,
        status: "unknown",
        summary:
          `cannot read free space of ${label} ${path}: its filesystem (${fs.type}) reports no size`,
      });
      return;
    }
    const avail = fs.avail * fs.blockSize;
    const used = (fs.blocks - fs.free) * fs.blockSize;
    const whole = used + avail;
    ctx.metric(
      "nix_builder_filesystem_avail_bytes",
      "Free space for builds, bytes (df's Available).",
      avail,
      {
        labels,
        perf: {
          label: role === "store" ? "store_free" : "build_dir_free",
          uom: "B",
          warn: spacePerf(ctx.t.spaceWarning, whole),
          crit: spacePerf(ctx.t.spaceCritical, whole),
          min: 0,
          max: size,
        },
      },
    );
    ctx.metric("nix_builder_filesystem_size_bytes", "Size of the filesystem, bytes.", size, {
      labels,
    });
    if (fs.files > 0) {
      ctx.metric("nix_builder_filesystem_files", "Inodes of the filesystem.", fs.files, { labels });
      ctx.metric(
        "nix_builder_filesystem_files_free",
        "Free inodes of the filesystem.",
        fs.filesFree,
        {
          labels,
        },
      );
    }
    const bytesStatus = judgeSpace(avail, whole, ctx.t.spaceWarning, ctx.t.spaceCritical);
    const inodeW = ctx.t.spaceWarning.unit === "percent"
      ? ctx.t.spaceWarning
      : parseSpaceThreshold("10%:");
    const inodeC = ctx.t.spaceCritical.unit === "percent"
      ? ctx.t.spaceCritical
      : parseSpaceThreshold("5%:");
    const inodeStatus = fs.files > 0 ? judgeSpace(fs.filesFree, fs.files, inodeW, inodeC) : "ok";
    const status = worstStatus([bytesStatus, inodeStatus]);
    // Inodes run out first on a store of many small paths: say so when they are the problem.
    const summary = status !== bytesStatus
      ? `${label} ${path}: ${
        fmtPct(pct(fs.filesFree, fs.files))
      } of inodes free (${fs.filesFree} of ${fs.files})`
      : `${label} ${path}: ${fmtPct(pct(avail, whole))} free (${formatBytes(avail)} of ${
        formatBytes(size)
      })`;
    const finding: Finding = {
      id,
      status,
      summary,
      data: {
        path,
        sizeBytes: size,
        availBytes: avail,
        usedBytes: used,
        files: fs.files,
        filesFree: fs.filesFree,
        filesystem: fs.type,
      },
    };
    if (status !== "ok") {
      finding.detail = role === "store"
        ? "Builds and substitutions fail with 'No space left on device' when the store is full."
        : "Every build unpacks its sources and writes its outputs under the build directory " +
          "first: a full one fails builds with 'No space left on device'.";
      finding.fix = role === "store"
        ? gcFix
        : `remove stale build directories (${path}/nix-build-*) when no build runs, or point ` +
          "builds at a bigger disk: the build-dir setting (newer Nix), or the nix-daemon's TMPDIR";
    }
    findings.push(finding);
  };
  one("store", "health/store-space", storeDir, store);
  if (typeof store !== "string" && typeof build !== "string" && store.id === build.id) {
    findings.push({
      id: "health/build-dir-space",
      status: "ok",
      summary: `build dir ${buildDir} is on the store's filesystem: its space is the store's`,
      data: { path: buildDir, sameFilesystemAs: storeDir },
    });
  } else {
    one("build_dir", "health/build-dir-space", buildDir, build);
  }
  return findings;
}

async function readMem(ctx: Context): Promise<MemInfo | null> {
  const text = await ctx.target.readFile("/proc/meminfo");
  return text === null ? null : parseMeminfo(text);
}

async function checkMemory(ctx: Context): Promise<Finding[]> {
  const mem = await readMem(ctx);
  if (mem === null) return [];
  const total = mem.totalBytes;
  const avail = mem.availableBytes;
  ctx.metric("nix_builder_memory_total_bytes", "RAM, bytes (MemTotal).", total);
  ctx.metric(
    "nix_builder_memory_available_bytes",
    "Memory available without swapping, bytes (MemAvailable).",
    avail,
    {
      perf: {
        label: "memory_available",
        uom: "B",
        warn: spacePerf(ctx.t.memoryWarning, total),
        crit: spacePerf(ctx.t.memoryCritical, total),
        min: 0,
        max: total,
      },
    },
  );
  ctx.metric("nix_builder_swap_total_bytes", "Swap, bytes (SwapTotal).", mem.swapTotalBytes);
  ctx.metric("nix_builder_swap_free_bytes", "Free swap, bytes (SwapFree).", mem.swapFreeBytes);
  const status = judgeSpace(avail, total, ctx.t.memoryWarning, ctx.t.memoryCritical);
  const memory: Finding = {
    id: "health/memory",
    status,
    summary: `memory: ${fmtPct(pct(avail, total))} available (${formatBytes(avail)} of ${
      formatBytes(total)
    })`,
    data: { totalBytes: total, availableBytes: avail },
  };
  if (status !== "ok") {
    memory.detail = "Builds running now use the RAM; the next big allocation may be OOM-killed.";
    memory.fix = "fewer parallel builds (lower max-jobs or cores), or swap: " +
      "deno run -A scripts/oom_mitigate.ts (runbook/oom_mitigate.md)";
  }
  const findings = [memory];
  const swapUsed = mem.swapTotalBytes - mem.swapFreeBytes;
  if (mem.swapTotalBytes === 0) {
    findings.push({
      id: "health/swap",
      status: ctx.options.requireSwap ? "warning" : "ok",
      summary: ctx.options.requireSwap
        ? "no swap, and --require-swap asks for some"
        : "no swap (not an alarm on a builder; --require-swap makes it one)",
      ...(ctx.options.requireSwap
        ? {
          fix: "NixOS: zramSwap = { enable = true; memoryPercent = 50; }; elsewhere a swap " +
            "file or zram (deno run -A scripts/oom_mitigate.ts --mitigate zram)",
        }
        : {}),
    });
  } else {
    const usedPct = pct(swapUsed, mem.swapTotalBytes);
    const full = usedPct >= 90;
    findings.push({
      id: "health/swap",
      status: full ? "warning" : "ok",
      summary: `swap: ${fmtPct(usedPct)} used (${formatBytes(swapUsed)} of ${
        formatBytes(mem.swapTotalBytes)
      })`,
      ...(full
        ? {
          detail: "With swap nearly full, the next allocation beyond RAM is an OOM kill.",
          fix: "fewer parallel builds (lower max-jobs or cores), or more swap",
        }
        : {}),
      data: { swapTotalBytes: mem.swapTotalBytes, swapFreeBytes: mem.swapFreeBytes },
    });
  }
  return findings;
}

async function checkPressure(ctx: Context): Promise<Finding[]> {
  const psi = await readPressure(ctx.target, "memory");
  if (psi === null) {
    return [{
      id: "health/memory-pressure",
      status: "ok",
      summary: "memory pressure: not measured (this kernel has no PSI)",
    }];
  }
  for (const [kind, line] of [["some", psi.some], ["full", psi.full]] as const) {
    if (!line) continue;
    for (
      const [window, value] of [["10s", line.avg10], ["60s", line.avg60], ["300s", line.avg300]]
    ) {
      const perf = kind === "full" && window === "60s"
        ? {
          perf: {
            label: "memory_pressure_full_avg60",
            uom: "%" as const,
            warn: ctx.t.pressureWarning,
            crit: ctx.t.pressureCritical,
            min: 0,
            max: 100,
            scale: 100,
          },
        }
        : {};
      ctx.metric(
        "nix_builder_memory_pressure_ratio",
        "Share of time tasks stalled waiting for memory (PSI), 0-1, by kind and window.",
        Number(value) / 100,
        { labels: { kind, window: String(window) }, ...perf },
      );
    }
    ctx.metric(
      "nix_builder_memory_pressure_stalled_seconds_total",
      "Total time tasks stalled waiting for memory since boot (PSI), seconds.",
      line.totalUs / 1e6,
      { type: "counter", labels: { kind } },
    );
  }
  const line = psi.full ?? psi.some;
  const status = judge(line.avg60, ctx.t.pressureWarning, ctx.t.pressureCritical);
  const finding: Finding = {
    id: "health/memory-pressure",
    status,
    summary: `memory pressure: ${psi.full ? "full" : "some"} ${line.avg60}% over the last minute ` +
      `(avg10 ${line.avg10}%, avg300 ${line.avg300}%)`,
    data: psi,
  };
  if (status !== "ok") {
    finding.detail = "Every task waited for memory that long: the machine is thrashing; builds " +
      "crawl and OOM kills are near.";
    finding.fix = "fewer parallel builds now (nix build --option max-jobs 1 --option cores 2 on " +
      "the controller), then lower max-jobs/cores for good: runbook/oom_mitigate.md";
  }
  return [finding];
}

async function checkOom(ctx: Context): Promise<{ findings: Finding[]; state?: HostState }> {
  const [vmstat, bootIdText] = await Promise.all([
    ctx.target.readFile("/proc/vmstat").catch(() => null),
    ctx.target.readFile("/proc/sys/kernel/random/boot_id").catch(() => null),
  ]);
  const counterText = vmstat === null ? undefined : /^oom_kill (\d+)$/m.exec(vmstat)?.[1];
  const counter = counterText === undefined ? null : Number(counterText);
  const bootId = bootIdText?.trim() || undefined;
  const now = ctx.collectedAt ?? Date.now();
  const checkedAt = new Date(now).toISOString();
  const state = counter !== null && bootId !== undefined
    ? { bootId, oomKills: counter, checkedAt }
    : undefined;
  if (counter !== null) {
    ctx.metric(
      "nix_builder_oom_kills_total",
      "Processes the kernel's OOM killer killed since boot (/proc/vmstat oom_kill).",
      counter,
      { type: "counter" },
    );
  }
  const baseline = ctx.options.oomBaseline;
  const windowS = ctx.options.oomWindowS;
  let since: number;
  let period: string;
  let counted: number | null = null;
  if (windowS !== undefined) {
    since = now - windowS * 1000;
    period = `in the last ${duration(windowS)}`;
  } else if (baseline && bootId !== undefined && baseline.bootId === bootId && counter !== null) {
    since = Date.parse(baseline.checkedAt);
    period = `since the last run (${baseline.checkedAt.replace(/\.\d{3}Z$/, "Z")})`;
    counted = Math.max(0, counter - baseline.oomKills);
  } else if (baseline && bootId !== undefined && baseline.bootId !== bootId) {
    const boot = await ctx.bootTime();
    since = boot !== undefined ? boot * 1000 : Date.parse(baseline.checkedAt);
    period = "since boot (the host rebooted after the last run)";
    counted = counter;
  } else {
    since = now - DEFAULT_OOM_WINDOW_S * 1000;
    period = "in the last 24 h";
    // No kernel kill since boot: none in the last 24 h either (userspace killers are not counted).
    if (counter === 0) counted = 0;
  }
  const result = (findings: Finding[]) => state ? { findings, state } : { findings };
  const okFinding = (n: number, note = ""): Finding => ({
    id: "health/oom-kills",
    status: judge(n, ctx.t.oomWarning, ctx.t.oomCritical),
    summary: `${n === 0 ? "no" : n} OOM kill${n === 1 ? "" : "s"} ${period}${note}`,
    data: { new: n, counter, since: new Date(since).toISOString() },
  });
  const perf = (n: number) =>
    ctx.metric(
      "nix_builder_oom_kills_new",
      `OOM kills found by this run (${
        windowS !== undefined ? "the --oom-window" : "since the last run, or the last 24 h"
      }).`,
      n,
      {
        perf: {
          label: "oom_kills",
          warn: ctx.t.oomWarning,
          ...(ctx.t.oomCritical ? { crit: ctx.t.oomCritical } : {}),
          min: 0,
        },
      },
    );
  // The cheap path: the kernel's counter says nothing happened since the last run.
  if (counted === 0 && ctx.options.kernelLog === undefined) {
    perf(0);
    return result([okFinding(0)]);
  }
  let kernelLog: { name: string; text: string } | undefined;
  if (ctx.options.kernelLog !== undefined) {
    const text = await ctx.target.readFile(ctx.options.kernelLog).catch((e) => e as Error);
    if (text === null || text instanceof Error) {
      perf(counted ?? 0);
      return result([{
        id: "health/oom-kills",
        status: "unknown",
        summary: `cannot read --kernel-log ${ctx.options.kernelLog}: ${
          text === null ? "no such file" : text.message
        }`,
      }]);
    }
    kernelLog = { name: ctx.options.kernelLog, text };
  }
  const { collectOomEvidence, kernelLogFix, oomFindings } = await import("./oom.ts");
  const evidence = await collectOomEvidence(ctx.target, {
    ...(kernelLog ? { kernelLog } : {}),
    timeoutMs: ctx.timeout(COMMAND_TIMEOUT_MS * 2),
  });
  // Found against the lab: in a container (a user namespace) dmesg is refused and there is no
  // journal. Without the log only the kernel's counter speaks; "no kills" would be a guess.
  if (evidence.log.source === "none" && counted === null) {
    const reasons = evidence.log.reasons.join("\n");
    if (counter === 0) {
      perf(0);
      return result([okFinding(0, " (the kernel counted none since boot; its log is unreadable)")]);
    }
    return result([{
      id: "health/oom-kills",
      status: "unknown",
      summary:
        `cannot tell OOM kills ${period}: the kernel log cannot be read on ${ctx.target.host}${
          counter !== null ? ` (the kernel counted ${counter} since boot)` : ""
        }`,
      detail: reasons,
      fix: `${kernelLogFix(evidence.log.reasons)}. From cron with its state file, later runs ` +
        "count new kills from /proc/vmstat without the log.",
      data: { counter, since: new Date(since).toISOString() },
    }]);
  }
  const boot = await ctx.bootTime();
  const timeOf = (kill: (typeof evidence.kills)[number]): number | undefined =>
    kill.epochMs ??
      (kill.uptimeSeconds !== undefined && boot !== undefined
        ? (boot + kill.uptimeSeconds) * 1000
        : undefined);
  let selected = evidence.kills.filter((k) => {
    const t = timeOf(k);
    return t === undefined ? counted === null : t >= since;
  });
  if (counted !== null && evidence.log.source !== "file") {
    // The counter is exact for kernel kills; the log may lack times or have lost lines.
    const kernel = evidence.kills.filter((k) => k.killer === "kernel");
    const userspace = selected.filter((k) => k.killer !== "kernel");
    selected = [...kernel.slice(Math.max(0, kernel.length - counted)), ...userspace];
  }
  const n = Math.max(selected.length, counted ?? 0);
  perf(n);
  if (n === 0) return result([okFinding(0)]);
  const judged = oomFindings({ ...evidence, kills: selected, oomKillCounter: null });
  const described = judged.filter((f) =>
    f.id === "oom/build-killed" || f.id === "oom/other-killed"
  );
  const missing = n - selected.length;
  const finding = okFinding(
    n,
    selected.some((k) => k.nix !== null)
      ? `, ${selected.filter((k) => k.nix !== null).length} of them Nix builds`
      : "",
  );
  finding.detail = [
    ...described.map((f) => f.detail ?? ""),
    ...(missing > 0
      ? [
        `${missing} more counted by the kernel (/proc/vmstat oom_kill) but not in the log${
          evidence.log.source === "none" ? ` (${evidence.log.reasons.join("; ")})` : ""
        }`,
      ]
      : []),
  ].filter((l) => l !== "").join("\n");
  finding.fix = "read the evidence and choose a mitigation (serialize, zram swap): " +
    "deno run -A scripts/oom_mitigate.ts (runbook/oom_mitigate.md)";
  finding.data = { new: n, counter, since: new Date(since).toISOString(), kills: selected };
  const extra = judged.filter((f) =>
    f.id === "oom/jobs-memory" && f.status !== "ok" && f.status !== "unknown"
  );
  return result([finding, ...extra]);
}

async function checkLoad(ctx: Context): Promise<Finding[]> {
  const [loadavg, nproc] = await Promise.all([
    ctx.target.readFile("/proc/loadavg"),
    ctx.run(CMD.nproc),
  ]);
  if (loadavg === null) return [];
  const [l1, l5, l15] = loadavg.trim().split(/\s+/).slice(0, 3).map(Number);
  const cores = Number(nproc.stdout.trim());
  if (![l1, l5, l15].every((v) => Number.isFinite(v)) || !(cores > 0)) {
    return [{
      id: "health/load",
      status: "unknown",
      summary:
        `cannot read the load (/proc/loadavg '${loadavg.trim()}', nproc '${nproc.stdout.trim()}')`,
    }];
  }
  for (const [window, value] of [["1m", l1!], ["5m", l5!], ["15m", l15!]] as const) {
    ctx.metric("nix_builder_load_average", "Load average, by window.", value, {
      labels: { window },
    });
  }
  ctx.metric("nix_builder_cpu_cores", "Online CPUs (nproc).", cores);
  const perCore = l5! / cores;
  ctx.metrics.push({
    name: "nix_builder_load_per_core",
    help: "5-minute load average divided by the online CPUs.",
    type: "gauge",
    value: Math.round(perCore * 1000) / 1000,
    perf: {
      label: "load5_per_core",
      warn: ctx.t.loadWarning,
      crit: ctx.t.loadCritical,
      min: 0,
    },
  });
  const status = judge(perCore, ctx.t.loadWarning, ctx.t.loadCritical);
  const finding: Finding = {
    id: "health/load",
    status,
    summary: `load ${l1} ${l5} ${l15} on ${cores} core${cores === 1 ? "" : "s"} (${
      perCore.toFixed(2)
    } per core over 5 min)`,
    data: { load1: l1, load5: l5, load15: l15, cores },
  };
  if (status !== "ok") {
    finding.detail = "More runnable tasks than cores: builds queue for CPU, or wait on disk I/O " +
      "(which also counts as load on Linux).";
    finding.fix = "lower max-jobs × cores on this builder, or the max jobs of its line in the " +
      "controllers' machines files";
  }
  return [finding];
}

/**
 * The systems in `extra-platforms` that need emulation here: not the machine's own ELF identity,
 * and not 32-bit code its 64-bit kernel runs itself (i686 on x86_64, armv7l on aarch64), the rule
 * check_binfmt reports as `binfmt/native`. `undefined` when the settings cannot be read.
 */
async function emulatedSystems(ctx: Context): Promise<string[] | undefined> {
  const [config, elf] = await Promise.all([ctx.config(), import("./elf.ts")]);
  if (!config.ok) return undefined;
  const system = config.settings.get("system")?.value.trim() ?? "";
  const foreign = (host: ReturnType<typeof elf.elfIdentity>) =>
    settingList(config.settings.get("extra-platforms")).filter((s) => {
      if (s === system) return false;
      const arch = elf.elfIdentity(s);
      if (arch === undefined || host === undefined) return true;
      const compat = (host.qemuArch === "x86_64" && arch.qemuArch === "i386") ||
        (host.qemuArch === "aarch64" && arch.qemuArch === "arm");
      return !elf.sameIdentity(arch, host) && !compat;
    });
  // Nix's own system says what the kernel runs, nearly always; the kernel itself has the last
  // word when something looks foreign (an i686 Nix on an x86_64 kernel).
  const candidates = foreign(elf.elfIdentity(system));
  if (candidates.length === 0) return candidates;
  const machine = await ctx.run(["uname", "-m"]);
  const kernel = machine.code === 0 ? elf.archForUname(machine.stdout) : undefined;
  return kernel === undefined ? candidates : foreign(kernel);
}

async function checkEmulation(ctx: Context): Promise<Finding[]> {
  const systems = ctx.options.binfmtSystems;
  if (systems === undefined || systems.length === 0) {
    const emulated = await emulatedSystems(ctx);
    if (emulated !== undefined && emulated.length === 0) {
      return [{
        id: "health/binfmt",
        status: "ok",
        summary: "no emulated system in extra-platforms: no binfmt entry to check",
      }];
    }
  }
  // Loaded on demand: it is big, and while it loads the Nix settings are being read.
  const { checkBinfmt } = await import("./binfmt.ts");
  const findings = await checkBinfmt(ctx.target, {
    ...(systems !== undefined && systems.length > 0 ? { systems } : {}),
    smoke: ctx.options.smoke ? "exec" : "off",
  });
  // Per system: its own findings, and the global ones (binfmt_misc off, not mounted).
  const bySystem = new Map<string, Status[]>();
  const global: Status[] = [];
  for (const f of findings) {
    const system = (f.data as { system?: unknown } | undefined)?.system;
    if (typeof system === "string") {
      bySystem.set(system, [...(bySystem.get(system) ?? []), f.status]);
    } else if (f.id !== "binfmt/nothing-to-check") global.push(f.status);
  }
  for (const [system, statuses] of bySystem) {
    const status = worstStatus([...statuses, ...global]);
    ctx.metric(
      "nix_builder_binfmt_ok",
      "1 when emulation of the system passes every check_binfmt check, else 0.",
      status === "ok" ? 1 : 0,
      { labels: { system } },
    );
  }
  return findings;
}

async function checkTrustedUsers(ctx: Context): Promise<Finding[]> {
  const config = await ctx.config();
  if (!config.ok) {
    return config.nixMissing ? [] : [{
      id: "health/trusted-users",
      status: "unknown",
      summary: `cannot read the Nix configuration: ${config.reason}`,
    }];
  }
  let users = ctx.options.builderUsers;
  if ((users === undefined || users.length === 0) && ctx.local && Deno.uid() === 0) {
    users = ["root"];
  }
  if (users === undefined || users.length === 0) {
    const me = await ctx.run(CMD.whoami);
    users = me.code === 0 && me.stdout.trim() !== "" ? [me.stdout.trim()] : ["root"];
  }
  const trusted = settingList(config.settings.get("trusted-users"));
  const daemon = await ctx.daemon();
  const platform = await ctx.platform();
  const problems: string[] = [];
  const notes: string[] = [];
  const store = await ctx.target.stat(ctx.options.storeDir ?? "/nix/store").catch(() => null);
  for (const user of users) {
    const info = user === "root"
      ? { code: 0, stdout: "0\nroot\n", stderr: "" }
      : await ctx.run(userArgv(user));
    const [uidLine = "", groupsLine = ""] = info.stdout.split("\n");
    if (info.code !== 0 || !/^\d+$/.test(uidLine.trim())) {
      problems.push(`${user}: no such user on ${ctx.target.host}`);
      continue;
    }
    const uid = Number(uidLine.trim());
    const groups = groupsLine.trim().split(/\s+/).filter((g) => g !== "");
    if (!daemon.expected) {
      if (store !== null && store.uid !== uid && uid !== 0) {
        problems.push(
          `${user}: single-user install, and the store belongs to uid ${store.uid}, ` +
            `not to ${user} (uid ${uid}): builds as ${user} cannot write it`,
        );
      } else {
        notes.push(`${user}: opens the store directly (single-user install)`);
      }
      continue;
    }
    if (uid === 0) {
      notes.push("root: opens the store directly, bypassing the daemon");
      continue;
    }
    const match = trusted.find((t) =>
      t === "*" || t === user || (t.startsWith("@") && groups.includes(t.slice(1)))
    );
    if (match) notes.push(`${user}: trusted (${match === user ? "by name" : `as ${match}`})`);
    else problems.push(`${user}: not in trusted-users (${trusted.join(" ") || "empty"})`);
  }
  const shown = `trusted-users = ${trusted.join(" ")}`;
  if (problems.length === 0) {
    return [{
      id: "health/trusted-users",
      status: "ok",
      summary: `${shown}; ${notes.join("; ")}`,
      data: { trustedUsers: trusted, users },
    }];
  }
  const names = users.filter((u) => problems.some((p) => p.startsWith(`${u}:`)));
  return [{
    id: "health/trusted-users",
    status: "warning",
    summary: `${problems.join("; ")}`,
    detail: "Remote builds as an untrusted user fail with 'you are not privileged to build " +
      "input-addressed derivations' or 'lacks a signature by a trusted key'.",
    fix: platformFix(platform, {
      nixos: `nix.settings.trusted-users = [ "root" ${names.map((n) => `"${n}"`).join(" ")} ];`,
      darwin: `nix.settings.trusted-users = [ "root" ${names.map((n) => `"${n}"`).join(" ")} ];`,
      linux: `trusted-users = root ${names.join(" ")} in /etc/nix/nix.conf, then ` +
        "systemctl restart nix-daemon",
    }),
    data: { trustedUsers: trusted, users },
  }];
}

async function checkClock(ctx: Context): Promise<Finding[]> {
  const platform = await ctx.platform();
  // timedatectl answers only where systemd runs the machine.
  const systemd = await ctx.target.stat("/run/systemd/system").catch(() => undefined);
  const [date, sync] = await Promise.all([
    ctx.local
      ? Promise.resolve({ code: 0, stdout: `${Date.now() / 1000}\n`, stderr: "" })
      : ctx.run(CMD.date),
    systemd !== null && platform !== "darwin" ? ctx.run(CMD.timesync, 3000) : Promise.resolve(null),
  ]);
  const remote = Number.parseFloat(date.stdout.trim().replace(/\.N$/, ""));
  if (date.code !== 0 || !Number.isFinite(remote)) {
    return [{
      id: "health/clock",
      status: "unknown",
      summary: `cannot read the clock: ${describeFailure(CMD.date, date)}`,
    }];
  }
  const remoteMs = remote * 1000;
  const problems: { status: Status; text: string }[] = [];
  let skewS: number | undefined;
  if (ctx.target.kind === "ssh" && ctx.batchWindow) {
    const { start, end } = ctx.batchWindow;
    const mid = (start + end) / 2;
    const uncertainty = (end - start) / 2;
    const raw = remoteMs - mid;
    skewS = Math.abs(raw) <= uncertainty ? 0 : (raw - Math.sign(raw) * uncertainty) / 1000;
  } else if (ctx.collectedAt !== undefined) {
    skewS = (remoteMs - ctx.collectedAt) / 1000;
  }
  if (skewS !== undefined) {
    ctx.metric(
      "nix_builder_clock_skew_seconds",
      "The builder's clock minus the checking machine's, seconds.",
      Math.round(skewS * 1000) / 1000,
      {
        perf: {
          label: "clock_skew",
          uom: "s",
          warn: ctx.t.clockWarning,
          crit: ctx.t.clockCritical,
        },
      },
    );
    const status = judge(Math.abs(skewS), ctx.t.clockWarning, ctx.t.clockCritical);
    if (status !== "ok") {
      problems.push({
        status,
        text: `clock ${Math.abs(skewS).toFixed(0)} s ${skewS > 0 ? "ahead of" : "behind"} ${
          ctx.collectedAt !== undefined ? "the collecting machine" : "the checking machine"
        }`,
      });
    }
  }
  if (remoteMs < SANE_TIME_MS) {
    problems.push({
      status: "critical",
      text: `clock says ${new Date(remoteMs).toISOString()}: it was reset`,
    });
  }
  let synced: boolean | undefined;
  if (sync && sync.code === 0 && /^(yes|no)\s*$/.test(sync.stdout)) {
    synced = sync.stdout.trim() === "yes";
    ctx.metric(
      "nix_builder_clock_synchronized",
      "1 when systemd reports the clock NTP-synchronised, else 0.",
      synced ? 1 : 0,
    );
    if (!synced) problems.push({ status: "warning", text: "not NTP-synchronised (timedatectl)" });
  }
  const shown = new Date(remoteMs).toISOString().replace(/\.\d{3}Z$/, "Z");
  const data = { time: shown, skewSeconds: skewS, synchronized: synced };
  if (problems.length === 0) {
    return [{
      id: "health/clock",
      status: "ok",
      summary: skewS !== undefined && ctx.collectedAt === undefined
        ? `clock ${Math.abs(skewS).toFixed(1)} s from this machine's${
          synced === true ? ", NTP-synchronised" : ""
        }`
        : synced === true
        ? "clock NTP-synchronised"
        : `clock not reset${synced === undefined ? " (NTP status unknown: no systemd)" : ""}`,
      data,
    }];
  }
  return [{
    id: "health/clock",
    status: worstStatus(problems.map((p) => p.status)),
    summary: problems.map((p) => p.text).join("; "),
    detail: "A wrong clock breaks TLS to binary caches, signature and certificate validity " +
      "windows, and make-style timestamp checks in builds.",
    fix: platformFix(platform, {
      nixos: "services.timesyncd.enable = true (the default) or services.chrony.enable = true; " +
        "check with timedatectl",
      darwin:
        "System Settings > General > Date & Time > Set time automatically; or sudo sntp -sS time.apple.com",
      linux: "timedatectl set-ntp true, or install chrony; check with timedatectl",
    }),
    data,
  }];
}

// ---------------------------------------------------------------------------------------------
// The whole run

const METRIC_ORDER = [
  "nix_builder_store_up",
  "nix_builder_daemon_running",
  "nix_builder_daemon_start_time_seconds",
  "nix_builder_config_newer_than_daemon",
  "nix_builder_filesystem_avail_bytes",
  "nix_builder_filesystem_size_bytes",
  "nix_builder_filesystem_files",
  "nix_builder_filesystem_files_free",
  "nix_builder_memory_total_bytes",
  "nix_builder_memory_available_bytes",
  "nix_builder_swap_total_bytes",
  "nix_builder_swap_free_bytes",
  "nix_builder_memory_pressure_ratio",
  "nix_builder_memory_pressure_stalled_seconds_total",
  "nix_builder_oom_kills_total",
  "nix_builder_oom_kills_new",
  "nix_builder_load_average",
  "nix_builder_cpu_cores",
  "nix_builder_load_per_core",
  "nix_builder_binfmt_ok",
  "nix_builder_clock_skew_seconds",
  "nix_builder_clock_synchronized",
];

const LINUX_ONLY = "memory, swap, pressure, OOM kills, load, binfmt";

/**
 * Runs every health check against a target and returns the findings and metrics. Never throws for
 * what it finds on the target: a check that fails or misses the deadline becomes an UNKNOWN finding.
 *
 * @example A healthy single-user builder: this machine
 * ```ts
 * import { healthCheck } from "./health.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const result = await healthCheck(new LocalTarget({ timeoutMs: 20_000 }), { binfmtSystems: [] });
 * const ids = result.findings.map((f) => f.id);
 * assert.ok(ids.includes("health/store-space"));
 * assert.ok(result.metrics.some((m) => m.name === "nix_builder_filesystem_avail_bytes"));
 * ```
 */
export async function healthCheck(
  target: Target,
  options: HealthCheckOptions = {},
): Promise<HealthResult> {
  const started = Date.now();
  const timings: Record<string, number> = {};
  // doctor hands over its own cache (the Nix settings it already read); the kind of target under
  // it decides how to read.
  const wrapped = cachingTarget(target);
  const base = wrapped.inner;
  const ctx = new Context(wrapped, options);
  ctx.local = base instanceof LocalTarget;
  // A snapshot's "now" is when it was collected: windows and clock skew mean the same offline.
  if (base.kind === "snapshot" && base.now) ctx.collectedAt = base.now();
  if (base instanceof SshTarget) {
    const storeDir = options.storeDir ?? "/nix/store";
    const items: PrefetchItem[] = [
      { argv: CMD.date },
      { argv: CMD.uname },
      { file: "/proc/meminfo" },
      { file: "/proc/loadavg" },
      { file: "/proc/pressure/memory" },
      { file: "/proc/vmstat" },
      { file: "/proc/stat" },
      { file: "/proc/sys/kernel/random/boot_id" },
      { file: "/etc/nix/nix.conf" },
      { stat: "/etc/nix/nix.conf" },
      { stat: DAEMON_SOCKET },
      { stat: storeDir },
      { argv: CMD.nproc },
      { argv: CMD.clkTck },
      { argv: CMD.whoami },
      { argv: CMD.daemonScan },
      { argv: statfsArgv(storeDir) },
      { argv: statfsArgv(options.buildDir ?? "/tmp") },
      { argv: CONFIG_COMMANDS[0]! },
      { argv: CONFIG_COMMANDS[1]! },
      // What check_binfmt reads besides its own scripts.
      { file: "/etc/os-release" },
      { stat: "/etc/NIXOS" },
      { stat: "/run/systemd/system" },
      { argv: ["uname", "-m"] },
    ];
    const start = Date.now();
    const batch = await wrapped.prefetch(items, ctx.timeout(20_000));
    ctx.batchWindow = { start, end: Date.now() };
    timings.batch = ctx.batchWindow.end - start;
    if (batch.failure === "unreachable" || batch.failure === "timeout") {
      return {
        findings: [{
          id: "health/unreachable",
          status: "unknown",
          summary: `cannot check ${target.host}: ${describeFailure(["ssh", target.host], batch)}`,
          fix: "Check the host is up and root can ssh to it: ssh -o BatchMode=yes " +
            `${target.host} true (runbook/health_check.md)`,
        }],
        metrics: [],
        durationMs: Date.now() - started,
        timings,
      };
    }
  }
  // Start what several checks wait for: the Nix settings (both commands at once: Nix < 2.20 fails
  // the first fast) and the OS.
  for (const argv of CONFIG_COMMANDS.slice(0, 2)) void wrapped.run(argv).catch(() => {});
  // The usual build directory, while the settings that could name another are read.
  if (options.buildDir === undefined) void wrapped.run(statfsArgv("/tmp")).catch(() => {});
  const os = await ctx.os();
  const linux = os === "Linux" || (os === "" && target.kind === "snapshot");
  let oomState: HostState | undefined;
  const checks: [string, () => Promise<Finding[]>][] = [
    ["nix store", () => checkStore(ctx)],
    ["nix.conf age", () => checkDaemonConfig(ctx)],
    ["free space", () => checkSpace(ctx)],
  ];
  if (linux) {
    checks.push(
      ["memory", () => checkMemory(ctx)],
      ["memory pressure", () => checkPressure(ctx)],
      ["OOM kills", async () => {
        const r = await checkOom(ctx);
        oomState = r.state;
        return r.findings;
      }],
      ["load", () => checkLoad(ctx)],
      ["binfmt", () => checkEmulation(ctx)],
    );
  }
  checks.push(["trusted users", () => checkTrustedUsers(ctx)], ["clock", () => checkClock(ctx)]);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<"expired">((resolve) => {
    timer = setTimeout(() => resolve("expired"), Math.max(0, ctx.deadline - Date.now()));
  });
  const results = await Promise.all(checks.map(async ([name, run]): Promise<Finding[]> => {
    const began = Date.now();
    const outcome = await Promise.race([
      run().catch((error): Finding[] => [{
        id: "health/check-failed",
        status: "unknown",
        summary: `${name} check failed: ${error instanceof Error ? error.message : String(error)}`,
      }]),
      expired,
    ]);
    timings[name] = Date.now() - began;
    if (outcome === "expired") {
      return [{
        id: "health/timeout",
        status: "unknown",
        summary: `${name} check did not finish before the deadline (--timeout)`,
        fix: "Raise --timeout, or find what hangs on the target (a stuck nix-daemon, NFS)",
      }];
    }
    return outcome;
  }));
  clearTimeout(timer);
  const findings = results.flat();
  if (!linux) {
    findings.push({
      id: "health/not-linux",
      status: "ok",
      summary: `${os || "unknown OS"}: the Linux-only checks (${LINUX_ONLY}) were skipped`,
    });
  }
  // Checks finish in any order: give the metrics a stable one (store, memory, OOM, load, ...).
  const rank = (name: string) => {
    const i = METRIC_ORDER.indexOf(name);
    return i < 0 ? METRIC_ORDER.length : i;
  };
  const metrics = [...ctx.metrics].sort((a, b) => rank(a.name) - rank(b.name));
  const result: HealthResult = {
    findings,
    metrics,
    durationMs: Date.now() - started,
    timings,
  };
  if (oomState) result.oomState = oomState;
  return result;
}

// ---------------------------------------------------------------------------------------------
// Output

const STATUS_VALUE: Record<Status, number> = { ok: 0, warning: 1, critical: 2, unknown: 3 };

/**
 * The monitoring-plugins line for a health report: `STATUS: summary | perfdata`. The summary names
 * every problem, worst first; when all is well, it says how many checks passed.
 *
 * @example
 * ```ts
 * import { renderHealthNagios } from "./health.ts";
 * import { makeReport } from "./findings.ts";
 * import assert from "node:assert/strict";
 *
 * const report = makeReport([
 *   { id: "health/memory", status: "ok", summary: "memory: 80% available" },
 *   { id: "health/store-space", status: "critical", summary: "store /nix/store: 2.0% free" },
 * ], { tool: "health_check", host: "builder1" });
 * const line = renderHealthNagios(report, [{
 *   name: "nix_builder_load_per_core", help: "", type: "gauge", value: 0.5,
 *   perf: { label: "load5_per_core", warn: "~:2" },
 * }]);
 * assert.equal(line, "CRITICAL: builder1: store /nix/store: 2.0% free | 'load5_per_core'=0.5;~:2\n");
 * ```
 */
export function renderHealthNagios(report: Report, metrics: readonly HealthMetric[]): string {
  const order: Status[] = ["critical", "warning", "unknown"];
  const problems = order.flatMap((s) => report.findings.filter((f) => f.status === s));
  const summary = problems.length === 0
    ? `${report.host}: Nix builder healthy (${report.findings.length} checks OK)`
    : `${report.host}: ${problems.map((f) => f.summary).join("; ")}`;
  const perf: PerfData[] = metrics.filter((m) => m.perf !== undefined).map((m) => {
    const { scale, ...rest } = m.perf!;
    return { ...rest, value: m.value * (scale ?? 1) };
  });
  return renderNagios(report.status, summary, perf);
}

/** Options for {@link healthMetricFamilies}. */
export interface MetricFamiliesOptions {
  /** Add a `host` label to every sample (for checks of other machines). */
  hostLabel?: string;
  /** When the run ended, ms since the epoch (default now). */
  now?: number;
  /** How long the run took, ms. */
  durationMs?: number;
}

/**
 * The health report and its metrics as Prometheus families: the measurements, plus the overall
 * status, each check's status, when it ran and how long it took.
 *
 * @example
 * ```ts
 * import { healthMetricFamilies } from "./health.ts";
 * import { makeReport } from "./findings.ts";
 * import { renderPrometheus } from "./prometheus.ts";
 * import assert from "node:assert/strict";
 *
 * const report = makeReport([{ id: "health/load", status: "warning", summary: "load" }], {
 *   tool: "health_check",
 *   host: "b1",
 * });
 * const text = renderPrometheus(healthMetricFamilies(report, [], { now: 1_000_000 }));
 * assert.match(text, /^nix_builder_health_status 1$/m);
 * assert.match(text, /^nix_builder_health_check_status\{check="health\/load"\} 1$/m);
 * assert.match(text, /^nix_builder_health_last_run_timestamp_seconds 1000$/m);
 * ```
 */
export function healthMetricFamilies(
  report: Report,
  metrics: readonly HealthMetric[],
  options: MetricFamiliesOptions = {},
): MetricFamily[] {
  const host = options.hostLabel;
  const withHost = (labels: Record<string, string> = {}) =>
    host === undefined ? labels : { host, ...labels };
  const families = new Map<string, MetricFamily>();
  const add = (m: Omit<HealthMetric, "perf">) => {
    let family = families.get(m.name);
    if (!family) {
      family = { name: m.name, help: m.help, type: m.type, samples: [] };
      families.set(m.name, family);
    }
    const labels = withHost(m.labels);
    family.samples.push(
      Object.keys(labels).length > 0 ? { labels, value: m.value } : { value: m.value },
    );
  };
  add({
    name: "nix_builder_health_status",
    help: "Worst status of the last health check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    type: "gauge",
    value: STATUS_VALUE[report.status],
  });
  const perCheck = new Map<string, Status>();
  for (const f of report.findings) {
    perCheck.set(f.id, worstStatus([perCheck.get(f.id) ?? "ok", f.status]));
  }
  for (const [check, status] of perCheck) {
    add({
      name: "nix_builder_health_check_status",
      help:
        "Status of each finding of the last health check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
      type: "gauge",
      labels: { check },
      value: STATUS_VALUE[status],
    });
  }
  add({
    name: "nix_builder_health_last_run_timestamp_seconds",
    help: "When the last health check ended, seconds since the epoch.",
    type: "gauge",
    value: Math.round((options.now ?? Date.now()) / 1000),
  });
  if (options.durationMs !== undefined) {
    add({
      name: "nix_builder_health_duration_seconds",
      help: "How long the last health check took, seconds.",
      type: "gauge",
      value: options.durationMs / 1000,
    });
  }
  for (const m of metrics) add(m);
  return [...families.values()];
}
