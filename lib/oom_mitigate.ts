/**
 * The OOM mitigations of `scripts/oom_mitigate.ts`, each a dry-run plan by default and a recorded,
 * reversible change with `apply`:
 *
 * - **serialize**: the `--option max-jobs N --option cores M` command for the next build; with
 *   `persist`, a minimal edit of the machine's nix.conf (refused, with the `nix.settings` snippet,
 *   where NixOS or nix-darwin manage the file).
 * - **zram**: a temporary zram swap device of `memoryPercent` of RAM, created (hot-added) by us,
 *   labelled ours, high priority; devices we did not create are never touched.
 * - **persistent**: the NixOS snippet and the controller's machines line, ready to paste.
 *
 * Every change goes through a {@link StateStore} on the machine: a lock, a record written before
 * and after each step, backups; {@link revertMitigations} undoes exactly what the records say, and
 * {@link repairIncomplete} settles what a killed run left: finishes what had fully landed, undoes the rest.
 *
 * @module
 */

import {
  applyFileRecord,
  type ChangeRecord,
  type FileRecordDetail,
  reconcileFileRecord,
  revertFileRecord,
  type StateStore,
} from "./atomic_file.ts";
import type { Finding } from "./findings.ts";
import { formatBytes, readMeminfo } from "./meminfo.ts";
import { loadNixConf, nixConfSources, readNixConfEnv } from "./nix_conf.ts";
import { setNixConfSettings } from "./nix_conf_edit.ts";
import { hotAddNotePath, type MachineLine, type OomEvidence } from "./oom.ts";
import type { Target } from "./target.ts";
import {
  chooseAlgorithm,
  configureZram,
  hotAddZram,
  readCgroupSwap,
  readSwapLabel,
  readZramState,
  removeZram,
  swapOnZram,
  type ZramState,
} from "./zram.ts";

/** The `tool` of `oom_mitigate`'s change records. */
export const OOM_TOOL = "oom_mitigate";

/** What `serialize` sets. */
export interface SerializeSettings {
  /** `max-jobs` (default 1). */
  maxJobs: number;
  /** `cores` (default 2). */
  cores: number;
}

/** What `zram` sets up. */
export interface ZramSettings {
  /** Size as a share of RAM, percent (default 50). */
  memoryPercent: number;
  /** Compression algorithm; default: the first of zstd, lz4, lzo-rle, lzo the kernel offers. */
  algorithm?: string;
  /** Swap priority (default 100: used before disk swap). */
  priority: number;
}

/** The marker comment put before lines `serialize --persist` appends. */
export const NIX_CONF_MARKER =
  "Added by nix-builder-runbook oom_mitigate (undo: oom_mitigate.ts --revert)";

/**
 * Where Nix's system nix.conf is on the target (`$NIX_CONF_DIR/nix.conf`, else `/etc/nix/nix.conf`).
 *
 * @example
 * ```ts
 * import { systemNixConfPath } from "./oom_mitigate.ts";
 * import { NIX_CONF_ENV_COMMAND } from "./nix_conf.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [{ argv: [...NIX_CONF_ENV_COMMAND], code: 0, stdout: "NIX_CONF_DIR=/etc/nix-lab\0HOME=/root\0", stderr: "" }],
 *   paths: {},
 *   files: {},
 * });
 * assert.equal(await systemNixConfPath(target), "/etc/nix-lab/nix.conf");
 * ```
 */
export async function systemNixConfPath(target: Target): Promise<string> {
  const env = await readNixConfEnv(target);
  const dir = env.ok ? env.env.NIX_CONF_DIR : undefined;
  return nixConfSources(dir === undefined ? {} : { NIX_CONF_DIR: dir })[0]!.path;
}

/**
 * The NixOS / nix-darwin snippet for the settings.
 *
 * @example
 * ```ts
 * import { nixSettingsSnippet } from "./oom_mitigate.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(nixSettingsSnippet({ maxJobs: 1, cores: 2 }), "nix.settings = { max-jobs = 1; cores = 2; };");
 * ```
 */
export function nixSettingsSnippet(settings: SerializeSettings): string {
  return `nix.settings = { max-jobs = ${settings.maxJobs}; cores = ${settings.cores}; };`;
}

/**
 * A machines line with column #3 (max jobs) set, other columns as written (unset ones as `-`).
 *
 * @example
 * ```ts
 * import { machineLineWithMaxJobs } from "./oom_mitigate.ts";
 * import { parseMachines } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const [machine] = parseMachines("nixos x86_64-linux / - 8 1 kvm,big-parallel", { version: "2.24.0" }).machines;
 * assert.equal(machineLineWithMaxJobs(machine!, 1), "nixos x86_64-linux / 1 8 1 kvm,big-parallel");
 * ```
 */
