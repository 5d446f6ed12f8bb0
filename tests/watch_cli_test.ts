import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `${ROOT}scripts/watch_builders.ts`;
const decode = (b: Uint8Array) => new TextDecoder().decode(b);
// Other tests may put this machine under memory pressure while Nix processes run: thresholds no
// real machine reaches keep these tests about the CLI, not about the machine.
const CALM = ["--psi-warn", "99", "--psi-crit", "99.5", "--mem-warn", "0.2", "--mem-crit", "0.1"];

async function watch(args: string[], timeoutMs = 30_000) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** Pids of sampler shells (`/usr/bin/sh -c <script> nbr-watch ...`) running on this machine. */
function samplers(): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const argv = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).split("\0");
      if (/(^|\/)sh$/.test(argv[0] ?? "") && argv[1] === "-c" && argv[3] === "nbr-watch") {
        pids.push(Number(entry.name));
      }
    } catch {
      // gone
    }
  }
  return pids;
}

Deno.test("watch_builders refuses bad flags with one line and exit 3", async () => {
  for (
    const [args, message] of [
      [["--interval", "0"], /'0' is not a positive number of seconds/],
      [["--interval", "0.1"], /--interval '0.1': use 0.2 to 3600 seconds/],
      [["--mem-warn", "150", "--local"], /'150' is not a percentage between 0 and 100/],
      [["--snapshot", "/tmp"], /--snapshot: watch_builders watches live builders/],
      [["--host=-oProxyCommand=touch"], /starts with '-', which ssh would read as an option/],
      [["--host", "b1;touch /tmp/x"], /contains whitespace or control characters/],
      [["--local", "--", "make", "install"], /'make' is not a Nix command/],
      [
        ["--local", "--once", "--", "nix", "build"],
        /--once and a wrapped build exclude each other/,
      ],
    ] as [string[], RegExp][]
  ) {
    const result = await watch(args);
    assert.equal(result.code, 3, `${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stderr, message);
    assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
    assert.doesNotMatch(result.stderr, /\bat .*\.ts:\d+/);
  }
});

Deno.test("watch_builders says there is nothing to watch when the machines file is empty", async () => {
  const file = await Deno.makeTempFile({ prefix: "nbr-watch-machines-" });
  try {
    await Deno.writeTextFile(file, "# no builders yet\n");
    const result = await watch(["--machines", file]);
    assert.equal(result.code, 3);
    assert.equal(
      result.stderr.trim(),
      `watch_builders: No builders to watch: ${file} lists no ssh builder; pass --host HOST or --local`,
    );
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("watch_builders --once --json prints one sample object per builder and exits 0", async () => {
  const result = await watch(["--local", "--once", "--json", ...CALM]);
  assert.equal(result.code, 0, result.stderr);
  const records = result.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(records.length, 1);
  const [record] = records;
  assert.equal(record.type, "sample");
  assert.equal(record.host, "localhost");
  assert.equal(record.status, "ok");
  const memTotal = Number(
    /^MemTotal: +(\d+) kB$/m.exec(Deno.readTextFileSync("/proc/meminfo"))![1],
  );
  assert.equal(record.memory.totalBytes, memTotal * 1024);
  assert.ok(Array.isArray(record.processes));
});

Deno.test("watch_builders --once prints the view of each builder within 80 columns", async () => {
  const result = await watch(["--local", "--once", ...CALM]);
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trimEnd().split("\n");
  assert.match(lines[0]!, /^watch_builders {2}1 builder {2}every 1 s {2}\d\d:\d\d:\d\d {2}OK$/);
  assert.match(lines[2]!, /^localhost {2}OK {2}(\S+, )?\d+ cpus$/);
  assert.deepEqual(lines.slice(3).map((l) => l.trim().split(/\s+/)[0]), [
    "load",
    "cpu",
    "mem",
    "psi",
    "build",
  ]);
  for (const line of lines) assert.ok([...line].length <= 80, line);
});

Deno.test("watch_builders ends cleanly on SIGINT: verdict printed, exit 0, sampler gone", async () => {
  const before = new Set(samplers());
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, "--local", "--plain", "--interval", "0.5", ...CALM],
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  while (!/localhost OK load/.test(text)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decode(value);
  }
  const running = samplers().filter((p) => !before.has(p));
  assert.equal(running.length, 1, "one sampler while watching");
  child.kill("SIGINT");
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decode(value);
  }
  const status = await child.status;
  const stderr = decode(
    await new Response(child.stderr).arrayBuffer().then((b) => new Uint8Array(b)),
  );
  assert.equal(status.code, 0, stderr);
  assert.match(text, /\nwatch_builders: OK: 1 builder watched, no warnings\n$/);
  assert.equal(stderr, "");
  assert.deepEqual(samplers().filter((p) => !before.has(p)), []);
});
