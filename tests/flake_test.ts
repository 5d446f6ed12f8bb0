/**
 * flake.nix and nix/, checked as far as a machine without nixpkgs allows (runbook/install.md,
 * "What was verified where"): every file parses; the flake's outputs and the health-check module
 * evaluate against the stub nixpkgs of nix/stub/ (names, strings, option types, not real builds);
 * the npm tarballs the package fetches are deno.lock's, with its hashes; and nix/build-bundles.sh,
 * the package's build step, run here with Deno's esbuild on those very tarballs, makes bundles
 * that report what the checkout reports.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { listScripts, SHEBANG } from "../tools/bundle.ts";
import { evalStubHealth } from "./_nix_stub.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

function which(program: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${program}`).isFile) return true;
    } catch {
      // not here
    }
  }
  return false;
}

const HAVE_NIX = which("nix-instantiate");

/** `unshare --net --` when this process may cut a command off the network (root), else nothing. */
function offline(): string[] {
  if (Deno.uid() !== 0 || !which("unshare")) return [];
  const probe = new Deno.Command("unshare", { args: ["--net", "true"], stderr: "null" });
  return probe.outputSync().success ? ["unshare", "--net", "--"] : [];
}
if (!HAVE_NIX) console.error("flake tests skipped: nix-instantiate not found (Debian: nix-bin)");

