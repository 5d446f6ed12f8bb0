import assert from "node:assert/strict";
import {
  attributeToNix,
  DMESG_COMMANDS,
  JOURNAL_COMMANDS,
  parseOomLog,
  readKernelLog,
} from "../lib/kernel_log.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";

const FIXTURES = new URL("./fixtures/oom-kernel/", import.meta.url).pathname;
const fixture = (name: string) => Deno.readTextFileSync(FIXTURES + name);
const KiB = 1024;

Deno.test("parseOomLog() reads the real Linux 6.18 memory-cgroup kill of a Nix build (dmesg --time-format iso)", () => {
  const scan = parseOomLog(fixture("linux-6.18-memcg-nix-build.dmesg-iso.txt"));
  assert.equal(scan.invocations, 1);
  assert.equal(scan.kills.length, 1);
  const kill = scan.kills[0]!;
  assert.equal(kill.killer, "kernel");
  assert.equal(kill.process, "tail");
  assert.equal(kill.pid, 12732);
  assert.equal(kill.uid, 999);
  assert.equal(kill.scope, "memcg");
  assert.equal(kill.constraint, "CONSTRAINT_MEMCG");
  assert.equal(kill.cgroup, "/nbr-oom-fixture");
  assert.equal(kill.limitCgroup, "/nbr-oom-fixture");
  assert.equal(kill.anonRssBytes, 200320 * KiB);
  assert.equal(kill.totalVmBytes, 202888 * KiB);
  assert.equal(kill.oomScoreAdj, 0);
  assert.equal(kill.trigger, "tail");
  assert.equal(kill.timestamp, "2026-11-25T18:52:54,551465+00:00");
  assert.equal(kill.epochMs, Date.parse("2026-11-25T18:52:54.551Z"));
  assert.deepEqual(kill.tasks?.map((t) => [t.pid, t.uid, t.name]), [
    [12696, 0, "nix-build"],
    [12732, 999, "tail"],
  ]);
});

Deno.test("parseOomLog() reads the same kill from raw dmesg with seconds since boot", () => {
  const [kill] = parseOomLog(fixture("linux-6.18-memcg-nix-build.dmesg-raw.txt")).kills;
  assert.equal(kill?.uptimeSeconds, 820.551465);
  assert.equal(kill?.timestamp, undefined);
  assert.equal(kill?.pid, 12732);
});

Deno.test("parseOomLog() reads Linux 4.x 'Kill process ... or sacrifice child' then 'Killed process'", () => {
  const { kills } = parseOomLog(fixture("linux-4.x-sacrifice-child.dmesg-raw.txt"));
  assert.equal(kills.length, 1);
  assert.equal(kills[0]?.process, "python2");
  assert.equal(kills[0]?.pid, 21518);
  assert.equal(kills[0]?.scope, "global");
  assert.equal(kills[0]?.anonRssBytes, 12721928 * KiB);
  assert.equal(kills[0]?.shmemRssBytes, undefined);
  assert.equal(kills[0]?.selected, undefined);
});

Deno.test("parseOomLog() notes the chosen process when Linux 3.10 killed its child instead (dmesg -T)", () => {
  const { kills, invocations } = parseOomLog(
    fixture("linux-3.10-memcg-sacrifice-child.dmesg-T.txt"),
  );
  assert.equal(invocations, 1);
  assert.equal(kills.length, 1);
  assert.equal(kills[0]?.pid, 28438);
  assert.deepEqual(kills[0]?.selected, { pid: 24572, process: "java" });
  assert.equal(kills[0]?.scope, "memcg");
  assert.equal(kills[0]?.timestamp, "Thu Dec  7 00:05:15 2017");
});

Deno.test("parseOomLog() reads the EL7 'Killed process N (comm), UID 0,' variant from syslog", () => {
  const { kills } = parseOomLog(fixture("linux-el7-memcg-uid-comma.syslog.txt"));
  assert.deepEqual(kills.map((k) => [k.pid, k.uid, k.scope]), [
    [42452, 0, "unknown"],
    [42453, 0, "memcg"],
    [42474, 0, "memcg"],
  ]);
  assert.equal(kills[0]?.hostname, "hgzmm3cs239");
  assert.equal(kills[0]?.timestamp, "Aug 16 20:29:54");
});

