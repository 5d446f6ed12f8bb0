/**
 * Safe changes for every `--apply`/`--revert` script: file operations on a target ({@link FileOps},
 * this machine or a builder over ssh), atomic replace (temporary file in the same directory, fsync,
 * rename, fsync of the directory), a state directory of change records with backups, and a lock so
 * two applies never overlap.
 *
 * The contract every change follows:
 *
 * 1. take the state directory's lock ({@link StateStore.withLock});
 * 2. write a backup and a record with status `applying` ({@link StateStore.save});
 * 3. make the change atomically ({@link FileOps.writeAtomic});
 * 4. mark the record `applied`.
 *
 * A run killed anywhere leaves the old or the new file; the record says which change was in
 * flight, and {@link fileChangeState} tells which of the two the file holds, so the next run can
 * finish or forget it ({@link reconcileFileRecord}). {@link revertFileRecord} puts the backup back
 * byte for byte, and refuses when someone changed the file since.
 *
 * @example Change a file, then undo it
 * ```ts
 * import { applyFileRecord, fileOpsFor, revertFileRecord, StateStore } from "./atomic_file.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/app.conf`, "a = 1\n");
 * const store = await StateStore.open(fileOpsFor(new LocalTarget()), `${dir}/state`);
 * const record = await store.withLock(() =>
 *   applyFileRecord(store, { tool: "demo", path: `${dir}/app.conf`, content: "a = 2\n" })
 * );
 * assert.equal(await Deno.readTextFile(`${dir}/app.conf`), "a = 2\n");
 * assert.equal(await store.withLock(() => revertFileRecord(store, record!)), "restored");
 * assert.equal(await Deno.readTextFile(`${dir}/app.conf`), "a = 1\n");
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */

import { z } from "zod";
import { ParseError, parseJsonText, UsageError } from "./errors.ts";
import { describeFailure, type RunResult, type Target } from "./target.ts";

/** What {@link FileOps.lstat} tells about a path (the path itself, symlinks not followed). */
export interface PathInfo {
  /** What the path is. */
  type: "file" | "directory" | "symlink" | "other";
  /** Permission bits (`0o644`). */
  mode: number;
  /** Owner uid. */
  uid: number;
  /** Group gid. */
  gid: number;
  /** Size in bytes. */
  size: number;
  /** Where a symlink points (as stored), for `symlink`. */
  linkTarget?: string;
}

/** Options for {@link FileOps.writeAtomic}. */
export interface WriteOptions {
  /** Permission bits of the new file (default: the old file's, else `0o644`). */
  mode?: number;
  /** Owner (default: the old file's, else the writer's). */
  uid?: number;
  /** Group (default: the old file's, else the writer's). */
  gid?: number;
}

/** A held lock. */
export interface FileLock {
  /** Releases it (safe to call twice). */
  release(): Promise<void>;
}

