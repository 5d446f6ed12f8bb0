/**
 * Where a derivation's build log can be read, and reading it as a stream: `nix-store -l` (local
 * logs of every Nix version), `nix log` (also asks substituters, on the controller), and the log
 * file itself (`<logDir>/drvs/xx/rest`, `.bz2` decompressed by `bzip2 -dc` on the host) when the
 * nix commands fail or the log is so large that `nix-store -l` would load it whole into memory.
 * Each attempt is recorded, so a missing log comes with the reason.
 *
 * Nix keeps a log under the name of the derivation that was built, never under an output's name:
 * for an output path, the deriver is asked on the same host first (`nix-store --query --deriver`)
 * and its `.drv` names the log files; an output whose deriver is unknown there has no log to find.
 *
 * `nix log --store ssh-ng://host` cannot serve logs (`getBuildLogExact` is not supported), so a
 * builder's copy is read by running these commands on the builder over ssh.
 *
 * @module
 */

import { formatBytes } from "./meminfo.ts";
import { readEffectiveConfig } from "./nix_config.ts";
import {
  buildLogFiles,
  DEFAULT_LOG_DIR,
  parseStorePath,
  type StorePath,
  storePathProblem,
} from "./store_path.ts";
import type { FileInfo, RunResult, StreamedRun, Target } from "./target.ts";
import { describeFailure, TargetError } from "./target.ts";

/** How a log was (or could have been) read. */
export type LogMethod =
  | "nix-store -l"
  | "nix log"
  | "log file"
  | "compressed log file"
  | "standard input"
  | "ssh connection"
  | "nix-store --query --deriver";

/** What one attempt to read the log gave. */
export interface LogAttempt {
  /** The host asked (`localhost`, a builder, a snapshot's host). */
  host: string;
  /** How. */
  method: LogMethod;
  /** `served`, `absent` (the source answered: no log), `failed`, `unreachable`, `not-captured`, `skipped`. */
  outcome: "served" | "absent" | "failed" | "unreachable" | "not-captured" | "skipped";
  /** One line: what happened. */
  detail: string;
}

/** A log being read. */
export interface OpenedLog {
  /** Where it comes from. */
  host: string;
  /** How. */
  method: LogMethod;
  /** The log file, for the file methods. */
  path?: string;
  /** Bytes of the file on disk (compressed for `.bz2`), when known. */
  fileSize?: number;
  /** A plain log file on this machine, readable directly (fast and seekable). */
  localFile?: string;
  /** The log's bytes, as fresh copies (convenient; {@link OpenedLog.chunks} allocates nothing). */
  stream: ReadableStream<Uint8Array>;
  /**
   * The log's bytes block by block, reading into recycled buffers: a block is valid until the
   * next one is asked for (copy it to keep it). Use either this or `stream`, not both.
   */
  chunks(): AsyncIterable<Uint8Array>;
  /** Resolves when the producing command ended: `ok` false means the log may be cut short. */
  done: Promise<{ ok: boolean; detail: string }>;
  /** Stops reading (kills the command, also over ssh). */
  kill(): void;
}

/** Options for {@link openBuildLog}. */
export interface OpenLogOptions {
  /** The log directory (default: `NIX_LOG_DIR` on this machine, else `/nix/var/log/nix`). */
  logDir?: string;
  /** Also try `nix log` (asks substituters too; meant for the controller). Default false. */
  nixLog?: boolean;
  /** The `nix-store` program on this host (default `nix-store`, from PATH). */
  nixStore?: string;
  /** Time-out of the whole read in milliseconds (default 600 000). */
  timeoutMs?: number;
  /** Log files at least this large are read directly, before `nix-store -l` (default 64 MiB; bz2: a quarter). */
  largeFileBytes?: number;
}

/** What {@link openBuildLog} found on one host. */
export interface OpenLogResult {
  /** The log, when a source served it. */
  log?: OpenedLog;
  /** Every attempt, in order. */
  attempts: LogAttempt[];
  /** Whether the host could not be reached at all. */
  unreachable: boolean;
  /** For an output path: the derivation the host says built it (whose log was looked for). */
  deriver?: StorePath;
  /** For an output path: what the host's `nix-store --query --deriver` said. */
  deriverLookup?: DeriverLookup["kind"];
  /** For an output path: that answer whole, for {@link explainMissingLog} (not asked twice). */
  deriverAnswer?: DeriverLookup;
}

