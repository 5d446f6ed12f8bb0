import assert from "node:assert/strict";
import { labTest } from "./lab.ts";
import { withGlobalLock } from "./lock.ts";
import { sleep } from "./_run.ts";

labTest("withGlobalLock() runs holders of one name one at a time", async () => {
  const events: string[] = [];
  const holder = (tag: string) =>
    withGlobalLock("lab-lock-test", async () => {
      events.push(`${tag}+`);
      await sleep(50);
      events.push(`${tag}-`);
    });
  await Promise.all([holder("a"), holder("b"), holder("c")]);
  assert.deepEqual(events, ["a+", "a-", "b+", "b-", "c+", "c-"]);
});

labTest(
  "withGlobalLock() is re-entrant along one call chain and excludes other processes",
  async () => {
    const inner = await withGlobalLock(
      "lab-lock-test",
      () => withGlobalLock("lab-lock-test", () => "nested"),
    );
    assert.equal(inner, "nested");
    await withGlobalLock("lab-lock-test", async () => {
      const other = await new Deno.Command("flock", {
        args: ["--exclusive", "--nonblock", "/tmp/nbr-lab/locks/lab-lock-test.lock", "true"],
      }).output();
      assert.equal(other.code, 1);
    });
    await assert.rejects(
      withGlobalLock("../etc", () => 1),
      /Cannot take lock/,
    );
  },
);

labTest(
  "withGlobalLock() gives up after its time-out while another process holds the lock",
  async () => {
    const other = new Deno.Command("flock", {
      args: ["--exclusive", "/tmp/nbr-lab/locks/lab-lock-test.lock", "sleep", "5"],
    }).spawn();
    try {
      await sleep(200);
      await assert.rejects(
        withGlobalLock("lab-lock-test", () => 1, { timeoutMs: 1000 }),
        /Cannot take lock 'lab-lock-test': still held after 1000 ms/,
      );
    } finally {
      other.kill("SIGKILL");
      await other.status;
    }
  },
);
