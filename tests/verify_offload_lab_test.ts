/**
 * verify_offload against the builder lab: a real controller (max-jobs = 0, root's ssh config with
 * the builders' aliases) and real builders (their own sshd, /nix and nix.conf). The script runs
 * inside the controller namespace, as root there, the way a user runs it on a controller; each
 * test switches on one of the lab's faults (or builds a situation from real parts) and asserts the
 * finding it raises, with ssh's and Nix's own messages, and that a healthy builder raises none.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type ExecOptions, type Lab, labTest, startLab } from "./lab/lab.ts";
import { generateKey, sshConfigBlock } from "./lab/sshd.ts";

const SCRIPT = new URL("../scripts/verify_offload.ts", import.meta.url).pathname;

interface Finding {
  id: string;
  status: string;
  summary: string;
  detail?: string;
  data?: { builder?: string; [key: string]: unknown };
}

interface Canary {
  system: string;
  outcome: string;
  ms: number;
  drvPath?: string;
  outPath?: string;
  builtOn?: string;
  outputOnBuilder?: boolean;
  deriverOnBuilder?: string;
  logOnBuilder?: boolean;
  message?: string;
  leftBehind?: string[];
}

interface Row {
  builder: string;
  status: string;
  cells: Record<string, { status: string; text: string }>;
  canaries: Canary[];
  facts: Record<string, unknown>;
  ms: number;
}

interface Report {
  status: string;
  findings: Finding[];
  data: { rows: Row[]; controller: Record<string, unknown>; ms: number; flake?: unknown };
}

/** The problem ids the script can raise for a machine (everything but the OK ones). */
const PROBLEMS = [
  "offload/unreachable",
  "offload/ssh-timeout",
  "offload/host-key",
  "offload/auth-refused",
  "offload/agent-only",
  "offload/root-cannot-reach",
  "offload/root-unchecked",
  "offload/key-passphrase",
  "offload/key-unusable",
  "offload/noisy-shell",
  "offload/nix-missing",
  "offload/store-unavailable",
  "offload/untrusted",
  "offload/version-skew",
  "offload/system-not-offered",
  "offload/feature-not-offered",
  "offload/config-unreadable",
  "offload/disk-low",
  "offload/load-high",
  "offload/canary-failed",
  "offload/emulation-broken",
  "offload/canary-elsewhere",
  "offload/canary-unproven",
  "offload/canary-timeout",
  "offload/canary-skipped",
  "offload/canary-leftover",
];

async function verify(
  lab: Lab,
  args: string[] = [],
  options: ExecOptions & { argv?: (script: string[]) => string[] } = {},
): Promise<{ code: number; report: Report; stderr: string; ms: number }> {
  // Other work on this shared machine must not turn a verdict into a load warning.
  const load = args.includes("--max-load") ? [] : ["--max-load", "1000"];
  const script = [Deno.execPath(), "run", "-A", SCRIPT, "--json", ...load, ...args];
  const started = performance.now();
  const r = await lab.controller.exec(options.argv ? options.argv(script) : script, {
    cwd: "/tmp",
    timeoutMs: 120_000,
    ...options,
  });
  const ms = performance.now() - started;
  let report: Report;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    throw new Error(`verify_offload printed no JSON (exit ${r.code}): ${r.stdout}${r.stderr}`);
  }
  return { code: r.code, report, stderr: r.stderr, ms };
}

function findingsOf(report: Report, builder: string): Finding[] {
  return report.findings.filter((f) => f.data?.builder === builder);
}

function idsOf(report: Report, builder: string): string[] {
  return findingsOf(report, builder).map((f) => f.id);
}

function one(report: Report, builder: string, id: string): Finding {
  const found = findingsOf(report, builder).filter((f) => f.id === id);
  assert.equal(
    found.length,
    1,
    `expected one ${id} for ${builder}, got: ${idsOf(report, builder)}`,
  );
  return found[0]!;
}

function rowOf(report: Report, builder: string): Row {
  const row = report.data.rows.find((r) => r.builder === builder);
  assert.ok(row, `no row for ${builder}`);
  return row;
}