/**
 * The log directory for a target: `--log-dir`, else `NIX_LOG_DIR` for this machine, else the default.
 *
 * @example
 * ```ts
 * import { logDirFor } from "./build_log.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(logDirFor({ kind: "ssh" }, undefined), "/nix/var/log/nix");
 * assert.equal(logDirFor({ kind: "ssh" }, "/var/log/nix"), "/var/log/nix");
 * ```
 */
export function logDirFor(target: Pick<Target, "kind">, logDir: string | undefined): string {
  if (logDir !== undefined) return logDir;
  if (target.kind === "local") {
    try {
      const env = Deno.env.get("NIX_LOG_DIR");
      if (env) return env;
    } catch {
      // no env permission
    }
  }
  return DEFAULT_LOG_DIR;
}

const NOT_AVAILABLE =
  /is not available|does not exist|is not a valid store path|not in the Nix store|don't know how to build|no build log/i;

/** Classifies a source's failure from its result. */
function outcomeOf(result: RunResult): LogAttempt["outcome"] {
  if (result.failure === "unreachable") return "unreachable";
  if (result.failure === "not-captured") return "not-captured";
  if (result.failure === undefined && result.code !== 0 && NOT_AVAILABLE.test(result.stderr)) {
    return "absent";
  }
  return "failed";
}

function lastLine(text: string): string {
  return text.trim().split("\n").map((l) => l.trim()).filter((l) =>
    l !== "" && !/^warning: /.test(l)
  )
    .at(-1) ?? "";
}

/**
 * Reads a byte stream into one recycled buffer when the stream allows it (BYOB), so a multi-GB log
 * passes through without a new allocation per block; otherwise block by block as they come.
 *
 * @example
 * ```ts
 * import { ByteSource } from "./build_log.ts";
 * import assert from "node:assert/strict";
 *
 * const source = new ByteSource(ReadableStream.from([new Uint8Array([1, 2]), new Uint8Array([3])]));
 * assert.deepEqual([...(await source.next())!], [1, 2]);
 * assert.deepEqual([...(await source.next())!], [3]);
 * assert.equal(await source.next(), null);
 * ```
 */
export class ByteSource {
  #byob: ReadableStreamBYOBReader | undefined;
  #plain: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #buffer: Uint8Array<ArrayBuffer>;

  /** Takes the stream's reader (BYOB when it is a byte stream). */
  constructor(stream: ReadableStream<Uint8Array>, blockSize = 1 << 20) {
    this.#buffer = new Uint8Array(blockSize);
    try {
      this.#byob = stream.getReader({ mode: "byob" });
    } catch {
      this.#plain = stream.getReader();
    }
  }

  /** The next non-empty block, or `null` at the end; valid until the next call. */
  async next(): Promise<Uint8Array | null> {
    while (true) {
      if (this.#byob !== undefined) {
        const result = await this.#byob.read(this.#buffer);
        if (result.value !== undefined) this.#buffer = new Uint8Array(result.value.buffer);
        if (result.done) return null;
        if (result.value.length > 0) return result.value;
      } else {
        const result = await this.#plain!.read();
        if (result.done) return null;
        if (result.value.length > 0) return result.value;
      }
    }
  }

