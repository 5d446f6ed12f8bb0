import assert from "node:assert/strict";
import fc from "./_fast_check.ts";
import {
  type BuildFailure,
  BuildOutputParser,
  findStorePaths,
  parseBuildOutput,
  parseBuildOutputStream,
  rootFailures,
  stripAnsi,
} from "../lib/build_output.ts";

const FIXTURES = new URL("./fixtures/drv_log/", import.meta.url).pathname;

function fixture(name: string): string {
  return Deno.readTextFileSync(`${FIXTURES}${name}`);
}

/** `[name after the hash, cause, reason]` of each failure: what a reader of the output would list. */
function brief(failures: BuildFailure[]): [string, string, string][] {
  return failures.map((f) => [f.drv.slice(44), f.cause, f.reason]);
}

Deno.test("parseBuildOutput() reads Nix 2.8 nix-build: exit code, then the dependent derivation", () => {
  const summary = parseBuildOutput(fixture("nix-2.8/build-output/nix-build-dependency.txt"));
  assert.deepEqual(brief(summary.failures), [
    ["fail-exit.drv", "builder", "exit code 1"],
    ["needs-exit1.drv", "dependency", "1 dependency failed"],
  ]);
  assert.deepEqual(rootFailures(summary).map((f) => f.exitCode), [1]);
  assert.equal(summary.failures[0]!.line, 6);
});

Deno.test("parseBuildOutput() reads Nix 2.8 nix build: the '> ' log tail and the signal", () => {
  const compile = parseBuildOutput(fixture("nix-2.8/build-output/nix-cmd-compile.txt"));
  assert.equal(compile.failures[0]!.exitCode, 2);
  assert.equal(compile.failures[0]!.logTail.length, 10);
  assert.equal(
    compile.failures[0]!.logTail[2],
    "main.c:5:18: error: 'y' undeclared (first use in this function)",
  );
  assert.equal(compile.failures[0]!.logTail.at(-1), "make: *** [<builtin>: main.o] Error 1");
  const killed = parseBuildOutput(fixture("nix-2.8/build-output/nix-cmd-signal9.txt"));
  assert.deepEqual(brief(killed.failures), [["fail-signal9.drv", "builder", "signal 9 (Killed)"]]);
  assert.equal(killed.failures[0]!.signal, 9);
  assert.deepEqual(killed.failures[0]!.logTail, ["about to be killed"]);
  const tests = parseBuildOutput(fixture("nix-2.8/build-output/nix-cmd-tests.txt"));
  assert.equal(tests.failures[0]!.logTail[5], "", "an empty '>' line is an empty log line");
});

Deno.test("parseBuildOutput() reads Nix 2.8's 'failed to produce output path' as a missing output", () => {
  const summary = parseBuildOutput(fixture("nix-2.8/build-output/nix-build-missing-output.txt"));
  assert.deepEqual(brief(summary.failures), [[
    "no-output.drv",
    "missing-output",
    "did not produce output 'out'",
  ]]);
});

Deno.test("parseBuildOutput() reads Nix 1.11's curly quotes and 'couldn't be built' lines", () => {
  const summary = parseBuildOutput(fixture("build-output/nix-1.11-packer.txt"));
  assert.deepEqual(brief(summary.failures), [
    ["go1.6-packer-20160507-4e5f651.drv", "builder", "exit code 23"],
    ["packer-0.10.1.drv", "dependency", "1 dependency failed"],
    ["all.drv", "dependency", "1 dependency failed"],
  ]);
  assert.deepEqual(summary.topLevel, ["/nix/store/srdn87lbjyf1g9ry1lghqcd15yv10jw1-all.drv"]);
});

Deno.test("parseBuildOutput() reads Nix 2.3's inline 'last 10 log lines' indented by two spaces", () => {
  const summary = parseBuildOutput(fixture("build-output/nix-2.3-e2fsprogs-tests.txt"));
  const [root, ...deps] = summary.failures;
  assert.equal(root!.drv, "/nix/store/8hk9h8rc1vp258haxrnhfhpa6nbhx6ly-e2fsprogs-1.45.5.drv");
  assert.equal(root!.exitCode, 2);
  assert.equal(root!.logTail.length, 10);
  assert.equal(root!.logTail[6], "Tests failed: d_fallocate_blkmap ");
  assert.equal(deps.length, 5);
  assert.ok(deps.every((d) => d.cause === "dependency" && d.logTail.length === 0));
});

Deno.test("parseBuildOutput() reads Nix 2.3 nixos-rebuild output with the building lines before", () => {
  const summary = parseBuildOutput(fixture("build-output/nix-2.3-b43-firmware.txt"));
  assert.deepEqual(rootFailures(summary).map((f) => [f.drv.slice(44), f.exitCode]), [
    ["b43-firmware-5.100.138.drv", 126],
  ]);
  assert.equal(summary.topLevel.length, 1);
});

