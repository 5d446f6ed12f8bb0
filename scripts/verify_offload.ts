#!/usr/bin/env -S deno run -A
/**
 * Overview: proves that builds really offload, for every builder in the controller's machines file
 * (the post's "the failure mode here is silent ... so verify"). For each machine, in parallel: ssh
 * the way nix-daemon does (root, the line's key and pinned host key, batch mode, no agent), the
 * remote side (nix on the non-interactive PATH, a quiet login, the store, trust, versions), the
 * builder's own config against its line, cores/memory/load/free space on /nix, then a unique canary
 * derivation per claimed system built with `--max-jobs 0` and only that machine, confirmed from
 * Nix's output and the builder's store, timed, and deleted again. Run it on the controller after
 * setting up or changing builders, and whenever builds seem slow or local.
 *
 * `--explain <drv or installable>` instead replays Nix's choice of builder for one derivation.
 *
 * `-A` because Deno 2.9 only lets `--allow-all` read most of /proc (load, /proc/locks).
 *
 * CLI arguments: see --help. Example: sudo deno run -A scripts/verify_offload.ts
 *
 * @module
 */

import { armDeadline, collectValues, createCommand, runMain, UsageError } from "../lib/cli.ts";
import { InvalidArgumentError } from "@commander-js/extra-typings";
import { explainBuild } from "../lib/explain.ts";
import { exitCodeFor, makeReport, renderJson, renderText, shouldColor } from "../lib/findings.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { renderOffloadTable, verifyMachines } from "../lib/offload.ts";
import { LineSpinner } from "../lib/spinner.ts";
import { parseSshHost } from "../lib/host.ts";

function parseNumber(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || !Number.isFinite(n)) {
    throw new InvalidArgumentError(`'${value}' is not a non-negative number.`);
  }
  return n;
}

/** A flake reference or installable, never something Nix would read as one of its options. */
function parseRef(value: string): string {
  if (value.startsWith("-")) {
    throw new InvalidArgumentError(
      `'${value}' starts with '-', which Nix would read as an option.`,
    );
  }
  return value;
}

function parseJobs(value: string): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1) {
    throw new InvalidArgumentError(`'${value}' is not a whole number of at least 1.`);
  }
  return Number(value);
}

function write(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text));
}

function hasFlake(): boolean {
  try {
    return Deno.statSync("flake.nix").isFile;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  await runMain("verify_offload", async () => {
    const program = createCommand({
      name: "verify_offload",
      description: "Prove that builds really offload: reach every builder as nix-daemon does, " +
        "check its side, and build a unique canary there per system. Run it on the controller.",
      examples: [
        ["sudo deno run -A scripts/verify_offload.ts", "every machine, as root (like nix-daemon)"],
        ["deno run -A scripts/verify_offload.ts --builder builder1", "only one machine"],
        [
          "deno run -A scripts/verify_offload.ts --host builder1",
          "the same: --host names a builder",
        ],
        ["deno run -A scripts/verify_offload.ts --no-canary", "connection checks only"],
        ["deno run -A scripts/verify_offload.ts --json", "the report as JSON"],
        ["deno run -A scripts/verify_offload.ts --explain .#hello", "which builder would take it"],
      ],
      runbook: "runbook/verify_offload.md",
      liveOnly: true,
    })
      .option(
        "--builder <name>",
        "only this machine: store URI, host or user@host (repeatable)",
        collectValues,
        [] as string[],
      )
      .option("--builders <text>", "use this builders value instead of the effective setting")
      .option("--no-canary", "skip the canary builds")
      .option("--jobs <n>", "machines checked at once", parseJobs, 8)
      .option(
        "--flake <ref>",
        "list this flake's nixosConfigurations (default: ./flake.nix if any)",
        parseRef,
      )
      .option("--min-free <GiB>", "warn below this much free space on /nix", parseNumber, 5)
      .option("--max-load <per-core>", "warn above this 1-minute load per core", parseNumber, 2)
      .option(
        "--explain <drv-or-installable>",
        "say which builder would take this derivation, and why",
        parseRef,
      );
    program.parse(Deno.args, { from: "user" });
    const opts = program.opts();
    if (opts.snapshot !== undefined) {
      throw new UsageError(
        "--snapshot: verify_offload proves offloading with live ssh and canary builds; " +
          "run it on the controller (copy it there with `deno task bundle`)",
      );
    }
    // The builder is what verify_offload reaches over ssh: --host names one, like --builder, and
    // is refused here, before anything runs, when ssh could read it as an option or syntax.
    if (opts.host !== undefined) parseSshHost(opts.host);
    const only = opts.host === undefined ? opts.builder : [...opts.builder, opts.host];
    armDeadline("verify_offload", opts.timeout);
    // Leave 0.7 s of the deadline for printing the report.
    const deadline = Date.now() + opts.timeout * 1000 - 700;
    const controller = new LocalTarget({ deadline });
    const color = !opts.json && shouldColor();

    if (opts.explain !== undefined) {
      const { findings, explanation } = await explainBuild(controller, opts.explain, {
        ...(opts.builders !== undefined ? { buildersOverride: opts.builders } : {}),
        evalTimeoutMs: Math.max(1, deadline - Date.now()),
      });
      const report = makeReport(findings, {
        tool: "verify_offload",
        host: controller.host,
        ...(explanation ? { data: { explanation } } : {}),
      });
      write(opts.json ? renderJson(report) : renderText(report, { verbose: true, color }));
      return exitCodeFor(report.status);
    }

    const spinner = opts.json ? undefined : new LineSpinner([]);
    const result = await verifyMachines(controller, {
      builders: only,
      ...(opts.builders !== undefined ? { buildersOverride: opts.builders } : {}),
      canary: opts.canary,
      jobs: opts.jobs,
      deadline,
      sshOptions: opts.sshOption,
      minFreeBytes: opts.minFree * 1024 ** 3,
      maxLoadPerCore: opts.maxLoad,
      ...(opts.flake !== undefined
        ? { flake: opts.flake }
        : hasFlake()
        ? { flake: ".", flakeRequired: false }
        : {}),
      onProgress: (event) => {
        if (spinner === undefined) return;
        if (event.step === "done") spinner.finish(event.builder, event.row.status.toUpperCase());
        else spinner.update(event.builder, event.step);
      },
    }).finally(() => spinner?.stop());
    const report = makeReport(result.findings, {
      tool: "verify_offload",
      host: controller.host,
      data: {
        controller: result.controller,
        ms: result.ms,
        rows: result.rows,
        ...(result.flake ? { flake: result.flake } : {}),
      },
    });
    if (opts.json) {
      write(renderJson(report));
    } else {
      if (result.rows.length > 0) write(renderOffloadTable(result.rows, { color }) + "\n");
      write(renderText(report, { verbose: opts.verbose === true, color }));
    }
    return exitCodeFor(report.status);
  });
}
