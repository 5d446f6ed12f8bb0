/**
 * Do builds on this machine die of memory exhaustion? The read-only diagnosis behind
 * `scripts/oom_mitigate.ts` and the health check: memory and swap now, memory pressure, OOM kills
 * this boot (kernel, systemd-oomd, earlyoom) attributed to Nix builds where the log allows, a build
 * log's `signal 9 (Killed)`, the `max-jobs × cores` arithmetic against RAM (the builder's own, and
 * the controller's machines line for it), zram devices and who owns them, and what `oom_mitigate`
 * left applied or half-applied.
 *
 * {@link collectOomEvidence} reads (through the target, so it runs locally, over ssh or on a
 * snapshot); {@link oomFindings} judges (pure); {@link diagnoseOom} does both.
 *
 * @module
 */

import { type ChangeRecord, DEFAULT_STATE_DIR, parseChangeRecord } from "./atomic_file.ts";
import type { Finding, Status } from "./findings.ts";
import {
  attributeToNix,
  type NixAttribution,
  type OomKill,
  parseOomLog,
  readKernelLog,
} from "./kernel_log.ts";
import { formatBytes, type MemInfo, readMeminfo } from "./meminfo.ts";
import { readEffectiveConfig, settingList } from "./nix_config.ts";
import { type Pressure, readPressure } from "./psi.ts";
import type { Target } from "./target.ts";
import { readZramState, type ZramState } from "./zram.ts";

/** A kill with what it meant for Nix. */
export interface AttributedKill extends OomKill {
  /** How it relates to Nix builds; `null` when nothing points to Nix. */
  nix: NixAttribution | null;
}

/** One sign in a build log that a build process was killed. */
export interface BuildLogKill {
  /** 1-based line. */
  line: number;
  /** The line, trimmed. */
  text: string;
  /** The derivation, when the line names it. */
  drv?: string;
  /** `builder`: Nix's builder process itself died of the signal; `subprocess`: a compiler/linker in it. */
  kind: "builder" | "subprocess";
  /** The signal number, when given (9 = SIGKILL, what the OOM killer sends). */
  signal?: number;
}

const BUILDER_SIGNAL =
  /(?:builder for '([^']+\.drv)' failed|Reason: builder failed) due to signal (\d+) \(([^)]*)\)/;
const CANNOT_BUILD = /Cannot build '([^']+\.drv)'/;
const SUBPROCESS_KILLED = [
  /fatal error: Killed signal terminated program (\S+)/,
  /terminated with signal 9 \[Killed\]/,
  /\(signal: 9, SIGKILL: kill\)/,
  /: signal: killed$/,
  /internal compiler error: Killed \(program (\S+)\)/,
];

/**
 * Finds killed builds in Nix build output (`nix build`, `nix-build`, `nix log`): Nix's
 * `builder for '...drv' failed due to signal 9 (Killed)`, and compilers or linkers killed inside a
 * build (`Killed signal terminated program cc1plus`, `ld terminated with signal 9 [Killed]`,
 * rustc's `(signal: 9, SIGKILL: kill)`).
 *
 * @example
 * ```ts
 * import { parseBuildLogKills } from "./oom.ts";
 * import assert from "node:assert/strict";
 *
 * const kills = parseBuildLogKills(
 *   "error: builder for '/nix/store/94yfdqk4r6vmja7qhqkyy0hl25bvvfjj-simple.drv' failed due to signal 9 (Killed)\n",
 * );
 * assert.equal(kills[0]?.drv, "/nix/store/94yfdqk4r6vmja7qhqkyy0hl25bvvfjj-simple.drv");
 * assert.equal(kills[0]?.signal, 9);
 * ```
 */
export function parseBuildLogKills(text: string): BuildLogKill[] {
  const found: BuildLogKill[] = [];
  let lastDrv: string | undefined;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, "");
    const cannot = CANNOT_BUILD.exec(line);
    if (cannot) lastDrv = cannot[1];
    const builder = BUILDER_SIGNAL.exec(line);
    if (builder) {
      const kill: BuildLogKill = {
        line: i + 1,
        text: line.trim(),
        kind: "builder",
        signal: Number(builder[2]),
      };
      const drv = builder[1] ?? lastDrv;
      if (drv !== undefined) kill.drv = drv;
      found.push(kill);
      continue;
    }
    if (SUBPROCESS_KILLED.some((re) => re.test(line))) {
      found.push({ line: i + 1, text: line.trim(), kind: "subprocess", signal: 9 });
    }
  }
  return found;
}

/**
 * The part of a machines-file entry the arithmetic needs (`Machine` from lib/machines.ts has it all).
 */
