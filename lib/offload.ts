/**
 * Proves that builds really offload: for every machine of the controller's effective `builders`,
 * reach it the way Nix does (root's ssh, the line's key and pinned host key, no agent), check the
 * remote side (nix on the non-interactive PATH, a quiet login shell, the store, trust, versions,
 * the builder's own config against the line, cores, memory, load, free space on `/nix`), then build
 * a unique canary for each system the line claims with only that machine as builder, and confirm
 * from Nix's output and the builder's store that it was built there.
 *
 * Machines are checked in parallel (bounded); each uses one ssh connection (ControlMaster) for all
 * of its own checks. Everything external has a time-out and ends before the run's deadline.
 *
 * @module
 */

import { type CanaryResult, cleanOutput, runCanaries, writeCanaryProgram } from "./canary.ts";
import { type Finding, finding, type Status } from "./findings.ts";
import { worstStatus } from "./findings.ts";
import { UsageError } from "./errors.ts";
import { decodeHostKey, type Machine, type MachineError, resolveBuilders } from "./machines.ts";
import { formatBytes, parseMeminfo } from "./meminfo.ts";
import {
  CONFIG_COMMANDS,
  type EffectiveConfig,
  parseConfigShowJson,
  parseNixVersion,
  readEffectiveConfig,
  settingList,
  versionAtLeast,
} from "./nix_config.ts";
import { isTrustedUser } from "./show_config.ts";
import { parseSshHost } from "./host.ts";
import { SshTarget } from "./ssh_target.ts";
import {
  describeFailure,
  type DirEntry,
  type FileInfo,
  type RunOptions,
  type RunResult,
  type StreamedRun,
  type Target,
} from "./target.ts";

/** The checks of one machine, in table order. */
export const OFFLOAD_CHECKS = [
  "ssh",
  "root",
  "key",
  "shell",
  "nix",
  "store",
  "trusted",
  "version",
  "config",
  "disk",
  "load",
  "canary",
] as const;

/** One check of a machine (a column of the table). */
export type OffloadCheck = typeof OFFLOAD_CHECKS[number];

/** One cell of the table: a verdict (or `skipped`) and a short text. */
export interface OffloadCell {
  /** The verdict; `skipped` when the check did not run (an earlier one failed, or not asked). */
  status: Status | "skipped";
  /** A few words: `ok`, `refused`, `2.8.0`, `71.2 GiB free`... */
  text: string;
}

/** One machine's row. */
export interface OffloadRow {
  /** The store URI, as Nix uses it (`ssh://builder1`). */
  builder: string;
  /** The machine line as written. */
  line: string;
  /** The worst status of its cells. */
  status: Status;
  /** Each check's cell. */
  cells: Record<OffloadCheck, OffloadCell>;
  /** Each canary build. */
  canaries: CanaryResult[];
  /** What the builder told about itself. */
  facts: BuilderFacts;
  /** Wall-clock time spent on this machine, in milliseconds. */
  ms: number;
  /** Milliseconds spent in each step (`ssh`, `nix`, `canary`...). */
  timings: Record<string, number>;
}

/** What a builder told about itself (all optional: the check may not have got that far). */
export interface BuilderFacts {
  /** The ssh user's name on the builder. */
  user?: string;
  /** Its groups. */
  groups?: string[];
  /** Where the remote program was found. */
  program?: string;
  /** The builder's Nix version (`2.8.0`). */
  nixVersion?: string;
  /** Its `system`. */
  system?: string;
  /** Its `extra-platforms`. */
  extraPlatforms?: string[];
  /** Its `system-features`. */
  systemFeatures?: string[];
  /** Its `trusted-users`. */
  trustedUsers?: string[];
  /** Whether its store trusts the ssh user. */
  trusted?: boolean;
  /** CPU count. */
  cores?: number;
  /** RAM in bytes. */
  memoryBytes?: number;
  /** Available RAM in bytes. */
  memoryAvailableBytes?: number;
  /** 1-minute load average. */
  load1?: number;
  /** Free bytes on the file system holding `/nix/store`. */
  nixFreeBytes?: number;
  /** Size of that file system. */
  nixTotalBytes?: number;
}

/** A progress event for spinners: which machine is at which check. */
export interface OffloadProgress {
  /** The machine's store URI. */
  builder: string;
  /** The check it is running, or `done`. */
  step: OffloadCheck | "done";
  /** The row so far (final when `step` is `done`). */
  row: OffloadRow;
}

/** Options for {@link verifyMachines}. */
export interface VerifyMachinesOptions {
  /** Only these machines: a store URI, host, `user@host` or alias as written in the line. */
  builders?: readonly string[];
  /** The `builders` text to use instead of the controller's effective setting (like `--builders`). */
  buildersOverride?: string;
  /** Build canaries (default true). */
  canary?: boolean;
  /** How many machines at once (default 8). */
  jobs?: number;
  /** Absolute deadline (ms since the epoch) nothing may run past. */
  deadline?: number;
  /** Extra ssh options (`-o VALUE` each), e.g. from `--ssh-option`. */
  sshOptions?: readonly string[];
  /** ssh arguments Nix would add from `NIX_SSHOPTS` (default: split from the environment). */
  nixSshOpts?: readonly string[];
  /** Warn when `/nix` has less free space than this (bytes; default 5 GiB). */
  minFreeBytes?: number;
  /** Warn when the 1-minute load exceeds this many runnable tasks per core (default 2). */
  maxLoadPerCore?: number;
  /** Called as machines move from check to check. */
  onProgress?: (event: OffloadProgress) => void;
  /** Environment to read `SUDO_USER`, `SSH_AUTH_SOCK`, `NIX_SSHOPTS` from (default: the process's). */
  env?: Record<string, string | undefined>;
  /** A flake whose `nixosConfigurations` to list and match against the machines (the post's listing). */
  flake?: string;
  /** Report a flake that cannot be listed (default true; false for a flake found on its own). */
  flakeRequired?: boolean;
  /**
   * Runs beside a machine's checks once ssh has reached it, over the same connection (doctor's
   * health check: one ssh handshake per builder). Awaited before that connection closes; its
   * errors are its own to report. Must not close `builder`.
   */
  alongside?: (machine: Machine, builder: Target) => Promise<void>;
}

/** What {@link verifyMachines} found. */
export interface VerifyMachinesResult {
  /** Findings, controller first, then machine by machine. */
  findings: Finding[];
  /** One row per checked machine, in the machines file's order. */
  rows: OffloadRow[];
  /** The machines Nix would use (all of them, also the ones not checked). */
  machines: Machine[];
  /** What was learnt about the controller. */
  controller: ControllerFacts;
  /** The flake's configurations and their systems, when a flake was listed. */
  flake?: FlakeListing;
  /** Wall-clock time of the whole verification, in milliseconds. */
  ms: number;
}

/** What the run learnt about the controller. */
export interface ControllerFacts {
  /** The user the checks run as. */
  user: string;
  /** Its uid. */
  uid: number;
  /** The Nix version there (`2.8.0`), when nix runs. */
  nixVersion?: string;
  /** Its `system`. */
  system?: string;
  /** Its `max-jobs`. */
  maxJobs?: string;
  /** Its effective `builders`. */
  builders?: string;
  /** `daemon` when builds go through nix-daemon, `local` when this user builds itself. */
  store?: string;
  /** Who opens the ssh connections to builders: `root` (the daemon, or root itself) or this user. */
  buildsAs: string;
}

/** The post's listing: a flake's NixOS configurations and the system each needs. */
export interface FlakeListing {
  /** The flake reference. */
  flake: string;
  /** Configuration names (`nix eval <flake>#nixosConfigurations --apply builtins.attrNames`). */
  names: string[];
  /** The system of each, when it could be evaluated. */
  systems: Record<string, string | null>;
}

const NIX = ["nix", "--extra-experimental-features", "nix-command"];
const GIB = 1024 ** 3;

function emptyRow(machine: Machine): OffloadRow {
  const cells = {} as Record<OffloadCheck, OffloadCell>;
  for (const check of OFFLOAD_CHECKS) cells[check] = { status: "skipped", text: "-" };
  return {
    builder: machine.storeUri,
    line: machine.text,
    status: "ok",
    cells,
    canaries: [],
    facts: {},
    ms: 0,
    timings: {},
  };
}

