#!/usr/bin/env -S deno run -A
/**
 * Overview: the whole runbook from where you sit. On a controller: the config lint, then every
 * builder's reachability, offload proof and health. On a builder: its health check. On a machine with
 * nothing configured: what is missing and where to start. One summary, the worst status as exit code,
 * and for each problem the runbook page to open.
 *
 * `-A` because Deno 2.9 only lets `--allow-all` read most of /proc and /sys.
 *
 * Example: deno task doctor
 *
 * @module
 */

import { armDeadline, createCommand, emitReport, openTarget, runMain } from "../lib/cli.ts";
import { doctorReport, renderDoctorSummary, runDoctor } from "../lib/doctor.ts";

if (import.meta.main) {
  await runMain("doctor", async () => {
    const program = createCommand({
      name: "doctor",
      description:
        "Run the whole runbook from where you sit: config lint, builders, health; one summary.",
      examples: [
        ["deno task doctor", "this machine, whatever its role"],
        ["deno run -A scripts/doctor.ts --host builder1", "a builder over ssh"],
        ["deno run -A scripts/doctor.ts --snapshot ./incident-bundle", "a bundle from collect.ts"],
        ["deno run -A scripts/doctor.ts --json", "the report as JSON"],
      ],
      runbook: "runbook/doctor.md",
    }).option("--no-builders", "do not reach out to the builders in the machines file")
      .option("--no-canary", "do not build canary derivations on the builders");
    program.parse(Deno.args, { from: "user" });
    const opts = program.opts();
    armDeadline("doctor", opts.timeout);
    const target = await openTarget(opts);
    try {
      const result = await runDoctor(target, {
        reachBuilders: opts.builders && target.kind !== "snapshot",
        canary: opts.canary,
        deadline: Date.now() + opts.timeout * 1000 - 500,
        sshOptions: opts.sshOption,
      });
      const report = doctorReport(result, target.host);
      // Doctor's text view lists problems only; --verbose (or --json) shows every finding.
      const shown = opts.json || opts.verbose
        ? report
        : { ...report, findings: report.findings.filter((f) => f.status !== "ok") };
      const code = emitReport(shown, opts);
      if (!opts.json) console.log(renderDoctorSummary(result));
      return code;
    } finally {
      await target.close();
    }
  });
}
