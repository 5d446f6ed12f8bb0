/**
 * zram devices and swap areas: parsers for `/proc/swaps` and the zram sysfs files, a read-only view
 * of a target's zram devices with who owns each, and the few privileged operations a temporary zram
 * swap needs (hot-add, configure, mkswap, swapon, swapoff, reset, hot-remove).
 *
 * Reading never touches `/sys/class/zram-control/hot_add`: reading that file creates a device.
 *
 * @module
 */

import { ParseError } from "./errors.ts";
import { describeFailure, type RunResult, type Target } from "./target.ts";

/** One line of `/proc/swaps`. */
export interface SwapArea {
  /** Device or file path (`/dev/zram0`, `/swapfile`). */
  path: string;
  /** `partition` or `file`. */
  type: string;
  /** Size in bytes. */
  sizeBytes: number;
  /** Used, in bytes. */
  usedBytes: number;
  /** Priority (higher is used first). */
  priority: number;
}

/**
 * Parses `/proc/swaps` (sizes there are KiB).
 *
 * @example
 * ```ts
 * import { parseProcSwaps } from "./zram.ts";
 * import assert from "node:assert/strict";
 *
 * const swaps = parseProcSwaps(
 *   "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/zram0                              partition\t8388604\t\t1024\t\t100\n",
 * );
 * assert.deepEqual(swaps, [{ path: "/dev/zram0", type: "partition", sizeBytes: 8388604 * 1024, usedBytes: 1024 * 1024, priority: 100 }]);
 * ```
 */
export function parseProcSwaps(text: string, input = "/proc/swaps"): SwapArea[] {
  const areas: SwapArea[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || (i === 0 && line.startsWith("Filename"))) continue;
    const match = /^(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(-?\d+)$/.exec(line);
    if (!match) {
      throw new ParseError(
        input,
        `expected 'path type size used priority', got '${line.slice(0, 80)}'`,
        {
          line: i + 1,
        },
      );
    }
    // The kernel escapes spaces in paths as \040.
    areas.push({
      path: match[1]!.replace(/\\040/g, " "),
      type: match[2]!,
      sizeBytes: Number(match[3]) * 1024,
      usedBytes: Number(match[4]) * 1024,
      priority: Number(match[5]),
    });
  }
  return areas;
}

/**
 * Parses `/sys/block/zramN/comp_algorithm`: the offered algorithms, the selected one in brackets.
 *
 * @example
 * ```ts
 * import { parseCompAlgorithm } from "./zram.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseCompAlgorithm("[lzo-rle] lzo lz4 \n"), { selected: "lzo-rle", available: ["lzo-rle", "lzo", "lz4"] });
 * ```
 */
export function parseCompAlgorithm(text: string): { selected?: string; available: string[] } {
  const available: string[] = [];
  let selected: string | undefined;
  for (const token of text.trim().split(/\s+/)) {
    if (token === "") continue;
    const bracketed = /^\[(.+)\]$/.exec(token);
    if (bracketed) selected = bracketed[1]!;
    available.push(bracketed ? bracketed[1]! : token);
  }
  return selected === undefined ? { available } : { selected, available };
}

/** `/sys/block/zramN/mm_stat`, in bytes (the first five columns, present since Linux 4.1). */
export interface ZramMmStat {
  /** Uncompressed size of the data stored. */
  origDataBytes: number;
  /** Compressed size of that data. */
  comprDataBytes: number;
  /** RAM the device uses, allocator overhead included. */
  memUsedBytes: number;
  /** `mem_limit` (0: none). */
  memLimitBytes: number;
  /** Peak `memUsedBytes`. */
  memUsedMaxBytes: number;
}

/**
 * Parses `mm_stat`.
 *
 * @example
 * ```ts
 * import { parseMmStat } from "./zram.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseMmStat("  4096   74   12288  0  12288  0  0  0  0\n").comprDataBytes, 74);
 * ```
 */
