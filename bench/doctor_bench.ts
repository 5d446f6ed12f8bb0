#!/usr/bin/env -S deno run -A
/**
 * doctor on a two-builder lab against doctor on each builder alone (the machines file holding only
 * that builder's line). The target: both at once take at most 1.5× the slowest single builder, since
 * doctor checks builders in parallel. Times are whole `deno run` wall times, start-up included, the
 * median of several runs.
 *
 * `-A`: the lab runs unshare, nsenter, sshd and nix as root. Run alone with
 * `deno run -A bench/doctor_bench.ts [runs]`; `bench/main.ts` calls {@link benchDoctor}.
 *
 * @module
 */

import { labPrerequisites, startLab } from "../tests/lab/lab.ts";
import { type BenchRow, formatTable } from "./_table.ts";

const SCRIPT = new URL("../scripts/doctor.ts", import.meta.url).pathname;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * Measures doctor on one and on two lab builders.
 *
 * @example
 * ```ts ignore
 * import { benchDoctor } from "./doctor_bench.ts";
 *
 * console.table(await benchDoctor({ runs: 1 }));
 * ```
 */
export async function benchDoctor(options: { runs?: number } = {}): Promise<BenchRow[]> {
  const missing = labPrerequisites();
  if (missing.length > 0) return [{ case: "skipped", note: `lab needs: ${missing.join(", ")}` }];
  const runs = options.runs ?? 3;
  // Builders as their own hosts (as in doctor_test.ts): in a user namespace the OOM check is UNKNOWN.
  await using lab = await startLab({ builders: 2, emulation: "global" });
  const lines = lab.builders.map((b) => b.machineLine());
  async function time(machines: string[], canary: boolean): Promise<number> {
    await lab.controller.setMachines(machines);
    const samples: number[] = [];
    for (let i = 0; i < runs; i++) {
      const started = performance.now();
      const r = await lab.controller.exec(
        ["deno", "run", "-A", SCRIPT, "--json", ...(canary ? [] : ["--no-canary"])],
        { timeoutMs: 180_000 },
      );
      if (r.code === 3) throw new Error(`doctor failed: ${r.stderr.trim().split("\n").at(-1)}`);
      samples.push(performance.now() - started);
    }
    return median(samples);
  }
  const rows: BenchRow[] = [];
  for (const canary of [true, false]) {
    const single = [];
    for (const line of lines) single.push(await time([line], canary));
    const both = await time(lines, canary);
    const slowest = Math.max(...single);
    rows.push({
      case: canary ? "with canary builds" : "--no-canary",
      "builder1 alone ms": Math.round(single[0]!),
      "builder2 alone ms": Math.round(single[1]!),
      "both ms": Math.round(both),
      "× slowest single": (both / slowest).toFixed(2),
      "target": "≤ 1.5",
    });
  }
  return rows;
}

if (import.meta.main) {
  const runs = Number(Deno.args[0] ?? "3");
  console.log(formatTable(await benchDoctor({ runs })));
}
