/**
 * Out-of-memory kills in a kernel or system log, in every format from Linux 3.10 to 6.x, plus the
 * userspace killers (systemd-oomd, earlyoom) and systemd's per-unit OOM notes; and reading that log
 * from a target (`journalctl`, else `dmesg`).
 *
 * Line prefixes understood: `dmesg` (`[  820.547491] `), `dmesg -T` (`[Thu Dec  7 00:05:15 2017] `),
 * `dmesg --time-format iso`, syslog and `journalctl` short (`Aug 20 13:44:01 host kernel: `, with or
 * without host, with microseconds), `journalctl -o short-iso`, `journalctl -o json` lines, `<6>`
 * levels, and a NixOS test driver's `machine # ` prefix.
 *
 * @module
 */

import type { Target } from "./target.ts";
import { describeFailure } from "./target.ts";

/** Who killed the process. */
export type OomKiller =
  /** The kernel's OOM killer. */
  | "kernel"
  /** systemd-oomd (kills whole cgroups on memory pressure or swap use). */
  | "systemd-oomd"
  /** earlyoom (sends SIGTERM/SIGKILL when available memory and swap run low). */
  | "earlyoom"
  /** systemd noting that a unit's process was killed by the OOM killer (no details). */
  | "systemd";

/** A process the task table of an OOM event listed. */
export interface OomTask {
  /** Process id. */
  pid: number;
  /** Owner uid. */
  uid: number;
  /** Process name (15 characters at most, the kernel's `comm`). */
  name: string;
}

/** One kill found in a log. */
export interface OomKill {
  /** Who killed. */
  killer: OomKiller;
  /** 1-based line of the kill in the input. */
  line: number;
  /** That line's message, prefix (time, host, tag) removed. */
  message: string;
  /** The time as printed (`Aug 20 13:44:01`, `2026-11-25T18:52:54,551465+00:00`), when printed. */
  timestamp?: string;
  /** Milliseconds since the epoch, when the time was complete (year and zone, or journal JSON). */
  epochMs?: number;
  /** Seconds since boot, from a `[  820.547491]` prefix. */
  uptimeSeconds?: number;
  /** The host a syslog or journal line names. */
  hostname?: string;
  /** The killed process's id (for systemd-oomd: absent, it kills a cgroup). */
  pid?: number;
  /** The killed process's name (`comm`). */
  process?: string;
  /** The killed process's uid. */
  uid?: number;
  /** `global`: the machine ran out; `memcg`: a cgroup hit its limit; `unknown`: the log does not say. */
  scope: "global" | "memcg" | "unknown";
  /** The kernel's constraint (`CONSTRAINT_NONE`, `CONSTRAINT_MEMCG`, ...), Linux 4.19+. */
  constraint?: string;
  /** The killed task's cgroup (`task_memcg`), or the cgroup systemd-oomd killed, or the unit. */
  cgroup?: string;
  /** The cgroup whose limit was hit (`oom_memcg`, memcg kills only). */
  limitCgroup?: string;
  /** Set when the log cut the cgroup path short (journalctl's `>` ellipsis). */
  cgroupTruncated?: boolean;
  /** Resident anonymous memory of the killed process, bytes. */
  anonRssBytes?: number;
  /** Resident file-backed memory, bytes. */
  fileRssBytes?: number;
  /** Resident shared memory, bytes. */
  shmemRssBytes?: number;
  /** Virtual size, bytes. */
  totalVmBytes?: number;
  /** The killed process's `oom_score_adj`. */
  oomScoreAdj?: number;
  /** The process whose allocation set the killer off (`X invoked oom-killer`). */
  trigger?: string;
  /** Set when `oom_reaper` reclaimed the process's memory afterwards. */
  reaped?: boolean;
  /** Linux < 5.0: the process first chosen, when the kernel killed one of its children instead. */
  selected?: { pid: number; process: string };
  /** The event's task table (for memcg kills: the processes in that cgroup). */
  tasks?: OomTask[];
  /** earlyoom: the signal it sent. */
  signal?: "SIGTERM" | "SIGKILL";
}