export interface MachineLine {
  /** Where the entry is: a file path, or `builders`. */
  input: string;
  /** 1-based line. */
  line: number;
  /** The entry as written (comment cut). */
  text: string;
  /** Its whitespace-separated columns. */
  columns: string[];
  /** The store URI Nix uses. */
  storeUri: string;
  /** Column #3: how many builds at once Nix sends. */
  maxJobs: number;
  /** Whether column #3 was unset (so 1). */
  maxJobsDefaulted: boolean;
}

/** The builder-side Nix settings that decide how many processes compete for memory. */
export interface BuildLoad {
  /** `max-jobs` as set (`auto` or a number). */
  maxJobs?: string;
  /** `cores` as set (`0` = all). */
  cores?: string;
  /** The machine's `system`. */
  system?: string;
  /** `extra-platforms`: systems built through emulation when foreign (`aarch64-linux` on x86_64). */
  extraPlatforms: string[];
  /** Online CPUs (`nproc`). */
  nproc?: number;
  /** Why the settings could not be read. */
  error?: string;
}

/** Everything {@link oomFindings} judges. */
export interface OomEvidence {
  /** The host. */
  host: string;
  /** `/proc/meminfo`, or why not. */
  memory: MemInfo | { error: string };
  /** `/proc/pressure/memory`; `null` without PSI. */
  pressure: Pressure | null | { error: string };
  /** `/proc/vmstat` `oom_kill` (kernel kills since boot), when readable. */
  oomKillCounter: number | null;
  /** Where the kills came from. */
  log: { source: "journal" | "dmesg" | "file" | "none"; name: string; reasons: string[] };
  /** The kills found. */
  kills: AttributedKill[];
  /** How many times the kernel's killer ran. */
  killerInvocations: number;
  /** A build log's kills, when one was given. */
  buildLog?: { name: string; kills: BuildLogKill[] };
  /** The builder-side settings. */
  load: BuildLoad;
  /** The controller's machines lines for this machine, and where they came from. */
  machines: { input: string; lines: MachineLine[] } | null;
  /** zram devices, or why not. */
  zram: ZramState | { error: string };
  /** `oom_mitigate`'s records on this machine. */
  records: ChangeRecord[];
  /** Hot-add notes of zram records (record id → device) a killed run left. */
  hotAddNotes: Record<string, string>;
  /** This boot's id. */
  bootId?: string;
}

/** Options for {@link collectOomEvidence} and {@link diagnoseOom}. */
export interface DiagnoseOomOptions {
  /** Kernel log text to read instead of the machine's (`--kernel-log FILE|-`). */
  kernelLog?: { name: string; text: string };
  /** Build output to look for killed builds in (`--build-log FILE|-`). */
  buildLog?: { name: string; text: string };
  /** The controller's machines lines for this machine (already parsed and matched). */
  machines?: { input: string; lines: MachineLine[] };
  /** `oom_mitigate`'s state directory on the machine (default {@link DEFAULT_STATE_DIR}). */
  stateDir?: string;
  /** sysfs root (default `/sys`). */
  sysfsRoot?: string;
  /** Time-out of each command, ms (default 20 000). */
  timeoutMs?: number;
  /** Thresholds; see {@link OomThresholds}. */
  thresholds?: Partial<OomThresholds>;
}

/** When findings turn WARNING or CRITICAL. */
export interface OomThresholds {
  /** `MemAvailable` below this share of RAM (percent) warns. Default 10. */
  availableWarnPercent: number;
  /** ...and below this is critical. Default 5. */
  availableCritPercent: number;
  /** PSI `full avg60` (percent) at or above this warns. Default 5. */
  pressureWarnPercent: number;
  /** ...and at or above this is critical. Default 20. */
  pressureCritPercent: number;
  /** Memory per possible build process below this warns. Default 1 GiB. */
  perProcessWarnBytes: number;
  /** ...and below this is critical. Default 512 MiB. */
  perProcessCritBytes: number;
}

/** The default {@link OomThresholds}. */
export const DEFAULT_OOM_THRESHOLDS: Readonly<OomThresholds> = {
  availableWarnPercent: 10,
  availableCritPercent: 5,
  pressureWarnPercent: 5,
  pressureCritPercent: 20,
  perProcessWarnBytes: 1024 ** 3,
  perProcessCritBytes: 512 * 1024 ** 2,
};

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function readBuildUids(target: Target, group: string): Promise<Set<number>> {
  const uids = new Set<number>();
  if (group === "") return uids;
  const groupText = await target.readFile("/etc/group").catch(() => null);
  const passwdText = await target.readFile("/etc/passwd").catch(() => null);
  if (groupText === null || passwdText === null) return uids;
  const entry = groupText.split("\n").map((l) => l.split(":")).find((f) => f[0] === group);
  if (!entry) return uids;
  const gid = entry[2];
  const members = new Set((entry[3] ?? "").split(",").filter((m) => m !== ""));
  for (const line of passwdText.split("\n")) {
    const f = line.split(":");
    if (f.length < 4) continue;
    if (members.has(f[0]!) || f[3] === gid) uids.add(Number(f[2]));
  }
  return uids;
}

