#!/usr/bin/env -S deno run -A
/**
 * verify_offload on 8 lab builders: all at once (`--jobs 8`) against the same checks one after
 * another (`--jobs 1`), with and without canary builds. The target: all at once takes at most 1.5×
 * the slowest single builder. `ms` is verify_offload's own wall time (its `data.ms`, without Deno's
 * start-up); "slowest single" is the slowest builder's time in the one-after-another run, where
 * each builder has the machine to itself. Every builder runs on this one machine, so with canaries
 * the all-at-once run is bound by this machine's cores, not by waiting: see the `cpu` column.
 *
 * `-A`: the lab runs unshare, nsenter, sshd and nix as root. Run alone with
 * `deno run -A bench/verify_offload_bench.ts [runs]`; `bench/main.ts` calls {@link benchVerifyOffload}.
 *
 * @module
 */

import { type Lab, labPrerequisites, startLab } from "../tests/lab/lab.ts";
import { type BenchRow, formatTable } from "./main.ts";

const SCRIPT = new URL("../scripts/verify_offload.ts", import.meta.url).pathname;

/** Options for {@link benchVerifyOffload}. */
export interface BenchVerifyOffloadOptions {
  /** Builders in the lab (default 8). */
  builders?: number;
  /** Runs of each case; the median is reported (default 3). */
  runs?: number;
}

interface Run {
  ms: number;
  slowest: number;
  status: string;
  cpuMs: number;
}

async function runOnce(lab: Lab, args: string[]): Promise<Run> {
  const before = await cpuMs();
  const r = await lab.controller.exec(
    [Deno.execPath(), "run", "-A", SCRIPT, "--json", "--max-load", "1000", ...args],
    { cwd: "/tmp", timeoutMs: 300_000 },
  );
  const after = await cpuMs();
  const report = JSON.parse(r.stdout) as {
    status: string;
    data: { ms: number; rows: { ms: number }[] };
  };
  return {
    ms: report.data.ms,
    slowest: Math.max(...report.data.rows.map((row) => row.ms)),
    status: report.status,
    cpuMs: after - before,
  };
}

/** CPU time the whole machine spent (user + system, all cores), in milliseconds. */
async function cpuMs(): Promise<number> {
  const line = (await Deno.readTextFile("/proc/stat")).split("\n")[0] ?? "";
  const [, user = 0, nice = 0, system = 0] = line.trim().split(/\s+/).map(Number);
  return (user + nice + system) * 10;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * Starts a lab of `builders` builders and times verify_offload on it; `[]` when the lab's
 * prerequisites are missing on this machine.
 */
export async function benchVerifyOffload(
  options: BenchVerifyOffloadOptions = {},
): Promise<BenchRow[]> {
  if (labPrerequisites().length > 0) return [];
  const builders = options.builders ?? 8;
  const runs = options.runs ?? 3;
  await using lab = await startLab({ builders });
  // Warm Deno's cache inside the lab once.
  await runOnce(lab, ["--builder", "builder1", "--no-canary"]);
  const rows: BenchRow[] = [];
  for (const canary of [true, false]) {
    const flags = canary ? [] : ["--no-canary"];
    const serial: Run[] = [];
    const parallel: Run[] = [];
    for (let i = 0; i < runs; i++) {
      serial.push(await runOnce(lab, ["--jobs", "1", ...flags]));
      parallel.push(await runOnce(lab, ["--jobs", String(builders), ...flags]));
    }
    const slowest = median(serial.map((r) => r.slowest));
    const load = (await Deno.readTextFile("/proc/loadavg")).split(" ")[0];
    for (const [name, set] of [["one after another", serial], ["all at once", parallel]] as const) {
      const ms = median(set.map((r) => r.ms));
      rows.push({
        case: `${builders} builders, ${name}${canary ? "" : ", --no-canary"}`,
        ms,
        "slowest single ms": slowest,
        "× slowest single": Number((ms / slowest).toFixed(2)),
        "cpu ms": median(set.map((r) => r.cpuMs)),
        status: set.map((r) => r.status).join(","),
        "load1 after": load,
      });
    }
  }
  return rows;
}

if (import.meta.main) {
  const runs = Number(Deno.args[0] ?? "3");
  console.log(formatTable(await benchVerifyOffload({ runs })));
}
