/**
 * A target wrapper that records everything a check read, so the same checks can later run from the
 * recording (a snapshot bundle). Secrets are never recorded.
 *
 * @module
 */

import { VERSION } from "./findings.ts";
import type { CapturedCommand, CapturedPath, SnapshotData } from "./snapshot_target.ts";
import type { DirEntry, FileInfo, RunOptions, RunResult, StreamedRun, Target } from "./target.ts";

const SECRET_PATHS = [
  /(^|\/)\.netrc$/,
  /(^|\/)netrc$/,
  /(^|\/)id_[a-z0-9]+$/,
  /(^|\/)ssh_host_[a-z0-9]+_key$/,
  /\.(key|pem|sec|secret)$/,
  /(^|\/)secret[^/]*$/,
  /(^|\/)shadow$/,
  /(^|\/)gshadow$/,
];

/**
 * Whether a file must never be copied into a bundle (keys, netrc, secret-key files).
 *
 * @example
 * ```ts
 * import { isSecretPath } from "./recording_target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isSecretPath("/root/.ssh/id_ed25519"), true);
 * assert.equal(isSecretPath("/etc/nix/nix.conf"), false);
 * ```
 */
export function isSecretPath(path: string, extra: readonly string[] = []): boolean {
  return extra.includes(path) || SECRET_PATHS.some((re) => re.test(path));
}

/**
 * Blanks the values of secret settings (`access-tokens`, `secret-key-files` contents) in nix.conf text,
 * `nix config show` text and JSON.
 *
 * @example
 * ```ts
 * import { redactSecrets } from "./recording_target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(redactSecrets("access-tokens = github.com=ghp_x\n"), "access-tokens = <redacted>\n");
 * ```
 */
export function redactSecrets(text: string): string {
  const trimmed = text.trimStart();
  if (trimmed.startsWith("{")) {
    try {
      const data = JSON.parse(text) as Record<string, unknown>;
      let changed = false;
      for (const key of ["access-tokens", "extra-access-tokens"]) {
        const entry = data[key];
        if (entry === undefined) continue;
        changed = true;
        if (entry !== null && typeof entry === "object" && "value" in entry) {
          (entry as Record<string, unknown>).value = "<redacted>";
        } else {
          data[key] = "<redacted>";
        }
      }
      if (changed) return JSON.stringify(data) + (text.endsWith("\n") ? "\n" : "");
    } catch {
      // not JSON: fall through to the line form
    }
  }
  return text.replace(/^(\s*(?:extra-)?access-tokens\s*=).*$/gm, "$1 <redacted>");
}

/**
 * Records what checks read through it.
 *
 * @example
 * ```ts
 * import { LocalTarget } from "./local_target.ts";
 * import { RecordingTarget } from "./recording_target.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const recording = new RecordingTarget(new LocalTarget());
 * await recording.run(["echo", "hi"]);
 * const replay = new SnapshotTarget(recording.snapshot());
 * assert.equal((await replay.run(["echo", "hi"])).stdout, "hi\n");
 * ```
 */
export class RecordingTarget implements Target {
  /** The wrapped target's kind. */
  readonly kind: Target["kind"];
  /** The wrapped target's host. */
  readonly host: string;
  #inner: Target;
  #commands = new Map<string, CapturedCommand>();
  #paths = new Map<string, CapturedPath>();
  #files = new Map<string, string>();
  #secretFiles: string[];
  #startedAt = new Date();

  /**
   * Wraps a target; `secretFiles` are extra paths never to copy (e.g. `secret-key-files`); `host`
   * names the machine in the bundle instead of the target's own name (e.g. the hostname, not
   * `localhost`).
   */
  constructor(inner: Target, options: { secretFiles?: string[]; host?: string } = {}) {
    this.#inner = inner;
    this.kind = inner.kind;
    this.host = options.host ?? inner.host;
    this.#secretFiles = options.secretFiles ?? [];
  }