/**
 * Reads `oom_mitigate`'s records from a target's state directory (read-only, through the target, so
 * snapshots work too); `[]` when there are none or they were not captured.
 *
 * @example
 * ```ts
 * import { readRecords } from "./oom.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(await readRecords(new LocalTarget(), "/nonexistent-state"), []);
 * ```
 */
export async function readRecords(target: Target, stateDir: string): Promise<ChangeRecord[]> {
  let entries;
  try {
    entries = await target.readDir(`${stateDir}/records`);
  } catch {
    return [];
  }
  const records: ChangeRecord[] = [];
  for (const entry of entries ?? []) {
    if (!entry.name.endsWith(".json")) continue;
    const path = `${stateDir}/records/${entry.name}`;
    const text = await target.readFile(path).catch(() => null);
    if (text !== null) records.push(parseChangeRecord(text, path));
  }
  return records.filter((r) => r.tool === "oom_mitigate").sort((a, b) =>
    a.id < b.id ? -1 : a.id > b.id ? 1 : 0
  );
}

/**
 * The name of a zram record's hot-add note file (see `hotAddZram`).
 *
 * @example
 * ```ts
 * import { hotAddNotePath } from "./oom.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(hotAddNotePath("/var/lib/nix-builder-runbook", "20261125T190517Z-zram-8ff3fa"), "/var/lib/nix-builder-runbook/backups/20261125T190517Z-zram-8ff3fa/hot-add");
 * ```
 */
export function hotAddNotePath(stateDir: string, recordId: string): string {
  return `${stateDir}/backups/${recordId}/hot-add`;
}

/**
 * zram devices named by live (same boot, not reverted) records: they are ours.
 *
 * @example
 * ```ts
 * import { ourZramDevices } from "./oom.ts";
 * import assert from "node:assert/strict";
 *
 * const record = { id: "20261125T190517Z-zram-8ff3fa", tool: "oom_mitigate", kind: "zram", status: "applied" as const, createdAt: "", updatedAt: "", bootId: "b1", detail: { device: "zram1" } };
 * assert.deepEqual([...ourZramDevices([record], "b1")], ["zram1"]);
 * assert.deepEqual([...ourZramDevices([record], "b2")], [], "gone with a reboot");
 * ```
 */
export function ourZramDevices(records: readonly ChangeRecord[], bootId?: string): Set<string> {
  const ours = new Set<string>();
  for (const record of records) {
    if (record.kind !== "zram") continue;
    if (record.status !== "applied" && record.status !== "applying") continue;
    if (bootId !== undefined && record.bootId !== undefined && record.bootId !== bootId) continue;
    const device = record.detail.device;
    if (typeof device === "string") ours.add(device);
  }
  return ours;
}

/**
 * What to do when no kernel log could be read, from the reasons each source gave.
 *
 * @example
 * ```ts
 * import { kernelLogFix } from "./oom.ts";
 * import assert from "node:assert/strict";
 *
 * assert.match(
 *   kernelLogFix(["'dmesg' exited with 1: dmesg: read kernel buffer failed: Operation not permitted"]),
 *   /CAP_SYSLOG/,
 * );
 * assert.match(kernelLogFix(["not captured in this snapshot"]), /collect it again/);
 * ```
 */
export function kernelLogFix(reasons: readonly string[]): string {
  return reasons.length > 0 && reasons.every((r) => r.includes("not captured"))
    ? "the bundle holds no kernel log: collect it again, or pass a saved log with --kernel-log FILE"
    : "dmesg needs root on the host itself (CAP_SYSLOG; root in a container is not enough) " +
      "when kernel.dmesg_restrict = 1; or pass a saved log: --kernel-log FILE " +
      "(journalctl -k -b > FILE, or dmesg > FILE, on the host)";
}

/**
 * Reads everything the diagnosis needs from a target. Read-only; never creates the state directory.
 *
 * @example From a snapshot
 * ```ts
 * import { collectOomEvidence } from "./oom.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [],
 *   paths: {},
 *   files: { "/proc/meminfo": "MemTotal: 16384 kB\nMemFree: 1024 kB\nMemAvailable: 2048 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n" },
 * });
 * const evidence = await collectOomEvidence(target, { kernelLog: { name: "log", text: "" } });
 * assert.equal("totalBytes" in evidence.memory && evidence.memory.totalBytes, 16384 * 1024);
 * ```
 */
