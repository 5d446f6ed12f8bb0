import assert from "node:assert/strict";
import type { ChangeRecord } from "../lib/atomic_file.ts";
import type { Finding } from "../lib/findings.ts";
import { JOURNAL_COMMANDS } from "../lib/kernel_log.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { parseMachines } from "../lib/machines.ts";
import { CONFIG_COMMANDS } from "../lib/nix_config.ts";
import {
  collectOomEvidence,
  diagnoseOom,
  type DiagnoseOomOptions,
  oomFindings,
  parseBuildLogKills,
} from "../lib/oom.ts";
import { type CapturedCommand, type CapturedPath, SnapshotTarget } from "../lib/snapshot_target.ts";

const ROOT = new URL("./fixtures/", import.meta.url).pathname;
const fixture = (name: string) => Deno.readTextFileSync(ROOT + name);
const BOOT = "c3ec5d1f-faf2-41fc-96d1-063c9971dc35";
const STATE = "/var/lib/nix-builder-runbook";

interface Machine {
  meminfo?: string;
  pressure?: string | null;
  vmstat?: string;
  settings?: Record<string, unknown>;
  nproc?: number;
  files?: Record<string, string>;
  paths?: Record<string, CapturedPath>;
  commands?: CapturedCommand[];
  records?: ChangeRecord[];
}

/** A snapshot of a Debian 12 builder (Nix 2.8 show-config captured there), adjusted per test. */
function builder(m: Machine = {}): SnapshotTarget {
  const config = JSON.parse(fixture("nix-2.8/show-config.json"));
  for (const [name, value] of Object.entries(m.settings ?? {})) config[name] = { value };
  const files: Record<string, string> = {
    "/proc/meminfo": m.meminfo ?? fixture("oom-proc/meminfo-linux-6.18-vm.txt"),
    "/proc/vmstat": m.vmstat ?? "pgfault 1\noom_kill 0\n",
    "/proc/sys/kernel/random/boot_id": BOOT + "\n",
    "/proc/swaps": fixture("oom-proc/swaps-empty-linux-6.18.txt"),
    "/etc/group": "root:x:0:\nnixbld:x:994:nixbld1,nixbld2\n",
    "/etc/passwd": "root:x:0:0::/root:/bin/sh\nnixbld1:x:999:994::/var/empty:/usr/sbin/nologin\n" +
      "nixbld2:x:998:994::/var/empty:/usr/sbin/nologin\n",
    "/sys/block/zram0/disksize": "0\n",
    "/sys/block/zram0/comp_algorithm": fixture("oom-proc/zram-comp_algorithm-linux-6.18.txt"),
    ...m.files,
  };
  const paths: Record<string, CapturedPath> = {
    "/sys/class/zram-control": { exists: true, entries: ["hot_add", "hot_remove"] },
    "/sys/module/zram": { exists: true, entries: [] },
    "/sys/block": { exists: true, entries: ["vda", "zram0"] },
    "/run/systemd/generator": { exists: false },
    [`${STATE}/records`]: { exists: false },
    ...m.paths,
  };
  if (m.pressure === null) paths["/proc/pressure/memory"] = { exists: false };
  else {files["/proc/pressure/memory"] = m.pressure ??
      fixture("oom-proc/pressure-memory-idle-linux-6.18.txt");}
  if (m.records) {
    paths[`${STATE}/records`] = { exists: true, entries: m.records.map((r) => `${r.id}.json`) };
    for (const r of m.records) files[`${STATE}/records/${r.id}.json`] = JSON.stringify(r);
  }
  return new SnapshotTarget({
    meta: { host: "builder1", collected_at: "2026-11-25T19:00:00Z", tool: "test" },
    commands: [
      {
        argv: [...CONFIG_COMMANDS[0]!],
        code: 1,
        stdout: "",
        stderr: fixture("nix-2.8/config-show.stderr"),
      },
      { argv: [...CONFIG_COMMANDS[1]!], code: 0, stdout: JSON.stringify(config), stderr: "" },
      { argv: ["nproc"], code: 0, stdout: `${m.nproc ?? 2}\n`, stderr: "" },
      ...m.commands ?? [],
    ],
    paths,
    files,
  });
}

async function diagnose(m: Machine, options: DiagnoseOomOptions = {}): Promise<Finding[]> {
  return await diagnoseOom(builder(m), { kernelLog: { name: "kern.log", text: "" }, ...options });
}

