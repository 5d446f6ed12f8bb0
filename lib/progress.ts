/**
 * A one-line transfer progress bar on stderr (only on a terminal): bytes so far, rate, and a bar
 * with a percentage when the total is known. It appears only when a transfer takes a while.
 *
 * @module
 */

import { formatBytes } from "./meminfo.ts";

/** Options for {@link ProgressBar}. */
export interface ProgressOptions {
  /** Total bytes, when known (a plain log file's size). */
  total?: number;
  /** Draw at all (default: stderr is a terminal). */
  enabled?: boolean;
  /** Where to draw (default: stderr). */
  write?: (text: string) => void;
  /** Milliseconds before the first draw (default 700): quick transfers show nothing. */
  delayMs?: number;
  /** Milliseconds between redraws (default 100). */
  intervalMs?: number;
  /** Line width (default: the terminal's, at most 100). */
  width?: number;
  /** The clock (default `performance.now`), for tests. */
  now?: () => number;
}

function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

function terminalWidth(): number {
  try {
    return Math.min(100, Deno.consoleSize().columns);
  } catch {
    return 80;
  }
}

/**
 * A transfer's progress line.
 *
 * @example
 * ```ts
 * import { ProgressBar } from "./progress.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * let t = 0;
 * const bar = new ProgressBar("builder1", {
 *   total: 4 << 20, enabled: true, write: (s) => (out += s), delayMs: 0, intervalMs: 0, width: 80, now: () => t,
 * });
 * t = 1000;
 * bar.update(1 << 20);
 * bar.done();
 * assert.match(out, /builder1 .*25% +1\.0 MiB\/4\.0 MiB +1\.0 MiB\/s/);
 * assert.ok(out.endsWith("\r\x1b[K"));
 * ```
 */
export class ProgressBar {
  #label: string;
  #total: number | undefined;
  #enabled: boolean;
  #write: (text: string) => void;
  #delayMs: number;
  #intervalMs: number;
  #width: number;
  #now: () => number;
  #start: number;
  #lastDraw = -Infinity;
  #bytes = 0;
  #drawn = false;

  /** Starts timing a transfer; nothing is drawn yet. */
  constructor(label: string, options: ProgressOptions = {}) {
    this.#label = label;
    this.#total = options.total;
    this.#enabled = options.enabled ?? stderrIsTerminal();
    this.#write = options.write ?? ((text) => {
      try {
        Deno.stderr.writeSync(new TextEncoder().encode(text));
      } catch {
        // stderr closed
      }
    });
    this.#delayMs = options.delayMs ?? 700;
    this.#intervalMs = options.intervalMs ?? 100;
    this.#width = options.width ?? terminalWidth();
    this.#now = options.now ?? (() => performance.now());
    this.#start = this.#now();
  }

  /** Sets the bytes transferred so far and redraws when due. */
  update(bytes: number): void {
    this.#bytes = bytes;
    if (!this.#enabled) return;
    const now = this.#now();
    if (now - this.#start < this.#delayMs || now - this.#lastDraw < this.#intervalMs) return;
    this.#lastDraw = now;
    this.#drawn = true;
    this.#write(`\r${this.line(now)}\x1b[K`);
  }

  /** The text of the line at a given time. */
  line(now: number = this.#now()): string {
    const seconds = Math.max(0.001, (now - this.#start) / 1000);
    const rate = `${formatBytes(Math.round(this.#bytes / seconds))}/s`;
    if (this.#total !== undefined && this.#total > 0) {
      const fraction = Math.min(1, this.#bytes / this.#total);
      const numbers = `${Math.floor(fraction * 100)}% ${formatBytes(this.#bytes)}/${
        formatBytes(this.#total)
      }  ${rate}`;
      const barWidth = Math.max(10, this.#width - this.#label.length - numbers.length - 6);
      const filled = Math.round(fraction * barWidth);
      return `${this.#label} [${"#".repeat(filled)}${"-".repeat(barWidth - filled)}] ${numbers}`;
    }
    return `${this.#label}  ${formatBytes(this.#bytes)}  ${rate}`;
  }

  /** Clears the line (if anything was drawn). */
  done(): void {
    if (this.#drawn) this.#write("\r\x1b[K");
    this.#drawn = false;
    this.#enabled = false;
  }
}
