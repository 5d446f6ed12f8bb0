/**
 * Property tests of the OOM-kill reader (`lib/kernel_log.ts`): any log text, in any mix of the
 * prefixes and kill formats it knows, gives kills on lines that exist, never an exception; a kill
 * printed in each kernel format reads back with its pid, process, uid and sizes.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { attributeToNix, parseOomLog } from "../../lib/kernel_log.ts";
import { lineCount, linesOf, RUNS } from "./_fuzz.ts";

const FRAGMENTS = [
  "[  820.547491] ",
  "[Thu Dec  7 00:05:15 2017] ",
  "2026-11-25T18:52:54,551465+00:00 ",
  "Aug 20 13:44:01 host kernel: ",
  "<6>",
  "machine # ",
  '{"MESSAGE":"',
  '","_TRANSPORT":"kernel","__REALTIME_TIMESTAMP":"1700000000000000"}',
  "tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
  "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/a,task_memcg=/a>,task=tail,pid=1,uid=999",
  "Memory cgroup out of memory: Killed process ",
  "Out of memory: Killed process ",
  "Kill process 5 (cc1) score 900 or sacrifice child",
  "Killed process ",
  "12732 (tail) ",
  "total-vm:202888kB, anon-rss:200320kB, file-rss:1196kB, shmem-rss:0kB",
  ", UID:999 pgtables:424kB oom_score_adj:0",
  "oom_reaper: reaped process 12732 (tail), now anon-rss:0kB",
  "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
  "[  12732]   999 12732    50722    50379   434176        0             0 tail",
  "Task in /a killed as a result of limit of /a",
  "systemd-oomd[1]: Killed /system.slice/nix-daemon.service due to memory pressure for /x being 80.00% > 50.00% for > 20s with reclaim activity",
  'earlyoom[1]: sending SIGKILL to process 42 uid 30001 "cc1plus": oom_score 900, VmRSS 2048 MiB',
  'killing process 42 "ld" with signal 9: badness 900, VmRSS 10 MiB',
  "nix-daemon.service: A process of this unit has been killed by the OOM killer.",
  "(",
  ")",
  "999999999999999999999",
];

Deno.test("parseOomLog() never throws and every kill is on a line that exists", () => {
  fc.assert(
    fc.property(linesOf(FRAGMENTS, { maxLines: 10, maxPieces: 5 }), (text) => {
      const scan = parseOomLog(text);
      const lines = lineCount(text);
      assert.equal(scan.lines, lines);
      assert.ok(scan.invocations >= 0);
      for (const kill of scan.kills) {
        assert.ok(kill.line >= 1 && kill.line <= lines, `kill at line ${kill.line} of ${lines}`);
        assert.ok(!kill.message.includes("\n"));
        attributeToNix(kill, { buildUids: new Set([30001]) });
      }
    }),
    { numRuns: RUNS },
  );
});

const kill = fc.record({
  pid: fc.integer({ min: 1, max: 4194304 }),
  name: fc.stringMatching(/^[A-Za-z0-9_.+-][A-Za-z0-9_.+ ()-]{0,14}$/),
  uid: fc.integer({ min: 0, max: 65535 }),
  vm: fc.nat(1 << 30),
  anon: fc.nat(1 << 30),
  file: fc.nat(1 << 20),
  shmem: fc.nat(1 << 20),
  adj: fc.integer({ min: -1000, max: 1000 }),
  memcg: fc.boolean(),
  prefix: fc.constantFrom("", "[  820.547491] ", "Aug 20 13:44:01 nixos kernel: ", "<3>"),
});

Deno.test("parseOomLog() reads back a kill printed in the 4.19+ and the 3.10 formats", () => {
  fc.assert(
    fc.property(kill, fc.boolean(), (k, modern) => {
      const what = k.memcg ? "Memory cgroup out of memory" : "Out of memory";
      const text = modern
        ? `${k.prefix}${what}: Killed process ${k.pid} (${k.name}) total-vm:${k.vm}kB, ` +
          `anon-rss:${k.anon}kB, file-rss:${k.file}kB, shmem-rss:${k.shmem}kB, UID:${k.uid} ` +
          `pgtables:424kB oom_score_adj:${k.adj}`
        : `${k.prefix}${what}: Kill process ${k.pid} (${k.name}) score 900 or sacrifice child\n` +
          `${k.prefix}Killed process ${k.pid} (${k.name}) total-vm:${k.vm}kB, anon-rss:${k.anon}kB, ` +
          `file-rss:${k.file}kB`;
      const [got, ...rest] = parseOomLog(text).kills;
      assert.equal(rest.length, 0);
      assert.equal(got?.pid, k.pid);
      assert.equal(got?.process, k.name);
      assert.equal(got?.anonRssBytes, k.anon * 1024);
      assert.equal(got?.totalVmBytes, k.vm * 1024);
      assert.equal(got?.scope, k.memcg ? "memcg" : "global");
      if (modern) {
        assert.equal(got?.uid, k.uid);
        assert.equal(got?.oomScoreAdj, k.adj);
        assert.equal(got?.shmemRssBytes, k.shmem * 1024);
      }
    }),
    { numRuns: RUNS },
  );
});
