#!/usr/bin/env -S deno run -A
/**
 * `deno task lab`: starts a builder lab (a controller and two builders on this machine), prints
 * how to point scripts at it, and runs until Ctrl-C / SIGTERM. `-A` because the lab reads `/proc`
 * and runs unshare, nsenter, sshd and nix as root.
 *
 * Usage:
 *   deno task lab                      start a lab with 2 builders (foreground)
 *   deno task lab -- --builders 3      start a lab with 3 builders
 *   deno task lab -- down              clean up labs left by crashed runs
 *   deno task lab -- down --force      also stop labs whose owner still runs
 *
 * While it runs, type commands on stdin: `fault <builder> <fault>`, `clear <builder> [<fault>]`,
 * `build <x86_64-linux|aarch64-linux>`, `status`, `quit`.
 *
 * @module
 */

import { type Lab, LAB_FAULTS, type LabFault, labPrerequisites, startLab } from "./lab.ts";
import { cleanupLabs } from "./_state.ts";
import { LabError } from "./_run.ts";

const USAGE = `Usage: deno task lab [-- [up] [--builders N]]
       deno task lab -- down [--force]

Starts a Nix builder lab on this machine (root, Linux): a controller that offloads every build
(max-jobs = 0) and N builders that look like separate ssh hosts, one emulating aarch64-linux.

Examples:
  deno task lab
  deno task lab -- --builders 3
  deno task lab -- down`;

