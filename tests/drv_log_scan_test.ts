import assert from "node:assert/strict";
import fc from "./_fast_check.ts";
import {
  classifyLine,
  countNewlines,
  type LogScan,
  LogScanner,
  scanLog,
  scanLogFile,
  scanLogText,
  tailFile,
} from "../lib/log_scan.ts";
import { logFindings, renderLogView } from "../lib/log_view.ts";
import { parseBuildOutput } from "../lib/build_output.ts";

const FIXTURES = new URL("./fixtures/drv_log/", import.meta.url).pathname;
const LOGS = `${FIXTURES}nix-2.8/logs/`;

async function scanFixture(name: string, options = {}): Promise<LogScan> {
  return await scanLogFile(`${FIXTURES}${name}`, options);
}

Deno.test("scanLogFile() finds gcc's first error in a real make + gcc log, not the warning or make's line", async () => {
  const scan = await scanFixture("nix-2.8/logs/compile.log");
  assert.equal(scan.lines, 11);
  assert.equal(scan.lastPhase?.phase, "buildPhase");
  assert.equal(scan.primary?.line, 4);
  assert.equal(scan.primary?.rule, "compiler-error");
  assert.equal(
    scan.primary?.text,
    "main.c:5:18: error: 'y' undeclared (first use in this function)",
  );
  assert.deepEqual(scan.matches.map((m) => [m.line, m.rule]), [[4, "compiler-error"], [
    11,
    "make-error",
  ]]);
  // gcc's OSC 8 hyperlink around the warning option is removed from the text shown.
  assert.equal(
    scan.groups[0]!.lines.find((l) => l.line === 8)?.text,
    "main.c:4:7: warning: unused variable 'x' [-Wunused-variable]",
  );
});

Deno.test("scanLogFile() classifies each real Nix 2.8 failure log by its cause", async () => {
  const expected: [string, number | undefined, string | undefined][] = [
    ["link-missing-lib.log", 3, "linker-error"],
    ["link-undefined.log", 4, "linker-error"],
    ["cmake.log", 7, "cmake-error"],
    ["python-unittest.log", 4, "test-failure"],
    ["pkg-config-missing.log", 2, "pkg-config-missing"],
    ["killed-cc1.log", 3, "oom-killed"],
    ["virtual-memory-exhausted.log", 3, "out-of-memory"],
    ["bash-killed.log", 2, "oom-killed"],
    ["hello.log", undefined, undefined],
  ];
  for (const [file, line, rule] of expected) {
    const scan = await scanLogFile(`${LOGS}${file}`);
    assert.equal(scan.primary?.line, line, file);
    assert.equal(scan.primary?.rule, rule, file);
  }
});

Deno.test("scanLogFile() takes the last phase from 'Running phase:' markers", async () => {
  assert.equal(
    (await scanFixture("nix-2.8/logs/python-unittest.log")).lastPhase?.phase,
    "checkPhase",
  );
  assert.equal(
    (await scanFixture("nix-2.8/logs/pkg-config-missing.log")).lastPhase?.phase,
    "configurePhase",
  );
});

Deno.test("scanLogText() takes the last phase from old stdenv headers and '@nix setPhase' lines", () => {
  const portable = parseBuildOutput(
    Deno.readTextFileSync(`${FIXTURES}build-output/nix-2.4pre-nix-portable.txt`),
  ).failures[0]!;
  const legacy = scanLogText(portable.logTail.join("\n") + "\n");
  assert.deepEqual(legacy.phases.map((p) => [p.phase, p.line, p.marker]), [
    ["patchPhase", 1, "header"],
    ["configurePhase", 2, "header"],
  ]);
  assert.equal(legacy.primary?.rule, "configure-error");
  const unpack = parseBuildOutput(
    Deno.readTextFileSync(`${FIXTURES}build-output/nix-2.2x-unpack-phase.txt`),
  );
  const setPhase = scanLogText('@nix { "action": "setPhase", "phase": "unpackPhase" }\n');
  assert.equal(setPhase.lastPhase?.marker, "set-phase");
  const cargo = scanLogText(unpack.failures[0]!.logTail.join("\n") + "\n");
  assert.equal(cargo.lastPhase?.phase, "unpackPhase");
  assert.equal(cargo.primary?.rule, "stdenv-error");
  // A header is a whole line: "building foo" or "  configuring" are not phase markers.
  assert.deepEqual(scanLogText("building foo\n  configuring\nbuildingx\n").phases, []);
});