  /** Stops reading. */
  cancel(): void {
    (this.#byob ?? this.#plain)?.cancel().catch(() => {});
  }
}

/** An opened log's two views of the same bytes: recycled blocks, or a stream of copies. */
function views(
  first: Uint8Array | undefined,
  source: ByteSource | undefined,
  onCancel: () => void,
): Pick<OpenedLog, "chunks" | "stream"> {
  let used = false;
  async function* chunks(): AsyncIterable<Uint8Array> {
    if (used) throw new Error("The log was already read");
    used = true;
    if (first !== undefined) yield first;
    if (source === undefined) return;
    while (true) {
      const block = await source.next();
      if (block === null) return;
      yield block;
    }
  }
  let stream: ReadableStream<Uint8Array> | undefined;
  return {
    chunks,
    get stream() {
      if (stream === undefined) {
        const iterator = chunks()[Symbol.asyncIterator]();
        stream = new ReadableStream<Uint8Array>({
          async pull(controller) {
            const next = await iterator.next();
            if (next.done) controller.close();
            else controller.enqueue(next.value.slice());
          },
          cancel() {
            source?.cancel();
            onCancel();
          },
        }, { highWaterMark: 0 });
      }
      return stream;
    },
  };
}

/**
 * The two views of an {@link OpenedLog} over a byte stream: recycled blocks (`chunks()`) or copies
 * (`stream`).
 *
 * @example
 * ```ts
 * import { logViews } from "./build_log.ts";
 * import assert from "node:assert/strict";
 *
 * const log = logViews(ReadableStream.from([new TextEncoder().encode("a\n")]));
 * assert.equal(await new Response(log.stream).text(), "a\n");
 * ```
 */
export function logViews(
  stream: ReadableStream<Uint8Array>,
  onCancel: () => void = () => {},
): Pick<OpenedLog, "chunks" | "stream"> {
  return views(undefined, new ByteSource(stream), onCancel);
}

/**
 * Waits for a streamed command's first output: a source that prints something serves the log; one
 * that ends silently served an empty log (exit 0) or none (otherwise).
 */
async function firstChunk(
  run: StreamedRun,
): Promise<
  | { kind: "data"; first: Uint8Array; source: ByteSource }
  | { kind: "empty"; result: RunResult }
> {
  const source = new ByteSource(run.stdout);
  let first: Uint8Array | null;
  try {
    first = await source.next();
  } catch {
    return { kind: "empty", result: await run.status };
  }
  if (first === null) return { kind: "empty", result: await run.status };
  return { kind: "data", first: first.slice(), source };
}

function doneOf(
  run: StreamedRun,
  argv: readonly string[],
): Promise<{ ok: boolean; detail: string }> {
  return run.status.then((result) => ({
    ok: result.code === 0 && result.failure === undefined,
    detail: result.code === 0 && result.failure === undefined ? "" : describeFailure(argv, result),
  }));
}

/**
 * Directories searched after the session's own PATH on a remote host: non-interactive ssh sessions
 * often lack the directories where nix (NixOS, nix-darwin, the multi-user installer) and the
 * basic tools live.
 */
export const REMOTE_EXTRA_PATH =
  "/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/bin:/usr/bin:/bin";

/**
 * The argv that runs `argv` on a remote host with {@link REMOTE_EXTRA_PATH} appended to PATH. The
 * arguments stay separate words (`exec "$@"`); nothing is interpolated into the script.
 *
 * @example
 * ```ts
 * import { withRemotePath } from "./build_log.ts";
 * import assert from "node:assert/strict";
 *
 * const argv = withRemotePath(["nix-store", "-l", "/nix/store/x"]);
 * assert.equal(argv[0], "/bin/sh");
 * assert.deepEqual(argv.slice(3), ["sh", "nix-store", "-l", "/nix/store/x"]);
 * ```
 */
export function withRemotePath(argv: readonly string[]): string[] {
  return ["/bin/sh", "-c", `PATH="\${PATH:+$PATH:}${REMOTE_EXTRA_PATH}"; exec "$@"`, "sh", ...argv];
}

/** Tries one streamed command. */
async function tryStream(
  target: Target,
  argv: readonly string[],
  method: LogMethod,
  timeoutMs: number,
  extra: Partial<OpenedLog> = {},
): Promise<{ log?: OpenedLog; attempt: LogAttempt }> {
  const run = target.stream(target.kind === "ssh" ? withRemotePath(argv) : argv, { timeoutMs });
  const first = await firstChunk(run);
  const base = { host: target.host, method };
  if (first.kind === "data") {
    return {
      log: {
        ...base,
        ...extra,
        ...views(first.first, first.source, run.kill),
        done: doneOf(run, argv),
        kill: run.kill,
      },
      attempt: { ...base, outcome: "served", detail: `'${argv.join(" ")}' served the log` },
    };
  }
  const result = first.result;
  if (result.code === 0 && result.failure === undefined) {
    // A log that exists but is empty: the builder printed nothing.
    return {
      log: {
        ...base,
        ...extra,
        ...views(undefined, undefined, () => {}),
        done: Promise.resolve({ ok: true, detail: "" }),
        kill: () => {},
      },
      attempt: { ...base, outcome: "served", detail: `'${argv.join(" ")}' served an empty log` },
    };
  }
  const outcome = outcomeOf(result);
  const detail = outcome === "absent"
    ? lastLine(result.stderr).replace(/^error: /, "") || `'${argv.join(" ")}' found no log`
    : describeFailure(argv, result);
  return { attempt: { ...base, outcome, detail } };
}

async function statOrNull(target: Target, path: string): Promise<FileInfo | null | TargetError> {
  try {
    return await target.stat(path);
  } catch (error) {
    if (error instanceof TargetError) return error;
    throw error;
  }
}

function textViews(text: string): Pick<OpenedLog, "chunks" | "stream"> {
  const bytes = new TextEncoder().encode(text);
  return views(bytes.length > 0 ? bytes : undefined, undefined, () => {});
}

/**
 * A local file as a stream of 1 MiB blocks, opened on first read and closed at the end or on cancel.
 *
 * @example
 * ```ts
 * import { fileStream } from "./build_log.ts";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "abc");
 * assert.equal(await new Response(fileStream(path)).text(), "abc");
 * await Deno.remove(path);
 * ```
 */
export function fileStream(path: string, blockSize = 1 << 20): ReadableStream<Uint8Array> {
  let file: Deno.FsFile | undefined;
  const close = () => {
    try {
      file?.close();
    } catch {
      // already closed
    }
    file = undefined;
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        file ??= await Deno.open(path);
        const buf = new Uint8Array(blockSize);
        const n = await file.read(buf);
        if (n === null) {
          close();
          controller.close();
        } else {
          controller.enqueue(buf.subarray(0, n));
        }
      } catch (error) {
        close();
        controller.error(error);
      }
    },
    cancel: close,
  }, { highWaterMark: 0 });
}

