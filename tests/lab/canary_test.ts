import assert from "node:assert/strict";
import { labTest } from "./lab.ts";
import { canaryElf, canaryExpression, writeCanaryElf } from "./canary.ts";
import { run } from "./_run.ts";

labTest("canaryElf() programs print ok and create the file named by their argument", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-canary-" });
  try {
    for (const system of ["x86_64-linux", "aarch64-linux"] as const) {
      const path = await writeCanaryElf(dir, system);
      // Run through qemu explicitly so the test does not depend on binfmt_misc.
      const argv = system === "aarch64-linux" ? ["qemu-aarch64-static", path] : [path];
      const plain = await run(argv, { timeoutMs: 10_000 });
      assert.deepEqual([plain.code, plain.stdout], [0, "ok\n"]);
      const made = await run([...argv, `${dir}/out-${system}`], { timeoutMs: 10_000 });
      assert.equal(made.code, 0);
      assert.equal(await Deno.readTextFile(`${dir}/out-${system}`), "ok\n");
      const failed = await run([...argv, `${dir}/missing/out`], { timeoutMs: 10_000 });
      assert.equal(failed.code, 1);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("canaryElf() builds a 64-bit little-endian executable for the machine asked", () => {
  for (const [system, machine] of [["x86_64-linux", 0x3e], ["aarch64-linux", 0xb7]] as const) {
    const elf = canaryElf(system);
    const view = new DataView(elf.buffer);
    assert.deepEqual([...elf.slice(0, 6)], [0x7f, 0x45, 0x4c, 0x46, 2, 1]);
    assert.equal(view.getUint16(16, true), 2);
    assert.equal(view.getUint16(18, true), machine);
    assert.equal(view.getBigUint64(24, true), 0x400078n);
    assert.ok(elf.length < 300);
  }
});

Deno.test("canaryExpression() rejects an sh canary for aarch64 and a nonce with quotes", () => {
  assert.throws(
    () => canaryExpression({ system: "aarch64-linux", nonce: "x" }),
    /pass a canary ELF/,
  );
  assert.throws(
    () => canaryExpression({ system: "x86_64-linux", nonce: 'a"b' }),
    /Cannot use nonce/,
  );
  const expr = canaryExpression({
    system: "aarch64-linux",
    nonce: "n1",
    builder: "/tmp/my dir/elf",
  });
  assert.match(
    expr,
    /builtins\.path \{ path = \/\. \+ "\/tmp\/my dir\/elf"; name = "canary-aarch64-elf"; \}/,
  );
});
