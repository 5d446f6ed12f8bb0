/**
 * What a running lab records under `/tmp/nbr-lab/<id>/state.json`, and the clean-up that reads it
 * after a crash (`deno task lab -- down`). Private to `tests/lab/`.
 *
 * @module
 */

import { isAlive, killTree, run, sleep } from "./_run.ts";

/** Where every lab keeps its files. */
export const LAB_ROOT = "/tmp/nbr-lab";

/** One lab's record. */
export interface LabState {
  /** The lab's id (its directory name). */
  id: string;
  /** The Deno process that owns the lab. */
  ownerPid: number;
  /** The owner's start time (field 22 of `/proc/<pid>/stat`), so a reused pid is not mistaken. */
  ownerStart: string;
  /** Host pids of the namespace holders (killing one tears its namespace down). */
  holderPids: number[];
  /** Machine-global binfmt_misc entries this lab registered (global emulation mode only). */
  globalBinfmt: string[];
  /** When the lab started (ISO 8601). */
  startedAt: string;
}

/** The start time of process `pid`, or `""` when it does not exist. */
export function processStart(pid: number): string {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
  } catch {
    return "";
  }
}

/** Writes a lab's state file (atomically). */
export function writeState(dir: string, state: LabState): Promise<void> {
  // Writes are chained so parallel callers never race on the temp file.
  const text = JSON.stringify(state, null, 2) + "\n";
  const previous = writes.get(dir) ?? Promise.resolve();
  const next = previous.catch(() => {}).then(async () => {
    const tmp = `${dir}/state.json.${crypto.randomUUID().slice(0, 8)}.tmp`;
    await Deno.writeTextFile(tmp, text);
    await Deno.rename(tmp, `${dir}/state.json`);
  });
  writes.set(dir, next);
  return next.finally(() => {
    if (writes.get(dir) === next) writes.delete(dir);
  });
}

const writes = new Map<string, Promise<void>>();

/** Reads a lab's state file; `null` when missing or unreadable. */
export async function readState(dir: string): Promise<LabState | null> {
  try {
    return JSON.parse(await Deno.readTextFile(`${dir}/state.json`)) as LabState;
  } catch {
    return null;
  }
}

/** Whether the process that owns this lab is still running. */
export function ownerAlive(state: LabState): boolean {
  return isAlive(state.ownerPid) && processStart(state.ownerPid) === state.ownerStart;
}

/** What {@link cleanupLabs} did. */
export interface CleanupReport {
  /** Lab ids removed. */
  removed: string[];
  /** Lab ids left alone because their owner still runs. */
  skipped: string[];
  /** Problems met (one line each); clean-up goes on after each. */
  problems: string[];
}

/**
 * Tears down labs under {@link LAB_ROOT}: kills their namespace holders (which ends every process,
 * mount and namespace inside), removes global binfmt entries they registered, deletes their
 * directories. Labs whose owner still runs are skipped unless `force`.
 */
export async function cleanupLabs(options: { force?: boolean } = {}): Promise<CleanupReport> {
  const report: CleanupReport = { removed: [], skipped: [], problems: [] };
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(LAB_ROOT)];
  } catch {
    return report;
  }
  for (const entry of entries) {
    if (!entry.isDirectory || !/^lab-/.test(entry.name)) continue;
    const dir = `${LAB_ROOT}/${entry.name}`;
    const state = await readState(dir);
    if (state === null && !options.force && youngerThan(dir, 300_000)) {
      // a lab being created right now writes its state file a moment after its directory
      report.skipped.push(entry.name);
      continue;
    }
    if (state && ownerAlive(state) && !options.force) {
      report.skipped.push(entry.name);
      continue;
    }
    if (state) {
      for (const pid of state.holderPids) {
        if (isAlive(pid)) killTree(pid, "SIGKILL");
      }
      for (const name of state.globalBinfmt) {
        const problem = await removeGlobalBinfmt(name);
        if (problem) report.problems.push(problem);
      }
      const deadline = Date.now() + 3000;
      while (state.holderPids.some(isAlive) && Date.now() < deadline) await sleep(20);
    }
    try {
      await Deno.remove(dir, { recursive: true });
      report.removed.push(entry.name);
    } catch (error) {
      report.problems.push(`Cannot remove ${dir}: ${(error as Error).message}`);
    }
  }
  return report;
}

function youngerThan(path: string, ms: number): boolean {
  try {
    const mtime = Deno.statSync(path).mtime?.getTime() ?? 0;
    return Date.now() - mtime < ms;
  } catch {
    return false;
  }
}

/**
 * Removes a machine-global binfmt_misc entry through a private mount of binfmt_misc (so the host's
 * mount table is not changed). Returns a problem line, or `null`.
 */
export async function removeGlobalBinfmt(name: string): Promise<string | null> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) return `Refusing to remove binfmt entry '${name}'`;
  const script = "{ [ -e /proc/sys/fs/binfmt_misc/register ] || " +
    "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; } && " +
    'if [ -e "/proc/sys/fs/binfmt_misc/$1" ]; then echo -1 > "/proc/sys/fs/binfmt_misc/$1"; fi';
  const result = await run(
    ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", name],
    { timeoutMs: 10_000 },
  );
  return result.code === 0
    ? null
    : `Cannot remove binfmt entry '${name}': ${result.stderr.trim() || `exit ${result.code}`}`;
}