/** Reads a log file on the host: directly on this machine, `cat`/`bzip2 -dc` elsewhere. */
async function tryFile(
  target: Target,
  path: string,
  info: FileInfo,
  compressed: boolean,
  timeoutMs: number,
): Promise<{ log?: OpenedLog; attempt: LogAttempt }> {
  const method: LogMethod = compressed ? "compressed log file" : "log file";
  const base = { host: target.host, method };
  if (info.type !== "file") {
    return { attempt: { ...base, outcome: "failed", detail: `${path} is not a regular file` } };
  }
  if (!compressed && target.kind === "local") {
    return {
      log: {
        ...base,
        path,
        fileSize: info.size,
        localFile: path,
        ...views(undefined, new ByteSource(fileStream(path)), () => {}),
        done: Promise.resolve({ ok: true, detail: "" }),
        kill: () => {},
      },
      attempt: { ...base, outcome: "served", detail: `read ${path}` },
    };
  }
  const argv = compressed ? ["bzip2", "-dc", "--", path] : ["cat", "--", path];
  const tried = await tryStream(target, argv, method, timeoutMs, { path, fileSize: info.size });
  if (tried.attempt.outcome === "not-captured" && !compressed) {
    // A snapshot holds copies of plain files, not command output.
    try {
      const text = await target.readFile(path);
      if (text !== null) {
        return {
          log: {
            ...base,
            path,
            fileSize: info.size,
            ...textViews(text),
            done: Promise.resolve({ ok: true, detail: "" }),
            kill: () => {},
          },
          attempt: { ...base, outcome: "served", detail: `the snapshot's copy of ${path}` },
        };
      }
    } catch {
      // fall through: not captured
    }
  }
  if (tried.attempt.outcome === "absent" || tried.attempt.outcome === "failed") {
    tried.attempt.outcome = "failed";
  }
  return tried;
}

