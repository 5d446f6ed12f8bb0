#!/usr/bin/env -S deno run -A
/**
 * What `watch_builders` costs the builder: the CPU time of its sampler (the persistent `sh` loop
 * and its `sleep` children, from `utime + stime + cutime + cstime` in `/proc/<pid>/stat`) over a
 * run of N seconds, with the process count of this machine as it is, with 500 more idle
 * processes, and with 20 processes of a build user (the path that reads memory and command
 * lines). Over ssh, the session's `sshd` is counted too. A measurement, not an assertion: `-A`
 * because it reads /proc and starts sshd as root.
 *
 * Run alone with `deno run -A bench/watch_builders_bench.ts [seconds]`; `bench/main.ts` calls
 * {@link benchWatchBuilders}.
 *
 * @module
 */

import { LocalTarget } from "../lib/local_target.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import type { Target } from "../lib/target.ts";
import { samplerArgv } from "../lib/watch.ts";
import { startSshd } from "../tests/lab/sshd.ts";

/** One measured case. */
export interface WatchBenchRow extends Record<string, string | number> {
  /** What ran. */
  case: string;
  /** Processes on this machine during the run. */
  processes: number;
  /** Seconds between samples. */
  interval_s: number;
  /** Samples taken. */
  samples: number;
  /** CPU time of the sampler (and its sleeps), ms. */
  sampler_cpu_ms: number;
  /** The same per sample. */
  ms_per_sample: number;
  /** Share of one core the sampler used. */
  sampler_core_pct: number;
  /** CPU time of the ssh session on the builder (`sshd`), ms; 0 when local. */
  sshd_cpu_ms: number;
}

/** Options for {@link benchWatchBuilders}. */
export interface WatchBenchOptions {
  /** Seconds each case runs (default 10). */
  seconds?: number;
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

function cpuTicks(pid: number, children = true): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields after the comm: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
  const [ut, st, cut, cst] = [11, 12, 13, 14].map((i) => Number(f[i]));
  return ut! + st! + (children ? cut! + cst! : 0);
}

function parentOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/^PPid:\s+(\d+)$/m.exec(status)?.[1] ?? 0);
}

function processCount(): number {
  let n = 0;
  for (const e of Deno.readDirSync("/proc")) if (/^\d+$/.test(e.name)) n++;
  return n;
}

/** The pid of the sampler whose count argument is `marker`. */
function findSampler(marker: string): number | null {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const argv = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0");
      if (argv[1] === "-c" && argv[3] === "nbr-watch" && argv[5] === marker) return Number(e.name);
    } catch {
      // gone
    }
  }
  return null;
}

