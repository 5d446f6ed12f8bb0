/**
 * A caching view of a {@link Target} for read-only runs: the health check and doctor ask many
 * checks the same questions (the Nix settings, `/proc/meminfo`), and over ssh the cheap reads are
 * batched into one remote command.
 *
 * @module
 */

import { shellJoin } from "./shell_quote.ts";
import {
  type DirEntry,
  type FileInfo,
  type RunOptions,
  type RunResult,
  type StreamedRun,
  type Target,
  TargetError,
  targetNow,
} from "./target.ts";

/** One read for {@link CachingTarget.prefetch}: a file, a directory listing, a stat or a command. */
export type PrefetchItem =
  | { file: string }
  | { dir: string }
  | { stat: string }
  | { argv: readonly string[] };

// Runs every item at once in the background (outputs to a temporary directory), waits, then
// prints them in order between boundary lines: `B i o`, stdout, `B i e CODE`, stderr.
const BATCH_SCRIPT = [
  "B=$1; shift; t=$(mktemp -d 2>/dev/null || mktemp -d -t nbr) || exit 70; trap 'rm -rf \"$t\"' EXIT",
  "i=0",
  'while [ "$#" -ge 2 ]; do',
  "  k=$1; a=$2; shift 2",
  "  (",
  "    r=0",
  "    case $k in",
  '      f) if [ -e "$a" ]; then cat -- "$a" || r=$?; else r=44; fi ;;',
  '      d) if [ -e "$a" ]; then (cd -- "$a" && exec ls -1A) || r=$?; else r=44; fi ;;',
  '      s) if [ -e "$a" ]; then if [ -L "$a" ]; then l=1; else l=0; fi; ' +
  "s=$(stat -L -c '%F|%s|%Y|%a|%u' -- \"$a\" 2>/dev/null || stat -L -f '%HT|%z|%m|%Lp|%u' -- \"$a\") " +
  '&& echo "$l|$s" || r=2; else r=44; fi ;;',
  '      c) (eval "$a") </dev/null || r=$? ;;',
  "    esac",
  '    echo "$r" >"$t/$i.r"',
  '  ) >"$t/$i.o" 2>"$t/$i.e" </dev/null &',
  "  i=$((i+1))",
  "done",
  "wait",
  "j=0",
  'while [ "$j" -lt "$i" ]; do',
  '  printf "%s %s o\\n" "$B" "$j"; cat "$t/$j.o"',
  '  printf "\\n%s %s e %s\\n" "$B" "$j" "$(cat "$t/$j.r" 2>/dev/null || echo 70)"; cat "$t/$j.e"; printf "\\n"',
  "  j=$((j+1))",
  "done",
  'printf "%s end\\n" "$B"',
].join("\n");

function key(argv: readonly string[]): string {
  return JSON.stringify(argv);
}

/**
 * A read-only run's view of a target: identical reads and commands share one answer (several
 * checks need the Nix settings, `/proc/meminfo`...), and over ssh the cheap reads can come from one
 * batched remote command ({@link CachingTarget.prefetch}). What was not prefetched goes to the
 * wrapped target. Only for runs that change nothing: a command run twice is run once.
 *
 * @example Two checks asking for the Nix version run `nix --version` once
 * ```ts
 * import { CachingTarget } from "./caching_target.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const snapshot = new SnapshotTarget({
 *   meta: { host: "builder1", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [{ argv: ["nix", "--version"], code: 0, stdout: "nix (Nix) 2.8.0\n", stderr: "" }],
 *   paths: {},
 *   files: {},
 * });
 * const cached = new CachingTarget(snapshot);
 * const first = await cached.run(["nix", "--version"]);
 * const second = await cached.run(["nix", "--version"]);
 * assert.equal(second.stdout, first.stdout);
 * assert.equal(cached.inner, snapshot);
 * ```
 */
export class CachingTarget implements Target {
  /** The wrapped target's kind. */
  readonly kind: Target["kind"];
  /** The wrapped target's host. */
  readonly host: string;
  /** The wrapped target, for what must not be cached (and for `instanceof` checks). */
  readonly inner: Target;
  #files = new Map<string, Promise<string | null>>();
  #dirs = new Map<string, Promise<DirEntry[] | null>>();
  #stats = new Map<string, Promise<FileInfo | null>>();
  #commands = new Map<string, Promise<RunResult>>();

  /** Wraps `inner`; a `CachingTarget` is not wrapped twice: use {@link cachingTarget}. */
  constructor(inner: Target) {
    this.inner = inner;
    this.kind = inner.kind;
    this.host = inner.host;
  }