/**
 * Milliseconds for people: `40ms` below a second, `1.2s` above.
 *
 * @example
 * ```ts
 * import { formatMs } from "./offload.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual([formatMs(40), formatMs(1234)], ["40ms", "1.2s"]);
 * ```
 */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`;
}

/** Why an ssh connection failed, from ssh's own message. */
export type SshFailureKind = "host-key" | "auth" | "timeout" | "unreachable";

/**
 * Classifies ssh's error output: a host key problem, an authentication refusal, a time-out, or
 * anything else that kept the host out of reach.
 *
 * @example
 * ```ts
 * import { classifySshFailure } from "./offload.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(classifySshFailure("root@127.0.0.1: Permission denied (publickey)."), "auth");
 * assert.equal(classifySshFailure("Connection timed out during banner exchange"), "timeout");
 * assert.equal(classifySshFailure("Host key verification failed."), "host-key");
 * assert.equal(classifySshFailure("ssh: connect to host 127.0.0.1 port 1: Connection refused"), "unreachable");
 * ```
 */
export function classifySshFailure(stderr: string): SshFailureKind {
  if (
    /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No \S+ host key is known|host key for .* has changed/i
      .test(stderr)
  ) {
    return "host-key";
  }
  if (/Permission denied \(|Too many authentication failures/.test(stderr)) return "auth";
  if (/timed out|no answer from/i.test(stderr)) return "timeout";
  return "unreachable";
}

/** The meaningful lines of ssh's error output (drops the banner art of a changed host key). */
function sshMessage(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter((l) =>
    l !== "" && !/^@+$/.test(l) && !l.startsWith("Warning: Permanently added")
  );
  const last = lines.at(-1) ?? "ssh failed";
  const why = lines.find((l) =>
    /REMOTE HOST IDENTIFICATION HAS CHANGED|host key is known for|Host key for .* has changed|timed out during banner exchange/i
      .test(l)
  );
  return why && why !== last ? `${why.replace(/^@\s*|\s*@$/g, "")} ${last}` : last;
}

/**
 * Splits `NIX_SSHOPTS` the way Nix does (on whitespace, no quoting).
 *
 * @example
 * ```ts
 * import { splitNixSshOpts } from "./offload.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(splitNixSshOpts(" -F /etc/ssh/nix  -oPort=2222 "), ["-F", "/etc/ssh/nix", "-oPort=2222"]);
 * ```
 */
export function splitNixSshOpts(text: string | undefined): string[] {
  return (text ?? "").split(/[ \t\n\r]+/).filter((s) => s !== "");
}

/** A machine's store URI and line name match a `--builder` filter. */
function matchesFilter(machine: Machine, filter: string): boolean {
  const names = [
    machine.storeUri,
    machine.rawUri,
    machine.host,
    machine.user !== undefined && machine.host !== undefined
      ? `${machine.user}@${machine.host}`
      : undefined,
  ];
  return names.includes(filter);
}

/**
 * A builder session as the checks need it: programs found in `dir` first (a builder whose nix is off
 * its PATH), and the login shell's own output (a noisy rc file) cut from the front of stdout.
 */
class SessionTarget implements Target {
  readonly kind: Target["kind"];
  readonly host: string;
  #inner: Target;
  #dir: string | undefined;
  #noise: string;
  constructor(inner: Target, options: { dir?: string; noise?: string }) {
    this.#inner = inner;
    this.#dir = options.dir;
    this.#noise = options.noise ?? "";
    this.kind = inner.kind;
    this.host = inner.host;
  }
  #wrap(argv: readonly string[]): string[] {
    if (this.#dir === undefined) return [...argv];
    return [
      "/bin/sh",
      "-c",
      'PATH="$1:$PATH"; export PATH; shift; exec "$@"',
      "sh",
      this.#dir,
      ...argv,
    ];
  }
  #strip(result: RunResult): RunResult {
    if (this.#noise === "" || !result.stdout.startsWith(this.#noise)) return result;
    return { ...result, stdout: result.stdout.slice(this.#noise.length) };
  }
  async run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    return this.#strip(await this.#inner.run(this.#wrap(argv), options));
  }
  stream(argv: readonly string[], options?: RunOptions): StreamedRun {
    return this.#inner.stream(this.#wrap(argv), options);
  }
  readFile(path: string): Promise<string | null> {
    return this.#inner.readFile(path);
  }
  readDir(path: string): Promise<DirEntry[] | null> {
    return this.#inner.readDir(path);
  }
  stat(path: string): Promise<FileInfo | null> {
    return this.#inner.stat(path);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * The builder's effective config from the facts session's `@config` section (`nix config show
 * --json` from 2.20, `nix show-config --json` before, chosen there by version); when that is not
 * usable, asked again the general way (`readEffectiveConfig`).
 */
async function configFromFacts(
  sections: Record<string, string[]>,
  target: Target,
): Promise<EffectiveConfig> {
  const text = (sections.config ?? []).join("\n");
  const code = Number(/^(\d+)/.exec(sections.configcode?.[0] ?? "")?.[0] ?? "1");
  if (code === 0 && text.trim().startsWith("{")) {
    try {
      const settings = parseConfigShowJson(text, "nix show-config --json");
      const argv = [...(CONFIG_COMMANDS[1] ?? [])];
      return { ok: true, settings, argv, json: true };
    } catch {
      // fall back to the general reader
    }
  }
  return await readEffectiveConfig(target);
}

/** Runs `fn` over `items` with at most `limit` at once, keeping the order of results. */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  async function worker(): Promise<void> {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!, index);
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}

// Prints labelled sections about the builder; $1 is the remote program Nix will run.
// One session asks everything: any output before "@program" is the login shell's own noise.
const FACTS_SCRIPT = `p=$1
echo @program
d=
if f=$(command -v "$p" 2>/dev/null); then echo "found $f"; d=\${f%/*}; else
  b=\${p##*/}
  for e in /nix/var/nix/profiles/default/bin /run/current-system/sw/bin "$HOME/.nix-profile/bin" \\
    "/etc/profiles/per-user/$(id -un)/bin" /usr/local/bin /opt/homebrew/bin; do
    if [ -x "$e/$b" ]; then echo "elsewhere $e/$b"; d=$e; break; fi
  done
fi
echo @version
if [ -n "$d" ] && [ -x "$d/nix-store" ]; then "$d/nix-store" --version; else nix-store --version; fi 2>/dev/null
echo @path; echo "$PATH"
if [ -n "$d" ] && [ -x "$d/nix" ]; then n=$d/nix; else n=nix; fi
v=$( (if [ -n "$d" ] && [ -x "$d/nix-store" ]; then "$d/nix-store" --version; else nix-store --version; fi) 2>/dev/null |
  sed -n 's/.*[ )]\\([0-9][0-9]*\\)\\.\\([0-9][0-9]*\\).*/\\1 \\2/p' | head -n 1)
