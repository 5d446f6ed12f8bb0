#!/usr/bin/env -S deno run -A
/**
 * Overview: the post's "checking effective settings" step (`nix show-config | egrep ...`) as a tool
 * that knows what the values mean. Shows the effective Nix settings and which nix.conf line set
 * each, explains every machines entry field by field (read with the installed Nix version's rules),
 * and flags the mistakes: a file Nix would reject, an empty `builders`, a missing machines file,
 * `max-jobs` ≠ 0 on a controller, shifted columns, identity files that cannot work, and, when the
 * builders can be reached, systems, features or an ssh user the builder does not accept.
 * Run it on the controller after every change to nix.conf or the machines file.
 *
 * `-A` because Deno 2.9 only lets `--allow-all` read most of /proc and /sys.
 *
 * CLI arguments: see --help. Example: deno run -A scripts/show_config.ts --role controller
 *
 * @module
 */

import { InvalidArgumentError } from "@commander-js/extra-typings";
import {
  armDeadline,
  collectValues,
  createCommand,
  emitReport,
  openTarget,
  runMain,
} from "../lib/cli.ts";
import { makeReport } from "../lib/findings.ts";
import { parseSshHost } from "../lib/host.ts";
import { checkConfig, type ConfigRole, renderConfigText } from "../lib/show_config.ts";

function parseRole(value: string): ConfigRole {
  if (value !== "controller" && value !== "builder") {
    throw new InvalidArgumentError(`'${value}' is not a role: use controller or builder.`);
  }
  return value;
}

if (import.meta.main) {
  await runMain("show_config", async () => {
    const program = createCommand({
      name: "show_config",
      description: "Show the effective Nix settings and where each comes from, explain the " +
        "machines list, and flag the mistakes in both.",
      examples: [
        ["deno run -A scripts/show_config.ts", "this machine (reaches its builders)"],
        ["deno run -A scripts/show_config.ts --role controller", "say this is a controller"],
        ["deno run -A scripts/show_config.ts --builder-host builder1", "compare with one builder"],
        ["deno run -A scripts/show_config.ts --host builder1 --role builder", "a builder over ssh"],
        ["deno run -A scripts/show_config.ts --snapshot ./bundle", "a bundle from collect.ts"],
        ["deno run -A scripts/show_config.ts --key max-jobs --key cores", "only these settings"],
        ["deno run -A scripts/show_config.ts --all --json", "every setting, as JSON"],
      ],
      runbook: "runbook/show_config.md",
    })
      .option("--role <role>", "controller or builder (guessed when absent)", parseRole)
      .option("--key <name>", "a setting to show (repeatable)", collectValues, [] as string[])
      .option("--all", "show every setting")
      .option(
        "--builder-host <host>",
        "a builder to reach over ssh and compare with the machines list (repeatable)",
        collectValues,
        [] as string[],
      )
      .option("--no-follow", "do not reach the ssh builders of the machines list");
    program.parse(Deno.args, { from: "user" });
    const opts = program.opts();
    // A host that ssh could read as an option is refused before anything runs.
    for (const host of opts.builderHost) parseSshHost(host);
    armDeadline("show_config", opts.timeout);
    const target = await openTarget(opts);
    try {
      const { findings, data } = await checkConfig(target, {
        ...(opts.role ? { role: opts.role } : {}),
        ...(opts.key.length > 0 ? { keys: opts.key } : {}),
        all: opts.all === true,
        builderHosts: opts.builderHost,
        followMachines: opts.follow && target.kind === "local",
        sshOptions: opts.sshOption,
        deadline: Date.now() + opts.timeout * 1000 - 1000,
      });
      const report = makeReport(findings, { tool: "show_config", host: target.host, data });
      if (!opts.json) Deno.stdout.writeSync(new TextEncoder().encode(renderConfigText(data)));
      return emitReport(report, opts);
    } finally {
      await target.close();
    }
  });
}
