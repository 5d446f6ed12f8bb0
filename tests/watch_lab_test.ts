/**
 * watch_builders against the builder lab: real sshd, real Nix 2.8 builds offloaded from a
 * controller with max-jobs = 0, a real terminal (tmux).
 *
 * Set `NBR_WATCH_CAPTURE=<dir>` to keep the tmux captures (the runbook's views come from there).
 *
 * @module
 */

import assert from "node:assert/strict";
import { cgroup2Mount } from "./_cgroup.ts";
import { type Lab, labTest, startLab } from "./lab/lab.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import { canaryElf } from "./lab/canary.ts";
import { BuilderWatch, type WatchEvent } from "../lib/watch_session.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `${ROOT}scripts/watch_builders.ts`;
// This machine may be under memory pressure from other tests while Nix runs: keep the verdicts
// about what these tests do (the warning path has its own test with thresholds it must cross).
const CALM = ["--psi-warn", "99", "--psi-crit", "99.5", "--mem-warn", "0.2", "--mem-crit", "0.1"];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// Lab builders share this machine's kernel: an OOM kill anywhere on it (another test's) raises
// watch/oom-kill (critical) on every lab builder. These tests ignore that one finding.
const FOREIGN_OOM = "for lack of memory during the watch";

/** A derivation whose builder runs `/bin/sleep` (sandbox is off in the lab). */
function slowDrv(name: string, seconds: number, exit = 0): string {
  const nonce = crypto.randomUUID().slice(0, 8);
  const tail = exit === 0 ? "echo ok > $out" : `exit ${exit}`;
  return `derivation { name = "${name}-${nonce}"; system = "x86_64-linux"; ` +
    `builder = "/bin/sh"; args = [ "-c" "echo compiling; /bin/sleep ${seconds}; ${tail}" ]; }`;
}

/** Every descendant pid of `pid`, from /proc. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    let tasks: string[] = [];
    try {
      tasks = [...Deno.readDirSync(`/proc/${p}/task`)].map((e) => e.name);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        for (const c of Deno.readTextFileSync(`/proc/${p}/task/${t}/children`).split(/\s+/)) {
          if (c !== "") {
            out.push(Number(c));
            queue.push(Number(c));
          }
        }
      } catch {
        // gone
      }
    }
  }
  return out;
}

function argvOf(pid: number): string[] {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter((a) => a !== "");
  } catch {
    return [];
  }
}

/** Every process in the pid namespace of `pid` (host pids). */
function sameNamespace(pid: number): number[] {
  const ns = Deno.readLinkSync(`/proc/${pid}/ns/pid`);
  const out: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (Deno.readLinkSync(`/proc/${entry.name}/ns/pid`) === ns) out.push(Number(entry.name));
    } catch {
      // gone, or a kernel thread
    }
  }
  return out;
}

/** Sampler shells left on the lab's builders, ssh clients left in its controller. */
function leftovers(lab: Lab): { samplers: number[]; ssh: number[] } {
  const samplers = lab.builders.flatMap((b) => sameNamespace(b.pid)).filter((p) => {
    const argv = argvOf(p);
    return argv[1] === "-c" && argv[3] === "nbr-watch";
  });
  const ssh = sameNamespace(lab.controller.pid).filter((p) =>
    /(^|\/)ssh$/.test(argvOf(p)[0] ?? "")
  );
  return { samplers, ssh };
}

async function until<T>(
  what: string,
  timeoutMs: number,
  fn: () => Promise<T | null> | T | null,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await fn();
    if (value !== null) return value;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(100);
  }
}

type Rec = Record<string, unknown> & { type: string; host?: string };

function records(stdout: string): Rec[] {
  return stdout.trim().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Rec);
}

function procs(r: Rec): { pid: number; ppid: number; name: string; uid: number }[] {
  return (r.processes as { pid: number; ppid: number; name: string; uid: number }[]) ?? [];
}

