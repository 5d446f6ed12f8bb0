/**
 * Proof tests of the lab: the post's setup for real, and each fault giving the failure Nix 2.8
 * itself reports. Every test starts its own lab (about 0.2 s) so none depends on another.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Lab, labTest, REMOTE_USER, startLab } from "./lab.ts";
import { cleanupLabs, LAB_ROOT, readState } from "./_state.ts";
import { isAlive, run, sleep } from "./_run.ts";
import { withGlobalLock } from "./lock.ts";

/** Nix 2.8 leaks serve-protocol framing (NULs, length bytes) into remote error lines. */
function clean(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x08\x0b\x0c\x0e-\x1f]/g, "").replace(/ {2,}/g, " ");
}

/** Nix's summary when the only builder could not be used (legacy `ssh://`). */
const NO_MACHINE = "error: unable to start any build; " +
  "remote machines may not have all required system features.";

async function buildOk(lab: Lab, system: "x86_64-linux" | "aarch64-linux") {
  const canary = lab.canary(system);
  const result = await lab.controller.nixBuild(canary.expression, { timeoutMs: 60_000 });
  assert.equal(result.code, 0, `build of ${canary.name} failed: ${result.stderr}`);
  return { ...result, canary };
}

labTest(
  "lab: the controller with max-jobs = 0 offloads an x86_64-linux canary to a builder",
  async () => {
    await using lab = await startLab({ builders: 2 });
    const conf = await lab.controller.exec(["nix", "show-config"]);
    assert.match(conf.stdout, /^max-jobs = 0$/m);
    assert.match(conf.stdout, /^builders = @\/etc\/nix\/machines$/m);
    assert.match(conf.stdout, /^builders-use-substitutes = true$/m);
    const { canary, outPath, drvPath, stderr } = await buildOk(lab, "x86_64-linux");
    assert.match(stderr, /building '\/nix\/store\/[^']+\.drv' on 'ssh:\/\/builder[12]'/);
    const on = /on 'ssh:\/\/(builder[12])'/.exec(stderr)?.[1] as string;
    assert.ok(outPath && drvPath);
    // The output came back into the controller's own store.
    const back = await lab.controller.exec(["cat", outPath]);
    assert.equal(back.stdout, `${canary.nonce}\n`);
    // It was built on that builder: its store has it; the other builder's does not.
    const there = await lab.builder(on).exec(["nix-store", "--check-validity", outPath]);
    assert.equal(there.code, 0, there.stderr);
    const other = lab.builders.find((b) => b.name !== on);
    const notThere = await other!.exec(["nix-store", "--check-validity", outPath]);
    assert.notEqual(notThere.code, 0);
    // The machine's own store never saw it.
    assert.equal(await exists(outPath), false);
    // The build log is kept on the controller ...
    const log = await lab.controller.exec(["nix-store", "-l", drvPath]);
    assert.equal(log.code, 0, log.stderr);
    assert.equal(log.stdout, `canary ${canary.nonce}\n`);
    // ... but Nix 2.8's `nix-store --serve` (legacy ssh://) sets keep-build-log = false:
    const remoteLog = await lab.builder(on).exec(["nix-store", "-l", drvPath]);
    assert.match(remoteLog.stderr, /build log of derivation '.*' is not available/);
  },
);

labTest(
  "lab: an ssh-ng:// build leaves its log on both the controller and the builder",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.builders[0]!.setMachine({ protocol: "ssh-ng" });
    const { canary, drvPath, stderr } = await buildOk(lab, "x86_64-linux");
    assert.match(stderr, /on 'ssh-ng:\/\/builder1'/);
    const local = await lab.controller.exec(["nix-store", "-l", drvPath as string]);
    assert.equal(local.stdout, `canary ${canary.nonce}\n`);
    const remote = await lab.builders[0]!.exec(["nix-store", "-l", drvPath as string]);
    assert.equal(remote.code, 0, remote.stderr);
    assert.equal(remote.stdout, `canary ${canary.nonce}\n`);
  },
);

labTest(
  "lab: an aarch64-linux canary builds on the x86_64 builder through binfmt_misc + qemu",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    const entry = await builder.exec(["cat", "/proc/sys/fs/binfmt_misc/qemu-aarch64"]);
    assert.match(entry.stdout, /^enabled$/m);
    assert.match(entry.stdout, /^interpreter \/usr\/libexec\/qemu-binfmt\/aarch64-binfmt-P$/m);
    assert.match(entry.stdout, /^flags: .*F/m);
    const { outPath, drvPath, stderr } = await buildOk(lab, "aarch64-linux");
    assert.match(stderr, /on 'ssh:\/\/builder1'/);
    assert.match(stderr, /^canary(-[0-9a-f]+)?> ok$/m); // -L prefixes the name without its "version"
    assert.equal((await lab.controller.exec(["cat", outPath as string])).stdout, "ok\n");
    assert.equal(
      (await lab.controller.exec(["nix-store", "-l", drvPath as string])).stdout,
      "ok\n",
    );
    // The same works inside Nix's sandbox: the F flag opened the interpreter at registration.
    await builder.setNixConf({ sandbox: true });
    await buildOk(lab, "aarch64-linux");
  },
);