const find = (findings: Finding[], id: string) => findings.find((f) => f.id === id);
const ids = (findings: Finding[]) => findings.map((f) => f.id);

function meminfoWith(totalKb: number, availableKb: number, swapTotalKb = 0, swapFreeKb = 0) {
  return `MemTotal: ${totalKb} kB\nMemFree: ${availableKb} kB\nMemAvailable: ${availableKb} kB\n` +
    `SwapTotal: ${swapTotalKb} kB\nSwapFree: ${swapFreeKb} kB\n`;
}

// ---- oom/memory

Deno.test("oom/memory is OK on the idle 24 GiB VM and names RAM and swap", async () => {
  const f = find(await diagnose({}), "oom/memory")!;
  assert.equal(f.status, "ok");
  assert.equal(f.summary, "23.0 GiB of 23.5 GiB RAM available (97.6%), no swap");
});

Deno.test("oom/memory warns below 10% available and is critical below 5%", async () => {
  const warn = find(await diagnose({ meminfo: meminfoWith(16_000_000, 1_280_000) }), "oom/memory")!;
  assert.equal(warn.status, "warning");
  assert.match(warn.summary, /\(8%\)/);
  const crit = find(await diagnose({ meminfo: meminfoWith(16_000_000, 480_000) }), "oom/memory")!;
  assert.equal(crit.status, "critical");
  assert.match(crit.fix ?? "", /--mitigate serialize/);
});

Deno.test("oom/memory warns when swap is 80% used even with RAM left", async () => {
  const f = find(
    await diagnose({ meminfo: meminfoWith(16_000_000, 8_000_000, 1_000_000, 100_000) }),
    "oom/memory",
  )!;
  assert.equal(f.status, "warning");
  assert.match(f.summary, /swap 878\.9 MiB of 976\.6 MiB used \(90%\)/);
});

Deno.test("oom/memory notes the estimate on a kernel without MemAvailable", async () => {
  const f = find(
    await diagnose({ meminfo: fixture("oom-proc/meminfo-no-memavailable.txt") }),
    "oom/memory",
  )!;
  assert.equal(f.status, "ok");
  assert.match(f.detail ?? "", /MemAvailable is missing/);
});

Deno.test("oom/memory is UNKNOWN when /proc/meminfo cannot be read", async () => {
  const f = find(
    await diagnose({ paths: { "/proc/meminfo": { exists: false } }, meminfo: "" }),
    "oom/memory",
  );
  // an empty file is a parse failure too
  assert.equal(f?.status, "unknown");
});

// ---- oom/pressure

Deno.test("oom/pressure warns on the real stalls after a cgroup swapped to zram", async () => {
  const f = find(
    await diagnose({ pressure: fixture("oom-proc/pressure-memory-after-swapping-linux-6.18.txt") }),
    "oom/pressure",
  )!;
  assert.equal(f.status, "warning");
  assert.equal(
    f.summary,
    "memory stalls: some 20.65/5.52/1.24%, full 20.11/5.42/1.22% (avg10/60/300)",
  );
});

Deno.test("oom/pressure is critical from 20% full stalls and OK when idle", async () => {
  const heavy =
    "some avg10=60.00 avg60=45.00 avg300=20.00 total=1\nfull avg10=50.00 avg60=30.00 avg300=10.00 total=1\n";
  assert.equal(find(await diagnose({ pressure: heavy }), "oom/pressure")?.status, "critical");
  assert.equal(find(await diagnose({}), "oom/pressure")?.status, "ok");
});

Deno.test("oom/pressure says PSI is not available instead of failing", async () => {
  const f = find(await diagnose({ pressure: null }), "oom/pressure")!;
  assert.equal(f.status, "ok");
  assert.match(f.summary, /not available/);
});

// ---- kills

Deno.test("oom/build-killed is critical for the real 6.18 kill of a nixbld process", async () => {
  const findings = await diagnose({}, {
    kernelLog: {
      name: "kern.log",
      text: fixture("oom-kernel/linux-6.18-memcg-nix-build.dmesg-iso.txt"),
    },
  });
  const f = find(findings, "oom/build-killed")!;
  assert.equal(f.status, "critical");
  assert.equal(f.summary, "1 OOM kill of Nix build processes in kern.log");
  assert.equal(
    f.detail,
    "2026-11-25T18:52:54,551465+00:00: tail (pid 12732), 195.6 MiB anon in /nbr-oom-fixture, by cgroup limit " +
      "[build: uid 999 is a build user]",
  );
  assert.ok(!ids(findings).includes("oom/other-killed"));
  assert.ok(!ids(findings).includes("oom/no-kills"));
});

