/**
 * The lab's one way to run a program: argv only, a time-out always, the whole process tree killed
 * when the time-out fires. Private to `tests/lab/`.
 *
 * @module
 */

/** Options for {@link run}. */
export interface LabRunOptions {
  /** Time-out in milliseconds (default 30 000). The process and all its descendants are killed. */
  timeoutMs?: number;
  /** Environment variables added to (or, with `clearEnv`, replacing) the inherited ones. */
  env?: Record<string, string>;
  /** Start from an empty environment instead of Deno's. */
  clearEnv?: boolean;
  /** Text or bytes written to standard input (closed afterwards). */
  stdin?: string | Uint8Array;
  /** Working directory. */
  cwd?: string;
}

/** What a program did. */
export interface LabRunResult {
  /** Exit code; 124 after a time-out (like coreutils `timeout`), 128+N after signal N. */
  code: number;
  /** Standard output (UTF-8). */
  stdout: string;
  /** Standard error (UTF-8). */
  stderr: string;
  /** True when the time-out fired. */
  timedOut: boolean;
}

/** Raised when a setup step of the lab fails; its message is one line for the user. */
export class LabError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "LabError";
  }
}

/** Pids of every descendant of `pid` (children first, depth-first), read from `/proc`. */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  let children: string;
  try {
    const tasks = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name);
    children = tasks.map((t) => {
      try {
        return Deno.readTextFileSync(`/proc/${pid}/task/${t}/children`);
      } catch {
        return "";
      }
    }).join(" ");
  } catch {
    return out;
  }
  for (const token of children.split(/\s+/)) {
    const child = Number(token);
    if (token === "" || !Number.isInteger(child)) continue;
    out.push(child);
    out.push(...descendants(child));
  }
  return out;
}

/** Sends `signal` to `pid` and every descendant (descendants first); ignores ones already gone. */
export function killTree(pid: number, signal: Deno.Signal = "SIGKILL"): void {
  const all = [...descendants(pid).reverse(), pid];
  for (const p of all) {
    try {
      Deno.kill(p, signal);
    } catch {
      // already gone
    }
  }
}

/** Whether a process with this pid exists (zombies count as gone). */
export function isAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

const decoder = new TextDecoder();

/**
 * Runs `argv` (never through a shell) and collects its output. Never throws for a non-zero exit;
 * throws {@link LabError} only when the program cannot be started.
 */
export async function run(
  argv: readonly string[],
  options: LabRunOptions = {},
): Promise<LabRunResult> {
  const [program, ...args] = argv;
  if (program === undefined) throw new LabError("Cannot run an empty command");
  const timeoutMs = options.timeoutMs ?? 30_000;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args,
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      clearEnv: options.clearEnv ?? false,
      ...(options.env ? { env: options.env } : {}),
      ...(options.cwd ? { cwd: options.cwd } : {}),
    }).spawn();
  } catch (error) {
    throw new LabError(`Cannot start '${program}': ${(error as Error).message}`);
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killTree(child.pid, "SIGKILL");
  }, timeoutMs);
  try {
    if (options.stdin !== undefined) {
      const bytes = typeof options.stdin === "string"
        ? new TextEncoder().encode(options.stdin)
        : options.stdin;
      const writer = child.stdin.getWriter();
      try {
        await writer.write(bytes);
        await writer.close();
      } catch {
        // the program closed its stdin early; its exit status tells the rest
      }
    }
    const output = await child.output();
    const code = timedOut ? 124 : output.signal ? 128 + signalNumber(output.signal) : output.code;
    return {
      code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Like {@link run} but throws a one-line {@link LabError} unless the exit code is 0. */
export async function runOk(
  argv: readonly string[],
  options: LabRunOptions = {},
): Promise<LabRunResult> {
  const result = await run(argv, options);
  if (result.code !== 0) {
    const why = result.timedOut
      ? `timed out after ${options.timeoutMs ?? 30_000} ms`
      : `exited with ${result.code}`;
    const last = result.stderr.trim().split("\n").at(-1) ?? "";
    throw new LabError(`'${argv.join(" ")}' ${why}${last ? `: ${last}` : ""}`);
  }
  return result;
}

function signalNumber(signal: Deno.Signal): number {
  const numbers: Partial<Record<Deno.Signal, number>> = {
    SIGHUP: 1,
    SIGINT: 2,
    SIGQUIT: 3,
    SIGABRT: 6,
    SIGKILL: 9,
    SIGSEGV: 11,
    SIGPIPE: 13,
    SIGALRM: 14,
    SIGTERM: 15,
  };
  return numbers[signal] ?? 0;
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A free TCP port on 127.0.0.1 (the OS picks it; closed again before returning). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Waits until something accepts TCP connections on 127.0.0.1:`port`, or `deadline` passes. */
export async function waitForPort(
  port: number,
  options: { timeoutMs: number; stillRunning?: () => boolean },
): Promise<boolean> {
  const deadline = Date.now() + options.timeoutMs;
  while (Date.now() < deadline) {
    if (options.stillRunning && !options.stillRunning()) return false;
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return true;
    } catch {
      await sleep(20);
    }
  }
  return false;
}