labTest(
  "lab: with builders empty, max-jobs = 0 fails with 'unable to start any build'",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.controller.setNixConf({ builders: "" });
    const result = await lab.controller.nixBuild(lab.canary("x86_64-linux").expression);
    assert.equal(result.code, 1);
    assert.equal(
      result.stderr.split("\n")[0],
      "error: unable to start any build; either increase '--max-jobs' or enable remote builds.",
    );
    // An empty machines file behind `builders = @/etc/nix/machines` is the same to Nix.
    await lab.controller.setNixConf({ builders: "@/etc/nix/machines" });
    await lab.controller.setMachines("");
    const again = await lab.controller.nixBuild(lab.canary("x86_64-linux").expression);
    assert.match(again.stderr, /^error: unable to start any build; either increase '--max-jobs'/);
  },
);

/** Switches a fault on, checks Nix's message, switches it off and checks a build works again. */
async function faultCase(options: {
  fault: Parameters<Lab["builders"][number]["setFault"]>[0];
  system: "x86_64-linux" | "aarch64-linux";
  expect: RegExp[];
  connectTimeoutSeconds?: number;
}): Promise<string> {
  await using lab = await startLab({
    builders: 1,
    ...(options.connectTimeoutSeconds
      ? { connectTimeoutSeconds: options.connectTimeoutSeconds }
      : {}),
  });
  const builder = lab.builders[0]!;
  await builder.setFault(options.fault);
  const failed = await lab.controller.nixBuild(lab.canary(options.system).expression, {
    timeoutMs: 60_000,
  });
  assert.notEqual(failed.code, 0, `expected a failure under '${options.fault}'`);
  assert.equal(failed.timedOut, false);
  const text = clean(failed.stderr);
  for (const re of options.expect) assert.match(text, re);
  await builder.setFault(options.fault, false);
  await buildOk(lab, options.system);
  return text;
}

labTest("lab fault 'down': Nix reports connection refused", async () => {
  await faultCase({
    fault: "down",
    system: "x86_64-linux",
    expect: [
      /^cannot build on 'ssh:\/\/builder1': error: cannot connect to 'builder1': ssh: connect to host 127\.0\.0\.1 port \d+: Connection refused$/m,
      /^Failed to find a machine for remote build!$/m,
      new RegExp(`^${escape(NO_MACHINE)}$`, "m"),
    ],
  });
});

labTest(
  "lab fault 'hung': Nix gives up after ssh's ConnectTimeout during the banner exchange",
  async () => {
    const started = Date.now();
    await faultCase({
      fault: "hung",
      system: "x86_64-linux",
      connectTimeoutSeconds: 2,
      expect: [
        /^cannot build on 'ssh:\/\/builder1': error: cannot connect to 'builder1': Connection timed out during banner exchange$/m,
        new RegExp(`^${escape(NO_MACHINE)}$`, "m"),
      ],
    });
    assert.ok(Date.now() - started >= 2000);
  },
);

labTest("lab fault 'wrong-host-key': Nix reports ssh's host key verification failure", async () => {
  await faultCase({
    fault: "wrong-host-key",
    system: "x86_64-linux",
    expect: [
      /cannot connect to 'builder1': @+\n@ +WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!/,
      /^Host key verification failed\.$/m,
      new RegExp(`^${escape(NO_MACHINE)}$`, "m"),
    ],
  });
});

labTest("lab fault 'key-refused': Nix reports Permission denied (publickey)", async () => {
  await faultCase({
    fault: "key-refused",
    system: "x86_64-linux",
    expect: [
      /^cannot build on 'ssh:\/\/builder1': error: cannot connect to 'builder1': root@127\.0\.0\.1: Permission denied \(publickey\)\.$/m,
      new RegExp(`^${escape(NO_MACHINE)}$`, "m"),
    ],
  });
});

labTest(
  "lab fault 'nix-not-on-path': Nix reports the remote shell's 'command not found'",
  async () => {
    await faultCase({
      fault: "nix-not-on-path",
      system: "x86_64-linux",
      expect: [
        /^cannot build on 'ssh:\/\/builder1': error: cannot connect to 'builder1': bash: line 1: nix-store: command not found$/m,
        new RegExp(`^${escape(NO_MACHINE)}$`, "m"),
      ],
    });
  },
);