major=\${v% *} minor=\${v#* }
x="--extra-experimental-features nix-command"
echo @config
if [ -z "$v" ]; then :
elif [ "$major" -gt 2 ] || [ "$minor" -ge 20 ]; then "$n" $x config show --json 2>&1
else "$n" $x show-config --json 2>&1; fi
echo "@configcode $?"
echo @store
if [ -z "$v" ]; then "$n" $x store ping 2>&1
elif [ "$major" -gt 2 ] || [ "$minor" -ge 19 ]; then "$n" $x store info --json 2>&1
elif [ "$minor" -ge 14 ]; then "$n" $x store ping --json 2>&1
else "$n" $x store ping 2>&1; fi
echo "@storecode $?"
PATH="$PATH:/usr/bin:/bin:/usr/sbin:/sbin"
echo @user; id -un; id -Gn
echo @nproc; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null
echo @loadavg; cat /proc/loadavg 2>/dev/null || sysctl -n vm.loadavg 2>/dev/null
echo @meminfo; cat /proc/meminfo 2>/dev/null
echo @memsize; sysctl -n hw.memsize 2>/dev/null
echo @df; df -Pk /nix/store 2>/dev/null || df -Pk /nix 2>/dev/null
echo @end
`;

/**
 * Splits `@section` output into sections; `@name value` starts a section holding `value`. Lines
 * before the first section are kept under `""`.
 *
 * @example
 * ```ts
 * import { parseSections } from "./offload.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseSections("noise\n@a\n1\n2\n@code 0\n@end\n"), {
 *   "": ["noise"],
 *   a: ["1", "2"],
 *   code: ["0"],
 *   end: [],
 * });
 * ```
 */
export function parseSections(text: string): Record<string, string[]> {
  const sections: Record<string, string[]> = {};
  let current = "";
  for (const line of text.split("\n")) {
    const match = /^@([a-z]+)(?: (.*))?$/.exec(line);
    if (match) {
      current = match[1]!;
      sections[current] = match[2] !== undefined ? [match[2]] : [];
      continue;
    }
    if (line === "" && current !== "") continue;
    (sections[current] ??= []).push(line);
  }
  if (sections[""]?.every((l) => l === "")) delete sections[""];
  return sections;
}

/**
 * Reads cores, memory, load and free space on `/nix` from the facts script's sections.
 *
 * @example
 * ```ts
 * import { parseResources } from "./offload.ts";
 * import assert from "node:assert/strict";
 *
 * const r = parseResources({
 *   nproc: ["8"],
 *   loadavg: ["0.52 0.40 0.30 1/300 4242"],
 *   meminfo: ["MemTotal: 16384000 kB", "MemFree: 1000 kB", "MemAvailable: 8192000 kB", "SwapTotal: 0 kB", "SwapFree: 0 kB"],
 *   df: ["Filesystem 1024-blocks Used Available Capacity Mounted on", "/dev/vda 1000 400 600 40% /"],
 * });
 * assert.deepEqual(r, { cores: 8, load1: 0.52, memoryBytes: 16384000 * 1024, memoryAvailableBytes: 8192000 * 1024, nixFreeBytes: 600 * 1024, nixTotalBytes: 1000 * 1024 });
 * ```
 */
export function parseResources(sections: Record<string, string[]>): BuilderFacts {
  const facts: BuilderFacts = {};
  const cores = Number(sections.nproc?.[0]?.trim());
  if (Number.isInteger(cores) && cores > 0) facts.cores = cores;
  // Linux: "0.52 0.40 0.30 1/300 4242"; macOS sysctl: "{ 0.52 0.40 0.30 }".
  const load = /(\d+(?:\.\d+)?)/.exec(sections.loadavg?.[0] ?? "");
  if (load) facts.load1 = Number(load[1]);
  const meminfo = sections.meminfo ?? [];
  if (meminfo.length > 0) {
    try {
      const info = parseMeminfo(meminfo.join("\n") + "\n");
      facts.memoryBytes = info.totalBytes;
      facts.memoryAvailableBytes = info.availableBytes;
    } catch {
      // not a meminfo we can read; leave memory unknown
    }
  } else {
    const size = Number(sections.memsize?.[0]?.trim());
    if (Number.isFinite(size) && size > 0) facts.memoryBytes = size;
  }
  const dfLine = (sections.df ?? []).slice(1).join(" ").trim().split(/\s+/);
  // POSIX df -P: filesystem, 1024-blocks, used, available, capacity, mount point.
  const total = Number(dfLine[1]);
  const available = Number(dfLine[3]);
  if (dfLine.length >= 6 && Number.isFinite(total) && Number.isFinite(available)) {
    facts.nixFreeBytes = available * 1024;
    facts.nixTotalBytes = total * 1024;
  }
  return facts;
}

/**
 * The version skew between controller and builder: `ok` within 10 minor releases, else `warning`
 * (the remote protocols are backwards compatible, but features such as `ssh-ng` log forwarding
 * (2.7) and content-addressed paths need both ends new enough).
 *
 * @example
 * ```ts
 * import { versionSkew } from "./offload.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(versionSkew("2.8.0", "2.8.0").status, "ok");
 * assert.equal(versionSkew("2.24.9", "2.3.16").status, "warning");
 * ```
 */
export function versionSkew(controller: string, builder: string): { status: Status; text: string } {
  const [cMajor = 0, cMinor = 0] = controller.split(".").map(Number);
  const [bMajor = 0, bMinor = 0] = builder.split(".").map(Number);
  if (cMajor === bMajor && cMinor === bMinor) return { status: "ok", text: builder };
  const gap = cMajor !== bMajor ? Infinity : Math.abs(cMinor - bMinor);
  if (gap > 10 || !versionAtLeast([bMajor, bMinor], [2, 3])) {
    return { status: "warning", text: `${builder} vs ${controller}` };
  }
  return { status: "ok", text: `${builder} (here ${controller})` };
}

/** Everything shared by the machines' checks. */
interface Context {
  controller: Target;
  facts: ControllerFacts;
  options: VerifyMachinesOptions;
  env: Record<string, string | undefined>;
  nixSshOpts: string[];
  deadline: number;
  tempDir: string;
  /** How to run a command as the other user whose view is compared, or null. */
  otherUser: { name: string; prefix: string[] } | null;
  /** Why the other view could not be checked, when it matters and could not. */
  otherUnchecked?: string;
  /** Canary programs on the controller, one per system, written once per run. */
  programs: Map<string, Promise<string | null>>;
  /** `ssh-keygen -y` answers by key path, asked once per run. */
  keyChecks: Map<string, Promise<RunResult>>;
}

/** The canary program for `system` (written on first use; `undefined` when none or it failed). */
async function programFor(ctx: Context, system: string): Promise<string | undefined> {
  let program = ctx.programs.get(system);
  if (program === undefined) {
    program = writeCanaryProgram(ctx.controller, system).catch(() => null);
    ctx.programs.set(system, program);
  }
  return (await program) ?? undefined;
}

/** The shared canary programs for `systems`. */
async function canaryPrograms(
  ctx: Context,
  systems: readonly string[],
): Promise<Record<string, string>> {
  const programs: Record<string, string> = {};
  for (const system of systems) {
    const program = await programFor(ctx, system);
    if (program !== undefined) programs[system] = program;
  }
  return programs;
}

function remaining(ctx: Context): number {
  return Math.max(1, ctx.deadline - Date.now());
}

/** How ssh is told about the machine: Nix's own arguments. */
interface SshPlan {
  spec: string;
  destination: string;
  port?: number;
  /** NIX_SSHOPTS, `-i key`, `-oUserKnownHostsFile=` as Nix adds them. */
  args: string[];
  hostKeySource: string;
  /** `ssh -G`'s effective client config for the destination (keys lower-case, repeatable ones joined). */
  resolved: Record<string, string[]>;
}

async function planSsh(ctx: Context, machine: Machine, index: number): Promise<SshPlan> {
  const args = [...ctx.nixSshOpts];
  if (machine.sshKey !== undefined) args.push("-i", machine.sshKey);
  let hostKeySource = `${ctx.facts.buildsAs}'s known_hosts`;
  if (machine.publicHostKey !== undefined) {
    // Nix writes "<host> <decoded key>" to a temp file and points UserKnownHostsFile at it.
    const decoded = decodeHostKey(machine.publicHostKey) ?? "";
    const file = `${ctx.tempDir}/host-key-${index}`;
    await Deno.writeTextFile(file, `${machine.host ?? ""} ${decoded.trim()}\n`, { mode: 0o644 });
    await Deno.chmod(file, 0o644);
    args.push(`-oUserKnownHostsFile=${file}`);
    hostKeySource = "the line's pinned host key (column 8)";
  }
  const destination = machine.user !== undefined
    ? `${machine.user}@${machine.host ?? ""}`
    : machine.host ?? "";
  const plan: SshPlan = {
    spec: machine.port !== undefined ? `ssh://${destination}:${machine.port}` : destination,
    destination,
    args,
    hostKeySource,
    resolved: {},
  };
  if (machine.port !== undefined) plan.port = machine.port;
  // ssh -G prints the effective client config (host name, port, identity files) without connecting.
  const g = await ctx.controller.run(
    [
      "ssh",
      "-G",
      ...args,
      ...(plan.port !== undefined ? ["-p", String(plan.port)] : []),
      "--",
      destination,
    ],
    { timeoutMs: Math.min(remaining(ctx), 5000) },
  );
  for (const line of g.stdout.split("\n")) {
    const at = line.indexOf(" ");
    if (at <= 0) continue;
    (plan.resolved[line.slice(0, at).toLowerCase()] ??= []).push(line.slice(at + 1).trim());
  }
  return plan;
}

/** One extra probe (`ssh ... true`) as another user or with the agent; never through the master. */
async function probe(
  ctx: Context,
  plan: SshPlan,
  options: { prefix?: string[]; agent?: boolean },
): Promise<RunResult> {
  const timeoutS = Math.max(1, Math.min(10, Math.floor(remaining(ctx) / 1000) - 1));
  const argv = [
    ...(options.prefix ?? []),
    "ssh",
    "-T",
    "-x",
    "-o",
    "BatchMode=yes",
    ...(options.agent ? [] : ["-o", "IdentityAgent=none"]),
    "-o",
    `ConnectTimeout=${timeoutS}`,
    ...plan.args,
    ...(ctx.options.sshOptions ?? []).flatMap((o) => ["-o", o]),
    ...(plan.port !== undefined ? ["-p", String(plan.port)] : []),
    "--",
    plan.destination,
    "true",
  ];
  return await ctx.controller.run(argv, {
    timeoutMs: Math.min(remaining(ctx), timeoutS * 1000 + 3000),
  });
}

const FIX = {
  sshRoot: "Nix's daemon connects as root: give root what it needs, then test with\n" +
    "`sudo ssh <host> true` (it must print nothing and ask nothing).\n" +
    "NixOS / nix-darwin: nix.buildMachines.*.sshKey and programs.ssh.knownHosts (or extraConfig).\n" +
    "Other Linux: /root/.ssh/config (Host, HostName, User, IdentityFile) and /root/.ssh/known_hosts.",
  hostKey: "Fetch the builder's current key over a trusted path and replace the stale one:\n" +
    "`ssh-keygen -R <host>` then add the new key to root's known_hosts (NixOS / nix-darwin:\n" +
    "programs.ssh.knownHosts.<name>.publicKey), or pin it in column 8 of the machines line:\n" +
    "`base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub` on the builder.",
  auth:
    "Put the public half of the key root uses (the line's column 3, or root's default key) in\n" +
    "the builder's authorized_keys for the ssh user. NixOS builder:\n" +
    "users.users.<user>.openssh.authorizedKeys.keys; other systems: ~<user>/.ssh/authorized_keys.",
  down: "Start the builder or its sshd (systemctl start sshd), check the address and port\n" +
    "(root's ~/.ssh/config HostName/Port) and any firewall between the two.",
  nixPath: "Make nix reachable without a login shell: on the line, use\n" +
    "`ssh-ng://host?remote-program=/nix/var/nix/profiles/default/bin/nix-daemon` (ssh:// runs nix-store:\n" +
    "`?remote-program=/nix/var/nix/profiles/default/bin/nix-store`), or add nix to the PATH that sshd\n" +
    "gives (macOS: /etc/zshenv sourcing nix-daemon.sh; Linux: /etc/environment or SetEnv in sshd_config).",
  noisy:
    "Make non-interactive shells print nothing: in the ssh user's ~/.bashrc (or /etc/bash.bashrc,\n" +
    "~/.zshenv), guard output with `[[ $- == *i* ]] || return` before any echo, motd or fortune.",
  trust:
    'Let the ssh user build: NixOS / nix-darwin: nix.settings.trusted-users = [ "<user>" ];\n' +
    "other systems: add it to trusted-users in /etc/nix/nix.conf and restart nix-daemon.\n" +
    "(Or connect as root; on NixOS, nix.sshServe with trusted = true.)",
  systems: "Offer the system on the builder or stop claiming it. Emulated: NixOS\n" +
    'boot.binfmt.emulatedSystems = [ "aarch64-linux" ]; other Linux: qemu-user-static +\n' +
    "binfmt-support and `extra-platforms = aarch64-linux` in /etc/nix/nix.conf (restart nix-daemon).\n" +
    "See runbook/check_binfmt.md.",
  features: "Add the feature on the builder or drop it from the line. NixOS / nix-darwin:\n" +
    "nix.settings.system-features = [ ... ] (this replaces the defaults: list them all);\n" +
    "other systems: system-features in /etc/nix/nix.conf, then restart nix-daemon.",
} as const;