/** File operations on one machine. */
export interface FileOps {
  /** The machine, for messages. */
  readonly host: string;
  /** The file's bytes; `null` when it does not exist. */
  read(path: string): Promise<Uint8Array | null>;
  /** What the path is (not following a final symlink); `null` when absent. */
  lstat(path: string): Promise<PathInfo | null>;
  /** The path with every symlink resolved; `null` when it does not exist. */
  realpath(path: string): Promise<string | null>;
  /** A directory's entry names, sorted; `null` when it does not exist. */
  list(path: string): Promise<string[] | null>;
  /** Creates a directory and its parents (the last one with `mode`). */
  mkdirp(path: string, mode?: number): Promise<void>;
  /**
   * Replaces (or creates) a file atomically: a temporary file in the same directory, written and
   * fsync'ed, given the mode and owner, renamed over the path, then the directory fsync'ed. Readers
   * see the old or the new content, never a mix; a crash leaves at most a stray temporary file
   * (see {@link cleanTempFiles}).
   */
  writeAtomic(path: string, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /** Removes a file (absent is fine), then fsyncs its directory. */
  remove(path: string): Promise<void>;
  /**
   * Takes an exclusive lock on `path` (created if needed), waiting up to `timeoutMs`. The lock dies
   * with the process holding it. Throws {@link LockBusyError} when it stays taken. `owner` is written
   * into the lock file for the next one who waits.
   */
  lock(path: string, options: { timeoutMs: number; owner: string }): Promise<FileLock>;
}

/**
 * Another run holds the lock; the message names it from the lock file.
 *
 * @example
 * ```ts
 * import { LockBusyError } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * const error = new LockBusyError("builder1", "/var/lib/nix-builder-runbook/lock", "oom_mitigate --apply, pid 42", 10_000);
 * assert.equal(error.message, "builder1: /var/lib/nix-builder-runbook/lock is locked by another run (oom_mitigate --apply, pid 42); waited 10 s");
 * ```
 */
export class LockBusyError extends Error {
  /** Builds the error from the lock path and what its file says about the holder. */
  constructor(host: string, path: string, holder: string, waitedMs: number) {
    super(
      `${host}: ${path} is locked by another run${holder ? ` (${holder})` : ""}; waited ${
        Math.round(waitedMs / 1000)
      } s`,
    );
    this.name = "LockBusyError";
  }
}

/** Where `--apply` scripts keep their records, backups and lock unless `--state-dir` says otherwise. */
export const DEFAULT_STATE_DIR = "/var/lib/nix-builder-runbook";

/** The name prefix of temporary files: `.<name>.nbr-tmp-`. */
export const TEMP_MARK = ".nbr-tmp-";

function splitPath(path: string): { dir: string; base: string } {
  const at = path.lastIndexOf("/");
  if (at < 0) return { dir: ".", base: path };
  return { dir: at === 0 ? "/" : path.slice(0, at), base: path.slice(at + 1) };
}

function localReason(error: unknown): string {
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  return error instanceof Error ? error.message : String(error);
}

/** File operations on this machine, through Deno's APIs. */
class LocalFileOps implements FileOps {
  readonly host = "localhost";

  async read(path: string): Promise<Uint8Array | null> {
    try {
      return await Deno.readFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw new Error(`Cannot read ${path}: ${localReason(error)}`);
    }
  }

  async lstat(path: string): Promise<PathInfo | null> {
    try {
      const info = await Deno.lstat(path);
      const result: PathInfo = {
        type: info.isSymlink
          ? "symlink"
          : info.isFile
          ? "file"
          : info.isDirectory
          ? "directory"
          : "other",
        mode: (info.mode ?? 0) & 0o7777,
        uid: info.uid ?? -1,
        gid: info.gid ?? -1,
        size: info.size,
      };
      if (info.isSymlink) result.linkTarget = await Deno.readLink(path);
      return result;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw new Error(`Cannot stat ${path}: ${localReason(error)}`);
    }
  }

