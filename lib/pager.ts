/**
 * Standard output that pages itself: on a terminal, output longer than the screen goes through
 * `less -R` (colours kept); shorter output, and anything not on a terminal, is written directly.
 * Output is held back only until it is known to be longer than the screen, so a multi-GB `--raw`
 * log streams into the pager without being held in memory.
 *
 * @module
 */

import { holdInterrupts } from "./cli.ts";

/** Where text goes. */
export interface PagedOutput {
  /**
   * Writes text or bytes; resolves `false` once the reader has gone away (the pager was quit, or
   * the pipe closed), after which the caller should stop producing output.
   */
  write(data: string | Uint8Array): Promise<boolean>;
  /** Flushes what is held back and waits for the pager to be quit. */
  close(): Promise<void>;
  /** Whether output went to a pager. */
  readonly paged: boolean;
}

/** Options for {@link openOutput}. */
export interface PagerOptions {
  /** Allow a pager (default true; `--no-pager` turns it off). */
  pager?: boolean;
  /** Whether stdout is a terminal (default: asked). */
  isTerminal?: boolean;
  /** Screen rows and columns (default: asked). */
  rows?: number;
  /** Screen columns (default: asked). */
  columns?: number;
  /** The pager command (default `["less", "-R"]`). */
  command?: string[];
  /** The direct writer (default: stdout), for tests. */
  writeDirect?: (bytes: Uint8Array) => Promise<void>;
}

const encoder = new TextEncoder();

async function writeStdout(bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await Deno.stdout.write(bytes.subarray(written));
}

function isBrokenPipe(error: unknown): boolean {
  return error instanceof Deno.errors.BrokenPipe ||
    (error instanceof Error && /broken pipe|EPIPE|closed/i.test(error.message));
}

/**
 * Opens standard output, paged when it should be.
 *
 * @example Short output on a "terminal" is written directly
 * ```ts
 * import { openOutput } from "./pager.ts";
 * import assert from "node:assert/strict";
 *
 * let text = "";
 * const out = openOutput({
 *   isTerminal: true, rows: 24, columns: 80,
 *   writeDirect: async (b) => { text += new TextDecoder().decode(b); },
 * });
 * await out.write("one line\n");
 * await out.close();
 * assert.equal(text, "one line\n");
 * assert.equal(out.paged, false);
 * ```
 */
export function openOutput(options: PagerOptions = {}): PagedOutput {
  const writeDirect = options.writeDirect ?? writeStdout;
  let terminal = options.isTerminal;
  if (terminal === undefined) {
    try {
      terminal = Deno.stdout.isTerminal();
    } catch {
      terminal = false;
    }
  }
  let rows = options.rows;
  let columns = options.columns;
  if (terminal && (rows === undefined || columns === undefined)) {
    try {
      const size = Deno.consoleSize();
      rows ??= size.rows;
      columns ??= size.columns;
    } catch {
      rows ??= 24;
      columns ??= 80;
    }
  }
  const usePager = (options.pager ?? true) && terminal === true;
  let held: Uint8Array[] = [];
  let heldLines = 0;
  let column = 0;
  let mode: "holding" | "direct" | "pager" | "gone" = usePager ? "holding" : "direct";
  let child: Deno.ChildProcess | undefined;
  let writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  let release: (() => void) | undefined;
  let paged = false;

  const screenLines = (bytes: Uint8Array) => {
    // Lines on screen, counting wrapped long lines (bytes approximate characters).
    const width = columns ?? 80;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] === 10) {
        heldLines++;
        column = 0;
      } else if (++column > width) {
        heldLines++;
        column = 1;
      }
    }
  };

  const startPager = (): boolean => {
    const [program, ...args] = options.command ?? ["less", "-R"];
    try {
      child = new Deno.Command(program!, {
        args,
        stdin: "piped",
        stdout: "inherit",
        stderr: "inherit",
        env: { LESS: Deno.env.get("LESS") ?? "FRX" },
      }).spawn();
    } catch {
      return false; // no pager installed: write directly
    }
    release = holdInterrupts();
    writer = child.stdin.getWriter();
    paged = true;
    return true;
  };

  const send = async (bytes: Uint8Array): Promise<boolean> => {
    if (mode === "gone") return false;
    if (mode === "direct") {
      try {
        await writeDirect(bytes);
        return true;
      } catch (error) {
        if (isBrokenPipe(error)) {
          mode = "gone";
          return false;
        }
        throw error;
      }
    }
    try {
      await writer!.write(bytes);
      return true;
    } catch {
      mode = "gone";
      return false;
    }
  };

  return {
    get paged() {
      return paged;
    },
    async write(data) {
      const bytes = typeof data === "string" ? encoder.encode(data) : data;
      if (mode !== "holding") return await send(bytes);
      held.push(bytes.slice());
      screenLines(bytes);
      if (heldLines < (rows ?? 24) - 1) return true;
      mode = startPager() ? "pager" : "direct";
      const all = held;
      held = [];
      for (const chunk of all) if (!(await send(chunk))) return false;
      return true;
    },
    async close() {
      if (mode === "holding") {
        mode = "direct";
        const all = held;
        held = [];
        for (const chunk of all) if (!(await send(chunk))) break;
      }
      if (writer !== undefined) {
        await writer.close().catch(() => {});
        writer = undefined;
      }
      if (child !== undefined) {
        await child.status.catch(() => {});
        child = undefined;
      }
      release?.();
    },
  };
}