/** Checks one machine; never throws. */
async function checkMachine(
  ctx: Context,
  machine: Machine,
  index: number,
): Promise<{ row: OffloadRow; findings: Finding[] }> {
  const started = performance.now();
  const row = emptyRow(machine);
  const findings: Finding[] = [];
  const name = machine.storeUri;
  const data = { builder: name };
  let stepName: string | undefined;
  let stepStart = started;
  const progress = (step: OffloadCheck | "done") => {
    const now = performance.now();
    if (stepName !== undefined) {
      row.timings[stepName] = (row.timings[stepName] ?? 0) + Math.round(now - stepStart);
    }
    stepName = step;
    stepStart = now;
    ctx.options.onProgress?.({ builder: name, step, row });
  };
  const set = (check: OffloadCheck, status: OffloadCell["status"], text: string) => {
    row.cells[check] = { status, text };
  };
  const add = (
    id: string,
    status: Status,
    summary: string,
    extra: { detail?: string; fix?: string; data?: Record<string, unknown> } = {},
  ) =>
    findings.push(
      finding(id, status, `${name}: ${summary}`, {
        ...extra,
        data: { ...data, ...(extra.data ?? {}) },
      }),
    );
  const finish = () => {
    // nix-daemon (root) built a canary there: that proves root's ssh to it, unchecked or not.
    const unchecked = findings.findIndex((f) => f.id === "offload/root-unchecked");
    if (unchecked >= 0 && row.canaries.some((c) => c.outcome === "built-there")) {
      findings.splice(unchecked, 1);
      set("root", "ok", "by canary");
    }
    row.ms = Math.round(performance.now() - started);
    row.status = worstStatus(
      Object.values(row.cells).map((c) => c.status === "skipped" ? "ok" : c.status),
    );
    if (findings.every((f) => f.status === "ok") && row.cells.ssh.status === "ok") {
      const built = row.canaries.filter((c) => c.outcome === "built-there");
      findings.push(
        finding(
          "offload/verified",
          "ok",
          `${name}: reachable as ${ctx.facts.buildsAs}, nix ${row.facts.nixVersion ?? "?"}` +
            (built.length > 0
              ? `, built ${
                built.map((c) => `${c.system} in ${formatMs(c.ms)}`).join(", ") +
                ` (one nix-build of ${formatMs(built[0]?.totalMs ?? 0)})`
              }`
              : ctx.options.canary === false
              ? " (no canary built: --no-canary)"
              : ""),
          { data: { ...data, ms: row.ms } },
        ),
      );
    }
    progress("done");
    return { row, findings };
  };

  if (machine.scheme !== "ssh" && machine.scheme !== "ssh-ng") {
    add("offload/not-ssh", "unknown", `not an ssh builder (${machine.scheme}), nothing to reach`, {
      detail: "Only ssh:// and ssh-ng:// machines are checked.",
    });
    set("ssh", "unknown", machine.scheme);
    return finish();
  }

  // A host ssh could read as an option (or a shell as syntax) is refused before any ssh runs.
  try {
    parseSshHost(machine.storeUri);
  } catch (error) {
    add("offload/check-failed", "unknown", `not checked: ${(error as Error).message}`);
    set("ssh", "unknown", "bad host");
    return finish();
  }
  const plan = await planSsh(ctx, machine, index);
  const target = new SshTarget(plan.spec, {
    deadline: ctx.deadline,
    sshArgs: plan.args,
    sshOptions: ["IdentityAgent=none", ...(ctx.options.sshOptions ?? [])],
  });
  let beside: Promise<void> | undefined;
  try {
    // Identity files: what Nix's ssh will offer, and whether the daemon can use each.
    progress("key");
    await checkKeys(ctx, machine, plan, row, add);

    progress("ssh");
    const remoteProgram = machine.params["remote-program"] ??
      (machine.scheme === "ssh-ng" ? "nix-daemon" : "nix-store");
    // The first command opens the shared connection: its failure is ssh's.
    const reach = await target.run(["/bin/sh", "-c", FACTS_SCRIPT, "sh", remoteProgram], {
      timeoutMs: remaining(ctx),
    });
    const reached = !reach.failure && reach.code === 0;
    await compareViews(ctx, machine, plan, reach, row, add);
    if (!reached) {
      if (reach.failure === "unreachable" || reach.failure === "timeout") {
        reportUnreachable(ctx, machine, plan, reach, row, add);
      } else {
        set("ssh", "unknown", "no answer");
        add("offload/facts-failed", "unknown", "could not ask the builder about itself", {
          detail: describeFailure(["sh", "-c", "<facts>"], reach),
        });
      }
      if (
        reach.failure === "unreachable" && classifySshFailure(reach.stderr) === "auth" &&
        ctx.env.SSH_AUTH_SOCK
      ) {
        const withAgent = await probe(ctx, plan, { agent: true });
        if (withAgent.code === 0 && !withAgent.failure) {
          add(
            "offload/agent-only",
            "critical",
            "ssh works only with your ssh agent's key; nix-daemon has no agent",
            {
              detail: `Without the agent: ${sshMessage(reach.stderr)}`,
              fix:
                "Use a key file without a passphrase that root can read: put it in column 3 of " +
                "the machines line (or root's ~/.ssh/config IdentityFile) and authorise it on the builder.",
            },
          );
        }
      }
      return finish();
    }
    set("ssh", "ok", "ok");
    beside = ctx.options.alongside?.(machine, target).catch(() => {});
    const start = reach.stdout.indexOf("@program\n");
    const noise = start > 0 ? reach.stdout.slice(0, start) : "";

    // A login shell that prints on non-interactive sessions corrupts Nix's protocol.
    progress("shell");
    if (noise !== "") {
      const sample = noise.split("\n").filter((l) => l.trim() !== "").slice(0, 3);
      set("shell", "critical", "prints");
      add("offload/noisy-shell", "critical", "a non-interactive login prints to stdout", {
        detail:
          `'ssh ${plan.destination} <command>' printed before the command's own output:\n${
            sample.map((l) => `  ${l}`).join("\n")
          }\n` +
          (machine.scheme === "ssh-ng"
            ? `Nix then fails with: error: protocol mismatch, got '${sample[0] ?? ""}...'`
            : `Nix then fails with: 'nix-store --serve' protocol mismatch from '${machine.host}', got '${
              sample[0] ?? ""
            }...'`),
        fix: FIX.noisy,
      });
    } else {
      set("shell", "ok", "quiet");
    }

    // The remote program on the non-interactive PATH, and the builder's own facts.
    progress("nix");
    const sections = parseSections(reach.stdout.slice(noise.length));
    Object.assign(row.facts, parseResources(sections));
    const [user, groups] = sections.user ?? [];
    if (user) row.facts.user = user.trim();
    if (groups) row.facts.groups = groups.trim().split(/\s+/);
    const programLine = sections.program?.[0] ?? "";
    let binDir: string | undefined;
    let onPath = false;
    if (programLine.startsWith("found ")) {
      const path = programLine.slice(6).trim();
      row.facts.program = path;
      onPath = true;
      binDir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : undefined;
      set("nix", "ok", remoteProgram.includes("/") ? "remote-program" : "on PATH");
    } else {
      const elsewhere = programLine.startsWith("elsewhere ") ? programLine.slice(10).trim() : "";
      const path = (sections.path?.[0] ?? "").trim();
      set("nix", "critical", "missing");
      const base = remoteProgram.slice(remoteProgram.lastIndexOf("/") + 1);
      add(
        "offload/nix-missing",
        "critical",
        `'${remoteProgram}' is not on the PATH of a non-interactive ssh session`,
        {
          detail: `PATH there: ${path || "(empty)"}\n` +
            (elsewhere
              ? `It exists at ${elsewhere}; add ?remote-program=${elsewhere} to the store URI.\n`
              : "It is not in any usual place either (/nix/var/nix/profiles/default/bin, " +
                "/run/current-system/sw/bin).\n") +
            `Nix then fails with: bash: line 1: ${base}: command not found` +
            (machine.scheme === "ssh-ng" ? " ... error: unexpected end-of-file" : ""),
          fix: FIX.nixPath,
          data: { path, ...(elsewhere ? { foundAt: elsewhere } : {}) },
        },
      );
      if (!elsewhere) {
        // Nothing more to ask the builder; the canary still shows Nix's own failure.
        if (ctx.options.canary !== false) {
          progress("canary");
          await buildCanaries(ctx, machine, null, row, add);
        }
        return finish();
      }
      binDir = elsewhere.slice(0, elsewhere.lastIndexOf("/"));
    }
    const nixTarget: Target = new SessionTarget(target, {
      ...(onPath || binDir === undefined ? {} : { dir: binDir }),
      noise,
    });

    // The store, trust, version and effective config, from the same answer.
    progress("store");
    let builderVersion: ReturnType<typeof parseNixVersion> | undefined;
    try {
      const text = (sections.version ?? []).join("\n");
      if (text.trim() !== "") builderVersion = parseNixVersion(text);
    } catch {
      // unreadable version: reported below
    }
    if (builderVersion) row.facts.nixVersion = builderVersion.text;
    const storeText = (sections.store ?? []).join("\n");
    const storeCode = Number(/^(\d+)/.exec(sections.storecode?.[0] ?? "")?.[0] ?? "1");
    const config = await configFromFacts(sections, nixTarget);
    let jsonTrusted: boolean | undefined;
    if (storeCode === 0 && builderVersion !== undefined) {
      const url = /Store URL: (\S+)/.exec(storeText)?.[1];
      try {
        const parsed = JSON.parse(storeText) as { url?: string; trusted?: unknown };
        if (parsed.trusted !== undefined) {
          jsonTrusted = parsed.trusted === true || parsed.trusted === 1;
        }
        set("store", "ok", parsed.url ?? "ok");
      } catch {
        set("store", "ok", url ?? "ok");
      }
    } else {
      set("store", "critical", "fails");
      const said = cleanOutput(storeText).split("\n").filter((l) => l.trim() !== "");
      add(
        "offload/store-unavailable",
        "critical",
        `the store does not answer for ${user ?? "the ssh user"}`,
        {
          detail: `nix store ping there: ${said.join(" / ") || `exit ${storeCode}`}\n` +
            "Nix's remote build needs the ssh user to reach the builder's store (the nix-daemon " +
            "socket for a non-root user).",
          fix:
            "Start the builder's nix-daemon (systemctl start nix-daemon) or connect as a user that can " +
            "use the store; check /nix/var/nix/daemon-socket/socket exists.",
        },
      );
    }

    // Versions.
    progress("version");
    if (builderVersion && ctx.facts.nixVersion) {
      const skew = versionSkew(ctx.facts.nixVersion, builderVersion.text);
      set("version", skew.status, skew.text);
      if (skew.status !== "ok") {
        add(
          "offload/version-skew",
          skew.status,
          `Nix ${builderVersion.text} there, ${ctx.facts.nixVersion} on the controller`,
          {
            detail: "The remote protocols are backwards compatible, but a wide gap breaks newer " +
              "features (ssh-ng log forwarding needs 2.7+, content-addressed paths, dynamic derivations) " +
              "and old builders miss years of fixes.",
            fix:
              "Upgrade the older side (NixOS: nix.package; other: the installer's upgrade path).",
          },
        );
      }
    } else if (builderVersion) {
      set("version", "ok", builderVersion.text);
    } else {
      set("version", "unknown", "?");
    }

    // The builder's effective config against the line.
    progress("config");
    if (!config.ok) {
      set("config", "unknown", "unreadable");
      add("offload/config-unreadable", "unknown", "could not read the builder's effective config", {
        detail: config.reason,
      });
    } else {
      const s = config.settings;
      const system = s.get("system")?.value ?? "";
      const extra = settingList(s.get("extra-platforms"));
      const features = settingList(s.get("system-features"));
      const trustedUsers = settingList(s.get("trusted-users"));
      Object.assign(row.facts, {
        system,
        extraPlatforms: extra,
        systemFeatures: features,
        trustedUsers,
      });
      const claimed = machine.systems.length > 0
        ? machine.systems
        : ctx.facts.system !== undefined
        ? [ctx.facts.system]
        : [];
      const offered = new Set([system, ...extra]);
      const missingSystems = claimed.filter((x) => x !== "builtin" && !offered.has(x));
      const claimedFeatures = [
        ...new Set([...machine.supportedFeatures, ...machine.mandatoryFeatures]),
      ];
      const missingFeatures = claimedFeatures.filter((f) => !features.includes(f));
      const problems: string[] = [];
      if (missingSystems.length > 0) {
        problems.push(missingSystems.join(","));
        add(
          "offload/system-not-offered",
          "critical",
          `the line claims ${missingSystems.join(", ")}, the builder offers ${
            [...offered].filter((x) => x).join(", ")
          }`,
          {
            detail:
              `Builder: system = ${system}, extra-platforms = ${extra.join(" ") || "(none)"}.\n` +
              `Nix there refuses with: a '${
                missingSystems[0]
              }' with features {...} is required to build '...', ` +
              `but I am a '${system}' with features {${features.join(", ")}}`,
            fix: FIX.systems,
            data: { missing: missingSystems, system, extraPlatforms: extra },
          },
        );
      }
      if (missingFeatures.length > 0) {
        problems.push(missingFeatures.join(","));
        // Prove it the way a real build would meet it: a canary that requires the features.
        let nixSays =
          "Derivations needing them are sent there and fail with: a '<system>' with features {" +
          `${
            missingFeatures.join(", ")
          }} is required to build '...', but I am a '${system}' with ` +
          `features {${features.join(", ")}}`;
        const proofSystem = claimed.find((x) => offered.has(x));
        if (ctx.options.canary !== false && proofSystem !== undefined && remaining(ctx) > 3000) {
          const [proof] = await runCanaries(ctx.controller, nixTarget, {
            systems: [proofSystem],
            machineLine: machine.text,
            storeUri: machine.storeUri,
            requiredSystemFeatures: [
              ...new Set([...machine.mandatoryFeatures, ...missingFeatures]),
            ],
            timeoutMs: Math.min(remaining(ctx) - 300, 60_000),
            programs: await canaryPrograms(ctx, [proofSystem]),
          });
          if (proof?.outcome === "failed" && proof.message) {
            nixSays = `A canary requiring {${
              missingFeatures.join(", ")
            }} failed with:\n${proof.message}`;
          }
        }
        add(
          "offload/feature-not-offered",
          "critical",
          `the line claims feature${missingFeatures.length > 1 ? "s" : ""} ${
            missingFeatures.join(", ")
          } the builder does not offer`,
          {
            detail: `Builder: system-features = ${features.join(" ") || "(none)"}.\n${nixSays}`,
            fix: FIX.features,
            data: { missing: missingFeatures, systemFeatures: features },
          },
        );
      }
      set(
        "config",
        problems.length > 0 ? "critical" : "ok",
        problems.length > 0 ? `lacks ${problems.join(" ")}` : "matches",
      );
    }

    // Trust: the store's own answer when it gives one, else trusted-users against the user.
    progress("trusted");
    const trusted = jsonTrusted ??
      (user === "root" && machine.scheme === "ssh"
        ? true
        : user !== undefined && row.facts.trustedUsers !== undefined
        ? user === "root" || isTrustedUser(user, row.facts.groups ?? [], row.facts.trustedUsers)
        : undefined);
    if (trusted !== undefined) row.facts.trusted = trusted;
    if (trusted === true) {
      set("trusted", "ok", user ?? "yes");
    } else if (trusted === false) {
      set("trusted", "critical", "no");
      add(
        "offload/untrusted",
        "critical",
        `the ssh user '${user}' is not trusted by the builder's Nix`,
        {
          detail:
            `trusted-users there: ${(row.facts.trustedUsers ?? []).join(" ") || "(empty)"}; ` +
            `${user}'s groups: ${(row.facts.groups ?? []).join(" ")}.\n` +
            "Nix then fails with: you are not privileged to build input-addressed derivations",
          fix: FIX.trust,
          data: { user, trustedUsers: row.facts.trustedUsers ?? [] },
        },
      );
    } else {
      set("trusted", "unknown", "?");
    }

    // Resources.
    progress("disk");
    const minFree = ctx.options.minFreeBytes ?? 5 * GIB;
    const free = row.facts.nixFreeBytes;
    if (free === undefined) {
      set("disk", "unknown", "?");
    } else {
      const status: Status = free < Math.min(GIB, minFree)
        ? "critical"
        : free < minFree
        ? "warning"
        : "ok";
      set("disk", status, formatBytes(free));
      if (status !== "ok") {
        add("offload/disk-low", status, `only ${formatBytes(free)} free on /nix`, {
          detail:
            `Of ${formatBytes(row.facts.nixTotalBytes ?? 0)}; warning below ${
              formatBytes(minFree)
            }, ` +
            "critical below 1 GiB. Builds that run out fail with 'No space left on device'.",
          fix:
            "Collect garbage on the builder (nix-collect-garbage --delete-older-than 14d; NixOS: " +
            "nix.gc.automatic = true) or grow the disk.",
          data: { freeBytes: free, minFreeBytes: minFree },
        });
      }
    }
    progress("load");
    const maxLoad = ctx.options.maxLoadPerCore ?? 2;
    if (row.facts.load1 !== undefined && row.facts.cores !== undefined) {
      const perCore = row.facts.load1 / row.facts.cores;
      const status: Status = perCore > maxLoad ? "warning" : "ok";
      set("load", status, `${row.facts.load1.toFixed(2)}/${row.facts.cores}c`);
      if (status !== "ok") {
        add(
          "offload/load-high",
          "warning",
          `load ${row.facts.load1.toFixed(2)} on ${row.facts.cores} cores (${
            perCore.toFixed(2)
          } per core)`,
          {
            detail:
              `Above ${maxLoad} runnable tasks per core: builds sent there queue behind other work.`,
            fix:
              "Lower the line's max-jobs (column 4) or the builder's cores/max-jobs, or add a builder.",
            data: { load1: row.facts.load1, cores: row.facts.cores, maxLoadPerCore: maxLoad },
          },
        );
      }
    } else {
      set("load", "unknown", "?");
    }

    // The real proof: canaries, one per claimed system.
    if (ctx.options.canary === false) {
      set("canary", "skipped", "-");
    } else {
      progress("canary");
      await buildCanaries(ctx, machine, nixTarget, row, add);
    }
    return finish();
  } catch (error) {
    add("offload/check-failed", "unknown", `checking stopped: ${(error as Error).message}`);
    return finish();
  } finally {
    await beside;
    await target.close();
  }
}

