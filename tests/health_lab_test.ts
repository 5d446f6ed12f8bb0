/**
 * The health check against real lab builders over ssh: a healthy one, a store and a build
 * directory on small tmpfs mounts (inside the builder's own mount namespace), a nix-daemon running,
 * stopped and older than nix.conf, an untrusted ssh user, broken binfmt, nix off the PATH, and
 * builders that are down or hung.
 */
import assert from "node:assert/strict";
import type { Finding } from "../lib/findings.ts";
import { healthCheck, type HealthCheckOptions, type HealthResult } from "../lib/health.ts";
import { parseThreshold } from "../lib/nagios.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import type { RunOptions, RunResult } from "../lib/target.ts";
import { type Builder, type Lab, labTest, startLab } from "./lab/lab.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** An ssh target that counts the remote commands it runs. */
class CountingSshTarget extends SshTarget {
  runs: string[] = [];
  override run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    this.runs.push(argv.join(" ").slice(0, 60));
    return super.run(argv, options);
  }
}

const CALM = {
  loadWarning: parseThreshold("~:1000"),
  loadCritical: parseThreshold("~:1000"),
  pressureWarning: parseThreshold("~:100"),
  pressureCritical: parseThreshold("~:100"),
};

function target(lab: Lab, builder: Builder, timeoutMs = 20_000): CountingSshTarget {
  return new CountingSshTarget(builder.name, { sshArgs: [...lab.sshOptions], timeoutMs });
}

async function check(
  lab: Lab,
  builder: Builder,
  options: HealthCheckOptions = {},
): Promise<HealthResult> {
  const t = target(lab, builder);
  try {
    return await healthCheck(t, {
      thresholds: CALM,
      oomBaseline: await calmBaseline(),
      ...options,
    });
  } finally {
    await t.close();
  }
}

/** A baseline equal to the kernel's counter now: OOM kills of other tests are not news. */
async function calmBaseline() {
  const vmstat = await Deno.readTextFile("/proc/vmstat");
  return {
    bootId: (await Deno.readTextFile("/proc/sys/kernel/random/boot_id")).trim(),
    oomKills: Number(/^oom_kill (\d+)$/m.exec(vmstat)?.[1] ?? 0),
    checkedAt: new Date(Date.now() - 60_000).toISOString(),
  };
}

function find(result: HealthResult, id: string): Finding {
  const found = result.findings.find((f) => f.id === id);
  assert.ok(found, `no ${id} in ${result.findings.map((f) => `${f.id}:${f.status}`).join(", ")}`);
  return found;
}

async function acceptedConnections(builder: Builder): Promise<number> {
  const log = await Deno.readTextFile(`${builder.dir}/sshd.log`);
  return log.match(/^Accepted publickey for /gm)?.length ?? 0;
}