export function parseMmStat(text: string, input = "mm_stat"): ZramMmStat {
  const numbers = text.trim().split(/\s+/).map(Number);
  if (numbers.length < 5 || numbers.slice(0, 5).some((n) => !Number.isFinite(n))) {
    throw new ParseError(input, `expected at least 5 numbers, got '${text.trim().slice(0, 80)}'`);
  }
  const [orig, compr, used, limit, max] = numbers as [number, number, number, number, number];
  return {
    origDataBytes: orig,
    comprDataBytes: compr,
    memUsedBytes: used,
    memLimitBytes: limit,
    memUsedMaxBytes: max,
  };
}

/** Who a zram device belongs to, as far as the target shows. */
export type ZramOwner =
  /** Created by this toolkit (its state records name it). */
  | "ours"
  /** systemd's zram-generator set it up (NixOS `zramSwap`, Fedora's default). */
  | "zram-generator"
  /** In use (swap or initialized) by something else. */
  | "other"
  /** Present but not initialized (disksize 0): nobody uses it. */
  | "unused";

/** One zram device. */
export interface ZramDevice {
  /** `zram0`. */
  name: string;
  /** The number in the name. */
  id: number;
  /** `/dev/zram0`. */
  devPath: string;
  /** Uncompressed capacity (`disksize`); 0 when not initialized. */
  diskSizeBytes: number;
  /** Algorithms the kernel offers for it. */
  algorithms: string[];
  /** The selected algorithm. */
  algorithm?: string;
  /** Memory figures, when initialized. */
  mmStat?: ZramMmStat;
  /** Its swap area, when swapped on. */
  swap?: SwapArea;
  /** Who owns it. */
  owner: ZramOwner;
  /** Why we think so, in a few words. */
  ownerReason: string;
}

/** A target's zram state. */
export interface ZramState {
  /** Whether the kernel has zram (module loaded or built in). */
  available: boolean;
  /** Whether devices can be hot-added (`/sys/class/zram-control`, Linux 4.2+). */
  hotAdd: boolean;
  /** The devices, by number. */
  devices: ZramDevice[];
  /** Every swap area (zram or not). */
  swaps: SwapArea[];
  /**
   * Whether the target runs in the host's user namespace. `false` in a container (a user
   * namespace), where the kernel refuses `swapon` even to root; absent when it could not be told.
   */
  initialUserNamespace?: boolean;
}

/** `/proc/self/ns/user` in the initial user namespace: its inode is fixed (PROC_USER_INIT_INO). */
export const INIT_USER_NS = "user:[4026531837]";

/** Options for {@link readZramState}. */
export interface ReadZramOptions {
  /** Where sysfs is (default `/sys`): tests point it at a directory shaped like sysfs. */
  sysfsRoot?: string;
  /** Devices our state records name (`zram1`), to mark as `ours`. */
  ours?: ReadonlySet<string>;
}

async function readNumber(target: Target, path: string): Promise<number> {
  const text = await target.readFile(path);
  const n = Number((text ?? "").trim());
  return Number.isFinite(n) ? n : 0;
}

/**
 * Reads a target's zram devices and swap areas, and decides who owns each device: `ours` (named by
 * `options.ours`), `zram-generator` (a `systemd-zram-setup@zramN.service` unit was generated), `other`
 * (initialized by something else) or `unused`. Read-only.
 *
 * @example A machine without the zram module, from a snapshot
 * ```ts
 * import { readZramState } from "./zram.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [],
 *   paths: {
 *     "/sys/class/zram-control": { exists: false },
 *     "/sys/module/zram": { exists: false },
 *     "/sys/block": { exists: true, entries: ["loop0", "vda"] },
 *     "/run/systemd/generator": { exists: false },
 *   },
 *   files: { "/proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n" },
 * });
 * const state = await readZramState(target);
 * assert.equal(state.available, false);
 * assert.deepEqual(state.devices, []);
 * ```
 */