/** What {@link parseOomLog} found. */
export interface OomLogScan {
  /** Kills, in log order. */
  kills: OomKill[];
  /** How many times the kernel's killer was invoked (`invoked oom-killer` lines). */
  invocations: number;
  /** Lines read. */
  lines: number;
}

interface Prefix {
  message: string;
  ident?: string;
  timestamp?: string;
  epochMs?: number;
  uptimeSeconds?: number;
  hostname?: string;
}

const MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec";
const SYSLOG = new RegExp(
  `^((?:${MONTHS})\\s+\\d{1,2} \\d{2}:\\d{2}:\\d{2}(?:\\.\\d+)?) (?:(\\S+) )?([^\\s:\\[]+)(?:\\[\\d+\\])?: (.*)$`,
);
const ISO = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?) (.*)$/;
const ISO_HOST = /^(\S+) ([^\s:[]+)(?:\[\d+\])?: (.*)$/;
const UPTIME = /^\[\s*(\d+\.\d+)\] ?(.*)$/;
const CTIME =
  /^\[((?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4})\] ?(.*)$/;

function isoToEpoch(text: string): number | undefined {
  const normal = text.replace(",", ".").replace(/([+-]\d{2})(\d{2})$/, "$1:$2");
  if (!/(Z|[+-]\d{2}:\d{2})$/.test(normal)) return undefined;
  const ms = Date.parse(normal.replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(ms) ? undefined : ms;
}

function splitPrefix(raw: string): Prefix {
  let line = raw.replace(/\r$/, "");
  const out: Prefix = { message: line };
  if (line.startsWith("{")) {
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (typeof entry.MESSAGE === "string") {
        out.message = entry.MESSAGE;
        const ident = entry.SYSLOG_IDENTIFIER ?? (entry._TRANSPORT === "kernel" ? "kernel" : "");
        if (typeof ident === "string" && ident !== "") out.ident = ident;
        if (typeof entry._HOSTNAME === "string") out.hostname = entry._HOSTNAME;
        if (typeof entry.__REALTIME_TIMESTAMP === "string") {
          out.epochMs = Math.floor(Number(entry.__REALTIME_TIMESTAMP) / 1000);
          out.timestamp = new Date(out.epochMs).toISOString();
        }
        return out;
      }
    } catch {
      // not JSON after all
    }
  }
  // NixOS test driver output: "machine # [   65.169904] ..."
  line = line.replace(/^[\w.-]+ # (?=\[)/, "");
  line = line.replace(/^<\d+>/, "");
  let match = SYSLOG.exec(line);
  if (match) {
    out.timestamp = match[1]!;
    if (match[2] !== undefined && match[2] !== "...") out.hostname = match[2];
    out.ident = match[3]!;
    line = match[4]!;
  } else if ((match = ISO.exec(line))) {
    out.timestamp = match[1]!;
    const ms = isoToEpoch(match[1]!);
    if (ms !== undefined) out.epochMs = ms;
    line = match[2]!;
    const tagged = ISO_HOST.exec(line);
    if (tagged) {
      out.hostname = tagged[1]!;
      out.ident = tagged[2]!;
      line = tagged[3]!;
    }
  } else if ((match = CTIME.exec(line))) {
    out.timestamp = match[1]!;
    line = match[2]!;
  }
  const up = UPTIME.exec(line);
  if (up) {
    out.uptimeSeconds = Number(up[1]);
    line = up[2]!;
  }
  out.message = line;
  return out;
}

const KIB = 1024;
const INVOKED =
  /^(.+?) invoked oom-killer: gfp_mask=([^\s(,]+)(?:\([^)\s]*\))?,(?: nodemask=\S+,)?\s+order=(-?\d+), oom_score_adj=(-?\d+)/;
const SUMMARY = /^oom-kill:(.*)$/;
const KILLED_NEW =
  /^(Memory cgroup out of memory|Out of memory(?: \(oom_kill_allocating_task\))?): Killed process (\d+) \((.*)\) total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB, shmem-rss:(\d+)kB(?:, UID:(\d+) pgtables:\d+kB oom_score_adj:(-?\d+))?/;
const SELECT_OLD =
  /^(Memory cgroup out of memory|Out of memory(?: \(oom_kill_allocating_task\))?): Kill process (\d+) \((.*)\) score (\d+) or sacrifice child/;
const KILLED_OLD =
  /^Killed process (\d+) \((.*)\)(?:,? UID:? ?(\d+),)? total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB(?:, shmem-rss:(\d+)kB)?/;
const REAPED = /^oom_reaper: reaped process (\d+) \((.*)\), now anon-rss/;
const TASK = /^\[\s*(\d+)\]\s+(\d+)\s+\d+(?:\s+-?\d+)+\s+(\S.*)$/;
const TASK_IN = /^Task in (\S+) killed as a result of limit of (\S+)/;
const OOMD =
  /^Killed (\S+) due to (memory pressure for (\S+) being [\d.]+% > [\d.]+% for > \S+ with reclaim activity|swap used \(.*)/;
const EARLYOOM_NEW =
  /^sending (SIGTERM|SIGKILL) to process (\d+) uid (\d+) "(.*)": (?:badness|oom_score) (-?\d+), VmRSS (\d+) MiB/;
const EARLYOOM_OLD =
  /^killing process (\d+) "(.*)" with signal (\d+): badness (-?\d+), VmRSS (\d+) MiB/;
const UNIT_OOM = /^(\S+): A process of this unit has been killed by the OOM killer\.?$/;

function parseSummary(text: string): Record<string, string> & { truncated?: string } {
  const fields: Record<string, string> = {};
  let body = text;
  if (body.endsWith(">") || body.endsWith("…")) {
    fields.truncated = "1";
    body = body.slice(0, -1);
  }
  for (const part of body.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) fields[part] = "1";
    else fields[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return fields;
}

/**
 * Finds OOM kills in log text (any of the formats in the module description, mixed freely).
 *
 * Kernel kills carry the process, pid, uid, sizes and, from Linux 4.19 on, the cgroup; the
 * `invoked oom-killer` line before a kill names the trigger, and the task table its processes.
 *
 * @example A Linux 6.18 memory-cgroup kill of a Nix build process
 * ```ts
 * import { parseOomLog } from "./kernel_log.ts";
 * import assert from "node:assert/strict";
 *
 * const scan = parseOomLog([
 *   "[  820.547491] tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
 *   "[  820.551416] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/nbr-oom-fixture,task_memcg=/nbr-oom-fixture,task=tail,pid=12732,uid=999",
 *   "[  820.551465] Memory cgroup out of memory: Killed process 12732 (tail) total-vm:202888kB, anon-rss:200320kB, file-rss:1196kB, shmem-rss:0kB, UID:999 pgtables:424kB oom_score_adj:0",
 * ].join("\n"));
 * const [kill] = scan.kills;
 * assert.equal(kill?.process, "tail");
 * assert.equal(kill?.uid, 999);
 * assert.equal(kill?.scope, "memcg");
 * assert.equal(kill?.cgroup, "/nbr-oom-fixture");
 * assert.equal(kill?.anonRssBytes, 200320 * 1024);
 * ```
 */
export function parseOomLog(text: string): OomLogScan {
  const kills: OomKill[] = [];
  let invocations = 0;
  let trigger: string | undefined;
  let tasks: OomTask[] = [];
  let inTaskTable = false;
  let summary: (Record<string, string> & { truncated?: string }) | undefined;
  let select: { pid: number; process: string; scope: OomKill["scope"] } | undefined;
  let taskIn: string | undefined;
  const byPid = new Map<number, OomKill>();
  const lines = text.split("\n");

  const base = (prefix: Prefix, index: number, killer: OomKiller): OomKill => {
    const kill: OomKill = { killer, line: index + 1, message: prefix.message, scope: "unknown" };
    if (prefix.timestamp !== undefined) kill.timestamp = prefix.timestamp;
    if (prefix.epochMs !== undefined) kill.epochMs = prefix.epochMs;
    if (prefix.uptimeSeconds !== undefined) kill.uptimeSeconds = prefix.uptimeSeconds;
    if (prefix.hostname !== undefined) kill.hostname = prefix.hostname;
    return kill;
  };

  const finishKernelKill = (kill: OomKill) => {
    if (trigger !== undefined) kill.trigger = trigger;
    if (tasks.length > 0) kill.tasks = tasks;
    if (summary && (summary.pid === undefined || Number(summary.pid) === kill.pid)) {
      if (summary.constraint) kill.constraint = summary.constraint;
      if (summary.global_oom) kill.scope = "global";
      if (summary.oom_memcg) kill.scope = "memcg";
      if (summary.constraint === "CONSTRAINT_MEMCG") kill.scope = "memcg";
      if (summary.task_memcg !== undefined) kill.cgroup = summary.task_memcg;
      if (summary.oom_memcg !== undefined) kill.limitCgroup = summary.oom_memcg;
      if (summary.truncated) kill.cgroupTruncated = true;
      if (kill.uid === undefined && summary.uid !== undefined) kill.uid = Number(summary.uid);
    } else if (taskIn !== undefined) {
      kill.cgroup = taskIn;
      kill.scope = "memcg";
    }
    kills.push(kill);
    if (kill.pid !== undefined) byPid.set(kill.pid, kill);
    summary = undefined;
    summaryPrefix = undefined;
    select = undefined;
    taskIn = undefined;
    trigger = undefined;
    tasks = [];
    inTaskTable = false;
  };

  // A summary line whose "Killed process" line is missing (an excerpt, a lost message) still
  // records a kill: the kernel prints it only once it has chosen a victim.
  let summaryPrefix: { prefix: Prefix; index: number } | undefined;
  const flushSummary = () => {
    if (!summary || !summaryPrefix || summary.pid === undefined) return;
    const kill = base(summaryPrefix.prefix, summaryPrefix.index, "kernel");
    kill.pid = Number(summary.pid);
    if (summary.task !== undefined) kill.process = summary.task;
    finishKernelKill(kill);
  };

  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    if (raw.trim() === "") continue;
    const prefix = splitPrefix(raw);
    const message = prefix.message.trimEnd();
    const ident = prefix.ident;
    let m: RegExpExecArray | null;

    if (ident === undefined || ident === "kernel") {
      if ((m = INVOKED.exec(message))) {
        flushSummary();
        invocations++;
        trigger = m[1]!;
        tasks = [];
        summary = undefined;
        select = undefined;
        taskIn = undefined;
        inTaskTable = false;
        continue;
      }
      if (/^\[\s*pid\s*\]/.test(message)) {
        inTaskTable = true;
        tasks = [];
        continue;
      }
      if (inTaskTable && (m = TASK.exec(message))) {
        tasks.push({ pid: Number(m[1]), uid: Number(m[2]), name: m[3]!.trim() });
        continue;
      }
      if ((m = TASK_IN.exec(message))) {
        taskIn = m[1]!;
        continue;
      }
      if ((m = SUMMARY.exec(message))) {
        flushSummary();
        summary = parseSummary(m[1]!);
        summaryPrefix = { prefix, index: i };
        inTaskTable = false;
        continue;
      }
      if ((m = KILLED_NEW.exec(message))) {
        const kill = base(prefix, i, "kernel");
        kill.pid = Number(m[2]);
        kill.process = m[3]!;
        kill.totalVmBytes = Number(m[4]) * KIB;
        kill.anonRssBytes = Number(m[5]) * KIB;
        kill.fileRssBytes = Number(m[6]) * KIB;
        kill.shmemRssBytes = Number(m[7]) * KIB;
        if (m[8] !== undefined) kill.uid = Number(m[8]);
        if (m[9] !== undefined) kill.oomScoreAdj = Number(m[9]);
        kill.scope = m[1]!.startsWith("Memory cgroup") ? "memcg" : "global";
        finishKernelKill(kill);
        continue;
      }
      if ((m = SELECT_OLD.exec(message))) {
        select = {
          pid: Number(m[2]),
          process: m[3]!,
          scope: m[1]!.startsWith("Memory cgroup") ? "memcg" : "global",
        };
        continue;
      }
      if ((m = KILLED_OLD.exec(message))) {
        const kill = base(prefix, i, "kernel");
        kill.pid = Number(m[1]);
        kill.process = m[2]!;
        if (m[3] !== undefined) kill.uid = Number(m[3]);
        kill.totalVmBytes = Number(m[4]) * KIB;
        kill.anonRssBytes = Number(m[5]) * KIB;
        kill.fileRssBytes = Number(m[6]) * KIB;
        if (m[7] !== undefined) kill.shmemRssBytes = Number(m[7]) * KIB;
        if (select) {
          kill.scope = select.scope;
          if (select.pid !== kill.pid) kill.selected = { pid: select.pid, process: select.process };
        }
        finishKernelKill(kill);
        continue;
      }
      if ((m = REAPED.exec(message))) {
        const kill = byPid.get(Number(m[1]));
        if (kill) kill.reaped = true;
        continue;
      }
      if (ident === "kernel") continue;
    }
    if (ident === undefined || ident === "systemd-oomd") {
      if ((m = OOMD.exec(message))) {
        const kill = base(prefix, i, "systemd-oomd");
        kill.cgroup = m[1]!;
        kill.scope = "memcg";
        kills.push(kill);
        continue;
      }
    }
    if (ident === undefined || ident === "earlyoom") {
      if ((m = EARLYOOM_NEW.exec(message))) {
        const kill = base(prefix, i, "earlyoom");
        kill.signal = m[1] as "SIGTERM" | "SIGKILL";
        kill.pid = Number(m[2]);
        kill.uid = Number(m[3]);
        kill.process = m[4]!;
        kill.anonRssBytes = Number(m[6]) * KIB * KIB;
        kill.scope = "global";
        kills.push(kill);
        continue;
      }
      if ((m = EARLYOOM_OLD.exec(message))) {
        const kill = base(prefix, i, "earlyoom");
        kill.signal = m[3] === "9" ? "SIGKILL" : "SIGTERM";
        kill.pid = Number(m[1]);
        kill.process = m[2]!;
        kill.anonRssBytes = Number(m[5]) * KIB * KIB;
        kill.scope = "global";
        kills.push(kill);
        continue;
      }
    }
    if ((m = UNIT_OOM.exec(message))) {
      const kill = base(prefix, i, "systemd");
      kill.cgroup = m[1]!;
      kills.push(kill);
    }
  }
  flushSummary();
  return { kills, invocations, lines: lines.length };
}

/** How a kill relates to Nix. */
export interface NixAttribution {
  /** `build`: a build process; `emulated-build`: one run through qemu user emulation; `nix`: Nix itself (evaluation, daemon). */
  kind: "build" | "emulated-build" | "nix";
  /** `certain` from the cgroup or a build user's uid; `likely` from the process name alone. */
  confidence: "certain" | "likely";
  /** Why, in a few words (`uid 30001 is a build user`). */
  reason: string;
}

/** What {@link attributeToNix} knows about the machine. */
export interface AttributionHints {
  /** Uids of the build users (the `nixbld` group's members). */
  buildUids?: ReadonlySet<number>;
}

/** Compilers, linkers and other tools whose OOM death is almost always a build's. */
const BUILD_TOOLS = new Set([
  "cc1",
  "cc1plus",
  "cc1obj",
  "lto1",
  "collect2",
  "ld",
  "ld.bfd",
  "ld.gold",
  "ld.lld",
  "lld",
  "mold",
  "clang",
  "clang++",
  "rustc",
  "ghc",
  "ghc-iserv",
  "javac",
  "kotlinc",
  "go",
  "compile",
  "link",
  "as",
  "nvcc",
  "cicc",
  "ptxas",
  "zig",
  "swift-frontend",
]);
const NIX_PROCESSES = new Set([
  "nix",
  "nix-daemon",
  "nix-build",
  "nix-store",
  "nix-env",
  "nix-instantiate",
  "nix-shell",
]);
/** The first uid Nix's `auto-allocate-uids` hands out (`start-id`, 0x34000000). */
const AUTO_UID_START = 872415232;

/**
 * Decides whether a kill hit a Nix build, from (strongest first) the cgroup (`nix-daemon`, Nix's
 * `nix-build-uid-*` cgroups), the uid (a `nixbld` member or an `auto-allocate-uids` id), a memory
 * cgroup whose task table lists a Nix process, then the process name (compilers and linkers,
 * `qemu-*` for emulated builds). `null` when nothing points to Nix.
 *
 * @example
 * ```ts
 * import { attributeToNix } from "./kernel_log.ts";
 * import assert from "node:assert/strict";
 *
 * const kill = { killer: "kernel" as const, line: 1, message: "", scope: "global" as const };
 * const daemon = { ...kill, process: "cc1plus", uid: 30003, cgroup: "/system.slice/nix-daemon.service" };
 * assert.equal(attributeToNix(daemon)?.confidence, "certain");
 * assert.equal(attributeToNix({ ...kill, uid: 1000, process: "qemu-aarch64" })?.kind, "emulated-build");
 * assert.equal(attributeToNix({ ...kill, uid: 1000, process: "firefox" }), null);
 * ```
 */
export function attributeToNix(
  kill: OomKill,
  hints: AttributionHints = {},
): NixAttribution | null {
  const name = kill.process ?? "";
  const emulated = /^qemu-[a-z0-9_]+(-static)?$/.test(name);
  const buildKind = emulated ? "emulated-build" : NIX_PROCESSES.has(name) ? "nix" : "build";
  const cgroup = kill.cgroup ?? "";
  if (/nix-daemon|nix-build-uid-|\/nix-build\b/.test(cgroup)) {
    return { kind: buildKind, confidence: "certain", reason: `cgroup ${cgroup}` };
  }
  if (kill.uid !== undefined) {
    if (hints.buildUids?.has(kill.uid)) {
      return {
        kind: emulated ? "emulated-build" : "build",
        confidence: "certain",
        reason: `uid ${kill.uid} is a build user`,
      };
    }
    if (kill.uid >= AUTO_UID_START) {
      return {
        kind: emulated ? "emulated-build" : "build",
        confidence: "certain",
        reason: `uid ${kill.uid} is one of Nix's auto-allocated build uids`,
      };
    }
  }
  if (kill.scope === "memcg" && kill.tasks?.some((t) => NIX_PROCESSES.has(t.name))) {
    const nixTask = kill.tasks.find((t) => NIX_PROCESSES.has(t.name))!;
    return {
      kind: emulated ? "emulated-build" : buildKind,
      confidence: "certain",
      reason: `its memory cgroup also holds ${nixTask.name} (pid ${nixTask.pid})`,
    };
  }
  if (emulated) {
    return { kind: "emulated-build", confidence: "likely", reason: `${name} runs emulated code` };
  }
  if (NIX_PROCESSES.has(name)) {
    return { kind: "nix", confidence: "likely", reason: `${name} is Nix` };
  }
  if (BUILD_TOOLS.has(name)) {
    return { kind: "build", confidence: "likely", reason: `${name} is a compiler or linker` };
  }
  return null;
}

/** Where {@link readKernelLog} got the log. */
export interface KernelLogRead {
  /** `journal` (`journalctl`), `dmesg`, or `none` when neither could be read. */
  source: "journal" | "dmesg" | "none";
  /** The text (JSON lines for the journal). */
  text: string;
  /** The commands run, for the report. */
  argv: string[][];
  /** When `source` is `none`: why (one line per command tried). */
  reasons: string[];
}

/**
 * The journal commands: kernel messages, then the userspace killers, this boot.
 *
 * @example
 * ```ts
 * import { JOURNAL_COMMANDS } from "./kernel_log.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(JOURNAL_COMMANDS[0]!.join(" "), "journalctl -k -b -o json --no-pager -q");
 * ```
 */
export const JOURNAL_COMMANDS: readonly (readonly string[])[] = [
  ["journalctl", "-k", "-b", "-o", "json", "--no-pager", "-q"],
  [
    "journalctl",
    "-b",
    "-o",
    "json",
    "--no-pager",
    "-q",
    "-t",
    "systemd-oomd",
    "-t",
    "earlyoom",
  ],
];
/**
 * The `dmesg` commands tried when the journal has nothing: ISO time first, then raw.
 *
 * @example
 * ```ts
 * import { DMESG_COMMANDS } from "./kernel_log.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(DMESG_COMMANDS.map((argv) => argv.join(" ")), ["dmesg --time-format iso", "dmesg"]);
 * ```
 */
export const DMESG_COMMANDS: readonly (readonly string[])[] = [
  ["dmesg", "--time-format", "iso"],
  ["dmesg"],
];

/**
 * Reads this boot's kernel log (and the userspace killers' lines) from a target: the journal when it
 * has kernel messages, else `dmesg`. Never throws for a failed command; `source: "none"` says why.
 *
 * @example
 * ```ts
 * import { readKernelLog } from "./kernel_log.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [{ argv: ["dmesg", "--time-format", "iso"], code: 0, stdout: "2026-11-25T18:52:54,551465+00:00 hello\n", stderr: "" }],
 *   paths: {},
 *   files: {},
 * });
 * const log = await readKernelLog(target);
 * assert.equal(log.source, "dmesg");
 * ```
 */
export async function readKernelLog(
  target: Target,
  options: { timeoutMs?: number } = {},
): Promise<KernelLogRead> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const argvs: string[][] = [];
  const reasons: string[] = [];
  const [kernelArgv, userArgv] = JOURNAL_COMMANDS;
  const kernel = await target.run(kernelArgv!, { timeoutMs });
  argvs.push([...kernelArgv!]);
  if (kernel.code === 0 && kernel.stdout.trim() !== "") {
    const user = await target.run(userArgv!, { timeoutMs });
    argvs.push([...userArgv!]);
    const userText = user.code === 0 ? user.stdout : "";
    return { source: "journal", text: kernel.stdout + userText, argv: argvs, reasons };
  }
  reasons.push(
    kernel.code === 0
      ? `'${kernelArgv!.join(" ")}' found no kernel messages (no journald?)`
      : describeFailure(kernelArgv!, kernel),
  );
  for (const argv of DMESG_COMMANDS) {
    const result = await target.run(argv, { timeoutMs });
    argvs.push([...argv]);
    if (result.code === 0) return { source: "dmesg", text: result.stdout, argv: argvs, reasons };
    reasons.push(describeFailure(argv, result));
    if (result.failure === "not-found" || result.failure === "timeout") break;
  }
  return { source: "none", text: "", argv: argvs, reasons };
}
