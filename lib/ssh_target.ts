/**
 * The target for a builder over ssh: one connection per host (ControlMaster in a private temp dir),
 * every argument POSIX-quoted for the remote shell, and a remote watchdog so a time-out also ends the
 * remote process (ssh without a tty forwards no signal).
 *
 * @module
 */

import { runProcess, streamProcess } from "./_process.ts";
import { parseSshHost, type SshHost } from "./host.ts";
import { effectiveTimeout, type TargetOptions } from "./local_target.ts";
import { shellJoin } from "./shell_quote.ts";
import type { DirEntry, FileInfo, RunOptions, RunResult, StreamedRun, Target } from "./target.ts";
import { TargetError } from "./target.ts";

/** Options for {@link SshTarget}. */
export interface SshTargetOptions extends TargetOptions {
  /** Extra ssh options, each passed as `-o VALUE` (the `--ssh-option` flag). */
  sshOptions?: string[];
  /** Raw ssh arguments, e.g. `["-F", "/path/ssh_config"]`. Default: `NIX_SSHOPTS` split on whitespace. */
  sshArgs?: string[];
  /** ssh's `ConnectTimeout`, in seconds (default 10, capped by the deadline). */
  connectTimeoutS?: number;
}

const ABSENT = 44;
const live = new Set<SshTarget>();

globalThis.addEventListener("unload", () => {
  for (const target of live) target.closeSync();
});

// Runs "$@" with a watchdog that kills it after $1 seconds, keeping stdin (async lists get /dev/null).
// `timeout` (coreutils, busybox) when the host has it: the shell fallback leaves its `sleep $1`
// behind for $1 seconds after the command ends, which matters for long streams (watch_builders).
const WATCHDOG =
  't=$1; shift; if command -v timeout >/dev/null 2>&1; then exec timeout "$t" "$@"; fi; ' +
  'exec 3<&0; "$@" <&3 3<&- & c=$!; exec 3<&-; ' +
  '( PATH="$PATH:/usr/bin:/bin"; sleep "$t"; kill -TERM "$c"; sleep 2; kill -KILL "$c" ) ' +
  ">/dev/null 2>&1 </dev/null & w=$!; " +
  'wait "$c"; r=$?; kill "$w" 2>/dev/null; exit "$r"';

const READ_FILE = '[ -e "$1" ] || exit 44; exec cat -- "$1"';
const READ_DIR = '[ -e "$1" ] || exit 44; cd -- "$1" && exec ls -1A';
const STAT = '[ -e "$1" ] || exit 44; if [ -L "$1" ]; then l=1; else l=0; fi; ' +
  "s=$(stat -L -c '%F|%s|%Y|%a|%u' -- \"$1\" 2>/dev/null || stat -L -f '%HT|%z|%m|%Lp|%u' -- \"$1\") " +
  '|| exit 2; echo "$l|$s"';