/** The load average can be 0.00 on an idle machine: give it some real load first. */
async function withSomeLoad<T>(fn: () => Promise<T>): Promise<T> {
  const load1 = Number((await Deno.readTextFile("/proc/loadavg")).split(" ")[0]);
  if (load1 >= 0.05) return await fn();
  const spinners = [0, 1].map(() =>
    new Deno.Command("sh", { args: ["-c", "while :; do :; done"] }).spawn()
  );
  try {
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      if (Number((await Deno.readTextFile("/proc/loadavg")).split(" ")[0]) >= 0.05) break;
    }
    return await fn();
  } finally {
    for (const s of spinners) {
      s.kill("SIGKILL");
      await s.status;
    }
  }
}

labTest(
  "verify_offload proves a healthy builder builds x86_64-linux and emulated aarch64-linux there",
  async () => {
    await using lab = await startLab({ builders: 2 });
    await lab.builder("builder2").setMachine({ protocol: "ssh-ng" });
    const { code, report } = await verify(lab);
    assert.equal(code, 0, JSON.stringify(report.findings, null, 1));
    assert.equal(report.status, "ok");
    for (const builder of ["ssh://builder1", "ssh-ng://builder2"]) {
      const problems = idsOf(report, builder).filter((id) => PROBLEMS.includes(id));
      assert.deepEqual(problems, [], `${builder}: ${problems}`);
      assert.match(one(report, builder, "offload/verified").summary, /built x86_64-linux in/);
      const row = rowOf(report, builder);
      assert.deepEqual(
        row.canaries.map((c) => [c.system, c.outcome]),
        [["x86_64-linux", "built-there"], ["aarch64-linux", "built-there"]],
      );
      for (const canary of row.canaries) {
        assert.equal(canary.builtOn, builder, "Nix's own 'building ... on' line names it");
        assert.equal(canary.outputOnBuilder, true);
        assert.equal(canary.deriverOnBuilder, canary.drvPath);
        // Nix prints the start and the copy-back lines; both may land in one read (0 ms).
        assert.ok(canary.ms >= 0 && canary.ms < 60_000);
        assert.equal(canary.leftBehind, undefined);
      }
      assert.equal(row.cells.ssh?.text, "ok");
      assert.equal(row.cells.version?.text, "2.8.0");
      assert.equal(row.cells.config?.text, "matches");
      assert.equal(row.facts.user, "root");
      assert.equal(typeof row.facts.nixFreeBytes, "number");
    }
    // Legacy ssh:// builds run through `nix-store --serve`, which turns keep-build-log off on the
    // builder; ssh-ng:// builds go through the builder's daemon, which keeps one.
    assert.deepEqual(rowOf(report, "ssh://builder1").canaries.map((c) => c.logOnBuilder), [
      false,
      false,
    ]);
    assert.deepEqual(rowOf(report, "ssh-ng://builder2").canaries.map((c) => c.logOnBuilder), [
      true,
      true,
    ]);
    // The canaries are gone again on both sides.
    for (const canary of report.data.rows.flatMap((r) => r.canaries)) {
      const paths = [canary.outPath!, canary.drvPath!];
      const here = await lab.controller.exec([
        "nix-store",
        "--check-validity",
        "--print-invalid",
        ...paths,
      ]);
      assert.deepEqual(here.stdout.trim().split("\n"), paths);
    }
    for (const b of lab.builders) {
      const there = await b.exec(["sh", "-c", "ls /nix/store | grep -c nbr-canary || true"]);
      assert.equal(there.stdout.trim(), "0", `${b.name} still holds canary paths`);
    }
  },
);

labTest(
  "verify_offload reports a builder that is down with ssh's 'Connection refused'",
  async () => {
    await using lab = await startLab({ builders: 2 });
    await lab.builder("builder1").setFault("down");
    const { code, report } = await verify(lab);
    assert.equal(code, 2);
    const f = one(report, "ssh://builder1", "offload/unreachable");
    assert.equal(f.status, "critical");
    assert.match(f.summary, /ssh: connect to host 127\.0\.0\.1 port \d+: Connection refused/);
    assert.equal(rowOf(report, "ssh://builder1").cells.ssh?.text, "refused");
    // The other builder is checked all the same.
    assert.ok(idsOf(report, "ssh://builder2").includes("offload/verified"));
  },
);

labTest(
  "verify_offload reports a hung builder as offload/ssh-timeout within --timeout + 1 s",
  async () => {
    await using lab = await startLab({ builders: 2 });
    await lab.builder("builder1").setFault("hung");
    const { code, report, ms } = await verify(lab, ["--timeout", "6", "--no-canary"]);
    assert.ok(ms < 7000, `took ${Math.round(ms)} ms with --timeout 6`);
    assert.equal(code, 2);
    const f = one(report, "ssh://builder1", "offload/ssh-timeout");
    assert.match(f.detail ?? "", /timed out/);
    assert.ok(idsOf(report, "ssh://builder2").includes("offload/verified"));
  },
);

