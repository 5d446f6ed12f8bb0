import assert from "node:assert/strict";
import { exitCodeFor, makeReport, renderJson, renderText, worstStatus } from "../lib/findings.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { RecordingTarget, redactSecrets, writeSnapshot } from "../lib/recording_target.ts";
import { loadSnapshot, SnapshotTarget } from "../lib/snapshot_target.ts";
import { runDoctor } from "../lib/doctor.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function runScript(script: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/${script}`, ...args],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("worstStatus() ranks critical over warning over unknown over ok", () => {
  assert.equal(worstStatus(["ok", "unknown"]), "unknown");
  assert.equal(worstStatus(["unknown", "warning"]), "warning");
  assert.equal(worstStatus(["warning", "critical", "ok"]), "critical");
});

Deno.test("exitCodeFor() follows monitoring-plugins: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN", () => {
  assert.deepEqual(
    (["ok", "warning", "critical", "unknown"] as const).map(exitCodeFor),
    [0, 1, 2, 3],
  );
});

Deno.test("renderText() aligns findings and puts a fix line under problems only", () => {
  const report = makeReport([
    { id: "a/ok", status: "ok", summary: "fine", fix: "never shown" },
    {
      id: "machines/missing-file",
      status: "critical",
      summary: "gone",
      fix: "create it\nthen this",
    },
  ], { tool: "t", host: "h" });
  assert.equal(
    renderText(report, { color: false }),
    [
      "t on h: CRITICAL",
      "OK        a/ok                   fine",
      "CRITICAL  machines/missing-file  gone",
      "                                 fix: create it",
      "                                      then this",
      "",
    ].join("\n"),
  );
});

Deno.test("renderText() colours only when asked", () => {
  const report = makeReport([{ id: "a/b", status: "warning", summary: "s" }], {
    tool: "t",
    host: "h",
  });
  assert.ok(renderText(report, { color: true }).includes("\x1b[33mWARNING"));
  assert.ok(!renderText(report, { color: false }).includes("\x1b"));
});

Deno.test("renderJson() prints the stable report shape", () => {
  const report = makeReport([{ id: "a/b", status: "unknown", summary: "s" }], {
    tool: "t",
    host: "h",
    data: { x: 1 },
  });
  assert.deepEqual(JSON.parse(renderJson(report)), {
    tool: "t",
    version: report.version,
    host: "h",
    status: "unknown",
    findings: [{ id: "a/b", status: "unknown", summary: "s" }],
    data: { x: 1 },
  });
});

Deno.test("redactSecrets() blanks access-tokens in nix.conf and in nix config JSON", () => {
  assert.equal(
    redactSecrets("extra-access-tokens = github.com=ghp_abc\nmax-jobs = 0\n"),
    "extra-access-tokens = <redacted>\nmax-jobs = 0\n",
  );
  const json = redactSecrets(
    '{"access-tokens":{"aliases":[],"defaultValue":{},"description":"d","value":{"github.com":"ghp_abc"}}}',
  );
  assert.doesNotMatch(json, /ghp_abc/);
  assert.equal(JSON.parse(json)["access-tokens"].value, "<redacted>");
});

