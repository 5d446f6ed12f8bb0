/**
 * The target that answers from a captured bundle (`collect.ts` writes one), so every script can analyse
 * state collected elsewhere, offline.
 *
 * Bundle layout:
 *
 * ```
 * DIR/meta.json      {"host": "...", "collected_at": "<ISO 8601>", "tool": "<name> <version>"}
 * DIR/files/<absolute path>   verbatim copies, e.g. files/etc/nix/nix.conf, files/proc/meminfo
 * DIR/commands.json  [{"argv": [...], "code": 0, "stdout": "...", "stderr": "..."}]
 * DIR/paths.json     {"<absolute path>": {"exists": true, "entries": [...], "stat": {...}}}
 * ```
 *
 * @module
 */

import { z } from "zod";
import { ParseError, parseJsonText, quoteForMessage, UsageError } from "./errors.ts";
import type {
  DirEntry,
  FileInfo,
  RunFailure,
  RunOptions,
  RunResult,
  StreamedRun,
  Target,
} from "./target.ts";
import { TargetError } from "./target.ts";

/** The bundle's `meta.json`. */
export interface SnapshotMeta {
  /** The host it was collected on. */
  host: string;
  /** When, ISO 8601. */
  collected_at: string;
  /** The collecting tool and its version. */
  tool: string;
}

/** One entry of `commands.json`. */
export interface CapturedCommand {
  /** The argv, exactly as a check runs it. */
  argv: string[];
  /** Its exit code. */
  code: number;
  /** Its standard output. */
  stdout: string;
  /** Its standard error. */
  stderr: string;
  /** Why it gave no result of its own, if so. */
  failure?: RunFailure;
}

/** One entry of `paths.json`. */
export interface CapturedPath {
  /** Whether the path existed. */
  exists: boolean;
  /** Directory entries, when listed. */
  entries?: string[];
  /** Its stat, when taken. */
  stat?: FileInfo;
  /** Set when the file is a secret and was not copied. */
  redacted?: boolean;
}

const metaSchema = z.object({
  host: z.string().min(1),
  collected_at: z.string(),
  tool: z.string(),
});

const runFailure = z.enum(["timeout", "unreachable", "not-captured", "not-found", "aborted"]);
const commandSchema = z.object({
  argv: z.array(z.string()).min(1),
  code: z.number().int(),
  stdout: z.string(),
  stderr: z.string(),
  failure: runFailure.optional(),
});

const fileInfoSchema = z.object({
  type: z.enum(["file", "directory", "symlink", "other"]),
  size: z.number(),
  mtime: z.number(),
  mode: z.number(),
  uid: z.number(),
  isSymlink: z.boolean(),
});

const pathSchema = z.object({
  exists: z.boolean(),
  entries: z.array(z.string()).optional(),
  stat: fileInfoSchema.optional(),
  redacted: z.boolean().optional(),
});

/** Everything a bundle holds, in memory. */
export interface SnapshotData {
  /** `meta.json`. */
  meta: SnapshotMeta;
  /** `commands.json`. */
  commands: CapturedCommand[];
  /** `paths.json`. */
  paths: Record<string, CapturedPath>;
  /** File contents by absolute path (`files/`). */
  files: Record<string, string>;
}

/**
 * Refuses a path that could escape the bundle: it must be absolute, normalised, free of `..` and NUL.
 *
 * @example
 * ```ts
 * import { checkSnapshotPath } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(checkSnapshotPath("/etc/nix/nix.conf"), "/etc/nix/nix.conf");
 * assert.throws(() => checkSnapshotPath("/etc/../root/.ssh/id_ed25519"), /'\.\.'/);
 * ```
 */
export function checkSnapshotPath(path: string): string {
  if (!path.startsWith("/")) throw new UsageError(`Path ${quoteForMessage(path)} is not absolute`);
  if (path.includes("\0")) throw new UsageError(`Path ${quoteForMessage(path)} contains NUL`);
  if (path.split("/").some((part) => part === ".." || part === ".")) {
    throw new UsageError(`Path ${quoteForMessage(path)} contains '.' or '..'`);
  }
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

function parseJson<T>(name: string, text: string, schema: z.ZodType): T {
  const value = parseJsonText(text, name);
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ParseError(name, `${issue.path.join(".") || "top level"}: ${issue.message}`);
  }
  return parsed.data as T;
}

