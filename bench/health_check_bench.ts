#!/usr/bin/env -S deno run -A
/**
 * The health check's cost: its wall time on this machine (target ≤ 300 ms) against the shell
 * one-liners it replaces, timed the same way (a fresh process each, start to exit); and against a
 * lab builder over ssh, how many ssh connections each opens (the check: exactly one).
 *
 * `-A` because the check reads /proc and the lab runs unshare, nsenter and sshd as root.
 *
 * Run alone with `deno run -A bench/health_check_bench.ts [runs]`; `bench/main.ts` calls
 * {@link benchHealthCheck}.
 *
 * @module
 */

import { type BenchRow, formatTable } from "./_table.ts";
import { labPrerequisites, startLab } from "../tests/lab/lab.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** The manual equivalent: what an operator types on the builder (see runbook/health_check.md). */
export const SHELL_ONE_LINERS: readonly string[] = [
  "nix --extra-experimental-features nix-command store ping",
  "df -h /nix/store /tmp",
  "df -i /nix/store /tmp",
  "free -b",
  "cat /proc/pressure/memory",
  "grep oom_kill /proc/vmstat",
  "cat /proc/loadavg",
  "nproc",
  "nix --extra-experimental-features nix-command show-config | grep -E '^(trusted-users|extra-platforms) '",
  "cat /proc/sys/fs/binfmt_misc/status",
  "date",
];

/** Flags that keep a busy machine's load and other tests' OOM kills out of the measurement. */
const CALM = [
  "--load-warning",
  "~:1000",
  "--load-critical",
  "~:1000",
  "--pressure-warning",
  "~:100",
  "--pressure-critical",
  "~:100",
  "--oom-warning",
  "~:100000",
];

async function wall(argv: string[], env: Record<string, string> = {}): Promise<number> {
  const started = performance.now();
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    env: { NO_COLOR: "1", ...env },
    stdout: "null",
    stderr: "piped",
  }).output();
  const ms = performance.now() - started;
  if (out.code > 2) {
    throw new Error(
      `${argv.join(" ")} exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return ms;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function round(ms: number): number {
  return Math.round(ms);
}

/** Options for {@link benchHealthCheck}. */
export interface BenchHealthOptions {
  /** Runs of each measurement (default 7; the table shows the best and the median). */
  runs?: number;
  /** Also measure against a lab builder when the lab can run here (default true). */
  lab?: boolean;
}

/**
 * Measures the health check here and over ssh, and its baselines. Rows: `case`, `ours`,
 * `baseline`, `unit`, `target`, `met`.
 *
 * @example
 * ```ts ignore
 * import { benchHealthCheck } from "./health_check_bench.ts";
 *
 * console.table(await benchHealthCheck({ runs: 3, lab: false }));
 * ```
 */
export async function benchHealthCheck(options: BenchHealthOptions = {}): Promise<BenchRow[]> {
  const runs = options.runs ?? 7;
  const dir = await Deno.makeTempDir({ prefix: "nbr-health-bench-" });
  const rows: BenchRow[] = [];
  try {
    const state = `${dir}/state.json`;
    const check = [
      Deno.execPath(),
      "run",
      "-A",
      `${ROOT}scripts/health_check.ts`,
      "--state-file",
      state,
      ...CALM,
    ];
    // The first run writes the state file (the steady state is what cron sees) and warms caches.
    await wall(check);
    await wall(["sh", "-c", SHELL_ONE_LINERS.join("; ")]);
    const ours: number[] = [];
    const baseline: number[] = [];
    for (let i = 0; i < runs; i++) {
      ours.push(await wall(check));
      baseline.push(
        await wall(["sh", "-c", `{ ${SHELL_ONE_LINERS.join("; ")}; } >/dev/null 2>&1`]),
      );
    }
    const best = Math.min(...ours);
    rows.push({
      case: `health_check on this machine, best of ${runs} (median)`,
      ours: `${round(best)} ms (${round(median(ours))})`,
      baseline: `${round(Math.min(...baseline))} ms (${round(median(baseline))})`,
      unit: "wall, process start to exit",
      target: "≤ 300 ms",
      met: best <= 300,
    });
    rows.push({
      case: "health_check --nagios --prometheus on this machine",
      ours: `${
        round(
          Math.min(
            await wall([...check, "--nagios", "--prometheus", `${dir}/x.prom`]),
            await wall([...check, "--nagios", "--prometheus", `${dir}/x.prom`]),
          ),
        )
      } ms`,
      baseline: "",
      unit: "wall, best of 2",
      target: "≤ 300 ms",
      met: undefined,
    });

    if (options.lab !== false && labPrerequisites().length === 0) {
      await using lab = await startLab({ builders: 1 });
      const builder = lab.builders[0]!;
      const accepted = async () =>
        (await Deno.readTextFile(`${builder.dir}/sshd.log`)).match(/^Accepted publickey/gm)
          ?.length ?? 0;
      const remote = [...check, "--host", builder.name];
      await wall(remote, lab.env);
      let before = await accepted();
      const times: number[] = [];
      for (let i = 0; i < Math.min(runs, 3); i++) times.push(await wall(remote, lab.env));
      const ourConnections = (await accepted() - before) / times.length;
      before = await accepted();
      const started = performance.now();
      for (const line of SHELL_ONE_LINERS) {
        await wall(["ssh", ...lab.sshOptions, builder.name, line], lab.env);
      }
      const baselineMs = performance.now() - started;
      const baselineConnections = await accepted() - before;
      rows.push({
        case: "health_check --host (lab builder): ssh connections per run",
        ours: ourConnections,
        baseline: baselineConnections,
        unit: "connections (sshd 'Accepted' lines)",
        target: "= 1",
        met: ourConnections === 1,
      });
      rows.push({
        case: "health_check --host (lab builder): wall time",
        ours: `${round(Math.min(...times))} ms`,
        baseline: `${round(baselineMs)} ms`,
        unit: "wall; baseline: one ssh per one-liner",
        target: "",
        met: undefined,
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return rows;
}

if (import.meta.main) {
  const runs = Deno.args[0] === undefined ? undefined : Number(Deno.args[0]);
  console.log(formatTable(await benchHealthCheck(runs === undefined ? {} : { runs })));
}
