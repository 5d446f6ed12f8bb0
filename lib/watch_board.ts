/**
 * The state behind the `watch_builders.ts` view: per builder, its connection state, latest
 * sample, a short history for sparklines and its current warnings; and the worst status seen
 * during the run (the exit code).
 *
 * @module
 */

import { type Finding, type Status, worstStatus } from "./findings.ts";
import type { Sample } from "./watch.ts";
import {
  assessSample,
  DEFAULT_THRESHOLDS,
  staleFinding,
  unreachableFinding,
  type WatchThresholds,
} from "./watch_alerts.ts";
import type { WatchEvent, WatchState } from "./watch_session.ts";

/** Recent values of one builder, oldest first, each 0-1. */
export interface History {
  /** 1-minute load per CPU (may exceed 1). */
  load: number[];
  /** CPU busy share. */
  cpu: number[];
  /** Memory used share (`1 - available/total`). */
  memory: number[];
  /** Memory pressure share (PSI `some`, since the previous sample when known). */
  pressure: number[];
}

/** One builder on the board. */
export interface WatchedBuilder {
  /** The builder as named by the user. */
  host: string;
  /** Its connection state. */
  state: WatchState;
  /** Why it is in that state (for `stale` and `unreachable`). */
  reason: string;
  /** When the state began, ms since the epoch. */
  stateSince: number;
  /** The latest sample, kept while stale or unreachable. */
  sample: Sample | null;
  /** Recent values. */
  history: History;
  /** Current warnings (empty when all is well). */
  findings: Finding[];
  /** Its worst status of the whole run. */
  worst: Status;
}

/** Options for {@link WatchBoard}. */
export interface WatchBoardOptions {
  /** Seconds between samples. */
  intervalS: number;
  /** When to warn. */
  thresholds?: WatchThresholds;
  /** Values kept for sparklines (default 16). */
  historyLength?: number;
}

/** What one event changed on the board. */
export interface BoardChange {
  /** The builder. */
  host: string;
  /** Warnings that appeared or changed status with this event. */
  raised: Finding[];
}

/**
 * Turns watch events into the per-builder state the view renders.
 *
 * @example
 * ```ts
 * import { WatchBoard } from "./watch_board.ts";
 * import assert from "node:assert/strict";
 *
 * const board = new WatchBoard(["builder1"], { intervalS: 1 });
 * board.apply({ kind: "state", host: "builder1", state: "unreachable", reason: "Connection refused", at: 0 });
 * const view = board.builder("builder1");
 * assert.equal(view.state, "unreachable");
 * assert.deepEqual(view.findings.map((f) => f.id), ["watch/unreachable"]);
 * assert.equal(board.worst(), "critical");
 * ```
 */
export class WatchBoard {
  /** Seconds between samples. */
  readonly intervalS: number;
  #thresholds: WatchThresholds;
  #length: number;
  #views = new Map<string, WatchedBuilder>();
  #oomAtStart = new Map<string, number | null>();