  async realpath(path: string): Promise<string | null> {
    try {
      return await Deno.realPath(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw new Error(`Cannot resolve ${path}: ${localReason(error)}`);
    }
  }

  async list(path: string): Promise<string[] | null> {
    try {
      const names: string[] = [];
      for await (const entry of Deno.readDir(path)) names.push(entry.name);
      return names.sort();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null;
      throw new Error(`Cannot list ${path}: ${localReason(error)}`);
    }
  }

  async mkdirp(path: string, mode = 0o755): Promise<void> {
    await Deno.mkdir(path, { recursive: true, mode });
  }

  async writeAtomic(path: string, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    const { dir, base } = splitPath(path);
    const old = await this.lstat(path);
    const tmp = await Deno.makeTempFile({ dir, prefix: `.${base}${TEMP_MARK}` });
    try {
      const file = await Deno.open(tmp, { write: true, truncate: true });
      try {
        let written = 0;
        while (written < data.length) written += await file.write(data.subarray(written));
        await file.sync();
      } finally {
        file.close();
      }
      await Deno.chmod(tmp, options.mode ?? (old?.type === "file" ? old.mode : 0o644));
      const uid = options.uid ?? (old?.type === "file" ? old.uid : undefined);
      const gid = options.gid ?? (old?.type === "file" ? old.gid : undefined);
      if (uid !== undefined && gid !== undefined && (uid !== Deno.uid() || gid !== Deno.gid())) {
        await Deno.chown(tmp, uid, gid);
      }
      await Deno.rename(tmp, path);
    } catch (error) {
      await Deno.remove(tmp).catch(() => {});
      throw new Error(`Cannot replace ${path}: ${localReason(error)}`);
    }
    await syncDir(dir);
  }

  async remove(path: string): Promise<void> {
    try {
      await Deno.remove(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      throw new Error(`Cannot remove ${path}: ${localReason(error)}`);
    }
    await syncDir(splitPath(path).dir);
  }

  async lock(path: string, options: { timeoutMs: number; owner: string }): Promise<FileLock> {
    const started = Date.now();
    const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
    try {
      while (!(await file.tryLock(true))) {
        if (Date.now() - started >= options.timeoutMs) {
          const holder = new TextDecoder().decode(await Deno.readFile(path)).trim();
          throw new LockBusyError(this.host, path, holder, Date.now() - started);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await file.truncate(0);
      await file.write(new TextEncoder().encode(options.owner + "\n"));
    } catch (error) {
      file.close();
      throw error;
    }
    let released = false;
    return {
      release() {
        if (released) return Promise.resolve();
        released = true;
        try {
          file.close(); // closing the descriptor releases the flock
        } catch {
          // already closed
        }
        return Promise.resolve();
      },
    };
  }
}

async function syncDir(dir: string): Promise<void> {
  try {
    const handle = await Deno.open(dir, { read: true });
    try {
      await handle.sync();
    } finally {
      handle.close();
    }
  } catch {
    // Some file systems refuse fsync on directories; the rename itself is still atomic.
  }
}

const ABSENT = 44;
const SH = {
  read: '[ -e "$1" ] || [ -L "$1" ] || exit 44; base64 < "$1"',
  lstat: '[ -e "$1" ] || [ -L "$1" ] || exit 44; stat -c "%F|%a|%u|%g|%s" -- "$1" && ' +
    '{ if [ -L "$1" ]; then readlink -- "$1"; fi; }',
  realpath: '[ -e "$1" ] || exit 44; readlink -f -- "$1"',
  list: '[ -d "$1" ] || exit 44; ls -1A -- "$1"',
  mkdirp: 'mkdir -p -- "$1" && chmod "$2" -- "$1"',
  // $1 path, $2 mode, $3 uid, $4 gid (empty: keep the old file's); data on stdin.
  write: 'set -e; p=$1; d=$(dirname -- "$p"); b=$(basename -- "$p"); ' +
    't=$(mktemp "$d/.$b' + TEMP_MARK + 'XXXXXX"); trap \'rm -f -- "$t"\' EXIT; ' +
    'cat > "$t"; ' +
    'if [ -n "$2" ]; then chmod "$2" "$t"; elif [ -f "$p" ]; then chmod --reference="$p" "$t"; ' +
    'else chmod 644 "$t"; fi; ' +
    'if [ -n "$3" ]; then chown "$3:$4" "$t"; elif [ -f "$p" ]; then chown --reference="$p" "$t"; fi; ' +
    'sync -- "$t" 2>/dev/null || sync; mv -f -- "$t" "$p"; trap - EXIT; ' +
    'sync -- "$d" 2>/dev/null || sync',
  remove: 'rm -f -- "$1" && { sync -- "$(dirname -- "$1")" 2>/dev/null || sync; }',
  // Takes the lock, notes the owner, says so, then beats: when the reader is gone (the run ended
  // or died), the next echo fails and the lock is released.
  lock: 'printf "%s\\n" "$2" > "$1"; echo locked; while sleep 1; do echo . || exit 0; done',
};

/** File operations on a target through fixed POSIX shell snippets (paths go in as arguments). */
class TargetFileOps implements FileOps {
  readonly host: string;
  #target: Target;
  #timeoutMs: number;

  constructor(target: Target, timeoutMs: number) {
    this.#target = target;
    this.host = target.host;
    this.#timeoutMs = timeoutMs;
  }

  async #sh(
    what: string,
    script: string,
    args: string[],
    stdin?: Uint8Array,
  ): Promise<RunResult | null> {
    const argv = ["sh", "-c", script, "sh", ...args];
    const result = await this.#target.run(
      argv,
      stdin === undefined ? { timeoutMs: this.#timeoutMs } : { timeoutMs: this.#timeoutMs, stdin },
    );
    if (result.code === ABSENT && result.failure === undefined) return null;
    if (result.code !== 0) {
      const why = describeFailure([`${what} ${args[0] ?? ""}`], result);
      throw new Error(`${this.host}: ${why}`);
    }
    return result;
  }

  async read(path: string): Promise<Uint8Array | null> {
    const result = await this.#sh("read", SH.read, [path]);
    if (result === null) return null;
    const binary = atob(result.stdout.replace(/\s+/g, ""));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  async lstat(path: string): Promise<PathInfo | null> {
    const result = await this.#sh("stat", SH.lstat, [path]);
    if (result === null) return null;
    const [first = "", link] = result.stdout.replace(/\n$/, "").split("\n");
    const [kind = "", mode = "0", uid = "-1", gid = "-1", size = "0"] = first.split("|");
    const info: PathInfo = {
      type: kind === "symbolic link"
        ? "symlink"
        : kind.startsWith("regular")
        ? "file"
        : kind === "directory"
        ? "directory"
        : "other",
      mode: parseInt(mode, 8),
      uid: Number(uid),
      gid: Number(gid),
      size: Number(size),
    };
    if (info.type === "symlink" && link !== undefined) info.linkTarget = link;
    return info;
  }

  async realpath(path: string): Promise<string | null> {
    const result = await this.#sh("resolve", SH.realpath, [path]);
    return result === null ? null : result.stdout.replace(/\n$/, "");
  }

  async list(path: string): Promise<string[] | null> {
    const result = await this.#sh("list", SH.list, [path]);
    if (result === null) return null;
    return result.stdout.split("\n").filter((n) => n !== "").sort();
  }

  async mkdirp(path: string, mode = 0o755): Promise<void> {
    await this.#sh("mkdir", SH.mkdirp, [path, mode.toString(8)]);
  }

  async writeAtomic(path: string, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    await this.#sh("replace", SH.write, [
      path,
      options.mode === undefined ? "" : options.mode.toString(8),
      options.uid === undefined ? "" : String(options.uid),
      options.gid === undefined ? "" : String(options.gid),
    ], data);
  }

  async remove(path: string): Promise<void> {
    await this.#sh("remove", SH.remove, [path]);
  }

  async lock(path: string, options: { timeoutMs: number; owner: string }): Promise<FileLock> {
    const started = Date.now();
    const seconds = String(Math.max(1, Math.ceil(options.timeoutMs / 1000)));
    const argv = ["flock", "--exclusive", "--wait", seconds, path, "sh", "-c", SH.lock, "sh"];
    // The lock file itself carries the owner line; flock opens it before the script runs.
    const run = this.#target.stream([...argv, path, options.owner], {
      timeoutMs: 24 * 3600 * 1000,
    });
    const reader = run.stdout.getReader();
    let text = "";
    while (!text.includes("\n")) {
      const chunk = await reader.read();
      if (chunk.done) break;
      text += new TextDecoder().decode(chunk.value);
    }
    if (!text.startsWith("locked")) {
      reader.releaseLock();
      const status = await run.status;
      if (status.failure === "not-found" || status.code === 127) {
        throw new UsageError(`${this.host}: 'flock' (util-linux) is needed there to --apply`);
      }
      if (status.code === 1) {
        const holder = await this.read(path).then((b) =>
          b ? new TextDecoder().decode(b).trim() : ""
        ).catch(() => "");
        throw new LockBusyError(this.host, path, holder, Date.now() - started);
      }
      throw new Error(`${this.host}: cannot lock ${path}: ${describeFailure(argv, status)}`);
    }
    // Keep reading the heartbeat so the pipe never fills.
    const drain = (async () => {
      try {
        while (!(await reader.read()).done) { /* heartbeat */ }
      } catch {
        // stream ended
      }
    })();
    let released = false;
    return {
      async release() {
        if (released) return;
        released = true;
        run.kill();
        await run.status;
        await drain;
      },
    };
  }
}

/**
 * File operations on this machine (Deno APIs, real fsync).
 *
 * @example
 * ```ts
 * import { localFileOps } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const ops = localFileOps();
 * await ops.writeAtomic(`${dir}/f`, new TextEncoder().encode("x\n"), { mode: 0o600 });
 * assert.equal((await ops.lstat(`${dir}/f`))?.mode, 0o600);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function localFileOps(): FileOps {
  return new LocalFileOps();
}

/**
 * File operations through a target's `run` (a builder over ssh): fixed POSIX shell snippets with
 * coreutils, `flock` for the lock. Paths and data are arguments and stdin, never shell text.
 *
 * @example Same contract, through a target
 * ```ts
 * import { targetFileOps } from "./atomic_file.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const ops = targetFileOps(new LocalTarget());
 * await ops.writeAtomic(`${dir}/it's $(here)`, new Uint8Array([0, 255, 10]));
 * assert.deepEqual(await ops.read(`${dir}/it's $(here)`), new Uint8Array([0, 255, 10]));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function targetFileOps(target: Target, options: { timeoutMs?: number } = {}): FileOps {
  return new TargetFileOps(target, options.timeoutMs ?? 30_000);
}

/**
 * The file operations for a target: Deno's own for `local`, shell snippets for `ssh`. A snapshot
 * cannot be changed: {@link UsageError}.
 *
 * @example
 * ```ts
 * import { fileOpsFor } from "./atomic_file.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(fileOpsFor(new LocalTarget()).host, "localhost");
 * ```
 */
export function fileOpsFor(target: Target): FileOps {
  if (target.kind === "snapshot") {
    throw new UsageError("A snapshot cannot be changed: --apply and --revert need a live machine");
  }
  return target.kind === "local" ? localFileOps() : targetFileOps(target);
}

/**
 * Removes temporary files {@link FileOps.writeAtomic} left next to `path` when a run died mid-write.
 * Call it only while holding the state lock. Returns the names removed.
 *
 * @example
 * ```ts
 * import { cleanTempFiles, localFileOps } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/.nix.conf.nbr-tmp-abc123`, "half");
 * assert.deepEqual(await cleanTempFiles(localFileOps(), `${dir}/nix.conf`), [".nix.conf.nbr-tmp-abc123"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function cleanTempFiles(ops: FileOps, path: string): Promise<string[]> {
  const { dir, base } = splitPath(path);
  const prefix = `.${base}${TEMP_MARK}`;
  const removed: string[] = [];
  for (const name of (await ops.list(dir)) ?? []) {
    if (name.startsWith(prefix)) {
      await ops.remove(`${dir}/${name}`);
      removed.push(name);
    }
  }
  return removed;
}

/**
 * SHA-256 of bytes, as hex.
 *
 * @example
 * ```ts
 * import { sha256Hex } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   await sha256Hex(new TextEncoder().encode("abc")),
 *   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
 * );
 * ```
 */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A record's life: `applying` (in flight), `applied`, `reverted`, `abandoned` (never took effect). */
export type RecordStatus = "applying" | "applied" | "reverted" | "abandoned";

/** One recorded change. */
export interface ChangeRecord {
  /** Unique, sortable: `20261125T185254Z-file-1a2b3c`. */
  id: string;
  /** The script that made it (`oom_mitigate`). */
  tool: string;
  /** `file`, or a tool's own kind (`zram`). */
  kind: string;
  /** Where it stands. */
  status: RecordStatus;
  /** ISO 8601. */
  createdAt: string;
  /** ISO 8601, every save. */
  updatedAt: string;
  /** `/proc/sys/kernel/random/boot_id` when made (kernel objects die with a reboot). */
  bootId?: string;
  /** Kind-specific facts; for `file`, {@link FileRecordDetail}. */
  detail: Record<string, unknown>;
}

const recordSchema = z.object({
  id: z.string().regex(/^[0-9TZ]+-[a-z0-9-]+$/),
  tool: z.string(),
  kind: z.string(),
  status: z.enum(["applying", "applied", "reverted", "abandoned"]),
  createdAt: z.string(),
  updatedAt: z.string(),
  bootId: z.string().optional(),
  detail: z.record(z.string(), z.unknown()),
});

/**
 * Parses and validates one record file; {@link ParseError} names the file and the bad field.
 *
 * @example
 * ```ts
 * import { parseChangeRecord } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * assert.throws(() => parseChangeRecord('{"id": 1}', "/var/lib/x/records/a.json"), /records\/a\.json: id/);
 * ```
 */
export function parseChangeRecord(text: string, input: string): ChangeRecord {
  const value = parseJsonText(text, input);
  const parsed = recordSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ParseError(input, `${issue.path.join(".") || "top level"}: ${issue.message}`);
  }
  return parsed.data as ChangeRecord;
}

