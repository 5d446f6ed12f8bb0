/**
 * A spinner per item on stderr while work runs in parallel: one line per item, redrawn in place,
 * showing what each item is doing. Only for terminals; everywhere else it writes nothing.
 *
 * @module
 */

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Options for {@link LineSpinner}. */
export interface LineSpinnerOptions {
  /** Where to draw (default: stderr). */
  write?: (text: string) => void;
  /** Draw at all (default: stderr is a terminal and `NO_COLOR`-independent). */
  enabled?: boolean;
  /** Milliseconds between frames (default 100). */
  intervalMs?: number;
}

/**
 * One spinner line per item (`builder1  ⠹ canary`), redrawn in place until {@link LineSpinner.stop}.
 *
 * @example Disabled spinners write nothing
 * ```ts
 * import { LineSpinner } from "./spinner.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const spinner = new LineSpinner(["builder1"], { enabled: false, write: (t) => (out += t) });
 * spinner.update("builder1", "ssh");
 * spinner.stop();
 * assert.equal(out, "");
 * ```
 *
 * @example A frame, as drawn
 * ```ts
 * import { LineSpinner } from "./spinner.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const spinner = new LineSpinner(["b1", "builder2"], { enabled: true, write: (t) => (out += t), intervalMs: 10_000 });
 * spinner.update("b1", "canary");
 * spinner.finish("builder2", "ok");
 * spinner.stop();
 * assert.match(out, /b1 {8}⠋ canary/);
 * assert.match(out, /builder2 {2}ok/);
 * ```
 */
export class LineSpinner {
  #items: string[];
  #state = new Map<string, { text: string; done: boolean }>();
  #write: (text: string) => void;
  #enabled: boolean;
  #timer: ReturnType<typeof setInterval> | undefined;
  #frame = 0;
  #drawn = 0;
  #width: number;
  #intervalMs: number;
  #stopped = false;

  /** Starts drawing (when enabled). */
  constructor(items: readonly string[], options: LineSpinnerOptions = {}) {
    this.#items = [...items];
    this.#width = Math.max(0, ...items.map((i) => i.length));
    for (const item of items) this.#state.set(item, { text: "waiting", done: false });
    this.#write = options.write ?? ((text) => {
      try {
        Deno.stderr.writeSync(new TextEncoder().encode(text));
      } catch {
        // stderr closed
      }
    });
    this.#enabled = options.enabled ?? isTerminal();
    this.#intervalMs = options.intervalMs ?? 100;
    this.#start();
  }

  /** Sets what an item is doing now (an unknown item gets a new line). */
  update(item: string, text: string): void {
    const state = this.#stateOf(item);
    if (!state.done) state.text = text;
  }

  /** Marks an item finished, with a last word (e.g. its status). */
  finish(item: string, text: string): void {
    const state = this.#stateOf(item);
    state.text = text;
    state.done = true;
    if (this.#enabled) this.#draw();
  }

  #stateOf(item: string): { text: string; done: boolean } {
    let state = this.#state.get(item);
    if (state === undefined) {
      state = { text: "waiting", done: false };
      this.#state.set(item, state);
      this.#items.push(item);
      this.#width = Math.max(this.#width, item.length);
      this.#start();
    }
    return state;
  }

  #start(): void {
    if (!this.#enabled || this.#stopped || this.#timer !== undefined || this.#items.length === 0) {
      return;
    }
    this.#draw();
    this.#timer = setInterval(() => {
      this.#frame = (this.#frame + 1) % FRAMES.length;
      this.#draw();
    }, this.#intervalMs);
    Deno.unrefTimer(this.#timer);
  }

  /** Stops and erases the spinner lines. Safe to call twice. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#stopped = true;
    if (this.#enabled && this.#drawn > 0) {
      this.#write(
        `\x1b[${this.#drawn}A` + "\x1b[2K\n".repeat(this.#drawn) + `\x1b[${this.#drawn}A`,
      );
      this.#drawn = 0;
    }
    this.#enabled = false;
  }

  #draw(): void {
    const up = this.#drawn > 0 ? `\x1b[${this.#drawn}A` : "";
    const lines = this.#items.map((item) => {
      const state = this.#state.get(item)!;
      const mark = state.done ? "" : `${FRAMES[this.#frame]} `;
      return `\x1b[2K${item.padEnd(this.#width)}  ${mark}${state.text}\n`;
    });
    this.#write(up + lines.join(""));
    this.#drawn = lines.length;
  }
}

function isTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}