export async function readZramState(
  target: Target,
  options: ReadZramOptions = {},
): Promise<ZramState> {
  const sys = options.sysfsRoot ?? "/sys";
  const control = await target.readDir(`${sys}/class/zram-control`);
  const module = await target.readDir(`${sys}/module/zram`);
  const block = (await target.readDir(`${sys}/block`)) ?? [];
  const swapsText = await target.readFile("/proc/swaps");
  const swaps = swapsText === null ? [] : parseProcSwaps(swapsText);
  const generated = new Set(
    ((await target.readDir("/run/systemd/generator")) ?? []).map((e) => e.name),
  );
  const devices: ZramDevice[] = [];
  for (const entry of block) {
    const match = /^zram(\d+)$/.exec(entry.name);
    if (!match) continue;
    const dir = `${sys}/block/${entry.name}`;
    const diskSizeBytes = await readNumber(target, `${dir}/disksize`);
    const algo = parseCompAlgorithm((await target.readFile(`${dir}/comp_algorithm`)) ?? "");
    const devPath = `/dev/${entry.name}`;
    const device: ZramDevice = {
      name: entry.name,
      id: Number(match[1]),
      devPath,
      diskSizeBytes,
      algorithms: algo.available,
      owner: "unused",
      ownerReason: "not initialized (disksize 0)",
    };
    if (algo.selected !== undefined) device.algorithm = algo.selected;
    if (diskSizeBytes > 0) {
      const mm = await target.readFile(`${dir}/mm_stat`);
      if (mm !== null && mm.trim() !== "") device.mmStat = parseMmStat(mm, `${dir}/mm_stat`);
    }
    const swap = swaps.find((s) => s.path === devPath);
    if (swap) device.swap = swap;
    if (options.ours?.has(entry.name)) {
      device.owner = "ours";
      device.ownerReason = "created by oom_mitigate (state record)";
    } else if (generated.has(`systemd-zram-setup@${entry.name}.service`)) {
      device.owner = "zram-generator";
      device.ownerReason =
        `systemd-zram-setup@${entry.name}.service (zram-generator, NixOS zramSwap)`;
    } else if (swap) {
      device.owner = "other";
      device.ownerReason = "active swap set up by something else";
    } else if (diskSizeBytes > 0) {
      device.owner = "other";
      device.ownerReason = "initialized by something else";
    }
    devices.push(device);
  }
  devices.sort((a, b) => a.id - b.id);
  // readlink runs on the target, so this is the target's own namespace, also over ssh.
  const ns = await target.run(["readlink", "/proc/self/ns/user"]).catch(() => undefined);
  const link = ns !== undefined && ns.code === 0 && !ns.failure ? ns.stdout.trim() : "";
  return {
    available: control !== null || module !== null || devices.length > 0,
    hotAdd: control !== null,
    devices,
    swaps,
    ...(link.startsWith("user:[") ? { initialUserNamespace: link === INIT_USER_NS } : {}),
  };
}

/**
 * Picks the first of `preferred` the kernel offers; `null` when none is.
 *
 * @example
 * ```ts
 * import { chooseAlgorithm } from "./zram.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(chooseAlgorithm(["lzo-rle", "lzo", "lz4"]), "lz4");
 * assert.equal(chooseAlgorithm(["lzo"], ["zstd"]), null);
 * ```
 */
export function chooseAlgorithm(
  available: readonly string[],
  preferred: readonly string[] = ["zstd", "lz4", "lzo-rle", "lzo"],
): string | null {
  return preferred.find((alg) => available.includes(alg)) ?? null;
}

/**
 * A failed privileged zram or swap command, with the command's own last error line.
 *
 * @example
 * ```ts
 * import { ZramError } from "./zram.ts";
 * import assert from "node:assert/strict";
 *
 * const error = new ZramError("swapon /dev/zram1", ["swapon", "/dev/zram1"], {
 *   code: 255,
 *   stdout: "",
 *   stderr: "swapon: /dev/zram1: swapon failed: Device or resource busy\n",
 * });
 * assert.equal(error.message, "Cannot swapon /dev/zram1: 'swapon /dev/zram1' exited with 255: swapon: /dev/zram1: swapon failed: Device or resource busy");
 * ```
 */
