/**
 * drv_log.ts against real failing builds of Debian's nix-bin (Nix 2.8): each build runs in a
 * private chroot store under /tmp (`--store`), so the machine's own /nix is never written; the
 * script is pointed at that store with `NIX_CONFIG` and `--log-dir`.
 */
import assert from "node:assert/strict";
import { openBuildLog } from "../lib/build_log.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { parseStorePath } from "../lib/store_path.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `${ROOT}scripts/drv_log.ts`;

const HAVE_NIX = await new Deno.Command("nix-build", {
  args: ["--version"],
  stdout: "null",
  stderr: "null",
})
  .output().then((o) => o.success).catch(() => false);
if (!HAVE_NIX) {
  console.log("drv_log_nix_test: skipped, nix-build is not installed (apt-get install nix-bin)");
}

const EXPRESSIONS = `
let
  mk = name: script: derivation {
    inherit name;
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };
in rec {
  hello = mk "drvlog-hello" "echo hello; exit 1";
  dependent = derivation {
    name = "drvlog-needs-hello";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo never" ];
    dep = hello;
  };
  compile = mk "drvlog-compile" ''
    mkdir -p src && cd src
    printf 'all: hello\\nhello: main.o\\n\\t$(CC) -o $@ $^\\n' > Makefile
    printf 'int main(void) {\\n  return y;\\n}\\n' > main.c
    echo "Running phase: buildPhase"
    make
  '';
  killed = mk "drvlog-killed-cc1" ''
    mkdir -p src && cd src
    i=0; : > big.c
    while [ $i -lt 20000 ]; do echo "static int f$i(int a) { int s = 0; for (int k = 0; k < a; k++) s += k * $i; return s; }" >> big.c; i=$((i+1)); done
    echo "Running phase: buildPhase"
    ( while ! pkill -9 -x cc1; do sleep 0.05; done ) &
    gcc -O3 -c big.c -o big.o || exit 1
  '';
  binary = mk "drvlog-binary" "printf 'before\\\\000\\\\001binary\\\\nafter\\\\n'; exit 1";
  nonewline = mk "drvlog-nonewline" "printf 'no newline at the end'; exit 1";
  empty = mk "drvlog-empty" "exit 3";
  big = mk "drvlog-big" ''
    echo "Running phase: buildPhase"
    seq 1 1000000 | sed 's/^/compiling module number /'
    echo "src/module.c:12:5: error: expected ';' before '}' token"
    seq 1 30 | sed 's/^/cleanup step /'
    exit 1
  '';
  ok = derivation {
    name = "drvlog-ok";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo built fine; echo out > $out" ];
  };
  plain = mk "drvlog-plain" "echo plain log line; exit 1";
  movedlog = derivation {
    name = "drvlog-out-moved-log";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo 'Running phase: installPhase'; echo built by the deriver; echo out > $out" ];
  };
  substituted = derivation {
    name = "drvlog-out-substituted";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo built in another store; echo out > $out" ];
  };
  nokeep = mk "drvlog-nokeep" "echo lost; exit 1";
}
`;

interface Built {
  /** The derivation path Nix printed. */
  drv: string;
  /** nix-build's exit code. */
  code: number;
  /** nix-build's output (stdout and stderr). */
  output: string;
  /** nix-build's stdout alone (the output paths of a successful build). */
  stdout: string;
}

let storePromise: Promise<string> | undefined;
const built = new Map<string, Promise<Built>>();

async function store(): Promise<string> {
  storePromise ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "drvlog-test-" });
    await Deno.writeTextFile(`${dir}/builds.nix`, EXPRESSIONS);
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // best effort
      }
    });
    return dir;
  })();
  return await storePromise;
}