labTest(
  "lab fault 'untrusted-user': Nix reports 'not privileged to build input-addressed derivations'",
  async () => {
    const text = await faultCase({
      fault: "untrusted-user",
      system: "x86_64-linux",
      expect: [
        new RegExp(`on 'ssh://${REMOTE_USER}@builder1'`),
        /> error: you are not privileged to build input-addressed derivations$/m,
        /^error: builder for '\/nix\/store\/[^']+\.drv' failed with exit code 1$/m,
      ],
    });
    assert.match(text, /^error: unexpected end-of-file$/m);
  },
);

labTest(
  "lab fault 'binfmt-disabled': the aarch64 build fails with 'Exec format error'",
  async () => {
    await faultCase({
      fault: "binfmt-disabled",
      system: "aarch64-linux",
      expect: [
        /executing '\/nix\/store\/[a-z0-9]+-canary-aarch64-elf': Exec format error/,
        /^error: builder for '\/nix\/store\/[^']+\.drv' failed with exit code 1$/m,
      ],
    });
  },
);

labTest(
  "lab fault 'binfmt-removed': the aarch64 build fails with 'Exec format error'",
  async () => {
    await faultCase({
      fault: "binfmt-removed",
      system: "aarch64-linux",
      expect: [/executing '\/nix\/store\/[a-z0-9]+-canary-aarch64-elf': Exec format error/],
    });
  },
);

labTest("lab fault 'no-extra-platforms': the builder says it is an x86_64-linux", async () => {
  await faultCase({
    fault: "no-extra-platforms",
    system: "aarch64-linux",
    expect: [
      /error: a 'aarch64-linux' with features \{\} is required to build '\/nix\/store\/[^']+\.drv', but I am a 'x86_64-linux' with features \{benchmark, big-parallel, nixos-test\}$/m,
    ],
  });
});

labTest(
  "lab: the controller namespace runs deno and reaches builders by alias; outside via lab.sshOptions",
  async () => {
    await using lab = await startLab({ builders: 2 });
    const inside = await lab.controller.exec([
      "deno",
      "eval",
      "console.log(Deno.readTextFileSync('/etc/nix/machines'))",
    ]);
    assert.equal(inside.code, 0, inside.stderr);
    assert.match(
      inside.stdout,
      /^ssh:\/\/builder1 x86_64-linux,aarch64-linux - 2 1 big-parallel - -$/m,
    );
    const ssh = await lab.controller.exec(["ssh", "builder2", "--", "cat", "/etc/nix/nix.conf"]);
    assert.equal(ssh.code, 0, ssh.stderr);
    assert.match(ssh.stdout, /^extra-platforms = aarch64-linux$/m);
    const outside = await run([
      "ssh",
      ...lab.sshOptions,
      "builder1",
      "--",
      "nix-store",
      "--version",
    ], {
      timeoutMs: 20_000,
    });
    assert.equal(outside.stdout, "nix-store (Nix) 2.8.0\n");
    // The machine's own /etc/nix is not the one Nix sees inside.
    const hostConf = await Deno.readTextFile("/etc/nix/nix.conf").catch(() => "");
    assert.doesNotMatch(hostConf, /written by the nix-builder-runbook lab/);
  },
);

labTest("lab: stop() leaves no process, namespace or directory behind", async () => {
  const lab = await startLab({ builders: 2 });
  const pids = [lab.controller.pid, ...lab.builders.map((b) => b.pid)];
  const sshd = lab.builders.map((b) => b.sshdPid);
  const ns = await Promise.all(pids.map((p) => Deno.readLink(`/proc/${p}/ns/mnt`)));
  await lab.builders[1]!.setFault("untrusted-user");
  // Only processes that existed before stop() can still be in the lab's namespaces (namespace
  // inode numbers are reused at once, so a process started later may show the same number).
  const before = new Set(await allPids());
  await lab.stop();
  for (const pid of [...pids, ...sshd]) assert.equal(isAlive(pid), false, `pid ${pid} survived`);
  assert.equal(await exists(lab.dir), false);
  const left = await processesMentioning(lab.id);
  assert.deepEqual(left, []);
  const nsNow = await namespacesInUse(before);
  for (const n of ns) assert.equal(nsNow.has(n), false, `${n} still in use`);
});