function isSshError(stderr: string): boolean {
  return /^(ssh:|kex_exchange_identification|Connection (closed|refused|reset|timed out)|Host key verification failed|Permission denied \(|mux_client|Control socket|Could not resolve|.*: Name or service not known|banner exchange)/m
    .test(stderr);
}

/**
 * Runs checks on a remote host over ssh.
 *
 * @example Refusing a hostile host before anything runs
 * ```ts
 * import { SshTarget } from "./ssh_target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.throws(() => new SshTarget("-oProxyCommand=touch"), /starts with '-'/);
 * ```
 */
export class SshTarget implements Target {
  /** Always `ssh`. */
  readonly kind = "ssh" as const;
  /** The host as given (scheme and query stripped). */
  readonly host: string;
  /** The parsed host. */
  readonly parsed: SshHost;
  #options: SshTargetOptions;
  #dir: string | undefined;
  #master: Promise<RunResult> | undefined;
  #closed = false;

  /** Validates the host (throws `UsageError`) and prepares the connection; nothing runs yet. */
  constructor(host: string, options: SshTargetOptions = {}) {
    this.parsed = parseSshHost(host);
    this.host = this.parsed.port === undefined
      ? this.parsed.destination
      : `${this.parsed.destination}:${this.parsed.port}`;
    this.#options = options;
  }

  /** The ssh arguments before the destination (without ControlMaster choice). */
  #baseArgs(): string[] {
    if (this.#dir === undefined) this.#dir = Deno.makeTempDirSync({ prefix: "nbr-ssh-" });
    const raw = this.#options.sshArgs ??
      (Deno.env.get("NIX_SSHOPTS") ?? "").split(/\s+/).filter((s) => s !== "");
    return [
      "-T",
      "-x",
      "-o",
      "BatchMode=yes",
      "-o",
      `ControlPath=${this.#dir}/master.sock`,
      ...raw,
      ...(this.#options.sshOptions ?? []).flatMap((o) => ["-o", o]),
      "-o",
      `ConnectTimeout=${this.#connectTimeoutS()}`,
      "-o",
      "ServerAliveInterval=5",
      ...(this.parsed.port === undefined ? [] : ["-p", String(this.parsed.port)]),
    ];
  }

  #connectTimeoutS(): number {
    const budget = Math.floor(effectiveTimeout({}, this.#options) / 1000);
    return Math.max(1, Math.min(this.#options.connectTimeoutS ?? 10, budget));
  }

  /** Opens the shared connection once; its result says whether the host is reachable. */
  #connect(): Promise<RunResult> {
    if (this.#closed) {
      return Promise.resolve({
        code: 255,
        stdout: "",
        stderr: "connection closed",
        failure: "unreachable",
      });
    }
    if (this.#master === undefined) {
      live.add(this);
      const args = this.#baseArgs();
      const log = `${this.#dir}/master.log`;
      this.#master = runProcess([
        "sh",
        "-c",
        'log=$1; shift; exec "$@" </dev/null >/dev/null 2>"$log"',
        "sh",
        log,
        "ssh",
        ...args,
        "-o",
        "ControlMaster=yes",
        "-o",
        "ControlPersist=60",
        "-f",
        "-N",
        "--",
        this.parsed.destination,
      ], {
        timeoutMs: Math.min(
          effectiveTimeout({}, this.#options),
          this.#connectTimeoutS() * 1000 + 5000,
        ),
      })
        .then((result) => {
          let stderr = "";
          try {
            stderr = Deno.readTextFileSync(log);
          } catch {
            // no log written
          }
          if (result.code === 0) return { code: 0, stdout: "", stderr };
          const why = result.failure === "timeout"
            ? `no answer from ${this.host} (connection or ssh handshake timed out)`
            : stderr.trim() || `ssh exited with ${result.code}`;
          return { code: 255, stdout: "", stderr: why, failure: "unreachable" as const };
        });
    }
    return this.#master;
  }

  #remoteArgv(argv: readonly string[], options: RunOptions): string[] {
    const timeoutS = Math.ceil(effectiveTimeout(options, this.#options) / 1000) + 1;
    const env = Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`);
    const command = env.length > 0 ? ["env", ...env, ...argv] : [...argv];
    // /bin/sh, not sh: the session's PATH may lack /bin (a builder whose sshd sets PATH).
    const remote = shellJoin(["/bin/sh", "-c", WATCHDOG, "sh", String(timeoutS), ...command]);
    return [
      "ssh",
      ...this.#baseArgs(),
      "-o",
      "ControlMaster=no",
      "--",
      this.parsed.destination,
      remote,
    ];
  }

  #classify(result: RunResult): RunResult {
    if (result.failure === undefined && result.code === 255 && isSshError(result.stderr)) {
      return { ...result, failure: "unreachable" };
    }
    return result;
  }

  /** Runs a program on the host; arguments arrive byte-identical. */
  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const master = await this.#connect();
    if (master.failure) return master;
    const timeoutMs = effectiveTimeout(options, this.#options);
    return this.#classify(
      await runProcess(this.#remoteArgv(argv, options), { ...options, timeoutMs }),
    );
  }

  /** Streams a program's output from the host. */
  stream(argv: readonly string[], options: RunOptions = {}): StreamedRun {
    let inner: StreamedRun | undefined;
    let killed = false;
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const status = this.#connect().then(async (master): Promise<RunResult> => {
      if (master.failure || killed) {
        await writable.close();
        return master.failure
          ? master
          : { code: 130, stdout: "", stderr: "", failure: "aborted" as const };
      }
      const timeoutMs = effectiveTimeout(options, this.#options);
      inner = streamProcess(this.#remoteArgv(argv, options), { ...options, timeoutMs });
      await inner.stdout.pipeTo(writable).catch(() => {});
      return this.#classify(await inner.status);
    });
    return {
      stdout: readable,
      status,
      kill: () => {
        killed = true;
        inner?.kill();
      },
    };
  }

  async #script(script: string, path: string): Promise<RunResult | null> {
    // /bin/sh and a PATH with the basics: a session PATH without /bin (a builder whose sshd sets
    // PATH) must not make every file unreadable.
    const withPath = `PATH="$PATH:/usr/bin:/bin"; ${script}`;
    const result = await this.run(["/bin/sh", "-c", withPath, "sh", path]);
    if (result.code === ABSENT && !result.failure) return null;
    if (result.code !== 0 || result.failure) {
      const reason = result.failure === "unreachable"
        ? `could not reach the host: ${result.stderr.trim()}`
        : result.failure === "timeout"
        ? "timed out"
        : result.stderr.trim().split("\n").at(-1) || `exit ${result.code}`;
      throw new TargetError(this.host, path, reason, result.failure);
    }
    return result;
  }

  /** Reads a remote text file; `null` when absent. */
  async readFile(path: string): Promise<string | null> {
    return (await this.#script(READ_FILE, path))?.stdout ?? null;
  }

  /** Lists a remote directory; `null` when absent. */
  async readDir(path: string): Promise<DirEntry[] | null> {
    const result = await this.#script(READ_DIR, path);
    if (result === null) return null;
    return result.stdout.split("\n").filter((n) => n !== "").sort().map((name) => ({ name }));
  }

  /** Stats a remote path (GNU or BSD `stat`). */
  async stat(path: string): Promise<FileInfo | null> {
    const result = await this.#script(STAT, path);
    if (result === null) return null;
    const [link, type = "", size, mtime, mode, uid] = result.stdout.trim().split("|");
    const lower = type.toLowerCase();
    return {
      type: lower.includes("regular")
        ? "file"
        : lower.includes("directory")
        ? "directory"
        : "other",
      size: Number(size),
      mtime: Number(mtime),
      mode: parseInt(mode ?? "0", 8),
      uid: Number(uid),
      isSymlink: link === "1",
    };
  }

  /** Closes the shared connection and removes the control directory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    live.delete(this);
    if (this.#master !== undefined && this.#dir !== undefined) {
      await runProcess([
        "ssh",
        "-o",
        `ControlPath=${this.#dir}/master.sock`,
        "-O",
        "exit",
        "--",
        this.parsed.destination,
      ], { timeoutMs: 3000 });
    }
    if (this.#dir !== undefined) await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }

  /** Synchronous close, for process exit. */
  closeSync(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#master !== undefined && this.#dir !== undefined) {
      try {
        new Deno.Command("ssh", {
          args: [
            "-o",
            `ControlPath=${this.#dir}/master.sock`,
            "-O",
            "exit",
            "--",
            this.parsed.destination,
          ],
          stdout: "null",
          stderr: "null",
        }).outputSync();
      } catch {
        // best effort at exit
      }
    }
    if (this.#dir !== undefined) {
      try {
        Deno.removeSync(this.#dir, { recursive: true });
      } catch {
        // best effort at exit
      }
    }
  }
}