/** What a host's `nix-store --query --deriver` said about an output path. */
export type DeriverLookup =
  /** The derivation that built it (its `.drv` need not be in that store). */
  | { kind: "known"; drv: StorePath }
  /** `unknown-deriver`: the store records no derivation for the path. */
  | { kind: "unknown" }
  /** The path is not valid in that store. */
  | { kind: "not-in-store"; detail: string }
  /** No answer: unreachable, time-out, no nix-store, not captured, unexpected output. */
  | { kind: "failed"; failure: RunResult["failure"]; detail: string };

/** Options for {@link queryDeriver}. */
export interface DeriverOptions {
  /** The `nix-store` program on this host (default `nix-store`, from PATH). */
  nixStore?: string;
  /** Time-out in milliseconds (default 20 000). */
  timeoutMs?: number;
}

/**
 * Asks a host which derivation built an output path (`nix-store --query --deriver PATH`, an argv,
 * run through the target with a time-out). What the host prints is validated as a `.drv` store
 * path before it is used.
 *
 * @example
 * ```ts
 * import { queryDeriver } from "./build_log.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import { parseStorePath } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * const out = "/nix/store/3bdfhjw97828dc0hnk9ckc7hy17740xy-dx-ok";
 * const target = new SnapshotTarget({
 *   meta: { host: "b1", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [{
 *     argv: ["nix-store", "--query", "--deriver", out],
 *     code: 0,
 *     stdout: "/nix/store/kbwg07fi7rridp3kqhwhbpvmhsqfs0fy-dx-ok.drv\n",
 *     stderr: "",
 *   }],
 *   paths: {},
 *   files: {},
 * });
 * const found = await queryDeriver(target, parseStorePath(out));
 * assert.equal(found.kind === "known" && found.drv.name, "dx-ok.drv");
 * ```
 */
export async function queryDeriver(
  target: Target,
  output: StorePath,
  options: DeriverOptions = {},
): Promise<DeriverLookup> {
  const argv = [options.nixStore ?? "nix-store", "--query", "--deriver", output.path];
  const result = await target.run(target.kind === "ssh" ? withRemotePath(argv) : argv, {
    timeoutMs: options.timeoutMs ?? 20_000,
  });
  if (result.failure !== undefined) {
    return { kind: "failed", failure: result.failure, detail: describeFailure(argv, result) };
  }
  if (result.code !== 0) {
    if (/is not valid|does not exist|not in the Nix store/.test(result.stderr)) {
      return {
        kind: "not-in-store",
        detail: lastLine(result.stderr).replace(/^error: /, "") ||
          `${output.path} is not in the store`,
      };
    }
    return { kind: "failed", failure: undefined, detail: describeFailure(argv, result) };
  }
  const printed = result.stdout.trim();
  if (printed === "unknown-deriver") return { kind: "unknown" };
  const problem = storePathProblem(printed);
  if (problem !== null || !printed.endsWith(".drv")) {
    return {
      kind: "failed",
      failure: undefined,
      detail: `'${argv.join(" ")}' printed ${
        JSON.stringify(printed.slice(0, 200))
      }, not a .drv store path`,
    };
  }
  return { kind: "known", drv: parseStorePath(printed) };
}

/** The attempt recording a deriver lookup that gave no derivation. */
function deriverAttempt(
  target: Target,
  output: StorePath,
  lookup: Exclude<DeriverLookup, { kind: "known" }>,
): LogAttempt {
  const base = { host: target.host, method: "nix-store --query --deriver" as const };
  switch (lookup.kind) {
    case "unknown":
      return {
        ...base,
        outcome: "absent",
        detail: `${output.baseName} has no known deriver (unknown-deriver): no derivation's log ` +
          "to look for",
      };
    case "not-in-store":
      return { ...base, outcome: "absent", detail: lookup.detail };
    case "failed":
      return {
        ...base,
        outcome: lookup.failure === "not-captured"
          ? "not-captured"
          : lookup.failure === "unreachable"
          ? "unreachable"
          : "failed",
        detail: `${lookup.detail}: the log files cannot be named without the deriver`,
      };
  }
}

