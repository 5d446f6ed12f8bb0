/**
 * The target for this machine.
 *
 * @module
 */

import { runProcess, streamProcess } from "./_process.ts";
import type { DirEntry, FileInfo, RunOptions, RunResult, StreamedRun, Target } from "./target.ts";
import { TargetError } from "./target.ts";

/** Options shared by every target constructor. */
export interface TargetOptions {
  /** Default time-out of each command, in milliseconds (default 30 s). */
  timeoutMs?: number;
  /** Absolute deadline (ms since the epoch) no command may run past. */
  deadline?: number;
}

/**
 * Picks a command's time-out: its own, else the target's default, capped by the deadline.
 *
 * @example
 * ```ts
 * import { effectiveTimeout } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(effectiveTimeout({ timeoutMs: 500 }, { timeoutMs: 30000 }), 500);
 * ```
 */
export function effectiveTimeout(run: RunOptions, target: TargetOptions): number {
  let timeout = run.timeoutMs ?? target.timeoutMs ?? 30_000;
  if (target.deadline !== undefined) timeout = Math.min(timeout, target.deadline - Date.now());
  return Math.max(1, timeout);
}

function errorReason(error: unknown): string {
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "is a directory";
  if (error instanceof Deno.errors.NotADirectory) return "not a directory";
  return error instanceof Error ? error.message : String(error);
}

/**
 * Runs checks on this machine.
 *
 * @example
 * ```ts
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new LocalTarget();
 * assert.equal((await target.run(["true"])).code, 0);
 * assert.equal((await target.stat("/"))?.type, "directory");
 * ```
 */
export class LocalTarget implements Target {
  /** Always `local`. */
  readonly kind = "local" as const;
  /** Always `localhost`. */
  readonly host = "localhost";
  #options: TargetOptions;

  /** Creates the target. */
  constructor(options: TargetOptions = {}) {
    this.#options = options;
  }

  /** Runs a program here, without a shell. */
  run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return runProcess(argv, { ...options, timeoutMs: effectiveTimeout(options, this.#options) });
  }

  /** Streams a program's output. */
  stream(argv: readonly string[], options: RunOptions = {}): StreamedRun {
    return streamProcess(argv, { ...options, timeoutMs: effectiveTimeout(options, this.#options) });
  }

  /** Reads a text file; `null` when absent. */
  async readFile(path: string): Promise<string | null> {
    try {
      // A device is no file to read whole (/dev/zero fills memory); a FIFO is (`<(dmesg)`,
      // `--kernel-log /dev/stdin`), but may never get a writer: it gets the command time-out.
      const info = await Deno.stat(path);
      const device = (info.isCharDevice || info.isBlockDevice) && path !== "/dev/null";
      if (device || info.isSocket) throw new Error("not a regular file (a device or socket)");
      const timeoutMs = effectiveTimeout({}, this.#options);
      return await Deno.readTextFile(path, { signal: AbortSignal.timeout(timeoutMs) });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      if (error instanceof DOMException && error.name === "TimeoutError") {
        throw new TargetError(this.host, path, "timed out (a FIFO nobody writes to?)", "timeout");
      }
      throw new TargetError(this.host, path, errorReason(error));
    }
  }

  /** Lists a directory; `null` when absent. */
  async readDir(path: string): Promise<DirEntry[] | null> {
    try {
      const entries: DirEntry[] = [];
      for await (const entry of Deno.readDir(path)) entries.push({ name: entry.name });
      return entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw new TargetError(this.host, path, errorReason(error));
    }
  }

  /** Stats a path (following symlinks); `null` when absent or a dangling link. */
  async stat(path: string): Promise<FileInfo | null> {
    try {
      const link = await Deno.lstat(path);
      const info = await Deno.stat(path);
      return {
        type: info.isFile ? "file" : info.isDirectory ? "directory" : "other",
        size: info.size,
        mtime: Math.floor((info.mtime?.getTime() ?? 0) / 1000),
        mode: (info.mode ?? 0) & 0o7777,
        uid: info.uid ?? -1,
        isSymlink: link.isSymlink,
      };
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw new TargetError(this.host, path, errorReason(error));
    }
  }

  /** Nothing to close locally. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