export function machineLineWithMaxJobs(machine: MachineLine, maxJobs: number): string {
  const columns = [...machine.columns];
  while (columns.length < 4) columns.push("-");
  columns[3] = String(maxJobs);
  return columns.join(" ");
}

type NixConfStatus =
  | { kind: "editable"; path: string }
  | { kind: "managed"; path: string; reason: string };

async function nixConfStatus(target: Target, path: string): Promise<NixConfStatus> {
  const info = await target.stat(path);
  if (info?.isSymlink) {
    const real = await target.run(["readlink", "-f", "--", path], { timeoutMs: 10_000 });
    const resolved = real.code === 0 ? real.stdout.trim() : "?";
    const by = /^\/nix\/store\//.test(resolved) || resolved.startsWith("/etc/static/")
      ? "NixOS or nix-darwin (a Nix store file)"
      : "a symlink";
    return { kind: "managed", path, reason: `${path} is ${by} -> ${resolved}` };
  }
  if ((await target.stat("/etc/NIXOS")) !== null && path === "/etc/nix/nix.conf") {
    return {
      kind: "managed",
      path,
      reason: "this is NixOS: nixos-rebuild would overwrite an edit of /etc/nix/nix.conf",
    };
  }
  return { kind: "editable", path };
}

function serializeCommand(settings: SerializeSettings): string {
  return `nix build --option max-jobs ${settings.maxJobs} --option cores ${settings.cores} <installable>`;
}

/**
 * The dry-run of `serialize`: the command for the next build and, with `persist`, what the nix.conf
 * edit would change. Read-only.
 *
 * @example
 * ```ts
 * import { planSerialize } from "./oom_mitigate.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const [plan] = await planSerialize(new LocalTarget(), { maxJobs: 1, cores: 2 }, { persist: false });
 * assert.equal(plan?.summary, "serialize: max-jobs 1, cores 2 (dry run)");
 * assert.match(plan?.detail ?? "", /nix build --option max-jobs 1 --option cores 2/);
 * ```
 */
export async function planSerialize(
  target: Target,
  settings: SerializeSettings,
  options: { persist: boolean; machines?: MachineLine[] },
): Promise<Finding[]> {
  const lines = [
    `for the next build on this machine: ${serializeCommand(settings)}`,
    `or for this shell only: export NIX_CONFIG=$'max-jobs = ${settings.maxJobs}\\ncores = ${settings.cores}'`,
  ];
  for (const machine of options.machines ?? []) {
    lines.push(
      `from the controller, fewer jobs to this builder: nix build --builders '${
        machineLineWithMaxJobs(machine, settings.maxJobs)
      }' <installable>`,
    );
  }
  const findings: Finding[] = [];
  const finding: Finding = {
    id: "oom/serialize",
    status: "ok",
    summary: `serialize: max-jobs ${settings.maxJobs}, cores ${settings.cores} (dry run)`,
    detail: lines.join("\n"),
    data: { action: "plan", ...settings },
  };
  if (options.persist) {
    const path = await systemNixConfPath(target);
    const status = await nixConfStatus(target, path);
    if (status.kind === "managed") {
      findings.push(managedFinding(status, settings));
    } else {
      const text = (await target.readFile(path)) ?? "";
      const edit = setNixConfSettings(text, {
        "max-jobs": String(settings.maxJobs),
        cores: String(settings.cores),
      }, { path, marker: NIX_CONF_MARKER });
      finding.detail += `\n--apply would edit ${path}: ` +
        edit.changes.map((c) =>
          c.action === "replaced"
            ? `line ${c.line}: ${c.name} ${c.previous} -> ${c.value}`
            : c.action === "appended"
            ? `append '${c.name} = ${c.value}'`
            : `${c.name} already ${c.value}`
        ).join(", ");
    }
  }
  finding.fix = options.persist
    ? "add --apply to write nix.conf (backed up; --revert restores it byte for byte)"
    : "add --persist --apply to write it into nix.conf";
  findings.unshift(finding);
  return findings;
}

function managedFinding(status: { path: string; reason: string }, s: SerializeSettings): Finding {
  return {
    id: "oom/nix-conf-managed",
    status: "warning",
    summary: `not editing ${status.path}: ${status.reason}`,
    detail: "set it in the system configuration instead, then rebuild:\n" + nixSettingsSnippet(s),
    fix: "add the snippet to configuration.nix (NixOS) or darwin-configuration.nix, then " +
      "nixos-rebuild switch / darwin-rebuild switch",
    data: { snippet: nixSettingsSnippet(s) },
  };
}

