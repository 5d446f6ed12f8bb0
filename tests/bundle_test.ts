/**
 * `deno task bundle` (tools/bundle.ts): each dist/<script>.js must run where there is only `deno`
 * — no checkout, no npm cache, no network — and report exactly what the script reports when run
 * from the checkout. Bundled here: show_config (whose report is deterministic, so compared whole)
 * and health_check (what operators copy to a builder; its measurements move between two runs, so
 * its finding ids and the statuses of the unmeasured checks are compared).
 */

import assert from "node:assert/strict";
import { labTest, startLab } from "./lab/lab.ts";
import { type BundleResult, bundleScripts, foreignImports, SHEBANG } from "../tools/bundle.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const SCRIPTS = ["show_config", "health_check"] as const;
// Findings whose status follows a measurement that can move between two runs.
const MEASURED = new Set([
  "health/load",
  "health/memory",
  "health/memory-pressure",
  "health/swap",
  "health/store-space",
  "health/build-dir-space",
  "health/clock",
]);

interface Report {
  tool: string;
  version: string;
  host: string;
  status: string;
  findings: { id: string; status: string; summary: string }[];
}

let bundled: Promise<{ dir: string; results: BundleResult[] }> | undefined;

/** Bundles the scripts once per test file run, into a directory outside the checkout. */
function bundles(): Promise<{ dir: string; results: BundleResult[] }> {
  bundled ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "nbr-bundle-test-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const results = await bundleScripts({ scripts: SCRIPTS, outDir: dir });
    return { dir, results };
  })();
  return bundled;
}