labTest("watch_builders: samples of a lab builder match the builder's own /proc", async () => {
  await using lab = await startLab({ builders: 2 });
  const result = await lab.controller.exec(
    ["deno", "run", "-A", SCRIPT, "--once", "--json", ...CALM],
    { timeoutMs: 60_000 },
  );
  assert.equal(result.code, 0, result.stderr);
  const samples = records(result.stdout);
  assert.deepEqual(samples.map((r) => [r.type, r.host]), [
    ["sample", "builder1"],
    ["sample", "builder2"],
  ]);
  for (const [i, record] of samples.entries()) {
    const builder = lab.builder(i);
    const own = await builder.exec([
      "sh",
      "-c",
      "cat /proc/meminfo /sys/devices/system/cpu/online /proc/sys/kernel/hostname; ls /proc",
    ]);
    const memTotal = Number(/^MemTotal: +(\d+) kB$/m.exec(own.stdout)![1]);
    assert.equal((record.memory as { totalBytes: number }).totalBytes, memTotal * 1024);
    const online = /^(\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)$/m.exec(own.stdout)![1]!;
    const cpus = online.split(",").reduce((n, r) => {
      const [a, b = a] = r.split("-").map(Number) as [number, number?];
      return n + b! - a + 1;
    }, 0);
    assert.equal(record.cpus, cpus);
    // An idle builder: sshd and the sampler run, nothing under Nix.
    assert.deepEqual(record.processes, []);
    assert.equal(record.status, "ok");
  }
});

labTest(
  "watch_builders -- nix build: reports the builder the build ran on, whose samples show its processes",
  async () => {
    await using lab = await startLab({ builders: 2 });
    const result = await lab.controller.exec(
      [
        "deno",
        "run",
        "-A",
        SCRIPT,
        "--json",
        "--interval",
        "0.5",
        ...CALM,
        "--",
        "nix",
        "build",
        "--impure",
        "--no-link",
        "-L",
        "--expr",
        slowDrv("watched", 3),
      ],
      { timeoutMs: 120_000 },
    );
    const all = records(result.stdout);
    const summary = all.at(-1)!;
    const findings = (summary.findings as { id: string; summary: string }[])
      .filter((f) => !f.summary.includes(FOREIGN_OOM));
    const oom = findings.length < (summary.findings as unknown[]).length;
    assert.equal(result.code, oom ? 2 : 0, result.stderr);
    const builds = all.filter((r) => r.type === "build");
    assert.equal(builds.length, 1, result.stdout);
    const build = builds[0]!;
    assert.equal(build.status, "built");
    assert.match(String(build.name), /^watched-[0-9a-f]{8}$/);
    assert.match(String(build.builder), /^builder[12]$/);
    assert.equal(build.machine, `ssh://${build.builder}`);
    assert.ok(Number(build.durationMs) >= 3000, `durationMs ${build.durationMs}`);
    // The builder named by Nix's log is where the build's processes showed up.
    const on = String(build.builder);
    const other = on === "builder1" ? "builder2" : "builder1";
    const samplesOn = all.filter((r) => r.type === "sample" && r.host === on);
    const seen = samplesOn.find((r) => procs(r).some((p) => p.name === "sleep"));
    assert.ok(seen, `no sample of ${on} shows the build: ${JSON.stringify(samplesOn.at(-1))}`);
    const sleepProc = procs(seen).find((p) => p.name === "sleep")!;
    const parent = procs(seen).find((p) => p.pid === sleepProc.ppid);
    assert.equal(parent?.name, "sh", "the build's sleep runs under the derivation's builder, sh");
    const otherSamples = all.filter((r) => r.type === "sample" && r.host === other);
    assert.ok(otherSamples.length > 0);
    assert.ok(otherSamples.every((r) => procs(r).length === 0), "the other builder built nothing");
    assert.equal(summary.type, "summary");
    assert.equal(summary.status, oom ? "critical" : "ok");
    assert.deepEqual(
      findings.map((f) => [f.id, f.summary]),
      [["watch/offloaded", `1 of 1 derivation went to a remote builder: 1 on ${on}`]],
    );
  },
);

