/**
 * Local subprocesses with a time-out that always wins: each child leads its own process group, and the
 * whole group is killed on time-out, abort or exit, so a grandchild holding a pipe cannot hang us.
 *
 * @module
 */

import type { RunFailure, RunResult, StreamedRun } from "./target.ts";

/** Options for {@link runProcess}. */
export interface ProcessOptions {
  /** Time-out in milliseconds. */
  timeoutMs: number;
  /** Standard input. */
  stdin?: string | Uint8Array;
  /** Extra environment. */
  env?: Record<string, string>;
  /** Abort signal. */
  signal?: AbortSignal;
  /** Called once when the time-out fires, before the kill (the ssh target kills the remote side). */
  onTimeout?: () => Promise<void>;
}

const live = new Set<number>();
const decoder = new TextDecoder();

/** Kills every process group this module started and has not reaped. */
export function killAllProcesses(): void {
  for (const pid of live) killGroup(pid);
}

function killGroup(pid: number): void {
  try {
    Deno.kill(-pid, "SIGKILL");
  } catch {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

interface Spawned {
  child: Deno.ChildProcess;
  done: Promise<{ code: number; failure?: RunFailure }>;
  cancel: () => void;
}

function spawn(argv: readonly string[], options: ProcessOptions, stdout: "piped"): Spawned {
  const [program, ...args] = argv;
  if (program === undefined) throw new Error("Cannot run an empty command");
  const child = new Deno.Command(program, {
    args,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout,
    stderr: "piped",
    detached: true,
    ...(options.env ? { env: options.env } : {}),
  }).spawn();
  live.add(child.pid);
  let failure: RunFailure | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stop = (why: RunFailure) => {
    if (failure !== undefined) return;
    failure = why;
    killGroup(child.pid);
  };
  const onAbort = () => stop("aborted");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) stop("aborted");
  timer = setTimeout(() => {
    timer = undefined;
    const kill = () => stop("timeout");
    if (options.onTimeout) {
      // Give the remote kill a moment, but never more than 2 s.
      const guard = setTimeout(kill, 2000);
      options.onTimeout().finally(() => {
        clearTimeout(guard);
        kill();
      });
    } else {
      kill();
    }
  }, Math.max(1, options.timeoutMs));
  if (options.stdin !== undefined) {
    const bytes = typeof options.stdin === "string"
      ? new TextEncoder().encode(options.stdin)
      : options.stdin;
    const writer = child.stdin.getWriter();
    writer.write(bytes).then(() => writer.close()).catch(() => {});
  }
  const done = child.status.then((status) => {
    live.delete(child.pid);
    if (timer !== undefined) clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    if (failure === "timeout") return { code: 124, failure };
    if (failure === "aborted") return { code: 130, failure };
    return { code: status.code };
  });
  return {
    child,
    done,
    cancel: () => stop("aborted"),
  };
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  let size = 0;
  for (const c of chunks) size += c.length;
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return decoder.decode(all);
}

function notFound(argv: readonly string[]): RunResult {
  return {
    code: 127,
    stdout: "",
    stderr: `${argv[0]}: command not found`,
    failure: "not-found",
  };
}

/**
 * Runs a local program (no shell) and collects its output.
 *
 * @example
 * ```ts
 * import { runProcess } from "./_process.ts";
 * import assert from "node:assert/strict";
 *
 * const slow = await runProcess(["sh", "-c", "sleep 5 & sleep 5"], { timeoutMs: 200 });
 * assert.equal(slow.failure, "timeout");
 * ```
 */
export async function runProcess(
  argv: readonly string[],
  options: ProcessOptions,
): Promise<RunResult> {
  let spawned: Spawned;
  try {
    spawned = spawn(argv, options, "piped");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return notFound(argv);
    throw error;
  }
  const [stdout, stderr, end] = await Promise.all([
    readAll(spawned.child.stdout),
    readAll(spawned.child.stderr),
    spawned.done,
  ]);
  const result: RunResult = { code: end.code, stdout, stderr };
  if (end.failure) result.failure = end.failure;
  return result;
}

/**
 * Runs a local program and streams its standard output.
 *
 * @example
 * ```ts
 * import { streamProcess } from "./_process.ts";
 * import assert from "node:assert/strict";
 *
 * const run = streamProcess(["printf", "a\\nb\\n"], { timeoutMs: 5000 });
 * const text = await new Response(run.stdout).text();
 * assert.equal(text, "a\nb\n");
 * assert.equal((await run.status).code, 0);
 * ```
 */
export function streamProcess(argv: readonly string[], options: ProcessOptions): StreamedRun {
  let spawned: Spawned;
  try {
    spawned = spawn(argv, options, "piped");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return {
        stdout: new ReadableStream({ start: (c) => c.close() }),
        status: Promise.resolve(notFound(argv)),
        kill: () => {},
      };
    }
    throw error;
  }
  const stderr = readAll(spawned.child.stderr);
  const status = Promise.all([stderr, spawned.done]).then(([text, end]) => {
    const result: RunResult = { code: end.code, stdout: "", stderr: text };
    if (end.failure) result.failure = end.failure;
    return result;
  });
  return { stdout: spawned.child.stdout, status, kill: spawned.cancel };
}
