#!/usr/bin/env -S deno run -A
/**
 * Overview: write an incident bundle (a snapshot) of this machine or of a builder: everything the other
 * scripts read, so they can analyse it offline with `--snapshot DIR`. It never copies secrets: private
 * keys, netrc files and `secret-key-files` are left out, `access-tokens` values are blanked.
 *
 * `-A` because Deno 2.9 only lets `--allow-all` read most of /proc and /sys.
 *
 * Example: deno run -A scripts/collect.ts --host builder1 --output ./builder1-bundle
 *
 * @module
 */

import { inspectBinfmt } from "../lib/binfmt.ts";
import { cachingTarget } from "../lib/caching_target.ts";
import { armDeadline, createCommand, openTarget, runMain, UsageError } from "../lib/cli.ts";
import { doctorReport, runDoctor } from "../lib/doctor.ts";
import { renderJson } from "../lib/findings.ts";
import { healthCheck } from "../lib/health.ts";
import { settingList } from "../lib/nix_config.ts";
import { RecordingTarget, writeSnapshot } from "../lib/recording_target.ts";
import { describeFailure } from "../lib/target.ts";

if (import.meta.main) {
  await runMain("collect", async () => {
    const program = createCommand({
      name: "collect",
      description:
        "Write a snapshot bundle of a machine (no secrets) that every script can analyse offline.",
      examples: [
        ["deno run -A scripts/collect.ts --output ./bundle", "this machine"],
        ["deno run -A scripts/collect.ts --host builder1 --output ./b1", "a builder over ssh"],
        ["deno run -A scripts/doctor.ts --snapshot ./b1", "analyse the bundle later"],
      ],
      runbook: "runbook/collect.md",
      liveOnly: true,
    }).requiredOption("-o, --output <dir>", "directory to write the bundle to (new or empty)");
    program.parse(Deno.args, { from: "user" });
    const opts = program.opts();
    if (opts.snapshot !== undefined) {
      throw new UsageError("--snapshot: collect reads a live system; use --host or nothing");
    }
    armDeadline("collect", opts.timeout);
    const deadline = Date.now() + opts.timeout * 1000 - 500;
    const inner = await openTarget(opts);
    // "localhost" means nothing in a ticket: the bundle and its findings name the machine.
    const target = new RecordingTarget(
      inner,
      inner.kind === "local" ? { host: Deno.hostname() } : {},
    );
    try {
      // Everything doctor reads for either role, so any script can replay the bundle.
      // One cache over the recording: each file and command is read (and recorded) once.
      const cached = cachingTarget(target);
      const doctor = await runDoctor(cached, { reachBuilders: false, deadline });
      if (doctor.role === "controller") await healthCheck(cached, { deadline });
      // check_binfmt reads binfmt_misc even where no emulated system is configured (doctor skips
      // it then): a bundle must answer `check_binfmt --snapshot` too.
      await inspectBinfmt(cached, { smoke: "off" });
      // secret-key-files name files the bundle must never hold, even if a check read them.
      const config = await target.run([
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "show-config",
      ]);
      // A host that never answered leaves nothing worth a bundle: say so instead (UNKNOWN).
      if (config.failure === "unreachable" || config.failure === "timeout") {
        throw new Error(
          `${target.host}: ${describeFailure(["nix", "show-config"], config)}; no bundle written`,
        );
      }
      const secrets = /^secret-key-files = (.*)$/m.exec(config.stdout)?.[1];
      if (secrets) target.addSecretFiles(settingList({ value: secrets }));
      const data = target.snapshot();
      await writeSnapshot(opts.output, data);
      // What collect itself concluded, for the ticket and to compare a later --snapshot run with.
      await Deno.writeTextFile(
        `${opts.output}/report.json`,
        renderJson(doctorReport(doctor, data.meta.host)),
      );
      const line =
        `collect: wrote ${opts.output} from ${target.host}: ${data.commands.length} commands, ` +
        `${Object.keys(data.files).length} files\n`;
      Deno.stdout.writeSync(
        new TextEncoder().encode(opts.json ? JSON.stringify(data.meta) + "\n" : line),
      );
      return 0;
    } finally {
      await target.close();
    }
  });
}