type Add = (
  id: string,
  status: Status,
  summary: string,
  extra?: { detail?: string; fix?: string; data?: Record<string, unknown> },
) => void;

function reportUnreachable(
  ctx: Context,
  machine: Machine,
  plan: SshPlan,
  reach: RunResult,
  row: OffloadRow,
  add: Add,
): void {
  const message = reach.failure === "unreachable"
    ? sshMessage(reach.stderr)
    : describeFailure(["ssh", plan.destination, "true"], reach);
  const kind = reach.failure === "timeout" ? "timeout" : classifySshFailure(reach.stderr);
  const as = ctx.facts.buildsAs;
  const detail =
    `ssh ${plan.destination} (${as}, BatchMode, no agent, host key from ${plan.hostKeySource}): ${message}\n` +
    `Nix then fails with: cannot build on '${machine.storeUri}': error: cannot connect to '${plan.destination}': ...`;
  const data = { kind, message };
  switch (kind) {
    case "host-key": {
      row.cells.ssh = { status: "critical", text: "host key" };
      const hostname = plan.resolved.hostname?.[0];
      const port = plan.resolved.port?.[0];
      const alias = plan.resolved.hostkeyalias?.[0];
      const remapped = machine.publicHostKey !== undefined && alias === undefined &&
        ((hostname !== undefined && hostname !== machine.host) ||
          (port !== undefined && port !== "22"));
      add("offload/host-key", "critical", `the host key does not match ${plan.hostKeySource}`, {
        detail: detail +
          (remapped
            ? `\nColumn 8 is written as '${machine.host} <key>', but ssh looks the key up as ` +
              `'${
                port !== "22" ? `[${hostname}]:${port}` : hostname
              }' (HostName/Port from ssh config): ` +
              `it can never match. Add 'HostKeyAlias ${machine.host}' to root's ssh config for it.`
            : ""),
        fix: FIX.hostKey,
        data: { ...data, ...(remapped ? { columnEightUnmatchable: true } : {}) },
      });
      return;
    }
    case "auth":
      row.cells.ssh = { status: "critical", text: "denied" };
      add("offload/auth-refused", "critical", `the builder refuses ${as}'s ssh keys`, {
        detail,
        fix: FIX.auth,
        data,
      });
      return;
    case "timeout":
      row.cells.ssh = { status: "critical", text: "timeout" };
      add(
        "offload/ssh-timeout",
        "critical",
        "no answer (the host accepts connections but never replies)",
        {
          detail,
          fix:
            "The builder or its sshd hangs (overload, OOM, a stopped process) or a firewall drops " +
            "packets: log in on its console, check `systemctl status sshd` and `dmesg`.",
          data,
        },
      );
      return;
    default:
      row.cells.ssh = { status: "critical", text: "refused" };
      add("offload/unreachable", "critical", `cannot connect: ${message}`, {
        detail,
        fix: FIX.down,
        data,
      });
  }
}

