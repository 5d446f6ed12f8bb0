#!/usr/bin/env -S deno run -A
/**
 * Overview: how `scripts/drv_log.ts` compares with the shell one-liners it replaces on a generated
 * 1 GiB build log: `--errors` against `grep -n -E` with the same trigger patterns, and `--tail 100`
 * against `tail -n 100`, both on the file and through a pipe (the way a log arrives from
 * `nix-store -l` or ssh). Each case runs three times, interleaved with its baseline; the table
 * shows the best wall time, the time ratio and the peak memory (max RSS from `/usr/bin/time`, or
 * VmHWM from /proc when GNU time is missing) side by side. Targets: at most 2× grep's time, at most
 * 100 MiB peak.
 *
 * The log is written to /tmp and deleted afterwards.
 *
 * CLI arguments: `[--size MiB] [--runs N]`. Example: deno run -A bench/drv_log_bench.ts --size 1024
 *
 * @module
 */

import { LEGACY_PHASE_HEADERS, TRIGGERS } from "../lib/log_scan.ts";
import { type BenchRow, formatTable } from "./_table.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `${ROOT}scripts/drv_log.ts`;

/** Options for {@link benchDrvLog}. */
export interface DrvLogBenchOptions {
  /** Size of the generated log in MiB (default 1024). */
  sizeMiB?: number;
  /** Runs per case; the best time is kept (default 3). */
  runs?: number;
}

/**
 * The extended regular expression grep gets: the scanner's trigger words and its line-anchored
 * phase markers, so both look for the same things.
 *
 * @example
 * ```ts
 * import { grepPattern } from "./drv_log_bench.ts";
 * import assert from "node:assert/strict";
 *
 * assert.match(grepPattern(), /^error\|Error\|/);
 * assert.match(grepPattern(), /\^Running phase: /);
 * ```
 */
export function grepPattern(): string {
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const headers = Object.keys(LEGACY_PHASE_HEADERS).map(escape).join("|");
  return [...TRIGGERS.map(escape), "^Running phase: ", "^@nix \\{", `^(${headers})$`].join("|");
}

/**
 * Writes a build log of about `bytes` bytes: compiler and libtool lines, configure checks, phase
 * markers, warnings every thousand lines, a few errors, and make's failure at the end.
 */
export async function generateLog(path: string, bytes: number): Promise<void> {
  const encoder = new TextEncoder();
  const dirs = ["src/core", "src/util", "lib/net", "tests/unit", "third_party/zlib", "src/gfx"];
  const blocks: Uint8Array[] = [];
  let n = 0;
  for (let b = 0; b < 16; b++) {
    const lines: string[] = [];
    let size = 0;
    while (size < 1 << 20) {
      const d = dirs[n % dirs.length];
      const r = n % 1000;
      let line: string;
      if (r === 0) {
        line = `${d}/file${n}.c:${
          n % 900
        }:5: warning: unused variable 'tmp${n}' [-Wunused-variable]`;
      } else if (r < 450) {
        line =
          `gcc -DHAVE_CONFIG_H -I. -I.. -I${d} -O2 -g -Wall -fPIC -c -o ${d}/obj${n}.o ${d}/obj${n}.c`;
      } else if (r < 750) line = `  CC       ${d}/module_${n}.lo`;
      else if (r < 850) {
        line =
          `libtool: compile:  gcc -DHAVE_CONFIG_H -I. -O2 -c ${d}/x${n}.c  -fPIC -DPIC -o ${d}/.libs/x${n}.o`;
      } else if (r < 950) line = `checking whether the compiler supports feature ${n}... yes`;
      else line = `[${r}/999] Linking C shared library ${d}/libthing${n}.so`;
      lines.push(line);
      size += line.length + 1;
      n++;
    }
    blocks.push(encoder.encode(lines.join("\n") + "\n"));
  }
  const special = (text: string) => encoder.encode(text.endsWith("\n") ? text : `${text}\n`);
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const write = async (data: Uint8Array) => {
    let written = 0;
    while (written < data.length) written += await file.write(data.subarray(written));
  };
  await write(
    special(
      "Running phase: unpackPhase\nunpacking source archive /nix/store/x-src.tar.gz\nRunning phase: configurePhase",
    ),
  );
  let written = 0;
  let i = 0;
  while (written < bytes) {
    if (i === 8) await write(special("Running phase: buildPhase"));
    if (i > 0 && i % 200 === 0) {
      await write(
        special(
          `src/gfx/render${i}.c:${i}:7: error: 'ctx' undeclared (first use in this function)`,
        ),
      );
    }
    const block = blocks[i % blocks.length]!;
    await write(block);
    written += block.length;
    i++;
  }
  await write(
    special(
      "make[2]: *** [Makefile:812: src/gfx/render.lo] Error 1\nmake[1]: *** [Makefile:455: all-recursive] Error 1\nmake: *** [Makefile:367: all] Error 2",
    ),
  );
}

interface Measure {
  seconds: number;
  peakKiB: number;
}

const HAVE_GNU_TIME = await Deno.stat("/usr/bin/time").then(() => true, () => false);

/**
 * Runs `sh -c command` with stdout to a scratch file (not /dev/null: GNU grep stops at the first
 * match when its output is /dev/null); wall time and the peak RSS of its largest process.
 */