async function restartAdvice(target: Target): Promise<string> {
  if ((await target.stat("/run/systemd/system")) !== null) {
    return "restart the daemon for builds to use it: systemctl restart nix-daemon.service";
  }
  if ((await target.stat("/Library/LaunchDaemons/org.nixos.nix-daemon.plist")) !== null) {
    return "restart the daemon: sudo launchctl kickstart -k system/org.nixos.nix-daemon";
  }
  return "restart nix-daemon if one runs (single-user Nix reads the file on its next command)";
}

/**
 * `serialize --persist --apply`: edits the system nix.conf (call it holding the store's lock).
 * Refuses where NixOS or nix-darwin manage the file, printing the `nix.settings` snippet.
 *
 * @example Changes the machine's nix.conf (root)
 * ```ts ignore
 * import { applySerialize } from "./oom_mitigate.ts";
 * import { fileOpsFor, StateStore } from "./atomic_file.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * const target = new LocalTarget();
 * const store = await StateStore.open(fileOpsFor(target), "/var/lib/nix-builder-runbook");
 * const findings = await store.withLock(() => applySerialize(target, store, { maxJobs: 1, cores: 2 }));
 * ```
 */
export async function applySerialize(
  target: Target,
  store: StateStore,
  settings: SerializeSettings,
): Promise<Finding[]> {
  const path = await systemNixConfPath(target);
  const status = await nixConfStatus(target, path);
  if (status.kind === "managed") return [managedFinding(status, settings)];
  const bytes = await store.ops.read(path);
  const text = bytes === null ? "" : new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  const values = { "max-jobs": String(settings.maxJobs), cores: String(settings.cores) };
  const edit = setNixConfSettings(text, values, { path, marker: NIX_CONF_MARKER });
  const record = await applyFileRecord(store, {
    tool: OOM_TOOL,
    path,
    content: edit.text,
    extra: { settings: values, changes: edit.changes },
  });
  const findings: Finding[] = [];
  const described = edit.changes.map((c) =>
    c.action === "replaced"
      ? `${c.name} ${c.previous} -> ${c.value} (line ${c.line})`
      : c.action === "appended"
      ? `${c.name} = ${c.value} appended (line ${c.line})`
      : `${c.name} already ${c.value}`
  ).join(", ");
  if (record === null) {
    findings.push({
      id: "oom/serialize",
      status: "ok",
      summary: `${path} already has max-jobs = ${settings.maxJobs}, cores = ${settings.cores}`,
      data: { action: "unchanged", path, ...settings },
    });
  } else {
    const before = (record.detail as FileRecordDetail).before;
    findings.push({
      id: "oom/serialize",
      status: "ok",
      summary: `${path}: ${described}`,
      detail: `${await restartAdvice(target)}\nrecord ${record.id}${
        before ? `, backup ${before.backup}` : " (the file was created)"
      }`,
      data: { action: "applied", path, record: record.id, ...settings },
    });
  }
  // What builds started here see: the system file, then this user's files and NIX_CONFIG, which
  // the client passes on to the daemon (max-jobs and cores are among the settings it sends).
  const env = await readNixConfEnv(target);
  const loaded = await loadNixConf(target, { env: env.ok ? env.env : {} });
  for (const [name, value] of Object.entries(values)) {
    const effective = loaded.settings.get(name);
    if (effective !== undefined && effective.value !== value) {
      const origin = effective.origins[0];
      const where = origin?.file === "NIX_CONFIG"
        ? "the NIX_CONFIG variable"
        : `${origin?.file}:${origin?.line}`;
      findings.push({
        id: "oom/nix-conf-overridden",
        status: "warning",
        summary:
          `${name} = ${value} is in ${path}, but ${where} sets ${name} = ${effective.value} ` +
          "for builds started from this account",
        fix: `remove ${name} there (or set it to ${value}); the daemon's own builds use ${path}`,
      });
    }
  }
  return findings;
}

function zramSize(totalBytes: number, percent: number): number {
  const mib = 1024 * 1024;
  return Math.max(mib, Math.floor((totalBytes * percent) / 100 / mib) * mib);
}

/**
 * The label on our swap devices: `nbr-oom-` and six characters of the record id (16 at most).
 *
 * @example
 * ```ts
 * import { zramLabel } from "./oom_mitigate.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(zramLabel("20261125T190517Z-zram-8ff3fa"), "nbr-oom-8ff3fa");
 * ```
 */
