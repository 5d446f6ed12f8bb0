/**
 * `verify_offload --explain`: Nix's choice of builder replayed. The rules on their own (from Nix's
 * build-remote), the derivation read from Nix 2.8's real `nix show-derivation`, busy slots read from
 * a real `/proc/locks`; then in the lab, the replay against what Nix itself does with the same
 * derivation while a builder's slots are really held.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  busySlots,
  explainChoice,
  type LocalAbility,
  parseDerivationShow,
  slotLockPath,
} from "../lib/explain.ts";
import { parseMachines } from "../lib/machines.ts";
import { labTest, startLab } from "./lab/lab.ts";

const FIXTURES = new URL("./fixtures/verify_offload/", import.meta.url).pathname;
const SCRIPT = new URL("../scripts/verify_offload.ts", import.meta.url).pathname;

const CONTROLLER: LocalAbility = {
  maxJobs: 0,
  system: "x86_64-linux",
  extraPlatforms: [],
  systemFeatures: ["benchmark", "big-parallel", "kvm", "nixos-test"],
};

function needs(system: string, requiredFeatures: string[] = [], preferLocalBuild = false) {
  return { drvPath: "/nix/store/x-demo.drv", system, requiredFeatures, preferLocalBuild };
}

Deno.test("parseDerivationShow() reads Nix 2.8's show-derivation, plain and structured attrs", async () => {
  for (const kind of ["plain", "structured"]) {
    const text = await Deno.readTextFile(`${FIXTURES}nix-2.8-show-derivation-${kind}.json`);
    const d = parseDerivationShow(text);
    assert.match(d.drvPath, /^\/nix\/store\/[0-9a-z]{32}-explain-me\.drv$/);
    assert.equal(d.system, "aarch64-linux");
    assert.deepEqual(d.requiredFeatures, ["kvm", "big-parallel"]);
    assert.equal(d.preferLocalBuild, true, kind);
  }
  assert.throws(() => parseDerivationShow("{}"), /names no derivation/);
});

Deno.test("busySlots() counts slot files held by a write lock in a real /proc/locks", async () => {
  const text = await Deno.readTextFile(`${FIXTURES}proc-locks-held-slot.txt`);
  const inode = Number(/^inode (\d+)$/m.exec(text)?.[1]);
  assert.equal(busySlots(text, [inode]), 1);
  assert.equal(busySlots(text, [inode + 1]), 0);
  assert.equal(
    slotLockPath("ssh://nixremote@builder1", 1),
    "/nix/var/nix/current-load/ssh:__nixremote@builder1-1",
  );
});

Deno.test("explainChoice() picks the lowest load per speed factor, then the faster, then the less loaded", () => {
  const { machines } = parseMachines(
    "ssh://slow x86_64-linux - 4 1\nssh://fast x86_64-linux - 4 4\nssh://arm aarch64-linux - 4 1\n",
    { version: "2.24.0" },
  );
  const idle = explainChoice(needs("x86_64-linux"), machines, {}, CONTROLLER);
  assert.equal(idle.chosen, "ssh://fast", "0/4 = 0/1: the higher speed factor wins the tie");
  assert.deepEqual(idle.machines.map((m) => m.verdict), ["eligible", "chosen", "unsuitable"]);
  assert.match(idle.machines[2]!.reasons[0]!, /does not build for x86_64-linux/);
  const loaded = explainChoice(needs("x86_64-linux"), machines, { "ssh://fast": 3 }, CONTROLLER);
  assert.equal(loaded.chosen, "ssh://slow", "0/1 < 3/4");
  assert.equal(loaded.summary, "built on ssh://slow");
});

Deno.test("explainChoice() honours mandatory features like Nix does", () => {
  const { machines } = parseMachines(
    "ssh://big x86_64-linux - 2 1 big-parallel big-parallel\nssh://any x86_64-linux - 2 1\n",
  );
  const plain = explainChoice(needs("x86_64-linux"), machines, {}, CONTROLLER);
  assert.equal(plain.chosen, "ssh://any");
  assert.match(
    plain.machines[0]!.reasons.join(),
    /only takes derivations that require all of its mandatory features \(big-parallel\)/,
  );
  const big = explainChoice(needs("x86_64-linux", ["big-parallel"]), machines, {}, CONTROLLER);
  assert.deepEqual(big.machines.map((m) => m.verdict), ["chosen", "unsuitable"]);
});

Deno.test("explainChoice() waits when every fitting machine is busy and the controller cannot build", () => {
  const { machines } = parseMachines("ssh://b1 x86_64-linux - 2 1\n");
  const e = explainChoice(needs("x86_64-linux"), machines, { "ssh://b1": 2 }, CONTROLLER);
  assert.equal(e.decision, "wait");
  assert.equal(e.machines[0]!.verdict, "busy");
  assert.match(e.machines[0]!.reasons[0]!, /all 2 of its slots are busy/);
});

Deno.test("explainChoice() fails with Nix's own words when no machine fits", async () => {
  const fits = await Deno.readTextFile(`${FIXTURES}nix-2.8-canary-no-machine-fits.txt`);
  const none = await Deno.readTextFile(`${FIXTURES}nix-2.8-canary-no-builders.txt`);
  const { machines } = parseMachines("ssh://b1 riscv64-linux - 2 1\n");
  const e = explainChoice(needs("x86_64-linux"), machines, {}, CONTROLLER);
  assert.equal(e.decision, "fail");
  // The summary quotes what Nix 2.8 really printed in the same situation.
  const quoted = /Nix prints "(.*)"$/.exec(e.summary)?.[1]?.split('" and "') ?? [];
  assert.equal(quoted.length, 2);
  for (const part of quoted) assert.ok(fits.includes(part), part);
  const empty = explainChoice(needs("x86_64-linux"), [], {}, CONTROLLER);
  const said = /Nix prints "(.*)"$/.exec(empty.summary)?.[1] ?? "";
  assert.ok(said !== "" && none.includes(said), said);
});

Deno.test("explainChoice() builds locally with preferLocalBuild or when nothing fits but it can", () => {
  const local = { ...CONTROLLER, maxJobs: 4 };
  const { machines } = parseMachines("ssh://b1 x86_64-linux - 2 1\n");
  assert.equal(
    explainChoice(needs("x86_64-linux", [], true), machines, {}, local).decision,
    "local",
  );
  assert.equal(
    explainChoice(needs("x86_64-linux", [], true), machines, {}, CONTROLLER).decision,
    "remote",
  );
  const arm = parseMachines("ssh://arm aarch64-linux - 2 1\n").machines;
  const e = explainChoice(needs("x86_64-linux"), arm, {}, local);
  assert.equal(e.decision, "local");
  assert.match(e.summary, /no machine builds x86_64-linux, and this machine can/);
});

labTest(
  "verify_offload --explain names the builder Nix then really uses, busy slots included",
  async () => {
    await using lab = await startLab({ builders: 2 });
    const expr = (n: string) =>
      `derivation { name = "explain-${n}"; system = "x86_64-linux"; builder = "/bin/sh"; ` +
      `args = [ "-c" "echo ${n} > $out" ]; }`;
    const nonce = crypto.randomUUID().slice(0, 8);
    const drv = (await lab.controller.exec(["nix-instantiate", "-E", expr(nonce)])).stdout.trim();
    assert.match(drv, /\.drv$/);
    // Hold both of builder1's slots the way Nix does (flock), then ask, then build for real.
    const slots = [0, 1].map((i) => slotLockPath("ssh://builder1", i));
    const stop = `${lab.dir}/release-slots`;
    const holder = lab.controller.exec([
      "sh",
      "-c",
      'mkdir -p "${1%/*}"; touch "$1" "$2"; ' +
      'exec flock -x "$1" flock -x "$2" sh -c \'while [ ! -e "$1" ]; do sleep 0.1; done\' sh "$3"',
      "sh",
      ...slots,
      stop,
    ], { timeoutMs: 40_000 });
    try {
      let held = false;
      for (let i = 0; i < 50 && !held; i++) {
        const locks = await Deno.readTextFile("/proc/locks");
        const inodes = await lab.controller.exec(["stat", "-c", "%i", ...slots]);
        held = busySlots(locks, inodes.stdout.trim().split("\n").map(Number)) === 2;
        if (!held) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(held, "the slots are not held");
      const explained = await lab.controller.exec(
        [Deno.execPath(), "run", "-A", SCRIPT, "--json", "--explain", drv],
        { cwd: "/tmp", timeoutMs: 60_000 },
      );
      assert.equal(explained.code, 0, explained.stderr);
      const report = JSON.parse(explained.stdout);
      const e = report.data.explanation;
      assert.equal(e.decision, "remote");
      assert.equal(e.chosen, "ssh://builder2");
      assert.deepEqual(
        e.machines.map((
          m: { builder: string; verdict: string; load: number },
        ) => [m.builder, m.verdict, m.load]),
        [["ssh://builder1", "busy", 2], ["ssh://builder2", "chosen", 0]],
      );
      const built = await lab.controller.exec(["nix-build", "--no-out-link", drv], {
        timeoutMs: 60_000,
      });
      assert.equal(built.code, 0, built.stderr);
      assert.match(built.stderr, new RegExp(`building '${drv}' on 'ssh://builder2'`));
    } finally {
      await Deno.writeTextFile(stop, "");
      await holder;
    }
  },
);

labTest(
  "verify_offload --explain reports a derivation no machine can take, as Nix then fails",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const expr = 'derivation { name = "needs-kvm"; system = "x86_64-linux"; builder = "/bin/sh"; ' +
      'requiredSystemFeatures = [ "kvm" ]; }';
    const drv = (await lab.controller.exec(["nix-instantiate", "-E", expr])).stdout.trim();
    const explained = await lab.controller.exec(
      [Deno.execPath(), "run", "-A", SCRIPT, "--explain", drv],
      { cwd: "/tmp", timeoutMs: 60_000, env: { NO_COLOR: "1" } },
    );
    assert.equal(explained.code, 2);
    assert.match(
      explained.stdout,
      /CRITICAL +offload\/explain-fail +needs-kvm\.drv: no machine builds x86_64-linux with \{kvm\}/,
    );
    assert.match(
      explained.stdout,
      /unsuitable ssh:\/\/builder1 \(0\/2 busy, speed 1\): it lacks the required features kvm/,
    );
    const built = await lab.controller.exec(["nix-build", "--no-out-link", drv], {
      timeoutMs: 60_000,
    });
    assert.equal(built.code, 1);
    assert.match(built.stderr, /Failed to find a machine for remote build!/);
    assert.match(built.stderr, /required \(system, features\): \(x86_64-linux, kvm\)/);
  },
);