  /** Adds paths that must never be copied (found while running, e.g. `secret-key-files`). */
  addSecretFiles(paths: readonly string[]): void {
    this.#secretFiles.push(...paths);
    for (const path of paths) {
      if (this.#files.delete(path)) this.#paths.set(path, { exists: true, redacted: true });
    }
  }

  #pathEntry(path: string): CapturedPath {
    let entry = this.#paths.get(path);
    if (!entry) {
      entry = { exists: true };
      this.#paths.set(path, entry);
    }
    return entry;
  }

  /** Runs and records (output with secrets redacted). */
  async run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    const result = await this.#inner.run(argv, options);
    const captured: CapturedCommand = {
      argv: [...argv],
      code: result.code,
      stdout: redactSecrets(result.stdout),
      stderr: redactSecrets(result.stderr),
    };
    if (result.failure) captured.failure = result.failure;
    this.#commands.set(JSON.stringify(argv), captured);
    return result;
  }

  /** Streams without recording (streams are live views, not state). */
  stream(argv: readonly string[], options?: RunOptions): StreamedRun {
    return this.#inner.stream(argv, options);
  }

  /** Reads and records the file (secret files are recorded as redacted, not copied). */
  async readFile(path: string): Promise<string | null> {
    const text = await this.#inner.readFile(path);
    if (text === null) {
      this.#pathEntry(path).exists = false;
    } else if (isSecretPath(path, this.#secretFiles)) {
      this.#pathEntry(path).redacted = true;
    } else {
      this.#files.set(path, redactSecrets(text));
    }
    return text;
  }

  /** Lists and records. */
  async readDir(path: string): Promise<DirEntry[] | null> {
    const entries = await this.#inner.readDir(path);
    const entry = this.#pathEntry(path);
    if (entries === null) entry.exists = false;
    else entry.entries = entries.map((e) => e.name);
    return entries;
  }

  /** Stats and records. */
  async stat(path: string): Promise<FileInfo | null> {
    const info = await this.#inner.stat(path);
    const entry = this.#pathEntry(path);
    if (info === null) entry.exists = false;
    else entry.stat = info;
    return info;
  }

  /** Closes the wrapped target. */
  close(): Promise<void> {
    return this.#inner.close();
  }

  /** What was recorded, as bundle data; collected at the time the recording started by default. */
  snapshot(collectedAt: Date = this.#startedAt): SnapshotData {
    return {
      meta: {
        host: this.host,
        collected_at: collectedAt.toISOString(),
        tool: `collect ${VERSION}`,
      },
      commands: [...this.#commands.values()],
      paths: Object.fromEntries(this.#paths),
      files: Object.fromEntries(this.#files),
    };
  }
}

/**
 * Writes bundle data to a directory (created; it must not exist yet or be empty).
 *
 * @example
 * ```ts
 * import { writeSnapshot } from "./recording_target.ts";
 * import { loadSnapshot } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await writeSnapshot(`${dir}/b`, {
 *   meta: { host: "h", collected_at: "2026-11-25T00:00:00.000Z", tool: "collect" },
 *   commands: [],
 *   paths: {},
 *   files: { "/etc/hostname": "h\n" },
 * });
 * assert.equal((await loadSnapshot(`${dir}/b`)).files["/etc/hostname"], "h\n");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeSnapshot(dir: string, data: SnapshotData): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for await (const _ of Deno.readDir(dir)) {
    throw new Error(`Cannot write snapshot to ${dir}: the directory is not empty`);
  }
  await Deno.writeTextFile(`${dir}/meta.json`, JSON.stringify(data.meta, null, 2) + "\n");
  await Deno.writeTextFile(`${dir}/commands.json`, JSON.stringify(data.commands, null, 2) + "\n");
  await Deno.writeTextFile(`${dir}/paths.json`, JSON.stringify(data.paths, null, 2) + "\n");
  for (const [path, text] of Object.entries(data.files)) {
    const target = `${dir}/files${path}`;
    await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(target, text);
  }
}
