import assert from "node:assert/strict";
import { cgroup2Mount } from "./_cgroup.ts";
import fc from "./_fast_check.ts";
import { ParseError } from "../lib/errors.ts";
import type { Sample } from "../lib/watch.ts";
import {
  deriveSample,
  NIX_CGROUP_CASE,
  nixCgroupOf,
  parseProcCgroup,
  parseSample,
  type RawSample,
  SAMPLER_SCRIPT,
  samplerArgv,
  type SamplerHeader,
  type SamplerItem,
  SampleSplitter,
} from "../lib/watch.ts";
import { assessSample, DEFAULT_THRESHOLDS } from "../lib/watch_alerts.ts";
import { WatchBoard } from "../lib/watch_board.ts";
import { BuilderWatch, type WatchEvent } from "../lib/watch_session.ts";
import { builderBlock, renderView } from "../lib/watch_view.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { canaryElf } from "./lab/canary.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const FIXTURE = `${ROOT}tests/fixtures/watch-sampler/debian12-vm.txt`;
const GiB = 1024 ** 3;

function splitAll(text: string, chunks: number[] = [text.length]): SamplerItem[] {
  const splitter = new SampleSplitter("fixture");
  const items: SamplerItem[] = [];
  let at = 0;
  for (const size of chunks) {
    items.push(...splitter.push(text.slice(at, at + size)));
    at += size;
  }
  items.push(...splitter.push(text.slice(at)));
  return items;
}

function fixtureSamples(): { header: SamplerHeader; samples: RawSample[] } {
  const items = splitAll(Deno.readTextFileSync(FIXTURE));
  const header = items.find((i) => i.kind === "header");
  assert.ok(header?.kind === "header");
  const samples = items.flatMap((i) => (i.kind === "sample" ? [i.sample] : []));
  return { header: header.header, samples };
}

Deno.test("SampleSplitter reads the real sampler output the same whatever the chunking", () => {
  const text = Deno.readTextFileSync(FIXTURE);
  const whole = splitAll(text);
  assert.deepEqual(whole.map((i) => i.kind), ["header", "sample", "sample"]);
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 400 }), { maxLength: 60 }), (chunks) => {
      assert.deepEqual(splitAll(text, chunks), whole);
    }),
    { numRuns: 200 },
  );
});

Deno.test("parseSample() reads build processes, their users and emulation from a real sample", () => {
  const { header, samples } = fixtureSamples();
  assert.deepEqual(header, {
    protocol: 1,
    hostname: "vm",
    cpus: 2,
    buildUsers: [999, 995, 994, 993, 992, 991, 990, 989, 988, 987],
    intervalS: 1,
  });
  const first = samples[0]!;
  assert.equal(first.seq, 1);
  assert.deepEqual(first.load, { one: 2.28, five: 1.47, fifteen: 0.83, running: 8, tasks: 219 });
  assert.equal(first.oomKills, 1);
  assert.deepEqual(
    first.processes.map((p) => [p.name, p.uid, p.emulated, p.rssKiB > 0]),
    [
      ["sleep", 999, null, true],
      ["sleep", 999, null, true],
      ["spin-aarch64", 995, "aarch64", true],
      // root, but a child of a process named nix-store: single-user installs build like this
      ["sleep", 0, null, true],
    ],
  );
  assert.match(first.meminfo, /^MemTotal: +\d+ kB\n/);
  assert.equal(
    first.pressure?.split("\n")[0],
    "some avg10=12.74 avg60=6.12 avg300=1.56 total=5211869",
  );
});

