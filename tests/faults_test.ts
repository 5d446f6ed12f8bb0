/**
 * Faults, against the lab: every script in `scripts/`, run as users run it, against a builder that
 * is down (sshd stopped), hung (sshd SIGSTOP'd), refusing the key (auth fails), without nix on the
 * session's PATH, and reached as an unprivileged user where root is needed (permission denied).
 * Each run ends within its `--timeout` + 1 s (measured from spawn, Deno's start-up included) with
 * the right exit code and a one-line reason, and no stack trace.
 *
 * Runs go several at once (all read-only but the permission-denied `--apply` runs, which are
 * refused): the whole suite takes well under three minutes. The worst time over `--timeout` is
 * printed (`faults: N runs, worst X s over --timeout`) for the README table.
 */

import assert from "node:assert/strict";
import { type Builder, type Lab, labTest, startLab } from "./lab/lab.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TIMEOUT_S = 5;
const DRV = "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv";

type Fault = "down" | "hung" | "auth-failing" | "nix-less" | "permission-denied";

/** What each script must say: its exit code and the reason, on one line of its output. */
interface Expect {
  code: number;
  reason?: RegExp;
}

const UNREACHABLE: Record<"down" | "hung" | "auth-failing", RegExp> = {
  down: /Connection refused/,
  hung: /timed out|no answer/,
  "auth-failing": /Permission denied \(publickey\)|refuses root's ssh keys/,
};