async function script(lab: Lab, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/health_check.ts`, ...args],
    env: { ...lab.env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

labTest(
  "health check of a healthy lab builder: all OK, through exactly one ssh connection",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    const before = await acceptedConnections(builder);
    const t = target(lab, builder);
    let result: HealthResult;
    try {
      result = await healthCheck(t, { thresholds: CALM, oomBaseline: await calmBaseline() });
    } finally {
      await t.close();
    }
    assert.equal(await acceptedConnections(builder) - before, 1);
    // The cheap reads come in one batch; the rest are a handful of commands over the same connection.
    assert.ok(t.runs.length <= 10, `ran ${t.runs.length} remote commands: ${t.runs.join(" | ")}`);
    assert.deepEqual(
      result.findings.filter((f) => f.status !== "ok").map((f) => `${f.id}: ${f.summary}`),
      [],
    );
    assert.equal(
      find(result, "health/daemon").summary,
      "single-user Nix 2.8.0: no nix-daemon; the local store answers",
    );
    // aarch64-linux is emulated here: check_binfmt's findings, not health/binfmt.
    assert.ok(result.findings.some((f) => f.id === "binfmt/entry" && f.status === "ok"));
    assert.ok(!result.findings.some((f) => f.id === "health/binfmt"));
    assert.equal(
      result.metrics.find((m) => m.name === "nix_builder_binfmt_ok")?.labels?.system,
      "aarch64-linux",
    );
    assert.equal(result.metrics.find((m) => m.name === "nix_builder_binfmt_ok")?.value, 1);
    const skew = result.metrics.find((m) => m.name === "nix_builder_clock_skew_seconds")?.value;
    assert.ok(skew !== undefined && Math.abs(skew) < 1, `skew ${skew}`);
  },
);

labTest(
  "health check: a store on a nearly full tmpfs is CRITICAL, by bytes and by inodes",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    await builder.execOk([
      "mount",
      "-t",
      "tmpfs",
      "-o",
      "size=4m,nr_inodes=400",
      "tmpfs",
      "/nix/store",
    ]);
    await builder.execOk(["dd", "if=/dev/zero", "of=/nix/store/.fill", "bs=64k", "count=62"]);
    const full = await check(lab, builder);
    const store = find(full, "health/store-space");
    assert.equal(store.status, "critical");
    assert.match(
      store.summary,
      /^store \/nix\/store: [0-3]\.\d% free \(\d+\.\d KiB of 4\.0 MiB\)$/,
    );
    assert.match(store.fix ?? "", /nix-collect-garbage/);
    const avail = full.metrics.find((m) =>
      m.name === "nix_builder_filesystem_avail_bytes" && m.labels?.role === "store"
    );
    assert.ok(avail && avail.value < 0.05 * 4 * 1024 ** 2);
    // The build dir (/tmp) is elsewhere: its own finding, OK.
    assert.equal(find(full, "health/build-dir-space").status, "ok");

    await builder.execOk(["umount", "/nix/store"]);
    await builder.execOk([
      "mount",
      "-t",
      "tmpfs",
      "-o",
      "size=64m,nr_inodes=100",
      "tmpfs",
      "/nix/store",
    ]);
    await builder.execOk([
      "sh",
      "-c",
      "i=0; while [ $i -lt 98 ]; do : > /nix/store/.f$i; i=$((i+1)); done",
    ]);
    const inodes = find(await check(lab, builder), "health/store-space");
    assert.equal(inodes.status, "critical");
    assert.match(inodes.summary, /^store \/nix\/store: [0-9.]+% of inodes free \(\d of 100\)$/);

    await builder.execOk(["umount", "/nix/store"]);
    assert.equal(find(await check(lab, builder), "health/store-space").status, "ok");
  },
);

labTest("health check: a build directory on a 92% full tmpfs warns", async () => {
  await using lab = await startLab({ builders: 1 });
  const builder = lab.builders[0]!;
  const dir = `${builder.dir}/builds`;
  await Deno.mkdir(dir);
  await builder.execOk(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir]);
  await builder.execOk(["dd", "if=/dev/zero", `of=${dir}/.fill`, "bs=64k", "count=118"]);
  const result = await check(lab, builder, { buildDir: dir });
  const build = find(result, "health/build-dir-space");
  assert.equal(build.status, "warning");
  assert.match(build.summary, new RegExp(`^build dir ${dir}: [5-9]\\.\\d% free \\(`));
  assert.match(build.fix ?? "", /nix-build-\*/);
  await builder.execOk(["umount", dir]);
  assert.equal(
    find(await check(lab, builder, { buildDir: dir }), "health/build-dir-space").status,
    "ok",
  );
});

labTest("health check: a running nix-daemon answers; stopped, it is CRITICAL", async () => {
  await using lab = await startLab({ builders: 1 });
  const builder = lab.builders[0]!;
  // The lab runs a nix-daemon for the untrusted-user fault.
  await builder.setFault("untrusted-user", true);
  const running = await check(lab, builder);
  const daemon = find(running, "health/daemon");
  assert.match(daemon.summary, /^nix-daemon \(pid \d+, up \d+ s\) answers: Nix 2\.8\.0$/);
  assert.equal(running.metrics.find((m) => m.name === "nix_builder_daemon_running")?.value, 1);
  assert.equal(find(running, "health/daemon-config").status, "ok");
  assert.ok(!running.findings.some((f) => f.id === "health/daemon-down"));

  await builder.setFault("untrusted-user", false); // stops the daemon; its socket stays behind
  const stopped = await check(lab, builder);
  const down = find(stopped, "health/daemon-down");
  assert.equal(down.status, "critical");
  assert.equal(
    down.summary,
    "nix-daemon is not running (its socket /nix/var/nix/daemon-socket/socket exists): " +
      "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused",
  );
  assert.match(down.fix ?? "", /systemctl restart nix-daemon/);
  assert.equal(stopped.metrics.find((m) => m.name === "nix_builder_store_up")?.value, 0);
  assert.ok(!stopped.findings.some((f) => f.id === "health/daemon"));
});

labTest("health check: nix.conf changed after nix-daemon started warns", async () => {
  await using lab = await startLab({ builders: 1 });
  const builder = lab.builders[0]!;
  await builder.setFault("untrusted-user", true);
  assert.equal(find(await check(lab, builder), "health/daemon-config").status, "ok");
  const later = new Date(Date.now() + 10_000);
  await Deno.utime(builder.nixConfFile, later, later);
  const stale = find(await check(lab, builder), "health/daemon-config");
  assert.equal(stale.status, "warning");
  assert.match(
    stale.summary,
    /^\/etc\/nix\/nix\.conf changed at \S+Z, after nix-daemon started at \S+Z: the daemon still runs with the old settings$/,
  );
});

labTest("health check: an ssh user missing from trusted-users warns; root does not", async () => {
  await using lab = await startLab({ builders: 1 });
  const builder = lab.builders[0]!;
  await builder.setFault("untrusted-user", true);
  const result = await check(lab, builder, { builderUsers: ["root", "nixremote"] });
  const trusted = find(result, "health/trusted-users");
  assert.equal(trusted.status, "warning");
  assert.equal(trusted.summary, "nixremote: not in trusted-users (root)");
  assert.match(trusted.fix ?? "", /trusted-users = root nixremote/);
  const rootOnly = find(
    await check(lab, builder, { builderUsers: ["root"] }),
    "health/trusted-users",
  );
  assert.equal(rootOnly.status, "ok");
});

labTest(
  "health check: a disabled binfmt entry is CRITICAL and its system's metric drops to 0",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    await builder.setFault("binfmt-disabled", true);
    const result = await check(lab, builder);
    const problems = result.findings.filter((f) => f.id.startsWith("binfmt/") && f.status !== "ok");
    assert.ok(problems.some((f) => f.status === "critical"), JSON.stringify(problems));
    assert.equal(
      result.metrics.find((m) =>
        m.name === "nix_builder_binfmt_ok" && m.labels?.system === "aarch64-linux"
      )
        ?.value,
      0,
    );
    // Through the script: exit 2 and the nagios line names the problem.
    const out = await script(lab, [
      "--host",
      builder.name,
      "--nagios",
      "--no-state",
      "--load-warning",
      "~:1000",
      "--load-critical",
      "~:1000",
      "--pressure-warning",
      "~:100",
      "--pressure-critical",
      "~:100",
      "--oom-window",
      "1m",
    ]);
    assert.equal(out.code, 2, out.stderr);
    assert.match(out.stdout, /^CRITICAL: builder1: .*aarch64-linux.* \| /);
  },
);

labTest("health check: nix missing from the ssh session's PATH is CRITICAL", async () => {
  await using lab = await startLab({ builders: 1 });
  const builder = lab.builders[0]!;
  await builder.setFault("nix-not-on-path", true);
  const missing = find(await check(lab, builder), "health/nix-missing");
  assert.equal(missing.status, "critical");
  assert.equal(
    missing.summary,
    "nix is not installed on builder1, or not on the PATH of this session",
  );
});

labTest(
  "health check: a builder that is down or hung ends UNKNOWN within the deadline",
  async () => {
    await using lab = await startLab({ builders: 1, connectTimeoutSeconds: 2 });
    const builder = lab.builders[0]!;
    await builder.setFault("down", true);
    const down = await check(lab, builder);
    assert.deepEqual(down.findings.map((f) => f.id), ["health/unreachable"]);
    assert.match(
      down.findings[0]!.summary,
      /^cannot check builder1: could not reach the host: .*Connection refused/,
    );
    await builder.setFault("down", false);
    await builder.setFault("hung", true);
    const started = Date.now();
    const out = await script(lab, [
      "--host",
      builder.name,
      "--timeout",
      "4",
      "--nagios",
      "--no-state",
    ]);
    assert.ok(Date.now() - started < 6000, `took ${Date.now() - started} ms`);
    assert.equal(out.code, 3);
    assert.match(out.stdout, /^UNKNOWN: builder1: cannot check builder1: /);
  },
);

/**
 * Makes the kernel's OOM killer kill one process: `tail` reading a 64 MiB line in a memory cgroup
 * limited to 16 MiB. Returns the cgroup's name, which the kernel's kill message carries.
 */
async function provokeOomKill(): Promise<string> {
  const name = `nbr-health-oom-${Deno.pid}-${Date.now().toString(36)}`;
  let cgroup = `/sys/fs/cgroup/memory/${name}`;
  try {
    Deno.statSync("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    await Deno.mkdir(cgroup);
    await Deno.writeTextFile(`${cgroup}/memory.limit_in_bytes`, "16M");
  } catch {
    cgroup = `/sys/fs/cgroup/${name}`;
    await Deno.mkdir(cgroup);
    await Deno.writeTextFile(`${cgroup}/memory.max`, "16M");
    await Deno.writeTextFile(`${cgroup}/memory.swap.max`, "0").catch(() => {});
  }
  try {
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        'echo $$ > "$1/cgroup.procs" && exec sh -c \'tr -d "\\n" < /dev/zero | head -c 64M | tail -n 1 | wc -c\'',
        "sh",
        cgroup,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.notEqual(new TextDecoder().decode(out.stdout).trim(), "67108864", "tail was not killed");
  } finally {
    for (let i = 0; i < 50; i++) {
      try {
        await Deno.remove(cgroup);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  return name;
}

labTest(
  "health check: a real OOM kill on the builder is reported over ssh; in a container it cannot tell",
  async () => {
    const baseline = await calmBaseline();
    baseline.checkedAt = new Date().toISOString();
    const cgroup = await provokeOomKill();

    // A builder in the host's user namespace reads the kernel log (dmesg) over ssh.
    {
      await using lab = await startLab({ builders: 1, emulation: "global" });
      const result = await check(lab, lab.builders[0]!, { oomBaseline: baseline });
      const oom = find(result, "health/oom-kills");
      assert.notEqual(oom.status, "ok");
      assert.match(oom.summary, /^\d+ OOM kills? since the last run/);
      assert.match(oom.detail ?? "", new RegExp(`tail \\(pid \\d+\\), .* in /${cgroup}`));
    }

    // In a user namespace (a container) dmesg is refused and there is no journal: without a
    // baseline the check cannot tell, and says why instead of "no OOM kills".
    {
      await using lab = await startLab({ builders: 1, emulation: "namespace" });
      const t = target(lab, lab.builders[0]!);
      const result = await healthCheck(t, { thresholds: CALM }).finally(() => t.close());
      const oom = find(result, "health/oom-kills");
      assert.equal(oom.status, "unknown");
      assert.match(
        oom.summary,
        /^cannot tell OOM kills in the last 24 h: the kernel log cannot be read on builder1 \(the kernel counted \d+ since boot\)$/,
      );
      assert.match(oom.detail ?? "", /dmesg.*Operation not permitted/);
      // With the state file's baseline, the counter alone still counts new kills.
      const counted = await check(lab, lab.builders[0]!, { oomBaseline: baseline });
      assert.notEqual(find(counted, "health/oom-kills").status, "ok");
    }
  },
);