Deno.test("deriveSample() feeds the verbatim /proc texts to the shared meminfo and PSI parsers", () => {
  const { header, samples } = fixtureSamples();
  const [first, second] = samples as [RawSample, RawSample];
  const sample = deriveSample(second, { host: "vm", header, previous: first, receivedAt: 0 });
  const memTotalKiB = Number(/^MemTotal: +(\d+) kB$/m.exec(second.meminfo)![1]);
  const availKiB = Number(/^MemAvailable: +(\d+) kB$/m.exec(second.meminfo)![1]);
  assert.equal(sample.memory.totalBytes, memTotalKiB * 1024);
  assert.equal(sample.memory.usedBytes, (memTotalKiB - availKiB) * 1024);
  const swapKiB = Number(/^SwapTotal: +(\d+) kB$/m.exec(second.meminfo)![1]);
  assert.equal(sample.memory.swapTotalBytes, swapKiB * 1024);
  // cpu ticks: busy 57511+22982+227+1742 - (57397+22869+227+1742) = 227, idle 253825 - 253823 = 2
  assert.equal(sample.cpuBusyPercent, 99.1);
  // some total grew 286008 µs while uptime grew 1.15 s: 24.9 % of the time
  assert.deepEqual(sample.pressure, {
    someAvg10: 14.6,
    someAvg60: 6.67,
    fullAvg10: 13.97,
    someNow: 24.9,
  });
  assert.equal(sample.processes[0]!.name, "spin-aarch64"); // largest memory first
});

Deno.test("parseSample() names the line of a broken sample", () => {
  const good = ["#S 3", "u 1.0 1.0", "l 0.1 0.2 0.3 1/50 9", "m MemTotal: 1 kB", "#E 3"];
  assert.equal(parseSample(good).seq, 3);
  assert.throws(() => parseSample(good.slice(0, -1)), /sample 3 does not end with '#E 3'/);
  assert.throws(
    () => parseSample(["#S 3", "u 1.0 1.0", "l 0.1 x 0.3 1/50 9", "m MemTotal: 1 kB", "#E 3"]),
    (e) => e instanceof ParseError && e.position?.line === 3 && /load average 'x'/.test(e.message),
  );
  assert.throws(
    () => parseSample([...good.slice(0, -1), "p 1 two 3 4 S - x", "#E 3"]),
    /cannot read process line '1 two 3 4 S - x'/,
  );
  assert.throws(() => parseSample(["#S 3", "u 1 1", "l 0 0 0 1/1 1", "#E 3"]), /no meminfo lines/);
});

Deno.test("samplerArgv() passes interval and count as separate arguments, never in the script", () => {
  const argv = samplerArgv({ intervalS: 2.5, count: 3 });
  assert.deepEqual(argv.slice(3), ["nbr-watch", "2.5", "3"]);
  assert.equal(argv[2], SAMPLER_SCRIPT);
  assert.throws(() => samplerArgv({ intervalS: Number.NaN }), /interval/);
  assert.throws(() => samplerArgv({ count: -1 }), /count/);
});

const CGROUP_FIXTURES = `${ROOT}tests/fixtures/watch/cgroup/`;

/** The captured `/proc/<pid>/cgroup` texts and the role each must get. */
const CGROUP_CASES: [string, "daemon" | "build" | null][] = [
  ["daemon-service", "daemon"],
  ["nix-daemon-subgroup", "daemon"],
  ["lix-supervisor", "daemon"],
  ["nix-build-uid", "build"],
  ["nix-build-auto-uid", "build"],
  ["lix-build", "build"],
  ["single-user-build-pid", "build"],
  ["ssh-session", null],
  ["daemon-socket", null],
  ["lookalike-service", null],
  ["this-machine", null],
];

function cgroupFixture(name: string): string {
  return Deno.readTextFileSync(`${CGROUP_FIXTURES}${name}.txt`);
}