Deno.test("oom/build-killed counts emulated builds under qemu", async () => {
  const line =
    "[ 99.000001] Out of memory: Killed process 4242 (qemu-aarch64) total-vm:9000000kB, " +
    "anon-rss:6000000kB, file-rss:100kB, shmem-rss:0kB, UID:998 pgtables:100kB oom_score_adj:0";
  const f = find(
    await diagnose({}, { kernelLog: { name: "dmesg.txt", text: line } }),
    "oom/build-killed",
  )!;
  assert.match(f.summary, /\(1 emulated under qemu\)/);
});

Deno.test("oom/other-killed warns about kills not traced to Nix, without oom/build-killed", async () => {
  // NixOS-style build users (30001...): uid 999 is some other service there.
  const nixos = {
    "/etc/passwd": "root:x:0:0::/root:/bin/sh\nnixbld1:x:30001:30000::/var/empty:/bin/false\n",
    "/etc/group": "nixbld:x:30000:nixbld1\n",
  };
  const findings = await diagnose({ files: nixos }, {
    kernelLog: {
      name: "journal.txt",
      text: fixture("oom-kernel/linux-5.x-global-docker.journal.txt"),
    },
  });
  const f = find(findings, "oom/other-killed")!;
  assert.equal(f.status, "warning");
  assert.equal(f.summary, "1 OOM kill of processes not traced to Nix in journal.txt");
  assert.match(
    f.detail!,
    /^Jan 29 16:14:20: environmentd \(pid 188614\), 178\.9 GiB anon in \/system\.slice\/docker-/,
  );
  assert.ok(!ids(findings).includes("oom/build-killed"));
});

Deno.test("oom/no-kills is OK for a log without kills", async () => {
  const findings = await diagnose({}, {
    kernelLog: {
      name: "nixos-test.log",
      text: fixture("oom-kernel/linux-5.10-nixos-test-vm.console.txt"),
    },
  });
  assert.equal(find(findings, "oom/no-kills")?.summary, "no OOM kills in nixos-test.log");
});

Deno.test("oom/kills-not-in-log warns when /proc/vmstat counted more kills than the live log shows", async () => {
  const dmesg: CapturedCommand[] = [
    { argv: [...JOURNAL_COMMANDS[0]!], code: 0, stdout: "", stderr: "" },
    {
      argv: ["dmesg", "--time-format", "iso"],
      code: 0,
      stdout: fixture("oom-kernel/linux-6.18-memcg-nix-build.dmesg-iso.txt"),
      stderr: "",
    },
  ];
  const findings = await diagnoseOom(builder({ vmstat: "oom_kill 3\n", commands: dmesg }));
  const f = find(findings, "oom/kills-not-in-log")!;
  assert.equal(f.status, "warning");
  assert.equal(
    f.summary,
    "the kernel counted 3 OOM kills since boot (/proc/vmstat oom_kill), the log shows 1",
  );
  const same = await diagnoseOom(builder({ vmstat: "oom_kill 1\n", commands: dmesg }));
  assert.ok(!ids(same).includes("oom/kills-not-in-log"));
  // A saved log file is not this boot's: no comparison.
  const file = await diagnose({ vmstat: "oom_kill 3\n" });
  assert.ok(!ids(file).includes("oom/kills-not-in-log"));
});

Deno.test("oom/kernel-log-unavailable is UNKNOWN with the reasons when no log can be read", async () => {
  const findings = await diagnoseOom(builder({
    commands: [
      { argv: [...JOURNAL_COMMANDS[0]!], code: 127, stdout: "", stderr: "", failure: "not-found" },
      {
        argv: ["dmesg", "--time-format", "iso"],
        code: 1,
        stdout: "",
        stderr: "dmesg: read kernel buffer failed: Operation not permitted\n",
      },
      {
        argv: ["dmesg"],
        code: 1,
        stdout: "",
        stderr: "dmesg: read kernel buffer failed: Operation not permitted\n",
      },
    ],
  }));
  const f = find(findings, "oom/kernel-log-unavailable")!;
  assert.equal(f.status, "unknown");
  assert.match(
    f.detail!,
    /'dmesg' exited with 1: dmesg: read kernel buffer failed: Operation not permitted$/,
  );
  assert.ok(!ids(findings).includes("oom/no-kills"));
  assert.ok(!ids(await diagnose({})).includes("oom/kernel-log-unavailable"));
});