Deno.test("RecordingTarget never copies a private key into the bundle", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/id_ed25519`, "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    const recording = new RecordingTarget(new LocalTarget());
    assert.match((await recording.readFile(`${dir}/id_ed25519`)) ?? "", /PRIVATE KEY/);
    await writeSnapshot(`${dir}/bundle`, recording.snapshot());
    const loaded = await loadSnapshot(`${dir}/bundle`);
    assert.equal(loaded.files[`${dir}/id_ed25519`], undefined);
    await assert.rejects(
      new SnapshotTarget(loaded).readFile(`${dir}/id_ed25519`),
      /redacted from this snapshot/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SnapshotTarget tells an absent file from one that was not captured", async () => {
  const target = new SnapshotTarget({
    meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [],
    paths: { "/etc/nix/machines": { exists: false } },
    files: {},
  });
  assert.equal(await target.readFile("/etc/nix/machines"), null);
  await assert.rejects(target.readFile("/etc/nix/nix.conf"), /not captured in this snapshot/);
  assert.equal((await target.run(["nix", "--version"])).failure, "not-captured");
});

Deno.test("loadSnapshot() names the file and field that is wrong", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/meta.json`, '{"host": 3}');
    await assert.rejects(loadSnapshot(dir), /meta\.json: host: /);
    await Deno.writeTextFile(`${dir}/meta.json`, "{not json");
    await assert.rejects(loadSnapshot(dir), /meta\.json:1:2: not valid JSON/);
    await Deno.writeTextFile(
      `${dir}/meta.json`,
      '{"host":"h","collected_at":"2026-11-25T00:00:00Z","tool":"t"}',
    );
    await Deno.writeTextFile(`${dir}/paths.json`, '{"../../etc/shadow": {"exists": true}}');
    await assert.rejects(loadSnapshot(dir), /not absolute/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("doctor.ts --snapshot on a collect.ts bundle gives the findings collect saw live", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const collected = await runScript("collect.ts", ["--output", `${dir}/bundle`]);
    assert.equal(collected.code, 0, collected.stderr);
    assert.match(collected.stdout, /^collect: wrote /);
    const replay = await runScript("doctor.ts", ["--json", "--snapshot", `${dir}/bundle`]);
    const live = JSON.parse(await Deno.readTextFile(`${dir}/bundle/report.json`));
    const view = (report: { findings: { id: string; status: string; summary: string }[] }) =>
      report.findings.map((f) => [f.id, f.status, f.summary]);
    assert.deepEqual(view(JSON.parse(replay.stdout)), view(live));
    assert.equal(replay.code, { ok: 0, warning: 1, critical: 2, unknown: 3 }[live.status as "ok"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a collect.ts bundle answers every read-only script: nothing 'not captured'", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const collected = await runScript("collect.ts", ["--output", `${dir}/bundle`]);
    assert.equal(collected.code, 0, collected.stderr);
    for (const script of ["doctor.ts", "show_config.ts", "health_check.ts", "check_binfmt.ts"]) {
      const replay = await runScript(script, ["--json", "--snapshot", `${dir}/bundle`]);
      const report = JSON.parse(replay.stdout) as {
        findings: { id: string; summary: string; detail?: string }[];
      };
      const gaps = report.findings.filter((f) =>
        /not captured/.test(`${f.summary}\n${f.detail ?? ""}`)
      ).map((f) => `${f.id}: ${f.summary}`);
      assert.deepEqual(gaps, [], script);
    }
    const oom = await runScript("oom_mitigate.ts", ["--json", "--snapshot", `${dir}/bundle`]);
    assert.ok(!/not captured/.test(oom.stdout), oom.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runDoctor() on a machine without nix reports nix/missing as CRITICAL, not a crash", async () => {
  const target = new SnapshotTarget({
    meta: { host: "fresh", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [{
      argv: ["nix", "--version"],
      code: 127,
      stdout: "",
      stderr: "",
      failure: "not-found",
    }],
    paths: {},
    files: {},
  });
  const result = await runDoctor(target);
  assert.equal(result.role, "unconfigured");
  assert.equal(result.steps[0]?.findings[0]?.id, "nix/missing");
  assert.equal(result.steps[0]?.findings[0]?.status, "critical");
});

Deno.test("doctor.ts without nix on PATH exits 2 with nix/missing", async () => {
  const result = await runScript("doctor.ts", ["--json", "--no-builders"], {
    PATH: "/nonexistent",
  });
  assert.equal(result.code, 2, result.stderr);
  assert.equal(JSON.parse(result.stdout).findings[0].id, "nix/missing");
});

Deno.test("a bad flag exits 3 with one line naming it", async () => {
  const result = await runScript("doctor.ts", ["--timeout", "-5"]);
  assert.equal(result.code, 3);
  assert.equal(result.stderr.trim().split("\n").length, 1);
  assert.match(result.stderr, /--timeout/);
});

Deno.test("--host and --snapshot together exit 3 with one line", async () => {
  const result = await runScript("doctor.ts", ["--host", "h", "--snapshot", "/tmp/x"]);
  assert.equal(result.code, 3);
  assert.equal(
    result.stderr.trim(),
    "doctor: --host and --snapshot cannot be used both: pick where to look",
  );
});

Deno.test("a hostile --host is refused with exit 3 before anything runs", async () => {
  const result = await runScript("doctor.ts", ["--host", "-oProxyCommand=touch"]);
  assert.equal(result.code, 3);
  assert.match(result.stderr, /starts with '-'/);
});

Deno.test("--help lists examples and the exit codes", async () => {
  const result = await runScript("doctor.ts", ["--help"]);
  assert.equal(result.code, 0);
  assert.ok(result.stdout.includes("Examples:\n  deno task doctor"));
  assert.match(result.stdout, /Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN/);
});

Deno.test("doctor on a fresh Nix install says it was read as a builder and points to setup.md", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const env = { NIX_CONF_DIR: dir, NIX_USER_CONF_FILES: "" };
    await Deno.writeTextFile(`${dir}/nix.conf`, "");
    const fresh = await runScript("doctor.ts", ["--no-builders"], env);
    assert.match(
      fresh.stdout,
      /\nNothing here offloads builds \(no machines and max-jobs ≠ 0\), so this machine was checked as a builder\.\nTo send builds to remote builders from here, start at runbook\/setup\.md\.\n/,
    );
    // A builder that serves someone (a trusted ssh user) is not told to set up offloading.
    await Deno.writeTextFile(`${dir}/nix.conf`, "trusted-users = root nixremote\n");
    const builder = await runScript("doctor.ts", ["--no-builders"], env);
    assert.match(builder.stdout, /Summary \(builder\)/);
    assert.doesNotMatch(builder.stdout, /runbook\/setup\.md/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