Deno.test("nixCgroupOf() finds the daemon's and Nix's build cgroups in captured /proc/<pid>/cgroup", () => {
  for (const [name, role] of CGROUP_CASES) {
    const memberships = parseProcCgroup(cgroupFixture(name), name);
    // This machine is hybrid: nine v1 hierarchies, then the v2 line.
    assert.equal(memberships.length, 10, name);
    assert.deepEqual(memberships.at(-1)?.controllers, [], name);
    assert.equal(nixCgroupOf(memberships)?.role ?? null, role, name);
    // A v2-only machine prints the 0:: line alone; the verdict is the same.
    assert.equal(nixCgroupOf(memberships.slice(-1))?.role ?? null, role, `${name} (v2 only)`);
  }
  const build = nixCgroupOf(parseProcCgroup(cgroupFixture("nix-build-uid")));
  assert.deepEqual(build?.membership, {
    hierarchy: 0,
    controllers: [],
    path: "/system.slice/nix-daemon.service/nix-build-uid-30001",
  });
  // A v1-only systemd machine: the name=systemd line says the daemon's unit.
  assert.equal(
    nixCgroupOf(parseProcCgroup("1:name=systemd:/system.slice/nix-daemon.service\n"))?.role,
    "daemon",
  );
  assert.deepEqual(parseProcCgroup("0::/a:b/c\n")[0]?.path, "/a:b/c");
  assert.throws(
    () => parseProcCgroup("0::/\n4:memory\n", "pid 7"),
    (e) => e instanceof ParseError && e.position?.line === 2 && /pid 7/.test(e.message),
  );
});