async function measure(command: string, scratch: string): Promise<Measure> {
  if (HAVE_GNU_TIME) {
    const out = await new Deno.Command("/usr/bin/time", {
      args: ["-f", "%e %M", "sh", "-c", `${command} >${quote(scratch)}`],
      env: { NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    const last = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    const [seconds, kib] = last.split(" ").map(Number);
    if (!out.success || !Number.isFinite(seconds) || !Number.isFinite(kib)) {
      throw new Error(`'${command}' failed: ${new TextDecoder().decode(out.stderr).trim()}`);
    }
    return { seconds: seconds!, peakKiB: kib! };
  }
  // Without GNU time: poll VmHWM of the shell's descendants.
  const start = performance.now();
  const child = new Deno.Command("sh", {
    args: ["-c", `${command} >${quote(scratch)}`],
    stdout: "null",
    stderr: "null",
  }).spawn();
  let peak = 0;
  const timer = setInterval(() => {
    for (const entry of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      try {
        const status = Deno.readTextFileSync(`/proc/${entry.name}/status`);
        const ppid = Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]);
        if (ppid !== child.pid && Number(entry.name) !== child.pid) continue;
        peak = Math.max(peak, Number(/^VmHWM:\s+(\d+)/m.exec(status)?.[1] ?? 0));
      } catch {
        // gone
      }
    }
  }, 20);
  await child.status;
  clearInterval(timer);
  return { seconds: (performance.now() - start) / 1000, peakKiB: peak };
}

function quote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

/**
 * Runs the benchmark and returns one row per case.
 *
 * @example
 * ```ts ignore
 * import { benchDrvLog } from "./drv_log_bench.ts";
 *
 * const rows = await benchDrvLog({ sizeMiB: 64, runs: 1 });
 * console.log(rows);
 * ```
 */
export async function benchDrvLog(options: DrvLogBenchOptions = {}): Promise<BenchRow[]> {
  const sizeMiB = options.sizeMiB ?? 1024;
  const runs = options.runs ?? 3;
  const path = await Deno.makeTempFile({ dir: "/tmp", prefix: "drvlog-bench-", suffix: ".log" });
  const scratch = `${path}.out`;
  try {
    await generateLog(path, sizeMiB << 20);
    const size = (await Deno.stat(path)).size;
    const deno = `${quote(Deno.execPath())} run -A ${quote(SCRIPT)} --no-pager --timeout 3600`;
    const pattern = quote(grepPattern());
    const file = quote(path);
    const cases: {
      name: string;
      ours: string;
      baseline: string;
      baselineName: string;
      limit: boolean;
    }[] = [
      {
        name: "--errors (file)",
        ours: `${deno} --log-file ${file} --errors`,
        baseline: `grep -n -E ${pattern} ${file}`,
        baselineName: "grep -n -E",
        limit: true,
      },
      {
        name: "--errors (pipe)",
        ours: `cat ${file} | ${deno} --log-file - --errors`,
        baseline: `cat ${file} | grep -n -E ${pattern}`,
        baselineName: "cat | grep -n -E",
        limit: true,
      },
      {
        name: "--tail 100 (file)",
        ours: `${deno} --log-file ${file} --tail 100`,
        baseline: `tail -n 100 ${file}`,
        baselineName: "tail -n 100",
        limit: false,
      },
      {
        name: "--tail 100 (pipe)",
        ours: `cat ${file} | ${deno} --log-file - --tail 100`,
        baseline: `cat ${file} | tail -n 100`,
        baselineName: "cat | tail -n 100",
        limit: false,
      },
    ];
    // Warm the page cache so that every run reads from memory.
    await measure(`cat ${file}`, scratch);
    const rows: BenchRow[] = [];
    for (const c of cases) {
      const ours: Measure[] = [];
      const base: Measure[] = [];
      for (let r = 0; r < runs; r++) {
        base.push(await measure(c.baseline, scratch));
        ours.push(await measure(c.ours, scratch));
      }
      const best = (ms: Measure[]) => Math.min(...ms.map((m) => m.seconds));
      const peak = (ms: Measure[]) => Math.max(...ms.map((m) => m.peakKiB)) / 1024;
      const ratio = best(ours) / Math.max(0.01, best(base));
      const oursPeak = peak(ours);
      rows.push({
        case: c.name,
        "log": `${(size / 2 ** 30).toFixed(2)} GiB`,
        "drv_log s": best(ours).toFixed(2),
        baseline: c.baselineName,
        "baseline s": best(base).toFixed(2),
        ratio: `${ratio.toFixed(2)}×`,
        "drv_log peak MiB": oursPeak.toFixed(0),
        "baseline peak MiB": peak(base).toFixed(0),
        target: c.limit
          ? `${ratio <= 2 ? "met" : "MISSED"}: ≤ 2× time, ${
            oursPeak <= 100 ? "met" : "MISSED"
          }: ≤ 100 MiB`
          : `${oursPeak <= 100 ? "met" : "MISSED"}: ≤ 100 MiB`,
      });
    }
    return rows;
  } finally {
    await Deno.remove(path).catch(() => {});
    await Deno.remove(scratch).catch(() => {});
  }
}

if (import.meta.main) {
  const args = Deno.args;
  const value = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? Number(args[i + 1]) : undefined;
  };
  const sizeMiB = value("--size");
  const runs = value("--runs");
  const rows = await benchDrvLog({
    ...(sizeMiB !== undefined ? { sizeMiB } : {}),
    ...(runs !== undefined ? { runs } : {}),
  });
  console.log(formatTable(rows));
}