function unreachableAttempt(host: string, why: string): LogAttempt {
  return {
    host,
    method: "ssh connection",
    outcome: "unreachable",
    detail: why.trim().split("\n").at(-1) || "ssh failed",
  };
}

/**
 * Opens a derivation's build log on one host, trying each source in turn. For an output path, the
 * host is asked for its deriver first, and the log files are those of that `.drv`.
 *
 * @example A log on this machine (the file, when `nix-store -l` has none)
 * ```ts
 * import { openBuildLog } from "./build_log.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import { parseStorePath } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/drvs/f6`, { recursive: true });
 * await Deno.writeTextFile(`${dir}/drvs/f6/qc9gny4w6ajssphr39im341ph0klsn-fail.drv`, "hello\n");
 * const drv = parseStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv");
 * const opened = await openBuildLog(new LocalTarget(), drv, { logDir: dir, nixStore: "false" });
 * assert.equal(opened.log?.method, "log file");
 * assert.equal(await new Response(opened.log!.stream).text(), "hello\n");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function openBuildLog(
  target: Target,
  drv: StorePath,
  options: OpenLogOptions = {},
): Promise<OpenLogResult> {
  const attempts: LogAttempt[] = [];
  const timeoutMs = options.timeoutMs ?? 600_000;
  const nixStore = options.nixStore ?? "nix-store";
  const large = options.largeFileBytes ?? 64 << 20;

  // Logs are kept under the derivation's name: an output path needs its deriver on this host.
  let logDrv: StorePath | undefined = drv;
  let deriver: StorePath | undefined;
  let deriverLookup: DeriverLookup["kind"] | undefined;
  let deriverAnswer: DeriverLookup | undefined;
  if (!drv.isDerivation) {
    const lookup = await queryDeriver(target, drv, {
      nixStore,
      timeoutMs: Math.min(timeoutMs, 30_000),
    });
    if (lookup.kind === "failed" && lookup.failure === "unreachable") {
      const why = /could not reach the host: (.*)$/s.exec(lookup.detail)?.[1] ?? lookup.detail;
      attempts.push(unreachableAttempt(target.host, why));
      return { attempts, unreachable: true };
    }
    deriverLookup = lookup.kind;
    deriverAnswer = lookup;
    if (lookup.kind === "known") {
      logDrv = deriver = lookup.drv;
    } else {
      logDrv = undefined;
      attempts.push(deriverAttempt(target, drv, lookup));
    }
  }
  const found = (log: OpenedLog): OpenLogResult => ({
    log,
    attempts,
    unreachable: false,
    ...(deriver !== undefined ? { deriver } : {}),
    ...(deriverLookup !== undefined ? { deriverLookup } : {}),
    ...(deriverAnswer !== undefined ? { deriverAnswer } : {}),
  });
  const files = logDrv === undefined
    ? undefined
    : buildLogFiles(logDrv, logDirFor(target, options.logDir));

  // The files first: they tell whether the host answers, and whether the log is large.
  const plain = files === undefined ? null : await statOrNull(target, files.plain);
  if (plain instanceof TargetError && plain.failure === "unreachable") {
    const why = /could not reach the host: (.*)$/s.exec(plain.message)?.[1] ?? plain.message;
    attempts.push(unreachableAttempt(target.host, why));
    return { attempts, unreachable: true };
  }
  const bz2 = files === undefined ? null : await statOrNull(target, files.bz2);
  const candidates: { path: string; info: FileInfo; compressed: boolean }[] = [];
  if (files !== undefined && plain !== null && !(plain instanceof TargetError)) {
    candidates.push({ path: files.plain, info: plain, compressed: false });
  }
  if (files !== undefined && bz2 !== null && !(bz2 instanceof TargetError)) {
    candidates.push({ path: files.bz2, info: bz2, compressed: true });
  }
  const tried = new Set<string>();
  const fileAttempt = async (c: (typeof candidates)[number]) => {
    tried.add(c.path);
    const r = await tryFile(target, c.path, c.info, c.compressed, timeoutMs);
    attempts.push(r.attempt);
    return r.log;
  };

  const big = candidates.find((c) => c.info.size >= (c.compressed ? large / 4 : large));
  if (big !== undefined) {
    attempts.push({
      host: target.host,
      method: "nix-store -l",
      outcome: "skipped",
      detail: `the log file is ${formatBytes(big.info.size)}: read directly, so that nix-store ` +
        "does not load it whole into memory",
    });
    const log = await fileAttempt(big);
    if (log) return found(log);
  }

  // Nix resolves an output path's deriver itself here (and `nix log` through a substituter's
  // narinfo), so the path given is passed on as it is.
  const viaNixStore = await tryStream(
    target,
    [nixStore, "-l", drv.path],
    "nix-store -l",
    timeoutMs,
  );
  attempts.push(viaNixStore.attempt);
  if (viaNixStore.log) return found(viaNixStore.log);
  if (viaNixStore.attempt.outcome === "unreachable") return { attempts, unreachable: true };

  if (options.nixLog) {
    const argv = ["nix", "--extra-experimental-features", "nix-command", "log", drv.path];
    const viaNixLog = await tryStream(target, argv, "nix log", timeoutMs);
    attempts.push(viaNixLog.attempt);
    if (viaNixLog.log) return found(viaNixLog.log);
  }

  for (const candidate of candidates) {
    if (tried.has(candidate.path)) continue;
    const log = await fileAttempt(candidate);
    if (log) return found(log);
  }
  const notFound: OpenLogResult = {
    attempts,
    unreachable: false,
    ...(deriver !== undefined ? { deriver } : {}),
    ...(deriverLookup !== undefined ? { deriverLookup } : {}),
    ...(deriverAnswer !== undefined ? { deriverAnswer } : {}),
  };
  if (files === undefined) return notFound; // no deriver: the attempt above says why
  if (plain instanceof TargetError && plain.failure === "not-captured") {
    // A snapshot may hold a copy of the plain log without a recorded stat.
    const text = await target.readFile(files.plain).catch(() => null);
    if (text !== null) {
      attempts.push({
        host: target.host,
        method: "log file",
        outcome: "served",
        detail: `the snapshot's copy of ${files.plain}`,
      });
      return found({
        host: target.host,
        method: "log file",
        path: files.plain,
        ...textViews(text),
        done: Promise.resolve({ ok: true, detail: "" }),
        kill: () => {},
      });
    }
  }
  if (candidates.length === 0) {
    const why = [plain, bz2].find((r) => r instanceof TargetError) as TargetError | undefined;
    attempts.push({
      host: target.host,
      method: "log file",
      outcome: why?.failure === "not-captured" ? "not-captured" : why ? "failed" : "absent",
      detail: why ? why.message : `neither ${files.plain} nor ${files.bz2} exists`,
    });
  }
  return notFound;
}

/** Options for {@link explainMissingLog}. */
export interface MissingLogOptions {
  /** The `nix-store` program (default `nix-store`). */
  nixStore?: string;
  /** Time-out per command in milliseconds (default 20 000). */
  timeoutMs?: number;
  /** What `nix-store --query --deriver` already said for this output path on this host. */
  deriver?: DeriverLookup;
}