/** The scripts and their arguments; `host` is `builder1` or `nixremote@builder1`. */
function runs(fault: Fault, host: string, dir: string): [string, string[], Expect][] {
  const out = `${dir}/bundle-${fault}`;
  if (fault === "down" || fault === "hung" || fault === "auth-failing") {
    const why = UNREACHABLE[fault];
    return [
      ["check_binfmt", ["--host", host], { code: 3, reason: why }],
      ["collect", ["--host", host, "--output", out], { code: 3, reason: why }],
      ["doctor", ["--host", host], { code: 3, reason: why }],
      ["drv_log", ["--host", host, "--skip-local", DRV], { code: 3, reason: why }],
      ["health_check", ["--host", host], { code: 3, reason: why }],
      ["oom_mitigate", ["--host", host], { code: 3, reason: why }],
      ["show_config", ["--host", host], { code: 3, reason: why }],
      ["watch_builders", ["--once", "--host", host], { code: 2, reason: why }],
      ["verify_offload", ["--builders", `ssh://${host} x86_64-linux`, "--no-canary"], {
        code: 2,
        reason: why,
      }],
    ];
  }
  if (fault === "nix-less") {
    const noNix = /nix[\w-]*'? (is not installed|is not on the PATH|: not found)|nix: not found/;
    return [
      ["check_binfmt", ["--host", host], { code: 3, reason: /Cannot read Nix's settings/ }],
      // A bundle of a broken builder is what collect is for.
      ["collect", ["--host", host, "--output", out], { code: 0, reason: /^collect: wrote / }],
      ["doctor", ["--host", host], { code: 2, reason: noNix }],
      // drv_log finds nix off the PATH too: the log is simply not there.
      ["drv_log", ["--host", host, "--skip-local", DRV], { code: 2, reason: /is not available/ }],
      ["health_check", ["--host", host], { code: 2, reason: noNix }],
      ["oom_mitigate", ["--host", host], { code: 3, reason: noNix }],
      ["show_config", ["--host", host], { code: 2, reason: noNix }],
      ["watch_builders", ["--once", "--host", host], { code: 2, reason: /cannot watch/ }],
      ["verify_offload", ["--builders", `ssh://${host} x86_64-linux`, "--no-canary"], {
        code: 2,
        reason: noNix,
      }],
    ];
  }
  // permission-denied: an unprivileged ssh user, /etc/nix closed to it, the store not writable.
  const denied = /Permission denied|not permitted|run it as root|not privileged/;
  return [
    ["check_binfmt", ["--host", host, "--apply", "--system", "aarch64-linux"], {
      code: 3,
      reason: denied,
    }],
    ["collect", ["--host", host, "--output", out], { code: 0, reason: /^collect: wrote / }],
    ["doctor", ["--host", host], { code: 2, reason: /store does not answer|Permission denied/ }],
    ["drv_log", ["--host", host, "--skip-local", DRV], { code: 2, reason: denied }],
    ["health_check", ["--host", host], { code: 2, reason: /store does not answer/ }],
    ["oom_mitigate", ["--host", host, "--apply", "--mitigate", "zram"], {
      code: 3,
      reason: /run it as root \(ssh as root@builder1\)/,
    }],
    ["oom_mitigate", ["--host", host, "--revert"], { code: 3, reason: denied }],
    // What an unprivileged user can read (Nix's own view for that user, /proc) reads fine.
    ["show_config", ["--host", host], { code: 0 }],
    ["watch_builders", ["--once", "--host", host], { code: 0 }],
    ["verify_offload", ["--builders", `ssh://${host} x86_64-linux`, "--no-canary"], {
      code: 2,
      reason: /store does not answer/,
    }],
  ];
}

async function setFault(builder: Builder, fault: Fault, on: boolean): Promise<string> {
  switch (fault) {
    case "down":
    case "hung":
      await builder.setFault(fault, on);
      return builder.name;
    case "auth-failing":
      await builder.setFault("key-refused", on);
      return builder.name;
    case "nix-less":
      await builder.setFault("nix-not-on-path", on);
      return builder.name;
    case "permission-denied":
      await builder.execOk(["chmod", on ? "0700" : "0755", "/etc/nix"]);
      return `nixremote@${builder.name}`;
  }
}

interface Measured {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

async function script(lab: Lab, name: string, args: string[]): Promise<Measured> {
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/${name}.ts`, "--timeout", String(TIMEOUT_S), ...args],
    env: { ...lab.env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
    seconds: (performance.now() - started) / 1000,
  };
}

async function pool(limit: number, jobs: (() => Promise<void>)[]): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < jobs.length) await jobs[next++]!();
  }));
}

const FAULTS: Fault[] = ["down", "hung", "auth-failing", "nix-less", "permission-denied"];

labTest(
  "every script against a down, hung, auth-failing, nix-less and permission-denied builder ends within --timeout + 1 s with the right status and a one-line reason",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    const dir = await Deno.makeTempDir({ prefix: "nbr-faults-" });
    let count = 0;
    let worst = -Infinity;
    const failures: string[] = [];
    try {
      for (const fault of FAULTS) {
        const host = await setFault(builder, fault, true);
        try {
          await pool(
            4,
            runs(fault, host, dir).map(([name, args, expect]) => async () => {
              const run = await script(lab, name, args);
              count++;
              worst = Math.max(worst, run.seconds - TIMEOUT_S);
              const what = `${fault}: ${name} ${args.join(" ")}`;
              const output = run.stdout + run.stderr;
              const problems: string[] = [];
              if (run.seconds > TIMEOUT_S + 1) {
                problems.push(`took ${run.seconds.toFixed(1)} s (--timeout ${TIMEOUT_S})`);
              }
              if (run.code !== expect.code) problems.push(`exit ${run.code}, not ${expect.code}`);
              if (/^\s+at .*:\d+:\d+\)?$/m.test(output) || /Uncaught/.test(output)) {
                problems.push("a stack trace");
              }
              // The reason is on one line of the report (or the one line on stderr).
              if (expect.reason && !output.split("\n").some((l) => expect.reason!.test(l))) {
                problems.push(`no line matches ${expect.reason}`);
              }
              if (run.stdout === "" && run.stderr.trim().split("\n").length > 1) {
                problems.push("more than one line on stderr");
              }
              if (problems.length > 0) {
                failures.push(`${what}: ${problems.join("; ")}\n${output.slice(0, 1500)}`);
              }
            }),
          );
        } finally {
          await setFault(builder, fault, false);
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    console.log(
      `faults: ${count} runs, worst ${worst.toFixed(2)} s over --timeout ${TIMEOUT_S}`,
    );
    assert.deepEqual(failures, []);
  },
);
