/**
 * One live connection per builder for `watch_builders.ts`: starts the sampler through
 * `target.stream()`, turns its output into samples, notices silence (stale after two intervals),
 * and reconnects with back-off when the connection ends.
 *
 * @module
 */

import {
  deriveSample,
  type RawSample,
  type Sample,
  samplerArgv,
  type SamplerHeader,
  SampleSplitter,
} from "./watch.ts";
import { describeFailure, type RunResult, type StreamedRun, type Target } from "./target.ts";

/** Where a builder's watch stands. */
export type WatchState =
  /** Opening the connection, waiting for the first sample. */
  | "connecting"
  /** Samples arrive. */
  | "live"
  /** No sample for two intervals while the connection is still open. */
  | "stale"
  /** The connection failed or ended; a new attempt follows unless the watch is over. */
  | "unreachable"
  /** The watch is over (closed, or the asked number of samples arrived). */
  | "ended";

/** What a {@link BuilderWatch} reports. */
export type WatchEvent =
  | {
    /** A sample arrived. */
    kind: "sample";
    /** The builder. */
    host: string;
    /** The sample. */
    sample: Sample;
    /** The raw sample it came from. */
    raw: RawSample;
  }
  | {
    /** The state changed. */
    kind: "state";
    /** The builder. */
    host: string;
    /** The new state. */
    state: WatchState;
    /** Why, in one line (empty for `live`). */
    reason: string;
    /** When, ms since the epoch. */
    at: number;
  };

/** Options for {@link BuilderWatch}. */
export interface BuilderWatchOptions {
  /** The builder's name in reports. */
  host: string;
  /** Opens a fresh target for each connection attempt (closed again by the watch). */
  open: () => Target;
  /** Seconds between samples. */
  intervalS: number;
  /** Stop after this many samples (`--once`: 1); 0 or absent: until closed. */
  count?: number;
  /** A connection that gives no sample within this many ms counts as unreachable (default 20 000). */
  connectTimeoutMs?: number;
  /** The longest a single connection may live, ms (the stream's time-out; default 24 h). */
  streamTimeoutMs?: number;
  /** Reconnect after a failure (default: true unless `count` is set). */
  retry?: boolean;
  /** Receives every event, in order. */
  onEvent: (event: WatchEvent) => void;
}

const DAY_MS = 24 * 3600 * 1000;

/**
 * The back-off before reconnect attempt `n` (0-based): 1, 2, 4, 8, 16, then 30 s.
 *
 * @example
 * ```ts
 * import { retryDelayMs } from "./watch_session.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual([0, 1, 4, 9].map(retryDelayMs), [1000, 2000, 16000, 30000]);
 * ```
 */
export function retryDelayMs(attempt: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, attempt));
}

/**
 * Watches one builder until closed.
 *
 * @example One sample of this machine
 * ```ts
 * import { BuilderWatch, type WatchEvent } from "./watch_session.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const events: WatchEvent[] = [];
 * const watch = new BuilderWatch({
 *   host: "localhost",
 *   open: () => new LocalTarget(),
 *   intervalS: 1,
 *   count: 1,
 *   onEvent: (event) => events.push(event),
 * });
 * await watch.run();
 * const sample = events.find((e) => e.kind === "sample");
 * assert.ok(sample && sample.sample.memory.totalBytes > 0);
 * assert.equal(watch.state, "ended");
 * ```
 */
export class BuilderWatch {
  /** The builder's name. */
  readonly host: string;
  #options: BuilderWatchOptions;
  #state: WatchState = "connecting";
  #closed = false;
  #stream: StreamedRun | undefined;
  #target: Target | undefined;
  #wake: (() => void) | undefined;
  #done: Promise<void> | undefined;
  #lastSampleAt = 0;

  /** Prepares the watch; nothing runs before {@link BuilderWatch.run}. */
  constructor(options: BuilderWatchOptions) {
    this.host = options.host;
    this.#options = options;
  }

  /** The current state. */
  get state(): WatchState {
    return this.#state;
  }

  /** When the last sample arrived (ms since the epoch; 0: none yet). */
  get lastSampleAt(): number {
    return this.#lastSampleAt;
  }