/**
 * Why a host has no log of a derivation, where that can be known: `keep-build-log = false`, the
 * derivation not in its store, or its outputs valid without a log (substituted or copied). For an
 * output path: not in the store, no known deriver (not built from a derivation there), or a
 * deriver whose `.drv` is not in the store (substituted or copied), then as for the derivation.
 *
 * @example
 * ```ts
 * import { explainMissingLog } from "./build_log.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import { parseStorePath } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "b1", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [{
 *     argv: ["nix", "--extra-experimental-features", "nix-command", "config", "show", "--json"],
 *     code: 0,
 *     stdout: '{"keep-build-log":{"value":false,"defaultValue":true}}',
 *     stderr: "",
 *   }],
 *   paths: { "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv": { exists: false } },
 *   files: {},
 * });
 * const drv = parseStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv");
 * const reasons = await explainMissingLog(target, drv);
 * assert.match(reasons[0]!, /keep-build-log = false/);
 * ```
 */
export async function explainMissingLog(
  target: Target,
  drv: StorePath,
  options: MissingLogOptions = {},
): Promise<string[]> {
  const reasons: string[] = [];
  const timeoutMs = options.timeoutMs ?? 20_000;
  const config = await readEffectiveConfig(target).catch(() => undefined);
  if (config?.ok && config.settings.get("keep-build-log")?.value === "false") {
    reasons.push(
      `keep-build-log = false on ${target.host}: Nix does not keep build logs there`,
    );
  }
  const nixStore = options.nixStore ?? "nix-store";
  if (drv.isDerivation) {
    reasons.push(...await explainDerivation(target, drv, undefined, nixStore, timeoutMs));
    return reasons;
  }
  const lookup = options.deriver ?? await queryDeriver(target, drv, { nixStore, timeoutMs });
  switch (lookup.kind) {
    case "failed":
      break; // nix-store cannot tell (missing, unreachable, not captured)
    case "not-in-store":
      reasons.push(
        `${drv.baseName} is not in ${target.host}'s store (not built or substituted there, or ` +
          "garbage-collected)",
      );
      break;
    case "unknown":
      reasons.push(
        `${drv.baseName} has no known deriver on ${target.host} ('nix-store --query --deriver' ` +
          "prints unknown-deriver): Nix did not build it there from a derivation, so there is no " +
          "build log to find; it was added to the store directly (nix-store --add, a local path " +
          "or a builtins.fetch* result in a Nix expression), or copied from a store that did not " +
          "record a deriver either (a binary cache's narinfo, nix copy and nix-store --export " +
          "normally carry it)",
      );
      break;
    case "known":
      reasons.push(...await explainDerivation(target, lookup.drv, drv, nixStore, timeoutMs));
      break;
  }
  return reasons;
}