/** Compares root's view with the other user's (the sudo user when root, root when not). */
async function compareViews(
  ctx: Context,
  machine: Machine,
  plan: SshPlan,
  reach: RunResult,
  row: OffloadRow,
  add: Add,
): Promise<void> {
  const reached = reach.code === 0 && !reach.failure;
  const me = ctx.facts.user;
  if (ctx.otherUser === null) {
    if (ctx.facts.buildsAs === me) {
      // Running as root, the ssh column is root's view; single-user Nix builds as this user.
      row.cells.root = { status: "ok", text: ctx.facts.uid === 0 ? "same" : "n/a" };
    } else {
      // Not root, builds go through the daemon as root, and root's view cannot be checked here.
      row.cells.root = { status: "unknown", text: "unchecked" };
      add(
        "offload/root-unchecked",
        "unknown",
        `could not check ssh as root (${ctx.otherUnchecked})`,
        {
          detail:
            `nix-daemon connects as root, with root's ssh config, keys and known_hosts; these checks ran as ${me}. ` +
            "A canary that builds there proves root's connection too.",
          fix: "Run this check as root (sudo), or let `sudo -n` run ssh for you.",
        },
      );
    }
    return;
  }
  const other = await probe(ctx, plan, { prefix: ctx.otherUser.prefix });
  const otherOk = other.code === 0 && !other.failure;
  const otherName = ctx.otherUser.name;
  const rootOk = ctx.facts.uid === 0 ? reached : otherOk;
  const userOk = ctx.facts.uid === 0 ? otherOk : reached;
  const userName = ctx.facts.uid === 0 ? otherName : me;
  const rootMessage = ctx.facts.uid === 0 ? sshMessage(reach.stderr) : sshMessage(other.stderr);
  const userMessage = ctx.facts.uid === 0 ? sshMessage(other.stderr) : sshMessage(reach.stderr);
  if (rootOk && userOk) {
    row.cells.root = { status: "ok", text: "ok" };
  } else if (!rootOk && userOk) {
    row.cells.root = { status: "critical", text: `only ${userName}` };
    add(
      "offload/root-cannot-reach",
      "critical",
      `${userName} can reach ${plan.destination}, but root (whom nix-daemon runs as) cannot`,
      {
        detail:
          `As root: ${rootMessage}\nAs ${userName}: ok. Nix uses root's ~/.ssh (config, keys, known_hosts), ` +
          `not ${userName}'s, so a plain 'ssh ${machine.host}' working proves nothing.`,
        fix: FIX.sshRoot,
        data: { root: rootMessage, user: userName },
      },
    );
  } else if (rootOk && !userOk) {
    row.cells.root = { status: "ok", text: "root only" };
    add(
      "offload/user-cannot-reach",
      "ok",
      `root can reach ${plan.destination} (what Nix uses), ${userName} cannot`,
      {
        detail:
          `As ${userName}: ${userMessage}\nHarmless for builds; only your own ssh to it fails.`,
        data: { user: userName, message: userMessage },
      },
    );
  } else {
    row.cells.root = { status: "critical", text: "neither" };
  }
}

/**
 * `ssh-keygen -y -P '' -f <key>`: exit 0 when the key loads without a passphrase. Asked once per
 * path and run (the default keys are the same for every machine); a missing file is answered
 * without running anything.
 */
function keyCheck(ctx: Context, path: string): Promise<RunResult> {
  let check = ctx.keyChecks.get(path);
  if (check === undefined) {
    check = (async () => {
      const info = await ctx.controller.stat(path).catch(() => undefined);
      if (info === null) {
        return { code: 1, stdout: "", stderr: `${path}: No such file or directory` };
      }
      return await ctx.controller.run(["ssh-keygen", "-y", "-P", "", "-f", path], {
        timeoutMs: Math.min(remaining(ctx), 5000),
      });
    })();
    ctx.keyChecks.set(path, check);
  }
  return check;
}

/** Checks the identity files Nix's ssh will offer (the line's, or ssh's defaults). */
async function checkKeys(
  ctx: Context,
  machine: Machine,
  plan: SshPlan,
  row: OffloadRow,
  add: Add,
): Promise<void> {
  const keys: { path: string; fromLine: boolean }[] = [];
  if (machine.sshKey !== undefined) keys.push({ path: machine.sshKey, fromLine: true });
  const home = ctx.env.HOME ?? (ctx.facts.uid === 0 ? "/root" : "");
  for (const file of plan.resolved.identityfile ?? []) {
    const path = file.replace(/^~(?=\/)/, home);
    if (!keys.some((k) => k.path === path)) keys.push({ path, fromLine: false });
  }
  const problems: {
    path: string;
    fromLine: boolean;
    why: string;
    kind: "passphrase" | "unusable";
  }[] = [];
  let usable = 0;
  for (const key of keys) {
    const info = await keyCheck(ctx, key.path);
    const err = info.stderr.trim();
    if (info.code === 0 && !info.failure) {
      usable++;
      continue;
    }
    if (/No such file or directory/.test(err)) {
      if (key.fromLine) {
        problems.push({ ...key, why: "does not exist", kind: "unusable" });
      }
      continue; // ssh's default names that do not exist are normal
    }
    if (/incorrect passphrase|passphrase/i.test(err)) {
      problems.push({ ...key, why: "is protected by a passphrase", kind: "passphrase" });
    } else if (/UNPROTECTED PRIVATE KEY FILE|bad permissions|are too open/i.test(err)) {
      problems.push({ ...key, why: "is readable by others, so ssh ignores it", kind: "unusable" });
    } else {
      problems.push({
        ...key,
        why: err.split("\n").at(-1) || `ssh-keygen exited with ${info.code}`,
        kind: "unusable",
      });
    }
  }
  const explicit = problems.filter((p) => p.fromLine);
  if (problems.length === 0) {
    row.cells.key = { status: "ok", text: "ok" };
    return;
  }
  // A problem with the line's own key matters always; with ssh's defaults only when none is usable.
  const matters = explicit.length > 0 || usable === 0;
  const status: Status = matters ? "warning" : "ok";
  row.cells.key = {
    status,
    text: problems.some((p) => p.kind === "passphrase") ? "passphrase" : "unusable",
  };
  for (const p of problems) {
    if (!p.fromLine && usable > 0) continue;
    const id = p.kind === "passphrase" ? "offload/key-passphrase" : "offload/key-unusable";
    add(id, "warning", `the identity file ${p.path} ${p.why}`, {
      detail: (p.fromLine
        ? "It is the line's column 3, passed as ssh -i. "
        : "It is one of ssh's identity files. ") +
        (p.kind === "passphrase"
          ? "nix-daemon runs ssh in batch mode without an agent, so it can never unlock it."
          : "ssh cannot use it.") +
        (usable > 0 ? ` ssh may still get in with another key (${usable} usable).` : ""),
      fix: p.kind === "passphrase"
        ? "Give root a key without a passphrase for builds: `ssh-keygen -t ed25519 -N '' -f /root/.ssh/nix-builder`, " +
          "authorise its .pub on the builder and name it in column 3."
        : "Point column 3 at a key file root can read (mode 0600, owned by root).",
      data: { path: p.path, fromLine: p.fromLine },
    });
  }
}