Deno.test("scanLogFile() reads make errors of a real kernel build and ninja/cargo output as make errors", async () => {
  const kernel = await scanFixture("logs/nix-2.29-rpi-kernel-make.log");
  assert.equal(kernel.primary?.line, 8);
  assert.equal(kernel.primary?.kind, "make");
  const fractal = await scanFixture("logs/fractal-ninja-cargo.log");
  assert.deepEqual(fractal.matches.map((m) => m.line), [3, 5]);
});

Deno.test("scanLogFile() shows binary logs escaped, and counts a last line without newline", async () => {
  const binary = await scanFixture("nix-2.8/logs/binary.log");
  assert.equal(binary.binary, true);
  assert.deepEqual(binary.tail.map((l) => l.text), ["before\\x00\\x01\\x02binary", "after"]);
  const open = await scanFixture("nix-2.8/logs/no-trailing-newline.log");
  assert.equal(open.lines, 1);
  assert.equal(open.endsWithNewline, false);
  assert.deepEqual(open.tail, [{ line: 1, text: "no newline at the end" }]);
  const empty = await scanFixture("nix-2.8/logs/empty.log");
  assert.deepEqual([empty.bytes, empty.lines, empty.tail.length, empty.endsWithNewline], [
    0,
    0,
    0,
    true,
  ]);
});

Deno.test("classifyLine() leaves warnings, configure probes and '0 failed' summaries alone", () => {
  for (
    const text of [
      "checking for strerror... yes",
      "main.c:4:7: warning: unused variable 'x' [-Werror=unused-variable]",
      "gcc -Werror=format-security -c error.c -o error.o",
      "100% tests passed, 0 tests failed out of 12",
      "# FAIL:  0",
      "-- Looking for strerror_r - found",
    ]
  ) {
    assert.equal(classifyLine(text).rule, undefined, text);
  }
  assert.equal(classifyLine("# FAIL:  2").rule?.kind, "test");
  assert.equal(classifyLine("error[E0308]: mismatched types").rule?.id, "compiler-error");
  assert.equal(
    classifyLine("collect2: fatal error: ld terminated with signal 9 [Killed]").rule?.kind,
    "oom",
  );
  assert.equal(
    classifyLine("/build/source/configure: line 12: pkg-config: command not found").rule?.id,
    "command-not-found",
  );
  assert.equal(classifyLine("/bin/sh: 1: qemu-aarch64: Exec format error").rule?.id, "exec-format");
  assert.equal(
    classifyLine('meson.build:12:0: ERROR: Dependency "glib-2.0" not found').rule?.id,
    "meson-error",
  );
});

/** A synthetic log: numbered filler lines with error lines at the given line numbers. */
function makeLog(lines: number, errors: Record<number, string>): string {
  const out: string[] = [];
  for (let i = 1; i <= lines; i++) {
    out.push(errors[i] ?? `cc -c -o obj/file${i}.o src/file${i}.c -O2 -Wall`);
  }
  return out.join("\n") + "\n";
}

Deno.test("LogScanner gives the same result whatever the chunk size and push sizes", () => {
  const text = makeLog(5000, {
    1: "Running phase: unpackPhase",
    2000: "Running phase: buildPhase",
    2101: "src/a.c:1:2: error: first",
    2103: "src/b.c:3:4: error: second",
    4800: "make: *** [Makefile:1: all] Error 1",
  });
  const bytes = new TextEncoder().encode(text);
  const reference = scanLogText(text, { tail: 5 });
  assert.equal(reference.primary?.line, 2101);
  assert.deepEqual(reference.groups.map((g) => [g.lines[0]!.line, g.lines.at(-1)!.line]), [[
    2098,
    2106,
  ], [4797, 4803]]);
  for (const chunkSize of [4096, 5000, 65536]) {
    for (const push of [1, 333, 8192]) {
      const scanner = new LogScanner({ tail: 5, chunkSize });
      for (let i = 0; i < bytes.length; i += push) scanner.push(bytes.subarray(i, i + push));
      assert.deepEqual(scanner.finish(), reference, `chunkSize ${chunkSize}, push ${push}`);
    }
  }
});