async function run(
  argv: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [program, ...args] = argv as [string, ...string[]];
  const out = await new Deno.Command(program, {
    args,
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

async function nixEval<T>(file: string, args: string[] = []): Promise<T> {
  const r = await run(["nix-instantiate", "--eval", "--strict", "--json", file, ...args]);
  assert.equal(r.code, 0, `nix-instantiate --eval ${file}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

async function nixFiles(): Promise<string[]> {
  const files = ["flake.nix"];
  async function walk(dir: string) {
    for await (const e of Deno.readDir(`${ROOT}/${dir}`)) {
      if (e.isDirectory) await walk(`${dir}/${e.name}`);
      else if (e.name.endsWith(".nix")) files.push(`${dir}/${e.name}`);
    }
  }
  await walk("nix");
  return files.sort();
}

interface LockPackage {
  name: string;
  version: string;
  url: string;
  hash: string;
}

/** deno.lock's npm packages, read here in TypeScript, independently of nix/npm-deps.nix. */
async function lockPackages(): Promise<Map<string, string>> {
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.lock`));
  const out = new Map<string, string>();
  for (const [key, entry] of Object.entries(lock.npm ?? {})) {
    const m = /^(@?[^@]+)@([^_]+)/.exec(key);
    assert.ok(m, key);
    out.set(`${m[1]}@${m[2]}`, (entry as { integrity: string }).integrity);
  }
  return out;
}

Deno.test({
  name: "flake.nix and every nix/*.nix parse with nix-instantiate --parse",
  ignore: !HAVE_NIX,
  async fn() {
    const files = await nixFiles();
    for (const f of ["flake.nix", "nix/package.nix", "nix/health-check.nix", "nix/npm-deps.nix"]) {
      assert.ok(files.includes(f), `${f} is missing`);
    }
    for (const file of files) {
      const r = await run(["nix-instantiate", "--parse", file]);
      assert.equal(r.code, 0, `${file}: ${r.stderr}`);
    }
  },
});

Deno.test({
  name:
    "nix/npm-deps.nix fetches each npm package of deno.lock once, with the lock's integrity hash",
  ignore: !HAVE_NIX,
  async fn() {
    const packages = await nixEval<LockPackage[]>("nix/npm-deps.nix", [
      "--arg",
      "lockFile",
      "./deno.lock",
      "--arg",
      "denoJson",
      "./deno.json",
      "-A",
      "packages",
    ]);
    const lock = await lockPackages();
    assert.deepEqual(
      packages.map((p) => `${p.name}@${p.version}`).sort(),
      [...lock.keys()].sort(),
    );
    for (const p of packages) {
      assert.equal(p.hash, lock.get(`${p.name}@${p.version}`));
      assert.match(p.hash, /^sha512-/);
      const base = p.name.split("/").at(-1);
      assert.equal(p.url, `https://registry.npmjs.org/${p.name}/-/${base}-${p.version}.tgz`);
    }
  },
});

interface StubCheck {
  systems: string[];
  packageNames: string[];
  apps: Record<string, { type: string; program: string }>;
  darwinApps: string[];
  package: {
    name: string;
    buildPhase: string;
    installPhase: string;
    installCheckPhase: string;
    mainProgram: string;
    nativeBuildInputs: string[];
  };
  devShell: string[];
  checks: string[];
  darwinChecks: string[];
  modules: string[];
  health: {
    enabled: { service: Service; tmpfiles: string[] };
    minimal: { service: Service; tmpfiles: string[] };
    disabledHasService: boolean;
    overriddenExecStart: string;
  };
}

interface Service {
  startAt: string;
  onFailure: string[];
  path: string[];
  environment: Record<string, string>;
  serviceConfig: Record<string, string | number>;
}

Deno.test({
  name:
    "flake outputs against the stub nixpkgs: an app per script, the package, a dev shell, checks, the module",
  ignore: !HAVE_NIX,
  async fn() {
    const c = await nixEval<StubCheck>("nix/stub/check.nix");
    const scripts = await listScripts(ROOT);
    assert.deepEqual(c.systems, [
      "aarch64-darwin",
      "aarch64-linux",
      "x86_64-darwin",
      "x86_64-linux",
    ]);
    assert.deepEqual(c.packageNames, ["default", "nix-builder-runbook"]);
    assert.deepEqual(Object.keys(c.apps).sort(), [...scripts, "default"].sort());
    assert.deepEqual(c.darwinApps, Object.keys(c.apps).sort());
    const out = /^(\/nix\/store\/[^/]+)\/bin\/doctor$/.exec(c.apps.default!.program)?.[1];
    assert.ok(out?.endsWith("-nix-builder-runbook-0.1.0"), c.apps.default!.program);
    for (const script of scripts) {
      assert.deepEqual(c.apps[script], { type: "app", program: `${out}/bin/${script}` });
    }

    // The build: nix/build-bundles.sh with nixpkgs' esbuild and every tarball of deno.lock.
    assert.equal(c.package.name, "nix-builder-runbook-0.1.0");
    assert.equal(c.package.mainProgram, "doctor");
    assert.deepEqual(c.package.nativeBuildInputs, ["esbuild", "make-wrapper"]);
    assert.match(
      c.package.buildPhase,
      /bash nix\/build-bundles\.sh --src \. --out dist --esbuild \/nix\/store\/[^ ]+-esbuild\/bin\/esbuild/,
    );
    for (const key of (await lockPackages()).keys()) {
      const [, name, version] = /^(@?[^@]+)@(.*)$/.exec(key)!;
      const file = `${name!.split("/").at(-1)}-${version}.tgz`;
      assert.ok(
        c.package.buildPhase.includes(`${name}=/nix/store/`) &&
          c.package.buildPhase.includes(`-${file}`),
        `${key} is not given to build-bundles.sh`,
      );
    }
    assert.match(
      c.package.installPhase,
      /--add-flags "run -A --no-config --no-lock --cached-only \$share\/\$name\.js"/,
    );
    assert.match(c.package.installCheckPhase, /"\$program" --version/);

    assert.deepEqual(c.devShell, ["deno", "esbuild", "openssh"]);
    assert.deepEqual(c.checks, ["health-check-module", "package"]);
    assert.deepEqual(c.darwinChecks, ["package"]);
    assert.deepEqual(c.modules, ["default", "health-check"]);

    // The module: the bundled health check, WARNING is success, the operator's units on failure.
    const { service, tmpfiles } = c.health.enabled;
    const exec = String(service.serviceConfig.ExecStart);
    assert.ok(
      exec.startsWith(
        `/nix/store/`,
      ) && exec.includes(`/bin/deno run -A ${out}/share/nix-builder-runbook/health_check.js `),
      exec,
    );
    assert.match(
      exec,
      / --prometheus \/var\/lib\/prometheus-node-exporter-text\/nix_builder\.prom /,
    );
    // systemd reads % as a specifier: the module writes a literal one as %%.
    assert.match(exec, / --warning 15%%: --builder-user nixremote$/);
    assert.equal(service.serviceConfig.Type, "oneshot");
    assert.equal(service.serviceConfig.SuccessExitStatus, "1");
    assert.equal(service.startAt, "hourly");
    assert.deepEqual(service.onFailure, ["notify-admins@%n.service"]);
    assert.ok(service.path.some((p) => p.endsWith("-nix")), "nix is on the service's PATH");
    assert.deepEqual(tmpfiles, ["d /var/lib/prometheus-node-exporter-text 0755 root root -"]);

    assert.equal(c.health.minimal.service.startAt, "*:0/15");
    assert.doesNotMatch(String(c.health.minimal.service.serviceConfig.ExecStart), /--prometheus/);
    assert.deepEqual(c.health.minimal.tmpfiles, []);
    assert.equal(c.health.disabledHasService, false);
    assert.match(c.health.overriddenExecStart, /\/bin\/deno run -A \/opt\/health_check\.js /);
  },
});

Deno.test({
  name:
    "the stub module system refuses what NixOS refuses: an unknown option, a value of the wrong type",
  ignore: !HAVE_NIX,
  async fn() {
    const evalHealth = evalStubHealth;
    const unknown = await evalHealth('{ enable = true; interval = "hourly"; }');
    assert.notEqual(unknown.code, 0);
    assert.match(
      unknown.stderr,
      /the option `services\.nix-builder-health\.interval' does not exist/,
    );
    const wrongType = await evalHealth('{ enable = true; extraArgs = "-w 15%:"; }');
    assert.notEqual(wrongType.code, 0);
    assert.match(wrongType.stderr, /extraArgs is not of type list of str/);
    const ok = await evalHealth("{ enable = true; }");
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).service.serviceConfig.SuccessExitStatus, "1");
  },
});

Deno.test({
  name:
    "Nix's own flake loader takes flake.nix (nixpkgs replaced by the stub) and lists every output",
  ignore: !HAVE_NIX,
  async fn() {
    // A throw-away store: `path:` copies the checkout into it, and nothing lands in /nix.
    const store = await Deno.makeTempDir({ prefix: "nbr-flake-store-" });
    try {
      const r = await run([
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "--store",
        store,
        "flake",
        "show",
        "--json",
        `path:${ROOT}`,
        "--override-input",
        "nixpkgs",
        `path:${ROOT}/nix/stub`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const show = JSON.parse(r.stdout);
      const systems = ["aarch64-darwin", "aarch64-linux", "x86_64-darwin", "x86_64-linux"];
      for (const output of ["apps", "packages", "devShells", "checks"]) {
        assert.deepEqual(Object.keys(show[output]).sort(), systems, output);
      }
      const scripts = await listScripts(ROOT);
      for (const system of systems) {
        assert.deepEqual(Object.keys(show.apps[system]).sort(), [...scripts, "default"].sort());
        for (const app of Object.values(show.apps[system])) assert.deepEqual(app, { type: "app" });
        assert.equal(show.packages[system].default.name, "nix-builder-runbook-0.1.0");
        assert.equal(show.devShells[system].default.type, "derivation");
      }
      assert.deepEqual(show.nixosModules, {
        default: { type: "nixos-module" },
        "health-check": { type: "nixos-module" },
      });
      assert.deepEqual(Object.keys(show.checks["x86_64-linux"]).sort(), [
        "health-check-module",
        "package",
      ]);
    } finally {
      await Deno.remove(store, { recursive: true }).catch(async () => {
        // A store's files are read-only: make them writable, then remove.
        await run(["chmod", "-R", "u+w", store]);
        await Deno.remove(store, { recursive: true });
      });
    }
  },
});

// ---- nix/build-bundles.sh, outside Nix --------------------------------------------------------

async function npmReachable(): Promise<boolean> {
  try {
    const r = await fetch("https://registry.npmjs.org/commander", {
      method: "HEAD",
      signal: AbortSignal.timeout(5000),
    });
    await r.body?.cancel();
    return r.ok;
  } catch {
    return false;
  }
}

/** The esbuild binary `deno bundle` downloads into DENO_DIR/dl (fetched now if it is not there). */
async function denoEsbuild(): Promise<string | null> {
  const info = JSON.parse((await run([Deno.execPath(), "info", "--json"])).stdout);
  const find = async () => {
    try {
      for await (const dir of Deno.readDir(`${info.denoDir}/dl`)) {
        if (!dir.isDirectory || !dir.name.startsWith("esbuild-")) continue;
        for await (const f of Deno.readDir(`${info.denoDir}/dl/${dir.name}`)) {
          if (f.name.startsWith("esbuild")) return `${info.denoDir}/dl/${dir.name}/${f.name}`;
        }
      }
    } catch {
      // no dl directory yet
    }
    return null;
  };
  const found = await find();
  if (found) return found;
  const tmp = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${tmp}/x.ts`, "console.log(1);\n");
    await run([Deno.execPath(), "bundle", "-q", "-o", `${tmp}/x.js`, `${tmp}/x.ts`], { cwd: tmp });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  return await find();
}

const NPM = await npmReachable();
const buildBundlesMissing = [
  ...(NPM ? [] : ["registry.npmjs.org unreachable"]),
  ...(Deno.build.os === "linux" ? [] : ["Linux"]),
];
if (buildBundlesMissing.length > 0) {
  const line = `build-bundles.sh test: ${buildBundlesMissing.join(", ")}`;
  if (Deno.env.get("LAB_REQUIRED") !== "1") console.error(`${line}: skipped`);
}

Deno.test({
  name:
    "nix/build-bundles.sh (the package's build) bundles from deno.lock's tarballs, offline, what reports like the checkout",
  ignore: buildBundlesMissing.length > 0 && Deno.env.get("LAB_REQUIRED") !== "1",
  async fn() {
    assert.deepEqual(buildBundlesMissing, []);
    const esbuild = await denoEsbuild();
    assert.ok(esbuild, "deno bundle did not leave an esbuild binary in DENO_DIR/dl");
    const packages = await nixEval<LockPackage[]>("nix/npm-deps.nix", [
      "--arg",
      "lockFile",
      "./deno.lock",
      "--arg",
      "denoJson",
      "./deno.json",
      "-A",
      "packages",
    ]);
    const work = await Deno.makeTempDir({ prefix: "nbr-build-bundles-" });
    try {
      // What Nix's fixed-output fetches do: download, and refuse a tarball whose hash differs.
      const pairs = await Promise.all(packages.map(async (p) => {
        const response = await fetch(p.url, { signal: AbortSignal.timeout(30_000) });
        assert.ok(response.ok, `${p.url}: HTTP ${response.status}`);
        const bytes = new Uint8Array(await response.arrayBuffer());
        const sri = `sha512-${createHash("sha512").update(bytes).digest("base64")}`;
        assert.equal(sri, p.hash, `${p.url} does not match deno.lock's integrity`);
        const file = `${work}/${p.url.split("/").at(-1)}`;
        await Deno.writeFile(file, bytes);
        return `${p.name}=${file}`;
      }));
      // No network from here on, as in the Nix sandbox (when this process may cut it).
      const isolate = offline();
      const build = await run([
        ...isolate,
        "bash",
        "nix/build-bundles.sh",
        "--src",
        ROOT,
        "--out",
        `${work}/dist`,
        "--esbuild",
        esbuild,
        "--only",
        "show_config",
        ...pairs,
      ], { env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" } });
      assert.equal(build.code, 0, build.stderr);
      assert.match(build.stdout, /build-bundles: 1 bundles in /);
      const bundle = `${work}/dist/show_config.js`;
      assert.equal(
        (await Deno.readTextFile(bundle)).split("\n", 1)[0],
        SHEBANG,
      );

      // Run as the package's wrapper does, from a directory without deno.json, with nothing cached.
      const bare = await Deno.makeTempDir({ dir: work });
      const fromBundle = await run([
        ...isolate,
        Deno.execPath(),
        "run",
        "-A",
        "--no-config",
        "--no-lock",
        "--cached-only",
        bundle,
        "--json",
        "--role",
        "builder",
      ], { cwd: bare, env: { DENO_DIR: `${work}/empty-deno-dir` } });
      const fromCheckout = await run([
        Deno.execPath(),
        "run",
        "-A",
        "scripts/show_config.ts",
        "--json",
        "--role",
        "builder",
      ]);
      assert.equal(fromBundle.code, fromCheckout.code, fromBundle.stderr);
      assert.deepEqual(JSON.parse(fromBundle.stdout), JSON.parse(fromCheckout.stdout));
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});