/** Builds one canary per claimed system; reports each. */
async function buildCanaries(
  ctx: Context,
  machine: Machine,
  nixTarget: Target | null,
  row: OffloadRow,
  add: Add,
): Promise<void> {
  const systems = machine.systems.length > 0
    ? machine.systems.filter((s) => s !== "builtin")
    : ctx.facts.system !== undefined
    ? [ctx.facts.system]
    : [];
  const texts: string[] = [];
  const statuses: Status[] = [];
  if (systems.length > 0 && remaining(ctx) < 1500) {
    row.cells.canary = { status: "unknown", text: "no time" };
    add("offload/canary-timeout", "unknown", "no time left for the canaries");
    return;
  }
  const results = systems.length === 0 ? [] : await runCanaries(ctx.controller, nixTarget, {
    systems,
    machineLine: machine.text,
    storeUri: machine.storeUri,
    requiredSystemFeatures: machine.mandatoryFeatures,
    timeoutMs: remaining(ctx) - 300,
    programs: await canaryPrograms(ctx, systems),
  });
  for (const result of results) {
    const system = result.system;
    row.canaries.push(result);
    const cpu = system.split("-")[0];
    const seconds = formatMs(result.ms);
    const data = { system, nonce: result.nonce, ms: result.ms, outcome: result.outcome };
    switch (result.outcome) {
      case "built-there":
        texts.push(`${cpu} ${seconds}`);
        statuses.push("ok");
        break;
      case "skipped":
        texts.push(`${cpu} -`);
        statuses.push("unknown");
        add("offload/canary-skipped", "unknown", `no canary for ${system}: ${result.message}`, {
          data,
        });
        break;
      case "timeout":
        texts.push(`${cpu} timeout`);
        statuses.push("critical");
        add("offload/canary-timeout", "critical", `the ${system} canary did not finish in time`, {
          detail: result.message ?? "",
          fix: "Look at the builder while it builds (load, memory, `journalctl -u nix-daemon`).",
          data,
        });
        break;
      case "built-elsewhere":
        texts.push(`${cpu} elsewhere`);
        statuses.push("critical");
        add(
          "offload/canary-elsewhere",
          "critical",
          `the ${system} canary was not built on this machine`,
          {
            detail: (result.message ?? "") +
              (ctx.facts.store === "daemon" && ctx.facts.uid !== 0 &&
                  !(result.message ?? "").includes("ignoring the client-specified setting")
                ? `\nThe canary went through nix-daemon as ${ctx.facts.user}, whom the daemon does ` +
                  "not trust: it ignores the client's `builders` (Nix 2.8 says so only at debug " +
                  "level; newer versions warn: ignoring the client-specified setting 'builders', " +
                  "because it is a restricted setting and you are not a trusted user) and uses its " +
                  "own machines file. Run this as root to test this machine alone."
                : ""),
            fix:
              "Run this check as root (sudo), or add your user to the controller's trusted-users " +
              "(NixOS / nix-darwin: nix.settings.trusted-users; other: /etc/nix/nix.conf, then " +
              "restart nix-daemon). If this machine is in the daemon's own machines file, builds " +
              "may still go to it; this canary just could not prove it.",
            data,
          },
        );
        break;
      case "unproven":
        texts.push(`${cpu} unproven`);
        statuses.push("warning");
        add(
          "offload/canary-unproven",
          "warning",
          `the ${system} canary built, but the builder has no trace of it`,
          {
            detail: result.message ?? "",
            data,
          },
        );
        break;
      case "failed": {
        const message = result.message ?? "";
        const emulated = /Exec format error/.test(message);
        texts.push(`${cpu} ${emulated ? "exec-format" : "failed"}`);
        statuses.push("critical");
        if (emulated) {
          add(
            "offload/emulation-broken",
            "critical",
            `the ${system} canary reached the builder, which cannot run ${system} code`,
            {
              detail: message,
              fix:
                "The builder claims the system (extra-platforms) but binfmt_misc does not run it: " +
                "run scripts/check_binfmt.ts there; NixOS: boot.binfmt.emulatedSystems; Debian: " +
                "qemu-user-static + binfmt-support.",
              data,
            },
          );
        } else {
          add("offload/canary-failed", "critical", `the ${system} canary failed`, {
            detail: message,
            fix:
              "Nix's message above names the cause; the other findings for this builder usually say which fix.",
            data,
          });
        }
        break;
      }
    }
    if (result.leftBehind && result.leftBehind.length > 0) {
      add("offload/canary-leftover", "warning", `could not delete the ${system} canary's paths`, {
        detail: result.leftBehind.join("\n"),
        fix:
          "Delete them by hand with nix-store --delete (they are tiny), or let the garbage collector.",
        data: { paths: result.leftBehind },
      });
    }
  }
  row.cells.canary = {
    status: statuses.length === 0 ? "skipped" : worstStatus(statuses),
    text: texts.join(" ") || "-",
  };
}

/** Reads the controller: who runs this, its Nix, its effective builders, daemon or not. */
async function readController(
  controller: Target,
): Promise<{ facts: ControllerFacts; findings: Finding[]; builders?: string; version?: string }> {
  const findings: Finding[] = [];
  const id = await controller.run(["sh", "-c", "id -u; id -un"]);
  const [uidText = "", userText = ""] = id.stdout.trim().split("\n");
  const uid = Number(uidText);
  const facts: ControllerFacts = {
    user: userText.trim() || "?",
    uid: Number.isInteger(uid) ? uid : -1,
    buildsAs: userText.trim() || "?",
  };
  const versionRun = await controller.run(["nix-store", "--version"]);
  let version: string | undefined;
  try {
    if (versionRun.code === 0) version = parseNixVersion(versionRun.stdout).text;
  } catch {
    // handled below
  }
  if (version === undefined) {
    findings.push(
      finding("offload/controller-nix", "unknown", "nix does not run on the controller", {
        detail: describeFailure(["nix-store", "--version"], versionRun),
        fix: "Run this on the controller, where nix is installed.",
      }),
    );
    return { facts, findings };
  }
  facts.nixVersion = version;
  const [config, ping] = await Promise.all([
    readEffectiveConfig(controller),
    controller.run([...NIX, "store", "ping"]),
  ]);
  const url = /Store URL: (\S+)/.exec(ping.stdout + ping.stderr)?.[1];
  if (url !== undefined) {
    facts.store = url.startsWith("daemon") || url.startsWith("unix") ? "daemon" : url;
  }
  facts.buildsAs = facts.uid === 0 || facts.store === "daemon" ? "root" : facts.user;
  if (!config.ok) {
    findings.push(
      finding(
        "offload/controller-nix",
        "unknown",
        "cannot read the controller's effective config",
        {
          detail: config.reason,
        },
      ),
    );
    return { facts, findings, version };
  }
  const s = config.settings;
  const builders = s.get("builders")?.value ?? "";
  facts.builders = builders;
  const system = s.get("system")?.value;
  if (system) facts.system = system;
  const maxJobs = s.get("max-jobs")?.value;
  if (maxJobs !== undefined) facts.maxJobs = maxJobs;
  return { facts, findings, builders, version };
}

/**
 * Verifies every machine of the controller's effective `builders` (or `options.buildersOverride`):
 * ssh as Nix would, the remote side, the builder's config against its line, resources, and a canary
 * build per claimed system. `controller` must be the machine Nix builds from, running locally
 * (a `LocalTarget`): the builders are reached from here.
 *
 * @example Check every builder, or only one
 * ```ts ignore
 * import { verifyMachines } from "./offload.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * const { findings, rows } = await verifyMachines(new LocalTarget(), { builders: ["builder1"] });
 * for (const row of rows) console.log(row.builder, row.status, row.cells.canary.text);
 * ```
 *
 * @example Nothing to check when `builders` is empty
 * ```ts
 * import { verifyMachines } from "./offload.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const result = await verifyMachines(new LocalTarget({ timeoutMs: 20_000 }), { buildersOverride: "" });
 * assert.equal(result.rows.length, 0);
 * assert.ok(result.findings.some((f) => f.id === "offload/no-builders" || f.id === "offload/controller-nix"));
 * ```
 */
export async function verifyMachines(
  controller: Target,
  options: VerifyMachinesOptions = {},
): Promise<VerifyMachinesResult> {
  const started = performance.now();
  const env = options.env ?? Deno.env.toObject();
  const deadline = options.deadline ?? Date.now() + 120_000;
  const findings: Finding[] = [];
  const read = await readController(controller);
  findings.push(...read.findings);
  const result: VerifyMachinesResult = {
    findings,
    rows: [],
    machines: [],
    controller: read.facts,
    ms: 0,
  };
  if (controller.kind !== "local") {
    findings.push(
      finding(
        "offload/remote-controller",
        "unknown",
        "builders are reached from the machine this runs on",
        {
          detail:
            `The controller here is ${controller.kind} '${controller.host}'; ssh and canary builds must start on the controller itself.`,
          fix: "Run scripts/verify_offload.ts on the controller (copy it with `deno task bundle`).",
        },
      ),
    );
    return result;
  }
  if (read.version === undefined) return result;
  const buildersText = options.buildersOverride ?? read.builders ?? "";
  const resolved = await resolveBuilders(buildersText, (path) => controller.readFile(path), {
    version: read.version,
    input: options.buildersOverride !== undefined ? "--builders" : "builders",
  });
  result.machines = resolved.machines;
  for (const error of resolved.errors) findings.push(machinesErrorFinding(error));
  if (resolved.machines.length === 0) {
    const missing = resolved.files.filter((f) => f.status === "missing").map((f) => f.path);
    findings.push(
      finding(
        "offload/no-builders",
        read.facts.maxJobs === "0" ? "critical" : "warning",
        buildersText.trim() === ""
          ? "builders is empty: every build runs here" +
            (read.facts.maxJobs === "0" ? " (and max-jobs = 0: none can)" : "")
          : missing.length > 0
          ? `builders = ${buildersText.trim()}, but ${
            missing.join(", ")
          } does not exist (Nix silently uses no builders)`
          : `builders = ${buildersText.trim()} yields no machines`,
        {
          detail: read.facts.maxJobs === "0"
            ? "With max-jobs = 0 Nix fails with: unable to start any build; either increase '--max-jobs' or enable remote builds"
            : "",
          fix:
            "NixOS / nix-darwin: nix.distributedBuilds = true and nix.buildMachines = [ ... ];\n" +
            "other systems: builders = @/etc/nix/machines in /etc/nix/nix.conf and one line per builder there.",
          data: { builders: buildersText, missingFiles: missing },
        },
      ),
    );
  }
  let machines = resolved.machines;
  if (options.builders !== undefined && options.builders.length > 0) {
    const unknown = options.builders.filter((b) => !machines.some((m) => matchesFilter(m, b)));
    if (unknown.length > 0) {
      throw new UsageError(
        `No machine '${unknown[0]}' in builders (there are: ${
          machines.map((m) => m.storeUri).join(", ") || "none"
        })`,
      );
    }
    machines = machines.filter((m) => options.builders!.some((b) => matchesFilter(m, b)));
  }

  const tempDir = await Deno.makeTempDir({ prefix: "nbr-offload-" });
  await Deno.chmod(tempDir, 0o755);
  try {
    const ctx: Context = {
      controller,
      facts: read.facts,
      options,
      env,
      nixSshOpts: options.nixSshOpts ? [...options.nixSshOpts] : splitNixSshOpts(env.NIX_SSHOPTS),
      deadline,
      tempDir,
      otherUser: null,
      programs: new Map(),
      keyChecks: new Map(),
    };
    await pickOtherUser(ctx);
    // The flake is listed while the machines are checked: a slow evaluation must not eat the
    // machines' time (they would all be reported as ssh time-outs). Its findings still come first.
    const flakeFindings: Finding[] = [];
    const flakeListing = options.flake === undefined ? Promise.resolve(undefined) : listFlake(
      controller,
      options.flake,
      resolved.machines,
      read.facts,
      flakeFindings,
      options.flakeRequired ?? true,
    );
    flakeListing.catch(() => {});
    try {
      const checked = await mapLimit(
        machines,
        options.jobs ?? 8,
        (m, i) => checkMachine(ctx, m, i),
      );
      const listing = await flakeListing;
      if (listing) result.flake = listing;
      findings.push(...flakeFindings);
      for (const { row, findings: f } of checked) {
        result.rows.push(row);
        findings.push(...f);
      }
    } finally {
      // Local files (the controller is this machine): removed even when the deadline has passed.
      for (const program of ctx.programs.values()) {
        const path = await program;
        if (path) {
          await Deno.remove(path.slice(0, path.lastIndexOf("/")), { recursive: true })
            .catch(() => {});
        }
      }
    }
  } finally {
    await Deno.remove(tempDir, { recursive: true }).catch(() => {});
  }
  result.ms = Math.round(performance.now() - started);
  return result;
}