function canUnshareNet(): boolean {
  if (Deno.uid() !== 0) return false;
  try {
    return new Deno.Command("unshare", { args: ["--net", "true"], stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

async function run(
  argv: string[],
  options: { cwd: string; env?: Record<string, string> },
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [program, ...args] = argv as [string, ...string[]];
  const out = await new Deno.Command(program, {
    args,
    cwd: options.cwd,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

function parseReport(what: string, r: { code: number; stdout: string; stderr: string }): Report {
  try {
    return JSON.parse(r.stdout) as Report;
  } catch {
    throw new Error(`${what} printed no JSON (exit ${r.code}): ${r.stdout}${r.stderr}`);
  }
}

function assertSameReport(script: string, bundle: Report, checkout: Report): void {
  assert.deepEqual(
    [bundle.tool, bundle.version, bundle.host],
    [checkout.tool, checkout.version, checkout.host],
  );
  if (script === "show_config") {
    assert.deepEqual(bundle, checkout);
    return;
  }
  const ids = (r: Report) => r.findings.map((f) => f.id);
  assert.deepEqual(ids(bundle), ids(checkout));
  const stable = (r: Report) =>
    r.findings.filter((f) => !MEASURED.has(f.id)).map((f) => [f.id, f.status]);
  assert.deepEqual(stable(bundle), stable(checkout));
}

async function hostNpmCache(): Promise<string> {
  const info = await run([Deno.execPath(), "info", "--json"], { cwd: ROOT });
  return `${JSON.parse(info.stdout).denoDir}/npm`;
}

Deno.test("bundle() writes one file per script: shebang first, executable, only node: imports", async () => {
  const { dir, results } = await bundles();
  assert.deepEqual(results.map((r) => r.script), [...SCRIPTS].sort());
  for (const r of results) {
    assert.equal(r.path, `${dir}/${r.script}.js`);
    const code = await Deno.readTextFile(r.path);
    assert.equal(code.split("\n", 1)[0], SHEBANG);
    assert.deepEqual(foreignImports(code), []);
    assert.ok(((await Deno.stat(r.path)).mode ?? 0) & 0o100, `${r.path} is not executable`);
  }
});

Deno.test("bundled scripts run from a bare directory with an empty DENO_DIR and no network, and report what the checkout reports", async () => {
  const { dir } = await bundles();
  const bare = await Deno.makeTempDir({ prefix: "nbr-bare-" });
  const denoDir = await Deno.makeTempDir({ prefix: "nbr-empty-deno-dir-" });
  try {
    const isolate = canUnshareNet() ? ["unshare", "--net", "--"] : [];
    for (const script of SCRIPTS) {
      await Deno.copyFile(`${dir}/${script}.js`, `${bare}/${script}.js`);
      await Deno.chmod(`${bare}/${script}.js`, 0o755);
      const args = script === "show_config"
        ? ["--json", "--role", "builder"]
        : ["--json", "--no-state"];
      // Through the file's own shebang when the network can be cut; else deno --cached-only.
      const argv = isolate.length > 0
        ? [...isolate, `${bare}/${script}.js`, ...args]
        : [Deno.execPath(), "run", "-A", "--cached-only", `${bare}/${script}.js`, ...args];
      const fromBundle = parseReport(
        `${script}.js`,
        await run(argv, { cwd: bare, env: { DENO_DIR: denoDir } }),
      );
      const fromCheckout = parseReport(
        `scripts/${script}.ts`,
        await run([Deno.execPath(), "run", "-A", `scripts/${script}.ts`, ...args], { cwd: ROOT }),
      );
      assertSameReport(script, fromBundle, fromCheckout);
    }
    // Nothing was fetched: Deno made its npm cache directory, and left it empty.
    const npm: string[] = [];
    try {
      for await (const e of Deno.readDir(`${denoDir}/npm`)) npm.push(e.name);
    } catch {
      // not even created
    }
    assert.deepEqual(npm, []);
  } finally {
    await Deno.remove(bare, { recursive: true });
    await Deno.remove(denoDir, { recursive: true });
  }
});

labTest(
  "bundled scripts copied to a lab builder run there without checkout, npm cache or network, and report what the checkout reports there",
  async () => {
    const { dir } = await bundles();
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    // The builder's /root is its own (builder.dir/home): copy the bundles there, as an operator
    // would scp them.
    const home = `${builder.dir}/home`;
    await Deno.mkdir(`${home}/nbr`, { recursive: true });
    for (const script of SCRIPTS) {
      await Deno.copyFile(`${dir}/${script}.js`, `${home}/nbr/${script}.js`);
      await Deno.chmod(`${home}/nbr/${script}.js`, 0o755);
    }
    // The checkout run gets a copy of this machine's npm cache (it has no network either).
    await Deno.mkdir(`${home}/deno-checkout`, { recursive: true });
    const copied = await run(["cp", "-a", await hostNpmCache(), `${home}/deno-checkout/npm`], {
      cwd: ROOT,
    });
    assert.equal(copied.code, 0, copied.stderr);

    for (const script of SCRIPTS) {
      const args = script === "show_config"
        ? ["--json", "--role", "builder"]
        : ["--json", "--no-state"];
      // A private mount namespace with the checkout hidden under a tmpfs, and no network.
      const bundleRun = await builder.exec([
        "unshare",
        "--mount",
        "--net",
        "--",
        "sh",
        "-c",
        'mount -t tmpfs nbr-no-checkout "$1" && test ! -e "$1/deno.json" && cd /root/nbr && ' +
        'shift && exec "$@"',
        "sh",
        ROOT,
        `/root/nbr/${script}.js`,
        ...args,
      ], { env: { DENO_DIR: "/root/deno-empty" }, timeoutMs: 60_000 });
      const fromBundle = parseReport(`${script}.js on ${builder.name}`, bundleRun);
      const checkoutRun = await builder.exec([
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        'cd "$1" && shift && exec "$@"',
        "sh",
        ROOT,
        Deno.execPath(),
        "run",
        "-A",
        "--cached-only",
        `scripts/${script}.ts`,
        ...args,
      ], { env: { DENO_DIR: "/root/deno-checkout" }, timeoutMs: 60_000 });
      const fromCheckout = parseReport(`scripts/${script}.ts on ${builder.name}`, checkoutRun);
      assertSameReport(script, fromBundle, fromCheckout);
    }
  },
);