/**
 * A state directory: `records/<id>.json`, `backups/<id>/...`, `lock`. Every write is atomic.
 *
 * @example
 * ```ts
 * import { localFileOps, StateStore } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const store = await StateStore.open(localFileOps(), dir);
 * const record = store.newRecord("demo", "zram", { device: "zram1" });
 * await store.withLock(() => store.save(record));
 * assert.deepEqual((await store.list({ kind: "zram" })).map((r) => r.detail.device), ["zram1"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class StateStore {
  /** The directory. */
  readonly dir: string;
  /** How it is reached. */
  readonly ops: FileOps;

  private constructor(ops: FileOps, dir: string) {
    this.ops = ops;
    this.dir = dir.length > 1 ? dir.replace(/\/+$/, "") : dir;
  }

  /** Opens (creating, mode 0700) a state directory. */
  static async open(ops: FileOps, dir: string): Promise<StateStore> {
    if (!dir.startsWith("/")) throw new UsageError(`--state-dir '${dir}' must be an absolute path`);
    const store = new StateStore(ops, dir);
    await ops.mkdirp(`${store.dir}/records`, 0o700);
    await ops.mkdirp(`${store.dir}/backups`, 0o700);
    return store;
  }

  /**
   * Opens a state directory only if it exists (read-only runs must not create it); `null` when it
   * does not.
   */
  static async openExisting(ops: FileOps, dir: string): Promise<StateStore | null> {
    if ((await ops.lstat(`${dir.replace(/\/+$/, "")}/records`)) === null) return null;
    return new StateStore(ops, dir);
  }

  /** Runs `fn` holding the directory's lock; throws {@link LockBusyError} after `timeoutMs`. */
  async withLock<T>(
    fn: () => Promise<T>,
    options: { timeoutMs?: number; owner?: string } = {},
  ): Promise<T> {
    const lock = await this.ops.lock(`${this.dir}/lock`, {
      timeoutMs: options.timeoutMs ?? 10_000,
      owner: options.owner ?? `pid ${Deno.pid} since ${new Date().toISOString()}`,
    });
    try {
      return await fn();
    } finally {
      await lock.release();
    }
  }

  /** A new record (status `applying`, not saved yet). */
  newRecord(tool: string, kind: string, detail: Record<string, unknown>): ChangeRecord {
    const now = new Date();
    const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    const id = `${stamp}-${kind.toLowerCase().replace(/[^a-z0-9]+/g, "-")}-${
      crypto.randomUUID().slice(0, 6)
    }`;
    return {
      id,
      tool,
      kind,
      status: "applying",
      createdAt: now.toISOString(),
      updatedAt: now.toISOString(),
      detail,
    };
  }

  /** Saves a record atomically (`updatedAt` is set now). */
  async save(record: ChangeRecord): Promise<void> {
    record.updatedAt = new Date().toISOString();
    const data = new TextEncoder().encode(JSON.stringify(record, null, 2) + "\n");
    await this.ops.writeAtomic(this.recordPath(record.id), data, { mode: 0o600 });
  }

  /** Where a record lives. */
  recordPath(id: string): string {
    return `${this.dir}/records/${id}.json`;
  }

  /** Where a record's backups live. */
  backupDir(id: string): string {
    return `${this.dir}/backups/${id}`;
  }

  /** Records, oldest first, optionally filtered. Throws {@link ParseError} naming a damaged one. */
  async list(
    filter: { tool?: string; kind?: string; status?: readonly RecordStatus[] } = {},
  ): Promise<ChangeRecord[]> {
    const names = (await this.ops.list(`${this.dir}/records`)) ?? [];
    const records: ChangeRecord[] = [];
    for (const name of names) {
      if (!name.endsWith(".json")) continue;
      const path = `${this.dir}/records/${name}`;
      const bytes = await this.ops.read(path);
      if (bytes === null) continue;
      const record = parseChangeRecord(new TextDecoder().decode(bytes), path);
      if (filter.tool !== undefined && record.tool !== filter.tool) continue;
      if (filter.kind !== undefined && record.kind !== filter.kind) continue;
      if (filter.status !== undefined && !filter.status.includes(record.status)) continue;
      records.push(record);
    }
    return records.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}