export class ZramError extends Error {
  /** The command's result. */
  readonly result: RunResult;
  /** Builds the error from what failed and the command's result. */
  constructor(what: string, argv: readonly string[], result: RunResult) {
    super(`Cannot ${what}: ${describeFailure(argv, result)}`);
    this.name = "ZramError";
    this.result = result;
  }
}

async function runChecked(
  target: Target,
  what: string,
  argv: readonly string[],
  timeoutMs: number,
): Promise<RunResult> {
  const result = await target.run(argv, { timeoutMs });
  if (result.code !== 0) throw new ZramError(what, argv, result);
  return result;
}

const HOT_ADD = "n=$(cat /sys/class/zram-control/hot_add) || exit 1; " +
  'if [ -n "$1" ]; then printf "%s\\n" "$n" > "$1.tmp" && sync "$1.tmp" 2>/dev/null; ' +
  'mv -f "$1.tmp" "$1"; fi; echo "$n"';

/**
 * Hot-adds a zram device and returns its name (`zram1`). When `noteFile` is given, the same shell
 * command (run in its own session with `setsid`, so a caller killing its children cannot cut it
 * short) writes the number there before answering: a caller killed right after the kernel created
 * the device still finds out which one it was.
 *
 * @example
 * ```ts ignore
 * import { hotAddZram } from "./zram.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * const name = await hotAddZram(new LocalTarget(), { noteFile: "/var/lib/x/hot-add" }); // "zram1"
 * ```
 */
export async function hotAddZram(
  target: Target,
  options: { noteFile?: string; timeoutMs?: number } = {},
): Promise<string> {
  const argv = ["sh", "-c", HOT_ADD, "sh", options.noteFile ?? ""];
  // In a session of its own, a caller killing its children (SIGTERM, Ctrl-C) cannot stop the shell
  // between the kernel's answer and the note.
  let result = await target.run(["setsid", "--wait", ...argv], {
    timeoutMs: options.timeoutMs ?? 10_000,
  });
  if (result.failure === "not-found" || result.code === 127) {
    result = await target.run(argv, { timeoutMs: options.timeoutMs ?? 10_000 });
  }
  if (result.code !== 0) throw new ZramError("hot-add a zram device", argv, result);
  const id = result.stdout.trim();
  if (!/^\d+$/.test(id)) {
    throw new Error(`Cannot hot-add a zram device: hot_add answered '${id.slice(0, 40)}'`);
  }
  return `zram${id}`;
}

const WRITE_SYSFS = 'printf "%s" "$2" > "$1"';

function sysfsArgv(path: string, value: string): string[] {
  return ["sh", "-c", WRITE_SYSFS, "sh", path, value];
}

/**
 * Sets a fresh device's algorithm, then its size (the kernel wants them in that order).
 *
 * @example
 * ```ts ignore
 * import { configureZram } from "./zram.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * await configureZram(new LocalTarget(), "zram1", { algorithm: "lz4", sizeBytes: 2 * 1024 ** 3 });
 * ```
 */
export async function configureZram(
  target: Target,
  name: string,
  options: { algorithm: string; sizeBytes: number; timeoutMs?: number },
): Promise<void> {
  const dir = `/sys/block/${checkZramName(name)}`;
  const timeoutMs = options.timeoutMs ?? 10_000;
  await runChecked(
    target,
    `set ${name}'s algorithm to ${options.algorithm}`,
    sysfsArgv(`${dir}/comp_algorithm`, options.algorithm),
    timeoutMs,
  );
  await runChecked(
    target,
    `set ${name}'s size`,
    sysfsArgv(`${dir}/disksize`, String(options.sizeBytes)),
    timeoutMs,
  );
}

/**
 * `mkswap -L LABEL` then `swapon --priority P` on a configured device.
 *
 * @example
 * ```ts ignore
 * import { swapOnZram } from "./zram.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * await swapOnZram(new LocalTarget(), "zram1", { label: "nbr-oom-1a2b3c4d", priority: 100 });
 * ```
 */
