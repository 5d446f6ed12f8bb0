#!/usr/bin/env -S deno run -A
/**
 * Overview: find out whether builds on a builder die of memory exhaustion, then apply, and undo, the
 * mitigations. By default it only reads: memory and swap, memory pressure, OOM kills this boot
 * (kernel in every format from 3.10 to 6.x, systemd-oomd, earlyoom) traced to Nix builds where
 * possible, a build log's `signal 9 (Killed)`, the `max-jobs × cores` arithmetic against RAM, zram
 * devices and who owns them. `--mitigate serialize|zram|persistent` shows what each would do;
 * `--apply` does it (recorded under `--state-dir`, backed up, atomic, locked); `--revert` undoes
 * exactly what was applied.
 *
 * `-A` because Deno 2.9 only lets `--allow-all` read most of /proc and /sys.
 *
 * Example: deno run -A scripts/oom_mitigate.ts --host builder1 --mitigate zram --apply
 *
 * @module
 */

import { InvalidArgumentError, Option } from "@commander-js/extra-typings";
import { DEFAULT_STATE_DIR, fileOpsFor, LockBusyError, StateStore } from "../lib/atomic_file.ts";
import {
  armDeadline,
  createCommand,
  emitReport,
  openTarget,
  parseCount,
  runMain,
  UsageError,
} from "../lib/cli.ts";
import { type Finding, makeReport } from "../lib/findings.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { type Machine, parseMachines, resolveBuilders } from "../lib/machines.ts";
import { parseNixVersion, readEffectiveConfig } from "../lib/nix_config.ts";
import { collectOomEvidence, oomFindings } from "../lib/oom.ts";
import {
  applySerialize,
  applyZram,
  persistentFinding,
  planSerialize,
  planZram,
  repairIncomplete,
  revertMitigations,
  type SerializeSettings,
  type ZramSettings,
} from "../lib/oom_mitigate.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import type { Target } from "../lib/target.ts";

const MITIGATIONS = ["serialize", "zram", "persistent"] as const;
type Mitigation = typeof MITIGATIONS[number];

function parseRange(min: number, max: number) {
  return (value: string): number => {
    const n = parseCount(value);
    if (n < min || n > max) {
      throw new InvalidArgumentError(`'${value}' is not between ${min} and ${max}.`);
    }
    return n;
  };
}

function parsePriority(value: string): number {
  if (!/^-?\d+$/.test(value.trim()) || Number(value) < -1 || Number(value) > 32767) {
    throw new InvalidArgumentError(`'${value}' is not a swap priority (-1 to 32767).`);
  }
  return Number(value);
}

let stdinTaken: string | undefined;
async function readInput(flag: string, path: string): Promise<{ name: string; text: string }> {
  if (path === "-") {
    if (stdinTaken !== undefined) {
      throw new UsageError(`${flag} -: standard input is already read for ${stdinTaken}`);
    }
    stdinTaken = flag;
    return { name: "standard input", text: await new Response(Deno.stdin.readable).text() };
  }
  try {
    // /dev/zero would fill memory (a FIFO, as from <(dmesg), is fine: the deadline bounds it).
    const info = await Deno.stat(path);
    if ((info.isCharDevice || info.isBlockDevice || info.isSocket) && path !== "/dev/null") {
      throw new Error("not a regular file (a device or socket)");
    }
    return { name: path, text: await Deno.readTextFile(path) };
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound ? "no such file" : (error as Error).message;
    throw new UsageError(`${flag} '${path}': ${why}`);
  }
}

/** The controller's machines lines for the target: from --machines, else this machine's `builders`. */
async function controllerMachines(
  target: Target,
  machinesFlag: string | undefined,
): Promise<{ input: string; lines: Machine[] } | undefined> {
  const host = target instanceof SshTarget ? target.parsed.hostname : undefined;
  const matches = (m: Machine) => host === undefined || m.host === host;
  if (machinesFlag !== undefined) {
    const { name, text } = await readInput("--machines", machinesFlag);
    const parsed = parseMachines(text, { input: name });
    return { input: name, lines: parsed.machines.filter(matches) };
  }
  if (host === undefined) return undefined;
  // Running on the controller against a builder: this machine's own builders setting.
  const local = new LocalTarget({ timeoutMs: 15_000 });
  const config = await readEffectiveConfig(local);
  const builders = config.ok ? config.settings.get("builders")?.value : undefined;
  if (builders === undefined || builders.trim() === "") return undefined;
  const version = await local.run(["nix", "--version"]);
  const resolved = await resolveBuilders(
    builders,
    (p) => local.readFile(p),
    version.code === 0 ? { version: parseNixVersion(version.stdout) } : {},
  );
  const lines = resolved.machines.filter(matches);
  return lines.length === 0 ? undefined : { input: "this machine's builders", lines };
}