async function readOptional(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

async function walkFiles(root: string, prefix: string, into: Record<string, string>) {
  for await (const entry of Deno.readDir(root + prefix)) {
    const rel = `${prefix}/${entry.name}`;
    if (entry.isDirectory) await walkFiles(root, rel, into);
    else if (entry.isFile) into[checkSnapshotPath(rel)] = await Deno.readTextFile(root + rel);
    // Symlinks in a bundle are ignored: copies are regular files, a link could point outside.
  }
}

/**
 * Reads a bundle from disk, validating every part; errors name the file and what is wrong.
 *
 * @example
 * ```ts
 * import { loadSnapshot } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * await assert.rejects(loadSnapshot("/nonexistent-bundle"), /meta\.json/);
 * ```
 */
export async function loadSnapshot(dir: string): Promise<SnapshotData> {
  const metaText = await readOptional(`${dir}/meta.json`).catch((e) => {
    throw new UsageError(`Snapshot ${dir}: cannot read meta.json: ${(e as Error).message}`);
  });
  if (metaText === null) {
    throw new UsageError(`Snapshot ${dir}: no meta.json (is this a bundle written by collect.ts?)`);
  }
  const meta = parseJson<SnapshotMeta>(`${dir}/meta.json`, metaText, metaSchema);
  const commandsText = await readOptional(`${dir}/commands.json`);
  const commands = commandsText === null
    ? []
    : parseJson<CapturedCommand[]>(`${dir}/commands.json`, commandsText, z.array(commandSchema));
  const pathsText = await readOptional(`${dir}/paths.json`);
  const rawPaths = pathsText === null ? {} : parseJson<Record<string, CapturedPath>>(
    `${dir}/paths.json`,
    pathsText,
    z.record(z.string(), pathSchema),
  );
  const paths: Record<string, CapturedPath> = {};
  for (const [path, value] of Object.entries(rawPaths)) {
    try {
      paths[checkSnapshotPath(path)] = value;
    } catch (error) {
      // "Path '../x' is not absolute" becomes "key '../x' is not absolute", in paths.json.
      throw new ParseError(`${dir}/paths.json`, (error as Error).message.replace(/^Path /, "key "));
    }
  }
  const files: Record<string, string> = {};
  try {
    await walkFiles(`${dir}/files`, "", files);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return { meta, commands, paths, files };
}

function notCaptured(argv: readonly string[]): RunResult {
  return {
    code: -1,
    stdout: "",
    stderr: `not captured in this snapshot: ${argv.join(" ")}`,
    failure: "not-captured",
  };
}

/**
 * Answers checks from a bundle.
 *
 * @example
 * ```ts
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "nixos", collected_at: "2026-11-25T10:00:00Z", tool: "collect 0.1.0" },
 *   commands: [{ argv: ["nproc"], code: 0, stdout: "8\n", stderr: "" }],
 *   paths: {},
 *   files: { "/etc/nix/nix.conf": "max-jobs = 0\n" },
 * });
 * assert.equal((await target.run(["nproc"])).stdout, "8\n");
 * assert.equal((await target.run(["uptime"])).failure, "not-captured");
 * assert.equal(await target.readFile("/etc/nix/nix.conf"), "max-jobs = 0\n");
 * ```
 */
export class SnapshotTarget implements Target {
  /** Always `snapshot`. */
  readonly kind = "snapshot" as const;
  /** The host the bundle was collected on. */
  readonly host: string;
  /** The bundle's meta data. */
  readonly meta: SnapshotMeta;
  #data: SnapshotData;
  #commands = new Map<string, CapturedCommand>();

  /** Wraps loaded bundle data. */
  constructor(data: SnapshotData) {
    this.#data = data;
    this.meta = data.meta;
    this.host = data.meta.host;
    for (const command of data.commands) this.#commands.set(JSON.stringify(command.argv), command);
  }

  /** Loads a bundle directory (throws `UsageError`/`ParseError` naming what is wrong). */
  static async open(dir: string): Promise<SnapshotTarget> {
    return new SnapshotTarget(await loadSnapshot(dir));
  }

  /** The captured result of exactly this argv, or a "not captured" result. */
  run(argv: readonly string[], _options?: RunOptions): Promise<RunResult> {
    const found = this.#commands.get(JSON.stringify(argv));
    if (found === undefined) return Promise.resolve(notCaptured(argv));
    const result: RunResult = { code: found.code, stdout: found.stdout, stderr: found.stderr };
    if (found.failure) result.failure = found.failure;
    return Promise.resolve(result);
  }

  /** The captured output as a stream. */
  stream(argv: readonly string[], options?: RunOptions): StreamedRun {
    const result = this.run(argv, options);
    const bytes = result.then((r) => new TextEncoder().encode(r.stdout));
    return {
      stdout: new ReadableStream({
        async start(controller) {
          controller.enqueue(await bytes);
          controller.close();
        },
      }),
      status: result.then((r) => ({ ...r, stdout: "" })),
      kill: () => {},
    };
  }

  #path(path: string): CapturedPath | undefined {
    return this.#data.paths[checkSnapshotPath(path)];
  }

  /** The captured copy; `null` when it was absent when collected. */
  readFile(path: string): Promise<string | null> {
    const clean = checkSnapshotPath(path);
    const text = this.#data.files[clean];
    if (text !== undefined) return Promise.resolve(text);
    const info = this.#path(clean);
    if (info?.redacted) {
      return Promise.reject(new TargetError(this.host, clean, "redacted from this snapshot"));
    }
    if (info && !info.exists) return Promise.resolve(null);
    return Promise.reject(
      new TargetError(this.host, clean, "not captured in this snapshot", "not-captured"),
    );
  }

  /** The captured listing; `null` when it was absent. */
  readDir(path: string): Promise<DirEntry[] | null> {
    const info = this.#path(path);
    if (info && !info.exists) return Promise.resolve(null);
    if (info?.entries) return Promise.resolve(info.entries.map((name) => ({ name })));
    return Promise.reject(
      new TargetError(this.host, path, "listing not captured in this snapshot", "not-captured"),
    );
  }

  /** The captured stat; `null` when it was absent. */
  stat(path: string): Promise<FileInfo | null> {
    const info = this.#path(path);
    if (info && !info.exists) return Promise.resolve(null);
    if (info?.stat) return Promise.resolve(info.stat);
    return Promise.reject(
      new TargetError(this.host, path, "stat not captured in this snapshot", "not-captured"),
    );
  }

  /** Nothing to close. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  /** When the bundle was collected (its checks' "now"). */
  now(): number {
    const at = Date.parse(this.meta.collected_at);
    return Number.isNaN(at) ? Date.now() : at;
  }
}
