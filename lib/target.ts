/**
 * Where a check runs: this machine, a builder over ssh, or a captured snapshot.
 *
 * Every check is written once against {@link Target}; the three implementations
 * (`LocalTarget`, `SshTarget`, `SnapshotTarget`) make it run anywhere.
 *
 * @module
 */

/** Options for {@link Target.run}. */
export interface RunOptions {
  /** Time-out in milliseconds; the target's default when absent. */
  timeoutMs?: number;
  /** Text or bytes written to the command's standard input. */
  stdin?: string | Uint8Array;
  /** Extra environment variables for the command. */
  env?: Record<string, string>;
  /** Aborts the command (it is killed, like on time-out). */
  signal?: AbortSignal;
}

/** Why a command gave no result of its own. */
export type RunFailure =
  /** It ran past its time-out and was killed. */
  | "timeout"
  /** ssh could not reach the host (ssh exit 255 with its message). */
  | "unreachable"
  /** A snapshot has no record of this command. */
  | "not-captured"
  /** The program does not exist on the target (exit 127). */
  | "not-found"
  /** It was aborted through `RunOptions.signal`. */
  | "aborted";

/** What a command did. */
export interface RunResult {
  /** Exit code; 124 after a time-out, 127 when the program is missing, 255 when unreachable. */
  code: number;
  /** Standard output, decoded as UTF-8 (invalid bytes replaced). */
  stdout: string;
  /** Standard error, decoded as UTF-8. */
  stderr: string;
  /** Set when the command gave no result of its own. */
  failure?: RunFailure;
}

/** A streamed command: output arrives as it is produced (large logs, live samples). */
export interface StreamedRun {
  /** The command's standard output. */
  stdout: ReadableStream<Uint8Array>;
  /** Resolves when the command ends; `stdout` in it is empty. */
  status: Promise<RunResult>;
  /** Kills the command (and, over ssh, the remote process). */
  kill(): void;
}

/** One directory entry. */
export interface DirEntry {
  /** The entry's name (not a path). */
  name: string;
}

/** What {@link Target.stat} tells about a path (symlinks followed). */
export interface FileInfo {
  /** What the path is. */
  type: "file" | "directory" | "symlink" | "other";
  /** Size in bytes. */
  size: number;
  /** Last modification, seconds since the epoch. */
  mtime: number;
  /** Permission bits (e.g. `0o755`). */
  mode: number;
  /** Owner's numeric uid. */
  uid: number;
  /** Whether `lstat` saw a symlink at the path itself. */
  isSymlink: boolean;
}

/**
 * Where a check runs.
 *
 * @example A check written once, run on this machine
 * ```ts
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new LocalTarget({ timeoutMs: 5000 });
 * const result = await target.run(["sh", "-c", "echo \"$1\"", "sh", "it's $(here)"]);
 * assert.equal(result.stdout, "it's $(here)\n");
 * assert.equal(await target.readFile("/nonexistent/file"), null);
 * await target.close();
 * ```
 */
export interface Target {
  /** `local`, `ssh` or `snapshot`. */
  readonly kind: "local" | "ssh" | "snapshot";
  /** The host name shown in reports (`localhost`, the ssh host, or the snapshot's host). */
  readonly host: string;
  /** Runs a program with arguments (never through a local shell) and waits for it. */
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
  /** Runs a program and streams its standard output. */
  stream(argv: readonly string[], options?: RunOptions): StreamedRun;
  /** A file's text; `null` when it does not exist; throws `TargetError` for any other failure. */
  readFile(path: string): Promise<string | null>;
  /** A directory's entries, sorted by name; `null` when it does not exist. */
  readDir(path: string): Promise<DirEntry[] | null>;
  /** What a path is; `null` when it does not exist. */
  stat(path: string): Promise<FileInfo | null>;
  /** Ends connections and removes temporary files. Safe to call twice. */
  close(): Promise<void>;
  /**
   * "Now" for this target's data, ms since the epoch: the collection time for a snapshot, so time
   * windows ("OOM kills in the last 24 h") and clock skew mean the same offline. Absent: `Date.now()`.
   */
  now?(): number;
}

/**
 * The target's "now": a snapshot's collection time, else this machine's clock.
 *
 * @example
 * ```ts
 * import { targetNow } from "./target.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "b", collected_at: "2026-11-25T10:00:00.000Z", tool: "t" },
 *   commands: [],
 *   paths: {},
 *   files: {},
 * });
 * assert.equal(new Date(targetNow(target)).toISOString(), "2026-11-25T10:00:00.000Z");
 * ```
 */
export function targetNow(target: Target): number {
  return target.now?.() ?? Date.now();
}

/**
 * A failure to read from a target that is not "absent": permission denied, unreachable, a time-out.
 *
 * @example
 * ```ts
 * import { TargetError } from "./target.ts";
 * import assert from "node:assert/strict";
 *
 * const error = new TargetError("builder1", "/etc/nix/nix.conf", "permission denied");
 * assert.equal(error.message, "builder1: cannot read /etc/nix/nix.conf: permission denied");
 * ```
 */
export class TargetError extends Error {
  /** The target's host. */
  readonly host: string;
  /** The path or command that failed. */
  readonly subject: string;
  /** The failure kind, when it came from a command. */
  readonly failure: RunFailure | undefined;

  /** Builds the error. */
  constructor(host: string, subject: string, reason: string, failure?: RunFailure) {
    super(`${host}: cannot read ${subject}: ${reason}`);
    this.name = "TargetError";
    this.host = host;
    this.subject = subject;
    this.failure = failure;
  }
}

/**
 * A one-line description of why a command failed, for a finding's summary.
 *
 * @example
 * ```ts
 * import { describeFailure } from "./target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   describeFailure(["nix", "--version"], { code: 127, stdout: "", stderr: "", failure: "not-found" }),
 *   "'nix' is not installed or not on PATH",
 * );
 * ```
 */
export function describeFailure(argv: readonly string[], result: RunResult): string {
  const program = argv[0] ?? "";
  const firstLine = result.stderr.trim().split("\n").filter((l) => l.trim() !== "").at(-1) ?? "";
  switch (result.failure) {
    case "timeout":
      return `'${argv.join(" ")}' timed out`;
    case "unreachable":
      return `could not reach the host: ${firstLine || "ssh failed"}`;
    case "not-captured":
      return `'${argv.join(" ")}' was not captured in this snapshot`;
    case "not-found":
      return `'${program}' is not installed or not on PATH`;
    case "aborted":
      return `'${argv.join(" ")}' was interrupted`;
    default:
      return `'${argv.join(" ")}' exited with ${result.code}${firstLine ? `: ${firstLine}` : ""}`;
  }
}
