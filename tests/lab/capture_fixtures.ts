#!/usr/bin/env -S deno run -A
/**
 * Captures what Nix itself prints for each lab fault (and a few successes) into
 * `tests/fixtures/lab/`, so parsers and classifiers can be tested without a lab. `-A` because it
 * starts a lab.
 *
 * Usage: deno run -A tests/lab/capture_fixtures.ts [out-dir]
 *
 * @module
 */

import { LAB_FAULTS, type LabFault, startLab } from "./lab.ts";
import { run } from "./_run.ts";

interface Case {
  name: string;
  system: "x86_64-linux" | "aarch64-linux";
  fault?: LabFault;
  builder?: "sh" | "elf";
  setup?: "empty-builders" | "ssh-ng" | "sandbox";
}

const CASES: Case[] = [
  { name: "ok-x86_64-ssh", system: "x86_64-linux" },
  { name: "ok-aarch64-ssh", system: "aarch64-linux" },
  { name: "ok-x86_64-ssh-ng", system: "x86_64-linux", setup: "ssh-ng" },
  { name: "empty-builders", system: "x86_64-linux", setup: "empty-builders" },
  { name: "sandbox-no-bin-sh", system: "x86_64-linux", builder: "sh", setup: "sandbox" },
  ...LAB_FAULTS.map((fault): Case => ({
    name: `fault-${fault}`,
    fault,
    system: fault.startsWith("binfmt") || fault === "no-extra-platforms"
      ? "aarch64-linux"
      : "x86_64-linux",
  })),
];

/** Runs every case in a fresh lab and writes `<out>/nix-2.8-<case>.stderr`; returns the files. */
export async function captureFixtures(out: string): Promise<string[]> {
  await Deno.mkdir(out, { recursive: true });
  const written: string[] = [];
  for (const c of CASES) {
    await using lab = await startLab({ builders: 1, connectTimeoutSeconds: 2 });
    const builder = lab.builders[0]!;
    if (c.setup === "empty-builders") await lab.controller.setNixConf({ builders: "" });
    if (c.setup === "ssh-ng") await builder.setMachine({ protocol: "ssh-ng" });
    if (c.setup === "sandbox") await builder.setNixConf({ sandbox: true });
    if (c.fault) await builder.setFault(c.fault);
    const canary = lab.canary(c.system, c.builder ? { builder: c.builder } : {});
    const result = await lab.controller.nixBuild(canary.expression, { timeoutMs: 60_000 });
    const file = `${out}/nix-2.8-${c.name}.stderr`;
    await Deno.writeTextFile(file, result.stderr);
    written.push(file);
    console.log(`${c.name}: exit ${result.code}`);
  }
  const version = await run(["dpkg-query", "-W", "nix-bin", "openssh-server", "qemu-user-static"], {
    timeoutMs: 10_000,
  });
  await Deno.writeTextFile(`${out}/versions.txt`, version.stdout);
  return written;
}

if (import.meta.main) {
  const out = Deno.args[0] ?? new URL("../fixtures/lab", import.meta.url).pathname;
  await captureFixtures(out);
}