export async function collectOomEvidence(
  target: Target,
  options: DiagnoseOomOptions = {},
): Promise<OomEvidence> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
  const memory = await readMeminfo(target).catch((e) => ({ error: errorText(e) }));
  const pressure = await readPressure(target).catch((e) => ({ error: errorText(e) }));
  const vmstat = await target.readFile("/proc/vmstat").catch(() => null);
  const counter = vmstat === null ? null : /^oom_kill (\d+)$/m.exec(vmstat)?.[1];
  const bootIdText = await target.readFile("/proc/sys/kernel/random/boot_id").catch(() => null);

  const load: BuildLoad = { extraPlatforms: [] };
  let buildUsersGroup = "nixbld";
  const config = await readEffectiveConfig(target);
  if (config.ok) {
    const get = (name: string) => config.settings.get(name)?.value;
    const maxJobs = get("max-jobs");
    const cores = get("cores");
    const system = get("system");
    if (maxJobs !== undefined) load.maxJobs = maxJobs;
    if (cores !== undefined) load.cores = cores;
    if (system !== undefined) load.system = system;
    load.extraPlatforms = settingList(config.settings.get("extra-platforms"));
    buildUsersGroup = get("build-users-group") ?? buildUsersGroup;
  } else {
    load.error = config.reason;
  }
  const nproc = await target.run(["nproc"], { timeoutMs });
  if (nproc.code === 0 && /^\d+\s*$/.test(nproc.stdout)) load.nproc = Number(nproc.stdout);

  let log: OomEvidence["log"];
  let text: string;
  if (options.kernelLog) {
    log = { source: "file", name: options.kernelLog.name, reasons: [] };
    text = options.kernelLog.text;
  } else {
    const read = await readKernelLog(target, { timeoutMs });
    log = {
      source: read.source,
      name: read.argv.at(-1)?.join(" ") ?? "",
      reasons: read.reasons,
    };
    text = read.text;
  }
  const scan = parseOomLog(text);
  const buildUids = await readBuildUids(target, buildUsersGroup);
  const kills = scan.kills.map((kill) => ({ ...kill, nix: attributeToNix(kill, { buildUids }) }));

  const records = await readRecords(target, stateDir).catch(() => []);
  const bootId = bootIdText?.trim() || undefined;
  const hotAddNotes: Record<string, string> = {};
  for (const record of records) {
    if (record.kind === "zram" && record.status === "applying" && !record.detail.device) {
      const note = await target.readFile(hotAddNotePath(stateDir, record.id)).catch(() => null);
      if (note !== null && /^\d+\s*$/.test(note)) hotAddNotes[record.id] = `zram${note.trim()}`;
    }
  }
  const zramOptions = {
    ours: ourZramDevices(records, bootId),
    ...(options.sysfsRoot !== undefined ? { sysfsRoot: options.sysfsRoot } : {}),
  };
  const zram = await readZramState(target, zramOptions).catch((e) => ({ error: errorText(e) }));

  const evidence: OomEvidence = {
    host: target.host,
    memory,
    pressure,
    oomKillCounter: counter === undefined || counter === null ? null : Number(counter),
    log,
    kills,
    killerInvocations: scan.invocations,
    load,
    machines: options.machines ?? null,
    zram,
    records,
    hotAddNotes,
  };
  if (bootId !== undefined) evidence.bootId = bootId;
  if (options.buildLog) {
    evidence.buildLog = {
      name: options.buildLog.name,
      kills: parseBuildLogKills(options.buildLog.text),
    };
  }
  return evidence;
}

function percent(part: number, whole: number): number {
  return whole > 0 ? Math.round((part / whole) * 1000) / 10 : 0;
}

function describeKill(kill: AttributedKill): string {
  const when = kill.timestamp ??
    (kill.uptimeSeconds !== undefined
      ? `${kill.uptimeSeconds.toFixed(0)} s after boot`
      : `line ${kill.line}`);
  const who = kill.process !== undefined
    ? `${kill.process}${kill.pid !== undefined ? ` (pid ${kill.pid})` : ""}`
    : kill.cgroup ?? "?";
  const size = kill.anonRssBytes !== undefined ? `, ${formatBytes(kill.anonRssBytes)} anon` : "";
  const by = kill.killer === "kernel"
    ? kill.scope === "memcg" ? "cgroup limit" : "kernel"
    : kill.killer;
  const where = kill.cgroup !== undefined && kill.process !== undefined
    ? ` in ${kill.cgroup}${kill.cgroupTruncated ? "…" : ""}`
    : "";
  const nix = kill.nix ? ` [${kill.nix.kind}: ${kill.nix.reason}]` : "";
  return `${when}: ${who}${size}${where}, by ${by}${nix}`;
}

function resolveCount(value: string | undefined, nproc: number | undefined): number | null {
  if (value === undefined) return null;
  if (value === "auto") return nproc ?? null;
  const n = Number(value);
  return Number.isInteger(n) ? n : null;
}