Deno.test("parseOomLog() reads a syslog line carrying a dmesg timestamp, ignoring systemd's lines", () => {
  const { kills } = parseOomLog(fixture("linux-5.x-syslog-with-uptime.syslog.txt"));
  assert.equal(kills.length, 1);
  assert.equal(kills[0]?.process, "systemd-journal");
  assert.equal(kills[0]?.uptimeSeconds, 517.923918);
  assert.equal(kills[0]?.shmemRssBytes, 4 * KiB);
  assert.equal(kills[0]?.uid, undefined);
});

Deno.test("parseOomLog() marks a Linux 5.4 memory-cgroup kill reaped by oom_reaper", () => {
  const { kills, invocations } = parseOomLog(fixture("linux-5.4-memcg-reaper.dmesg-raw.txt"));
  assert.equal(kills.length, 1);
  assert.equal(kills[0]?.reaped, true);
  assert.equal(kills[0]?.oomScoreAdj, 986);
  // The 'invoked oom-killer' after the kill starts the next event; it is counted, not attached.
  assert.equal(invocations, 1);
  assert.equal(kills[0]?.trigger, undefined);
});

Deno.test("parseOomLog() takes the cgroup, pid and uid of a global kill from the oom-kill summary", () => {
  const { kills } = parseOomLog(fixture("linux-5.x-global-docker.journal.txt"));
  assert.equal(kills.length, 1);
  assert.equal(kills[0]?.scope, "global");
  assert.equal(kills[0]?.constraint, "CONSTRAINT_NONE");
  assert.equal(
    kills[0]?.cgroup,
    "/system.slice/docker-e48caa8cdfd49a18d4f79d98441dbc0075e409aef2cf1bfd7acf85b4208a679f.scope",
  );
  assert.equal(kills[0]?.uid, 999);
  assert.equal(kills[0]?.hostname, "ip-10-61-187-252.ec2.internal");
});

Deno.test("parseOomLog() records a kill from a lone oom-kill summary line (an excerpt)", () => {
  const { kills } = parseOomLog(fixture("linux-5.x-memcg-constraint.syslog-usec.txt"));
  assert.equal(kills.length, 1);
  assert.equal(kills[0]?.process, "pt_main_thread");
  assert.equal(kills[0]?.pid, 461754);
  assert.equal(kills[0]?.scope, "memcg");
  assert.equal(kills[0]?.timestamp, "Aug 30 06:58:55.050705");
  assert.equal(kills[0]?.hostname, undefined, "the '...' host placeholder is not a host");
  assert.match(kills[0]?.limitCgroup ?? "", /^\/lxc\.payload\.\.\.\.-lxc\/kubepods\.slice/);
});

Deno.test("parseOomLog() keeps a journal-truncated cgroup and says it is cut", () => {
  const { kills } = parseOomLog(fixture("linux-6.x-nixos-truncated.journal.txt"));
  assert.equal(kills.length, 1);
  assert.equal(kills[0]?.process, "nix-env");
  assert.equal(kills[0]?.cgroupTruncated, true);
  assert.ok(kills[0]?.cgroup?.endsWith("/vte-s"));
  assert.equal(kills[0]?.reaped, true);
});

Deno.test("parseOomLog() reads the Linux 6.x task table with rss_anon columns", () => {
  const { kills } = parseOomLog(fixture("linux-6.x-nixos-kswapd.dmesg-raw.txt"));
  assert.equal(kills[0]?.trigger, "kswapd0");
  assert.deepEqual(kills[0]?.tasks, [{ pid: 963, uid: 993, name: "systemd-oomd" }]);
  assert.equal(kills[0]?.cgroup, "/system.slice/plymouth-start.service");
});

