/**
 * The early warnings of `watch_builders.ts`: memory running out or under pressure while builds
 * run, OOM kills, builders that stop answering. Each is a {@link Finding} whose fix names the
 * `oom_mitigate` step to take.
 *
 * Finding ids (documented on `runbook/watch_builders.md`):
 *
 * | id | status | when |
 * | --- | --- | --- |
 * | `watch/memory-low` | warning, critical | available memory under the threshold while builds run |
 * | `watch/memory-pressure` | warning, critical | memory PSI `some avg10` over the threshold while builds run |
 * | `watch/oom-kill` | critical | the kernel's `oom_kill` counter rose during the watch |
 * | `watch/stale` | critical | no sample for two intervals: the builder stopped answering |
 * | `watch/unreachable` | critical | the connection failed or ended |
 *
 * @module
 */

import type { Finding } from "./findings.ts";
import { formatBytes } from "./meminfo.ts";
import type { Sample } from "./watch.ts";

/** When to warn. Percentages are 0-100. */
export interface WatchThresholds {
  /** Warn when `MemAvailable` falls under this share of `MemTotal` while builds run (default 10). */
  memoryWarnPercent: number;
  /** Critical under this share (default 5). */
  memoryCriticalPercent: number;
  /** Warn when memory PSI `some avg10` reaches this while builds run (default 10). */
  pressureWarnPercent: number;
  /** Critical from this `some avg10` (default 40). */
  pressureCriticalPercent: number;
}

/**
 * The defaults of {@link WatchThresholds}.
 *
 * @example
 * ```ts
 * import { DEFAULT_THRESHOLDS } from "./watch_alerts.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_THRESHOLDS.memoryWarnPercent, 10);
 * ```
 */
export const DEFAULT_THRESHOLDS: Readonly<WatchThresholds> = {
  memoryWarnPercent: 10,
  memoryCriticalPercent: 5,
  pressureWarnPercent: 10,
  pressureCriticalPercent: 40,
};

/**
 * The runbook page of the OOM mitigations.
 *
 * @example
 * ```ts
 * import { OOM_RUNBOOK } from "./watch_alerts.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(OOM_RUNBOOK, "runbook/oom_mitigate.md");
 * ```
 */
export const OOM_RUNBOOK = "runbook/oom_mitigate.md";

/**
 * The `oom_mitigate` command line for a step on a host: `serialize` (prints the
 * `--option max-jobs 1 --option cores 2` build command; `--persist --apply` writes it), `zram`
 * (temporary compressed swap, with `--apply`), or `diagnose` (memory, pressure, the kernel's OOM
 * kills: the default).
 *
 * @example
 * ```ts
 * import { oomMitigateCommand } from "./watch_alerts.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   oomMitigateCommand("builder1", "serialize"),
 *   "deno run -A scripts/oom_mitigate.ts --host builder1 --mitigate serialize",
 * );
 * assert.equal(oomMitigateCommand("localhost", "diagnose"), "deno run -A scripts/oom_mitigate.ts");
 * ```
 */
export function oomMitigateCommand(host: string, step: "serialize" | "zram" | "diagnose"): string {
  const where = host === "localhost" ? "" : ` --host ${host}`;
  const what = step === "diagnose" ? "" : ` --mitigate ${step}`;
  return `deno run -A scripts/oom_mitigate.ts${where}${what}`;
}

function percent(part: number, whole: number): number {
  return whole > 0 ? Math.round((part / whole) * 1000) / 10 : 0;
}

/** What {@link assessSample} needs besides the sample. */
export interface AssessContext {
  /** The thresholds (default {@link DEFAULT_THRESHOLDS}). */
  thresholds?: WatchThresholds;
  /** The builder's `oom_kill` counter when the watch began (`null`: unknown). */
  oomKillsAtStart?: number | null;
}

/**
 * The warnings one sample raises; empty when all is well. Memory and pressure only count while
 * build processes run (an idle builder may use its RAM as it likes).
 *
 * @example
 * ```ts
 * import { assessSample } from "./watch_alerts.ts";
 * import type { Sample } from "./watch.ts";
 * import assert from "node:assert/strict";
 *
 * const GiB = 1024 ** 3;
 * const sample: Sample = {
 *   host: "builder1", receivedAt: 0, seq: 9, hostname: "builder1", cpus: 8,
 *   load: { one: 7.5, five: 6, fifteen: 3, running: 8, tasks: 400 },
 *   cpuBusyPercent: 97,
 *   memory: { totalBytes: 16 * GiB, availableBytes: 1.2 * GiB, usedBytes: 14.8 * GiB, swapTotalBytes: 0, swapUsedBytes: 0 },
 *   pressure: { someAvg10: 23.5, someAvg60: 8, fullAvg10: 4, someNow: 30 },
 *   oomKills: 0,
 *   processes: [{ pid: 7, ppid: 6, uid: 30001, rssKiB: 3_000_000, state: "R", emulated: null, name: "cc1plus" }],
 * };
 * const findings = assessSample(sample, { oomKillsAtStart: 0 });
 * assert.deepEqual(findings.map((f) => [f.id, f.status]), [
 *   ["watch/memory-low", "warning"],
 *   ["watch/memory-pressure", "warning"],
 * ]);
 * assert.match(findings[0]!.fix!, /oom_mitigate\.ts --host builder1 --mitigate serialize/);
 * ```
 */
