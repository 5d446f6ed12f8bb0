#!/usr/bin/env -S deno run -A
/**
 * How long the builder lab takes to start and to tear down (two builders), plus one offloaded
 * canary build per system for scale. A measurement, not an assertion: `-A` because the lab runs
 * unshare, nsenter, sshd and nix as root.
 *
 * Run alone with `deno run -A bench/lab_bench.ts [runs]`; `bench/main.ts` calls {@link benchLab}.
 *
 * @module
 */

import { labPrerequisites, startLab } from "../tests/lab/lab.ts";

/** One measured quantity. */
export interface BenchRow {
  /** What was measured. */
  name: string;
  /** Milliseconds (the median over the runs). */
  ms: number;
}

/** Options for {@link benchLab}. */
export interface BenchLabOptions {
  /** Labs to start and stop (default 5). */
  runs?: number;
  /** Builders per lab (default 2). */
  builders?: number;
}

/**
 * Starts and stops a lab `runs` times and returns the medians; `[]` when the lab's prerequisites
 * are missing on this machine.
 */
export async function benchLab(options: BenchLabOptions = {}): Promise<BenchRow[]> {
  if (labPrerequisites().length > 0) return [];
  const runs = options.runs ?? 5;
  const builders = options.builders ?? 2;
  const startup: number[] = [];
  const teardown: number[] = [];
  const x86: number[] = [];
  const arm: number[] = [];
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    const lab = await startLab({ builders });
    startup.push(performance.now() - t);
    try {
      for (const [system, into] of [["x86_64-linux", x86], ["aarch64-linux", arm]] as const) {
        t = performance.now();
        const result = await lab.controller.nixBuild(lab.canary(system).expression);
        if (result.code !== 0) throw new Error(`Canary build failed: ${result.stderr.trim()}`);
        into.push(performance.now() - t);
      }
    } finally {
      t = performance.now();
      await lab.stop();
      teardown.push(performance.now() - t);
    }
  }
  const label = `${builders} builders, median of ${runs}`;
  return [
    { name: `lab startup (${label})`, ms: median(startup) },
    { name: `lab teardown (${label})`, ms: median(teardown) },
    { name: `offloaded x86_64-linux canary build (${label})`, ms: median(x86) },
    { name: `offloaded aarch64-linux canary build, qemu (${label})`, ms: median(arm) },
  ];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const value = sorted.length % 2 === 1
    ? sorted[mid] as number
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return Math.round(value * 10) / 10;
}

if (import.meta.main) {
  const missing = labPrerequisites();
  if (missing.length > 0) {
    console.error(`Cannot run the lab benchmark: missing ${missing.join(", ")}`);
    Deno.exit(3);
  }
  const runs = Number(Deno.args[0] ?? 5);
  if (!Number.isInteger(runs) || runs < 1) {
    console.error(`Cannot run the lab benchmark: runs '${Deno.args[0]}' is not a positive integer`);
    Deno.exit(3);
  }
  const rows = await benchLab({ runs });
  const width = Math.max(...rows.map((r) => r.name.length));
  for (const row of rows) {
    console.log(`${row.name.padEnd(width)}  ${row.ms.toFixed(1).padStart(8)} ms`);
  }
}