function perProcessStatus(bytes: number, t: OomThresholds): Status {
  if (bytes < t.perProcessCritBytes) return "critical";
  if (bytes < t.perProcessWarnBytes) return "warning";
  return "ok";
}

/** Emulated systems among `extra-platforms` (a foreign architecture runs through binfmt/qemu). */
function emulatedSystems(load: BuildLoad): string[] {
  const arch = (s: string) => s.split("-")[0];
  const own = load.system !== undefined ? arch(load.system) : undefined;
  return load.extraPlatforms.filter((s) =>
    own !== undefined && arch(s) !== own && !(own === "x86_64" && arch(s) === "i686")
  );
}

/**
 * Judges the evidence: one finding per question (memory, pressure, kills, build log, jobs
 * arithmetic, zram, leftovers of `oom_mitigate`). Pure.
 *
 * @example A builder whose build processes were OOM-killed
 * ```ts
 * import { oomFindings } from "./oom.ts";
 * import assert from "node:assert/strict";
 *
 * const findings = oomFindings({
 *   host: "b",
 *   memory: { error: "not captured" },
 *   pressure: null,
 *   oomKillCounter: 1,
 *   log: { source: "dmesg", name: "dmesg", reasons: [] },
 *   kills: [{ killer: "kernel", line: 1, message: "", scope: "memcg", process: "cc1plus", pid: 7, nix: { kind: "build", confidence: "likely", reason: "cc1plus is a compiler or linker" } }],
 *   killerInvocations: 1,
 *   load: { extraPlatforms: [] },
 *   machines: null,
 *   zram: { error: "not captured" },
 *   records: [],
 *   hotAddNotes: {},
 * });
 * assert.equal(findings.find((f) => f.id === "oom/build-killed")?.status, "critical");
 * ```
 */
