/**
 * scripts/health_check.ts end to end on this machine: cron silence, exit codes, JSON, the state
 * file, bad flags, and the whole-run deadline.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

/**
 * Flags no busy test machine can trip: other tests load CPU and memory, and OOM-kill their own
 * processes, meanwhile.
 */
const CALM_FLAGS = [
  "--oom-warning",
  "~:100000",
  "--load-warning",
  "~:1000",
  "--load-critical",
  "~:1000",
  "--pressure-warning",
  "~:100",
  "--pressure-critical",
  "~:100",
];

async function run(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/health_check.ts`, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** A state file whose baseline is the kernel's OOM counter now, so old kills are not news. */
async function calmState(dir: string): Promise<string> {
  const path = `${dir}/state.json`;
  const counter = Number(/^oom_kill (\d+)$/m.exec(await Deno.readTextFile("/proc/vmstat"))?.[1]);
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      version: 1,
      hosts: {
        localhost: {
          bootId: (await Deno.readTextFile("/proc/sys/kernel/random/boot_id")).trim(),
          oomKills: counter,
          checkedAt: new Date(Date.now() - 60_000).toISOString(),
        },
      },
    }),
  );
  return path;
}

Deno.test("health_check prints nothing and exits 0 when all is OK (cron mails any output)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const state = await calmState(dir);
    const quiet = await run(["--state-file", state, ...CALM_FLAGS]);
    assert.deepEqual(quiet, { code: 0, stdout: "", stderr: "" });
    // The run moved the baseline forward.
    const saved = JSON.parse(await Deno.readTextFile(state));
    assert.ok(Date.parse(saved.hosts.localhost.checkedAt) > Date.now() - 30_000);
    const verbose = await run(["--state-file", state, "--verbose", ...CALM_FLAGS]);
    assert.equal(verbose.code, 0);
    assert.match(verbose.stdout, /^health_check on localhost: OK\n/);
    assert.match(verbose.stdout, /^OK +health\/store-space +store \/nix\/store: /m);
    assert.match(verbose.stdout, /^OK +health\/oom-kills +(no|\d+) OOM kills? since the last run/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("health_check exits 1 on WARNING and 2 on CRITICAL, printing the problem and its fix", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const state = await calmState(dir);
    const warning = await run(["--state-file", state, "-w", "99.9%:", ...CALM_FLAGS]);
    assert.equal(warning.code, 1);
    assert.match(warning.stdout, /^health_check on localhost: WARNING\n/);
    assert.match(warning.stdout, /^WARNING +health\/store-space +store \/nix\/store: \d+% free/m);
    assert.match(warning.stdout, /^ +fix: nix-collect-garbage/m);
    const critical = await run(["--state-file", state, "-c", "99.9%:", ...CALM_FLAGS]);
    assert.equal(critical.code, 2);
    assert.match(critical.stdout, /^CRITICAL +health\/store-space/m);
    const swap = await run(["--state-file", state, "--require-swap", ...CALM_FLAGS]);
    assert.equal(swap.code, 1);
    assert.match(
      swap.stdout,
      /^WARNING +health\/swap +no swap, and --require-swap asks for some$/m,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("health_check --json gives the report with metrics and per-check timings", async () => {
  const out = await run(["--json", "--no-state", ...CALM_FLAGS]);
  const report = JSON.parse(out.stdout);
  assert.equal(report.tool, "health_check");
  assert.equal(report.host, "localhost");
  assert.ok([0, 1].includes(out.code), out.stdout);
  assert.ok(report.findings.some((f: { id: string }) => f.id === "health/daemon"));
  assert.ok(
    report.data.metrics.some((m: { name: string }) => m.name === "nix_builder_memory_total_bytes"),
  );
  assert.equal(typeof report.data.timings["nix store"], "number");
});

Deno.test("health_check refuses bad flags with one line and exit 3, no stack trace", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["-w", "10"],
      /argument '10' is invalid\. '10' would alert when everything is free; for "less than 10 free" write '10:'\./,
    ],
    [["--oom-window", "6hours"], /'6hours' is not a duration/],
    [["--load-warning", "2:1"], /the start is greater than the end/],
    [["--prometheus", "/tmp/x.txt"], /must end in \.prom/],
    [["--nagios", "--json"], /--nagios and --json cannot be used both/],
    [["--system", "aarch64 linux"], /is not a Nix system name/],
    [["--no-such-flag"], /unknown option '--no-such-flag'/],
  ];
  for (const [args, message] of cases) {
    const out = await run(args);
    assert.equal(out.code, 3, `${args.join(" ")}: ${out.stderr}`);
    assert.equal(out.stdout, "");
    assert.match(out.stderr, message);
    assert.equal(out.stderr.trim().split("\n").length, 1, out.stderr);
    assert.match(out.stderr, /^health_check: /);
  }
});

Deno.test("health_check accepts monitoring-plugins' short flags -t and -H", async () => {
  const help = await run(["--help"]);
  assert.match(help.stdout, /-H, --host <host>/);
  assert.match(help.stdout, /-t, --timeout <seconds>/);
  assert.match(help.stdout, /-w, --warning <range>/);
  assert.match(help.stdout, /-c, --critical <range>/);
  const out = await run(["-t", "30", "--nagios", "--no-state", ...CALM_FLAGS]);
  assert.match(out.stdout, /^(OK|WARNING): localhost: /);
});

Deno.test("health_check --timeout ends a hung check UNKNOWN in time, never a hang", async () => {
  const dir = await Deno.makeTempDir();
  const fifo = `${dir}/kern.log`;
  await new Deno.Command("mkfifo", { args: [fifo] }).output();
  try {
    const started = Date.now();
    const out = await run([
      "--kernel-log",
      fifo,
      "--timeout",
      "2",
      "--nagios",
      "--no-state",
      ...CALM_FLAGS,
    ]);
    const took = Date.now() - started;
    assert.ok(took < 3500, `took ${took} ms`);
    assert.equal(out.code, 3);
    assert.match(
      out.stdout,
      /^UNKNOWN: localhost: OOM kills check did not finish before the deadline \(--timeout\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("health_check says when its state file is corrupt, then starts a new baseline", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/state.json`, "{half a write");
    const out = await run(["--state-file", `${dir}/state.json`, ...CALM_FLAGS]);
    assert.equal(out.code, 1);
    assert.match(
      out.stdout,
      new RegExp(
        `^WARNING +health/state-file +Cannot parse ${dir}/state\\.json:1:2: not valid JSON`,
        "m",
      ),
    );
    // It was rewritten: the next run has a baseline and no state-file finding.
    const again = await run(["--state-file", `${dir}/state.json`, "--verbose", ...CALM_FLAGS]);
    assert.doesNotMatch(again.stdout, /health\/state-file/);
    const unwritable = await run(["--state-file", "/proc/nbr/state.json", ...CALM_FLAGS]);
    assert.match(
      unwritable.stdout,
      /^WARNING +health\/state-file +Cannot write the state file \/proc\/nbr\/state\.json/m,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("health_check reports a --prometheus file it cannot write, and still prints the check", async () => {
  const out = await run([
    "--prometheus",
    "/nonexistent-nbr/nix_builder.prom",
    "--no-state",
    ...CALM_FLAGS,
  ]);
  assert.equal(out.code, 3);
  assert.match(
    out.stdout,
    /^UNKNOWN +health\/prometheus-file +Cannot write --prometheus '\/nonexistent-nbr\/nix_builder\.prom': its directory does not exist$/m,
  );
  assert.match(out.stdout, /^OK +health\/store-space/m);
});
