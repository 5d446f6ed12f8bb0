import assert from "node:assert/strict";
import { labTest, startLab } from "./lab/lab.ts";

const DOCTOR = new URL("../scripts/doctor.ts", import.meta.url).pathname;

interface Report {
  status: string;
  findings: { id: string; status: string; summary: string; fix?: string }[];
  data: { role: string; steps: { step: string; page: string }[] };
}

// Builders that are hosts of their own, as in production ("global" emulation keeps them in this
// machine's user namespace): the default lab puts root in a user namespace, like a container, where
// the kernel log is unreadable and the OOM check rightly says it cannot tell (health_lab_test.ts).
labTest("doctor on a controller checks config, offload and each builder's health", async () => {
  await using lab = await startLab({ builders: 2, emulation: "global" });
  const run = await lab.controller.exec(["deno", "run", "-A", DOCTOR, "--json"], {
    timeoutMs: 120_000,
  });
  const report: Report = JSON.parse(run.stdout);
  assert.equal(report.data.role, "controller");
  assert.deepEqual(report.data.steps.map((s) => s.step), [
    "config",
    "offload",
    "health ssh://builder1",
    "health ssh://builder2",
  ]);
  // Each builder is verified (canary built there); on a busy test machine the only other offload
  // finding allowed is its load warning, which replaces the "verified" line.
  for (const builder of ["builder1", "builder2"]) {
    const offload = report.findings.filter((f) =>
      f.id.startsWith("offload/") && f.summary.includes(`ssh://${builder}`)
    );
    assert.ok(offload.length > 0, `no offload finding for ${builder}`);
    for (const f of offload) {
      assert.ok(["offload/verified", "offload/load-high"].includes(f.id), `${f.id}: ${f.summary}`);
    }
  }
  assert.ok(report.findings.some((f) => f.id === "binfmt/entry" && f.status === "ok"));
  assert.equal(report.findings.filter((f) => f.status === "critical").length, 0);
  assert.ok(run.code === 0 || run.code === 1, run.stderr);
});

labTest(
  "doctor names the offload and health pages when a builder is down, and exits 2",
  async () => {
    await using lab = await startLab({ builders: 2 });
    await lab.builder("builder1").setFault("down");
    const run = await lab.controller.exec(["deno", "run", "-A", DOCTOR, "--json", "--no-canary"], {
      timeoutMs: 120_000,
    });
    assert.equal(run.code, 2, run.stderr);
    const report: Report = JSON.parse(run.stdout);
    const down = report.findings.filter((f) => /builder1/.test(f.summary) && f.status !== "ok");
    assert.ok(down.some((f) => f.id.startsWith("offload/") && f.status === "critical"));
    const health = down.find((f) => f.id === "health/unreachable");
    assert.equal(health?.status, "unknown");
    assert.match(health?.fix ?? "", /runbook\/verify_offload\.md/);
    // builder2 is still checked in full.
    assert.ok(
      report.findings.some((f) => f.id === "health/store-space" && /builder2/.test(f.summary)),
    );
  },
);

labTest("doctor --host on a builder runs its health check and prints a summary table", async () => {
  await using lab = await startLab({ builders: 1, emulation: "global" });
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", DOCTOR, "--host", "builder1"],
    env: { ...lab.env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.code <= 1, new TextDecoder().decode(out.stderr));
  assert.match(text, /^doctor on builder1: (OK|WARNING)/);
  assert.match(text, /Summary \(builder\)\nstep +status +problems +open\nconfig +OK/);
  assert.match(text, /\nhealth +(OK|WARNING)/);
});
