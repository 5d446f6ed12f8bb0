/**
 * Where a derivation's build log can be read, and reading it as a stream: `nix-store -l` (local
 * logs of every Nix version), `nix log` (also asks substituters, on the controller), and the log
 * file itself (`<logDir>/drvs/xx/rest`, `.bz2` decompressed by `bzip2 -dc` on the host) when the
 * nix commands fail or the log is so large that `nix-store -l` would load it whole into memory.
 * Each attempt is recorded, so a missing log comes with the reason.
 *
 * `nix log --store ssh-ng://host` cannot serve logs (`getBuildLogExact` is not supported), so a
 * builder's copy is read by running these commands on the builder over ssh.
 *
 * @module
 */

import { formatBytes } from "./meminfo.ts";
import { readEffectiveConfig } from "./nix_config.ts";
import { buildLogFiles, DEFAULT_LOG_DIR, type StorePath } from "./store_path.ts";
import type { FileInfo, RunResult, StreamedRun, Target } from "./target.ts";
import { describeFailure, TargetError } from "./target.ts";

/** How a log was (or could have been) read. */
export type LogMethod =
  | "nix-store -l"
  | "nix log"
  | "log file"
  | "compressed log file"
  | "standard input"
  | "ssh connection";

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

/**
 * Opens a derivation's build log on one host, trying each source in turn.
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
  const files = buildLogFiles(drv, logDirFor(target, options.logDir));
  const large = options.largeFileBytes ?? 64 << 20;

  // The files first: they tell whether the host answers, and whether the log is large.
  const plain = await statOrNull(target, files.plain);
  if (plain instanceof TargetError && plain.failure === "unreachable") {
    const why = /could not reach the host: (.*)$/s.exec(plain.message)?.[1] ?? plain.message;
    attempts.push({
      host: target.host,
      method: "ssh connection",
      outcome: "unreachable",
      detail: why.trim().split("\n").at(-1) ?? why,
    });
    return { attempts, unreachable: true };
  }
  const bz2 = await statOrNull(target, files.bz2);
  const candidates: { path: string; info: FileInfo; compressed: boolean }[] = [];
  if (plain !== null && !(plain instanceof TargetError)) {
    candidates.push({ path: files.plain, info: plain, compressed: false });
  }
  if (bz2 !== null && !(bz2 instanceof TargetError)) {
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
    if (log) return { log, attempts, unreachable: false };
  }

  const nixStore = options.nixStore ?? "nix-store";
  const viaNixStore = await tryStream(
    target,
    [nixStore, "-l", drv.path],
    "nix-store -l",
    timeoutMs,
  );
  attempts.push(viaNixStore.attempt);
  if (viaNixStore.log) return { log: viaNixStore.log, attempts, unreachable: false };
  if (viaNixStore.attempt.outcome === "unreachable") return { attempts, unreachable: true };

  if (options.nixLog) {
    const argv = ["nix", "--extra-experimental-features", "nix-command", "log", drv.path];
    const viaNixLog = await tryStream(target, argv, "nix log", timeoutMs);
    attempts.push(viaNixLog.attempt);
    if (viaNixLog.log) return { log: viaNixLog.log, attempts, unreachable: false };
  }

  for (const candidate of candidates) {
    if (tried.has(candidate.path)) continue;
    const log = await fileAttempt(candidate);
    if (log) return { log, attempts, unreachable: false };
  }
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
      return {
        log: {
          host: target.host,
          method: "log file",
          path: files.plain,
          ...textViews(text),
          done: Promise.resolve({ ok: true, detail: "" }),
          kill: () => {},
        },
        attempts,
        unreachable: false,
      };
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
  return { attempts, unreachable: false };
}

/** Options for {@link explainMissingLog}. */
export interface MissingLogOptions {
  /** The `nix-store` program (default `nix-store`). */
  nixStore?: string;
  /** Time-out per command in milliseconds (default 20 000). */
  timeoutMs?: number;
}

/**
 * Why a host has no log of a derivation, where that can be known: `keep-build-log = false`, the
 * derivation not in its store, or its outputs valid without a log (substituted or copied).
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
  const onHost = (argv: string[]) => target.kind === "ssh" ? withRemotePath(argv) : argv;
  const validity = await target.run(onHost([nixStore, "--check-validity", drv.path]), {
    timeoutMs,
  });
  if (
    validity.failure !== undefined || (validity.code !== 0 && !/is not valid/.test(validity.stderr))
  ) {
    return reasons; // nix-store cannot tell (missing, unreachable, not captured)
  }
  if (validity.code !== 0) {
    reasons.push(
      drv.isDerivation
        ? `${drv.baseName} is not in ${target.host}'s store (instantiated elsewhere, or garbage-collected)`
        : `${drv.baseName} is not in ${target.host}'s store`,
    );
    return reasons;
  }
  if (!drv.isDerivation) return reasons;
  const outputs = await target.run(onHost([nixStore, "--query", "--outputs", drv.path]), {
    timeoutMs,
  });
  if (outputs.code !== 0 || outputs.failure) return reasons;
  const paths = outputs.stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (paths.length === 0) return reasons;
  const valid = await target.run(
    onHost([nixStore, "--check-validity", "--print-invalid", ...paths]),
    {
      timeoutMs,
    },
  );
  if (valid.failure) return reasons;
  const invalid = valid.stdout.split("\n").filter((l) => l.trim() !== "");
  if (valid.code === 0 && invalid.length === 0) {
    reasons.push(
      `its outputs are valid on ${target.host} but there is no log: they were substituted from a ` +
        "binary cache or copied from another machine (logs do not travel with store paths)",
    );
  } else {
    reasons.push(
      `${target.host} has the derivation but not its outputs and no log: it was not built there ` +
        "(a dependency failed first, or the build never started), or the log was deleted",
    );
  }
  return reasons;
}
