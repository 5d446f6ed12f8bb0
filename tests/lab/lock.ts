/**
 * A machine-wide lock for tests that change global state (binfmt_misc entries, zram, swap), so
 * parallel test runs (several `deno test` processes, several checkouts) do not trip over each
 * other.
 *
 * The lock is util-linux `flock` on `/tmp/nbr-lab/locks/<name>.lock`, held by a small child process
 * for as long as the callback runs: when this process dies, the child sees its stdin close and the
 * kernel releases the lock, so a crashed run never leaves it held. Within one process the lock is
 * re-entrant along the async call chain that took it.
 *
 * @example Change binfmt_misc without racing another run
 * ```ts ignore
 * import { withGlobalLock } from "./lock.ts";
 *
 * await withGlobalLock("binfmt", async () => {
 *   // register, use and remove a binfmt_misc entry here
 * });
 * ```
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { killTree, LabError } from "./_run.ts";

/** Where the lock files live. */
export const LOCK_DIR = "/tmp/nbr-lab/locks";

/** Options for {@link withGlobalLock}. */
export interface GlobalLockOptions {
  /** How long to wait for the lock in milliseconds before giving up (default 300 000). */
  timeoutMs?: number;
}

const held = new AsyncLocalStorage<ReadonlySet<string>>();
const queues = new Map<string, Promise<void>>();

/**
 * Runs `fn` while holding the machine-wide lock `name` (letters, digits, `-`, `_`, `.`).
 *
 * Waits for other holders (other processes, or other async tasks of this one); throws when the
 * lock is not free within `timeoutMs`. Nested calls for the same name in the same async chain
 * run at once instead of dead-locking.
 */
export async function withGlobalLock<T>(
  name: string,
  fn: () => Promise<T> | T,
  options: GlobalLockOptions = {},
): Promise<T> {
  if (!/^[A-Za-z0-9._-]+$/.test(name) || name.startsWith(".")) {
    throw new LabError(`Cannot take lock '${name}': use letters, digits, '-', '_' and '.' only`);
  }
  const mine = held.getStore() ?? new Set<string>();
  if (mine.has(name)) return await fn();
  const timeoutMs = options.timeoutMs ?? 300_000;
  // Serialise holders inside this process first (flock would let one process's holders block
  // each other anyway, but a queue keeps the wait fair and the time-out meaningful).
  const previous = queues.get(name) ?? Promise.resolve();
  let release!: () => void;
  const current = new Promise<void>((resolve) => (release = resolve));
  const chained = previous.then(() => current);
  queues.set(name, chained);
  const started = Date.now();
  try {
    await withDeadline(previous, timeoutMs, name);
    // The message names the caller's time-out, not what was left of it after the queue.
    const holder = await acquire(name, Math.max(1, timeoutMs - (Date.now() - started)), timeoutMs);
    try {
      return await held.run(new Set([...mine, name]), fn);
    } finally {
      await holder.release();
    }
  } finally {
    release();
    if (queues.get(name) === chained) queues.delete(name);
  }
}

/** The path of the lock file for `name`. */
export function lockPath(name: string): string {
  return `${LOCK_DIR}/${name}.lock`;
}

async function withDeadline(promise: Promise<void>, ms: number, name: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new LabError(`Cannot take lock '${name}': still held after ${ms} ms`)),
      ms,
    );
  });
  try {
    await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface Holder {
  release(): Promise<void>;
}

async function acquire(name: string, timeoutMs: number, reportedMs: number): Promise<Holder> {
  await Deno.mkdir(LOCK_DIR, { recursive: true, mode: 0o1777 });
  const seconds = Math.max(1, Math.ceil(timeoutMs / 1000));
  // flock takes the lock, then runs a shell that says so and waits for stdin to close.
  const child = new Deno.Command("flock", {
    args: [
      "--exclusive",
      "--wait",
      String(seconds),
      lockPath(name),
      "sh",
      "-c",
      "echo locked; exec cat >/dev/null",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  const first = await reader.read();
  const text = first.value ? new TextDecoder().decode(first.value) : "";
  if (!text.startsWith("locked")) {
    const status = await child.status;
    const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer()).trim();
    const why = status.code === 1 && err === ""
      ? `still held after ${reportedMs} ms`
      : err || `flock exited with ${status.code}`;
    throw new LabError(`Cannot take lock '${name}': ${why}`);
  }
  reader.releaseLock();
  const stdin = child.stdin;
  return {
    async release() {
      try {
        await stdin.close();
      } catch {
        killTree(child.pid, "SIGKILL");
      }
      const timer = setTimeout(() => killTree(child.pid, "SIGKILL"), 5000);
      await child.status;
      clearTimeout(timer);
      await child.stdout.cancel().catch(() => {});
      await child.stderr.cancel().catch(() => {});
    },
  };
}
