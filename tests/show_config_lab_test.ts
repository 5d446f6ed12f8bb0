/**
 * show_config against the builder lab: a real controller (max-jobs = 0, machines file) and real
 * builders with their own sshd and nix.conf. The script runs inside the controller namespace, as a
 * user would run it there; where a finding predicts a build failure, the real build shows Nix's
 * own message for it.
 */

import assert from "node:assert/strict";
import { canaryExpression, newNonce } from "./lab/canary.ts";
import { type Controller, labTest, startLab } from "./lab/lab.ts";

const SCRIPT = new URL("../scripts/show_config.ts", import.meta.url).pathname;

interface Report {
  status: string;
  findings: { id: string; status: string; summary: string }[];
  data: {
    role: { value: string };
    reached: { label: string; reached: boolean; user?: string }[];
    daemon: { running: boolean; staleFiles?: string[] } | null;
  };
}

async function showConfig(
  controller: Controller,
  args: string[] = [],
): Promise<{ code: number; report: Report; stderr: string }> {
  const r = await controller.exec(["deno", "run", "-A", SCRIPT, "--json", ...args], {
    timeoutMs: 90_000,
  });
  let report: Report;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    throw new Error(`show_config printed no JSON (exit ${r.code}): ${r.stdout}${r.stderr}`);
  }
  return { code: r.code, report, stderr: r.stderr };
}

function problemIds(report: Report): string[] {
  return report.findings.filter((f) => f.status !== "ok").map((f) => f.id);
}

const plain = () => canaryExpression({ system: "x86_64-linux", nonce: newNonce() });

labTest(
  "show_config on the lab controller reaches its builder and finds the post's setup done right",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const { code, report } = await showConfig(lab.controller);
    assert.equal(code, 0, JSON.stringify(report.findings));
    assert.deepEqual(problemIds(report), []);
    assert.equal(report.data.role.value, "controller");
    assert.deepEqual(report.data.reached.map((r) => [r.reached, r.user]), [[true, "root"]]);
    assert.ok(report.findings.some((f) => f.id === "builder/checked"));
  },
);

labTest(
  "builder/feature-not-offered when the line claims kvm the builder lacks, and Nix fails that build",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    await builder.setMachine({ supportedFeatures: ["big-parallel", "kvm"] });
    const { code, report } = await showConfig(lab.controller);
    assert.equal(code, 2);
    const f = report.findings.find((x) => x.id === "builder/feature-not-offered");
    assert.match(
      f?.summary ?? "",
      /claims kvm, but ssh:\/\/builder1's system-features are benchmark, big-parallel, nixos-test/,
    );
    assert.ok(!report.findings.some((x) => x.id === "builder/checked"));
    const build = await lab.controller.nixBuild(
      canaryExpression({
        system: "x86_64-linux",
        nonce: newNonce(),
        requiredSystemFeatures: ["kvm"],
      }),
    );
    assert.notEqual(build.code, 0);
    assert.match(build.stderr, /with features \{kvm\} is required to build/);
  },
);

labTest(
  "builder/ssh-user-not-trusted when the controller logs in as an untrusted user",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.builders[0]!.setFault("untrusted-user");
    const { code, report } = await showConfig(lab.controller);
    assert.equal(code, 2);
    const f = report.findings.find((x) => x.id === "builder/ssh-user-not-trusted");
    assert.match(
      f?.summary ?? "",
      /the ssh user 'nixremote' is not in the builder's trusted-users \(root\)/,
    );
    const build = await lab.controller.nixBuild(plain());
    assert.notEqual(build.code, 0);
    assert.match(build.stderr, /not privileged|trusted|signature/);
  },
);

labTest(
  "root over ssh is trusted even when trusted-users leaves it out: no finding, and Nix builds there",
  async () => {
    // The false alarm this guards against was found on the lab: root opens the builder's store
    // itself ('auto' store), so trusted-users does not apply to it.
    await using lab = await startLab({ builders: 1 });
    await lab.builders[0]!.setNixConf({ "trusted-users": "nixremote" });
    const { report } = await showConfig(lab.controller);
    assert.ok(!report.findings.some((x) => x.id === "builder/ssh-user-not-trusted"));
    const build = await lab.controller.nixBuild(plain());
    assert.equal(build.code, 0, build.stderr);
  },
);

labTest(
  "builder/system-not-offered when the line claims aarch64-linux the builder's extra-platforms lack",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    if (!builder.emulates) return; // no emulation in this lab: nothing claimed
    await builder.setFault("no-extra-platforms");
    const { report } = await showConfig(lab.controller);
    const f = report.findings.find((x) => x.id === "builder/system-not-offered");
    assert.match(
      f?.summary ?? "",
      /claims aarch64-linux, but ssh:\/\/builder1 offers only x86_64-linux/,
    );
  },
);

labTest("show_config --host shows a builder's own view, as a builder", async () => {
  await using lab = await startLab({ builders: 1 });
  const { code, report } = await showConfig(lab.controller, [
    "--host",
    "builder1",
    "--role",
    "builder",
  ]);
  assert.equal(code, 0, JSON.stringify(report.findings));
  assert.equal(report.data.role.value, "builder");
  assert.deepEqual(problemIds(report), []);
});

labTest(
  "config/daemon-stale when a builder's nix.conf changed after its nix-daemon started",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    await builder.setFault("untrusted-user"); // runs a nix-daemon on the builder
    const fresh = await showConfig(lab.controller, [
      "--host",
      "root@builder1",
      "--role",
      "builder",
    ]);
    assert.equal(fresh.report.data.daemon?.running, true);
    assert.ok(!problemIds(fresh.report).includes("config/daemon-stale"));
    await new Promise((r) => setTimeout(r, 1100));
    await Deno.writeTextFile(builder.nixConfFile, "# edited after the daemon started\n", {
      append: true,
    });
    const stale = await showConfig(lab.controller, [
      "--host",
      "root@builder1",
      "--role",
      "builder",
    ]);
    assert.equal(stale.code, 1, JSON.stringify(stale.report.findings));
    assert.deepEqual(stale.report.data.daemon?.staleFiles, ["/etc/nix/nix.conf"]);
  },
);

labTest(
  "machines/builders-empty on a controller with 'builders =', and Nix's own failure for it",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.controller.setNixConf({ builders: "" });
    const { code, report } = await showConfig(lab.controller);
    assert.equal(code, 2);
    assert.ok(problemIds(report).includes("machines/builders-empty"));
    const build = await lab.controller.nixBuild(plain());
    assert.match(
      build.stderr,
      /unable to start any build; either increase '--max-jobs' or enable remote builds/,
    );
  },
);

labTest(
  "the seed post's machines line: show_config says why, and Nix refuses every ordinary build",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.controller.setMachines(["builder1 x86_64-linux / - 8 1 kvm,big-parallel"]);
    const { code, report } = await showConfig(lab.controller);
    assert.equal(code, 2);
    const ids = problemIds(report);
    for (
      const id of [
        "machines/columns-shifted",
        "machines/mandatory-features",
        "machines/identity-file-not-file",
      ]
    ) {
      assert.ok(ids.includes(id), `${id} in ${ids.join(", ")}`);
    }
    const build = await lab.controller.nixBuild(plain());
    assert.match(build.stderr, /remote machines may not have all required system features/);
  },
);
