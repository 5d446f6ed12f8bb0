/**
 * The health check on this machine (a real single-user Nix 2.8 builder) and on snapshots recorded
 * from it, with single files or command outputs changed to the state a finding is about. Each
 * finding is raised once and shown quiet once.
 */
import assert from "node:assert/strict";
import type { Finding } from "../lib/findings.ts";
import {
  defaultThresholds,
  healthCheck,
  type HealthCheckOptions,
  type HealthResult,
  type HealthThresholds,
  parseDuration,
  parseSpaceThreshold,
} from "../lib/health.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { parseThreshold } from "../lib/nagios.ts";
import { RecordingTarget } from "../lib/recording_target.ts";
import { type SnapshotData, SnapshotTarget } from "../lib/snapshot_target.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

/** Thresholds that a busy test machine cannot trip (other tests load the CPU and memory). */
const CALM: Partial<HealthThresholds> = {
  loadWarning: parseThreshold("~:1000"),
  loadCritical: parseThreshold("~:1000"),
  pressureWarning: parseThreshold("~:100"),
  pressureCritical: parseThreshold("~:100"),
};

/** ...and other tests' OOM kills of their own processes, for tests that are not about OOM. */
const CALMER: Partial<HealthThresholds> = { ...CALM, oomWarning: parseThreshold("~:100000") };

function vmstatOomKills(): number {
  return Number(/^oom_kill (\d+)$/m.exec(Deno.readTextFileSync("/proc/vmstat"))?.[1] ?? 0);
}

/** "Since the last run" with the kernel counter as it is now: no new kills. */
function calmBaseline() {
  return {
    bootId: Deno.readTextFileSync("/proc/sys/kernel/random/boot_id").trim(),
    oomKills: vmstatOomKills(),
    checkedAt: new Date(Date.now() - 60_000).toISOString(),
  };
}

function find(result: HealthResult, id: string): Finding {
  const found = result.findings.find((f) => f.id === id);
  assert.ok(found, `no ${id} in ${result.findings.map((f) => f.id).join(", ")}`);
  return found;
}

function metric(result: HealthResult, name: string, labels: Record<string, string> = {}) {
  return result.metrics.find((m) =>
    m.name === name && Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)
  )?.value;
}

/** One real run on this machine, recorded: the base every snapshot test changes. */
async function record(): Promise<SnapshotData> {
  const recording = new RecordingTarget(new LocalTarget({ timeoutMs: 20_000 }));
  await healthCheck(recording, { oomBaseline: calmBaseline(), thresholds: CALM });
  return recording.snapshot(new Date());
}

const BASE = await record();

function clone(data: SnapshotData): SnapshotData {
  return structuredClone(data);
}

function withFile(data: SnapshotData, path: string, text: string): SnapshotData {
  const copy = clone(data);
  copy.files[path] = text;
  return copy;
}

function withCommand(
  data: SnapshotData,
  match: (argv: string[]) => boolean,
  result: { code: number; stdout: string; stderr: string; failure?: "not-found" },
): SnapshotData {
  const copy = clone(data);
  const found = copy.commands.filter((c) => match(c.argv));
  assert.ok(found.length > 0, "no such recorded command");
  for (const c of found) Object.assign(c, result);
  return copy;
}

function replay(data: SnapshotData, options: HealthCheckOptions = {}): Promise<HealthResult> {
  return healthCheck(new SnapshotTarget(data), {
    thresholds: CALM,
    oomBaseline: {
      bootId: data.files["/proc/sys/kernel/random/boot_id"]!.trim(),
      oomKills: Number(/^oom_kill (\d+)$/m.exec(data.files["/proc/vmstat"]!)?.[1]),
      checkedAt: new Date(Date.now() - 60_000).toISOString(),
    },
    ...options,
  });
}

function meminfo(totalKb: number, availableKb: number, swapTotalKb = 0, swapFreeKb = 0): string {
  return [
    `MemTotal:       ${totalKb} kB`,
    `MemFree:        ${Math.round(availableKb / 2)} kB`,
    `MemAvailable:   ${availableKb} kB`,
    `SwapTotal:      ${swapTotalKb} kB`,
    `SwapFree:       ${swapFreeKb} kB`,
  ].join("\n") + "\n";
}