// ---- build logs

Deno.test("oom/build-log-killed names the derivation Nix 2.8 reported killed by signal 9", async () => {
  const findings = await diagnose({}, {
    buildLog: { name: "build.log", text: fixture("oom-kernel/nix-2.8-build-signal9.stderr.txt") },
  });
  const f = find(findings, "oom/build-log-killed")!;
  assert.equal(f.status, "critical");
  assert.equal(
    f.summary,
    "build.log: 1 build failed due to signal 9 (Killed): /nix/store/lvirqrfkijbf2fjniin57vj0jqmpvda2-oom-hog-fa1d3b1f4af4a108.drv",
  );
  assert.ok(!ids(findings).includes("oom/build-log-clean"));
});

Deno.test("oom/build-log-killed also catches a compiler killed inside a build", async () => {
  const f = find(
    await diagnose({}, {
      buildLog: {
        name: "cmake.log",
        text: fixture("oom-kernel/nix-2.18-build-cc1plus-killed.txt"),
      },
    }),
    "oom/build-log-killed",
  )!;
  assert.equal(f.summary, "cmake.log: a compiler or linker inside the build was killed (signal 9)");
});

Deno.test("oom/build-log-clean is OK for a build log without killed builds, absent without one", async () => {
  const clean = await diagnose({}, {
    buildLog: { name: "ok.log", text: "building '/nix/store/x-a.drv'...\n" },
  });
  assert.equal(find(clean, "oom/build-log-clean")?.summary, "ok.log: no build killed by a signal");
  assert.ok(!ids(await diagnose({})).some((id) => id.startsWith("oom/build-log")));
});

Deno.test("parseBuildLogKills() reads Nix 2.0's message and a newer 'Cannot build ... Reason:' pair", () => {
  assert.deepEqual(
    parseBuildLogKills(fixture("oom-kernel/nix-2.0-build-signal9.txt")).map((
      k,
    ) => [k.kind, k.drv, k.signal]),
    [
      ["builder", "/nix/store/94yfdqk4r6vmja7qhqkyy0hl25bvvfjj-simple.drv", 9],
    ],
  );
  const kills = parseBuildLogKills(
    "error: Cannot build '/nix/store/abc-foo.drv'.\n       Reason: builder failed due to signal 9 (Killed).\n",
  );
  assert.deepEqual(kills.map((k) => [k.drv, k.line]), [["/nix/store/abc-foo.drv", 2]]);
});

// ---- arithmetic

Deno.test("oom/jobs-memory warns for 8 jobs × 2 cores on a 16 GiB builder (about 1 GiB each)", async () => {
  const f = find(
    await diagnose({
      meminfo: meminfoWith(16_318_412, 15_000_000),
      settings: { "max-jobs": 8, cores: 2 },
    }),
    "oom/jobs-memory",
  )!;
  assert.equal(f.status, "warning");
  assert.equal(
    f.summary,
    "max-jobs 8 × cores 2 = up to 16 compiler processes on 15.6 GiB RAM: about 996.0 MiB each",
  );
  assert.equal(
    f.fix,
    "lower max-jobs to 7 (or cores): --mitigate serialize --max-jobs 7 --cores 2",
  );
});

Deno.test("oom/jobs-memory is critical for 16 × 4 on 16 GiB and OK for the VM's 1 × 2", async () => {
  const crit = find(
    await diagnose({
      meminfo: meminfoWith(16_318_412, 15_000_000),
      settings: { "max-jobs": 16, cores: 4 },
    }),
    "oom/jobs-memory",
  )!;
  assert.equal(crit.status, "critical");
  const ok = find(await diagnose({}), "oom/jobs-memory")!;
  assert.equal(ok.status, "ok");
  assert.equal(
    ok.summary,
    "max-jobs 1 × cores 2 = up to 2 compiler processes on 23.5 GiB RAM: about 11.8 GiB each",
  );
});

Deno.test("oom/jobs-memory resolves max-jobs auto and cores 0 from nproc, and notes emulation", async () => {
  const f = find(
    await diagnose({
      nproc: 8,
      meminfo: meminfoWith(16_318_412, 15_000_000),
      settings: {
        "max-jobs": "auto",
        cores: 0,
        "extra-platforms": ["aarch64-linux", "i686-linux"],
      },
    }),
    "oom/jobs-memory",
  )!;
  assert.match(f.summary, /^max-jobs 8 × cores 8 = up to 64 compiler processes/);
  assert.equal(f.status, "critical");
  assert.match(f.detail ?? "", /^aarch64-linux builds run under qemu user emulation/);
});