/** Parses the arguments and runs the command; returns the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  const rest = [...args];
  let command = "up";
  if (rest[0] === "up" || rest[0] === "down") command = rest.shift() as string;
  let builders = 2;
  let force = false;
  while (rest.length > 0) {
    const arg = rest.shift() as string;
    if (arg === "--help" || arg === "-h") {
      console.log(USAGE);
      return 0;
    } else if (arg === "--builders" && command === "up") {
      const value = Number(rest.shift());
      if (!Number.isInteger(value) || value < 1 || value > 16) {
        console.error("Cannot start the lab: --builders needs a whole number from 1 to 16");
        return 3;
      }
      builders = value;
    } else if (arg === "--force" && command === "down") {
      force = true;
    } else {
      console.error(`Cannot parse argument '${arg}'; see --help`);
      return 3;
    }
  }
  if (command === "down") return await down(force);
  return await up(builders);
}

async function down(force: boolean): Promise<number> {
  const report = await cleanupLabs({ force });
  for (const id of report.removed) console.log(`removed ${id}`);
  for (const id of report.skipped) {
    console.log(`left ${id} alone: its owner still runs (use --force)`);
  }
  for (const problem of report.problems) console.error(problem);
  if (report.removed.length === 0 && report.skipped.length === 0) console.log("no labs found");
  return report.problems.length > 0 ? 1 : 0;
}

async function up(builders: number): Promise<number> {
  const missing = labPrerequisites();
  if (missing.length > 0) {
    console.error(`Cannot start the lab: missing ${missing.join(", ")}`);
    return 3;
  }
  const started = performance.now();
  const lab = await startLab({ builders });
  const ms = Math.round(performance.now() - started);
  const envFile = `${lab.dir}/env.sh`;
  await Deno.writeTextFile(envFile, envScript(lab));
  console.log(describe(lab, ms, envFile));
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      console.log("\nstopping the lab ...");
      const t = performance.now();
      await lab.stop();
      console.log(`stopped in ${Math.round(performance.now() - t)} ms; nothing left behind`);
    })();
    return stopping;
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const done = Promise.withResolvers<void>();
  const onSignal = () => done.resolve();
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  const repl = Deno.stdin.isTerminal() ? commands(lab, done.promise) : null;
  await Promise.race([done.promise, repl ?? new Promise(() => {})]);
  for (const s of signals) Deno.removeSignalListener(s, onSignal);
  await stop();
  return 0;
}

function describe(lab: Lab, ms: number, envFile: string): string {
  const c = lab.controller;
  const lines = [
    `Lab ${lab.id} is up in ${ms} ms (emulation: ${lab.emulation} binfmt_misc).`,
    "",
    "Controller (max-jobs = 0, builders = @/etc/nix/machines):",
    `  enter:     nsenter -t ${c.pid} -m -p --wd="$PWD" -- bash`,
    `  machines:  ${c.machinesFile}`,
    ...lab.builders.map((b) => `             ${b.machineLine()}`),
    `  nix.conf:  ${c.confDir}/nix.conf`,
    "",
    "Builders (each its own /nix, /etc/nix and sshd):",
    ...lab.builders.map((b) =>
      `  ${b.name}  127.0.0.1:${b.port}  enter: ${b.nsenter.join(" ")} bash`
    ),
    "",
    "From this shell (outside the namespaces):",
    `  source ${envFile}`,
    `  ssh -F ${c.sshConfigFile} builder1 -- nix-store --version`,
    `  deno run -A scripts/<script>.ts --host builder1 --ssh-option=-F --ssh-option=${c.sshConfigFile}`,
    "",
    "A build that offloads (run it in the controller):",
    `  nsenter -t ${c.pid} -m -p -- nix build --impure --no-link -L --expr '${
      lab.canary("x86_64-linux").expression.replaceAll("\n", " ").replace(/ +/g, " ")
    }'`,
    "",
    Deno.stdin.isTerminal()
      ? `Commands: fault <builder> <${LAB_FAULTS.join("|")}>, clear <builder> [fault], ` +
        "build <x86_64-linux|aarch64-linux>, status, quit. Ctrl-C stops the lab."
      : "Ctrl-C or SIGTERM stops the lab.",
  ];
  return lines.join("\n");
}

function envScript(lab: Lab): string {
  const q = (s: string) => `'${s.replaceAll("'", `'"'"'`)}'`;
  const lines = Object.entries(lab.env).map(([k, v]) => `export ${k}=${q(v)}`);
  lines.push(`lab_controller() { nsenter -t ${lab.controller.pid} -m -p --wd="$PWD" -- "$@"; }`);
  for (const b of lab.builders) {
    lines.push(`lab_${b.name}() { ${b.nsenter.join(" ")} "$@"; }`);
  }
  return lines.join("\n") + "\n";
}

async function commands(lab: Lab, stopped: Promise<void>): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = "";
  const reader = Deno.stdin.readable.getReader();
  const ended = stopped.then(() => ({ done: true as const, value: undefined }));
  try {
    while (true) {
      const chunk = await Promise.race([reader.read(), ended]);
      if (chunk.done) return;
      buffer += decoder.decode(chunk.value, { stream: true });
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line === "quit" || line === "exit") return;
        if (line !== "") await command(lab, line.split(/\s+/));
      }
    }
  } finally {
    reader.releaseLock();
  }
}

async function command(lab: Lab, words: string[]): Promise<void> {
  const [verb, a, b] = words;
  try {
    if (verb === "status") {
      for (const builder of lab.builders) {
        const faults = [...builder.faults].join(", ") || "none";
        console.log(`${builder.name}: sshd pid ${builder.sshdPid || "-"}, faults: ${faults}`);
      }
    } else if ((verb === "fault" || verb === "clear") && a) {
      const builder = lab.builder(a);
      if (verb === "clear" && b === undefined) {
        await builder.clearFaults();
      } else if (b && (LAB_FAULTS as readonly string[]).includes(b)) {
        await builder.setFault(b as LabFault, verb === "fault");
      } else {
        console.log(`unknown fault '${b ?? ""}': ${LAB_FAULTS.join(", ")}`);
        return;
      }
      console.log(`${builder.name}: faults now ${[...builder.faults].join(", ") || "none"}`);
    } else if (verb === "build" && (a === "x86_64-linux" || a === "aarch64-linux")) {
      const canary = lab.canary(a);
      const result = await lab.controller.nixBuild(canary.expression);
      console.log(result.stderr.trimEnd());
      console.log(
        result.code === 0 ? `built ${result.outPath}` : `failed with exit ${result.code}`,
      );
    } else {
      console.log(
        "commands: fault <builder> <fault>, clear <builder> [fault], build <system>, status, quit",
      );
    }
  } catch (error) {
    console.log(error instanceof LabError ? error.message : String(error));
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    if (Deno.env.get("NBR_DEBUG") === "1") console.error(error);
    else console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(error instanceof LabError ? 2 : 3);
  }
}
