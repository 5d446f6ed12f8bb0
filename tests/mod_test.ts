/**
 * mod.ts is the library for people who script their own checks: the parsers, the three targets
 * and the findings model must be exported from it, and work together the way its doc says.
 */

import assert from "node:assert/strict";
import * as mod from "../mod.ts";
import {
  exitCodeFor,
  LocalTarget,
  makeReport,
  parseMachines,
  parseNixConf,
  parseSshHost,
  RecordingTarget,
  renderJson,
  shiftedColumns,
  SnapshotTarget,
  SshTarget,
  type Target,
  worstStatus,
} from "../mod.ts";

const FUNCTIONS = [
  // parsers
  "parseMachines",
  "resolveBuilders",
  "parseNixConf",
  "loadNixConf",
  "parseNixVersion",
  "parseConfigShowJson",
  "readEffectiveConfig",
  "settingList",
  "parseMeminfo",
  "parsePressure",
  "parseOomLog",
  "parseBinfmtEntry",
  "parseRegisterLine",
  "parseSshHost",
  "shellQuote",
  "parseThreshold",
  // findings
  "makeReport",
  "worstStatus",
  "exitCodeFor",
  "renderText",
  "renderJson",
  // checks callable in-process
  "checkConfig",
  "checkBinfmt",
  "healthCheck",
  // snapshots
  "loadSnapshot",
  "writeSnapshot",
] as const;

const CLASSES = [
  "LocalTarget",
  "SshTarget",
  "SnapshotTarget",
  "RecordingTarget",
  "ParseError",
  "TargetError",
  "UsageError",
] as const;

Deno.test("mod.ts exports the parsers, the findings model and the checks as functions", () => {
  const exports = mod as Record<string, unknown>;
  const missing = FUNCTIONS.filter((name) => typeof exports[name] !== "function");
  assert.deepEqual(missing, [], `mod.ts lacks ${missing.join(", ")}`);
});

Deno.test("mod.ts exports the three targets and the error classes as classes", () => {
  const exports = mod as Record<string, unknown>;
  for (const name of CLASSES) {
    const value = exports[name];
    assert.equal(typeof value, "function", `mod.ts lacks ${name}`);
    assert.match(Function.prototype.toString.call(value), /^class\b/, `${name} is not a class`);
  }
  assert.equal(typeof mod.VERSION, "string");
});

Deno.test("mod.ts parsers read the post's controller config", () => {
  const conf = parseNixConf(
    "builders = @/etc/nix/machines\nbuilders-use-substitutes = true\nmax-jobs = 0\n",
    { path: "/etc/nix/nix.conf" },
  );
  assert.equal(conf.error, undefined);
  assert.deepEqual(
    conf.lines.map((l) => l.kind === "setting" ? [l.name, l.value] : [l.kind]),
    [["builders", "@/etc/nix/machines"], ["builders-use-substitutes", "true"], ["max-jobs", "0"]],
  );

  // The post's machines line has one column too many: Nix reads `-` as max-jobs, 8 as the speed
  // factor and `1` as the only supported feature. The parser says so, and so does shiftedColumns.
  const machines = parseMachines("nixos x86_64-linux / - 8 1 kvm,big-parallel\n", {
    input: "/etc/nix/machines",
  });
  assert.deepEqual(machines.errors, []);
  const [m] = machines.machines;
  assert.ok(m);
  assert.equal(m.storeUri, "ssh://nixos");
  assert.deepEqual(m.systems, ["x86_64-linux"]);
  assert.deepEqual([m.maxJobs, m.speedFactor, m.supportedFeatures], [1, 8, ["1"]]);
  assert.deepEqual(m.mandatoryFeatures, ["big-parallel", "kvm"]);
  assert.equal(shiftedColumns(m)?.suggestion, "nixos x86_64-linux - 8 1 kvm,big-parallel");

  assert.equal(parseSshHost("ssh-ng://root@builder1?remote-store=x").destination, "root@builder1");
});

Deno.test("mod.ts targets share one interface and a script of one's own runs against each", async () => {
  // A check written against the Target interface, as the module doc suggests.
  async function coresCheck(target: Target) {
    const result = await target.run(["nproc"]);
    const cores = Number(result.stdout.trim());
    return makeReport([
      result.code === 0 && cores > 0
        ? { id: "demo/cores", status: "ok", summary: `${cores} cores` }
        : { id: "demo/cores", status: "unknown", summary: "cannot count cores" },
    ], { tool: "demo", host: target.host });
  }

  const snapshot = new SnapshotTarget({
    meta: { host: "nixos", collected_at: "2026-11-25T10:00:00Z", tool: "collect 0.1.0" },
    commands: [{ argv: ["nproc"], code: 0, stdout: "8\n", stderr: "" }],
    paths: {},
    files: {},
  });
  const fromSnapshot = await coresCheck(snapshot);
  assert.equal(fromSnapshot.status, "ok");
  assert.equal(fromSnapshot.findings[0]?.summary, "8 cores");
  assert.equal(fromSnapshot.host, "nixos");

  const local = new LocalTarget({ timeoutMs: 10_000 });
  const recording = new RecordingTarget(local);
  try {
    const fromLocal = await coresCheck(recording);
    assert.equal(fromLocal.status, "ok");
    assert.equal(exitCodeFor(fromLocal.status), 0);
    assert.equal(JSON.parse(renderJson(fromLocal)).findings[0].id, "demo/cores");
    // What the check read is a snapshot that answers the same.
    const replay = new SnapshotTarget(recording.snapshot());
    assert.equal((await replay.run(["nproc"])).stdout, (await local.run(["nproc"])).stdout);
  } finally {
    await recording.close();
  }

  const ssh = new SshTarget("builder1");
  assert.equal(ssh.kind, "ssh");
  assert.equal(ssh.host, "builder1");
  await ssh.close();

  assert.equal(worstStatus(["ok", "warning", "critical"]), "critical");
});