export function oomFindings(
  evidence: OomEvidence,
  thresholds: Partial<OomThresholds> = {},
): Finding[] {
  const t = { ...DEFAULT_OOM_THRESHOLDS, ...thresholds };
  const findings: Finding[] = [];
  const memory = "totalBytes" in evidence.memory ? evidence.memory : null;

  // Memory and swap now.
  if (memory === null) {
    findings.push({
      id: "oom/memory",
      status: "unknown",
      summary: `cannot read /proc/meminfo: ${(evidence.memory as { error: string }).error}`,
    });
  } else {
    const availPct = percent(memory.availableBytes, memory.totalBytes);
    const swapUsed = memory.swapTotalBytes - memory.swapFreeBytes;
    const swapPct = percent(swapUsed, memory.swapTotalBytes);
    let status: Status = availPct < t.availableCritPercent
      ? "critical"
      : availPct < t.availableWarnPercent
      ? "warning"
      : "ok";
    if (status === "ok" && memory.swapTotalBytes > 0 && swapPct >= 80) status = "warning";
    const swap = memory.swapTotalBytes === 0
      ? "no swap"
      : `swap ${formatBytes(swapUsed)} of ${formatBytes(memory.swapTotalBytes)} used (${swapPct}%)`;
    const finding: Finding = {
      id: "oom/memory",
      status,
      summary: `${formatBytes(memory.availableBytes)} of ${
        formatBytes(memory.totalBytes)
      } RAM available (${availPct}%), ${swap}`,
      data: {
        totalBytes: memory.totalBytes,
        availableBytes: memory.availableBytes,
        swapTotalBytes: memory.swapTotalBytes,
        swapFreeBytes: memory.swapFreeBytes,
      },
    };
    if (memory.availableEstimated) {
      finding.detail =
        "MemAvailable is missing (kernel < 3.14): estimated as MemFree + Buffers + Cached";
    }
    if (status !== "ok") {
      finding.fix =
        "fewer parallel builds (--mitigate serialize) or temporary swap (--mitigate zram)";
    }
    findings.push(finding);
  }

  // Pressure.
  const pressure = evidence.pressure;
  if (pressure !== null && "error" in pressure) {
    findings.push({
      id: "oom/pressure",
      status: "unknown",
      summary: `cannot read /proc/pressure/memory: ${pressure.error}`,
    });
  } else if (pressure === null) {
    findings.push({
      id: "oom/pressure",
      status: "ok",
      summary: "memory pressure not available (kernel without PSI, or booted with psi=0)",
    });
  } else {
    const full = pressure.full?.avg60 ?? 0;
    const status: Status = full >= t.pressureCritPercent
      ? "critical"
      : full >= t.pressureWarnPercent
      ? "warning"
      : "ok";
    const finding: Finding = {
      id: "oom/pressure",
      status,
      summary:
        `memory stalls: some ${pressure.some.avg10}/${pressure.some.avg60}/${pressure.some.avg300}%, ` +
        `full ${pressure.full?.avg10 ?? 0}/${full}/${pressure.full?.avg300 ?? 0}% (avg10/60/300)`,
      data: pressure,
    };
    if (status !== "ok") {
      finding.detail = `for ${full}% of the last minute every task waited for memory (thrashing)`;
      finding.fix =
        "fewer parallel builds now (--mitigate serialize); zram helps only before RAM is full";
    }
    findings.push(finding);
  }

  // Kills.
  if (evidence.log.source === "none") {
    findings.push({
      id: "oom/kernel-log-unavailable",
      status: "unknown",
      summary: "cannot read the kernel log (no journal entries, dmesg failed)",
      detail: evidence.log.reasons.join("\n"),
      fix: kernelLogFix(evidence.log.reasons),
    });
  } else {
    const nixKills = evidence.kills.filter((k) => k.nix !== null && k.nix.kind !== "nix");
    const nixSelf = evidence.kills.filter((k) => k.nix?.kind === "nix");
    const others = evidence.kills.filter((k) => k.nix === null);
    const from = evidence.log.source === "file"
      ? evidence.log.name
      : `this boot's ${evidence.log.source === "journal" ? "journal" : "kernel log (dmesg)"}`;
    if (nixKills.length > 0 || nixSelf.length > 0) {
      const emulated = nixKills.filter((k) => k.nix?.kind === "emulated-build").length;
      const all = [...nixKills, ...nixSelf];
      findings.push({
        id: "oom/build-killed",
        status: "critical",
        summary: `${all.length} OOM kill${all.length === 1 ? "" : "s"} of Nix ${
          nixKills.length > 0 ? "build processes" : "processes"
        } in ${from}${emulated > 0 ? ` (${emulated} emulated under qemu)` : ""}`,
        detail: all.map(describeKill).join("\n"),
        fix: "serialize the next build (--mitigate serialize), add temporary zram swap " +
          "(--mitigate zram --apply), or make it permanent (--mitigate persistent)",
        data: all,
      });
    }
    if (others.length > 0) {
      findings.push({
        id: "oom/other-killed",
        status: "warning",
        summary: `${others.length} OOM kill${
          others.length === 1 ? "" : "s"
        } of processes not traced to Nix in ${from}`,
        detail: others.map(describeKill).join("\n"),
        fix: "the machine ran out of memory; if builds were running, their processes may be " +
          "listed under another cgroup: see runbook/oom_mitigate.md#reading-the-evidence",
        data: others,
      });
    }
    if (evidence.kills.length === 0) {
      findings.push({
        id: "oom/no-kills",
        status: "ok",
        summary: `no OOM kills in ${from}`,
      });
    }
    const counted = evidence.oomKillCounter;
    const kernelKills = evidence.kills.filter((k) => k.killer === "kernel").length;
    if (evidence.log.source !== "file" && counted !== null && counted > kernelKills) {
      findings.push({
        id: "oom/kills-not-in-log",
        status: "warning",
        summary: `the kernel counted ${counted} OOM kill${
          counted === 1 ? "" : "s"
        } since boot (/proc/vmstat oom_kill), the log shows ${kernelKills}`,
        detail: "older messages have left the kernel ring buffer, or the journal dropped them",
        fix: "check a persistent log (journalctl -k -b, /var/log/kern.log); raise log_buf_len " +
          "on the kernel command line to keep more",
      });
    }
  }

  // Build log.
  if (evidence.buildLog) {
    const { name, kills } = evidence.buildLog;
    if (kills.length > 0) {
      const killed = kills.filter((k) => k.kind === "builder" && k.signal === 9);
      findings.push({
        id: "oom/build-log-killed",
        status: "critical",
        summary: killed.length > 0
          ? `${name}: ${killed.length} build${
            killed.length === 1 ? "" : "s"
          } failed due to signal 9 (Killed)${killed[0]?.drv ? `: ${killed[0].drv}` : ""}`
          : `${name}: a compiler or linker inside the build was killed (signal 9)`,
        detail: kills.map((k) => `line ${k.line}: ${k.text}`).join("\n") +
          "\nSIGKILL is what the OOM killer sends; the kernel log shows whether it did",
        fix: "match the time with the kernel log (run without --build-log on the builder), then " +
          "--mitigate serialize or zram",
        data: kills,
      });
    } else {
      findings.push({
        id: "oom/build-log-clean",
        status: "ok",
        summary: `${name}: no build killed by a signal`,
      });
    }
  }

  // Jobs arithmetic.
  findings.push(...loadFindings(evidence, memory, t));

  // zram.
  findings.push(...zramFindings(evidence));

  // What oom_mitigate left behind.
  findings.push(...recordFindings(evidence));
  return findings;
}