export function zramLabel(recordId: string): string {
  return `nbr-oom-${recordId.slice(-6)}`;
}

/**
 * The dry run of `zram`: size, algorithm and priority it would use, and the devices it would leave
 * alone. Pure.
 *
 * @example
 * ```ts
 * import { planZram } from "./oom_mitigate.ts";
 * import { collectOomEvidence } from "./oom.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [],
 *   paths: {
 *     "/sys/class/zram-control": { exists: true, entries: ["hot_add", "hot_remove"] },
 *     "/sys/module/zram": { exists: true, entries: [] },
 *     "/sys/block": { exists: true, entries: ["zram0"] },
 *     "/run/systemd/generator": { exists: false },
 *   },
 *   files: {
 *     "/proc/meminfo": "MemTotal: 16777216 kB\nMemFree: 1 kB\nMemAvailable: 8388608 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
 *     "/proc/swaps": "Filename Type Size Used Priority\n",
 *     "/sys/block/zram0/disksize": "0\n",
 *     "/sys/block/zram0/comp_algorithm": "[lzo-rle] lzo lz4\n",
 *   },
 * });
 * const evidence = await collectOomEvidence(target, { kernelLog: { name: "x", text: "" } });
 * const [plan] = planZram(evidence, { memoryPercent: 50, priority: 100 });
 * assert.equal(plan?.summary, "zram swap: 8.0 GiB (50% of 16.0 GiB RAM), lz4, priority 100 (dry run)");
 * ```
 */
export function planZram(evidence: OomEvidence, settings: ZramSettings): Finding[] {
  const zram = "error" in evidence.zram ? null : evidence.zram;
  const memory = "totalBytes" in evidence.memory ? evidence.memory : null;
  if (zram !== null && (!zram.available || !zram.hotAdd)) return [unavailable(zram)];
  if (zram?.initialUserNamespace === false) return [notPermitted()];
  const offered = zram?.devices[0]?.algorithms ?? [];
  const algorithm = settings.algorithm ??
    (chooseAlgorithm(offered) ?? "the first of zstd, lz4, lzo-rle, lzo the kernel offers");
  if (
    settings.algorithm !== undefined && offered.length > 0 && !offered.includes(settings.algorithm)
  ) {
    return [noAlgorithm(settings.algorithm, offered)];
  }
  const size = memory === null
    ? `${settings.memoryPercent}% of RAM`
    : `${
      formatBytes(zramSize(memory.totalBytes, settings.memoryPercent))
    } (${settings.memoryPercent}% of ${formatBytes(memory.totalBytes)} RAM)`;
  const foreign = (zram?.devices ?? []).filter((d) => d.owner !== "ours" && d.owner !== "unused");
  return [{
    id: "zram/swap",
    status: "ok",
    summary: `zram swap: ${size}, ${algorithm}, priority ${settings.priority} (dry run)`,
    detail: [
      "--apply would: hot-add a new zram device, set its algorithm and size, mkswap -L nbr-oom-<id>, " +
      `swapon --priority ${settings.priority}`,
      ...(foreign.length > 0
        ? [
          `existing devices are left alone: ${
            foreign.map((d) => `${d.name} (${d.owner})`).join(", ")
          }`,
        ]
        : []),
      "zram keeps swapped pages compressed in RAM: it buys room only as far as they compress, and " +
      "cannot help one process that needs more than the RAM there is",
    ].join("\n"),
    fix: "add --apply to create it; --revert removes it",
    data: { action: "plan", ...settings },
  }];
}

function unavailable(zram: ZramState): Finding {
  return {
    id: "zram/unavailable",
    status: "critical",
    summary: zram.available
      ? "this kernel cannot hot-add zram devices (/sys/class/zram-control missing, Linux < 4.2)"
      : "this kernel has no zram (module not loaded): cannot add zram swap",
    fix: zram.available
      ? "use a swap file instead, or a kernel with zram hot-add"
      : "modprobe zram (as root), then run again; or use --mitigate serialize",
  };
}

function notPermitted(): Finding {
  return {
    id: "zram/not-permitted",
    status: "critical",
    summary: "this machine runs in a user namespace (a container): the kernel lets only the host " +
      "add swap",
    detail: "swapon needs CAP_SYS_ADMIN in the host's user namespace, which root in a container " +
      "does not have: the swapon would fail with 'Operation not permitted'. Nothing was changed.",
    fix: "add the swap on the host (NixOS: zramSwap.enable = true; or run this script there), " +
      "or use --mitigate serialize, which works inside the container",
  };
}