Deno.test("healthCheck() of this single-user builder: the store answers without a daemon, all OK", async () => {
  const result = await healthCheck(new LocalTarget({ timeoutMs: 20_000 }), {
    oomBaseline: calmBaseline(),
    thresholds: CALMER,
  });
  const daemon = find(result, "health/daemon");
  assert.equal(daemon.status, "ok");
  assert.match(daemon.summary, /^single-user Nix 2\.8\.0: no nix-daemon; the local store answers$/);
  assert.equal((daemon.data as { mode: string }).mode, "single-user");
  assert.deepEqual(result.findings.filter((f) => f.status !== "ok").map((f) => f.id), []);
  assert.equal(metric(result, "nix_builder_store_up"), 1);
  assert.equal(metric(result, "nix_builder_daemon_running"), 0);
  // extra-platforms here is i686-linux and the x86_64 levels: nothing is emulated.
  assert.equal(
    find(result, "health/binfmt").summary,
    "no emulated system in extra-platforms: no binfmt entry to check",
  );
  assert.match(find(result, "health/oom-kills").summary, /^(no|\d+) OOM kills? since the last run/);
  // What the next run compares with: this boot and the kernel's counter.
  assert.equal(result.oomState?.bootId, calmBaseline().bootId);
  assert.ok((result.oomState?.oomKills ?? -1) <= vmstatOomKills());
});

Deno.test("healthCheck() reports the store's free space exactly as df does", async () => {
  const result = await healthCheck(new LocalTarget({ timeoutMs: 20_000 }), {
    oomBaseline: calmBaseline(),
  });
  const df = new TextDecoder().decode(
    (await new Deno.Command("df", { args: ["-Pk", "/nix/store"], stdout: "piped" }).output())
      .stdout,
  ).split("\n")[1]!.split(/\s+/);
  const availKb = Number(df[3]);
  const avail = metric(result, "nix_builder_filesystem_avail_bytes", { role: "store" })!;
  // The store may grow between the two reads: allow a few MiB.
  assert.ok(Math.abs(avail - availKb * 1024) < 64 * 1024 ** 2, `${avail} vs df ${availKb} KiB`);
  assert.equal(
    metric(result, "nix_builder_filesystem_size_bytes", { role: "store" }),
    Number(df[1]) * 1024,
  );
  const store = find(result, "health/store-space");
  assert.equal(store.status, "ok");
  assert.match(store.summary, /^store \/nix\/store: \d+% free \(\d+\.\d GiB of \d+\.\d GiB\)$/);
  // /tmp shares the root filesystem here: one finding carries the space, the other says so.
  assert.equal(
    find(result, "health/build-dir-space").summary,
    "build dir /tmp is on the store's filesystem: its space is the store's",
  );
});

Deno.test("healthCheck() raises store space by the -w/-c thresholds, in percent or in bytes", async () => {
  const quiet = await replay(BASE);
  assert.equal(find(quiet, "health/store-space").status, "ok");
  const free = find(quiet, "health/store-space").data as { availBytes: number };
  const warn = await replay(BASE, {
    thresholds: { ...CALM, spaceWarning: parseSpaceThreshold("99.9%:") },
  });
  assert.equal(find(warn, "health/store-space").status, "warning");
  const crit = await replay(BASE, {
    thresholds: {
      ...CALM,
      spaceCritical: parseSpaceThreshold(`${Math.ceil(free.availBytes / 1024 ** 3) + 1}G:`),
    },
  });
  assert.equal(find(crit, "health/store-space").status, "critical");
  assert.match(find(crit, "health/store-space").fix ?? "", /nix-collect-garbage/);
});