function loadFindings(evidence: OomEvidence, memory: MemInfo | null, t: OomThresholds): Finding[] {
  const findings: Finding[] = [];
  const { load } = evidence;
  const maxJobs = resolveCount(load.maxJobs, load.nproc);
  const coresSetting = resolveCount(load.cores, load.nproc);
  const cores = coresSetting === 0 ? load.nproc ?? null : coresSetting;
  const emulated = emulatedSystems(load);
  const emulationNote = emulated.length > 0
    ? `\n${emulated.join(", ")} builds run under qemu user emulation, which needs more memory ` +
      "per process than native builds: leave room above the threshold"
    : "";
  if (load.error !== undefined) {
    findings.push({
      id: "oom/jobs-memory",
      status: "unknown",
      summary: `cannot read the Nix settings: ${load.error}`,
    });
  } else if (maxJobs === 0) {
    findings.push({
      id: "oom/jobs-memory",
      status: "ok",
      summary: "max-jobs = 0: this machine builds nothing itself (a controller)",
    });
  } else if (maxJobs === null || cores === null || memory === null) {
    findings.push({
      id: "oom/jobs-memory",
      status: "unknown",
      summary: `cannot work out memory per build process (max-jobs ${load.maxJobs ?? "?"}, cores ${
        load.cores ?? "?"
      }, ${memory === null ? "RAM unknown" : `nproc ${load.nproc ?? "?"}`})`,
    });
  } else {
    const processes = maxJobs * cores;
    const each = memory.totalBytes / processes;
    const status = perProcessStatus(each, t);
    const finding: Finding = {
      id: "oom/jobs-memory",
      status,
      summary: `max-jobs ${maxJobs} × cores ${cores} = up to ${processes} compiler process${
        processes === 1 ? "" : "es"
      } on ${formatBytes(memory.totalBytes)} RAM: about ${formatBytes(each)} each`,
      data: { maxJobs, cores, processes, bytesPerProcess: Math.round(each) },
    };
    if (emulationNote !== "") finding.detail = emulationNote.slice(1);
    if (status !== "ok") {
      const fit = Math.max(1, Math.floor(memory.totalBytes / (t.perProcessWarnBytes * cores)));
      finding.fix = `lower max-jobs to ${fit} (or cores): --mitigate serialize --max-jobs ${fit} ` +
        `--cores ${cores}`;
    }
    findings.push(finding);
  }

  if (evidence.machines !== null) {
    for (const machine of evidence.machines.lines) {
      const where = `${machine.input}:${machine.line}`;
      if (memory === null || cores === null) {
        findings.push({
          id: "oom/machines-jobs-memory",
          status: "unknown",
          summary:
            `${where} (${machine.storeUri}): max jobs ${machine.maxJobs}; this machine's RAM ` +
            "or cores are unknown",
        });
        continue;
      }
      const processes = machine.maxJobs * cores;
      const each = memory.totalBytes / processes;
      const status = perProcessStatus(each, t);
      const finding: Finding = {
        id: "oom/machines-jobs-memory",
        status,
        summary: `${where} (${machine.storeUri}) sends up to ${machine.maxJobs} job${
          machine.maxJobs === 1 ? "" : "s"
        } × cores ${cores} = ${processes} process${processes === 1 ? "" : "es"} to ${
          formatBytes(memory.totalBytes)
        } RAM: about ${formatBytes(each)} each`,
        data: { input: machine.input, line: machine.line, maxJobs: machine.maxJobs, cores, each },
      };
      if (machine.maxJobsDefaulted) {
        finding.detail = "the max jobs column (#3) is unset ('-'), so Nix uses 1";
      }
      if (status !== "ok") {
        const fit = Math.max(1, Math.floor(memory.totalBytes / (t.perProcessWarnBytes * cores)));
        finding.fix = `lower column #3 (max jobs) of that line to ${fit}: --mitigate persistent ` +
          "prints the line";
      }
      findings.push(finding);
    }
  }
  return findings;
}

function zramFindings(evidence: OomEvidence): Finding[] {
  const findings: Finding[] = [];
  const zram = evidence.zram;
  if ("error" in zram) {
    findings.push({
      id: "zram/devices",
      status: "unknown",
      summary: `cannot read the zram devices: ${zram.error}`,
    });
    return findings;
  }
  if (!zram.available) {
    findings.push({
      id: "zram/unavailable",
      status: "ok",
      summary: "this kernel has no zram (module not loaded): the zram mitigation is not available",
      fix: "modprobe zram (as root); on NixOS zramSwap.enable loads it",
    });
    return findings;
  }
  const describe = (d: ZramState["devices"][number]) => {
    const size = d.diskSizeBytes > 0 ? `${formatBytes(d.diskSizeBytes)} ${d.algorithm ?? ""}` : "";
    const swap = d.swap
      ? `, swap prio ${d.swap.priority}, ${formatBytes(d.swap.usedBytes)} used`
      : "";
    return `${d.name}: ${d.owner} (${d.ownerReason})${size ? `, ${size.trim()}` : ""}${swap}`;
  };
  const finding: Finding = {
    id: "zram/devices",
    status: "ok",
    summary: zram.devices.length === 0
      ? "no zram devices"
      : `${zram.devices.length} zram device${zram.devices.length === 1 ? "" : "s"}: ${
        zram.devices.map((d) => `${d.name} (${d.owner})`).join(", ")
      }`,
    data: zram.devices,
  };
  if (zram.devices.length > 0) finding.detail = zram.devices.map(describe).join("\n");
  findings.push(finding);
  return findings;
}

