/**
 * SIGINT and SIGTERM at random points of every `--apply`: check_binfmt's registration (on real
 * binfmt_misc, in a private user namespace with its own instance, kernel 6.7+) and oom_mitigate's
 * nix.conf edit (`--mitigate serialize --persist`, in a private NIX_CONF_DIR). 24 kills each that
 * reach a live run, half SIGINT and half SIGTERM, a quarter of them during start-up and the rest
 * spread over the apply itself. After each kill the machine holds the old state or the new one,
 * never a mix; the next `--revert` (or `--apply`) finishes or undoes what the killed run started.
 *
 * oom_mitigate's zram swap under SIGKILL and SIGTERM is covered by tests/oom_mitigate_test.ts; both
 * signals handled here go through the same handler in `runMain` as its SIGTERM.
 */

import assert from "node:assert/strict";
import { localFileOps, sha256Hex, StateStore } from "../lib/atomic_file.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const KILLS = 24;
const BINFMT_CONF = "/usr/lib/binfmt.d/qemu-aarch64.conf";
const ENTRY = "/proc/sys/fs/binfmt_misc/qemu-aarch64";
const decoder = new TextDecoder();

function namespacedBinfmt(): boolean {
  const [major = 0, minor = 0] = Deno.osRelease().split(/[.-]/).map(Number);
  let qemu = false;
  try {
    qemu = Deno.statSync(BINFMT_CONF).isFile;
  } catch {
    // qemu-user-static not installed
  }
  return Deno.uid() === 0 && qemu && (major > 6 || (major === 6 && minor >= 7));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the state directory's lock names `pid` (the run is inside its apply). */
async function holdsLock(stateDir: string, pid: number): Promise<boolean> {
  for (let t = 0; t < 4000; t++) {
    const owner = await Deno.readTextFile(`${stateDir}/lock`).catch(() => "");
    if (owner.includes(`pid ${pid} `)) return true;
    await sleep(2);
  }
  return false;
}

/** Kills a run at a random point: during start-up (i % 4 === 3) or during the apply. */
async function killSomewhere(
  child: Deno.ChildProcess,
  i: number,
  stateDir: string,
  work: { startupMs: number; applyMs: number },
  signal: Deno.Signal,
): Promise<{ signal: Deno.Signal; phase: string; code: number }> {
  let phase: string;
  if (i % 4 === 3) {
    await sleep(Math.random() * work.startupMs);
    phase = "start-up";
  } else {
    await holdsLock(stateDir, child.pid);
    await sleep(Math.random() * work.applyMs);
    phase = "apply";
  }
  try {
    child.kill(signal);
  } catch {
    phase += " (already done)";
  }
  const status = await child.status;
  return { signal, phase, code: status.code };
}

/** Records that a killed run left open, for the tally. */
async function openRecords(stateDir: string, tool: string): Promise<string[]> {
  const store = await StateStore.openExisting(localFileOps(), stateDir);
  if (store === null) return [];
  return (await store.list({ tool, status: ["applying"] })).map((r) =>
    String(r.detail.action ?? r.detail.step ?? r.kind)
  );
}

Deno.test({
  name:
    "check_binfmt --apply killed by SIGINT/SIGTERM at random points (24 times) leaves the entry registered or absent, and --revert cleans up",
  ignore: !namespacedBinfmt(),
  async fn() {
    const stateDir = await Deno.makeTempDir({ prefix: "nbr-kill-binfmt-" });
    // A private user + mount namespace holding its own binfmt_misc instance for the whole test.
    const holder = new Deno.Command("unshare", {
      args: [
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && echo ready && exec cat",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = holder.stdout.getReader();
    const ready = decoder.decode((await reader.read()).value);
    reader.releaseLock();
    const inside = (argv: string[]) =>
      new Deno.Command("nsenter", {
        args: [
          "--target",
          String(holder.pid),
          "--user",
          "--mount",
          "--preserve-credentials",
          "--",
          ...argv,
        ],
        env: { NO_COLOR: "1", NIX_CONFIG: "extra-platforms = aarch64-linux" },
        stdout: "piped",
        stderr: "piped",
      });
    const script = (...args: string[]) =>
      inside([Deno.execPath(), "run", "-A", `${ROOT}scripts/check_binfmt.ts`, ...args]);
    const applyArgs = [
      "--apply",
      "--system",
      "aarch64-linux",
      "--no-smoke",
      "--state-dir",
      stateDir,
    ];
    const revertArgs = ["--revert", "--state-dir", stateDir];
    /** The namespace's binfmt_misc: entry names and qemu-aarch64's file. */
    const state = async () => {
      const out = await inside([
        "sh",
        "-c",
        `ls /proc/sys/fs/binfmt_misc; echo @@; cat ${ENTRY} 2>/dev/null || true`,
      ]).output();
      const [names = "", entry = ""] = decoder.decode(out.stdout).split("@@\n");
      return { names: names.split("\n").filter((n) => n !== "").sort(), entry };
    };
    const outcomes = new Map<string, number>();
    try {
      assert.equal(ready, "ready\n", "the namespace mounted its own binfmt_misc");
      const old = await state();
      assert.deepEqual(old, { names: ["register", "status"], entry: "" });

      // Calibrate: how long start-up and the apply take.
      const started = performance.now();
      const calibration = script(...applyArgs).spawn();
      assert.ok(await holdsLock(stateDir, calibration.pid));
      const locked = performance.now();
      assert.equal((await calibration.output()).code, 0);
      const work = { startupMs: locked - started, applyMs: performance.now() - locked };
      const fresh = await state();
      assert.deepEqual(fresh.names, ["qemu-aarch64", "register", "status"]);
      assert.match(
        fresh.entry,
        /^enabled\ninterpreter \/usr\/libexec\/qemu-binfmt\/aarch64-binfmt-P\n/,
      );
      assert.equal((await script(...revertArgs).output()).code, 0);
      assert.deepEqual(await state(), old);

      // Until KILLS runs were killed alive (half by each signal); a kill that arrives after the
      // run ended (exit 0) does not count.
      const landed = { SIGINT: 0, SIGTERM: 0 };
      for (let i = 0; landed.SIGINT + landed.SIGTERM < KILLS; i++) {
        assert.ok(i < KILLS * 4, `only ${JSON.stringify(landed)} of ${i} kills landed`);
        const signal = landed.SIGINT <= landed.SIGTERM ? "SIGINT" : "SIGTERM";
        const child = script(...applyArgs).spawn();
        const killed = await killSomewhere(child, i, stateDir, work, signal);
        if (killed.code !== 0) landed[signal]++;
        const now = await state();
        const which = now.entry === "" ? "old" : now.entry === fresh.entry ? "new" : "mixed";
        assert.notEqual(which, "mixed", `kill ${i} (${killed.signal}): entry is ${now.entry}`);
        assert.deepEqual(
          now.names,
          which === "old" ? old.names : fresh.names,
          `kill ${i}: entries`,
        );
        assert.ok([0, 3, 130, 143].includes(killed.code), `kill ${i}: exit ${killed.code}`);
        const open = await openRecords(stateDir, "check_binfmt");
        const key = `${killed.signal} in ${killed.phase}: ${which} state` +
          (open.length > 0 ? `, record left applying (${open.join(",")})` : "");
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);

        // The next run finishes it: --revert, or --apply again then --revert.
        if (i % 2 === 1) {
          const again = await script(...applyArgs).output();
          assert.equal(again.code, 0, decoder.decode(again.stdout) + decoder.decode(again.stderr));
          assert.deepEqual(await state(), fresh, `kill ${i}: --apply after the kill`);
        }
        const revert = await script(...revertArgs).output();
        assert.equal(revert.code, 0, decoder.decode(revert.stdout) + decoder.decode(revert.stderr));
        assert.deepEqual(await state(), old, `kill ${i}: --revert restores the old state`);
        assert.deepEqual(
          await openRecords(stateDir, "check_binfmt"),
          [],
          `kill ${i}: records closed`,
        );
      }
    } finally {
      holder.kill("SIGKILL");
      await holder.status;
      await holder.stdin.close().catch(() => {});
      await holder.stderr.cancel().catch(() => {});
      await holder.stdout.cancel().catch(() => {});
      await Deno.remove(stateDir, { recursive: true });
      console.log([...outcomes].map(([k, v]) => `${v}× ${k}`).join("; "));
    }
  },
});

const ORIGINAL = "# hand-written\nsandbox = false\nmax-jobs = 8 # many\ncores = 0\n" +
  "substituters = https://cache.nixos.org\n";

Deno.test({
  name:
    "oom_mitigate --apply (serialize --persist) killed by SIGINT/SIGTERM at random points (24 times) leaves nix.conf old or new, and the next run repairs",
  ignore: Deno.uid() !== 0,
  async fn() {
    const confDir = await Deno.makeTempDir({ prefix: "nbr-kill-nixconf-" });
    const stateDir = `${confDir}/state`;
    const conf = `${confDir}/nix.conf`;
    await Deno.writeTextFile(conf, ORIGINAL);
    const sha = async () => await sha256Hex(await Deno.readFile(conf));
    const oldSha = await sha();
    const command = (...args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}scripts/oom_mitigate.ts`, "--json", ...args],
        cwd: ROOT,
        env: { NO_COLOR: "1", NIX_CONF_DIR: confDir, NIX_USER_CONF_FILES: "" },
        stdout: "piped",
        stderr: "piped",
      });
    const applyArgs = [
      "--mitigate",
      "serialize",
      "--persist",
      "--apply",
      "--max-jobs",
      "1",
      "--cores",
      "2",
      "--state-dir",
      stateDir,
    ];
    const revertArgs = ["--revert", "--state-dir", stateDir];
    const leftovers = () =>
      [...Deno.readDirSync(confDir)].map((e) => e.name).filter((n) => n.includes(".nbr-tmp-"));
    const outcomes = new Map<string, number>();
    try {
      const started = performance.now();
      const calibration = command(...applyArgs).spawn();
      assert.ok(await holdsLock(stateDir, calibration.pid));
      const locked = performance.now();
      const first = await calibration.output();
      assert.equal(first.code, 0, decoder.decode(first.stdout));
      const work = { startupMs: locked - started, applyMs: performance.now() - locked };
      const newSha = await sha();
      assert.notEqual(newSha, oldSha);
      assert.match(await Deno.readTextFile(conf), /^max-jobs = 1 # many$/m);
      assert.equal((await command(...revertArgs).output()).code, 0);
      assert.equal(await sha(), oldSha);

      const landed = { SIGINT: 0, SIGTERM: 0 };
      for (let i = 0; landed.SIGINT + landed.SIGTERM < KILLS; i++) {
        assert.ok(i < KILLS * 4, `only ${JSON.stringify(landed)} of ${i} kills landed`);
        const signal = landed.SIGINT <= landed.SIGTERM ? "SIGINT" : "SIGTERM";
        const child = command(...applyArgs).spawn();
        const killed = await killSomewhere(child, i, stateDir, work, signal);
        if (killed.code !== 0) landed[signal]++;
        const now = await sha();
        const which = now === oldSha ? "old" : now === newSha ? "new" : "mixed";
        assert.notEqual(
          which,
          "mixed",
          `kill ${i} (${killed.signal}): nix.conf is neither old nor new`,
        );
        assert.ok([0, 3, 130, 143].includes(killed.code), `kill ${i}: exit ${killed.code}`);
        const open = await openRecords(stateDir, "oom_mitigate");
        const key = `${killed.signal} in ${killed.phase}: ${which} nix.conf` +
          (open.length > 0 ? ", record left applying" : "");
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);

        if (i % 2 === 1) {
          const again = await command(...applyArgs).output();
          assert.equal(again.code, 0, decoder.decode(again.stdout));
          assert.equal(await sha(), newSha, `kill ${i}: --apply after the kill`);
        }
        const revert = await command(...revertArgs).output();
        assert.equal(revert.code, 0, decoder.decode(revert.stdout));
        assert.equal(await sha(), oldSha, `kill ${i}: --revert restores nix.conf byte for byte`);
        assert.deepEqual(await openRecords(stateDir, "oom_mitigate"), [], `kill ${i}: records`);
        assert.deepEqual(leftovers(), [], `kill ${i}: no temp file left next to nix.conf`);
      }
    } finally {
      await Deno.remove(confDir, { recursive: true });
      console.log([...outcomes].map(([k, v]) => `${v}× ${k}`).join("; "));
    }
  },
});
