#!/usr/bin/env -S deno run -A
/**
 * Overview: the builder's health check, for cron, a systemd timer or Nagios/Icinga. Is the Nix
 * store answering (nix-daemon, or the local store of a single-user install), is there room in the
 * store and the build directory, memory, swap, memory pressure, OOM kills since the last run, load
 * against cores, binfmt for every emulated system, whether the ssh users of remote builds are
 * trusted, whether nix.conf changed after the daemon started, and the clock. Run it on the builder,
 * or against it with `--host` (one ssh connection). Prints nothing when all is well (cron mails any
 * output) unless `--verbose`; `--nagios` prints one plugin line, `--prometheus FILE` writes metrics
 * for node_exporter's textfile collector, `--json` the whole report.
 *
 * `-A` because Deno 2.9 only lets `--allow-all` read most of /proc.
 *
 * CLI arguments: see --help. Example: deno run -A scripts/health_check.ts --nagios
 *
 * @module
 */

import { InvalidArgumentError } from "@commander-js/extra-typings";
import {
  armDeadline,
  collectValues,
  createCommand,
  openTarget,
  runMain,
  UsageError,
} from "../lib/cli.ts";
import {
  exitCodeFor,
  type Finding,
  makeReport,
  renderJson,
  renderText,
  worstStatus,
} from "../lib/findings.ts";
import {
  healthCheck,
  healthMetricFamilies,
  type HealthThresholds,
  parseDuration,
  parseSpaceThreshold,
  renderHealthNagios,
} from "../lib/health.ts";
import { defaultStatePath, readHealthState, writeHealthState } from "../lib/health_state.ts";
import { parseThreshold } from "../lib/nagios.ts";
import { renderPrometheus, writeTextfile } from "../lib/prometheus.ts";

function asArgument<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (error) {
      const reason = error instanceof Error && "reason" in error
        ? String((error as { reason: unknown }).reason)
        : (error as Error).message;
      throw new InvalidArgumentError(`${reason}.`);
    }
  };
}

const space = (flag: string) => asArgument((v) => parseSpaceThreshold(v, flag));
const range = (flag: string) => asArgument((v) => parseThreshold(v, { input: flag }));

function write(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text));
}