/** Builds an attribute of {@link EXPRESSIONS} once (in the private store) and returns what Nix said. */
function build(attr: string, options: string[] = []): Promise<Built> {
  const key = `${attr} ${options.join(" ")}`;
  let promise = built.get(key);
  if (promise === undefined) {
    promise = (async () => {
      const dir = await store();
      const out = await new Deno.Command("nix-build", {
        args: [
          "--store",
          `${dir}/store`,
          "--option",
          "substituters",
          "",
          "--option",
          "extra-sandbox-paths",
          "/bin=/bin /usr=/usr /lib=/lib /lib64=/lib64 /etc/alternatives=/etc/alternatives",
          ...options,
          `${dir}/builds.nix`,
          "-A",
          attr,
          "--no-out-link",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const output = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      const drv = [...output.matchAll(/\/nix\/store\/[0-9a-z]{32}-[^' \n]+\.drv/g)].at(-1)?.[0] ??
        "";
      return { drv, code: out.code, output, stdout: new TextDecoder().decode(out.stdout) };
    })();
    built.set(key, promise);
  }
  return promise;
}

interface ScriptRun {
  code: number;
  stdout: string;
  stderr: string;
  bytes: Uint8Array;
}

async function drvLog(
  args: string[],
  options: { stdin?: string; env?: Record<string, string> } = {},
): Promise<ScriptRun> {
  const dir = await store();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    env: {
      NO_COLOR: "1",
      NIX_CONFIG: `store = ${dir}/store\nsubstituters =`,
      ...options.env,
    },
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return {
    code: out.code,
    stdout: decode(out.stdout),
    stderr: decode(out.stderr),
    bytes: out.stdout,
  };
}

async function logDir(): Promise<string> {
  return `${await store()}/store/nix/var/log/nix`;
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !HAVE_NIX, sanitizeResources: false, sanitizeOps: false, fn });

test("drv_log.ts shows a real gcc error from nix-store -l first, with the phase, and exits 0", async () => {
  const { drv, code } = await build("compile");
  assert.equal(code, 100);
  const run = await drvLog([drv]);
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.split("\n");
  assert.equal(lines[0], `── ${drv}`);
  assert.match(lines[1]!, /^log: nix-store -l on localhost · 8 lines · \d+ B$/);
  assert.equal(lines[2], "last phase: buildPhase (line 1)");
  assert.equal(lines[3], "likely cause: line 4: a compiler error");
  assert.equal(lines[4], "  main.c:2:10: error: 'y' undeclared (first use in this function)");
  assert.match(run.stdout, />\s+4 │ main\.c:2:10: error: 'y' undeclared/);
  assert.match(
    run.stdout,
    /OK {2}log\/found {2}log of .*-drvlog-compile\.drv from nix-store -l on localhost \(8 lines/,
  );
  assert.equal(run.stderr, "");
});

test("drv_log.ts --from-build-output takes the failing builder from nix-build's output, not its dependent", async () => {
  const { output, code } = await build("dependent");
  assert.equal(code, 100);
  const dir = await store();
  await Deno.writeTextFile(`${dir}/dependent.out`, output);
  const run = await drvLog(["--from-build-output", `${dir}/dependent.out`, "--errors"]);
  assert.equal(run.code, 0, run.stdout + run.stderr);
  const hello = (await build("hello")).drv;
  assert.match(run.stdout, new RegExp(`── ${hello}`));
  assert.match(
    run.stdout,
    /OK {2}build\/dependency-failed {2}1 derivation was not built because a dependency failed/,
  );
  assert.doesNotMatch(run.stdout, /── .*drvlog-needs-hello\.drv/);
  const viaStdin = await drvLog(["--from-build-output", "-", "--json"], { stdin: output });
  const report = JSON.parse(viaStdin.stdout);
  assert.equal(report.status, "ok");
  assert.deepEqual(report.data.logs.map((l: { subject: string }) => l.subject), [hello]);
  assert.equal(report.data.buildOutput.failures[1].cause, "dependency");
});

test("drv_log.ts warns (exit 1) and points to the OOM page when the compiler was killed", async () => {
  const { drv, output } = await build("killed");
  assert.match(output, /gcc: fatal error: Killed signal terminated program cc1/);
  const run = await drvLog([drv, "--errors"]);
  assert.equal(run.code, 1, run.stdout);
  assert.match(run.stdout, /likely cause: line 2: the build was killed \(signal 9\)/);
  assert.match(
    run.stdout,
    /WARNING {2}log\/oom-killed {2}the build of .*drvlog-killed-cc1\.drv on localhost was killed/,
  );
  assert.match(run.stdout, /fix: See runbook\/oom_mitigate\.md/);
});

test("drv_log.ts --raw passes a binary log through byte for byte", async () => {
  const { drv } = await build("binary");
  const run = await drvLog([drv, "--raw"]);
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual([...run.bytes], [...new TextEncoder().encode("before\0\x01binary\nafter\n")]);
  const view = await drvLog([drv]);
  assert.match(view.stdout, /note: the log contains binary data \(NUL bytes\)/);
  assert.match(view.stdout, /1 │ before\\x00\\x01binary/);
});

test("drv_log.ts shows a log without final newline and says an empty log is empty", async () => {
  const open = await drvLog([(await build("nonewline")).drv, "--tail", "5"]);
  assert.match(open.stdout, /note: the log does not end with a newline/);
  assert.match(open.stdout, /last 1 line of 1:\n {5}1 │ no newline at the end\n/);
  const empty = await drvLog([(await build("empty")).drv]);
  assert.equal(empty.code, 0, empty.stderr);
  assert.match(empty.stdout, /the log is empty: the builder printed nothing before it failed/);
  assert.match(
    empty.stdout,
    /log\/found {2}log of .*drvlog-empty\.drv from nix-store -l on localhost \(0 lines, 0 B\)/,
  );
});

test("drv_log.ts streams a 30 MB log: --errors finds the error, --tail the end, --output saves it all", async () => {
  const { drv } = await build("big");
  const errors = await drvLog([drv, "--errors"]);
  assert.equal(errors.code, 0, errors.stderr);
  assert.match(errors.stdout, /· 1,000,032 lines ·/);
  assert.match(errors.stdout, /likely cause: line 1000002: a compiler error/);
  const tail = await drvLog([drv, "--tail", "2"]);
  assert.match(
    tail.stdout,
    /last 2 lines of 1,000,032:\n {2}1000031 │ cleanup step 29\n {2}1000032 │ cleanup step 30\n/,
  );
  const dir = await store();
  const saved = await drvLog([drv, "--errors", "--output", `${dir}/big.log`]);
  assert.equal(saved.code, 0);
  assert.match(saved.stdout, /OK {2}log\/saved {2}the whole log was saved to/);
  const direct = await new Deno.Command("nix-store", {
    args: ["-l", drv],
    env: { NIX_CONFIG: `store = ${dir}/store` },
    stdout: "piped",
  }).output();
  const file = await Deno.readFile(`${dir}/big.log`);
  assert.equal(file.length, direct.stdout.length);
  assert.deepEqual(file.subarray(-40), direct.stdout.subarray(-40));
});

test("drv_log.ts reads the plain log file when nix-store -l has none (compress-build-log = false)", async () => {
  const { drv } = await build("plain", ["--option", "compress-build-log", "false"]);
  const base = drv.slice("/nix/store/".length);
  const file = `${await logDir()}/drvs/${base.slice(0, 2)}/${base.slice(2)}`;
  assert.equal((await Deno.stat(file)).isFile, true);
  // Without NIX_CONFIG's store, nix-store -l looks in the machine's own store and finds nothing.
  const run = await drvLog([drv, "--log-dir", await logDir()], {
    env: { NIX_CONFIG: "substituters =" },
  });
  assert.equal(run.code, 0, run.stdout);
  assert.match(run.stdout, new RegExp(`log: ${file} on localhost · 1 line`));
  assert.match(run.stdout, /1 │ plain log line/);
  const bz2 = await drvLog([(await build("hello")).drv, "--log-dir", await logDir()], {
    env: { NIX_CONFIG: "substituters =" },
  });
  assert.match(bz2.stdout, /log: .*drvlog-hello\.drv\.bz2 on localhost · 1 line · 6 B/);
});

test("drv_log.ts says the log is not available (exit 2) and why: keep-build-log = false", async () => {
  const { drv, code } = await build("nokeep", ["--option", "keep-build-log", "false"]);
  assert.equal(code, 100);
  const dir = await store();
  const run = await drvLog([drv], {
    env: { NIX_CONFIG: `store = ${dir}/store\nsubstituters =\nkeep-build-log = false` },
  });
  assert.equal(run.code, 2, run.stdout);
  assert.match(
    run.stdout,
    /CRITICAL {2}log\/not-available {2}build log of .*drvlog-nokeep\.drv is not available on localhost/,
  );
  assert.match(
    run.stdout,
    /keep-build-log = false on localhost: Nix does not keep build logs there/,
  );
  assert.match(
    run.stdout,
    /localhost · nix-store -l: absent: build log of derivation '.*' is not available/,
  );
});

test("drv_log.ts reads the log of an output path through its deriver", async () => {
  const { stdout, code } = await build("ok");
  assert.equal(code, 0);
  const out = stdout.trim();
  assert.match(out, /^\/nix\/store\/[0-9a-z]{32}-drvlog-ok$/);
  const run = await drvLog([out]);
  assert.equal(run.code, 0, run.stdout);
  assert.match(run.stdout, /1 │ built fine/);
});

let movedPromise: Promise<{ out: string; drv: string; moved: string; rel: string }> | undefined;

/**
 * Builds `movedlog` and moves its log out of the store's log directory (once): nix-store -l no
 * longer finds it; the file under the returned directory is named after the .drv, never the output.
 */
function movedLog(): Promise<{ out: string; drv: string; moved: string; rel: string }> {
  movedPromise ??= (async () => {
    const { stdout, output, code, drv } = await build("movedlog");
    assert.equal(code, 0, output);
    const out = stdout.trim();
    assert.match(out, /^\/nix\/store\/[0-9a-z]{32}-drvlog-out-moved-log$/);
    assert.match(drv, /-drvlog-out-moved-log\.drv$/);
    const base = drv.slice("/nix/store/".length);
    const rel = `drvs/${base.slice(0, 2)}/${base.slice(2)}.bz2`;
    const moved = `${await store()}/moved-logs`;
    await Deno.mkdir(`${moved}/drvs/${base.slice(0, 2)}`, { recursive: true });
    await Deno.rename(`${await logDir()}/${rel}`, `${moved}/${rel}`);
    const direct = await new Deno.Command("nix-store", {
      args: ["-l", out],
      env: { NIX_CONFIG: `store = ${await store()}/store` },
      stdout: "null",
      stderr: "null",
    }).output();
    assert.notEqual(direct.code, 0, "nix-store -l still finds the moved log");
    return { out, drv, moved, rel };
  })();
  return movedPromise;
}

test("drv_log.ts serves an output path's log from its deriver's log file when nix-store -l cannot", async () => {
  const { out, drv, moved, rel } = await movedLog();
  const base = drv.slice("/nix/store/".length);
  const run = await drvLog([out, "--log-dir", moved, "--verbose"]);
  assert.equal(run.code, 0, run.stdout + run.stderr);
  assert.match(run.stdout, new RegExp(`log: ${moved}/${rel} on localhost · 2 lines`));
  assert.match(run.stdout, /2 │ built by the deriver/);
  assert.match(
    run.stdout,
    new RegExp(`log/found {2}log of ${out.slice(11)} \\(built by ${base}\\) from ${moved}/${rel}`),
  );
  assert.match(
    run.stdout,
    /localhost · nix-store -l: absent: build log of derivation '.*' is not available/,
  );
  const json = JSON.parse((await drvLog([out, "--log-dir", moved, "--json"])).stdout);
  assert.equal(json.data.logs[0].found.deriver, drv);
  assert.equal(json.data.logs[0].found.method, "compressed log file");
});

test("openBuildLog() reads a large log of an output path directly from its deriver's file", async () => {
  const { out: outPath, drv, moved, rel } = await movedLog();
  const out = parseStorePath(outPath);
  const previous = Deno.env.get("NIX_CONFIG");
  Deno.env.set("NIX_CONFIG", `store = ${await store()}/store\nsubstituters =`);
  try {
    const opened = await openBuildLog(new LocalTarget(), out, {
      logDir: moved,
      largeFileBytes: 4, // every log counts as large: nix-store -l is skipped
      timeoutMs: 30_000,
    });
    assert.equal(opened.deriver?.path, drv);
    assert.equal(opened.log?.method, "compressed log file");
    assert.equal(opened.log?.path, `${moved}/${rel}`);
    assert.equal(opened.attempts[0]?.method, "nix-store -l");
    assert.equal(opened.attempts[0]?.outcome, "skipped");
    assert.equal(
      await new Response(opened.log!.stream).text(),
      "Running phase: installPhase\nbuilt by the deriver\n",
    );
  } finally {
    if (previous === undefined) Deno.env.delete("NIX_CONFIG");
    else Deno.env.set("NIX_CONFIG", previous);
  }
});

test("drv_log.ts says an output path without a known deriver has no build log (exit 2)", async () => {
  const dir = await store();
  await Deno.writeTextFile(`${dir}/added.txt`, "not built by any derivation\n");
  const add = await new Deno.Command("nix-store", {
    args: ["--add", `${dir}/added.txt`],
    env: { NIX_CONFIG: `store = ${dir}/store` },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(add.code, 0, new TextDecoder().decode(add.stderr));
  const added = new TextDecoder().decode(add.stdout).trim();
  assert.match(added, /^\/nix\/store\/[0-9a-z]{32}-added\.txt$/);

  const run = await drvLog([added]);
  assert.equal(run.code, 2, run.stdout + run.stderr);
  assert.match(
    run.stdout,
    /CRITICAL {2}log\/not-available {2}build log of .*-added\.txt is not available on localhost/,
  );
  assert.match(
    run.stdout,
    /-added\.txt has no known deriver on localhost \('nix-store --query --deriver' prints unknown-deriver\): Nix did not build it there from a derivation/,
  );
  assert.match(
    run.stdout,
    /localhost · nix-store --query --deriver: absent: .*-added\.txt has no known deriver \(unknown-deriver\)/,
  );
  // No log file is looked for under the output's own name.
  assert.doesNotMatch(run.stdout, /log file: absent: neither/);
  assert.match(run.stdout, /fix: Nothing to fetch: no derivation built this path/);
});

test("drv_log.ts says a substituted output path's derivation is not in the store (exit 2)", async () => {
  const { stdout, code, drv } = await build("substituted");
  assert.equal(code, 0);
  const out = stdout.trim();
  const dir = await store();
  const nix = async (args: string[]) => {
    const r = await new Deno.Command("nix", {
      args: ["--extra-experimental-features", "nix-command", ...args],
      env: { NIX_CONFIG: "substituters =" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  };
  // Through a binary cache into a second store, as a substitution does: the narinfo carries the
  // deriver's name, not the .drv and not the log.
  await nix(["copy", "--from", `${dir}/store`, "--to", `file://${dir}/cache`, out]);
  await nix([
    "copy",
    "--no-check-sigs",
    "--from",
    `file://${dir}/cache`,
    "--to",
    `${dir}/store2`,
    out,
  ]);

  const run = await drvLog([out], {
    env: { NIX_CONFIG: `store = ${dir}/store2\nsubstituters =` },
  });
  assert.equal(run.code, 2, run.stdout + run.stderr);
  assert.match(
    run.stdout,
    new RegExp(
      `${out.slice(11)} is in localhost's store but its derivation ${
        drv.slice(11).replaceAll(".", "\\.")
      } is not: the output was substituted from a binary cache or copied from another machine`,
    ),
  );
  assert.match(
    run.stdout,
    new RegExp(
      `localhost · log file: absent: neither .*/drvs/${drv.slice(11, 13)}/${
        drv.slice(13).replaceAll(".", "\\.")
      } nor`,
    ),
  );
});

test("drv_log.ts refuses a hostile store path before running anything, in one line, exit 3", async () => {
  const dir = await store();
  const canary = `${dir}/canary`;
  const run = await drvLog([
    "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-x$(touch${IFS}canary)",
  ]);
  assert.equal(run.code, 3);
  assert.equal(run.stdout, "");
  assert.match(
    run.stderr,
    /^drv_log: Not a store path '.*': the name contains '\$' \(allowed: A-Z a-z 0-9 \+ - \. _ \? =\)\n$/,
  );
  assert.equal(await Deno.stat(canary).then(() => true, () => false), false);
});

test("drv_log.ts rejects contradictory flags with one line and exit 3", async () => {
  const drv = "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv";
  const cases: [string[], RegExp][] = [
    [[], /nothing to look up: give a \.drv or output path/],
    [[drv, "--raw", "--json"], /--raw and --json cannot be combined/],
    [[drv, "--tail", "3", "--errors"], /--tail and --errors cannot be combined: pick one view/],
    [[drv, "--log-file", "/tmp/x"], /store paths and --log-file cannot be combined/],
    [[drv, "--tail", "-1"], /'-1' is not a whole number/],
    [[drv, "--skip-local"], /--skip-local needs --host or --builders/],
  ];
  for (const [args, message] of cases) {
    const run = await drvLog(args);
    assert.equal(run.code, 3, args.join(" "));
    assert.match(run.stderr, message, args.join(" "));
    assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
  }
});

test("drv_log.ts --snapshot reads the log copy a bundle holds", async () => {
  const { drv } = await build("hello");
  const dir = await Deno.makeTempDir({ prefix: "drvlog-snap-" });
  try {
    const base = drv.slice("/nix/store/".length);
    const file = `${dir}/files/nix/var/log/nix/drvs/${base.slice(0, 2)}/${base.slice(2)}`;
    await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(file, "Running phase: checkPhase\nFAIL: test_snapshot\n");
    await Deno.writeTextFile(
      `${dir}/meta.json`,
      JSON.stringify({
        host: "builder7",
        collected_at: "2026-11-25T10:00:00Z",
        tool: "collect 0.1.0",
      }),
    );
    const run = await drvLog([drv, "--snapshot", dir, "--verbose"]);
    assert.equal(run.code, 0, run.stdout);
    assert.match(run.stdout, /log: \/nix\/var\/log\/nix\/drvs\/.* on builder7 · 2 lines/);
    assert.match(run.stdout, /likely cause: line 2: a test failed \(checkPhase\)/);
    assert.match(run.stdout, /builder7 · nix-store -l: not-captured/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