labTest("verify_offload reports a changed host key as offload/host-key", async () => {
  await using lab = await startLab({ builders: 1 });
  await lab.builder("builder1").setFault("wrong-host-key");
  const { code, report } = await verify(lab);
  assert.equal(code, 2);
  const f = one(report, "ssh://builder1", "offload/host-key");
  assert.match(
    f.detail ?? "",
    /REMOTE HOST IDENTIFICATION HAS CHANGED! Host key verification failed\./,
  );
  assert.match(f.summary, /root's known_hosts/);
});

labTest(
  "verify_offload says why a host key pinned in column 8 never matches a remapped HostName/Port",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const b = lab.builder("builder1");
    const key = btoa(b.hostPublicKey);
    await lab.controller.setMachines([`ssh://builder1 x86_64-linux - 2 1 - - ${key}`]);
    const { report } = await verify(lab, ["--no-canary"]);
    const f = one(report, "ssh://builder1", "offload/host-key");
    assert.match(f.summary, /pinned host key \(column 8\)/);
    assert.match(f.detail ?? "", /No ED25519 host key is known for \[127\.0\.0\.1\]:\d+/);
    assert.match(f.detail ?? "", /HostKeyAlias builder1/);
  },
);

labTest("verify_offload reports a refused client key as offload/auth-refused", async () => {
  await using lab = await startLab({ builders: 1 });
  await lab.builder("builder1").setFault("key-refused");
  const { code, report } = await verify(lab);
  assert.equal(code, 2);
  const f = one(report, "ssh://builder1", "offload/auth-refused");
  assert.match(f.detail ?? "", /root@127\.0\.0\.1: Permission denied \(publickey\)\./);
});

labTest(
  "verify_offload reports an ssh user the builder does not trust, with Nix's refusal",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.builder("builder1").setFault("untrusted-user");
    const { code, report } = await verify(lab);
    assert.equal(code, 2);
    const builder = "ssh://nixremote@builder1";
    const f = one(report, builder, "offload/untrusted");
    assert.match(f.summary, /'nixremote' is not trusted/);
    assert.match(f.detail ?? "", /trusted-users there: root/);
    const failed = findingsOf(report, builder).filter((x) => x.id === "offload/canary-failed");
    assert.equal(failed.length, 2);
    for (const x of failed) {
      assert.match(x.detail ?? "", /you are not privileged to build input-addressed derivations/);
    }
    assert.equal(rowOf(report, builder).cells.store?.text, "daemon");
  },
);

labTest(
  "verify_offload reports nix missing from a non-interactive PATH, with the PATH and Nix's error",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.builder("builder1").setFault("nix-not-on-path");
    const { code, report } = await verify(lab);
    assert.equal(code, 2);
    const f = one(report, "ssh://builder1", "offload/nix-missing");
    assert.match(f.summary, /'nix-store' is not on the PATH/);
    assert.match(f.detail ?? "", /PATH there: \/usr\/local\/sbin:\/usr\/sbin:\/sbin/);
    const canaries = findingsOf(report, "ssh://builder1").filter((x) =>
      x.id === "offload/canary-failed"
    );
    assert.ok(canaries.length > 0);
    assert.match(canaries[0]!.detail ?? "", /nix-store: command not found/);
  },
);

labTest(
  "verify_offload finds a feature the line claims and the builder lacks, with Nix's refusal",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.builder("builder1").setMachine({ supportedFeatures: ["big-parallel", "kvm"] });
    const { code, report } = await verify(lab);
    assert.equal(code, 2);
    const f = one(report, "ssh://builder1", "offload/feature-not-offered");
    assert.match(f.summary, /claims feature kvm/);
    assert.match(
      f.detail ?? "",
      /a 'x86_64-linux' with features \{kvm\} is required to build '\/nix\/store\/[^']+\.drv', but I am a 'x86_64-linux' with features \{benchmark, big-parallel, nixos-test\}/,
    );
    // The line's other claims still hold: the canaries without kvm build there.
    assert.deepEqual(rowOf(report, "ssh://builder1").canaries.map((c) => c.outcome), [
      "built-there",
      "built-there",
    ]);
  },
);