labTest(
  "watch_builders -- nix build: a failed remote build exits 2 naming the builder",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const result = await lab.controller.exec(
      [
        "deno",
        "run",
        "-A",
        SCRIPT,
        "--plain",
        ...CALM,
        "--",
        "nix",
        "build",
        "--impure",
        "--no-link",
        "--expr",
        slowDrv("doomed", 0, 3),
      ],
      { timeoutMs: 120_000 },
    );
    assert.equal(result.code, 2, result.stdout + result.stderr);
    assert.match(result.stdout, /exited with 1 after /);
    assert.match(result.stdout, /^ {2}builder1 +\S+ m?s {2}failed {2}doomed-[0-9a-f]{8}$/m);
    assert.match(
      result.stdout,
      /^CRITICAL doomed-[0-9a-f]{8} failed on builder1: build of '\/nix\/store\/\S+' on 'ssh:\/\/builder1' failed: builder for '\S+' failed with exit code 3$/m,
    );
  },
);

labTest(
  "watch_builders: a build process run by qemu on a lab builder is marked emulated",
  async () => {
    await using lab = await startLab({ builders: 1 });
    // The lab's aarch64 canary with its first instruction replaced by "b ." (it spins), run by an
    // x86_64 build for 4 s: like a cross build running its tests under qemu.
    const elf = canaryElf("aarch64-linux");
    new DataView(elf.buffer).setUint32(120, 0x14000000, true);
    const spin = `${lab.dir}/spin-aarch64`;
    await Deno.writeFile(spin, elf, { mode: 0o755 });
    await Deno.chmod(spin, 0o755);
    const expr = `derivation { name = "qemu-tests-${crypto.randomUUID().slice(0, 8)}"; ` +
      `system = "x86_64-linux"; builder = "/bin/sh"; ` +
      `args = [ "-c" "/usr/bin/timeout 4 ${spin}; echo ok > $out" ]; }`;
    const build = lab.controller.nixBuild(expr, { timeoutMs: 60_000 });
    try {
      const seen = await until("the emulated process", 20_000, async () => {
        const r = await lab.controller.exec(
          ["deno", "run", "-A", SCRIPT, "--once", "--json", ...CALM],
          { timeoutMs: 30_000 },
        );
        const record = records(r.stdout)[0];
        const found = record && procs(record).find((p) => p.name === "spin-aarch64");
        return found ? found as unknown as { emulated: string | null; uid: number } : null;
      });
      assert.equal(seen.emulated, "aarch64");
      assert.equal(seen.uid, 0);
    } finally {
      assert.equal((await build).code, 0);
    }
  },
);

/** Removes cgroup directories, deepest first, waiting for their members to be gone. */
async function removeCgroups(dirs: readonly string[]): Promise<void> {
  for (const dir of dirs.toReversed()) {
    const deadline = Date.now() + 10_000;
    while (true) {
      try {
        Deno.removeSync(dir);
        break;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) break;
        if (Date.now() > deadline) throw e;
        await sleep(100);
      }
    }
  }
}