async function measure(
  name: string,
  target: Target,
  intervalS: number,
  seconds: number,
  sshdPid?: number,
): Promise<WatchBenchRow> {
  // A count no run reaches, unique enough to find this sampler among others.
  const marker = String(900_000_000 + Math.floor(Math.random() * 99_999_999));
  const argv = samplerArgv({ intervalS });
  argv[5] = marker;
  const stream = target.stream(argv, { timeoutMs: (seconds + 30) * 1000 });
  const reader = stream.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let samples = 0;
  const count = (chunk: string) => {
    text += chunk;
    const parts = text.split("\n");
    text = parts.pop() ?? "";
    samples += parts.filter((l) => l.startsWith("#E ")).length;
  };
  while (samples < 1) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${name}: the sampler ended before its first sample`);
    count(decoder.decode(value, { stream: true }));
  }
  const pid = findSampler(marker);
  if (pid === null) throw new Error(`${name}: cannot find the sampler process`);
  // The session's sshd processes: those between the sampler and the listener.
  const sessions: number[] = [];
  if (sshdPid !== undefined) {
    for (let p = parentOf(pid); p > 1 && p !== sshdPid; p = parentOf(p)) {
      if (Deno.readTextFileSync(`/proc/${p}/comm`).trim() === "sshd") sessions.push(p);
    }
  }
  const sshdTicks = () => sessions.reduce((sum, p) => sum + cpuTicks(p, false), 0);
  const startSamples = samples;
  const before = cpuTicks(pid);
  const sshdBefore = sshdTicks();
  const processes = processCount();
  const started = Date.now();
  const reading = (async () => {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return;
      count(decoder.decode(value, { stream: true }));
    }
  })();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const after = cpuTicks(pid);
  const sshdAfter = sshdTicks();
  const elapsedMs = Date.now() - started;
  const taken = samples - startSamples;
  stream.kill();
  await reading.catch(() => {});
  await stream.status;
  const cpuMs = (after - before) * TICK_MS;
  return {
    case: name,
    processes,
    interval_s: intervalS,
    samples: taken,
    sampler_cpu_ms: cpuMs,
    ms_per_sample: taken > 0 ? Math.round((cpuMs / taken) * 10) / 10 : 0,
    sampler_core_pct: Math.round((cpuMs / elapsedMs) * 1000) / 10,
    sshd_cpu_ms: (sshdAfter - sshdBefore) * TICK_MS,
  };
}

function spawnMany(argv: string[], n: number): Deno.ChildProcess[] {
  const [program, ...args] = argv as [string, ...string[]];
  return Array.from(
    { length: n },
    () =>
      new Deno.Command(program, { args, stdin: "null", stdout: "null", stderr: "null" }).spawn(),
  );
}

async function stopAll(children: Deno.ChildProcess[]): Promise<void> {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      // gone
    }
  }
  await Promise.all(children.map((c) => c.status));
}

/**
 * Runs the cases and returns one row each; `[]` when not on Linux. The ssh case needs root and
 * Debian's sshd (it is left out otherwise).
 */
export async function benchWatchBuilders(
  options: WatchBenchOptions = {},
): Promise<WatchBenchRow[]> {
  if (Deno.build.os !== "linux") return [];
  const seconds = options.seconds ?? 10;
  const rows: WatchBenchRow[] = [];
  const local = new LocalTarget();
  rows.push(await measure("local, this machine as it is", local, 1, seconds));
  rows.push(await measure("local, every 0.5 s", local, 0.5, seconds));
  const idle = spawnMany(["sleep", "600"], 500);
  try {
    rows.push(await measure("local, +500 idle processes", local, 1, seconds));
  } finally {
    await stopAll(idle);
  }
  const passwd = Deno.readTextFileSync("/etc/passwd");
  const nixbld = /^nixbld1:[^:]*:(\d+):(\d+):/m.exec(passwd);
  if (Deno.uid() === 0 && nixbld) {
    const builds = spawnMany(
      ["setpriv", `--reuid=${nixbld[1]}`, `--regid=${nixbld[2]}`, "--clear-groups", "sleep", "600"],
      20,
    );
    try {
      rows.push(await measure("local, +20 build-user processes", local, 1, seconds));
    } finally {
      await stopAll(builds);
    }
  }
  if (Deno.uid() === 0) {
    try {
      await using sshd = await startSshd();
      const target = new SshTarget(`root@127.0.0.1:${sshd.port}`, {
        sshArgs: [
          "-F",
          "/dev/null",
          "-i",
          sshd.identityFile,
          "-o",
          `UserKnownHostsFile=${sshd.knownHostsFile}`,
        ],
      });
      try {
        rows.push(await measure("over ssh (sampler + its sshd)", target, 1, seconds, sshd.pid));
      } finally {
        await target.close();
      }
    } catch (error) {
      if (!(error instanceof Error && /sshd/.test(error.message))) throw error;
    }
  }
  return rows;
}

if (import.meta.main) {
  const seconds = Number(Deno.args[0] ?? 10);
  const { formatTable } = await import("./_table.ts");
  console.log(formatTable(await benchWatchBuilders({ seconds })));
}