labTest(
  "verify_offload reports aarch64-linux claimed without extra-platforms, with Nix's refusal",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.builder("builder1").setFault("no-extra-platforms");
    const { report } = await verify(lab);
    const f = one(report, "ssh://builder1", "offload/system-not-offered");
    assert.match(f.summary, /claims aarch64-linux/);
    const failed = one(report, "ssh://builder1", "offload/canary-failed");
    assert.match(
      failed.detail ?? "",
      /a 'aarch64-linux' with features \{\} is required to build '[^']+', but I am a 'x86_64-linux'/,
    );
  },
);

labTest(
  "verify_offload reports emulation that is offered but broken as offload/emulation-broken",
  async () => {
    await using lab = await startLab({ builders: 1 });
    await lab.builder("builder1").setFault("binfmt-disabled");
    const { report } = await verify(lab);
    const f = one(report, "ssh://builder1", "offload/emulation-broken");
    assert.match(
      f.detail ?? "",
      /executing '\/nix\/store\/[^']+-nbr-canary-prog-[0-9a-f]+': Exec format error/,
    );
    const canaries = rowOf(report, "ssh://builder1").canaries;
    assert.equal(canaries.find((c) => c.system === "x86_64-linux")?.outcome, "built-there");
    assert.equal(canaries.find((c) => c.system === "aarch64-linux")?.outcome, "failed");
    assert.ok(!idsOf(report, "ssh://builder1").includes("offload/system-not-offered"));
  },
);

labTest("verify_offload reports a login shell that prints as offload/noisy-shell", async () => {
  await using lab = await startLab({ builders: 1 });
  const b = lab.builder("builder1");
  await Deno.writeTextFile(`${b.dir}/home/.bashrc`, "echo 'Welcome to builder1'\n");
  const { report } = await verify(lab);
  const f = one(report, "ssh://builder1", "offload/noisy-shell");
  assert.match(
    f.detail ?? "",
    /printed before the command's own output:\n {2}Welcome to builder1\n/,
  );
  // The other checks see through the noise; Nix does not.
  assert.equal(rowOf(report, "ssh://builder1").cells.version?.text, "2.8.0");
  const failed = findingsOf(report, "ssh://builder1").filter((x) =>
    x.id === "offload/canary-failed"
  );
  assert.match(
    failed[0]?.detail ?? "",
    /'nix-store --serve' protocol mismatch from 'builder1', got 'Welcome to builder1/,
  );
});

labTest(
  "verify_offload reports a store a non-root ssh user cannot use as offload/store-unavailable",
  async () => {
    await using lab = await startLab({ builders: 1 });
    // nixremote without the builder's nix-daemon: its nix can only try the root-owned store itself.
    await lab.builder("builder1").setMachine({ user: "nixremote" });
    const { report } = await verify(lab, ["--no-canary"]);
    const f = one(report, "ssh://nixremote@builder1", "offload/store-unavailable");
    assert.match(f.summary, /does not answer for nixremote/);
    // Nix 2.8 as a non-root user without a daemon tries to open the root-owned store itself.
    assert.match(
      f.detail ?? "",
      /error: creating directory '\/nix\/store\/\.links': Permission denied/,
    );
  },
);

labTest("verify_offload warns about a line's identity file that needs a passphrase", async () => {
  await using lab = await startLab({ builders: 1 });
  const key = `${lab.dir}/protected_key`;
  const made = await new Deno.Command("ssh-keygen", {
    args: ["-q", "-t", "ed25519", "-N", "a passphrase", "-f", key],
  }).output();
  assert.equal(made.code, 0);
  await lab.controller.setMachines([`ssh://builder1 x86_64-linux ${key} 2 1 big-parallel`]);
  const { report } = await verify(lab);
  const f = one(report, "ssh://builder1", "offload/key-passphrase");
  assert.equal(f.status, "warning");
  assert.match(f.summary, /protected_key is protected by a passphrase/);
  // ssh still gets in with root's other key, and the canary builds there.
  assert.ok(idsOf(report, "ssh://builder1").every((id) => id !== "offload/auth-refused"));
  assert.equal(rowOf(report, "ssh://builder1").canaries[0]?.outcome, "built-there");
});

labTest("verify_offload warns about a line's identity file that does not exist", async () => {
  await using lab = await startLab({ builders: 1 });
  await lab.controller.setMachines(["ssh://builder1 x86_64-linux /root/.ssh/gone 2 1"]);
  const { report } = await verify(lab, ["--no-canary"]);
  const f = one(report, "ssh://builder1", "offload/key-unusable");
  assert.match(f.summary, /\/root\/\.ssh\/gone does not exist/);
});