Deno.test("parseSpaceThreshold() and parseDuration() read what the flags accept", () => {
  assert.deepEqual(parseSpaceThreshold("5G:").range.start, 5 * 1024 ** 3);
  assert.equal(parseSpaceThreshold("10:").unit, "percent");
  assert.equal(parseSpaceThreshold("@0:512M").range.end, 512 * 1024 ** 2);
  assert.throws(() => parseSpaceThreshold("101%:"), /more than 100%/);
  assert.throws(
    () => parseSpaceThreshold("10", "-w"),
    /-w:1:1: '10' would alert when everything is free; for "less than 10 free" write '10:'/,
  );
  assert.throws(() => parseSpaceThreshold("~:5G"), /would alert when everything is free/);
  assert.throws(() => parseSpaceThreshold("lots:"), /neither a percentage/);
  assert.equal(parseDuration("90s"), 90);
  assert.equal(parseDuration("2w"), 1209600);
  assert.throws(() => parseDuration("0h"), /not a duration/);
  assert.equal(defaultThresholds().oomWarning.text, "0");
});

Deno.test("healthCheck() judges available memory: 3% critical, 8% warning, 50% OK", async () => {
  const total = 16 * 1024 * 1024;
  const cases: [number, string][] = [[0.03, "critical"], [0.08, "warning"], [0.5, "ok"]];
  for (const [share, status] of cases) {
    const result = await replay(
      withFile(BASE, "/proc/meminfo", meminfo(total, Math.round(total * share))),
    );
    const memory = find(result, "health/memory");
    assert.equal(memory.status, status, memory.summary);
    assert.equal(
      metric(result, "nix_builder_memory_available_bytes"),
      Math.round(total * share) * 1024,
    );
  }
  const ok = await replay(withFile(BASE, "/proc/meminfo", meminfo(total, total / 2)));
  assert.equal(find(ok, "health/memory").summary, "memory: 50% available (8.0 GiB of 16.0 GiB)");
});

Deno.test("healthCheck() does not alarm on a builder without swap unless --require-swap", async () => {
  const total = 16 * 1024 * 1024;
  const none = withFile(BASE, "/proc/meminfo", meminfo(total, total / 2));
  assert.equal(find(await replay(none), "health/swap").status, "ok");
  const required = find(await replay(none, { requireSwap: true }), "health/swap");
  assert.equal(required.status, "warning");
  assert.equal(required.summary, "no swap, and --require-swap asks for some");
  const full = await replay(
    withFile(BASE, "/proc/meminfo", meminfo(total, total / 2, 4194304, 209715)),
  );
  assert.equal(find(full, "health/swap").status, "warning");
  assert.equal(find(full, "health/swap").summary, "swap: 95% used (3.8 GiB of 4.0 GiB)");
  const light = await replay(
    withFile(BASE, "/proc/meminfo", meminfo(total, total / 2, 4194304, 4000000)),
  );
  assert.equal(find(light, "health/swap").status, "ok");
});

Deno.test("healthCheck() judges memory pressure by PSI full avg60, and skips kernels without PSI", async () => {
  const psi = (full60: number) =>
    `some avg10=1.00 avg60=${full60 + 1}.00 avg300=0.50 total=4154536\n` +
    `full avg10=0.50 avg60=${full60}.00 avg300=0.25 total=3953181\n`;
  const defaults = {
    thresholds: { ...CALM, ...pick(defaultThresholds(), "pressureWarning", "pressureCritical") },
  };
  for (const [value, status] of [[40, "critical"], [12, "warning"], [2, "ok"]] as const) {
    const result = await replay(withFile(BASE, "/proc/pressure/memory", psi(value)), defaults);
    assert.equal(find(result, "health/memory-pressure").status, status);
    assert.equal(
      metric(result, "nix_builder_memory_pressure_ratio", { kind: "full", window: "60s" }),
      value / 100,
    );
  }
  // The real capture of this VM while a zram swap was thrashing: full avg60 5.42%, below the warning.
  const captured = await Deno.readTextFile(
    `${FIXTURES}oom-proc/pressure-memory-after-swapping-linux-6.18.txt`,
  );
  const real = await replay(withFile(BASE, "/proc/pressure/memory", captured), defaults);
  assert.match(
    find(real, "health/memory-pressure").summary,
    /^memory pressure: full 5\.42% over the last minute/,
  );
  assert.equal(
    metric(real, "nix_builder_memory_pressure_stalled_seconds_total", { kind: "full" }),
    3.953181,
  );
  const noPsi = clone(BASE);
  delete noPsi.files["/proc/pressure/memory"];
  noPsi.paths["/proc/pressure/memory"] = { exists: false };
  const skipped = find(await replay(noPsi), "health/memory-pressure");
  assert.deepEqual([skipped.status, skipped.summary], [
    "ok",
    "memory pressure: not measured (this kernel has no PSI)",
  ]);
});

