/**
 * verify_offload's parts without the lab: reading Nix 2.8's real output for canaries (captured in
 * the lab, see tests/fixtures/README.md), ssh's real messages, this machine's real /proc and df,
 * the table, and the CLI contract (flags, exit code 3, no stack traces).
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  canaryExpression,
  canaryKind,
  cleanOutput,
  parseRemoteBuildLines,
  readCanaryOutput,
  storeHost,
  type TimedLine,
  writeCanaryProgram,
} from "../lib/canary.ts";
import { LocalTarget } from "../lib/local_target.ts";
import {
  classifySshFailure,
  OFFLOAD_CHECKS,
  type OffloadRow,
  parseResources,
  parseSections,
  renderOffloadTable,
  splitNixSshOpts,
  verifyMachines,
  versionSkew,
} from "../lib/offload.ts";
import { parseNixVersion } from "../lib/nix_config.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";
import { LineSpinner } from "../lib/spinner.ts";

const FIXTURES = new URL("./fixtures/verify_offload/", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

/** A captured nix-build output as timed lines, one every 10 ms. */
async function fixture(name: string): Promise<{ lines: TimedLine[]; code: number; text: string }> {
  const text = await Deno.readTextFile(`${FIXTURES}nix-2.8-canary-${name}.txt`);
  const code = Number((await Deno.readTextFile(`${FIXTURES}nix-2.8-canary-${name}.code`)).trim());
  const lines = text.split("\n").map((line, i) => ({ at: i * 10, text: line }));
  return { lines, code, text };
}

function read(
  lines: TimedLine[],
  nonce: string,
  other: string,
  code: number,
  storeUri = "ssh://builder1",
) {
  return readCanaryOutput(lines, nonce, { storeUri, others: [other], status: { code } });
}

Deno.test("readCanaryOutput() finds Nix 2.8's drv, machine, output and time for each canary", async () => {
  const { lines, code } = await fixture("ok-ssh");
  assert.equal(code, 0);
  const x86 = read(lines, "okssh0", "okssh1", code);
  assert.equal(x86.builtOn, "ssh://builder1");
  assert.match(x86.drvPath ?? "", /^\/nix\/store\/[0-9a-z]{32}-nbr-canary-okssh0\.drv$/);
  assert.match(x86.outPath ?? "", /^\/nix\/store\/[0-9a-z]{32}-nbr-canary-okssh0$/);
  assert.equal(x86.outcome, "skipped", "success still needs the builder's confirmation");
  // From its "building ... on" line (line 3) to its "copying path ... from" line (line 8).
  assert.equal(x86.ms, 50);
  const arm = read(lines, "okssh1", "okssh0", code);
  assert.match(arm.outPath ?? "", /-nbr-canary-okssh1$/);
  const ng = await fixture("ok-ssh-ng");
  assert.equal(
    read(ng.lines, "oksshng0", "oksshng1", 0, "ssh-ng://builder1").builtOn,
    "ssh-ng://builder1",
  );
});

Deno.test("readCanaryOutput() says a canary Nix built on another machine was built elsewhere", async () => {
  const { lines, code } = await fixture("ok-ssh");
  const r = read(lines, "okssh0", "okssh1", code, "ssh://builder2");
  assert.equal(r.outcome, "built-elsewhere");
  assert.equal(r.message, "Nix built it on 'ssh://builder1', not on 'ssh://builder2'");
});

Deno.test("readCanaryOutput() keeps Nix's own refusal for a feature the builder lacks", async () => {
  const { lines, code } = await fixture("feature-missing");
  assert.equal(code, 1);
  const r = read(lines, "featuremissing0", "featuremissing1", code);
  assert.equal(r.outcome, "failed");
  assert.match(
    r.message ?? "",
    /a 'x86_64-linux' with features \{kvm\} is required to build '\/nix\/store\/[0-9a-z]{32}-nbr-canary-featuremissing0\.drv', but I am a 'x86_64-linux' with features \{benchmark, big-parallel, nixos-test\}/,
  );
  assert.doesNotMatch(
    r.message ?? "",
    /featuremissing1/,
    "the other canary's lines are not its own",
  );
});

Deno.test("readCanaryOutput() cleans Nix 2.8's serialised exec error down to 'Exec format error'", async () => {
  const { lines, code } = await fixture("exec-format");
  const x86 = read(lines, "execformat0", "execformat1", code);
  assert.match(x86.outPath ?? "", /-nbr-canary-execformat0$/, "the native canary still built");
  const arm = read(lines, "execformat1", "execformat0", code);
  assert.equal(arm.outcome, "failed");
  assert.match(
    arm.message ?? "",
    /^executing '\/nix\/store\/[0-9a-z]{32}-nbr-canary-prog-execformat1': Exec format error$/m,
  );
  // No NUL or length bytes from the serve protocol survive.
  // deno-lint-ignore no-control-regex
  assert.doesNotMatch(arm.message ?? "", /[\x00-\x08\x0b-\x1f]/);
});