if (import.meta.main) {
  await runMain("health_check", async () => {
    const program = createCommand({
      name: "health_check",
      description: "Check a Nix builder's health: store and daemon, disk, memory, OOM kills, " +
        "load, emulation, trust, config age, clock. Silent when all is well (cron).",
      examples: [
        ["deno run -A scripts/health_check.ts", "this machine; prints nothing when healthy"],
        ["deno run -A scripts/health_check.ts --verbose", "every check, OK ones too"],
        ["deno run -A scripts/health_check.ts --host builder1 --nagios", "a builder, as Nagios"],
        [
          "deno run -A scripts/health_check.ts --prometheus /var/lib/node_exporter/textfile/nix_builder.prom",
          "metrics for node_exporter",
        ],
        ["deno run -A scripts/health_check.ts -w 20%: -c 5G:", "free-space thresholds"],
        ["deno run -A scripts/health_check.ts --oom-window 6h", "OOM kills of the last 6 hours"],
      ],
      runbook: "runbook/health_check.md",
      pluginFlags: true,
    })
      .option(
        "-w, --warning <range>",
        "free space (store, build dir) that warns: 10%: = below 10%, 5G: = below 5 GiB (default 10%:)",
        space("--warning"),
      )
      .option(
        "-c, --critical <range>",
        "free space that is critical (default 5%:)",
        space("--critical"),
      )
      .option("--store-path <dir>", "the Nix store directory (default /nix/store)")
      .option("--build-dir <dir>", "where builds run (default: the build-dir setting, else /tmp)")
      .option(
        "--memory-warning <range>",
        "available memory that warns (default 10%:)",
        space("--memory-warning"),
      )
      .option(
        "--memory-critical <range>",
        "available memory that is critical (default 5%:)",
        space("--memory-critical"),
      )
      .option(
        "--load-warning <range>",
        "5-minute load per core that warns (default ~:2)",
        range("--load-warning"),
      )
      .option(
        "--load-critical <range>",
        "5-minute load per core that is critical (default ~:4)",
        range("--load-critical"),
      )
      .option(
        "--pressure-warning <range>",
        "memory pressure, PSI full avg60 %, that warns (default ~:10)",
        range("--pressure-warning"),
      )
      .option(
        "--pressure-critical <range>",
        "memory pressure that is critical (default ~:25)",
        range("--pressure-critical"),
      )
      .option(
        "--oom-warning <range>",
        "new OOM kills that warn (default 0: any kill)",
        range("--oom-warning"),
      )
      .option(
        "--oom-critical <range>",
        "new OOM kills that are critical (default none)",
        range("--oom-critical"),
      )
      .option(
        "--oom-window <duration>",
        "count OOM kills of the last DURATION (30m, 6h, 2d) instead of since the last run",
        asArgument(parseDuration),
      )
      .option(
        "--kernel-log <file>",
        "read OOM kills from this file on the target instead of the kernel log",
      )
      .option(
        "--state-file <file>",
        `where to remember the last run (default ${defaultStatePath()})`,
      )
      .option("--no-state", "neither read nor write the state file (OOM kills: the last 24 h)")
      .option("--require-swap", "no swap is a WARNING (default: not an alarm)")
      .option(
        "--system <system>",
        "an emulated system to check (repeatable; default: extra-platforms)",
        collectValues,
        [] as string[],
      )
      .option("--smoke", "prove emulation by running a tiny program of each system")
      .option(
        "--builder-user <user>",
        "a user controllers ssh in as, checked against trusted-users (repeatable; default: the user running the check)",
        collectValues,
        [] as string[],
      )
      .option("--nagios", "print one monitoring-plugins line: STATUS: summary | perfdata")
      .option(
        "--prometheus <file>",
        "write metrics to FILE (*.prom) for node_exporter's textfile collector",
      );
    program.parse(Deno.args, { from: "user" });
    const opts = program.opts();
    if (opts.nagios && opts.json) {
      throw new UsageError("--nagios and --json cannot be used both: pick one");
    }
    if (opts.prometheus !== undefined && !opts.prometheus.endsWith(".prom")) {
      throw new UsageError(
        `--prometheus '${opts.prometheus}': the name must end in .prom (node_exporter reads only *.prom)`,
      );
    }
    if (opts.system.length > 0) {
      const { checkSystemName } = await import("../lib/binfmt.ts");
      for (const system of opts.system) checkSystemName(system);
    }
    const disarm = armDeadline("health_check", opts.timeout);
    const target = await openTarget(opts);
    try {
      const thresholds: Partial<HealthThresholds> = {};
      if (opts.warning) thresholds.spaceWarning = opts.warning;
      if (opts.critical) thresholds.spaceCritical = opts.critical;
      if (opts.memoryWarning) thresholds.memoryWarning = opts.memoryWarning;
      if (opts.memoryCritical) thresholds.memoryCritical = opts.memoryCritical;
      if (opts.loadWarning) thresholds.loadWarning = opts.loadWarning;
      if (opts.loadCritical) thresholds.loadCritical = opts.loadCritical;
      if (opts.pressureWarning) thresholds.pressureWarning = opts.pressureWarning;
      if (opts.pressureCritical) thresholds.pressureCritical = opts.pressureCritical;
      if (opts.oomWarning) thresholds.oomWarning = opts.oomWarning;
      if (opts.oomCritical) thresholds.oomCritical = opts.oomCritical;

      const extra: Finding[] = [];
      const useState = opts.state !== false && target.kind !== "snapshot";
      const statePath = opts.stateFile ?? defaultStatePath();
      const stateRead = useState ? await readHealthState(statePath) : undefined;
      if (stateRead?.problem) {
        extra.push({
          id: "health/state-file",
          status: "warning",
          summary: `${stateRead.problem}; starting a new baseline`,
          fix: "Once rewritten the warning goes; if it stays, check the file's permissions " +
            "(--state-file to move it, --no-state to go without)",
        });
      }
      const baseline = stateRead?.state.hosts[target.host];

      // Keep ~0.8 s of the deadline to render and write the outputs.
      const deadline = Date.now() + opts.timeout * 1000 - 800;
      const result = await healthCheck(target, {
        deadline,
        ...(opts.storePath !== undefined ? { storeDir: opts.storePath } : {}),
        ...(opts.buildDir !== undefined ? { buildDir: opts.buildDir } : {}),
        thresholds,
        ...(opts.kernelLog !== undefined ? { kernelLog: opts.kernelLog } : {}),
        ...(opts.oomWindow !== undefined ? { oomWindowS: opts.oomWindow } : {}),
        ...(baseline !== undefined ? { oomBaseline: baseline } : {}),
        requireSwap: opts.requireSwap === true,
        ...(opts.system.length > 0 ? { binfmtSystems: opts.system } : {}),
        smoke: opts.smoke === true,
        ...(opts.builderUser.length > 0 ? { builderUsers: opts.builderUser } : {}),
      });

      if (useState && stateRead && result.oomState) {
        try {
          const state = stateRead.state;
          state.hosts[target.host] = result.oomState;
          await writeHealthState(statePath, state);
        } catch (error) {
          extra.push({
            id: "health/state-file",
            status: "warning",
            summary: `${
              (error as Error).message
            }; OOM kills are counted over the last 24 h instead`,
            fix: "Make the directory writable for the user running the check, or pass " +
              "--state-file FILE (or --no-state)",
          });
        }
      }

      const findings = [...result.findings, ...extra];
      const report = makeReport(findings, {
        tool: "health_check",
        host: target.host,
        data: { durationMs: result.durationMs, timings: result.timings, metrics: result.metrics },
      });
      if (opts.prometheus !== undefined) {
        const families = healthMetricFamilies(report, result.metrics, {
          ...(target.kind === "ssh" ? { hostLabel: target.host } : {}),
          durationMs: result.durationMs,
        });
        try {
          await writeTextfile(opts.prometheus, renderPrometheus(families));
        } catch (error) {
          // The check itself ran: report, and say the metrics were not written.
          findings.push({
            id: "health/prometheus-file",
            status: "unknown",
            summary: (error as Error).message,
            fix: "Create the textfile directory (node_exporter --collector.textfile.directory) " +
              "or make it writable for the user running the check",
          });
          report.status = worstStatus(findings.map((f) => f.status));
        }
      }
      if (opts.nagios) {
        write(renderHealthNagios(report, result.metrics));
      } else if (opts.json) {
        write(renderJson(report));
      } else if (report.status !== "ok" || opts.verbose) {
        write(renderText(report, { verbose: opts.verbose === true }));
      }
      return exitCodeFor(report.status);
    } finally {
      disarm();
      await target.close();
    }
  });
}