Deno.test("LogScanner keeps the first groups, the likely cause and the last groups of a noisy log", () => {
  const errors: Record<number, string> = {};
  for (let i = 1; i <= 30; i++) errors[i * 100] = `FAIL: test_${i}`;
  errors[2550] = "g++: fatal error: Killed signal terminated program cc1plus";
  const scan = scanLogText(makeLog(4000, errors));
  assert.equal(scan.groupCount, 31);
  assert.equal(scan.primary?.line, 2550);
  assert.deepEqual(
    scan.groups.map((g) => g.matches[0]!.line),
    [100, 200, 300, 400, 500, 600, 2550, 2900, 3000],
  );
  assert.equal(scan.matchCount, 31);
});

Deno.test("LogScanner cuts a group at 40 lines and never repeats a line in the next group", () => {
  const errors: Record<number, string> = {};
  for (let i = 10; i <= 100; i++) errors[i] = `src/x.c:${i}:1: error: e${i}`;
  const scan = scanLogText(makeLog(200, errors));
  const seen = scan.groups.flatMap((g) => g.lines.map((l) => l.line));
  assert.equal(new Set(seen).size, seen.length);
  assert.ok(scan.groups.every((g) => g.lines.length <= 43));
});

Deno.test("LogScanner survives a line longer than its chunk, cutting only what it shows", () => {
  const long = "x".repeat(100_000) + " error: at the end";
  const scan = scanLogText(`first\n${long}\nlast line\n`, { chunkSize: 4096 });
  assert.equal(scan.lines, 3);
  assert.deepEqual(scan.tail.map((l) => l.line), [1, 2, 3]);
  assert.equal(scan.tail[2]!.text, "last line");
  assert.match(scan.tail[1]!.text, /^x{2000}… \[line cut, \d+ more bytes\]$/);
});

Deno.test("scanLog() streams a 300 MB generated log in bounded memory and finds its error", async () => {
  const line = new TextEncoder().encode(`${"compiling module".padEnd(90, ".")}\n`);
  const block = new Uint8Array(line.length * 10_000);
  for (let i = 0; i < 10_000; i++) block.set(line, i * line.length);
  const blocks = Math.ceil(300e6 / block.length);
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent === Math.floor(blocks / 2)) {
        controller.enqueue(new TextEncoder().encode("src/x.c:1:1: error: here\n"));
      }
      if (sent++ < blocks) controller.enqueue(block);
      else controller.close();
    },
  });
  const before = Deno.memoryUsage().rss;
  const scan = await scanLog(stream, { tail: 3 });
  const grown = Deno.memoryUsage().rss - before;
  assert.equal(scan.lines, blocks * 10_000 + 1);
  assert.equal(scan.primary?.line, Math.floor(blocks / 2) * 10_000 + 1);
  assert.equal(scan.tail.length, 3);
  assert.ok(grown < 100 << 20, `RSS grew by ${grown >> 20} MiB`);
});

Deno.test("countNewlines() agrees with a plain count at every alignment", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(8), (bytes, offset) => {
      const buf = new Uint8Array(bytes.length + 8);
      buf.set(bytes, offset);
      const view = buf.subarray(offset, offset + bytes.length);
      assert.equal(countNewlines(view), bytes.filter((b) => b === 10).length);
    }),
    { numRuns: 5000 },
  );
});

Deno.test("LogScanner never throws and counts lines exactly on arbitrary bytes", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 2000 }),
      fc.integer({ min: 1, max: 500 }),
      (bytes, push) => {
        const scanner = new LogScanner({ tail: 3, chunkSize: 4096 });
        for (let i = 0; i < bytes.length; i += push) scanner.push(bytes.subarray(i, i + push));
        const scan = scanner.finish();
        const newlines = bytes.filter((b) => b === 10).length;
        const last = bytes.at(-1);
        assert.equal(scan.lines, newlines + (bytes.length > 0 && last !== 10 ? 1 : 0));
        assert.equal(scan.bytes, bytes.length);
      },
    ),
    { numRuns: 3000 },
  );
});