Deno.test("parseOomLog() strips a NixOS test driver prefix and counts the invocation", () => {
  const scan = parseOomLog(fixture("linux-5.10-nixos-test-vm.console.txt"));
  assert.equal(scan.invocations, 1);
  assert.equal(scan.kills.length, 0);
});

Deno.test("parseOomLog() reads systemd-oomd killing a cgroup", () => {
  const { kills } = parseOomLog(fixture("systemd-oomd.journal.txt"));
  assert.equal(
    kills.length,
    1,
    "the unit's 'systemd-oomd killed 12 process(es)' line is not a second kill",
  );
  assert.equal(kills[0]?.killer, "systemd-oomd");
  assert.match(kills[0]?.cgroup ?? "", /vte-spawn-dbb4a75e.*\.scope$/);
  assert.equal(kills[0]?.pid, undefined);
});

Deno.test("parseOomLog() reads systemd's 'killed by the OOM killer' unit line", () => {
  const { kills } = parseOomLog(fixture("systemd-unit-oom.journal.txt"));
  assert.deepEqual(kills.map((k) => [k.killer, k.cgroup]), [["systemd", "greenclip.service"]]);
});

Deno.test("parseOomLog() reads earlyoom 1.7, 1.8 and 1.3 kills", () => {
  const v17 = parseOomLog(fixture("earlyoom-1.7.journal.txt")).kills;
  assert.deepEqual(v17.map((k) => [k.killer, k.signal, k.pid, k.uid, k.process]), [
    ["earlyoom", "SIGTERM", 29410, 1000, "cluster"],
  ]);
  assert.equal(v17[0]?.anonRssBytes, 23964 * 1024 * 1024);
  const v18 = parseOomLog(fixture("earlyoom-1.8.journal.txt")).kills;
  assert.deepEqual(v18.map((k) => [k.pid, k.process, k.hostname]), [[906175, "java", undefined]]);
  const v13 = parseOomLog(fixture("earlyoom-1.3.stdout.txt")).kills;
  assert.deepEqual(v13.map((k) => [k.pid, k.process, k.signal]), [[27541, "bash", "SIGTERM"]]);
});

Deno.test("parseOomLog() finds no kill in a Nix build log or an empty text", () => {
  assert.equal(parseOomLog(fixture("nix-2.8-build-signal9.stderr.txt")).kills.length, 0);
  assert.deepEqual(parseOomLog(""), { kills: [], invocations: 0, lines: 1 });
});

Deno.test("parseOomLog() reads journalctl -o json lines", () => {
  const line = JSON.stringify({
    __REALTIME_TIMESTAMP: "1795632774551465",
    _HOSTNAME: "builder1",
    SYSLOG_IDENTIFIER: "kernel",
    MESSAGE:
      "Out of memory: Killed process 4242 (cc1plus) total-vm:2202888kB, anon-rss:2000320kB, file-rss:1196kB, shmem-rss:0kB, UID:30001 pgtables:4424kB oom_score_adj:0",
  });
  const [kill] = parseOomLog(line).kills;
  assert.equal(kill?.process, "cc1plus");
  assert.equal(kill?.uid, 30001);
  assert.equal(kill?.hostname, "builder1");
  assert.equal(kill?.epochMs, 1795632774551);
  assert.equal(kill?.timestamp, "2026-11-25T18:52:54.551Z");
});

Deno.test("attributeToNix() traces the real 6.18 kill to a build by the nixbld uid", () => {
  const [kill] = parseOomLog(fixture("linux-6.18-memcg-nix-build.dmesg-iso.txt")).kills;
  assert.deepEqual(attributeToNix(kill!, { buildUids: new Set([999, 998]) }), {
    kind: "build",
    confidence: "certain",
    reason: "uid 999 is a build user",
  });
  // Without the uid map, the memory cgroup's task table still shows nix-build next to it.
  assert.deepEqual(attributeToNix(kill!), {
    kind: "build",
    confidence: "certain",
    reason: "its memory cgroup also holds nix-build (pid 12696)",
  });
});