Deno.test("parseBuildOutput() reads Nix 2.0's signal 9 and 1.11's ld killed by the OOM killer", () => {
  assert.deepEqual(brief(parseBuildOutput(fixture("build-output/nix-2.0-signal-9.txt")).failures), [
    ["simple.drv", "builder", "signal 9 (Killed)"],
  ]);
  const summary = parseBuildOutput(fixture("build-output/nix-1.11-ld-killed.txt"));
  assert.deepEqual(brief(rootFailures(summary)), [[
    "blaze-builder-0.4.0.1.drv",
    "builder",
    "exit code 1",
  ]]);
});

Deno.test("parseBuildOutput() reads the 2.4pre '--- Error ---' hash mismatch of a fixed-output derivation", () => {
  const summary = parseBuildOutput(fixture("build-output/nix-2.4pre-hash-mismatch.txt"));
  assert.deepEqual(brief(summary.failures), [
    ["source.drv", "hash-mismatch", "hash mismatch in fixed-output derivation"],
  ]);
});

Deno.test("parseBuildOutput() reads 2.4–2.1x 'error: builder for ...;' with the tail on the next lines", () => {
  for (
    const [file, name, lines] of [
      ["build-output/nix-2.4pre-nix-portable.txt", "hello-2.10.drv", 10],
      ["build-output/nix-2.11-permission-denied.txt", "foobar.drv", 2],
      ["build-output/nix-2.11-httpie-tests.txt", "python3.10-httpie-3.2.1.drv", 10],
      ["build-output/nix-2.2x-darwin-shellcheck.txt", "darwin-system-24.11.cae8d1c.drv", 7],
      ["build-output/lix-format.txt", "fail-compile.drv", 3],
    ] as const
  ) {
    const [failure] = parseBuildOutput(fixture(file)).failures;
    assert.equal(failure!.drv.slice(44), name, file);
    assert.equal(failure!.cause, "builder", file);
    assert.equal(failure!.logTail.length, lines, file);
  }
  const portable = parseBuildOutput(fixture("build-output/nix-2.4pre-nix-portable.txt"))
    .failures[0]!;
  assert.equal(portable.logTail[0], "patching sources");
  assert.equal(portable.logTail[1], "configuring");
});

Deno.test("parseBuildOutput() reads nixos-rebuild 22.11: one builder and a chain of dependencies", () => {
  const summary = parseBuildOutput(fixture("build-output/nix-2.11-languagetool.txt"));
  assert.deepEqual(brief(rootFailures(summary)), [[
    "languagetool.conf.drv",
    "builder",
    "exit code 141",
  ]]);
  assert.equal(summary.failures.filter((f) => f.cause === "dependency").length, 4);
});

Deno.test("parseBuildOutput() reads 2.2x+ 'Cannot build' blocks with their Reason line", () => {
  const deps = parseBuildOutput(fixture("build-output/nix-2.33pre-dependencies-failed.txt"));
  assert.deepEqual(brief(deps.failures), [
    ["nix-cmd-2.33pre20251107_479b6b73.drv", "dependency", "5 dependencies failed"],
    ["nix-fetchers-c-2.33pre20251107_479b6b73.drv", "dependency", "3 dependencies failed"],
  ]);
  assert.deepEqual(rootFailures(deps), []);
});

Deno.test("parseBuildOutput() takes the builder a remote build ran on from 'build of ... on ssh://'", () => {
  const remote = parseBuildOutput(fixture("build-output/nix-2.30-remote-missing-output.txt"));
  const [failure] = remote.failures;
  assert.equal(failure!.host, "ssh://agent-2");
  // The output-path error is kept: the later "Reason: builder failed with exit code 1" is known to
  // be wrong for it (NixOS/nix#13509).
  assert.equal(failure!.cause, "missing-output");
  assert.deepEqual(failure!.logTail, ["hi"]);
  const ssh = parseBuildOutput(fixture("build-output/nix-2.28-remote-ssh.txt")).failures[0]!;
  assert.equal(ssh.host, "ssh://agent-2");
  assert.equal(ssh.reason, "did not produce output 'man'");
  const ng = parseBuildOutput(fixture("build-output/nix-2.0-ssh-ng-setup.txt")).failures[0]!;
  assert.equal(ng.host, "ssh-ng://nix-ssh@<redacted>?ssh-key=<redacted>");
  assert.match(ng.reason, /^while setting up the build environment: getting attributes of path/);
});

Deno.test("parseBuildOutput() takes a failure from 'nix log <drv>' when the paste starts mid-block", () => {
  const summary = parseBuildOutput(fixture("build-output/nix-2.2x-cachyos-partial.txt"));
  assert.deepEqual(brief(rootFailures(summary)), [
    ["linux-src-patched.drv", "builder", "builder failed (Nix pointed to its log)"],
  ]);
});

Deno.test("parseBuildOutput() reads leading-space 'error:' lines and ignores the phase lines after them", () => {
  const summary = parseBuildOutput(fixture("build-output/nix-2.2x-unpack-phase.txt"));
  assert.deepEqual(summary.failures.map((f) => [f.drv.slice(44), f.logTail[0]]), [
    ["cargo-1.90.0-x86_64-unknown-linux-gnu.drv", "Running phase: unpackPhase"],
    ["rust-docs-1.90.0-x86_64-unknown-linux-gnu.drv", "Running phase: unpackPhase"],
  ]);
});