export async function swapOnZram(
  target: Target,
  name: string,
  options: { label: string; priority: number; timeoutMs?: number },
): Promise<void> {
  const dev = `/dev/${checkZramName(name)}`;
  const timeoutMs = options.timeoutMs ?? 30_000;
  await runChecked(target, `mkswap ${dev}`, ["mkswap", "-L", options.label, dev], timeoutMs);
  await runChecked(
    target,
    `swapon ${dev}`,
    ["swapon", "--priority", String(options.priority), dev],
    timeoutMs,
  );
}

/**
 * The swap label on a device (`swaplabel`), `null` when it has no swap signature or no label.
 *
 * @example
 * ```ts ignore
 * import { readSwapLabel } from "./zram.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * await readSwapLabel(new LocalTarget(), "zram1"); // "nbr-oom-1a2b3c4d"
 * ```
 */
export async function readSwapLabel(
  target: Target,
  name: string,
  timeoutMs = 10_000,
): Promise<string | null> {
  const result = await target.run(["swaplabel", `/dev/${checkZramName(name)}`], { timeoutMs });
  if (result.code !== 0) return null;
  const label = /^LABEL:\s*(.*)$/m.exec(result.stdout)?.[1]?.trim();
  return label ? label : null;
}

/**
 * Undoes a device: `swapoff` when it is swap, `reset` when initialized, then hot-removes it when it
 * still exists. Each step is skipped when already done, so it can run again after a crash.
 *
 * @example
 * ```ts ignore
 * import { removeZram } from "./zram.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * await removeZram(new LocalTarget(), "zram1");
 * ```
 */
export async function removeZram(
  target: Target,
  name: string,
  options: { timeoutMs?: number; swapoffTimeoutMs?: number } = {},
): Promise<string[]> {
  const done: string[] = [];
  const clean = checkZramName(name);
  const dev = `/dev/${clean}`;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const swaps = parseProcSwaps((await target.readFile("/proc/swaps")) ?? "");
  if (swaps.some((s) => s.path === dev)) {
    // swapoff pulls every page back into RAM: it can take long.
    await runChecked(
      target,
      `swapoff ${dev}`,
      ["swapoff", dev],
      options.swapoffTimeoutMs ?? 600_000,
    );
    done.push(`swapoff ${dev}`);
  }
  const dir = `/sys/block/${clean}`;
  if ((await target.stat(dir)) !== null && (await readNumber(target, `${dir}/disksize`)) > 0) {
    await runChecked(target, `reset ${dev}`, sysfsArgv(`${dir}/reset`, "1"), timeoutMs);
    done.push(`reset ${dev}`);
  }
  if ((await target.stat(dir)) !== null) {
    const id = clean.slice(4);
    await runChecked(
      target,
      `hot-remove ${dev}`,
      sysfsArgv("/sys/class/zram-control/hot_remove", id),
      timeoutMs,
    );
    done.push(`hot-remove ${dev}`);
  }
  return done;
}

/**
 * Validates a zram device name (`zram0`..), so it can go into a path.
 *
 * @example
 * ```ts
 * import { checkZramName } from "./zram.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(checkZramName("zram3"), "zram3");
 * assert.throws(() => checkZramName("../sda"), /not a zram device/);
 * ```
 */
export function checkZramName(name: string): string {
  if (!/^zram\d{1,4}$/.test(name)) {
    throw new Error(`'${name.slice(0, 40)}' is not a zram device name`);
  }
  return name;
}

/** A memory cgroup holding swapped pages, as {@link parseCgroupSwap} reads it. */
export interface CgroupSwap {
  /** `v2` (`memory.swap.current`) or `v1` (`total_swap` of `memory.stat`). */
  version: "v1" | "v2";
  /** Its directory under `/sys/fs/cgroup`. */
  path: string;
  /** Pages of it (and its children) in swap, in bytes. */
  swapBytes: number;
  /** Its memory limit in bytes; `null` when unlimited. */
  limitBytes: number | null;
  /** Its memory in use now, in bytes. */
  usageBytes: number;
}

// cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number.
const V1_UNLIMITED = 2 ** 62;

/**
 * Parses the lines of {@link CGROUP_SWAP_SCRIPT}: `VERSION<TAB>swap<TAB>limit<TAB>usage<TAB>path`.
 * Lines that are not whole numbers where numbers belong are skipped (a cgroup removed while it was
 * read).
 *
 * @example
 * ```ts
 * import { parseCgroupSwap } from "./zram.ts";
 * import assert from "node:assert/strict";
 *
 * const [build] = parseCgroupSwap(
 *   "v2\t209715200\t104857600\t104857600\t/sys/fs/cgroup/system.slice/nix-daemon.service\n" +
 *     "v1\t4096\t9223372036854771712\t8192\t/sys/fs/cgroup/memory/user.slice\n",
 * );
 * assert.equal(build?.limitBytes, 100 * 1024 * 1024);
 * assert.equal(parseCgroupSwap("v1\t4096\t9223372036854771712\t8192\t/x\n")[0]?.limitBytes, null);
 * ```
 */
export function parseCgroupSwap(text: string): CgroupSwap[] {
  const out: CgroupSwap[] = [];
  for (const line of text.split("\n")) {
    const [version, swap, limit, usage, ...path] = line.split("\t");
    if ((version !== "v1" && version !== "v2") || path.length === 0) continue;
    if (![swap, usage].every((n) => /^\d+$/.test(n ?? ""))) continue;
    if (limit !== "max" && !/^\d+$/.test(limit ?? "")) continue;
    const limitBytes = limit === "max" || Number(limit) >= V1_UNLIMITED ? null : Number(limit);
    out.push({
      version,
      path: path.join("\t"),
      swapBytes: Number(swap),
      limitBytes,
      usageBytes: Number(usage),
    });
  }
  return out;
}

/**
 * Lists the memory cgroups holding swapped pages (read-only). v2 counts `memory.swap.current`
 * against `memory.max`; v1 counts `total_swap` (its subtree) against `memory.limit_in_bytes`.
 */
export const CGROUP_SWAP_SCRIPT: string = [
  "find /sys/fs/cgroup -mindepth 2 \\( -name memory.swap.current -o -name memory.limit_in_bytes \\) " +
  "2>/dev/null | while IFS= read -r f; do",
  '  d=${f%/*}; s=""',
  "  case $f in",
  '    */memory.swap.current) s=$(cat "$f" 2>/dev/null); l=$(cat "$d/memory.max" 2>/dev/null);',
  '      u=$(cat "$d/memory.current" 2>/dev/null); v=v2 ;;',
  '    *) s=$(sed -n \'s/^total_swap //p\' "$d/memory.stat" 2>/dev/null); l=$(cat "$f" 2>/dev/null);',
  '      u=$(cat "$d/memory.usage_in_bytes" 2>/dev/null); v=v1 ;;',
  "  esac",
  '  [ "${s:-0}" -gt 0 ] 2>/dev/null || continue',
  '  printf "%s\\t%s\\t%s\\t%s\\t%s\\n" "$v" "$s" "$l" "$u" "$d"',
  "done",
].join("\n");

/**
 * The memory cgroups on `target` holding swapped pages (empty when none, or when it cannot tell).
 *
 * @example
 * ```ts
 * import { readCgroupSwap } from "./zram.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(Array.isArray(await readCgroupSwap(new LocalTarget())));
 * ```
 */
export async function readCgroupSwap(target: Target): Promise<CgroupSwap[]> {
  const result = await target.run(["sh", "-c", CGROUP_SWAP_SCRIPT], { timeoutMs: 15_000 })
    .catch(() => undefined);
  if (result === undefined || result.failure || result.code !== 0) return [];
  return parseCgroupSwap(result.stdout);
}
