import assert from "node:assert/strict";
import {
  defaultStatePath,
  parseHealthState,
  readHealthState,
  writeHealthState,
} from "../lib/health_state.ts";

const HOST = { bootId: "c3ec5d1f-faf2-41fc", oomKills: 4, checkedAt: "2026-11-25T19:00:00.000Z" };

Deno.test("writeHealthState() then readHealthState() round-trips every host", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/deep/er/state.json`;
    const state = {
      version: 1 as const,
      hosts: { localhost: HOST, "root@b2": { ...HOST, oomKills: 0 } },
    };
    await writeHealthState(path, state);
    assert.deepEqual(await readHealthState(path), { state });
    // Only the file itself is left: the atomic write's temporary file is gone.
    assert.deepEqual([...Deno.readDirSync(`${dir}/deep/er`)].map((e) => e.name), ["state.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readHealthState() treats a corrupt file as empty and says what is wrong", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cases: [string, RegExp][] = [
      ["{not json", /not valid JSON/],
      ['{"version":2,"hosts":{}}', /version/],
      [
        '{"version":1,"hosts":{"h":{"bootId":"b","oomKills":-1,"checkedAt":"2026-11-25T00:00:00Z"}}}',
        /hosts\.h\.oomKills/,
      ],
      [
        '{"version":1,"hosts":{"h":{"bootId":"b","oomKills":1,"checkedAt":"yesterday"}}}',
        /not an ISO 8601 time/,
      ],
    ];
    for (const [text, why] of cases) {
      await Deno.writeTextFile(`${dir}/s.json`, text);
      const read = await readHealthState(`${dir}/s.json`);
      assert.deepEqual(read.state, { version: 1, hosts: {} });
      assert.match(read.problem ?? "", why);
      assert.match(read.problem ?? "", new RegExp(`${dir}/s\\.json`));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readHealthState() of a missing file is an empty state without a problem", async () => {
  assert.deepEqual(await readHealthState("/nonexistent/nbr/state.json"), {
    state: { version: 1, hosts: {} },
  });
});

Deno.test("writeHealthState() names the file and the way out when it cannot write", async () => {
  await assert.rejects(
    writeHealthState("/proc/nbr-health/state.json", { version: 1, hosts: {} }),
    /Cannot write the state file \/proc\/nbr-health\/state\.json: .*\(use --state-file or --no-state\)/,
  );
});

Deno.test("defaultStatePath() is under /var/lib for root and under XDG state for others", () => {
  assert.equal(
    defaultStatePath({ uid: 0, env: { HOME: "/root" } }),
    "/var/lib/nix-builder-runbook/health-state.json",
  );
  assert.equal(
    defaultStatePath({ uid: 1000, env: { HOME: "/home/a", XDG_STATE_HOME: "/x" } }),
    "/x/nix-builder-runbook/health-state.json",
  );
  assert.throws(() => parseHealthState("[]", "f"), /Cannot parse f: top level/);
});