Deno.test("parseBuildOutput() finds no failing derivation when Nix could not start any build", () => {
  const summary = parseBuildOutput(fixture("build-output/nix-2.3-no-ssh.txt"));
  assert.deepEqual(summary.failures, []);
  assert.equal(summary.lines, 5);
});

Deno.test("parseBuildOutput() reads the darwin linux-builder output after a failed ssh connection", () => {
  const summary = parseBuildOutput(fixture("build-output/nix-2.2x-linux-builder.txt"));
  assert.deepEqual(brief(rootFailures(summary)), [[
    "append-initrd-secrets.drv",
    "builder",
    "exit code 126",
  ]]);
});

Deno.test("parseBuildOutput() reads the platform and no-machine messages as never built", () => {
  const summary = parseBuildOutput([
    "error: a 'aarch64-linux' with features {} is required to build '/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv', but I am a 'x86_64-linux' with features {benchmark, big-parallel, nixos-test}",
    "Failed to find a machine for remote build!",
    "derivation: nd5khd77vzrz3j5ip46qb3gv61i7rygz-hello.drv",
    "required (system, features): (x86_64-linux, [])",
  ].join("\n"));
  assert.deepEqual(summary.failures.map((f) => [f.drv.slice(44), f.cause]), [
    ["fail.drv", "platform"],
    ["hello.drv", "no-machine"],
  ]);
  assert.match(
    summary.failures[0]!.reason,
    /needs a 'aarch64-linux', this machine is 'x86_64-linux'/,
  );
  assert.deepEqual(rootFailures(summary), []);
});

Deno.test("parseBuildOutput() strips ANSI colours around the paths newer Nix prints on a terminal", () => {
  const summary = parseBuildOutput(
    "error: builder for '\x1b[35;1m/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv\x1b[0m' failed with exit code 1;",
  );
  assert.equal(summary.failures[0]!.drv, "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv");
  assert.equal(stripAnsi("\x1b]8;;https://gcc.gnu.org\x1b\\-Wunused\x1b]8;;\x1b\\"), "-Wunused");
});

Deno.test("parseBuildOutput() records a hostile path as ignored, never as a failure", () => {
  const summary = parseBuildOutput(
    "error: builder for '/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-x$(touch /tmp/pwned).drv' failed with exit code 1",
  );
  assert.deepEqual(summary.failures, []);
  assert.equal(summary.ignored.length, 1);
  assert.match(summary.ignored[0]!.reason, /whitespace/);
});

Deno.test("parseBuildOutputStream() gives the same result as the text parser, whatever the chunking", async () => {
  const text = fixture("build-output/nix-2.3-e2fsprogs-tests.txt");
  const bytes = new TextEncoder().encode(text);
  const expected = parseBuildOutput(text);
  for (const size of [1, 7, 64, 4096]) {
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.slice(i, i + size));
    assert.deepEqual(await parseBuildOutputStream(ReadableStream.from(chunks)), expected);
  }
});

Deno.test("BuildOutputParser never throws on arbitrary lines and only reports valid store paths", () => {
  fc.assert(
    fc.property(fc.array(fc.string({ maxLength: 200 }), { maxLength: 30 }), (lines) => {
      const parser = new BuildOutputParser();
      for (const line of lines) parser.push(line);
      for (const failure of parser.finish().failures) {
        assert.match(failure.drv, /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$/);
      }
    }),
    { numRuns: 10_000 },
  );
});

Deno.test("findStorePaths() lists each valid store path once, in order", () => {
  assert.deepEqual(
    findStorePaths(fixture("build-output/nix-2.30-remote-missing-output.txt")),
    [
      "/nix/store/pmjy7fp4v6jjb1v06fasrzgs4sg2rvam-test.drv",
      "/nix/store/pmjy7fp4v6jjb1v06fasrzgs4sg2rvam-test.drv.chroot",
      "/nix/store/3q3hxld9r4i7x4xwp5m8hn7kbln76c2r-test",
    ],
  );
});

Deno.test("parseBuildOutput() reads a Nix 2.8 remote build: the builder, the real exit code, the inline log", () => {
  const [failure, ...rest] = parseBuildOutput(
    fixture("nix-2.8/build-output/nix-build-remote-ssh.txt"),
  ).failures;
  assert.deepEqual(rest, []);
  assert.equal(failure!.host, "ssh://builder1");
  // The second line reports the build hook's exit code (1); the builder's own was 2.
  assert.equal(failure!.exitCode, 2);
  assert.equal(failure!.reason, "exit code 2");
  assert.deepEqual(failure!.logTail, [
    "Running phase: buildPhase",
    "cc -c -o main.o main.c  # 3b4b209d",
    "main.c:3:7: error: 'y' undeclared (first use in this function)",
    "make: *** [Makefile:2: main.o] Error 1",
  ]);
});