Deno.test("oom/jobs-memory is OK on a controller with max-jobs 0 and UNKNOWN without nix", async () => {
  assert.equal(
    find(await diagnose({ settings: { "max-jobs": 0 } }), "oom/jobs-memory")?.summary,
    "max-jobs = 0: this machine builds nothing itself (a controller)",
  );
  const noNix = new SnapshotTarget({
    meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: CONFIG_COMMANDS.map((argv) => ({
      argv: [...argv],
      code: 127,
      stdout: "",
      stderr: "",
      failure: "not-found" as const,
    })),
    paths: {},
    files: { "/proc/meminfo": fixture("oom-proc/meminfo-linux-6.18-vm.txt") },
  });
  const f = find(
    await diagnoseOom(noNix, { kernelLog: { name: "x", text: "" } }),
    "oom/jobs-memory",
  )!;
  assert.equal(f.status, "unknown");
  assert.match(f.summary, /'nix' is not installed or not on PATH/);
});

Deno.test("oom/machines-jobs-memory reads the post's line as 1 job (column #3 is '-')", async () => {
  const post = parseMachines("nixos x86_64-linux / - 8 1 kvm,big-parallel\n", {
    input: "/etc/nix/machines",
    version: "2.24.0",
  });
  const findings = await diagnose(
    { meminfo: meminfoWith(16_318_412, 15_000_000) },
    { machines: { input: "/etc/nix/machines", lines: post.machines } },
  );
  const f = find(findings, "oom/machines-jobs-memory")!;
  assert.equal(f.status, "ok");
  assert.equal(
    f.summary,
    "/etc/nix/machines:1 (ssh://nixos) sends up to 1 job × cores 2 = 2 processes to 15.6 GiB RAM: about 7.8 GiB each",
  );
  assert.equal(f.detail, "the max jobs column (#3) is unset ('-'), so Nix uses 1");
});