/** The derivation half of {@link explainMissingLog}; `output` is the output path asked about. */
async function explainDerivation(
  target: Target,
  drv: StorePath,
  output: StorePath | undefined,
  nixStore: string,
  timeoutMs: number,
): Promise<string[]> {
  const onHost = (argv: string[]) => target.kind === "ssh" ? withRemotePath(argv) : argv;
  const validity = await target.run(onHost([nixStore, "--check-validity", drv.path]), {
    timeoutMs,
  });
  if (
    validity.failure !== undefined || (validity.code !== 0 && !/is not valid/.test(validity.stderr))
  ) {
    return []; // nix-store cannot tell (missing, unreachable, not captured)
  }
  if (validity.code !== 0) {
    return [
      output !== undefined
        ? `${output.baseName} is in ${target.host}'s store but its derivation ${drv.baseName} ` +
          "is not: the output was substituted from a binary cache or copied from another machine " +
          "(the deriver's name travels with a store path; the .drv and its build log do not), or " +
          "the .drv was garbage-collected"
        : `${drv.baseName} is not in ${target.host}'s store (instantiated elsewhere, or garbage-collected)`,
    ];
  }
  const outputs = await target.run(onHost([nixStore, "--query", "--outputs", drv.path]), {
    timeoutMs,
  });
  if (outputs.code !== 0 || outputs.failure) return [];
  const paths = outputs.stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (paths.length === 0) return [];
  const valid = await target.run(
    onHost([nixStore, "--check-validity", "--print-invalid", ...paths]),
    {
      timeoutMs,
    },
  );
  if (valid.failure) return [];
  const invalid = valid.stdout.split("\n").filter((l) => l.trim() !== "");
  if (valid.code === 0 && invalid.length === 0) {
    return [
      `${
        output !== undefined ? `the outputs of its derivation ${drv.baseName}` : "its outputs"
      } are valid on ${target.host} but there is no log: they were substituted from a ` +
      "binary cache or copied from another machine (logs do not travel with store paths)",
    ];
  }
  return [
    `${target.host} has the derivation but not its outputs and no log: it was not built there ` +
    "(a dependency failed first, or the build never started), or the log was deleted",
  ];
}