/** A file as it was before a change. */
export interface FileBefore {
  /** SHA-256 of its bytes. */
  sha256: string;
  /** Size in bytes. */
  size: number;
  /** Permission bits. */
  mode: number;
  /** Owner. */
  uid: number;
  /** Group. */
  gid: number;
  /** The backup copy in the state directory. */
  backup: string;
}

/** `detail` of a `file` record. */
export interface FileRecordDetail extends Record<string, unknown> {
  /** The file changed. */
  path: string;
  /** How it was; `null` when the change created it. */
  before: FileBefore | null;
  /** SHA-256 of the new content. */
  afterSha256: string;
}

/** Which side of a change a file is on. */
export type FileChangeState = "before" | "after" | "changed";

/**
 * Whether a file holds the content from before the change, from after it, or something else.
 *
 * @example
 * ```ts
 * import { fileChangeState, localFileOps, sha256Hex } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/f`, "new");
 * const afterSha256 = await sha256Hex(new TextEncoder().encode("new"));
 * assert.equal(await fileChangeState(localFileOps(), { path: `${dir}/f`, before: null, afterSha256 }), "after");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function fileChangeState(
  ops: FileOps,
  detail: FileRecordDetail,
): Promise<FileChangeState> {
  const bytes = await ops.read(detail.path);
  if (bytes === null) return detail.before === null ? "before" : "changed";
  const sha = await sha256Hex(bytes);
  if (sha === detail.afterSha256) return "after";
  if (detail.before !== null && sha === detail.before.sha256) return "before";
  return "changed";
}

/** What {@link applyFileRecord} changes. */
export interface FileChangeRequest {
  /** The script making it. */
  tool: string;
  /** The file. */
  path: string;
  /** Its new content. */
  content: string | Uint8Array;
  /** Extra facts for the record (what was changed, in the tool's terms). */
  extra?: Record<string, unknown>;
  /** Called after each step (`backup`, `replace`), for crash tests. */
  onStep?: (step: string) => Promise<void> | void;
}