Deno.test("oom/machines-jobs-memory warns for a line sending 8 jobs to a 16 GiB builder", async () => {
  const line = parseMachines("ssh://nixos x86_64-linux - 8 1 kvm\n", {
    input: "/etc/nix/machines",
  });
  const f = find(
    await diagnose({ meminfo: meminfoWith(16_318_412, 15_000_000) }, {
      machines: { input: "m", lines: line.machines },
    }),
    "oom/machines-jobs-memory",
  )!;
  assert.equal(f.status, "warning");
  assert.match(f.fix!, /lower column #3 \(max jobs\) of that line to 7/);
  assert.ok(!ids(await diagnose({})).includes("oom/machines-jobs-memory"));
});

// ---- zram and records

Deno.test("zram/devices lists the VM's unused zram0; zram/unavailable replaces it without zram", async () => {
  const withZram = await diagnose({});
  assert.equal(find(withZram, "zram/devices")?.summary, "1 zram device: zram0 (unused)");
  assert.ok(!ids(withZram).includes("zram/unavailable"));
  const without = await diagnose({
    paths: {
      "/sys/class/zram-control": { exists: false },
      "/sys/module/zram": { exists: false },
      "/sys/block": { exists: true, entries: ["vda"] },
    },
  });
  const f = find(without, "zram/unavailable")!;
  assert.equal(f.status, "ok");
  assert.ok(!ids(without).includes("zram/devices"));
});

function record(over: Partial<ChangeRecord> & { detail: Record<string, unknown> }): ChangeRecord {
  return {
    id: "20261125T190517Z-zram-8ff3fa",
    tool: "oom_mitigate",
    kind: "zram",
    status: "applied",
    createdAt: "2026-11-25T19:05:17.164Z",
    updatedAt: "2026-11-25T19:05:17.898Z",
    bootId: BOOT,
    ...over,
  };
}

const ZRAM1 = {
  "/sys/block": { exists: true, entries: ["vda", "zram0", "zram1"] },
};
const ZRAM1_FILES = {
  "/sys/block/zram1/disksize": "12637437952\n",
  "/sys/block/zram1/comp_algorithm": fixture(
    "oom-proc/zram-comp_algorithm-selected-linux-6.18.txt",
  ),
  "/sys/block/zram1/mm_stat": "4096 78 12288 0 12288 0 0 0 0\n",
  "/proc/swaps": "Filename Type Size Used Priority\n/dev/zram1 partition 12341244 0 100\n",
};

Deno.test("oom/mitigation-active lists our zram swap, and zram/devices marks it ours", async () => {
  const findings = await diagnose({
    paths: ZRAM1,
    files: ZRAM1_FILES,
    records: [record({ detail: { device: "zram1", label: "nbr-oom-8ff3fa", step: "active" } })],
  });
  assert.equal(
    find(findings, "oom/mitigation-active")?.detail,
    "temporary zram swap zram1 since 2026-11-25T19:05:17.164Z",
  );
  assert.ok(!ids(findings).includes("oom/incomplete-change"));
  assert.ok(!ids(findings).includes("zram/stale-record"));
  assert.equal(
    find(findings, "zram/devices")?.summary,
    "2 zram devices: zram0 (unused), zram1 (ours)",
  );
  assert.ok(!ids(await diagnose({})).includes("oom/mitigation-active"));
});

Deno.test("zram/stale-record says a record's device went with a reboot", async () => {
  const findings = await diagnose({
    records: [
      record({ bootId: "another-boot", detail: { device: "zram1", label: "nbr-oom-8ff3fa" } }),
    ],
  });
  const f = find(findings, "zram/stale-record")!;
  assert.equal(
    f.summary,
    "record 20261125T190517Z-zram-8ff3fa: zram1 is gone (the machine rebooted)",
  );
  assert.ok(!ids(findings).includes("oom/mitigation-active"));
});

Deno.test("oom/incomplete-change warns about a zram setup a killed run left half-done", async () => {
  const findings = await diagnose({
    paths: ZRAM1,
    files: { ...ZRAM1_FILES, "/proc/swaps": "Filename Type Size Used Priority\n" },
    records: [record({ status: "applying", detail: { device: "zram1", step: "configured" } })],
  });
  const f = find(findings, "oom/incomplete-change")!;
  assert.equal(f.status, "warning");
  assert.match(f.summary, /killed while setting up zram swap on zram1 \(step 'configured'\)/);
});

Deno.test("oom/incomplete-change uses the hot-add note when the record never got its device", async () => {
  const id = "20261125T190517Z-zram-8ff3fa";
  const findings = await diagnose({
    paths: ZRAM1,
    files: { ...ZRAM1_FILES, [`${STATE}/backups/${id}/hot-add`]: "1\n" },
    records: [record({ status: "applying", detail: { step: "start", knownDevices: ["zram0"] } })],
  });
  assert.match(find(findings, "oom/incomplete-change")!.summary, /on zram1 \(step 'start'\)/);
  assert.ok(!ids(findings).includes("zram/orphan-device"));
});

Deno.test("zram/orphan-device names the candidate a run killed mid-hot-add may have left", async () => {
  const findings = await diagnose({
    paths: {
      ...ZRAM1,
      [`${STATE}/backups/20261125T190517Z-zram-8ff3fa/hot-add`]: { exists: false },
    },
    files: { ...ZRAM1_FILES, "/sys/block/zram1/disksize": "0\n", "/proc/swaps": "Filename\n" },
    records: [record({ status: "applying", detail: { step: "start", knownDevices: ["zram0"] } })],
  });
  const f = find(findings, "zram/orphan-device")!;
  assert.equal(f.status, "warning");
  assert.match(f.summary, /zram1 may be the one it added/);
  assert.equal(
    f.fix,
    "if nothing else uses it: echo 1 > /sys/class/zram-control/hot_remove; then --revert closes the record",
  );
});

Deno.test("oom/incomplete-change warns about an interrupted nix.conf edit", async () => {
  const findings = await diagnose({
    records: [record({
      id: "20261125T190521Z-file-c05775",
      kind: "file",
      status: "applying",
      detail: { path: "/etc/nix/nix.conf", before: null, afterSha256: "x" },
    })],
  });
  assert.equal(
    find(findings, "oom/incomplete-change")?.summary,
    "record 20261125T190521Z-file-c05775: a run was killed while editing /etc/nix/nix.conf",
  );
});

Deno.test("collectOomEvidence() reads this machine without creating the state directory", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const evidence = await collectOomEvidence(new LocalTarget(), { stateDir: `${dir}/state` });
    assert.ok("totalBytes" in evidence.memory);
    assert.notEqual(evidence.log.source, "none");
    assert.equal(await Deno.stat(`${dir}/state`).catch(() => null), null);
    assert.ok(oomFindings(evidence).some((f) => f.id === "oom/memory"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