labTest("verify_offload warns when /nix has less free space than --min-free", async () => {
  await using lab = await startLab({ builders: 1 });
  const { report } = await verify(lab, ["--no-canary", "--min-free", "1000000"]);
  const f = one(report, "ssh://builder1", "offload/disk-low");
  assert.equal(f.status, "warning");
  assert.match(f.summary, /only [\d.]+ [KMGT]iB free on \/nix/);
  const { report: normal } = await verify(lab, ["--no-canary", "--min-free", "0.001"]);
  assert.ok(!idsOf(normal, "ssh://builder1").includes("offload/disk-low"));
});

labTest("verify_offload warns when the load per core is above --max-load", async () => {
  await using lab = await startLab({ builders: 1 });
  await withSomeLoad(async () => {
    const { report } = await verify(lab, ["--no-canary", "--max-load", "0.001"]);
    const f = one(report, "ssh://builder1", "offload/load-high");
    assert.match(f.summary, /load [\d.]+ on \d+ cores/);
  });
  const { report: normal } = await verify(lab, ["--no-canary", "--max-load", "1000"]);
  assert.ok(!idsOf(normal, "ssh://builder1").includes("offload/load-high"));
});

labTest(
  "verify_offload reports a canary that waits forever (max jobs 0) as offload/canary-timeout",
  async () => {
    await using lab = await startLab({ builders: 1 });
    // Nix never gives a machine with max jobs 0 a build: it waits for a free slot that never comes.
    await lab.controller.setMachines(["ssh://builder1 x86_64-linux - 0 1"]);
    const { report, ms } = await verify(lab, ["--timeout", "8"]);
    assert.ok(ms < 9000, `took ${Math.round(ms)} ms`);
    const f = one(report, "ssh://builder1", "offload/canary-timeout");
    assert.equal(f.status, "critical");
    assert.match(f.detail ?? "", /never started the build: Nix waits for a free slot/);
  },
);

labTest("verify_offload says when a claimed system has no canary program", async () => {
  await using lab = await startLab({ builders: 1 });
  await lab.controller.setMachines(["ssh://builder1 x86_64-linux,wasm32-wasi - 2 1"]);
  const { report } = await verify(lab);
  const f = one(report, "ssh://builder1", "offload/canary-skipped");
  assert.match(f.summary, /no canary for wasm32-wasi: no canary program exists/);
  assert.ok(idsOf(report, "ssh://builder1").includes("offload/system-not-offered"));
  assert.equal(rowOf(report, "ssh://builder1").canaries[0]?.outcome, "built-there");
});

labTest("verify_offload --builder (or --host) checks only the named machine", async () => {
  await using lab = await startLab({ builders: 2 });
  await lab.builder("builder2").setFault("down");
  for (const flag of ["--builder", "--host"]) {
    const { code, report } = await verify(lab, [
      flag,
      "builder1",
      "--no-canary",
      "--max-load",
      "1000",
    ]);
    assert.equal(code, 0, flag);
    assert.deepEqual(report.data.rows.map((r) => r.builder), ["ssh://builder1"], flag);
  }
  const bad = await lab.controller.exec(
    [Deno.execPath(), "run", "-A", SCRIPT, "--builder", "nosuch"],
    { cwd: "/tmp" },
  );
  assert.equal(bad.code, 3);
  assert.match(
    bad.stderr,
    /^verify_offload: No machine 'nosuch' in builders \(there are: ssh:\/\/builder1, ssh:\/\/builder2\)\n$/,
  );
});

labTest("verify_offload reports empty builders and a missing machines file", async () => {
  await using lab = await startLab({ builders: 1 });
  const empty = await verify(lab, ["--builders", ""]);
  assert.equal(empty.code, 2);
  assert.match(
    empty.report.findings.find((f) => f.id === "offload/no-builders")?.summary ?? "",
    /builders is empty: every build runs here \(and max-jobs = 0: none can\)/,
  );
  const missing = await verify(lab, ["--builders", "@/etc/nix/no-such-machines"]);
  assert.match(
    missing.report.findings.find((f) => f.id === "offload/no-builders")?.summary ?? "",
    /\/etc\/nix\/no-such-machines does not exist \(Nix silently uses no builders\)/,
  );
  const invalid = await verify(lab, ["--builders", "ssh://builder1 x86_64-linux - lots"]);
  assert.match(
    invalid.report.findings.find((f) => f.id === "offload/machines-invalid")?.summary ?? "",
    /bad machine specification: failed to convert column #3 in a row: 'ssh:\/\/builder1 x86_64-linux - lots' to 'unsigned int'/,
  );
  const local = await verify(lab, ["--builders", "local x86_64-linux"]);
  assert.ok(local.report.findings.some((f) => f.id === "offload/not-ssh"));
});