function machinesErrorFinding(error: MachineError): Finding {
  return finding(
    "offload/machines-invalid",
    "critical",
    `Nix rejects ${error.input}:${error.line}: ${error.nixMessage}`,
    {
      detail: "Nix stops at the first bad entry: every remote build fails until it is fixed.",
      fix: "Fix the entry (see scripts/show_config.ts for the line explained field by field).",
      data: error,
    },
  );
}

/** Decides whose ssh view to compare with ours, and how to run ssh as them. */
async function pickOtherUser(ctx: Context): Promise<void> {
  const { facts, env, controller } = ctx;
  const has = async (program: string) =>
    (await controller.run(["sh", "-c", 'command -v "$1"', "sh", program])).code === 0;
  if (facts.uid === 0) {
    const sudoUser = env.SUDO_USER;
    if (sudoUser && sudoUser !== "root" && /^[a-z_][a-z0-9_.-]*$/i.test(sudoUser)) {
      if (await has("runuser")) {
        ctx.otherUser = { name: sudoUser, prefix: ["runuser", "-u", sudoUser, "--"] };
      } else if (await has("sudo")) {
        ctx.otherUser = { name: sudoUser, prefix: ["sudo", "-n", "-u", sudoUser, "--"] };
      }
    }
    return;
  }
  if (facts.buildsAs !== "root") return;
  if (await has("sudo")) {
    const allowed = await controller.run(["sudo", "-n", "-u", "root", "--", "true"], {
      timeoutMs: 5000,
    });
    if (allowed.code === 0) {
      ctx.otherUser = { name: "root", prefix: ["sudo", "-n", "-u", "root", "--"] };
      return;
    }
    ctx.otherUnchecked = "not root, and sudo -n is not allowed";
    return;
  }
  ctx.otherUnchecked = "not root, and no sudo";
}

/** The post's listing: `nix eval <flake>#nixosConfigurations --apply builtins.attrNames`, and systems. */
async function listFlake(
  controller: Target,
  flake: string,
  machines: Machine[],
  facts: ControllerFacts,
  findings: Finding[],
  required: boolean,
): Promise<FlakeListing | undefined> {
  const nix = ["nix", "--extra-experimental-features", "nix-command flakes"];
  const attr = `${flake}#nixosConfigurations`;
  const names = await controller.run(
    [...nix, "eval", "--json", "--no-write-lock-file", attr, "--apply", "builtins.attrNames"],
    { timeoutMs: 60_000 },
  );
  if (names.code !== 0 || names.failure) {
    if (!required) return undefined;
    findings.push(
      finding("offload/flake-eval-failed", "warning", `cannot list ${attr}`, {
        detail: describeFailure(["nix", "eval", attr], names),
        fix: "Run it inside the flake's directory, or pass --flake <path or ref>.",
      }),
    );
    return undefined;
  }
  let list: string[];
  try {
    list = JSON.parse(names.stdout) as string[];
  } catch {
    return undefined;
  }
  const systemsRun = await controller.run([
    ...nix,
    "eval",
    "--json",
    "--no-write-lock-file",
    attr,
    "--apply",
    "cs: builtins.mapAttrs (n: c: c.pkgs.stdenv.hostPlatform.system or c.config.nixpkgs.hostPlatform.system or null) cs",
  ], { timeoutMs: 120_000 });
  let systems: Record<string, string | null> = {};
  try {
    if (systemsRun.code === 0) {
      systems = JSON.parse(systemsRun.stdout) as Record<string, string | null>;
    }
  } catch {
    systems = {};
  }
  const listing: FlakeListing = { flake, names: list, systems };
  const covered = (system: string) =>
    machines.some((m) =>
      (m.systems.length > 0 ? m.systems : [facts.system ?? ""]).includes(system)
    ) ||
    (facts.maxJobs !== "0" && system === facts.system);
  const uncovered = Object.entries(systems).filter(([, s]) => s !== null && !covered(s));
  findings.push(
    finding("offload/flake-configs", "ok", `${attr}: ${list.join(", ") || "(none)"}`, {
      detail: Object.entries(systems).map(([n, s]) => `${n}: ${s ?? "system unknown"}`).join("\n"),
      data: listing,
    }),
  );
  for (const [name, system] of uncovered) {
    findings.push(
      finding(
        "offload/flake-system-uncovered",
        "critical",
        `${name} needs ${system}, which no machine builds`,
        {
          detail: `Machines: ${
            machines.map((m) => `${m.storeUri} (${m.systems.join(",")})`).join("; ") || "none"
          }` +
            (facts.maxJobs === "0"
              ? "; max-jobs = 0, so the controller builds nothing itself."
              : ""),
          fix:
            `Add a builder for ${system} to the machines file, or emulate it on one (boot.binfmt.emulatedSystems).`,
          data: { configuration: name, system },
        },
      ),
    );
  }
  return listing;
}

const STATUS_MARK: Record<OffloadCell["status"], string> = {
  ok: "",
  warning: "WARN ",
  critical: "FAIL ",
  unknown: "? ",
  skipped: "",
};

const CELL_COLORS: Record<OffloadCell["status"], string> = {
  ok: "\x1b[32m",
  warning: "\x1b[33m",
  critical: "\x1b[31m",
  unknown: "\x1b[35m",
  skipped: "\x1b[2m",
};

/** Options for {@link renderOffloadTable}. */
export interface RenderTableOptions {
  /** ANSI colours (default off). */
  color?: boolean;
  /** Text in place of a row's cells for machines still running (spinner frames). */
  pending?: Record<string, string>;
}

/**
 * The builders × checks table: one line per machine, a cell per check, then the time spent.
 *
 * @example
 * ```ts
 * import { OFFLOAD_CHECKS, renderOffloadTable, type OffloadRow } from "./offload.ts";
 * import assert from "node:assert/strict";
 *
 * const cells = Object.fromEntries(
 *   OFFLOAD_CHECKS.map((c) => [c, { status: "ok", text: "ok" }]),
 * ) as OffloadRow["cells"];
 * cells.ssh = { status: "critical", text: "refused" };
 * const row: OffloadRow = {
 *   builder: "ssh://b1",
 *   line: "b1",
 *   status: "critical",
 *   cells,
 *   canaries: [],
 *   facts: {},
 *   ms: 1234,
 *   timings: {},
 * };
 * const text = renderOffloadTable([row]);
 * assert.match(text, /^builder +ssh +root/);
 * assert.match(text, /ssh:\/\/b1 +FAIL refused +ok/);
 * assert.match(text, /1\.2 s\n$/);
 * ```
 */
export function renderOffloadTable(
  rows: readonly OffloadRow[],
  options: RenderTableOptions = {},
): string {
  const header = ["builder", ...OFFLOAD_CHECKS, "time"];
  const body = rows.map((row) => {
    const pending = options.pending?.[row.builder];
    const cells = OFFLOAD_CHECKS.map((check) => {
      const cell = row.cells[check];
      return { text: `${STATUS_MARK[cell.status]}${cell.text}`, status: cell.status };
    });
    return [
      { text: row.builder, status: "skipped" as const },
      ...cells,
      { text: pending ?? `${(row.ms / 1000).toFixed(1)} s`, status: "skipped" as const },
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.text.length)));
  const lines = [header.map((h, i) => h.padEnd(widths[i]!)).join("  ").trimEnd()];
  for (const r of body) {
    lines.push(
      r.map((cell, i) => {
        const padded = cell.text.padEnd(widths[i]!);
        return options.color && i > 0 && i <= OFFLOAD_CHECKS.length
          ? `${CELL_COLORS[cell.status]}${padded}\x1b[0m`
          : padded;
      }).join("  ").trimEnd(),
    );
  }
  return lines.join("\n") + "\n";
}
