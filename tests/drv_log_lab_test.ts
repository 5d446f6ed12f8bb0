/**
 * drv_log.ts against the builder lab: a controller with max-jobs = 0 offloads a failing build to a
 * real builder over ssh; the log is then fetched from the controller, from the builder (--host,
 * --builders), and its compressed file is read over ssh; a builder that is down is reported.
 */
import assert from "node:assert/strict";
import { openBuildLog } from "../lib/build_log.ts";
import { parseStorePath } from "../lib/store_path.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import { type Lab, labTest, startLab } from "./lab/lab.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** A failing derivation with a compiler-style error, made unique by a nonce. */
function failing(nonce: string): string {
  const script = [
    `echo 'Running phase: buildPhase'`,
    `echo 'cc -c -o main.o main.c  # ${nonce}'`,
    `echo "main.c:3:7: error: 'y' undeclared (first use in this function)"`,
    `echo 'make: *** [Makefile:2: main.o] Error 1'`,
    "exit 2",
  ].join("; ");
  return `derivation { name = "drvlog-lab-${nonce}"; system = "x86_64-linux"; builder = "/bin/sh"; ` +
    `args = [ "-c" ${JSON.stringify(script)} ]; }`;
}

async function failedBuild(lab: Lab): Promise<{ drv: string; output: string }> {
  const nonce = crypto.randomUUID().slice(0, 8);
  const result = await lab.controller.exec(["nix-build", "--no-out-link", "-E", failing(nonce)], {
    timeoutMs: 120_000,
  });
  assert.notEqual(result.code, 0, result.stderr);
  const drv = /builder for '(\/nix\/store\/[^']+\.drv)' failed with exit code/.exec(result.stderr)
    ?.[1];
  assert.ok(drv, result.stderr);
  return { drv, output: result.stderr };
}

async function drvLog(lab: Lab, args: string[], stdin?: string) {
  return await lab.controller.exec(
    [Deno.execPath(), "run", "-A", `${ROOT}scripts/drv_log.ts`, "--no-pager", ...args],
    {
      env: { NO_COLOR: "1", NIX_CONFIG: "substituters =" },
      timeoutMs: 120_000,
      ...(stdin !== undefined ? { stdin } : {}),
    },
  );
}

labTest(
  "drv_log.ts fetches an offloaded build's log from the controller and, with --host, from the builder",
  async () => {
    await using lab = await startLab({ builders: 1 });
    // ssh-ng:// keeps the log on the builder too (legacy ssh:// does not, with Nix 2.8).
    await lab.builders[0]!.setMachine({ protocol: "ssh-ng" });
    const { drv, output } = await failedBuild(lab);
    assert.match(output, /building '\/nix\/store\/[^']+\.drv' on 'ssh-ng:\/\/builder1'/);

    const local = await drvLog(lab, [drv, "--errors"]);
    assert.equal(local.code, 0, local.stdout + local.stderr);
    assert.match(local.stdout, /^log: nix-store -l on localhost · 4 lines/m);
    assert.match(local.stdout, /likely cause: line 3: a compiler error/);

    const remote = await drvLog(lab, [drv, "--errors", "--skip-local", "--host", "builder1"]);
    assert.equal(remote.code, 0, remote.stdout + remote.stderr);
    assert.match(remote.stdout, /^log: nix-store -l on builder1 · 4 lines/m);
    assert.match(remote.stdout, />\s+3 │ main\.c:3:7: error: 'y' undeclared/);

    const viaBuilders = await drvLog(lab, [
      "--from-build-output",
      "-",
      "--skip-local",
      "--builders",
      "--json",
    ], output);
    const report = JSON.parse(viaBuilders.stdout);
    assert.equal(report.status, "ok", viaBuilders.stdout);
    assert.equal(report.data.logs[0].found.label, "ssh-ng://builder1");
    assert.equal(report.data.logs[0].primary.line, 3);
  },
);