labTest(
  "verify_offload lists a flake's nixosConfigurations and the systems no machine builds",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const dir = `${lab.dir}/flake`;
    await Deno.mkdir(dir);
    await Deno.writeTextFile(
      `${dir}/flake.nix`,
      [
        "{",
        "  outputs = { self }: {",
        "    nixosConfigurations = {",
        '      web.pkgs.stdenv.hostPlatform.system = "x86_64-linux";',
        '      nas.pkgs.stdenv.hostPlatform.system = "aarch64-linux";',
        '      board.pkgs.stdenv.hostPlatform.system = "riscv64-linux";',
        "    };",
        "  };",
        "}",
      ].join("\n") + "\n",
    );
    const { report } = await verify(lab, ["--no-canary", "--flake", `path:${dir}`]);
    const listed = report.findings.find((f) => f.id === "offload/flake-configs");
    assert.match(listed?.summary ?? "", /#nixosConfigurations: board, nas, web$/);
    const uncovered = report.findings.filter((f) => f.id === "offload/flake-system-uncovered");
    assert.deepEqual(uncovered.map((f) => f.summary), [
      "board needs riscv64-linux, which no machine builds",
    ]);
    const broken = await verify(lab, ["--no-canary", "--flake", `path:${lab.dir}/no-flake-here`]);
    assert.ok(broken.report.findings.some((f) => f.id === "offload/flake-eval-failed"));
  },
);

/**
 * Runs the script inside a private mount namespace of the controller where a second, unprivileged
 * user exists (bind-mounted passwd/group/shadow copies) with its own ~/.ssh, and where root's
 * ~/.ssh can be swapped for another directory: the "works for me but not for root" setups.
 */