/** What the sampler's `case` decides for each line, run by the real `sh`. */
async function shVerdicts(lines: string[]): Promise<boolean[]> {
  const script = `for l; do y=\${l#*:}; y=\${y#*:}; case $y in ${NIX_CGROUP_CASE}) echo 1 ;; ` +
    `*) echo 0 ;; esac; done`;
  const out = await new Deno.Command("sh", { args: ["-c", script, "sh", ...lines] }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim().split("\n").filter((l) => l !== "").map((
    l,
  ) => l === "1");
}

Deno.test("the sampler's sh patterns and nixCgroupOf() agree on every path", async () => {
  assert.ok(SAMPLER_SCRIPT.includes(`case $y in ${NIX_CGROUP_CASE}) e=1; break ;; esac`));
  const captured = CGROUP_CASES.flatMap(([name]) => cgroupFixture(name).trim().split("\n"));
  const verdicts = await shVerdicts(captured);
  assert.deepEqual(
    verdicts,
    captured.map((l) => nixCgroupOf(parseProcCgroup(l)) !== null),
    "captured lines",
  );
  const part = fc.constantFrom(
    "system.slice",
    "nix-daemon.service",
    "nix-daemon.socket",
    "nix-daemon.service.d",
    "my-nix-daemon.service",
    "nix-daemon",
    "nix-build-uid-30001",
    "nix-build-uid-",
    "nix-build-uidx",
    "nix-build-pid-42-0",
    "nix-build-pid-x",
    "nix-build@1h71xqdc-872415232",
    "nix-build@",
    "nix-build",
    "a:b",
    "",
    "*",
  );
  const line = fc.tuple(
    fc.constantFrom("0::", "9:name=systemd:", "4:memory:"),
    fc.array(part, { maxLength: 5 }),
  ).map(([head, parts]) => `${head}/${parts.join("/")}`);
  const batches: string[][] = fc.sample(fc.array(line, { minLength: 1, maxLength: 40 }), 25);
  const all = batches.flat();
  assert.deepEqual(
    await shVerdicts(all),
    all.map((l) => nixCgroupOf(parseProcCgroup(l)) !== null),
  );
});

/** The first complete sample of the sampler run here through a LocalTarget. */
async function sampleHere(): Promise<Sample> {
  const events: WatchEvent[] = [];
  const watch = new BuilderWatch({
    host: "localhost",
    open: () => new LocalTarget(),
    intervalS: 1,
    count: 1,
    onEvent: (e) => events.push(e),
  });
  await watch.run();
  const found = events.find((e) => e.kind === "sample");
  assert.ok(found?.kind === "sample", JSON.stringify(events));
  return found.sample;
}

function spawn(argv: string[]): Deno.ChildProcess {
  const [program, ...args] = argv as [string, ...string[]];
  return new Deno.Command(program, { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
}

/** Waits until `pid` runs `name` as `uid` (setpriv has switched user and exec'd). */
async function settled(pid: number, name: string, uid: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const who = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    if (status.startsWith(`Name:\t${name}\n`) && who === uid) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`pid ${pid} did not become '${name}' as uid ${uid}`);
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch {
    // gone
  }
  await child.status;
}

const passwd = Deno.readTextFileSync("/etc/passwd");
const nixbld1 = /^nixbld1:[^:]*:(\d+):(\d+):/m.exec(passwd);
const asRoot = Deno.uid() === 0;

Deno.test("the sampler's figures match /proc read directly on this machine", async () => {
  const before = Deno.readTextFileSync("/proc/loadavg");
  const sample = await sampleHere();
  const after = Deno.readTextFileSync("/proc/loadavg");
  const memTotal = Number(
    /^MemTotal: +(\d+) kB$/m.exec(Deno.readTextFileSync("/proc/meminfo"))![1],
  );
  assert.equal(sample.memory.totalBytes, memTotal * 1024);
  const online = Deno.readTextFileSync("/sys/devices/system/cpu/online").trim();
  const cpus = online.split(",").reduce((n, r) => {
    const [a, b = a] = r.split("-").map(Number) as [number, number?];
    return n + (b! - a + 1);
  }, 0);
  assert.equal(sample.cpus, cpus);
  assert.equal(sample.hostname, Deno.readTextFileSync("/proc/sys/kernel/hostname").trim());
  const loads = [before, after].map((t) => Number(t.split(" ")[0]));
  assert.ok(loads.includes(sample.load.one), `${sample.load.one} not in ${loads}`);
  const oom = /^oom_kill (\d+)$/m.exec(Deno.readTextFileSync("/proc/vmstat"))?.[1];
  assert.equal(sample.oomKills, oom === undefined ? null : Number(oom));
  const psiText = (() => {
    try {
      return Deno.readTextFileSync("/proc/pressure/memory");
    } catch {
      return null;
    }
  })();
  assert.equal(sample.pressure === null, psiText === null);
});

Deno.test({
  name: "the sampler lists a process of a build user with its uid, parent and memory",
  ignore: !asRoot || nixbld1 === null,
  async fn() {
    const [, uid, gid] = nixbld1!;
    const child = spawn([
      "setpriv",
      `--reuid=${uid}`,
      `--regid=${gid}`,
      "--clear-groups",
      "sleep",
      "30",
    ]);
    try {
      await settled(child.pid, "sleep", uid!);
      const sample = await sampleHere();
      const found = sample.processes.find((p) => p.pid === child.pid);
      assert.ok(found, `pid ${child.pid} missing from ${JSON.stringify(sample.processes)}`);
      assert.equal(found.uid, Number(uid));
      assert.equal(found.ppid, Deno.pid);
      assert.equal(found.name, "sleep");
      assert.equal(found.emulated, null);
      const rss = /^VmRSS:\s+(\d+) kB$/m.exec(Deno.readTextFileSync(`/proc/${child.pid}/status`));
      assert.equal(found.rssKiB, Number(rss![1]));
    } finally {
      await stop(child);
    }
  },
});

Deno.test({
  name: "the sampler lists the children of a process named nix-store even when they run as root",
  ignore: !asRoot,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "nbr-watch-test-" });
    try {
      await Deno.copyFile("/bin/sh", `${dir}/nix-store`);
      await Deno.chmod(`${dir}/nix-store`, 0o755);
      const parent = spawn([`${dir}/nix-store`, "-c", "sleep 30; true"]);
      try {
        const children = `/proc/${parent.pid}/task/${parent.pid}/children`;
        while (Deno.readTextFileSync(children).trim() === "") {
          await new Promise((r) => setTimeout(r, 20));
        }
        const [first] = Deno.readTextFileSync(children).trim().split(" ");
        await settled(Number(first), "sleep", "0");
        const sample = await sampleHere();
        const child = sample.processes.find((p) => p.ppid === parent.pid);
        assert.ok(child, JSON.stringify(sample.processes));
        assert.equal(child.name, "sleep");
        assert.equal(child.uid, 0);
        assert.ok(!sample.processes.some((p) => p.pid === parent.pid), "nix-store itself listed");
      } finally {
        await stop(parent);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the sampler notices a process it had set aside once it execs into nix-store",
  ignore: !asRoot,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "nbr-watch-test-" });
    try {
      await Deno.copyFile("/bin/sh", `${dir}/nix-store`);
      await Deno.chmod(`${dir}/nix-store`, 0o755);
      // First a plain sh (not a build, so the sampler stops looking at it), then the same pid
      // becomes nix-store and forks a build.
      const proc = spawn([
        "sh",
        "-c",
        'sleep 1.2; exec "$0" -c "sleep 30; true"',
        `${dir}/nix-store`,
      ]);
      const events: WatchEvent[] = [];
      const watch = new BuilderWatch({
        host: "localhost",
        open: () => new LocalTarget(),
        intervalS: 0.3,
        count: 10,
        onEvent: (e) => events.push(e),
      });
      try {
        await watch.run();
        const samples = events.flatMap((e) => (e.kind === "sample" ? [e.sample] : []));
        assert.equal(samples.length, 10);
        const shown = samples.map((s) =>
          s.processes.some((p) => p.ppid === proc.pid && p.name === "sleep")
        );
        assert.equal(shown[0], false, "before the exec, sh's own sleep is not a build");
        assert.equal(shown.at(-1), true, JSON.stringify(samples.at(-1)?.processes));
      } finally {
        await stop(proc);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Where the cgroup v2 hierarchy is mounted read-write, when this runs as root (it writes there). */
function rootCgroup2Mount(): string | null {
  return asRoot ? cgroup2Mount() : null;
}

/** cgroups made under a fresh directory of the v2 hierarchy, removed once empty. */
class TestCgroups implements AsyncDisposable {
  /** The directory, as `/proc/<pid>/cgroup` shows it. */
  readonly base = `/nbr-watch-test-${crypto.randomUUID().slice(0, 8)}`;
  readonly #mount: string;
  readonly #made: string[] = [];

  constructor(mount: string) {
    this.#mount = mount;
  }

  /** Moves `pid` into `base + path` (made as needed). */
  place(pid: number, path: string): void {
    let dir = `${this.#mount}${this.base}`;
    for (const part of ["", ...path.split("/").filter((p) => p !== "")]) {
      if (part !== "") dir += `/${part}`;
      try {
        Deno.mkdirSync(dir);
        this.#made.push(dir);
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      }
    }
    Deno.writeTextFileSync(`${dir}/cgroup.procs`, `${pid}\n`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const dir of this.#made.toReversed()) {
      // A killed member leaves its cgroup a moment after its parent reaped it.
      const deadline = Date.now() + 5000;
      while (true) {
        try {
          Deno.removeSync(dir);
          break;
        } catch (e) {
          if (e instanceof Deno.errors.NotFound) break;
          if (Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    }
  }
}

const cgroup2 = rootCgroup2Mount();

Deno.test({
  name: "the sampler lists a root process outside Nix's tree by the daemon's or a build's cgroup",
  ignore: cgroup2 === null,
  async fn() {
    await using groups = new TestCgroups(cgroup2!);
    // Root processes whose parent is this test (deno): neither a build user's nor under Nix.
    const [inDaemon, inBuild, inSocket] = [30, 31, 32].map((s) => spawn(["sleep", String(s)])) as [
      Deno.ChildProcess,
      Deno.ChildProcess,
      Deno.ChildProcess,
    ];
    try {
      for (const child of [inDaemon, inBuild, inSocket]) await settled(child.pid, "sleep", "0");
      groups.place(inDaemon.pid, "/system.slice/nix-daemon.service");
      groups.place(inBuild.pid, "/user.slice/user-0.slice/session-1.scope/nix-build-pid-4242-0");
      groups.place(inSocket.pid, "/system.slice/nix-daemon.socket");
      const text = Deno.readTextFileSync(`/proc/${inDaemon.pid}/cgroup`);
      assert.ok(text.includes(`0::${groups.base}/system.slice/nix-daemon.service\n`), text);
      const sample = await sampleHere();
      const listed = (pid: number) => sample.processes.find((p) => p.pid === pid);
      for (const child of [inDaemon, inBuild]) {
        const found = listed(child.pid);
        assert.ok(found, `pid ${child.pid} missing from ${JSON.stringify(sample.processes)}`);
        assert.deepEqual([found.uid, found.ppid, found.name], [0, Deno.pid, "sleep"]);
      }
      assert.equal(listed(inSocket.pid), undefined, "nix-daemon.socket is not the daemon's unit");
    } finally {
      for (const child of [inDaemon, inBuild, inSocket]) await stop(child);
    }
  },
});

function binfmtAarch64(): boolean {
  for (const name of ["qemu-aarch64", "aarch64-linux"]) {
    try {
      if (Deno.readTextFileSync(`/proc/sys/fs/binfmt_misc/${name}`).startsWith("enabled")) {
        return true;
      }
    } catch {
      // not registered under that name
    }
  }
  return false;
}

Deno.test({
  name: "the sampler marks a build process that runs under qemu as emulated aarch64",
  ignore: !asRoot || nixbld1 === null || !binfmtAarch64(),
  async fn() {
    const [, uid, gid] = nixbld1!;
    const dir = await Deno.makeTempDir({ prefix: "nbr-watch-test-" });
    // The lab's canary ELF with its first instruction replaced by "b ." (0x14000000): it spins.
    const elf = canaryElf("aarch64-linux");
    new DataView(elf.buffer).setUint32(120, 0x14000000, true);
    await Deno.writeFile(`${dir}/spin-aarch64`, elf, { mode: 0o755 });
    await Deno.chmod(dir, 0o755);
    const child = spawn([
      "setpriv",
      `--reuid=${uid}`,
      `--regid=${gid}`,
      "--clear-groups",
      `${dir}/spin-aarch64`,
    ]);
    try {
      await settled(child.pid, "spin-aarch64", uid!);
      const sample = await sampleHere();
      const found = sample.processes.find((p) => p.pid === child.pid);
      assert.ok(found, JSON.stringify(sample.processes));
      assert.equal(found.name, "spin-aarch64");
      assert.equal(found.emulated, "aarch64");
    } finally {
      await stop(child);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("the sampler exits by itself once nobody reads its output", async () => {
  const [program, ...args] = samplerArgv({ intervalS: 0.2 }) as [string, ...string[]];
  const child = new Deno.Command(program, { args, stdout: "piped", stderr: "null" }).spawn();
  const reader = child.stdout.getReader();
  const first = await reader.read();
  assert.match(new TextDecoder().decode(first.value), /^#nbr-watch 1\n/);
  await reader.cancel();
  const ended = await Promise.race([
    child.status.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 3000)),
  ]);
  if (!ended) child.kill("SIGKILL");
  assert.equal(ended, true, "sampler still running 3 s after its reader went away");
});

function sample(overrides: Partial<Sample> = {}): Sample {
  return {
    host: "builder1",
    receivedAt: Date.UTC(2026, 10, 25, 14, 2, 3),
    seq: 5,
    hostname: "builder1",
    cpus: 8,
    load: { one: 6.4, five: 5, fifteen: 3, running: 7, tasks: 400 },
    cpuBusyPercent: 91,
    memory: {
      totalBytes: 16 * GiB,
      availableBytes: 8 * GiB,
      usedBytes: 8 * GiB,
      swapTotalBytes: 0,
      swapUsedBytes: 0,
    },
    pressure: { someAvg10: 0, someAvg60: 0, fullAvg10: 0, someNow: 0 },
    oomKills: 3,
    processes: [{
      pid: 812,
      ppid: 800,
      uid: 30001,
      rssKiB: 2_000_000,
      state: "R",
      emulated: null,
      name: "cc1plus",
    }],
    ...overrides,
  };
}

Deno.test("assessSample() warns on memory only while builds run", () => {
  const low = sample({
    memory: {
      totalBytes: 16 * GiB,
      availableBytes: 0.7 * GiB,
      usedBytes: 15.3 * GiB,
      swapTotalBytes: 0,
      swapUsedBytes: 0,
    },
  });
  assert.deepEqual(assessSample(low).map((f) => [f.id, f.status]), [[
    "watch/memory-low",
    "critical",
  ]]);
  assert.deepEqual(assessSample({ ...low, processes: [] }), []);
  const summary = assessSample(low)[0]!.summary;
  assert.equal(
    summary,
    "builder1: only 716.8 MiB (4.4%) of 16.0 GiB available while 1 build process run",
  );
});

Deno.test("assessSample() names the oom_mitigate step when pressure climbs", () => {
  const pressured = sample({
    pressure: { someAvg10: 45, someAvg60: 12, fullAvg10: 20, someNow: 50 },
  });
  const [finding] = assessSample(pressured, { thresholds: DEFAULT_THRESHOLDS });
  assert.equal(finding?.id, "watch/memory-pressure");
  assert.equal(finding?.status, "critical");
  assert.match(finding!.summary, /rising \(60 s: 12%\)/);
  assert.match(
    finding!.fix!,
    /deno run -A scripts\/oom_mitigate\.ts --host builder1 --mitigate serialize/,
  );
  assert.match(finding!.fix!, /oom_mitigate\.ts --host builder1 --mitigate zram --apply/);
  const calm = sample({ pressure: { someAvg10: 9.9, someAvg60: 1, fullAvg10: 0, someNow: 9 } });
  assert.deepEqual(assessSample(calm), []);
});

Deno.test("assessSample() reports OOM kills that happened during the watch", () => {
  assert.deepEqual(assessSample(sample({ oomKills: 3 }), { oomKillsAtStart: 3 }), []);
  const [finding] = assessSample(sample({ oomKills: 5 }), { oomKillsAtStart: 3 });
  assert.equal(finding?.id, "watch/oom-kill");
  assert.equal(
    finding?.summary,
    "builder1: the kernel killed 2 processes for lack of memory during the watch",
  );
});

Deno.test("WatchBoard keeps a builder that stopped answering, marked stale, and remembers it", () => {
  const board = new WatchBoard(["builder1"], { intervalS: 1 });
  const s = sample();
  board.apply({ kind: "sample", host: "builder1", sample: s, raw: {} as RawSample });
  assert.equal(board.worst(), "ok");
  board.apply({
    kind: "state",
    host: "builder1",
    state: "stale",
    reason: "",
    at: s.receivedAt + 2500,
  });
  const view = board.builder("builder1");
  assert.equal(view.state, "stale");
  assert.equal(view.sample, s);
  const last = new Date(s.receivedAt).toTimeString().slice(0, 8);
  assert.equal(view.findings[0]?.summary, `builder1 stopped answering: no sample since ${last}`);
  board.apply({ kind: "sample", host: "builder1", sample: { ...s, seq: 6 }, raw: {} as RawSample });
  assert.equal(board.builder("builder1").state, "live");
  assert.equal(board.current(), "ok");
  assert.equal(board.worst(), "critical");
});

Deno.test("WatchBoard keeps showing why a builder failed once its watch has ended", () => {
  const board = new WatchBoard(["builder2"], { intervalS: 1 });
  const refused = "ssh: connect to host 127.0.0.1 port 34641: Connection refused";
  board.apply({ kind: "state", host: "builder2", state: "unreachable", reason: refused, at: 0 });
  board.apply({ kind: "state", host: "builder2", state: "ended", reason: "", at: 1 });
  assert.equal(board.builder("builder2").state, "unreachable");
  assert.deepEqual(builderBlock(board.builder("builder2"), { width: 100 }), [
    `builder2  UNREACHABLE  ${refused}`,
  ]);
  assert.equal(board.current(), "critical");
});

Deno.test("renderView() fits 80 columns with long names, many processes and warnings", () => {
  const host = "a-very-long-builder-name.with.a.domain.example.org";
  const board = new WatchBoard([host, "b2"], { intervalS: 1 });
  const procs = Array.from({ length: 30 }, (_, i) => ({
    pid: 100 + i,
    ppid: 99,
    uid: 30001,
    rssKiB: 1000 * i,
    state: "R",
    emulated: i % 2 ? "aarch64" : null,
    name: `process-with-a-long-name-${i}`,
  }));
  for (let seq = 1; seq < 20; seq++) {
    board.apply({
      kind: "sample",
      host,
      sample: sample({
        host,
        seq,
        processes: procs,
        pressure: { someAvg10: 30, someAvg60: 5, fullAvg10: 3, someNow: seq * 5 },
      }),
      raw: {} as RawSample,
    });
  }
  board.apply({ kind: "state", host: "b2", state: "unreachable", reason: "x".repeat(200), at: 0 });
  const lines = renderView(board, null, { now: Date.now() });
  for (const line of lines) assert.ok([...line].length <= 80, `${[...line].length}: ${line}`);
  assert.match(lines.join("\n"), /WARNING a-very-long-builder-name\S* memory pressure 30%/);
  // On a screen of 12 rows: the builders shrink to title and memory line, warnings to two lines.
  const small = renderView(board, null, { rows: 12 });
  assert.ok(small.length <= 12);
  assert.match(small[1]!, /^a-very-long-builder-name\S* {2}LIVE {2}WARNING {2}builder1, 8 …$/);
  assert.match(small[2]!, /^ {2}mem /);
  assert.match(small[3]!, /^b2 {2}UNREACHABLE {2}x+…$/);
  assert.equal(small.filter((l) => l.startsWith("  fix: ")).length, 2);
  assert.equal(renderView(board, null, { rows: 5 }).length, 5);
});

Deno.test("builderBlock() shows bars and a sparkline that follow the samples", () => {
  const board = new WatchBoard(["builder1"], { intervalS: 1 });
  for (const used of [2, 4, 8, 12, 15]) {
    board.apply({
      kind: "sample",
      host: "builder1",
      sample: sample({
        memory: {
          totalBytes: 16 * GiB,
          availableBytes: (16 - used) * GiB,
          usedBytes: used * GiB,
          swapTotalBytes: 2 * GiB,
          swapUsedBytes: 0.5 * GiB,
        },
      }),
      raw: {} as RawSample,
    });
  }
  const lines = builderBlock(board.builder("builder1"), { now: Date.now() });
  // 1 GiB of 16 available (6.25 %): under the 10 % warning threshold, over the 5 % critical one
  assert.equal(lines[0], "builder1  LIVE  WARNING  8 cpus");
  assert.equal(
    lines[3],
    "  mem     15G ▕███████████████ ▏  94%            ▂▃▅▆█  1G avail, swap 512M/2G",
  );
  assert.match(lines[5]!, /^ {2}build 1 proc 1\.9G: cc1plus 1\.9G R$/);
  const ascii = builderBlock(board.builder("builder1"), { ascii: true, now: Date.now() });
  assert.match(ascii[3]!, /^ {2}mem +15G \[#{15} \] +94% +_\.-=\^ {2}1G avail/);
});