Deno.test("tailFile() reads only the end of a file and matches a full scan's tail", async () => {
  const path = await Deno.makeTempFile();
  try {
    const text = makeLog(20_000, {});
    await Deno.writeTextFile(path, text);
    const tail = await tailFile(path, 100);
    const scan = scanLogText(text, { tail: 100 });
    assert.deepEqual(tail.map((l) => l.text), scan.tail.map((l) => l.text));
    assert.equal(tail[0]!.line, -100);
    await Deno.writeTextFile(path, "a\nb");
    assert.deepEqual((await tailFile(path, 5)).map((l) => l.text), ["a", "b"]);
    await Deno.writeTextFile(path, "");
    assert.deepEqual(await tailFile(path, 5), []);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("renderLogView() shows the failure first and does not repeat excerpt lines in the tail", async () => {
  const scan = await scanFixture("nix-2.8/logs/cmake.log");
  const text = renderLogView(scan, {
    drv: "/nix/store/anpn33dbr3pzf8p1a27ngpw4x5m3ac5r-fail-cmake.drv",
    source: "nix-store -l on localhost",
  }, { view: "default" });
  const lines = text.split("\n");
  assert.equal(lines[0], "── /nix/store/anpn33dbr3pzf8p1a27ngpw4x5m3ac5r-fail-cmake.drv");
  assert.equal(lines[1], "log: nix-store -l on localhost · 25 lines · 1.0 KiB");
  assert.match(text, /likely cause: line 7: cmake failed: usually a missing dependency/);
  assert.match(text, /> {4}7 │ CMake Error at CMakeLists.txt:3 \(find_package\):/);
  assert.match(text, /end of the log \(lines 11–25\):/);
  assert.equal(text.match(/ 7 │ CMake Error/g)?.length, 1);
  const errorsOnly = renderLogView(scan, { drv: "d", source: "s" }, { view: "errors" });
  assert.doesNotMatch(errorsOnly, /end of the log|last \d+ lines/);
  const tailOnly = renderLogView(
    await scanLogFile(`${LOGS}cmake.log`, { errors: false, tail: 2 }),
    { drv: "d", source: "s" },
    { view: "tail" },
  );
  assert.match(
    tailOnly,
    /last 2 lines of 25:\n {4}24 │ -- Configuring incomplete, errors occurred!\n {4}25 │ See also/,
  );
});

Deno.test("logFindings() points an OOM kill to the OOM runbook and a full disk to garbage collection", () => {
  const oom = logFindings(
    scanLogText("collect2: fatal error: ld terminated with signal 9 [Killed]\n"),
    "x.drv",
    "builder1",
  );
  assert.deepEqual(oom.map((f) => [f.id, f.status]), [["log/oom-killed", "warning"]]);
  assert.equal(oom[0]!.summary, "the build of x.drv on builder1 was killed or ran out of memory");
  assert.match(oom[0]!.fix!, /runbook\/oom_mitigate\.md/);
  const disk = logFindings(
    scanLogText("cp: error writing 'x': No space left on device\n"),
    "x.drv",
    undefined,
  );
  assert.equal(disk[0]!.id, "log/disk-full");
  assert.match(disk[0]!.fix!, /Free space on the machine that built it: nix-collect-garbage/);
  const binfmt = logFindings(
    scanLogText("/bin/sh: ./hello: cannot execute binary file: Exec format error\n"),
    "x.drv",
    "b1",
  );
  assert.match(binfmt[0]!.fix!, /runbook\/check_binfmt\.md/);
});

Deno.test("LogScanner's WebAssembly loop and its JavaScript loop give the same result", () => {
  const vocabulary = [
    "plain line",
    "Running phase: buildPhase",
    "building",
    "configuring",
    "src/x.c:1:2: error: bad",
    "make: *** [all] Error 2",
    "FAIL: t",
    "Killed",
    "",
    "errorless",
    "\x00\x01",
    "x".repeat(300),
  ];
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(...vocabulary), { maxLength: 400 }),
      fc.boolean(),
      (lines, trailing) => {
        const text = lines.join("\n") + (trailing ? "\n" : "");
        assert.deepEqual(
          scanLogText(text, { engine: "wasm", chunkSize: 4096 }),
          scanLogText(text, { engine: "js", chunkSize: 4096 }),
        );
      },
    ),
    { numRuns: 300 },
  );
});