function recordFindings(evidence: OomEvidence): Finding[] {
  const findings: Finding[] = [];
  const live = evidence.records.filter((r) => r.status === "applied" || r.status === "applying");
  const zram = "error" in evidence.zram ? null : evidence.zram;
  const sameBoot = (r: ChangeRecord) =>
    evidence.bootId === undefined || r.bootId === undefined || r.bootId === evidence.bootId;
  const applied: string[] = [];
  for (const record of live) {
    if (record.kind === "zram") {
      const device = typeof record.detail.device === "string"
        ? record.detail.device
        : evidence.hotAddNotes[record.id];
      const exists = device !== undefined && zram?.devices.some((d) => d.name === device);
      if (!sameBoot(record) || (device !== undefined && zram !== null && !exists)) {
        findings.push({
          id: "zram/stale-record",
          status: "ok",
          summary: `record ${record.id}: ${device ?? "its zram device"} is gone (${
            sameBoot(record) ? "removed by someone else" : "the machine rebooted"
          })`,
          fix: "--revert closes the record (it touches no device)",
        });
        continue;
      }
      if (record.status === "applying" && device === undefined) {
        const known = Array.isArray(record.detail.knownDevices)
          ? record.detail.knownDevices as string[]
          : [];
        const candidates = (zram?.devices ?? []).filter((d) =>
          !known.includes(d.name) && d.owner === "unused"
        );
        findings.push({
          id: "zram/orphan-device",
          status: "warning",
          summary: `record ${record.id}: a run was killed while hot-adding a zram device${
            candidates.length > 0
              ? `; ${candidates.map((d) => d.name).join(", ")} may be the one it added`
              : ""
          }`,
          detail: "oom_mitigate never touches a device it cannot prove it created",
          fix: candidates.length > 0
            ? `if nothing else uses it: echo ${
              candidates[0]!.id
            } > /sys/class/zram-control/hot_remove; then --revert closes the record`
            : "--revert closes the record",
        });
        continue;
      }
      if (record.status === "applying") {
        findings.push({
          id: "oom/incomplete-change",
          status: "warning",
          summary:
            `record ${record.id}: a run was killed while setting up zram swap on ${device} ` +
            `(step '${String(record.detail.step ?? "start")}')`,
          fix: "--revert undoes it; --mitigate zram --apply finishes it over",
        });
        continue;
      }
      applied.push(`temporary zram swap ${device} since ${record.createdAt}`);
    } else if (record.kind === "file") {
      if (record.status === "applying") {
        findings.push({
          id: "oom/incomplete-change",
          status: "warning",
          summary: `record ${record.id}: a run was killed while editing ${
            String(record.detail.path)
          }`,
          fix: "--revert puts the backup back if the edit landed; --apply settles it",
        });
        continue;
      }
      const settings = record.detail.settings as Record<string, string> | undefined;
      applied.push(
        `${String(record.detail.path)}: ${
          settings ? Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join(", ") : "edited"
        } since ${record.createdAt}`,
      );
    }
  }
  if (applied.length > 0) {
    findings.push({
      id: "oom/mitigation-active",
      status: "ok",
      summary: `oom_mitigate changes in effect: ${applied.length}`,
      detail: applied.join("\n"),
      fix: "undo with: deno run -A scripts/oom_mitigate.ts --revert",
    });
  }
  return findings;
}

/**
 * The diagnosis as a check: reads the target and returns its findings (see {@link oomFindings}).
 * Read-only. The health check calls this.
 *
 * @example
 * ```ts
 * import { diagnoseOom } from "./oom.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const findings = await diagnoseOom(new LocalTarget(), { kernelLog: { name: "empty log", text: "" } });
 * assert.equal(findings.find((f) => f.id === "oom/no-kills")?.summary, "no OOM kills in empty log");
 * ```
 */
export async function diagnoseOom(
  target: Target,
  options: DiagnoseOomOptions = {},
): Promise<Finding[]> {
  return oomFindings(await collectOomEvidence(target, options), options.thresholds);
}