  /** Runs until closed, or until `count` samples arrived; never throws. */
  run(): Promise<void> {
    this.#done ??= this.#loop().catch((error) => {
      this.#setState("ended", error instanceof Error ? error.message : String(error));
    });
    return this.#done;
  }

  /** Stops: kills the sampler (which ends the remote one) and closes the connection. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stream?.kill();
    this.#wake?.();
    await this.#done;
    await this.#target?.close().catch(() => {});
  }

  #setState(state: WatchState, reason: string): void {
    if (state === this.#state && state !== "unreachable") return;
    this.#state = state;
    this.#options.onEvent({ kind: "state", host: this.host, state, reason, at: Date.now() });
  }

  async #loop(): Promise<void> {
    const count = this.#options.count ?? 0;
    const retry = this.#options.retry ?? count === 0;
    let attempt = 0;
    let received = 0;
    while (!this.#closed) {
      this.#setState("connecting", attempt === 0 ? "" : `attempt ${attempt + 1}`);
      const target = this.#options.open();
      this.#target = target;
      let outcome: { samples: number; reason: string };
      try {
        outcome = await this.#streamOnce(target, count === 0 ? 0 : count - received);
      } finally {
        await target.close().catch(() => {});
      }
      received += outcome.samples;
      if (this.#closed || (count > 0 && received >= count)) break;
      this.#setState("unreachable", outcome.reason);
      if (!retry) break;
      attempt = outcome.samples > 0 ? 0 : attempt + 1;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, retryDelayMs(attempt - 1));
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
    this.#setState("ended", this.#closed ? "closed" : "");
  }

  async #streamOnce(target: Target, count: number): Promise<{ samples: number; reason: string }> {
    const intervalMs = this.#options.intervalS * 1000;
    const connectTimeoutMs = this.#options.connectTimeoutMs ?? 20_000;
    const stream = target.stream(samplerArgv({ intervalS: this.#options.intervalS, count }), {
      timeoutMs: this.#options.streamTimeoutMs ?? DAY_MS,
    });
    this.#stream = stream;
    const splitter = new SampleSplitter(this.host);
    const decoder = new TextDecoder();
    const started = Date.now();
    let header: SamplerHeader | undefined;
    let previous: RawSample | undefined;
    let samples = 0;
    let lastAt = started;
    let reason = "";
    const timer = setInterval(() => {
      const now = Date.now();
      if (samples === 0) {
        if (now - started > connectTimeoutMs) {
          reason = `no sample within ${Math.round(connectTimeoutMs / 1000)} s of connecting`;
          stream.kill();
        }
        return;
      }
      if (now - lastAt >= 2 * intervalMs && this.#state === "live") {
        const silent = ((now - lastAt) / 1000).toFixed(1);
        this.#setState("stale", `no sample for ${silent} s`);
      }
    }, Math.max(50, Math.min(1000, intervalMs / 4)));
    try {
      for await (const chunk of stream.stdout) {
        for (const item of splitter.push(decoder.decode(chunk, { stream: true }))) {
          if (item.kind === "header") {
            header = item.header;
            continue;
          }
          if (header === undefined) continue;
          const receivedAt = Date.now();
          const sample = deriveSample(item.sample, {
            host: this.host,
            header,
            ...(previous ? { previous } : {}),
            receivedAt,
          });
          previous = item.sample;
          samples++;
          lastAt = receivedAt;
          this.#lastSampleAt = receivedAt;
          this.#setState("live", "");
          this.#options.onEvent({ kind: "sample", host: this.host, sample, raw: item.sample });
        }
      }
    } catch (error) {
      reason ||= error instanceof Error ? error.message : String(error);
      stream.kill();
      await stream.stdout.cancel().catch(() => {});
    } finally {
      clearInterval(timer);
    }
    const status = await stream.status;
    this.#stream = undefined;
    if (reason === "") reason = endReason(status, splitter.noise, header !== undefined);
    return { samples, reason };
  }
}

function endReason(status: RunResult, noise: readonly string[], started: boolean): string {
  if (status.failure === "unreachable") {
    const line = status.stderr.trim().split("\n").filter((l) => l.trim() !== "").at(-1);
    return line ?? "ssh failed";
  }
  if (status.failure !== undefined) return describeFailure(["sampler"], status);
  const err = status.stderr.trim().split("\n").filter((l) => l.trim() !== "").at(-1) ?? "";
  if (!started) {
    const said = err || noise.find((l) => l.trim() !== "") || "";
    return `the sampler did not start (exit ${status.code})${said ? `: ${said}` : ""}`;
  }
  return `the connection ended (exit ${status.code})${err ? `: ${err}` : ""}`;
}
