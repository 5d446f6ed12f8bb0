import assert from "node:assert/strict";
import { ParseError } from "../lib/errors.ts";
import {
  type BuildRecord,
  BuildTracker,
  parseInternalJsonLine,
  withInternalJson,
} from "../lib/internal_json.ts";
import { buildFindings } from "../lib/watch_build.ts";

const FIXTURES = new URL("./fixtures/internal-json-2.8/", import.meta.url).pathname;

/** Feeds a captured Nix 2.8 stderr through a tracker, one second per line. */
function track(name: string): { tracker: BuildTracker; code: number; lines: string[] } {
  const text = Deno.readTextFileSync(`${FIXTURES}${name}.stderr`);
  const code = Number(Deno.readTextFileSync(`${FIXTURES}${name}.code`).trim());
  const tracker = new BuildTracker();
  const lines = text.split("\n").filter((l) => l !== "");
  lines.forEach((line, i) => {
    const event = parseInternalJsonLine(line, `${name}:${i + 1}`);
    if (event) tracker.handle(event, i * 1000);
  });
  return { tracker, code, lines };
}

function where(builds: BuildRecord[]): [string, string, string][] {
  return builds.map((b) => [b.name.replace(/-[0-9a-f]{8}$/, ""), b.machine, b.status]);
}

Deno.test("parseInternalJsonLine() reads every line Nix 2.8 printed", () => {
  for (const entry of Deno.readDirSync(FIXTURES)) {
    if (!entry.name.endsWith(".stderr")) continue;
    const lines = Deno.readTextFileSync(`${FIXTURES}${entry.name}`).split("\n").filter((l) =>
      l !== ""
    );
    for (const line of lines) {
      assert.notEqual(parseInternalJsonLine(line, entry.name), null, `${entry.name}: ${line}`);
    }
  }
});

Deno.test("BuildTracker names the builder a Nix 2.8 build ran on and how long it took", () => {
  const { tracker, code } = track("remote-ok");
  assert.equal(code, 0);
  assert.deepEqual(where(tracker.builds), [["remote-ok", "ssh://builder1", "built"]]);
  const build = tracker.builds[0]!;
  assert.equal(build.lastLine, "linking");
  // The activity spans line 12 (start) to line 35 (stop) of the capture.
  assert.equal(build.startedAt, 11_000);
  assert.equal(build.endedAt, 34_000);
  assert.deepEqual(tracker.running, []);
});

Deno.test("BuildTracker follows two derivations sent to two builders", () => {
  const { tracker } = track("remote-two");
  assert.deepEqual(where(tracker.builds), [
    ["two-a", "ssh://builder1", "built"],
    ["two-b", "ssh://builder2", "built"],
  ]);
});

Deno.test("BuildTracker counts an ssh-ng build once, on the builder, not also as local", () => {
  const { tracker, lines } = track("remote-ssh-ng");
  // The builder's own "building '...'" activity (machine "") is forwarded over ssh-ng.
  const starts = lines.filter((l) => l.includes('"type":105,') || l.includes('"type":105}'))
    .filter((l) => l.includes('"action":"start"'));
  assert.equal(starts.length, 2);
  assert.deepEqual(where(tracker.builds), [["ssh-ng", "ssh-ng://builder1", "built"]]);
});

Deno.test("BuildTracker marks a failed remote build with Nix's reason", () => {
  const { tracker, code } = track("remote-fail");
  assert.equal(code, 1);
  assert.deepEqual(where(tracker.builds), [["remote-fail", "ssh://builder1", "failed"]]);
  assert.match(
    tracker.builds[0]!.error!,
    /^build of '\/nix\/store\/\w+-remote-fail-\w+\.drv' on 'ssh:\/\/builder1' failed: builder for .* failed with exit code 3$/,
  );
  const findings = buildFindings(tracker.builds, {
    code,
    errors: tracker.errors,
    buildersConfigured: true,
  });
  assert.deepEqual(findings.map((f) => [f.id, f.status]), [
    ["watch/offloaded", "ok"],
    ["watch/build-failed", "critical"],
  ]);
  assert.match(findings[1]!.summary, /^remote-fail-\w+ failed on builder1: build of/);
});

Deno.test("BuildTracker reports a local build with an empty machine", () => {
  const { tracker } = track("local-ok");
  assert.deepEqual(where(tracker.builds), [["local-ok", "", "built"]]);
  const findings = buildFindings(tracker.builds, {
    code: 0,
    errors: [],
    buildersConfigured: true,
  });
  assert.deepEqual(findings.map((f) => [f.id, f.status]), [["watch/built-locally", "warning"]]);
});

Deno.test("buildFindings() gives Nix's own error when no build could start", () => {
  const { tracker, code } = track("no-builders");
  assert.deepEqual(tracker.builds, []);
  const findings = buildFindings(tracker.builds, {
    code,
    errors: tracker.errors,
    buildersConfigured: false,
  });
  assert.deepEqual(findings.map((f) => [f.id, f.status]), [["watch/nix-failed", "critical"]]);
  assert.equal(
    findings[0]!.summary,
    "the build did not finish: unable to start any build; either increase '--max-jobs' or enable remote builds.",
  );
});

Deno.test("parseInternalJsonLine() keeps activity ids above 2^53 exact", () => {
  const event = parseInternalJsonLine('@nix {"action":"stop","id":18014398509481985}');
  assert.deepEqual(event, { action: "stop", id: "18014398509481985" });
  assert.notEqual(String(18014398509481985), "18014398509481985");
});

Deno.test("parseInternalJsonLine() ignores plain lines and rejects broken @nix lines", () => {
  assert.equal(parseInternalJsonLine("warning: you don't have Internet access"), null);
  assert.equal(parseInternalJsonLine(""), null);
  assert.throws(() => parseInternalJsonLine('@nix {"action":"stop"'), ParseError);
  assert.throws(
    () => parseInternalJsonLine('@nix {"action":"teleport","id":1}'),
    /unknown action "teleport"/,
  );
  assert.throws(() => parseInternalJsonLine('@nix {"action":"start","id":1}'), /'level'/);
  assert.throws(() => parseInternalJsonLine("@nix [1,2]"), /not followed by a JSON object/);
});

Deno.test("parseInternalJsonLine() removes the colours Nix puts in JSON messages", () => {
  const line = String
    .raw`@nix {"action":"msg","level":0,"msg":"\u001b[31;1merror:\u001b[0m build of '\u001b[35;1m/nix/store/x.drv\u001b[0m' failed"}`;
  assert.deepEqual(parseInternalJsonLine(line), {
    action: "msg",
    level: 0,
    msg: "error: build of '/nix/store/x.drv' failed",
  });
});

Deno.test("withInternalJson() puts the flag after -L so it is the one Nix applies", () => {
  assert.deepEqual(withInternalJson(["nix", "build", "-L", "--expr", "x"]), [
    "nix",
    "build",
    "-L",
    "--expr",
    "x",
    "--log-format",
    "internal-json",
  ]);
  assert.throws(() => withInternalJson(["nix", "build", "--log-format", "bar"]), /leave it out/);
  assert.throws(() => withInternalJson(["nix", "build", "--log-format=raw"]), /leave it out/);
  assert.throws(() => withInternalJson([]), /not a Nix command/);
  assert.throws(() => withInternalJson(["sh", "-c", "nix build"]), /not a Nix command/);
});