Deno.test("readCanaryOutput() gives both canaries the connection error Nix printed once", async () => {
  for (
    const [name, pattern] of [
      [
        "refused",
        /cannot connect to 'builder1': ssh: connect to host 127\.0\.0\.1 port \d+: Connection refused/,
      ],
      ["host-key", /Host key verification failed\./],
      ["denied", /root@127\.0\.0\.1: Permission denied \(publickey\)\./],
      ["nix-missing-ssh", /bash: line 1: nix-store: command not found/],
      ["nix-missing-ssh-ng", /bash: line 1: nix-daemon: command not found/],
      [
        "noisy-ssh",
        /'nix-store --serve' protocol mismatch from 'builder1', got 'Welcome to builder1/,
      ],
      ["noisy-ssh-ng", /error: protocol mismatch, got 'Welcome to builder1/],
      ["untrusted", /you are not privileged to build input-addressed derivations/],
    ] as const
  ) {
    const { lines, code } = await fixture(name);
    assert.equal(code, 1, name);
    const stem = name.replaceAll("-", "");
    for (const [mine, other] of [[`${stem}0`, `${stem}1`], [`${stem}1`, `${stem}0`]] as const) {
      const r = read(lines, mine, other, code);
      assert.equal(r.outcome, "failed", `${name} ${mine}`);
      assert.match(r.message ?? "", pattern, `${name} ${mine}: ${r.message}`);
    }
  }
});

Deno.test("readCanaryOutput() keeps Nix's two 'unable to start any build' wordings", async () => {
  const none = await fixture("no-builders");
  assert.match(
    read(none.lines, "nobuilders0", "nobuilders1", none.code).message ?? "",
    /error: unable to start any build; either increase '--max-jobs' or enable remote builds\./,
  );
  const fits = await fixture("no-machine-fits");
  const r = read(fits.lines, "nomachinefits0", "nomachinefits1", fits.code);
  assert.match(r.message ?? "", /Failed to find a machine for remote build!/);
  assert.match(r.message ?? "", /remote machines may not have all required system features\./);
});

Deno.test("readCanaryOutput() explains a time-out before any build started", () => {
  const r = readCanaryOutput([{ at: 5, text: "these 1 derivations will be built:" }], "abc", {
    storeUri: "ssh://builder1",
    status: { code: 124, failure: "timeout" },
    timeoutMs: 6000,
  });
  assert.equal(r.outcome, "timeout");
  assert.equal(
    r.message,
    "'nix-build' did not finish within 6000 ms and never started the build: Nix waits for a free " +
      "slot on the machine (its max jobs is 0, or every slot is taken)",
  );
});

Deno.test("parseRemoteBuildLines() and storeHost() read Nix's 'building ... on' lines", async () => {
  const { text } = await fixture("ok-ssh-ng");
  const found = parseRemoteBuildLines(text);
  assert.equal(found.length, 2);
  assert.deepEqual(new Set(found.map((l) => l.store)), new Set(["ssh-ng://builder1"]));
  assert.equal(storeHost("ssh-ng://nixremote@builder1?remote-program=/x"), "nixremote@builder1");
});

Deno.test("cleanOutput() drops ANSI colours, control bytes and runs of blanks", () => {
  assert.equal(cleanOutput("\x1b[31;1merror:\x1b[0m\x00\x05 it  failed \n"), "error: it failed\n");
});

Deno.test("canaryExpression() builds a list Nix parses, one derivation per system", async () => {
  const expr = `[\n${
    ["x86_64-linux", "aarch64-linux", "aarch64-darwin"].map((system, i) =>
      `(${
        canaryExpression({
          system,
          nonce: `n${i}`,
          ...(system.endsWith("linux") ? { program: `/tmp/canary-${system}` } : {}),
          requiredSystemFeatures: ["big-parallel"],
        })
      })`
    ).join("\n")
  }\n]`;
  const parsed = await new LocalTarget({ timeoutMs: 20_000 }).run([
    "nix-instantiate",
    "--parse",
    "-E",
    expr,
  ]);
  assert.equal(parsed.code, 0, parsed.stderr);
  assert.match(expr, /builder = "\/bin\/sh";/, "darwin canaries use /bin/sh");
  assert.throws(
    () => canaryExpression({ system: "x86_64-linux", nonce: "a'b", program: "/x" }),
    /Cannot use canary nonce 'a'b'/,
  );
  assert.equal(canaryKind("riscv64-linux"), "elf");
  assert.equal(canaryKind("wasm32-wasi"), null);
});

Deno.test("writeCanaryProgram() writes a program this machine runs and prints 'ok'", async () => {
  const target = new LocalTarget({ timeoutMs: 10_000 });
  const path = await writeCanaryProgram(target, "x86_64-linux");
  assert.ok(path !== null);
  try {
    const ran = await target.run([path]);
    assert.deepEqual([ran.code, ran.stdout], [0, "ok\n"]);
  } finally {
    await Deno.remove(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  }
  assert.equal(await writeCanaryProgram(target, "aarch64-darwin"), null);
});

Deno.test("classifySshFailure() tells ssh's real failures apart", async () => {
  const hostKey = await Deno.readTextFile(`${FIXTURES}nix-2.8-canary-host-key.txt`);
  assert.equal(classifySshFailure(hostKey), "host-key");
  assert.equal(
    classifySshFailure(
      "No ED25519 host key is known for [127.0.0.1]:46109 and you have requested strict checking.\nHost key verification failed.",
    ),
    "host-key",
  );
  assert.equal(classifySshFailure("root@127.0.0.1: Permission denied (publickey)."), "auth");
  assert.equal(
    classifySshFailure(
      "Connection timed out during banner exchange\nConnection to 127.0.0.1 port 41567 timed out",
    ),
    "timeout",
  );
  assert.equal(
    classifySshFailure("ssh: connect to host 127.0.0.1 port 46109: Connection refused"),
    "unreachable",
  );
  assert.equal(
    classifySshFailure("ssh: Could not resolve hostname nixos: Name or service not known"),
    "unreachable",
  );
});

Deno.test("parseResources() reads this machine's real nproc, loadavg, meminfo and df -Pk", async () => {
  const target = new LocalTarget({ timeoutMs: 10_000 });
  const out = await target.run([
    "sh",
    "-c",
    "echo @nproc; nproc; echo @loadavg; cat /proc/loadavg; echo @meminfo; cat /proc/meminfo; " +
    "echo @df; df -Pk /nix/store",
  ]);
  const facts = parseResources(parseSections(out.stdout));
  assert.equal(facts.cores, navigator.hardwareConcurrency);
  assert.ok((facts.load1 ?? -1) >= 0);
  assert.ok((facts.memoryBytes ?? 0) > 100 * 1024 ** 2);
  assert.ok((facts.memoryAvailableBytes ?? 0) <= (facts.memoryBytes ?? 0));
  assert.ok(
    (facts.nixFreeBytes ?? 0) > 0 && (facts.nixFreeBytes ?? 0) < (facts.nixTotalBytes ?? 0),
  );
});

Deno.test("parseSections() keeps what a noisy login printed before the first section", () => {
  assert.deepEqual(parseSections("Welcome to builder1\n@user\nroot\nroot\n@end\n"), {
    "": ["Welcome to builder1"],
    user: ["root", "root"],
    end: [],
  });
});

Deno.test("versionSkew() warns on a wide gap and is quiet on small ones", async () => {
  const here = parseNixVersion(
    await Deno.readTextFile(`${ROOT}tests/fixtures/nix-2.8/version.txt`),
  );
  assert.equal(here.text, "2.8.0");
  assert.deepEqual(versionSkew(here.text, "2.8.0"), { status: "ok", text: "2.8.0" });
  assert.deepEqual(versionSkew(here.text, "2.13.3"), { status: "ok", text: "2.13.3 (here 2.8.0)" });
  assert.deepEqual(versionSkew("2.24.9", "2.3.16"), {
    status: "warning",
    text: "2.3.16 vs 2.24.9",
  });
  assert.equal(versionSkew("2.8.0", "2.2.1").status, "warning", "older than 2.3");
});

Deno.test("splitNixSshOpts() splits NIX_SSHOPTS on whitespace like Nix (no quoting)", () => {
  assert.deepEqual(splitNixSshOpts("-F /etc/nix/ssh_config\t-o 'A B'"), [
    "-F",
    "/etc/nix/ssh_config",
    "-o",
    "'A",
    "B'",
  ]);
  assert.deepEqual(splitNixSshOpts(undefined), []);
});

Deno.test("renderOffloadTable() shows one aligned row per builder with a FAIL mark", () => {
  const cells = Object.fromEntries(
    OFFLOAD_CHECKS.map((c) => [c, { status: "ok" as const, text: "ok" }]),
  ) as OffloadRow["cells"];
  const ok: OffloadRow = {
    builder: "ssh://builder1",
    line: "",
    status: "ok",
    cells,
    canaries: [],
    facts: {},
    ms: 2400,
    timings: {},
  };
  const down: OffloadRow = {
    ...ok,
    builder: "ssh://builder2",
    status: "critical",
    cells: {
      ...cells,
      ssh: { status: "critical", text: "refused" },
      nix: { status: "skipped", text: "-" },
    },
    ms: 100,
  };
  const lines = renderOffloadTable([ok, down]).split("\n");
  assert.match(lines[0]!, /^builder +ssh +root +key +shell/);
  assert.match(lines[1]!, /^ssh:\/\/builder1 +ok +ok/);
  assert.match(lines[2]!, /^ssh:\/\/builder2 +FAIL refused +ok/);
  // Columns line up: the root column starts at the same place in every line.
  const at = lines[0]!.indexOf("root");
  assert.equal(lines[1]!.slice(at, at + 2), "ok");
  assert.equal(lines[2]!.slice(at, at + 2), "ok");
  assert.match(lines[2]!, / 0\.1 s$/);
  assert.match(lines[1]!, / 2\.4 s$/);
  assert.ok(renderOffloadTable([down], { color: true }).includes("\x1b[31mFAIL refused"));
});

Deno.test("LineSpinner draws nothing unless enabled, and erases itself when stopped", () => {
  let out = "";
  const spinner = new LineSpinner([], {
    enabled: true,
    write: (t) => (out += t),
    intervalMs: 60_000,
  });
  spinner.update("ssh://builder1", "canary");
  spinner.finish("ssh://builder2", "OK");
  spinner.stop();
  assert.match(out, /ssh:\/\/builder1 {2}⠋ canary\n/);
  assert.match(out, /ssh:\/\/builder2 {2}OK\n/);
  assert.ok(out.endsWith("\x1b[2A\x1b[2K\n\x1b[2K\n\x1b[2A"), JSON.stringify(out.slice(-40)));
});

Deno.test("verifyMachines() refuses to reach builders from a snapshot or a remote controller", async () => {
  const snapshot = new SnapshotTarget({
    meta: { host: "controller", collected_at: "2026-11-25T00:00:00Z", tool: "collect" },
    commands: [],
    paths: {},
    files: {},
  });
  const result = await verifyMachines(snapshot, { env: {} });
  assert.deepEqual(result.findings.map((f) => f.id), [
    "offload/controller-nix",
    "offload/remote-controller",
  ]);
  assert.equal(result.rows.length, 0);
});

Deno.test("verifyMachines() says builders are empty on a machine without any", async () => {
  const result = await verifyMachines(new LocalTarget({ timeoutMs: 20_000 }), {
    buildersOverride: "",
    env: {},
  });
  const f = result.findings.find((x) => x.id === "offload/no-builders");
  assert.ok(f, JSON.stringify(result.findings));
  assert.match(f.summary, /^builders is empty: every build runs here/);
  assert.equal(result.rows.length, 0);
});

async function script(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/verify_offload.ts`, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("verify_offload --help lists its flags, examples and runbook page", async () => {
  const { code, stdout } = await script(["--help"]);
  assert.equal(code, 0);
  for (
    const flag of ["--builder <name>", "--no-canary", "--jobs <n>", "--explain", "--flake <ref>"]
  ) {
    assert.ok(stdout.includes(flag), flag);
  }
  assert.match(stdout, /Examples:\n {2}sudo deno run -A scripts\/verify_offload\.ts/);
  assert.match(stdout, /Runbook: runbook\/verify_offload\.md/);
});

Deno.test("verify_offload exits 3 with one line for a bad flag value, --snapshot or an unknown --host", async () => {
  for (
    const [args, message] of [
      [
        ["--jobs", "0"],
        /^verify_offload: option '--jobs <n>' argument '0' is invalid\. '0' is not a whole number of at least 1\.\n$/,
      ],
      [
        ["--snapshot", "/tmp/bundle"],
        /^verify_offload: --snapshot: verify_offload proves offloading with live ssh and canary builds/,
      ],
      [
        ["--host", "builder1", "--builders", "ssh://builder2 x86_64-linux"],
        /^verify_offload: No machine 'builder1' in builders \(there are: ssh:\/\/builder2\)\n$/,
      ],
      [["--min-free", "lots"], /is not a non-negative number/],
    ] as const
  ) {
    const { code, stderr, stdout } = await script([...args]);
    assert.equal(code, 3, stderr);
    assert.match(stderr, message);
    assert.equal(stdout, "");
    assert.doesNotMatch(stderr, /\n {4}at /, "no stack trace");
  }
});