labTest(
  "drv_log.ts decompresses a builder's .bz2 log file over ssh when nix-store cannot serve it",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.builders[0]!.setMachine({ protocol: "ssh-ng" });
    const { drv } = await failedBuild(lab);
    const target = new SshTarget("builder1", { sshArgs: [...lab.sshOptions], timeoutMs: 30_000 });
    try {
      const opened = await openBuildLog(target, parseStorePath(drv), { nixStore: "/bin/false" });
      assert.equal(opened.log?.method, "compressed log file");
      assert.match(opened.log?.path ?? "", /^\/nix\/var\/log\/nix\/drvs\/..\/.*\.drv\.bz2$/);
      const text = await new Response(opened.log!.stream).text();
      assert.match(text, /^Running phase: buildPhase\ncc -c -o main\.o main\.c {2}# [0-9a-f]{8}\n/);
      assert.deepEqual(await opened.log!.done, { ok: true, detail: "" });
      assert.equal(opened.attempts[0]!.method, "nix-store -l");
      assert.equal(opened.attempts[0]!.outcome, "failed");
    } finally {
      await target.close();
    }
  },
);

labTest(
  "drv_log.ts says the builder could not be asked (exit 3) when it is down, and why the log is missing",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const { drv, output } = await failedBuild(lab);
    assert.match(output, /on 'ssh:\/\/builder1'/);
    // Legacy ssh:// leaves no log on the builder: drv_log says so, and where to look instead.
    const absent = await drvLog(lab, [
      "--from-build-output",
      "-",
      "--skip-local",
      "--host",
      "builder1",
    ], output);
    assert.equal(absent.code, 2, absent.stdout);
    assert.match(
      absent.stdout,
      /CRITICAL {2}log\/not-available {2}build log of .* is not available on builder1/,
    );
    assert.match(
      absent.stdout,
      /built over legacy ssh:\/\/builder1 \(nix-store --serve\), which keeps no log on the builder/,
    );
    assert.match(absent.stdout, /no log found; these are the last 4 lines the build output showed/);

    await lab.builders[0]!.setFault("down");
    const down = await drvLog(lab, [drv, "--skip-local", "--host", "builder1", "--timeout", "20"]);
    assert.equal(down.code, 3, down.stdout + down.stderr);
    assert.match(
      down.stdout,
      /UNKNOWN {2}log\/source-unreachable {2}no log of .* found, and builder1 could not be asked/,
    );
    assert.match(
      down.stdout,
      /builder1 could not be reached: .*(Connection refused|connect to host)/,
    );
  },
);

labTest(
  "drv_log.ts reads a builder's log of an output path from its deriver's .bz2 file over ssh",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.builders[0]!.setMachine({ protocol: "ssh-ng" });
    const nonce = crypto.randomUUID().slice(0, 8);
    const script = `echo 'Running phase: installPhase'; echo 'built ${nonce}'; echo out > $out`;
    const result = await lab.controller.exec([
      "nix-build",
      "--no-out-link",
      "-E",
      `derivation { name = "drvlog-lab-out-${nonce}"; system = "x86_64-linux"; ` +
      `builder = "/bin/sh"; args = [ "-c" ${JSON.stringify(script)} ]; }`,
    ], { timeoutMs: 120_000 });
    assert.equal(result.code, 0, result.stderr);
    const drv = /building '(\/nix\/store\/[^']+\.drv)' on 'ssh-ng:\/\/builder1'/.exec(result.stderr)
      ?.[1];
    assert.ok(drv, result.stderr);
    const out = result.stdout.trim();
    const target = new SshTarget("builder1", { sshArgs: [...lab.sshOptions], timeoutMs: 30_000 });
    try {
      // Every log counts as large: nix-store -l is skipped and the file is read directly, which
      // needs the deriver's name (asked on the builder), not the output's.
      const opened = await openBuildLog(target, parseStorePath(out), { largeFileBytes: 4 });
      assert.equal(opened.deriver?.path, drv);
      assert.equal(opened.log?.method, "compressed log file");
      const base = drv.slice("/nix/store/".length);
      assert.equal(
        opened.log?.path,
        `/nix/var/log/nix/drvs/${base.slice(0, 2)}/${base.slice(2)}.bz2`,
      );
      assert.equal(opened.attempts[0]!.outcome, "skipped");
      assert.equal(
        await new Response(opened.log!.stream).text(),
        `Running phase: installPhase\nbuilt ${nonce}\n`,
      );
      assert.deepEqual(await opened.log!.done, { ok: true, detail: "" });
    } finally {
      await target.close();
    }
  },
);