async function asRootBesideUser(
  lab: Lab,
  o: { userCanReach: boolean; rootSsh: "lab" | "empty" },
  args: string[],
) {
  const uid = 30_977;
  const user = "nbrtester";
  const d = `${lab.dir}/tester`;
  const home = `${d}/home`;
  await Deno.remove(`${home}/.ssh`, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${home}/.ssh`, { recursive: true });
  await Deno.mkdir(`${d}/etc`, { recursive: true });
  await Deno.mkdir(`${d}/empty-ssh`, { recursive: true });
  for (
    const [file, line] of [
      ["passwd", `${user}:x:${uid}:${uid}:verify_offload test:${home}:/bin/sh`],
      ["group", `${user}:x:${uid}:`],
      ["shadow", `${user}:*:19000:0:99999:7:::`],
    ] as const
  ) {
    const text = await Deno.readTextFile(`/etc/${file}`);
    await Deno.writeTextFile(`${d}/etc/${file}`, `${text.trimEnd()}\n${line}\n`);
  }
  if (o.userCanReach) {
    await Deno.copyFile(lab.clientKey, `${home}/.ssh/id_ed25519`);
    await Deno.chmod(`${home}/.ssh/id_ed25519`, 0o600);
    await Deno.copyFile(lab.controller.knownHostsFile, `${home}/.ssh/known_hosts`);
    await Deno.writeTextFile(
      `${home}/.ssh/config`,
      lab.builders.map((b) =>
        sshConfigBlock({
          hostAlias: b.name,
          port: b.port,
          identityFile: `${home}/.ssh/id_ed25519`,
          knownHostsFile: `${home}/.ssh/known_hosts`,
          connectTimeout: 5,
        })
      ).join("\n"),
    );
  } else {
    await generateKey(`${home}/.ssh/id_ed25519`, "not-authorised");
  }
  for await (const entry of Deno.readDir(`${home}/.ssh`)) {
    await Deno.chown(`${home}/.ssh/${entry.name}`, uid, uid);
    await Deno.chmod(`${home}/.ssh/${entry.name}`, 0o600);
  }
  await Deno.chown(`${home}/.ssh`, uid, uid);
  await Deno.chown(home, uid, uid);
  await Deno.chmod(home, 0o755);
  const setup =
    'd=$1 swap=$2; shift 2; for f in passwd group shadow; do mount --bind "$d/etc/$f" "/etc/$f"; done; ' +
    'if [ "$swap" = empty ]; then mount --bind "$d/empty-ssh" /root/.ssh; fi; exec "$@"';
  return await verify(lab, args, {
    env: { SUDO_USER: user },
    argv: (script) => [
      "unshare",
      "-m",
      "--propagation",
      "private",
      "/bin/sh",
      "-c",
      setup,
      "sh",
      d,
      o.rootSsh,
      ...script,
    ],
  });
}

labTest(
  "verify_offload run with sudo says when the user can reach a builder but root cannot",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const { code, report } = await asRootBesideUser(
      lab,
      { userCanReach: true, rootSsh: "empty" },
      ["--no-canary"],
    );
    assert.equal(code, 2);
    const f = one(report, "ssh://builder1", "offload/root-cannot-reach");
    assert.match(
      f.summary,
      /nbrtester can reach builder1, but root \(whom nix-daemon runs as\) cannot/,
    );
    assert.match(f.detail ?? "", /As root: ssh: Could not resolve hostname builder1/);
    assert.equal(rowOf(report, "ssh://builder1").cells.root?.text, "only nbrtester");
  },
);

labTest(
  "verify_offload run with sudo notes that root reaches a builder the user cannot (harmless)",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const { code, report } = await asRootBesideUser(
      lab,
      { userCanReach: false, rootSsh: "lab" },
      ["--no-canary", "--max-load", "1000"],
    );
    assert.equal(code, 0);
    const f = one(report, "ssh://builder1", "offload/user-cannot-reach");
    assert.equal(f.status, "ok");
    assert.ok(!idsOf(report, "ssh://builder1").includes("offload/root-cannot-reach"));
    // And with both able to reach it, neither is raised.
    const both = await asRootBesideUser(lab, { userCanReach: true, rootSsh: "lab" }, [
      "--no-canary",
    ]);
    const ids = idsOf(both.report, "ssh://builder1");
    assert.ok(
      !ids.includes("offload/root-cannot-reach") && !ids.includes("offload/user-cannot-reach"),
      JSON.stringify(both.report.findings),
    );
    assert.equal(rowOf(both.report, "ssh://builder1").cells.root?.text, "ok");
  },
);

labTest(
  "verify_offload reports a builder reachable only through the ssh agent as offload/agent-only",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const d = `${lab.dir}/agent`;
    await Deno.mkdir(`${d}/ssh`, { recursive: true, mode: 0o700 });
    const b = lab.builder("builder1");
    // Root's ssh config without any key file; the key lives in an agent only.
    await Deno.writeTextFile(
      `${d}/ssh/config`,
      `Host builder1\n  HostName 127.0.0.1\n  Port ${b.port}\n  User root\n  IdentityFile ${d}/ssh/none\n` +
        `  UserKnownHostsFile ${lab.controller.knownHostsFile}\n  StrictHostKeyChecking yes\n`,
    );
    await Deno.chmod(`${d}/ssh/config`, 0o600);
    const setup = 'd=$1 key=$2; shift 2; mount --bind "$d/ssh" /root/.ssh; ' +
      'eval "$(ssh-agent -s -a "$d/agent.sock")" >/dev/null; ssh-add -q "$key" 2>/dev/null; ' +
      '"$@"; r=$?; ssh-agent -k >/dev/null; exit $r';
    const { report } = await verify(lab, ["--no-canary"], {
      env: { SSH_AUTH_SOCK: `${d}/agent.sock` },
      argv: (script) => [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        setup,
        "sh",
        d,
        lab.clientKey,
        ...script,
      ],
    });
    const f = one(report, "ssh://builder1", "offload/agent-only");
    assert.match(
      f.detail ?? "",
      /Without the agent: root@127\.0\.0\.1: Permission denied \(publickey\)\./,
    );
    assert.ok(idsOf(report, "ssh://builder1").includes("offload/auth-refused"));
  },
);

labTest(
  "verify_offload checks 4 builders at once in less time than one after another",
  async () => {
    await using lab = await startLab({ builders: 4 });
    const serial = await verify(lab, ["--jobs", "1"]);
    const parallel = await verify(lab, ["--jobs", "4"]);
    assert.equal(serial.report.status, parallel.report.status);
    assert.equal(parallel.report.data.rows.length, 4);
    assert.ok(
      parallel.report.data.ms < serial.report.data.ms,
      `all at once ${parallel.report.data.ms} ms, one after another ${serial.report.data.ms} ms`,
    );
  },
);

labTest(
  "verify_offload run by a user of nix-daemon says root's ssh is unchecked and catches 'builders' being ignored",
  async () => {
    await using lab = await startLab({ builders: 2 });
    // The daemon's own machines file has builder2 only; the user asks about builder1.
    await lab.controller.setMachines([lab.builder("builder2").machineLine()]);
    const bundle = `${lab.dir}/verify_offload.js`;
    const bundled = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "-q", "-o", bundle, SCRIPT],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(bundled.code, 0, new TextDecoder().decode(bundled.stderr));
    await Deno.chmod(bundle, 0o644);
    const uid = 30_978;
    const user = "nbrdaemonuser";
    const d = `${lab.dir}/daemon-user`;
    const home = `${d}/home`;
    await Deno.mkdir(`${home}/.ssh`, { recursive: true });
    await Deno.mkdir(`${d}/etc`, { recursive: true });
    for (
      const [file, line] of [
        ["passwd", `${user}:x:${uid}:${uid}:verify_offload test:${home}:/bin/sh`],
        ["group", `${user}:x:${uid}:`],
        ["shadow", `${user}:*:19000:0:99999:7:::`],
      ] as const
    ) {
      const text = await Deno.readTextFile(`/etc/${file}`);
      await Deno.writeTextFile(`${d}/etc/${file}`, `${text.trimEnd()}\n${line}\n`);
    }
    await Deno.copyFile(lab.clientKey, `${home}/.ssh/id_ed25519`);
    await Deno.copyFile(lab.controller.knownHostsFile, `${home}/.ssh/known_hosts`);
    await Deno.writeTextFile(
      `${home}/.ssh/config`,
      lab.builders.map((b) =>
        sshConfigBlock({
          hostAlias: b.name,
          port: b.port,
          identityFile: `${home}/.ssh/id_ed25519`,
          knownHostsFile: `${home}/.ssh/known_hosts`,
          connectTimeout: 5,
        })
      ).join("\n"),
    );
    for (
      const path of [
        home,
        `${home}/.ssh`,
        ...["id_ed25519", "known_hosts", "config"].map((f) => `${home}/.ssh/${f}`),
      ]
    ) {
      await Deno.chown(path, uid, uid);
    }
    for (const f of ["id_ed25519", "config"]) await Deno.chmod(`${home}/.ssh/${f}`, 0o600);
    // In a private mount namespace: the user exists, the controller's nix-daemon runs, and the
    // script runs as the user (no sudo on this machine), the way a desktop user runs it.
    const setup =
      'd=$1 user=$2; shift 2; for f in passwd group shadow; do mount --bind "$d/etc/$f" "/etc/$f"; done; ' +
      's=/nix/var/nix/daemon-socket/socket; nix-daemon >"$d/daemon.log" 2>&1 & p=$!; ' +
      'i=0; while [ ! -S "$s" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done; ' +
      'runuser -u "$user" -- "$@"; r=$?; kill $p; wait $p 2>/dev/null; rm -f "$s"; exit $r';
    const line = lab.builder("builder1").machineLine();
    const { report } = await verify(lab, [], {
      argv: () => [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        setup,
        "sh",
        d,
        user,
        Deno.execPath(),
        "run",
        "-A",
        bundle,
        "--json",
        "--max-load",
        "1000",
        "--builders",
        line,
      ],
      timeoutMs: 120_000,
    });
    assert.equal(report.data.controller.user, user);
    assert.equal(report.data.controller.store, "daemon");
    assert.equal(report.data.controller.buildsAs, "root");
    const unchecked = one(report, "ssh://builder1", "offload/root-unchecked");
    assert.equal(unchecked.status, "unknown");
    assert.match(unchecked.summary, /could not check ssh as root \(not root, and no sudo\)/);
    const elsewhere = findingsOf(report, "ssh://builder1").filter((f) =>
      f.id === "offload/canary-elsewhere"
    );
    assert.equal(elsewhere.length, 2);
    for (const f of elsewhere) {
      assert.match(f.detail ?? "", /Nix built it on 'ssh:\/\/builder2', not on 'ssh:\/\/builder1'/);
      assert.match(
        f.detail ?? "",
        /The canary went through nix-daemon as nbrdaemonuser, whom the daemon does not trust: it ignores the client's `builders`/,
      );
    }
  },
);