function pick<T, K extends keyof T>(value: T, ...keys: K[]): Pick<T, K> {
  return Object.fromEntries(keys.map((k) => [k, value[k]])) as Pick<T, K>;
}

Deno.test("healthCheck() judges the 5-minute load per core", async () => {
  const nproc = (d: SnapshotData) =>
    withCommand(d, (a) => a.join(" ").includes("nproc"), { code: 0, stdout: "2\n", stderr: "" });
  const defaults = { thresholds: pick(defaultThresholds(), "loadWarning", "loadCritical") };
  for (const [load5, status] of [[9.0, "critical"], [5.0, "warning"], [0.5, "ok"]] as const) {
    const data = nproc(
      withFile(BASE, "/proc/loadavg", `1.00 ${load5.toFixed(2)} 0.10 2/181 31987\n`),
    );
    const result = await replay(data, defaults);
    const load = find(result, "health/load");
    assert.equal(load.status, status, load.summary);
    assert.equal(metric(result, "nix_builder_load_per_core"), load5 / 2);
  }
});

/** The real OOM kill captured on this VM, re-timed to `agoS` seconds ago. */
async function kernelLogFile(agoS: number): Promise<string> {
  const text = await Deno.readTextFile(
    `${FIXTURES}oom-kernel/linux-6.18-memcg-nix-build.dmesg-iso.txt`,
  );
  const at = new Date(Date.now() - agoS * 1000).toISOString().slice(0, 19);
  const path = await Deno.makeTempFile({ suffix: ".log" });
  await Deno.writeTextFile(path, text.replace(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/gm, at));
  return path;
}