  /** Creates the board with one entry per host, in order. */
  constructor(hosts: readonly string[], options: WatchBoardOptions) {
    this.intervalS = options.intervalS;
    this.#thresholds = options.thresholds ?? DEFAULT_THRESHOLDS;
    this.#length = options.historyLength ?? 16;
    for (const host of hosts) {
      this.#views.set(host, {
        host,
        state: "connecting",
        reason: "",
        stateSince: Date.now(),
        sample: null,
        history: { load: [], cpu: [], memory: [], pressure: [] },
        findings: [],
        worst: "ok",
      });
    }
  }

  /** Every builder, in the order given. */
  get builders(): WatchedBuilder[] {
    return [...this.#views.values()];
  }

  /** One builder; throws `RangeError` for an unknown host. */
  builder(host: string): WatchedBuilder {
    const view = this.#views.get(host);
    if (!view) throw new RangeError(`No builder '${host}' on the board`);
    return view;
  }

  /** The worst status any builder had during the run. */
  worst(): Status {
    return worstStatus(this.builders.map((b) => b.worst));
  }

  /** The worst status now. */
  current(): Status {
    return worstStatus(this.builders.flatMap((b) => b.findings.map((f) => f.status)));
  }

  /** Applies an event; returns the warnings it raised. */
  apply(event: WatchEvent): BoardChange {
    const view = this.builder(event.host);
    const before = new Map(view.findings.map((f) => [f.id, f.status]));
    if (event.kind === "sample") {
      const sample = event.sample;
      if (!this.#oomAtStart.has(view.host)) this.#oomAtStart.set(view.host, sample.oomKills);
      view.sample = sample;
      this.#push(view.history, sample);
      view.findings = assessSample(sample, {
        thresholds: this.#thresholds,
        oomKillsAtStart: this.#oomAtStart.get(view.host) ?? null,
      });
      if (view.state !== "live") this.#setState(view, "live", "", sample.receivedAt);
    } else {
      // A watch that ends after failing keeps showing why it failed.
      const failed = view.state === "unreachable" || view.state === "stale";
      if (event.state !== "ended" || !failed) {
        this.#setState(view, event.state, event.reason, event.at);
      }
      const kept = view.findings.filter((f) =>
        !["watch/stale", "watch/unreachable"].includes(f.id)
      );
      if (event.state === "stale") {
        view.findings = [staleFinding(view.host, view.sample?.receivedAt ?? null), ...kept];
      } else if (event.state === "unreachable") {
        view.findings = [unreachableFinding(view.host, event.reason), ...kept];
      } else if (event.state === "live") {
        view.findings = kept;
      }
    }
    view.worst = worstStatus([view.worst, ...view.findings.map((f) => f.status)]);
    const raised = view.findings.filter((f) => before.get(f.id) !== f.status);
    return { host: view.host, raised };
  }

  #setState(view: WatchedBuilder, state: WatchState, reason: string, at: number): void {
    if (view.state !== state) view.stateSince = at;
    view.state = state;
    view.reason = reason;
  }

  #push(history: History, sample: Sample): void {
    const cap = (list: number[], value: number) => {
      list.push(Math.max(0, value));
      if (list.length > this.#length) list.splice(0, list.length - this.#length);
    };
    const cpus = sample.cpus ?? 1;
    cap(history.load, sample.load.one / cpus);
    if (sample.cpuBusyPercent !== null) cap(history.cpu, sample.cpuBusyPercent / 100);
    const m = sample.memory;
    if (m.totalBytes > 0) cap(history.memory, m.usedBytes / m.totalBytes);
    if (sample.pressure !== null) {
      cap(history.pressure, (sample.pressure.someNow ?? sample.pressure.someAvg10) / 100);
    }
  }
}

/**
 * The `--json` record of a sample: one object per sample per builder.
 *
 * @example
 * ```ts
 * import { sampleRecord } from "./watch_board.ts";
 * import type { Sample } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * const sample: Sample = {
 *   host: "builder1", receivedAt: Date.UTC(2026, 10, 25), seq: 1, hostname: "b1", cpus: 2,
 *   load: { one: 0.5, five: 0.4, fifteen: 0.3, running: 1, tasks: 90 }, cpuBusyPercent: null,
 *   memory: { totalBytes: 100, availableBytes: 60, usedBytes: 40, swapTotalBytes: 0, swapUsedBytes: 0 },
 *   pressure: null, oomKills: 0, processes: [],
 * };
 * const record = sampleRecord(sample, []);
 * assert.equal(record.type, "sample");
 * assert.equal(record.time, "2026-11-25T00:00:00.000Z");
 * assert.equal(record.status, "ok");
 * ```
 */
export function sampleRecord(
  sample: Sample,
  findings: readonly Finding[],
): Record<string, unknown> {
  const { receivedAt, ...rest } = sample;
  return {
    type: "sample",
    time: new Date(receivedAt).toISOString(),
    ...rest,
    status: worstStatus(findings.map((f) => f.status)),
    warnings: findings.map(({ id, status, summary, fix }) => ({ id, status, summary, fix })),
  };
}

/**
 * The `--json` record of a state change (`stale`, `unreachable`, `live` again).
 *
 * @example
 * ```ts
 * import { stateRecord } from "./watch_board.ts";
 * import assert from "node:assert/strict";
 *
 * const record = stateRecord({ kind: "state", host: "b2", state: "stale", reason: "no sample for 2.1 s", at: 0 });
 * assert.deepEqual(record, {
 *   type: "state", host: "b2", time: "1970-01-01T00:00:00.000Z", state: "stale",
 *   status: "critical", reason: "no sample for 2.1 s",
 * });
 * ```
 */
export function stateRecord(
  event: Extract<WatchEvent, { kind: "state" }>,
): Record<string, unknown> {
  const status: Status = event.state === "stale" || event.state === "unreachable"
    ? "critical"
    : "ok";
  return {
    type: "state",
    host: event.host,
    time: new Date(event.at).toISOString(),
    state: event.state,
    status,
    reason: event.reason,
  };
}
