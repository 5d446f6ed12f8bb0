#!/usr/bin/env -S deno run -A
/**
 * verify_offload on 8 lab builders: all at once (`--jobs 8`) against the same checks one after
 * another (`--jobs 1`), with and without canary builds. The target: all at once takes at most 1.5×
 * the slowest single builder. `ms` is verify_offload's own wall time (its `data.ms`, without Deno's
 * start-up); "slowest single" is the slowest builder's time in the one-after-another run, where
 * each builder has the machine to itself. Every builder runs on this one machine: "our cpu" is the
 * CPU time the run itself used (the script's process tree on the controller, plus every builder's
 * sshd tree: sessions, nix-store, the builds), and "cpu floor" that divided by the cores, the least
 * time the all-at-once run can take here however well it waits in parallel.
 *
 * `-A`: the lab runs unshare, nsenter, sshd and nix as root. Run alone with
 * `deno run -A bench/verify_offload_bench.ts [runs]`; `bench/main.ts` calls {@link benchVerifyOffload}.
 *
 * @module
 */

import { type Lab, labPrerequisites, startLab } from "../tests/lab/lab.ts";
import { type BenchRow, formatTable } from "./_table.ts";

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
  /** CPU time of verify_offload's own process tree on the controller, ms. */
  controllerCpuMs: number;
  /** CPU time the builders' sshd trees (sessions, nix-store, builds) used, ms. */
  builderCpuMs: number;
}

async function runOnce(lab: Lab, args: string[]): Promise<Run> {
  const before = lab.builders.map((b) => sshdCpuMs(b.sshdPid));
  const r = await lab.controller.exec(
    [
      "/usr/bin/time",
      "-f",
      "@cpu %U %S",
      Deno.execPath(),
      "run",
      "-A",
      SCRIPT,
      "--json",
      "--max-load",
      "1000",
      ...args,
    ],
    { cwd: "/tmp", timeoutMs: 300_000 },
  );
  const after = lab.builders.map((b) => sshdCpuMs(b.sshdPid));
  const report = JSON.parse(r.stdout) as {
    status: string;
    data: { ms: number; rows: { ms: number }[] };
  };
  const cpu = /@cpu ([\d.]+) ([\d.]+)/.exec(r.stderr);
  return {
    ms: report.data.ms,
    slowest: Math.max(...report.data.rows.map((row) => row.ms)),
    status: report.status,
    controllerCpuMs: cpu ? Math.round((Number(cpu[1]) + Number(cpu[2])) * 1000) : NaN,
    builderCpuMs: after.reduce((sum, a, i) => sum + a - (before[i] ?? 0), 0),
  };
}

/** CPU an sshd listener and every session it reaped used (user + system, self + children), ms. */
function sshdCpuMs(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime, stime, cutime, cstime are fields 14-17 of stat (11-14 after the command name).
    return [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0) * 10;
  } catch {
    return 0;
  }
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
      const ours = median(set.map((r) => r.controllerCpuMs + r.builderCpuMs));
      rows.push({
        case: `${builders} builders, ${name}${canary ? "" : ", --no-canary"}`,
        ms,
        "slowest single ms": slowest,
        "× slowest single": Number((ms / slowest).toFixed(2)),
        "our cpu ms": ours,
        "cpu floor ms": Math.round(ours / navigator.hardwareConcurrency),
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