/**
 * Changes a file the safe way (call it holding {@link StateStore.withLock}): backup, record
 * (`applying`), atomic replace keeping mode and owner, record (`applied`). Returns the record, or
 * `null` when the file already has this content (nothing to do).
 *
 * @example
 * ```ts
 * import { applyFileRecord, localFileOps, StateStore } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/nix.conf`, "max-jobs = 8\n");
 * const store = await StateStore.open(localFileOps(), `${dir}/state`);
 * const record = await store.withLock(() =>
 *   applyFileRecord(store, { tool: "demo", path: `${dir}/nix.conf`, content: "max-jobs = 1\n" })
 * );
 * assert.equal(record?.status, "applied");
 * assert.equal(await applyFileRecord(store, { tool: "demo", path: `${dir}/nix.conf`, content: "max-jobs = 1\n" }), null);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function applyFileRecord(
  store: StateStore,
  request: FileChangeRequest,
): Promise<ChangeRecord | null> {
  const { ops } = store;
  const content = typeof request.content === "string"
    ? new TextEncoder().encode(request.content)
    : request.content;
  const current = await ops.read(request.path);
  const afterSha256 = await sha256Hex(content);
  if (current !== null && (await sha256Hex(current)) === afterSha256) return null;
  const detail: FileRecordDetail = { path: request.path, before: null, afterSha256 };
  const record = store.newRecord(request.tool, "file", { ...request.extra, ...detail });
  let info: PathInfo | null = null;
  if (current !== null) {
    info = await ops.lstat(request.path);
    const backup = `${store.backupDir(record.id)}/${request.path.split("/").at(-1)}`;
    await ops.mkdirp(store.backupDir(record.id), 0o700);
    await ops.writeAtomic(backup, current, { mode: 0o600 });
    detail.before = {
      sha256: await sha256Hex(current),
      size: current.length,
      mode: info?.mode ?? 0o644,
      uid: info?.uid ?? 0,
      gid: info?.gid ?? 0,
      backup,
    };
    record.detail = { ...request.extra, ...detail };
  }
  await store.save(record);
  await request.onStep?.("backup");
  const options: WriteOptions = detail.before === null
    ? {}
    : { mode: detail.before.mode, uid: detail.before.uid, gid: detail.before.gid };
  await ops.writeAtomic(request.path, content, options);
  await request.onStep?.("replace");
  record.status = "applied";
  await store.save(record);
  return record;
}

/** What {@link revertFileRecord} did. */
export type FileRevertOutcome =
  /** The backup is back, byte for byte (or the created file is gone). */
  | "restored"
  /** The file already held its old content; the record is closed. */
  | "already"
  /** The file changed since the apply: nothing was touched. */
  | "conflict";

