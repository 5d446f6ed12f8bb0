#!/usr/bin/env -S deno run -A
/**
 * Overview: is emulation (aarch64-linux on an x86_64 builder, or any other foreign Linux system)
 * really working? Checks binfmt_misc (mounted, on, an enabled entry matching the system's ELF files
 * and which one wins), the entry's interpreter and flags against the Nix sandbox, Nix's
 * `extra-platforms`, whether the registration survives a reboot, and proves it by running a
 * generated static program for each system (`--smoke=nix`: by building a one-step derivation with
 * the builder's own Nix). Run it on a builder after `Exec format error`, after setting up emulation,
 * and from cron (through health_check). `--apply` registers missing emulators from the installed
 * qemu's binfmt.d files (not on NixOS); `--revert` undoes exactly that.
 *
 * `-A` because Deno 2.9 only lets `--allow-all` read most of /proc.
 *
 * CLI arguments: see --help. Example: deno run -A scripts/check_binfmt.ts --host builder1
 *
 * @module
 */

import { InvalidArgumentError } from "@commander-js/extra-typings";
import { checkSystemName, inspectBinfmt, type SmokeMode, systemsSentTo } from "../lib/binfmt.ts";
import { DEFAULT_STATE_DIR } from "../lib/atomic_file.ts";
import { applyBinfmt, revertBinfmt } from "../lib/binfmt_apply.ts";
import {
  armDeadline,
  collectValues,
  createCommand,
  emitReport,
  openTarget,
  runMain,
  UsageError,
} from "../lib/cli.ts";
import { type Finding, makeReport } from "../lib/findings.ts";
import { LocalTarget } from "../lib/local_target.ts";

function parseSystem(value: string, previous: string[]): string[] {
  try {
    return collectValues(checkSystemName(value), previous);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function smokeMode(value: string | boolean | undefined): SmokeMode {
  if (value === false) return "off";
  if (value === true || value === undefined) return "exec";
  if (value === "exec" || value === "nix") return value;
  throw new UsageError(`--smoke '${value}': expected --smoke, --smoke=exec or --smoke=nix`);
}

if (import.meta.main) {
  await runMain("check_binfmt", async () => {
    const program = createCommand({
      name: "check_binfmt",
      description:
        "Check that a builder really runs foreign systems (aarch64-linux on x86_64...) through " +
        "binfmt_misc, for Nix builds too; prove it by running a generated program.",
      examples: [
        ["deno run -A scripts/check_binfmt.ts", "this machine, systems from extra-platforms"],
        [
          "deno run -A scripts/check_binfmt.ts --host builder1",
          "a builder; also the systems the machines file sends it",
        ],
        [
          "deno run -A scripts/check_binfmt.ts --system aarch64-linux --smoke=nix",
          "also build a one-step aarch64 derivation",
        ],
        ["deno run -A scripts/check_binfmt.ts --snapshot ./bundle", "a bundle (nothing is run)"],
        [
          "deno run -A scripts/check_binfmt.ts --system aarch64-linux --apply",
          "register qemu-aarch64 from /usr/lib/binfmt.d (not NixOS)",
        ],
        ["deno run -A scripts/check_binfmt.ts --revert", "undo what --apply did"],
      ],
      runbook: "runbook/check_binfmt.md",
    })
      .option(
        "--system <system>",
        "a Nix system to check, e.g. aarch64-linux (repeatable; default: extra-platforms + machines file)",
        parseSystem,
        [] as string[],
      )
      .option(
        "--smoke [kind]",
        "prove it: exec (default) runs a generated program, nix also builds a derivation",
      )
      .option("--no-smoke", "run nothing on the target (the default with --snapshot)")
      .option("--apply", "register missing emulators from the installed qemu's binfmt.d files")
      .option("--revert", "undo what --apply recorded")
      .option("--state-dir <dir>", "where --apply records its changes", DEFAULT_STATE_DIR);
    program.parse(Deno.args, { from: "user" });
    const opts = program.opts();
    armDeadline("check_binfmt", opts.timeout);
    if (opts.apply && opts.revert) throw new UsageError("--apply and --revert cannot be used both");
    const explicitSmoke = program.getOptionValueSource("smoke") === "cli";
    const target = await openTarget(opts);
    try {
      if ((opts.apply || opts.revert) && target.kind === "snapshot") {
        throw new UsageError(
          "A snapshot cannot be changed: --apply and --revert need a live machine",
        );
      }
      const smoke: SmokeMode = target.kind === "snapshot" && !explicitSmoke
        ? "off"
        : smokeMode(opts.smoke);
      let sentSystems: string[] = [];
      if (opts.host !== undefined && opts.system.length === 0) {
        // The controller is this machine: which systems does its machines list send there?
        sentSystems = await systemsSentTo(new LocalTarget({ timeoutMs: 15_000 }), opts.host);
      }
      const findings: Finding[] = [];
      if (opts.revert) {
        findings.push(...await revertBinfmt(target, { stateDir: opts.stateDir }));
        return emitReport(
          makeReport(findings, { tool: "check_binfmt", host: target.host }),
          opts,
        );
      }
      if (opts.apply) {
        findings.push(
          ...await applyBinfmt(target, {
            systems: opts.system,
            sentSystems,
            stateDir: opts.stateDir,
          }),
        );
      }
      const inspection = await inspectBinfmt(target, {
        systems: opts.system,
        sentSystems,
        smoke,
      });
      findings.push(...inspection.findings);
      const b = inspection.facts.binfmt;
      const report = makeReport(findings, {
        tool: "check_binfmt",
        host: target.host,
        data: {
          systems: inspection.systems,
          smoke,
          binfmt: b.state === "mounted"
            ? {
              state: b.state,
              enabled: b.enabled,
              entries: b.entries.map((e) => ({
                name: e.name,
                enabled: e.enabled,
                interpreter: e.interpreter,
                flags: e.flags,
              })),
            }
            : { state: b.state },
        },
      });
      return emitReport(report, opts);
    } finally {
      await target.close();
    }
  });
}