  /**
   * Reads every item with one command and caches each answer; returns that command's result (a
   * failure says the host is unreachable, timed out...), after which each item is read on its own.
   */
  async prefetch(wanted: readonly PrefetchItem[], timeoutMs: number): Promise<RunResult> {
    // What an earlier reader already asked for keeps its answer (doctor reads nix's settings
    // before the health check prefetches them).
    const items = wanted.filter((item) =>
      "file" in item
        ? !this.#files.has(item.file)
        : "dir" in item
        ? !this.#dirs.has(item.dir)
        : "stat" in item
        ? !this.#stats.has(item.stat)
        : !this.#commands.has(key(item.argv))
    );
    if (items.length === 0) return { code: 0, stdout: "", stderr: "" };
    const boundary = `NBR-${crypto.randomUUID()}`;
    const args: string[] = [];
    for (const item of items) {
      if ("file" in item) args.push("f", item.file);
      else if ("dir" in item) args.push("d", item.dir);
      else if ("stat" in item) args.push("s", item.stat);
      else args.push("c", shellJoin(item.argv));
    }
    const result = await this.inner.run(["sh", "-c", BATCH_SCRIPT, "sh", boundary, ...args], {
      timeoutMs,
    });
    const end = `${boundary} end\n`;
    if (result.failure || result.code !== 0 || !result.stdout.endsWith(end)) return result;
    const marker = new RegExp(`(?:^|\\n)${boundary} (\\d+) ([oe])(?: (\\d+))?\\n`, "g");
    const body = result.stdout.slice(0, -end.length);
    const sections: { index: number; part: string; code: number; from: number; to: number }[] = [];
    for (const m of body.matchAll(marker)) {
      const last = sections.at(-1);
      if (last) last.to = m.index;
      sections.push({
        index: Number(m[1]),
        part: m[2]!,
        code: Number(m[3] ?? 0),
        from: m.index + m[0].length,
        to: body.length,
      });
    }
    const outputs = new Map<number, { stdout: string; stderr: string; code: number }>();
    for (const s of sections) {
      const text = body.slice(s.from, s.to);
      const entry = outputs.get(s.index) ?? { stdout: "", stderr: "", code: 0 };
      if (s.part === "o") entry.stdout = text;
      else {
        entry.code = s.code;
        // The script adds one newline after stderr.
        entry.stderr = text.endsWith("\n") ? text.slice(0, -1) : text;
      }
      outputs.set(s.index, entry);
    }
    items.forEach((item, i) => {
      const out = outputs.get(i);
      if (out === undefined) return;
      const answer = <T>(subject: string, ok: () => T): Promise<T | null> => {
        if (out.code === 44) return Promise.resolve(null);
        if (out.code === 0) return Promise.resolve(ok());
        const reason = out.stderr.trim().split("\n").at(-1) || `exit ${out.code}`;
        const rejected = Promise.reject(new TargetError(this.host, subject, reason));
        rejected.catch(() => {});
        return rejected;
      };
      if ("file" in item) this.#files.set(item.file, answer(item.file, () => out.stdout));
      else if ("dir" in item) {
        this.#dirs.set(
          item.dir,
          answer(
            item.dir,
            () => out.stdout.split("\n").filter((n) => n !== "").sort().map((name) => ({ name })),
          ),
        );
      } else if ("stat" in item) {
        this.#stats.set(item.stat, answer(item.stat, () => parseStatLine(out.stdout)));
      } else {
        this.#commands.set(
          key(item.argv),
          Promise.resolve({ code: out.code, stdout: out.stdout, stderr: out.stderr }),
        );
      }
    });
    return result;
  }

  /** Runs `argv` once per run; with stdin or a signal, every time. */
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    if (options?.stdin !== undefined || options?.signal !== undefined) {
      return this.inner.run(argv, options);
    }
    return this.#memo(this.#commands, key(argv), () => this.inner.run(argv, options))
      .then((r) => ({ ...r }));
  }

  /** Streams are never cached. */
  stream(argv: readonly string[], options?: RunOptions): StreamedRun {
    return this.inner.stream(argv, options);
  }

  /** Reads `path` once per run. */
  readFile(path: string): Promise<string | null> {
    return this.#memo(this.#files, path, () => this.inner.readFile(path));
  }

  /** Lists `path` once per run. */
  readDir(path: string): Promise<DirEntry[] | null> {
    return this.#memo(this.#dirs, path, () => this.inner.readDir(path));
  }

  /** Stats `path` once per run. */
  stat(path: string): Promise<FileInfo | null> {
    return this.#memo(this.#stats, path, () => this.inner.stat(path));
  }

  #memo<T>(cache: Map<string, Promise<T>>, k: string, load: () => Promise<T>): Promise<T> {
    let value = cache.get(k);
    if (value === undefined) {
      value = load();
      value.catch(() => {});
      cache.set(k, value);
    }
    return value;
  }

  /** The wrapped target's "now" (a snapshot's collection time). */
  now(): number {
    return targetNow(this.inner);
  }

  /** Closes the wrapped target. */
  close(): Promise<void> {
    return this.inner.close();
  }
}

function parseStatLine(line: string): FileInfo {
  const [link, type = "", size, mtime, mode, uid] = line.trim().split("|");
  const lower = type.toLowerCase();
  return {
    type: lower.includes("regular") ? "file" : lower.includes("directory") ? "directory" : "other",
    size: Number(size),
    mtime: Number(mtime),
    mode: parseInt(mode ?? "0", 8),
    uid: Number(uid),
    isSymlink: link === "1",
  };
}

/**
 * `target` behind a cache, unless it already is one (so layers share one cache).
 *
 * @example
 * ```ts
 * import { CachingTarget, cachingTarget } from "./caching_target.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const cached = cachingTarget(new LocalTarget());
 * assert.ok(cached instanceof CachingTarget);
 * assert.equal(cachingTarget(cached), cached);
 * await cached.close();
 * ```
 */
export function cachingTarget(target: Target): CachingTarget {
  return target instanceof CachingTarget ? target : new CachingTarget(target);
}
