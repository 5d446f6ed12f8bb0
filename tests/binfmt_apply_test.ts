/**
 * What --apply plans for each starting state, from real captures (Debian's binfmt.d lines, live
 * entries); the live apply/revert cycles run in binfmt_lab_test.ts and binfmt_script_test.ts.
 */
import assert from "node:assert/strict";
import type { BinfmtFacts } from "../lib/binfmt.ts";
import { applyBinfmt, planBinfmtChanges } from "../lib/binfmt_apply.ts";
import { parseBinfmtD, parseBinfmtEntry } from "../lib/binfmt_entry.ts";
import { UsageError } from "../lib/errors.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";

const F = new URL("./fixtures/binfmt/", import.meta.url).pathname;
const read = (path: string) => Deno.readTextFileSync(`${F}${path}`);

function facts(over: Partial<BinfmtFacts> = {}): BinfmtFacts {
  return {
    host: "builder1",
    platform: { kind: "debian", systemd: false, machine: "x86_64" },
    binfmt: { state: "mounted", enabled: true, entries: [], errors: [] },
    nix: {
      ok: true,
      system: "x86_64-linux",
      extraPlatforms: ["aarch64-linux", "i686-linux"],
      sandbox: "false",
      sandboxPaths: [],
    },
    sources: [
      ...parseBinfmtD(read("sources/qemu-aarch64.conf"), "/usr/lib/binfmt.d/qemu-aarch64.conf"),
      ...parseBinfmtD(read("sources/qemu-arm.conf"), "/usr/lib/binfmt.d/qemu-arm.conf"),
    ],
    sourceErrors: [],
    interpreters: {},
    ...over,
  };
}

Deno.test("planBinfmtChanges() registers Debian's exact qemu-aarch64 line when no entry serves aarch64", () => {
  const { changes, problems } = planBinfmtChanges(facts(), {});
  assert.deepEqual(problems, []);
  assert.equal(changes.length, 1);
  const change = changes[0]!;
  assert.equal(change.action, "register");
  assert.equal(
    change.action === "register" && change.source,
    "/usr/lib/binfmt.d/qemu-aarch64.conf:1",
  );
  assert.match(
    change.action === "register" ? change.line : "",
    /^:qemu-aarch64:M:0:\\x7f\\x45.*:\/usr\/libexec\/qemu-binfmt\/aarch64-binfmt-P:OPF$/,
  );
});

Deno.test("planBinfmtChanges() mounts first, or switches binfmt_misc on, before registering", () => {
  assert.deepEqual(
    planBinfmtChanges(facts({ binfmt: { state: "not-mounted" } }), {}).changes.map((c) => c.action),
    ["mount", "register"],
  );
  assert.deepEqual(
    planBinfmtChanges(
      facts({ binfmt: { state: "mounted", enabled: false, entries: [], errors: [] } }),
      {},
    )
      .changes.map((c) => c.action),
    ["enable-status", "register"],
  );
});

Deno.test("planBinfmtChanges() re-enables a disabled entry instead of registering a second one", () => {
  const disabled = {
    ...parseBinfmtEntry(read("private/systemd-qemu-aarch64-disabled"), "qemu-aarch64"),
    enabled: false,
  };
  const { changes } = planBinfmtChanges(
    facts({ binfmt: { state: "mounted", enabled: true, entries: [disabled], errors: [] } }),
    {},
  );
  assert.deepEqual(changes, [{ action: "enable-entry", name: "qemu-aarch64" }]);
});

Deno.test("planBinfmtChanges() changes nothing when every system already runs (idempotent apply)", () => {
  const live = parseBinfmtEntry(read("proc/qemu-aarch64"), "qemu-aarch64");
  const plan = planBinfmtChanges(
    facts({ binfmt: { state: "mounted", enabled: true, entries: [live], errors: [] } }),
    {},
  );
  assert.deepEqual(plan, { changes: [], problems: [] });
});

Deno.test("planBinfmtChanges() reports a system no installed qemu file serves, and unknown systems", () => {
  const { changes, problems } = planBinfmtChanges(facts(), {
    systems: ["riscv64-linux", "wasm32-wasi"],
  });
  assert.deepEqual(changes, []);
  assert.deepEqual(problems, [
    {
      system: "riscv64-linux",
      reason:
        "no installed qemu binfmt.d file serves it (looked in /etc/binfmt.d, /run/binfmt.d, /usr/local/lib/binfmt.d, /usr/lib/binfmt.d)",
    },
    { system: "wasm32-wasi", reason: "no ELF identity known for it" },
  ]);
});

Deno.test("planBinfmtChanges() will not register over an existing entry of the same name", () => {
  const other = parseBinfmtEntry(read("proc/python3.11"), "qemu-aarch64");
  const { problems } = planBinfmtChanges(
    facts({ binfmt: { state: "mounted", enabled: true, entries: [other], errors: [] } }),
    {},
  );
  assert.match(problems[0]!.reason, /an entry named qemu-aarch64 exists already/);
});

Deno.test("planBinfmtChanges() gives up at once without binfmt_misc in the kernel", () => {
  const plan = planBinfmtChanges(facts({ binfmt: { state: "no-kernel-support" } }), {});
  assert.deepEqual(plan.changes, []);
  assert.match(plan.problems[0]!.reason, /modprobe binfmt_misc/);
});

Deno.test("applyBinfmt() refuses a snapshot with a UsageError (nothing can be changed there)", async () => {
  const snapshot = new SnapshotTarget({
    meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [],
    paths: {},
    files: {},
  });
  await assert.rejects(applyBinfmt(snapshot, { systems: ["aarch64-linux"] }), UsageError);
});