export function assessSample(sample: Sample, context: AssessContext = {}): Finding[] {
  const t = context.thresholds ?? DEFAULT_THRESHOLDS;
  const findings: Finding[] = [];
  const host = sample.host;
  const builds = sample.processes.length;
  const mem = sample.memory;
  const availablePercent = percent(mem.availableBytes, mem.totalBytes);
  const serialize = `serialize the next build: ${oomMitigateCommand(host, "serialize")}`;
  const zram = `or add temporary zram swap: ${oomMitigateCommand(host, "zram")} --apply`;
  const running = `${builds} build process${builds === 1 ? "" : "es"}`;
  if (builds > 0 && mem.totalBytes > 0 && availablePercent < t.memoryWarnPercent) {
    const critical = availablePercent < t.memoryCriticalPercent;
    findings.push({
      id: "watch/memory-low",
      status: critical ? "critical" : "warning",
      summary: `${host}: only ${formatBytes(mem.availableBytes)} (${availablePercent}%) of ` +
        `${formatBytes(mem.totalBytes)} available while ${running} run`,
      detail:
        `Under ${
          critical ? t.memoryCriticalPercent : t.memoryWarnPercent
        }% available, the kernel's OOM killer is close: ` +
        `a build would fail with 'signal 9 (Killed)'.`,
      fix: `${serialize}\n${zram} (see ${OOM_RUNBOOK})`,
      data: { availableBytes: mem.availableBytes, totalBytes: mem.totalBytes, availablePercent },
    });
  }
  const psi = sample.pressure;
  if (builds > 0 && psi !== null && psi.someAvg10 >= t.pressureWarnPercent) {
    const critical = psi.someAvg10 >= t.pressureCriticalPercent;
    const rising = psi.someAvg10 > psi.someAvg60 ? `, rising (60 s: ${psi.someAvg60}%)` : "";
    findings.push({
      id: "watch/memory-pressure",
      status: critical ? "critical" : "warning",
      summary: `${host}: memory pressure ${psi.someAvg10}% (tasks waited for memory ` +
        `${psi.someAvg10}% of the last 10 s${rising}) while ${running} run`,
      detail: "The kernel is reclaiming hard: builds slow down, and an OOM kill may follow.",
      fix: `${serialize}\n${zram} (see ${OOM_RUNBOOK})`,
      data: { someAvg10: psi.someAvg10, someAvg60: psi.someAvg60, fullAvg10: psi.fullAvg10 },
    });
  }
  const start = context.oomKillsAtStart;
  if (
    start !== undefined && start !== null && sample.oomKills !== null && sample.oomKills > start
  ) {
    const kills = sample.oomKills - start;
    findings.push({
      id: "watch/oom-kill",
      status: "critical",
      summary: `${host}: the kernel killed ${kills} process${
        kills === 1 ? "" : "es"
      } for lack of memory during the watch`,
      detail:
        "A build that lost a process fails with 'builder for ... failed due to signal 9 (Killed)'.",
      fix: `see what was killed: ${
        oomMitigateCommand(host, "diagnose")
      }\nthen ${serialize}\n${zram}`,
      data: { oomKills: kills },
    });
  }
  return findings;
}

/**
 * The finding for a builder that stopped sending samples; `lastAt` is when the last one came
 * (ms since the epoch), `null` when none did.
 *
 * @example
 * ```ts
 * import { staleFinding } from "./watch_alerts.ts";
 * import assert from "node:assert/strict";
 *
 * const last = new Date(2026, 10, 25, 14, 2, 3).getTime();
 * const finding = staleFinding("builder2", last);
 * assert.equal(finding.id, "watch/stale");
 * assert.equal(finding.summary, "builder2 stopped answering: no sample since 14:02:03");
 * ```
 */
export function staleFinding(host: string, lastAt: number | null): Finding {
  const since = lastAt === null ? "it started" : new Date(lastAt).toTimeString().slice(0, 8);
  return {
    id: "watch/stale",
    status: "critical",
    summary: `${host} stopped answering: no sample since ${since}`,
    detail: "It is hung, overloaded, or the network to it is down; builds sent to it wait.",
    fix: `check it: ssh ${host} true; if it is thrashing, ${oomMitigateCommand(host, "diagnose")}`,
    data: { lastAt },
  };
}

/**
 * The finding for a builder that cannot be reached or whose connection ended.
 *
 * @example
 * ```ts
 * import { unreachableFinding } from "./watch_alerts.ts";
 * import assert from "node:assert/strict";
 *
 * const finding = unreachableFinding("builder3", "ssh: connect to host b3 port 22: Connection refused");
 * assert.equal(finding.status, "critical");
 * assert.match(finding.summary, /^builder3: cannot watch: ssh: connect/);
 * ```
 */
export function unreachableFinding(host: string, reason: string): Finding {
  return {
    id: "watch/unreachable",
    status: "critical",
    summary: `${host}: cannot watch: ${reason}`,
    fix: `check the connection as root, as nix-daemon does: ssh ${host} true`,
    data: { reason },
  };
}