Deno.test("attributeToNix() calls nix-env itself Nix, not a build", () => {
  const [kill] = parseOomLog(fixture("linux-6.x-nixos-truncated.journal.txt")).kills;
  assert.deepEqual(attributeToNix(kill!), {
    kind: "nix",
    confidence: "likely",
    reason: "nix-env is Nix",
  });
});

Deno.test("attributeToNix() leaves unrelated kills alone", () => {
  for (
    const name of ["linux-5.x-global-docker.journal.txt", "linux-4.x-sacrifice-child.dmesg-raw.txt"]
  ) {
    const [kill] = parseOomLog(fixture(name)).kills;
    assert.equal(attributeToNix(kill!), null, name);
  }
});

Deno.test("attributeToNix() recognises emulated builds, auto-allocated uids and nix-daemon's cgroup", () => {
  const base = { killer: "kernel" as const, line: 1, message: "", scope: "global" as const };
  assert.equal(
    attributeToNix({ ...base, process: "qemu-aarch64", uid: 1000 })?.kind,
    "emulated-build",
  );
  assert.deepEqual(
    attributeToNix({ ...base, process: "qemu-aarch64", uid: 30002 }, {
      buildUids: new Set([30002]),
    }),
    {
      kind: "emulated-build",
      confidence: "certain",
      reason: "uid 30002 is a build user",
    },
  );
  assert.equal(
    attributeToNix({ ...base, process: "make", uid: 872415233 })?.reason,
    "uid 872415233 is one of Nix's auto-allocated build uids",
  );
  assert.equal(
    attributeToNix({ ...base, process: "ld", cgroup: "/system.slice/nix-daemon.service" })
      ?.confidence,
    "certain",
  );
  assert.equal(attributeToNix({ ...base, process: "ld" })?.confidence, "likely");
});

Deno.test("readKernelLog() falls back to dmesg when the journal has no kernel messages", async () => {
  const [journal] = JOURNAL_COMMANDS;
  const target = new SnapshotTarget({
    meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [
      { argv: [...journal!], code: 0, stdout: "", stderr: "No journal files were found.\n" },
      {
        argv: [...DMESG_COMMANDS[0]!],
        code: 0,
        stdout: fixture("linux-6.18-memcg-nix-build.dmesg-iso.txt"),
        stderr: "",
      },
    ],
    paths: {},
    files: {},
  });
  const log = await readKernelLog(target);
  assert.equal(log.source, "dmesg");
  assert.equal(parseOomLog(log.text).kills[0]?.pid, 12732);
  assert.match(log.reasons[0]!, /found no kernel messages/);
});

Deno.test("readKernelLog() says why when neither journal nor dmesg can be read", async () => {
  const target = new SnapshotTarget({
    meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [
      { argv: [...JOURNAL_COMMANDS[0]!], code: 127, stdout: "", stderr: "", failure: "not-found" },
      {
        argv: [...DMESG_COMMANDS[0]!],
        code: 1,
        stdout: "",
        stderr: "dmesg: read kernel buffer failed: Operation not permitted\n",
      },
      {
        argv: [...DMESG_COMMANDS[1]!],
        code: 1,
        stdout: "",
        stderr: "dmesg: read kernel buffer failed: Operation not permitted\n",
      },
    ],
    paths: {},
    files: {},
  });
  const log = await readKernelLog(target);
  assert.equal(log.source, "none");
  assert.deepEqual(log.reasons, [
    "'journalctl' is not installed or not on PATH",
    "'dmesg --time-format iso' exited with 1: dmesg: read kernel buffer failed: Operation not permitted",
    "'dmesg' exited with 1: dmesg: read kernel buffer failed: Operation not permitted",
  ]);
});

Deno.test("readKernelLog() reads this machine's kernel log (no journald here: dmesg)", async () => {
  const log = await readKernelLog(new LocalTarget());
  assert.notEqual(log.source, "none");
  assert.ok(log.text.length > 0);
});