Deno.test("healthCheck() counts the OOM kills of a --kernel-log within the window and names them", async () => {
  const path = await kernelLogFile(2 * 3600);
  try {
    const local = new LocalTarget({ timeoutMs: 20_000 });
    const inWindow = await healthCheck(local, {
      kernelLog: path,
      oomWindowS: 3 * 3600,
      thresholds: CALM,
    });
    const kills = find(inWindow, "health/oom-kills");
    assert.equal(kills.status, "warning");
    assert.equal(kills.summary, "1 OOM kill in the last 3 h, 1 of them Nix builds");
    assert.match(
      kills.detail ?? "",
      /tail \(pid 12732\), 195\.6 MiB anon in \/nbr-oom-fixture, by cgroup limit/,
    );
    assert.equal(metric(inWindow, "nix_builder_oom_kills_new"), 1);
    const critical = await healthCheck(local, {
      kernelLog: path,
      oomWindowS: 3 * 3600,
      thresholds: { ...CALM, oomCritical: parseThreshold("0") },
    });
    assert.equal(find(critical, "health/oom-kills").status, "critical");
    const outside = await healthCheck(local, {
      kernelLog: path,
      oomWindowS: 3600,
      thresholds: CALM,
    });
    assert.deepEqual(
      [find(outside, "health/oom-kills").status, find(outside, "health/oom-kills").summary],
      ["ok", "no OOM kills in the last 60 min"],
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("healthCheck() counts OOM kills since the last run from the kernel's counter", async () => {
  const path = await kernelLogFile(30);
  try {
    const baseline = calmBaseline();
    const local = new LocalTarget({ timeoutMs: 20_000 });
    const one = await healthCheck(local, {
      kernelLog: path,
      oomBaseline: {
        ...baseline,
        oomKills: baseline.oomKills - 1,
        checkedAt: new Date(Date.now() - 120_000).toISOString(),
      },
      thresholds: CALM,
    });
    const kills = find(one, "health/oom-kills");
    assert.equal(kills.status, "warning");
    assert.match(kills.summary, /^1 OOM kill since the last run \(/);
    // Same counter as the last run: nothing new, and the log is not even read.
    const none = await healthCheck(local, { oomBaseline: baseline, thresholds: CALM });
    assert.equal(find(none, "health/oom-kills").status, "ok");
    assert.equal((find(none, "health/oom-kills").data as { new: number }).new, 0);
    // Another boot id: the host rebooted, so every kill since boot is new.
    const rebooted = await healthCheck(local, {
      oomBaseline: { ...baseline, bootId: "another-boot" },
      kernelLog: path,
      thresholds: CALM,
    });
    assert.match(
      find(rebooted, "health/oom-kills").summary,
      /since boot \(the host rebooted after the last run\)/,
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("healthCheck() warns about ssh users missing from trusted-users, not about root", async () => {
  const local = new LocalTarget({ timeoutMs: 20_000 });
  const root = await healthCheck(local, {
    builderUsers: ["root"],
    oomBaseline: calmBaseline(),
    thresholds: CALM,
  });
  assert.equal(find(root, "health/trusted-users").status, "ok");
  assert.equal(
    find(root, "health/trusted-users").summary,
    "trusted-users = root; root: opens the store directly (single-user install)",
  );
  const nobody = await healthCheck(local, {
    builderUsers: ["nobody", "no-such-user-nbr"],
    oomBaseline: calmBaseline(),
    thresholds: CALM,
  });
  const f = find(nobody, "health/trusted-users");
  assert.equal(f.status, "warning");
  assert.match(
    f.summary,
    /nobody: single-user install, and the store belongs to uid 0, not to nobody \(uid 65534\)/,
  );
  assert.match(f.summary, /no-such-user-nbr: no such user on localhost/);
});

Deno.test("healthCheck() of a snapshot compares the clock with collection time and flags resets", async () => {
  const at = Date.parse(BASE.meta.collected_at) / 1000;
  const date = (s: number) => (d: SnapshotData) =>
    withCommand(d, (a) => a[0] === "date", { code: 0, stdout: `${s.toFixed(6)}\n`, stderr: "" });
  const quiet = find(await replay(date(at + 2)(BASE)), "health/clock");
  assert.equal(quiet.status, "ok");
  const ahead = find(await replay(date(at + 120)(BASE)), "health/clock");
  assert.deepEqual([ahead.status, ahead.summary], [
    "warning",
    "clock 120 s ahead of the collecting machine",
  ]);
  const behind = find(await replay(date(at - 900)(BASE)), "health/clock");
  assert.deepEqual([behind.status, behind.summary], [
    "critical",
    "clock 900 s behind the collecting machine",
  ]);
  const reset = find(await replay(date(86400)(BASE)), "health/clock");
  assert.equal(reset.status, "critical");
  assert.match(reset.summary, /clock says 1970-01-02T00:00:00\.000Z: it was reset/);
});

Deno.test("healthCheck() warns when systemd says the clock is not NTP-synchronised", async () => {
  const sync = (answer: string) => {
    const d = clone(BASE);
    d.commands = d.commands.filter((c) => c.argv[0] !== "timedatectl");
    // A machine systemd runs (this VM's PID 1 is not systemd): the directory systemd creates.
    d.paths["/run/systemd/system"] = {
      exists: true,
      stat: {
        type: "directory",
        size: 40,
        mtime: 1795630000,
        mode: 0o755,
        uid: 0,
        isSymlink: false,
      },
    };
    d.commands.push({
      argv: ["timedatectl", "show", "--property=NTPSynchronized", "--value"],
      code: 0,
      stdout: `${answer}\n`,
      stderr: "",
    });
    return d;
  };
  const no = find(await replay(sync("no")), "health/clock");
  assert.deepEqual([no.status, no.summary], ["warning", "not NTP-synchronised (timedatectl)"]);
  const yes = find(await replay(sync("yes")), "health/clock");
  assert.equal(yes.status, "ok");
  assert.match(yes.summary, /NTP-synchronised$/);
});

Deno.test("healthCheck() says nix is missing when the ping command is not found", async () => {
  let data = withCommand(BASE, (a) => a[0] === "nix", {
    code: 127,
    stdout: "",
    stderr: "nix: command not found",
    failure: "not-found",
  });
  data = clone(data);
  const result = await replay(data);
  const missing = find(result, "health/nix-missing");
  assert.equal(missing.status, "critical");
  assert.equal(
    missing.summary,
    `nix is not installed on ${BASE.meta.host}, or not on the PATH of this session`,
  );
  assert.ok(!result.findings.some((f) => f.id === "health/daemon"));
  assert.equal(metric(result, "nix_builder_store_up"), 0);
});

Deno.test("healthCheck() is CRITICAL when a single-user store does not answer", async () => {
  const data = withCommand(BASE, (a) => a.includes("ping"), {
    code: 1,
    stdout: "Store URL: local\n",
    stderr: "error: opening lock file '/nix/var/nix/db/big-lock': Permission denied\n",
  });
  const result = await replay(data);
  const down = find(result, "health/store-unreachable");
  assert.equal(down.status, "critical");
  assert.match(
    down.summary,
    /single-user install: no nix-daemon process and no \/nix\/var\/nix\/daemon-socket\/socket\): error: opening lock file/,
  );
  assert.equal(metric(result, "nix_builder_store_up"), 0);
});

Deno.test("healthCheck() skips the Linux-only checks on another OS", async () => {
  const data = withCommand(BASE, (a) => a.join(" ") === "uname -s", {
    code: 0,
    stdout: "Darwin\n",
    stderr: "",
  });
  const result = await replay(data);
  assert.equal(
    find(result, "health/not-linux").summary,
    "Darwin: the Linux-only checks (memory, swap, pressure, OOM kills, load, binfmt) were skipped",
  );
  assert.ok(!result.findings.some((f) => f.id === "health/memory"));
  const linux = await replay(BASE);
  assert.ok(!linux.findings.some((f) => f.id === "health/not-linux"));
});

Deno.test("healthCheck() turns a check that throws into one UNKNOWN finding naming it", async () => {
  const result = await replay(withFile(BASE, "/proc/meminfo", "MemTotal: lots\n"));
  const failed = find(result, "health/check-failed");
  assert.equal(failed.status, "unknown");
  assert.match(
    failed.summary,
    /^memory check failed: Cannot parse \/proc\/meminfo:1: expected 'Name: value \[kB\]'/,
  );
  assert.ok(!(await replay(BASE)).findings.some((f) => f.id === "health/check-failed"));
});

Deno.test("healthCheck() ends a check that hangs at the deadline as UNKNOWN", async () => {
  const dir = await Deno.makeTempDir();
  const fifo = `${dir}/kern.log`;
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  try {
    const started = Date.now();
    const result = await healthCheck(new LocalTarget({ timeoutMs: 20_000 }), {
      kernelLog: fifo,
      deadline: Date.now() + 1500,
      thresholds: CALM,
    });
    assert.ok(Date.now() - started < 2500, `took ${Date.now() - started} ms`);
    const timeout = find(result, "health/timeout");
    assert.equal(timeout.status, "unknown");
    assert.equal(timeout.summary, "OOM kills check did not finish before the deadline (--timeout)");
    assert.equal(find(result, "health/store-space").status, "ok");
  } finally {
    // Let the blocked reader go: open the FIFO for writing and close it.
    (await Deno.open(fifo, { write: true })).close();
    await new Promise((r) => setTimeout(r, 50));
    await Deno.remove(dir, { recursive: true });
  }
  const quick = await healthCheck(new LocalTarget({ timeoutMs: 20_000 }), {
    oomBaseline: calmBaseline(),
    thresholds: CALM,
  });
  assert.ok(!quick.findings.some((f) => f.id === "health/timeout"));
});