labTest(
  "watch_builders: a build process that left the daemon's process tree is listed by its cgroup",
  async () => {
    const mount = cgroup2Mount();
    if (mount === null) {
      const line = "no read-write cgroup v2 hierarchy here";
      if (Deno.env.get("LAB_REQUIRED") === "1") throw new Error(`${line} (LAB_REQUIRED=1)`);
      console.error(`skipped: ${line}`);
      return;
    }
    // systemd's cgroup for the daemon, made under a directory of this test's own.
    const base = `/nbr-watch-lab-${crypto.randomUUID().slice(0, 8)}`;
    const made = [base, `${base}/system.slice`, `${base}/system.slice/nix-daemon.service`];
    try {
      {
        await using lab = await startLab({ builders: 1 });
        const builder = lab.builder(0);
        // A multi-user builder: the controller connects as nixremote (trusted here), and the
        // builder's nix-daemon runs the build as root (no build users), as a child of itself.
        await builder.setFault("untrusted-user");
        await builder.setNixConf({ "trusted-users": "root nixremote" });
        const daemons = sameNamespace(builder.pid).filter((p) =>
          argvOf(p)[0]?.endsWith("nix-daemon")
        );
        assert.equal(daemons.length, 1, `nix-daemon processes: ${daemons}`);
        for (const dir of made) Deno.mkdirSync(`${mount}${dir}`);
        // What systemd does for nix-daemon.service: the daemon, and so all it forks, in the unit's
        // cgroup.
        Deno.writeTextFileSync(`${mount}${made.at(-1)}/cgroup.procs`, `${daemons[0]}\n`);
        // The builder starts `timeout` in a subshell that exits at once: `timeout` is re-parented to
        // the builder's init (sh, pid 1 there), out of Nix's process tree, and runs as root.
        const expr = `derivation { name = "escapee-${crypto.randomUUID().slice(0, 8)}"; ` +
          `system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" ` +
          `"( /usr/bin/timeout 20 /bin/sleep 21 </dev/null >/dev/null 2>&1 & ); /bin/sleep 12; ` +
          `echo ok > $out" ]; }`;
        const build = lab.controller.nixBuild(expr, { timeoutMs: 60_000 });
        try {
          const seen = await until("the re-parented build process", 30_000, async () => {
            const r = await lab.controller.exec(
              ["deno", "run", "-A", SCRIPT, "--once", "--json", ...CALM],
              { timeoutMs: 30_000 },
            );
            const record = records(r.stdout)[0];
            const found = record && procs(record).find((p) => p.name === "timeout");
            return found ? { found, all: procs(record!) } : null;
          });
          // Neither a build user's nor below a Nix process: only its cgroup says it is a build.
          assert.equal(seen.found.uid, 0);
          assert.equal(seen.found.ppid, 1, JSON.stringify(seen.all));
          assert.ok(!seen.all.some((p) => p.pid === 1), "the builder's init is not a build");
          const own = await builder.exec(["sh", "-c", `cat /proc/${seen.found.pid}/cgroup`]);
          assert.match(
            own.stdout,
            new RegExp(`^0::${base}/system\\.slice/nix-daemon\\.service$`, "m"),
          );
        } finally {
          const result = await build;
          assert.equal(result.code, 0, result.stderr);
        }
      }
    } finally {
      // The lab is gone, and every process of the builder with it.
      await removeCgroups(made.map((d) => `${mount}${d}`));
    }
  },
);

labTest(
  "watch_builders: an early warning names the oom_mitigate step while a build runs",
  async () => {
    await using lab = await startLab({ builders: 1 });
    // A real build holds builder1 while --once samples it. --mem-warn 99.9 makes the builder's
    // real available memory count as low, so the warning path runs on real figures.
    const build = lab.controller.nixBuild(slowDrv("hog", 4), { timeoutMs: 60_000 });
    try {
      const result = await until("a sample that sees the build", 20_000, async () => {
        const r = await lab.controller.exec(
          ["deno", "run", "-A", SCRIPT, "--once", "--mem-warn", "99.9", "--mem-crit", "0.1"],
          { timeoutMs: 30_000 },
        );
        return /build \d+ procs?/.test(r.stdout) && !/build none/.test(r.stdout) ? r : null;
      });
      assert.equal(result.code, 1, result.stdout + result.stderr);
      assert.match(result.stdout, /^builder1 {2}WARNING {2}(\S+, )?\d+ cpus$/m);
      assert.match(result.stdout, /^WARNING builder1: only .* available while \d+ build process/m);
      assert.match(
        result.stdout,
        /fix: serialize the next build: deno run -A scripts\/oom_mitigate\.ts --host builder1 --mitigate serialize/,
      );
    } finally {
      assert.equal((await build).code, 0);
    }
  },
);