function noAlgorithm(wanted: string, offered: readonly string[]): Finding {
  return {
    id: "zram/no-algorithm",
    status: "critical",
    summary: `the kernel offers no '${wanted}' for zram (offered: ${offered.join(", ") || "none"})`,
    fix: `pick one of: ${offered.join(", ")} (--algorithm), or leave --algorithm out`,
  };
}

async function readBootId(target: Target): Promise<string | undefined> {
  const text = await target.readFile("/proc/sys/kernel/random/boot_id").catch(() => null);
  return text?.trim() || undefined;
}

/**
 * `zram --apply` (call it holding the store's lock): creates the swap device, recording each step so
 * a killed run can be undone; a failed step rolls back what this run created.
 *
 * @example Creates a zram swap (root)
 * ```ts ignore
 * import { applyZram } from "./oom_mitigate.ts";
 * import { fileOpsFor, StateStore } from "./atomic_file.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * const target = new LocalTarget();
 * const store = await StateStore.open(fileOpsFor(target), "/var/lib/nix-builder-runbook");
 * const [finding] = await store.withLock(() => applyZram(target, store, { memoryPercent: 50, priority: 100 }));
 * // finding.id === "zram/swap", finding.data.device === "zram1"
 * ```
 */
export async function applyZram(
  target: Target,
  store: StateStore,
  settings: ZramSettings,
  options: { sysfsRoot?: string; onStep?: (step: string) => Promise<void> | void } = {},
): Promise<Finding[]> {
  const bootId = await readBootId(target);
  const records = await store.list({ tool: OOM_TOOL, kind: "zram", status: ["applied"] });
  const readOptions = options.sysfsRoot !== undefined ? { sysfsRoot: options.sysfsRoot } : {};
  const state = await readZramState(target, readOptions);
  if (!state.available || !state.hotAdd) return [unavailable(state)];
  if (state.initialUserNamespace === false) return [notPermitted()];
  if (options.sysfsRoot !== undefined && options.sysfsRoot !== "/sys") {
    throw new Error("Cannot apply with a sysfs root other than /sys: it is for reading only");
  }
  for (const record of records) {
    const device = record.detail.device;
    if (record.bootId !== bootId || typeof device !== "string") continue;
    const swap = state.swaps.find((s) => s.path === `/dev/${device}`);
    if (swap && (await readSwapLabel(target, device)) === record.detail.label) {
      return [{
        id: "zram/swap",
        status: "ok",
        summary: `zram swap already on: /dev/${device} (${
          formatBytes(swap.sizeBytes)
        }, priority ${swap.priority}) since ${record.createdAt}`,
        data: { action: "already", device, record: record.id },
      }];
    }
  }
  const offered = state.devices[0]?.algorithms ?? [];
  if (
    settings.algorithm !== undefined && offered.length > 0 && !offered.includes(settings.algorithm)
  ) {
    return [noAlgorithm(settings.algorithm, offered)];
  }
  const memory = await readMeminfo(target);
  const sizeBytes = zramSize(memory.totalBytes, settings.memoryPercent);
  const record = store.newRecord(OOM_TOOL, "zram", {
    sizeBytes,
    priority: settings.priority,
    knownDevices: state.devices.map((d) => d.name),
    step: "start",
  });
  record.detail.label = zramLabel(record.id);
  if (bootId !== undefined) record.bootId = bootId;
  await store.save(record);
  await options.onStep?.("start");
  let device: string | undefined;
  const step = async (name: string) => {
    record.detail.step = name;
    await store.save(record);
    await options.onStep?.(name);
  };
  try {
    await store.ops.mkdirp(store.backupDir(record.id), 0o700);
    device = await hotAddZram(target, { noteFile: hotAddNotePath(store.dir, record.id) });
    record.detail.device = device;
    await step("allocated");
    const algorithms = (await readZramState(target)).devices.find((d) => d.name === device)
      ?.algorithms ?? offered;
    const algorithm = settings.algorithm ?? chooseAlgorithm(algorithms);
    if (algorithm === null || !algorithms.includes(algorithm)) {
      await removeZram(target, device);
      record.status = "abandoned";
      await store.save(record);
      return [noAlgorithm(settings.algorithm ?? "zstd/lz4/lzo-rle/lzo", algorithms)];
    }
    record.detail.algorithm = algorithm;
    await step("configuring");
    await configureZram(target, device, { algorithm, sizeBytes });
    await step("configured");
    await swapOnZram(target, device, {
      label: String(record.detail.label),
      priority: settings.priority,
    });
    record.status = "applied";
    await step("active");
    return [{
      id: "zram/swap",
      status: "ok",
      summary: `zram swap on: /dev/${device}, ${
        formatBytes(sizeBytes)
      } ${algorithm}, priority ${settings.priority}, label ${record.detail.label}`,
      detail: `record ${record.id}\nremove it when the builds are done: oom_mitigate.ts --revert ` +
        "(swapoff reads every page back into RAM)",
      data: { action: "applied", device, sizeBytes, algorithm, record: record.id },
    }];
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    let rollback = "nothing to roll back";
    if (device !== undefined) {
      try {
        const done = await removeZram(target, device);
        rollback = `rolled back: ${done.join(", ") || "nothing was set up"}`;
        record.status = "abandoned";
        await store.save(record);
      } catch (undo) {
        rollback = `roll-back failed too (${(undo as Error).message}); --revert retries`;
      }
    } else {
      record.status = "abandoned";
      await store.save(record);
    }
    return [{
      id: "zram/apply-failed",
      status: "critical",
      summary: `zram swap not set up: ${why}`,
      detail: rollback,
      fix: "see runbook/oom_mitigate.md#zram; --mitigate serialize works without zram",
    }];
  }
}