async function isRoot(target: Target): Promise<boolean> {
  if (target.kind === "local") return Deno.uid() === 0;
  const result = await target.run(["id", "-u"], { timeoutMs: 10_000 });
  return result.code === 0 && result.stdout.trim() === "0";
}

if (import.meta.main) {
  await runMain("oom_mitigate", async () => {
    const program = createCommand({
      name: "oom_mitigate",
      description:
        "Find out whether builds die of OOM (read-only by default), then apply and undo " +
        "the mitigations: serialize builds, temporary zram swap, or the persistent NixOS settings.",
      examples: [
        ["deno run -A scripts/oom_mitigate.ts", "diagnose this machine"],
        ["deno run -A scripts/oom_mitigate.ts --host builder1", "diagnose a builder over ssh"],
        ["deno run -A scripts/oom_mitigate.ts --snapshot ./bundle", "diagnose a collected bundle"],
        [
          "nix build ... 2>&1 | deno run -A scripts/oom_mitigate.ts --build-log -",
          "a build's output",
        ],
        ["deno run -A scripts/oom_mitigate.ts --mitigate zram", "what zram swap would be added"],
        ["deno run -A scripts/oom_mitigate.ts --mitigate zram --apply", "add it"],
        [
          "deno run -A scripts/oom_mitigate.ts --mitigate serialize --persist --apply",
          "max-jobs 1, cores 2 in nix.conf",
        ],
        ["deno run -A scripts/oom_mitigate.ts --revert", "undo everything applied"],
      ],
      runbook: "runbook/oom_mitigate.md",
    })
      .option("--kernel-log <file>", "read OOM kills from this saved log ('-': stdin) instead")
      .option("--build-log <file>", "look for killed builds in this build output ('-': stdin)")
      .option(
        "--machines <file>",
        "the controller's machines file, for its max-jobs arithmetic ('-': stdin)",
      )
      .addOption(
        new Option("--mitigate <name>", "show (or with --apply, do) a mitigation (repeatable)")
          .choices(MITIGATIONS)
          .argParser((value: string, previous: Mitigation[] | undefined) => {
            if (!(MITIGATIONS as readonly string[]).includes(value)) {
              throw new InvalidArgumentError(`Allowed choices are ${MITIGATIONS.join(", ")}.`);
            }
            return [...(previous ?? []), value as Mitigation];
          }),
      )
      .option("--apply", "make the changes (default: dry run)")
      .option("--revert", "undo what --apply did (all of it, or the --mitigate ones)")
      .option("--persist", "serialize: write max-jobs/cores into the machine's nix.conf")
      .option("--max-jobs <n>", "serialize: max-jobs", parseRange(1, 1024), 1)
      .option("--cores <n>", "serialize: cores per job", parseRange(1, 4096), 2)
      .option("--memory-percent <n>", "zram: size as % of RAM", parseRange(1, 200), 50)
      .option("--algorithm <alg>", "zram: compression (default: zstd, lz4, lzo-rle or lzo)")
      .option("--priority <n>", "zram: swap priority", parsePriority, 100)
      .option("--force", "--revert: swap off even when it could run out of memory")
      .option("--state-dir <dir>", "where changes are recorded on the machine", DEFAULT_STATE_DIR)
      .option("--lock-timeout <seconds>", "wait this long for another run's lock", parseCount, 10)
      .option("--sysfs-root <dir>", "read zram state from this sysfs copy (tests)", "/sys");
    program.parse(Deno.args, { from: "user" });
    const opts = program.opts();
    const mitigations = [...new Set(opts.mitigate ?? [])];
    if (opts.apply && opts.revert) throw new UsageError("--apply and --revert cannot go together");
    if (opts.apply && mitigations.length === 0) {
      throw new UsageError("--apply needs --mitigate serialize, zram or persistent");
    }
    if (opts.persist && !mitigations.includes("serialize")) {
      throw new UsageError("--persist goes with --mitigate serialize");
    }
    if ((opts.apply || opts.revert) && opts.snapshot !== undefined) {
      throw new UsageError("--apply and --revert need a live machine, not --snapshot");
    }
    if ((opts.apply || opts.revert) && opts.sysfsRoot !== "/sys") {
      throw new UsageError("--sysfs-root is for reading only");
    }
    if (!opts.stateDir.startsWith("/")) {
      throw new UsageError(`--state-dir '${opts.stateDir}' must be an absolute path`);
    }
    armDeadline("oom_mitigate", opts.timeout);
    const kernelLog = opts.kernelLog ? await readInput("--kernel-log", opts.kernelLog) : undefined;
    const buildLog = opts.buildLog ? await readInput("--build-log", opts.buildLog) : undefined;
    const target = await openTarget(opts);
    try {
      const serialize: SerializeSettings = { maxJobs: opts.maxJobs, cores: opts.cores };
      const zram: ZramSettings = {
        memoryPercent: opts.memoryPercent,
        priority: opts.priority,
        ...(opts.algorithm !== undefined ? { algorithm: opts.algorithm } : {}),
      };
      const report = (findings: Finding[], data?: unknown) =>
        emitReport(
          makeReport(findings, {
            tool: "oom_mitigate",
            host: target.host,
            ...(data !== undefined ? { data } : {}),
          }),
          // A mitigation's plan or outcome is in its details: show them.
          mitigations.length > 0 || opts.revert ? { ...opts, verbose: true as const } : opts,
        );

      if (opts.apply || opts.revert) {
        if (!(await isRoot(target))) {
          return report([{
            id: "oom/needs-root",
            status: "unknown",
            summary:
              `${opts.apply ? "--apply" : "--revert"} changes swap and /etc/nix: run it as root` +
              (target instanceof SshTarget
                ? ` (ssh as root@${target.parsed.hostname})`
                : " (sudo)"),
          }]);
        }
        const ops = fileOpsFor(target);
        const owner = `oom_mitigate ${opts.apply ? "--apply" : "--revert"}, pid ${Deno.pid} on ` +
          `${Deno.hostname()}, since ${new Date().toISOString()}`;
        let store: StateStore | null;
        if (opts.revert) {
          store = await StateStore.openExisting(ops, opts.stateDir);
          if (store === null) {
            return report([{
              id: "oom/nothing-to-revert",
              status: "ok",
              summary: `nothing to revert: no state in ${opts.stateDir}`,
            }]);
          }
        } else {
          store = await StateStore.open(ops, opts.stateDir);
        }
        const locked = store;
        try {
          const findings = await locked.withLock(async () => {
            const out: Finding[] = [...await repairIncomplete(target, locked)];
            if (opts.revert) {
              const kinds = mitigations.length === 0 ? undefined : [
                ...(mitigations.includes("zram") ? ["zram" as const] : []),
                ...(mitigations.includes("serialize") ? ["file" as const] : []),
              ];
              out.push(
                ...await revertMitigations(target, locked, {
                  ...(kinds !== undefined ? { kinds } : {}),
                  force: opts.force === true,
                }),
              );
              return out;
            }
            for (const mitigation of mitigations) {
              if (mitigation === "serialize") {
                out.push(
                  ...(opts.persist
                    ? await applySerialize(target, locked, serialize)
                    : await planSerialize(target, serialize, { persist: false })),
                );
              } else if (mitigation === "zram") {
                out.push(...await applyZram(target, locked, zram));
              } else {
                const machines = await controllerMachines(target, opts.machines);
                out.push(persistentFinding(serialize, zram, machines?.lines ?? []));
              }
            }
            return out;
          }, { timeoutMs: opts.lockTimeout * 1000, owner });
          return report(findings);
        } catch (error) {
          if (error instanceof LockBusyError) {
            return report([{
              id: "oom/locked",
              status: "unknown",
              summary: error.message,
              fix: "wait for the other run to finish, or raise --lock-timeout",
            }]);
          }
          throw error;
        }
      }

      // Read-only: the diagnosis, then the dry run of each mitigation asked for.
      const machines = await controllerMachines(target, opts.machines);
      const evidence = await collectOomEvidence(target, {
        stateDir: opts.stateDir,
        sysfsRoot: opts.sysfsRoot,
        ...(kernelLog ? { kernelLog } : {}),
        ...(buildLog ? { buildLog } : {}),
        ...(machines ? { machines } : {}),
      });
      const plans: Finding[] = [];
      for (const mitigation of mitigations) {
        if (mitigation === "serialize") {
          plans.push(
            ...await planSerialize(target, serialize, {
              persist: opts.persist === true && target.kind !== "snapshot",
              machines: machines?.lines ?? [],
            }),
          );
        } else if (mitigation === "zram") {
          plans.push(...planZram(evidence, zram));
        } else {
          plans.push(persistentFinding(serialize, zram, machines?.lines ?? []));
        }
      }
      // A plan's verdict replaces the diagnosis' note on the same thing (zram/unavailable).
      const planned = new Set(plans.map((f) => f.id));
      const findings = [...oomFindings(evidence).filter((f) => !planned.has(f.id)), ...plans];
      return report(findings, {
        log: evidence.log,
        kills: evidence.kills,
        load: evidence.load,
        zram: evidence.zram,
        records: evidence.records,
      });
    } finally {
      await target.close();
    }
  });
}