labTest(
  "watch_builders: a builder that hangs mid-watch goes stale within two intervals",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builder(0);
    const intervalS = 0.5;
    const events: (WatchEvent & { t: number })[] = [];
    const watch = new BuilderWatch({
      host: "builder1",
      open: () => new SshTarget("builder1", { sshArgs: [...lab.sshOptions], connectTimeoutS: 5 }),
      intervalS,
      connectTimeoutMs: 20_000,
      onEvent: (e) => events.push({ ...e, t: Date.now() }),
    });
    const running = watch.run();
    let frozen: number[] = [];
    try {
      await until(
        "two samples",
        20_000,
        () => events.filter((e) => e.kind === "sample").length >= 2 ? true : null,
      );
      // A hung host: its sshd (listener and sessions) and everything under it stop.
      frozen = [builder.sshdPid, ...descendants(builder.sshdPid)];
      for (const pid of frozen) Deno.kill(pid, "SIGSTOP");
      const frozeAt = Date.now();
      const stale = await until(
        "the stale state",
        5_000,
        () => events.find((e) => e.kind === "state" && e.state === "stale") ?? null,
      );
      const after = stale.t - frozeAt;
      // The last sample came before the freeze; the check runs every interval / 4.
      assert.ok(after <= 2 * intervalS * 1000 + intervalS * 250 + 150, `stale after ${after} ms`);
      assert.equal(watch.state, "stale");
      for (const pid of frozen) {
        Deno.kill(pid, "SIGCONT");
      }
      frozen = [];
      const resumed = events.length;
      await until(
        "samples again",
        10_000,
        () => events.slice(resumed).some((e) => e.kind === "sample") ? true : null,
      );
      assert.equal(watch.state, "live");
    } finally {
      for (const pid of frozen) {
        try {
          Deno.kill(pid, "SIGCONT");
        } catch {
          // gone
        }
      }
      await watch.close();
      await running;
    }
    // The sampler ends with its connection.
    await until("the remote sampler to end", 5_000, () => {
      const left = sameNamespace(builder.pid).filter((p) => argvOf(p)[3] === "nbr-watch");
      return left.length === 0 ? true : null;
    });
  },
);

/** A tmux server of its own, for one test. */
class Tmux implements AsyncDisposable {
  readonly socket = `nbr-watch-test-${crypto.randomUUID().slice(0, 8)}`;

  async run(args: string[]): Promise<string> {
    const out = await new Deno.Command("tmux", {
      args: ["-L", this.socket, ...args],
      stdin: "null",
    })
      .output();
    return new TextDecoder().decode(out.stdout);
  }