/** What {@link revertZramRecord} decided. */
interface ZramUndo {
  outcome: "removed" | "gone" | "refused" | "not-ours" | "unknown-device";
  text: string;
}

async function revertZramRecord(
  target: Target,
  store: StateStore,
  record: ChangeRecord,
  options: { force: boolean; bootId: string | undefined; swapoffHeadroom?: number },
): Promise<ZramUndo> {
  const noteBytes = await store.ops.read(hotAddNotePath(store.dir, record.id));
  const note = noteBytes ? new TextDecoder().decode(noteBytes).trim() : "";
  const device = typeof record.detail.device === "string"
    ? record.detail.device
    : /^\d+$/.test(note)
    ? `zram${note}`
    : undefined;
  const close = async (status: "reverted" | "abandoned") => {
    record.status = status;
    await store.save(record);
  };
  if (
    record.bootId !== undefined && options.bootId !== undefined && record.bootId !== options.bootId
  ) {
    await close("reverted");
    return {
      outcome: "gone",
      text: `${device ?? "zram device"}: gone with a reboot (record closed)`,
    };
  }
  if (device === undefined) {
    await close("abandoned");
    return {
      outcome: "unknown-device",
      text:
        `record ${record.id}: killed before it knew its device; nothing touched (record closed)`,
    };
  }
  const state = await readZramState(target);
  const current = state.devices.find((d) => d.name === device);
  if (current === undefined) {
    await close("reverted");
    return { outcome: "gone", text: `${device}: already gone` };
  }
  if (current.swap) {
    const label = await readSwapLabel(target, device);
    if (label !== record.detail.label) {
      return {
        outcome: "not-ours",
        text: `${device} is a swap labelled '${label ?? ""}', not ours ('${
          String(record.detail.label)
        }'): left alone`,
      };
    }
    const memory = await readMeminfo(target);
    const headroom = options.swapoffHeadroom ?? 0.8;
    if (!options.force && current.swap.usedBytes > memory.availableBytes * headroom) {
      return {
        outcome: "refused",
        text: `${device} holds ${formatBytes(current.swap.usedBytes)} of swapped pages and only ${
          formatBytes(memory.availableBytes)
        } RAM is available: swapoff could run the machine out of memory`,
      };
    }
    // swapoff brings each page back into the cgroup that owns it: a cgroup at its memory limit
    // cannot take them, and the kernel fails swapoff (ENOMEM) or OOM-kills there (seen here: a
    // build-sized hog in a 100 MiB cgroup), however much RAM the machine has free.
    const tight = options.force || current.swap.usedBytes === 0
      ? []
      : (await readCgroupSwap(target)).filter((c) =>
        c.limitBytes !== null && c.swapBytes > Math.max(0, c.limitBytes - c.usageBytes) * headroom
      );
    const worst = tight.sort((a, b) => b.swapBytes - a.swapBytes)[0];
    if (!options.force && worst !== undefined) {
      return {
        outcome: "refused",
        text: `${device} holds ${formatBytes(current.swap.usedBytes)} of swapped pages; ` +
          `cgroup ${
            worst.path.replace(/^\/sys\/fs\/cgroup(\/memory|\/unified)?(?=\/|$)/, "") || "/"
          } has ${formatBytes(worst.swapBytes)} in swap and ${
            formatBytes(Math.max(0, worst.limitBytes! - worst.usageBytes))
          } left under its memory limit: swapoff would fail or OOM-kill there` +
          (tight.length > 1 ? ` (and ${tight.length - 1} more cgroup(s))` : ""),
      };
    }
  }
  const done = await removeZram(target, device);
  await close("reverted");
  return { outcome: "removed", text: `${device}: ${done.join(", ") || "nothing left to undo"}` };
}