labTest(
  "lab: a killed owner takes its namespaces along; cleanupLabs() removes the rest",
  async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `const { startLab } = await import(${
          JSON.stringify(new URL("./lab.ts", import.meta.url).href)
        });
       const lab = await startLab({ builders: 2 });
       console.log(lab.id);
       await new Promise(() => {});`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stdout.getReader();
    const first = await reader.read();
    const id = new TextDecoder().decode(first.value).trim();
    reader.releaseLock();
    assert.match(id, /^lab-/);
    const state = await readState(`${LAB_ROOT}/${id}`);
    assert.ok(state && state.holderPids.length === 3);
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel();
    await child.stderr.cancel();
    const deadline = Date.now() + 5000;
    while (state.holderPids.some(isAlive) && Date.now() < deadline) await sleep(20);
    for (const pid of state.holderPids) assert.equal(isAlive(pid), false, `holder ${pid} survived`);
    assert.deepEqual(await processesMentioning(id), []);
    const report = await cleanupLabs();
    assert.ok(report.removed.includes(id), JSON.stringify(report));
    assert.equal(await exists(`${LAB_ROOT}/${id}`), false);
  },
);

labTest("lab: global emulation mode registers one machine-wide entry and removes it", async () => {
  let entry = "";
  {
    await using lab = await startLab({ builders: 1, emulation: "global" });
    entry = lab.builders[0]!.binfmtEntry as string;
    assert.match(entry, /^nbr-lab-/);
    await buildOk(lab, "aarch64-linux");
  }
  // Read the global instance through a private mount, so the host's mounts stay as they are.
  const seen = await withGlobalLock("binfmt", () =>
    run([
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "--",
      "sh",
      "-c",
      "{ [ -e /proc/sys/fs/binfmt_misc/register ] || " +
      "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; } && ls /proc/sys/fs/binfmt_misc",
    ], { timeoutMs: 10_000 }));
  assert.equal(seen.code, 0, seen.stderr);
  assert.doesNotMatch(seen.stdout, new RegExp(`^${escape(entry)}$`, "m"));
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function processesMentioning(text: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = (await Deno.readTextFile(`/proc/${entry.name}/cmdline`)).replaceAll(
        "\0",
        " ",
      );
      if (cmdline.includes(text)) found.push(`${entry.name}: ${cmdline}`);
    } catch {
      // gone
    }
  }
  return found;
}

async function allPids(): Promise<string[]> {
  const pids: string[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (/^\d+$/.test(entry.name)) pids.push(entry.name);
  }
  return pids;
}

async function namespacesInUse(among: ReadonlySet<string>): Promise<Set<string>> {
  const found = new Set<string>();
  for (const pid of await allPids()) {
    if (!among.has(pid)) continue;
    try {
      found.add(await Deno.readLink(`/proc/${pid}/ns/mnt`));
    } catch {
      // gone
    }
  }
  return found;
}

labTest(
  "lab fault 'hung' with no ConnectTimeout (a stock controller): Nix 2.8 waits forever",
  async () => {
    await using lab = await startLab({ builders: 1, connectTimeoutSeconds: 0 });
    const config = await Deno.readTextFile(lab.controller.sshConfigFile);
    assert.doesNotMatch(config, /ConnectTimeout/);
    await lab.builders[0]!.setFault("hung");
    const result = await lab.controller.nixBuild(lab.canary("x86_64-linux").expression, {
      timeoutMs: 4000,
    });
    assert.equal(result.timedOut, true);
    assert.equal(result.code, 124);
  },
);

Deno.test("labTest() skips with one line when prerequisites are missing, fails under LAB_REQUIRED=1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-labtest-" });
  try {
    const file = `${dir}/probe_test.ts`;
    const lab = new URL("./lab.ts", import.meta.url).href;
    await Deno.writeTextFile(
      file,
      `import { labTest } from ${JSON.stringify(lab)};\nlabTest("probe", () => {});\n`,
    );
    const probe = async (required: boolean) => {
      const env: Record<string, string> = {
        PATH: "/nonexistent",
        HOME: Deno.env.get("HOME") ?? "/",
      };
      if (required) env["LAB_REQUIRED"] = "1";
      return await run([Deno.execPath(), "test", "-A", "--no-check", file], {
        env,
        clearEnv: true,
        timeoutMs: 60_000,
      });
    };
    const skipped = await probe(false);
    assert.equal(skipped.code, 0, skipped.stderr);
    // Deno shows module-load output as "pre-test output" on stdout.
    const lines = (skipped.stdout + skipped.stderr).split("\n")
      .filter((l) => l.startsWith("lab tests skipped:"));
    assert.equal(lines.length, 1);
    assert.match(
      lines[0] as string,
      /^lab tests skipped: Lab prerequisites missing: .*nix-bin \(nix\)/,
    );
    assert.match(skipped.stdout, /probe \.\.\. .*ignored/);
    const required = await probe(true);
    assert.notEqual(required.code, 0);
    assert.match(
      required.stdout + required.stderr,
      /Lab prerequisites missing: .*\(LAB_REQUIRED=1\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