  capture(): Promise<string> {
    return this.run(["capture-pane", "-p", "-t", "watch"]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.run(["kill-server"]);
  }
}

async function keep(name: string, text: string): Promise<void> {
  const dir = Deno.env.get("NBR_WATCH_CAPTURE");
  if (dir) await Deno.writeTextFile(`${dir}/${name}.txt`, text);
}

function startInTmux(tmux: Tmux, lab: Lab, args: string[]): Promise<string> {
  // In the controller's namespace, with a login shell's clean environment. The wrapper shell and
  // nsenter ignore SIGINT (as an interactive shell does for its foreground job) so that Ctrl-C
  // reaches only the script, and the pane stays after it ends so its last words can be read.
  const argv = [
    "sh",
    "-c",
    'trap "" INT; "$@"; echo "exit=$?"; sleep 120',
    "sh",
    "env",
    "-i",
    `PATH=${Deno.env.get("PATH")}`,
    "HOME=/root",
    "TERM=xterm-256color",
    "LANG=C.UTF-8",
    ...lab.controller.nsenter,
    "deno",
    "run",
    "-A",
    SCRIPT,
    ...args,
  ];
  const quoted = argv.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  return tmux.run(["new-session", "-d", "-s", "watch", "-x", "80", "-y", "40", quoted]);
}

labTest(
  "watch_builders: the TTY view redraws in place, and Ctrl-C closes every connection",
  async () => {
    await using lab = await startLab({ builders: 2 });
    await using tmux = new Tmux();
    await startInTmux(tmux, lab, ["--interval", "0.5", ...CALM]);
    const idle = await until("both builders live", 30_000, async () => {
      const screen = await tmux.capture();
      return /^builder1 {2}LIVE {2}(\S+, )?\d+ cpus$/m.test(screen) &&
          /^builder2 {2}LIVE {2}(\S+, )?\d+ cpus$/m.test(screen)
        ? screen
        : null;
    });
    const lines = idle.trimEnd().split("\n");
    assert.match(
      lines[0]!,
      /^watch_builders {2}2 builders {2}every 0\.5 s {2}\d\d:\d\d:\d\d {2}OK {2}Ctrl-C quits$/,
    );
    for (const label of ["load", "cpu", "mem", "psi", "build"]) {
      assert.equal(lines.filter((l) => l.trimStart().startsWith(`${label} `)).length, 2, label);
    }
    for (const line of lines) assert.ok([...line].length <= 80, line);
    // Redrawn in place: one title line however many samples went by.
    await sleep(1500);
    const later = await tmux.capture();
    assert.equal(later.split("\n").filter((l) => l.startsWith("watch_builders")).length, 1);
    // A build shows up under the builder that runs it.
    const build = lab.controller.nixBuild(slowDrv("shown", 4), { timeoutMs: 60_000 });
    const busy = await until("a build process in the view", 20_000, async () => {
      const screen = await tmux.capture();
      return /^ {2}build \d+ procs? .*sleep/m.test(screen) ? screen : null;
    });
    await keep("tty-view", busy);
    assert.equal((await build).code, 0);
    const during = leftovers(lab);
    assert.equal(during.samplers.length, 2, "one sampler per builder");
    await tmux.run(["send-keys", "-t", "watch", "C-c"]);
    const end = await until("the verdict after Ctrl-C", 15_000, async () => {
      const screen = await tmux.capture();
      return /^exit=\d+$/m.test(screen) ? screen : null;
    });
    await keep("tty-exit", end);
    const raised = end.split("\n").filter((l) => /^ {2}\d\d:\d\d:\d\d /.test(l));
    if (raised.every((l) => l.includes(FOREIGN_OOM.slice(0, 20))) && raised.length > 0) {
      assert.match(
        end,
        /^watch_builders: CRITICAL: 2 builders watched, \d+ warning\(s\) raised:$/m,
      );
      assert.match(end, /^exit=2$/m);
    } else {
      assert.match(end, /^watch_builders: OK: 2 builders watched, no warnings$/m);
      assert.match(end, /^exit=0$/m);
    }
    assert.doesNotMatch(end, /error|at .*\.ts:\d+/i);
    // Every connection closed: no ssh left in the controller, no sampler left on a builder.
    const left = await until("samplers and ssh to end", 5_000, () => {
      const l = leftovers(lab);
      return l.samplers.length === 0 && l.ssh.length === 0 ? l : null;
    });
    assert.deepEqual(left, { samplers: [], ssh: [] });
  },
);

labTest(
  "watch_builders -- nix build: the TTY view follows the build, then says where it ran",
  async () => {
    await using lab = await startLab({ builders: 2 });
    await using tmux = new Tmux();
    await startInTmux(tmux, lab, [
      "--interval",
      "0.5",
      ...CALM,
      "--",
      "nix",
      "build",
      "--impure",
      "--no-link",
      "--expr",
      slowDrv("hello", 5),
    ]);
    const during = await until("the running build in the view", 40_000, async () => {
      const screen = await tmux.capture();
      return /^ {2}▶ hello-[0-9a-f]{8} +builder[12] /m.test(screen) ? screen : null;
    });
    await keep("tty-build", during);
    assert.match(during, /^nix build .+: 1 building, 0 built, 0 failed$/m);
    const end = await until("the build's verdict", 40_000, async () => {
      const screen = await tmux.capture();
      return /^exit=\d+$/m.test(screen) ? screen : null;
    });
    await keep("tty-build-end", end);
    assert.match(end, /^Where each derivation was built:$/m);
    assert.match(end, /^ {2}builder[12] +\d+\.\d s {2}built {3}hello-[0-9a-f]{8}$/m);
    assert.match(end, /^OK 1 of 1 derivation went to a remote builder: 1 on builder[12]$/m);
    assert.match(end, end.includes(FOREIGN_OOM.slice(0, 20)) ? /^exit=2$/m : /^exit=0$/m);
    const left = await until("samplers and ssh to end", 5_000, () => {
      const l = leftovers(lab);
      return l.samplers.length === 0 && l.ssh.length === 0 ? l : null;
    });
    assert.deepEqual(left, { samplers: [], ssh: [] });
  },
);