/**
 * Undoes what the records on the machine say `oom_mitigate` applied (call it holding the lock),
 * newest first: zram devices are swapped off, reset and removed (never one we did not create, and
 * not when swapoff could run the machine out of memory unless `force`); nix.conf gets its backup
 * back byte for byte (not when it changed since). Idempotent.
 *
 * @example Undoes every recorded change (root)
 * ```ts ignore
 * import { revertMitigations } from "./oom_mitigate.ts";
 * import { fileOpsFor, StateStore } from "./atomic_file.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * const target = new LocalTarget();
 * const store = await StateStore.open(fileOpsFor(target), "/var/lib/nix-builder-runbook");
 * const findings = await store.withLock(() => revertMitigations(target, store));
 * // [{ id: "oom/reverted", detail: "zram1: swapoff /dev/zram1, reset /dev/zram1, hot-remove /dev/zram1" }]
 * ```
 */
export async function revertMitigations(
  target: Target,
  store: StateStore,
  options: {
    kinds?: readonly ("zram" | "file")[];
    force?: boolean;
    /** Refuse swapoff when swapped pages exceed this share of available RAM (default 0.8). */
    swapoffHeadroom?: number;
  } = {},
): Promise<Finding[]> {
  const bootId = await readBootId(target);
  const records = (await store.list({ tool: OOM_TOOL, status: ["applied", "applying"] }))
    .filter((r) => options.kinds === undefined || options.kinds.includes(r.kind as "zram" | "file"))
    .reverse();
  if (records.length === 0) {
    return [{
      id: "oom/nothing-to-revert",
      status: "ok",
      summary: "nothing to revert: no oom_mitigate change is in effect",
    }];
  }
  const findings: Finding[] = [];
  const undone: string[] = [];
  for (const record of records) {
    if (record.kind === "zram") {
      const undo = await revertZramRecord(target, store, record, {
        force: options.force ?? false,
        bootId,
        ...(options.swapoffHeadroom !== undefined
          ? { swapoffHeadroom: options.swapoffHeadroom }
          : {}),
      });
      if (undo.outcome === "refused") {
        findings.push({
          id: "zram/swapoff-risk",
          status: "warning",
          summary: undo.text,
          fix:
            "wait for the builds to finish (or stop some), then --revert again; --force swaps off anyway",
        });
      } else if (undo.outcome === "not-ours") {
        findings.push({
          id: "oom/revert-conflict",
          status: "warning",
          summary: undo.text,
          fix: `close the record by hand if that is expected: rm ${store.recordPath(record.id)}`,
        });
      } else {
        undone.push(undo.text);
      }
    } else if (record.kind === "file") {
      const detail = record.detail as FileRecordDetail;
      const outcome = await revertFileRecord(store, record);
      if (outcome === "conflict") {
        findings.push({
          id: "oom/revert-conflict",
          status: "warning",
          summary: `${detail.path} changed since oom_mitigate edited it: not restored`,
          detail: detail.before
            ? `the original is in ${detail.before.backup}`
            : "oom_mitigate created the file",
          fix: detail.before
            ? `compare, then restore by hand: diff ${detail.before.backup} ${detail.path}`
            : `remove the lines it added (marked '${NIX_CONF_MARKER}')`,
        });
      } else {
        undone.push(
          outcome === "restored"
            ? `${detail.path}: restored from ${
              detail.before?.backup ?? "(removed: it did not exist)"
            }`
            : `${detail.path}: already as before (record closed)`,
        );
      }
    }
  }
  if (undone.length > 0) {
    findings.unshift({
      id: "oom/reverted",
      status: "ok",
      summary: `reverted ${undone.length} change${undone.length === 1 ? "" : "s"}`,
      detail: undone.join("\n"),
      data: undone,
    });
  }
  return findings;
}

/** Whether a zram record's device is up as our swap (same boot, swapped on, our label). */
async function finishedZram(
  target: Target,
  record: ChangeRecord,
  bootId: string | undefined,
): Promise<boolean> {
  const device = record.detail.device;
  if (typeof device !== "string") return false;
  if (record.bootId !== undefined && bootId !== undefined && record.bootId !== bootId) return false;
  const state = await readZramState(target);
  if (!state.swaps.some((s) => s.path === `/dev/${device}`)) return false;
  return (await readSwapLabel(target, device)) === record.detail.label;
}