/**
 * Undoes a `file` record (call it holding the lock): when the file still holds what the apply
 * wrote, the backup goes back atomically with its mode and owner (or the file is removed when the
 * apply created it) and the record becomes `reverted`. Idempotent.
 *
 * @example Someone edited the file since: nothing is touched
 * ```ts
 * import { applyFileRecord, localFileOps, revertFileRecord, StateStore } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/f`, "v1\n");
 * const store = await StateStore.open(localFileOps(), `${dir}/state`);
 * const record = await applyFileRecord(store, { tool: "demo", path: `${dir}/f`, content: "v2\n" });
 * await Deno.writeTextFile(`${dir}/f`, "v3\n");
 * assert.equal(await revertFileRecord(store, record!), "conflict");
 * assert.equal(await Deno.readTextFile(`${dir}/f`), "v3\n");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function revertFileRecord(
  store: StateStore,
  record: ChangeRecord,
): Promise<FileRevertOutcome> {
  const { ops } = store;
  const detail = record.detail as FileRecordDetail;
  const state = await fileChangeState(ops, detail);
  if (state === "changed") return "conflict";
  if (state === "after") {
    if (detail.before === null) {
      await ops.remove(detail.path);
    } else {
      const bytes = await ops.read(detail.before.backup);
      if (bytes === null || (await sha256Hex(bytes)) !== detail.before.sha256) {
        throw new Error(
          `${ops.host}: the backup ${detail.before.backup} is missing or damaged; ${detail.path} was left as is`,
        );
      }
      await ops.writeAtomic(detail.path, bytes, {
        mode: detail.before.mode,
        uid: detail.before.uid,
        gid: detail.before.gid,
      });
    }
    if ((await fileChangeState(ops, detail)) !== "before") {
      throw new Error(`${ops.host}: ${detail.path} does not hold the backup after restoring it`);
    }
  }
  record.status = "reverted";
  await store.save(record);
  return state === "after" ? "restored" : "already";
}

/**
 * Settles a `file` record a killed run left `applying` (call it holding the lock): the file holds
 * the new content → `applied`; the old → `abandoned`; else it stays `applying` and `changed` is
 * returned. Also removes stray temporary files next to it.
 *
 * @example A run killed after the backup, before the replace
 * ```ts
 * import { applyFileRecord, localFileOps, reconcileFileRecord, StateStore } from "./atomic_file.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/f`, "v1\n");
 * const store = await StateStore.open(localFileOps(), `${dir}/state`);
 * const kill = (step: string) => {
 *   if (step === "backup") throw new Error("killed");
 * };
 * await assert.rejects(applyFileRecord(store, { tool: "demo", path: `${dir}/f`, content: "v2\n", onStep: kill }));
 * const [pending] = await store.list({ status: ["applying"] });
 * assert.equal(await reconcileFileRecord(store, pending!), "before");
 * assert.equal(pending!.status, "abandoned");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function reconcileFileRecord(
  store: StateStore,
  record: ChangeRecord,
): Promise<FileChangeState> {
  const detail = record.detail as FileRecordDetail;
  await cleanTempFiles(store.ops, detail.path);
  const state = await fileChangeState(store.ops, detail);
  if (state === "after") record.status = "applied";
  if (state === "before") record.status = "abandoned";
  if (state !== "changed") await store.save(record);
  return state;
}