/**
 * Settles records a killed run left `applying` (call it holding the lock): a nix.conf edit that
 * landed becomes `applied`, one that did not is dropped; a zram swap that is up becomes `applied`, a
 * half-made zram device is removed. Returns an `oom/repaired` finding when it did anything.
 *
 * @example Nothing to settle in an empty state directory
 * ```ts
 * import { repairIncomplete } from "./oom_mitigate.ts";
 * import { localFileOps, StateStore } from "./atomic_file.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const store = await StateStore.open(localFileOps(), dir);
 * assert.deepEqual(await repairIncomplete(new LocalTarget(), store), []);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function repairIncomplete(target: Target, store: StateStore): Promise<Finding[]> {
  const pending = await store.list({ tool: OOM_TOOL, status: ["applying"] });
  if (pending.length === 0) return [];
  const done: string[] = [];
  const findings: Finding[] = [];
  const bootId = await readBootId(target);
  for (const record of pending) {
    if (record.kind === "file") {
      const state = await reconcileFileRecord(store, record);
      const path = String(record.detail.path);
      if (state === "changed") {
        findings.push({
          id: "oom/revert-conflict",
          status: "warning",
          summary: `${path} holds neither the old nor the new content of record ${record.id}`,
          fix: `compare with the backup in ${store.backupDir(record.id)}`,
        });
      } else {
        done.push(
          `${path}: the interrupted edit ${state === "after" ? "had landed" : "had not landed"}`,
        );
      }
    } else if (record.kind === "zram") {
      if (await finishedZram(target, record, bootId)) {
        record.status = "applied";
        await store.save(record);
        done.push(
          `zram swap /dev/${String(record.detail.device)}: it was up, only the record lagged`,
        );
        continue;
      }
      const undo = await revertZramRecord(target, store, record, { force: false, bootId });
      if (
        undo.outcome === "removed" || undo.outcome === "gone" || undo.outcome === "unknown-device"
      ) {
        if (record.status === "reverted") record.status = "abandoned";
        await store.save(record);
        done.push(`half-made zram swap: ${undo.text}`);
      } else {
        findings.push({
          id: "oom/revert-conflict",
          status: "warning",
          summary: undo.text,
          fix: "see runbook/oom_mitigate.md#undoing-it",
        });
      }
    }
  }
  if (done.length > 0) {
    findings.unshift({
      id: "oom/repaired",
      status: "ok",
      summary: `settled ${done.length} change${
        done.length === 1 ? "" : "s"
      } a killed run left half-done`,
      detail: done.join("\n"),
    });
  }
  return findings;
}

/**
 * `persistent`: the NixOS snippet for the builder and the controller's machines lines with fewer
 * jobs, ready to paste. Pure.
 *
 * @example
 * ```ts
 * import { persistentFinding } from "./oom_mitigate.ts";
 * import assert from "node:assert/strict";
 *
 * const finding = persistentFinding({ maxJobs: 1, cores: 2 }, { memoryPercent: 50, priority: 100 }, []);
 * assert.match(finding.detail ?? "", /zramSwap = \{ enable = true; memoryPercent = 50; \};/);
 * ```
 */
export function persistentFinding(
  serialize: SerializeSettings,
  zram: ZramSettings,
  machines: readonly MachineLine[],
): Finding {
  const nixos = [
    "# on the builder, in configuration.nix (NixOS), then nixos-rebuild switch:",
    `zramSwap = { enable = true; memoryPercent = ${zram.memoryPercent}; };`,
    nixSettingsSnippet(serialize),
  ];
  const controller = machines.length === 0
    ? [
      "# on the controller: lower column #3 (max jobs) of this builder's line in /etc/nix/machines",
      "# (or nix.buildMachines.*.maxJobs); pass --machines FILE to get the line rewritten here",
    ]
    : [
      "# on the controller, in /etc/nix/machines (or nix.buildMachines.*.maxJobs):",
      ...machines.flatMap((m) => [
        `# was (${m.input}:${m.line}): ${m.text}`,
        machineLineWithMaxJobs(m, serialize.maxJobs),
      ]),
    ];
  return {
    id: "oom/persistent",
    status: "ok",
    summary: "persistent mitigation: NixOS zramSwap and nix.settings, and the machines line",
    detail: [...nixos, ...controller].join("\n"),
    data: {
      nixos: nixos.slice(1),
      machines: machines.map((m) => machineLineWithMaxJobs(m, serialize.maxJobs)),
    },
  };
}
