import assert from "node:assert/strict";
import fc from "./_fast_check.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { parseConfigShowJson } from "../lib/nix_config.ts";
import {
  loadNixConf,
  type NixConfEnv,
  nixConfSources,
  parseNixConf,
  readNixConfEnv,
  syntaxErrorWording,
} from "../lib/nix_conf.ts";
import { EnvTarget, HAVE_NIX, nixShowConfig, tempDir } from "./show_config_support_test.ts";

const FIXTURES = new URL("./fixtures/show_config/", import.meta.url).pathname;
const local = new LocalTarget();

function files(map: Record<string, string>) {
  return { readFile: (p: string) => Promise.resolve(map[p] ?? null) };
}

Deno.test("parseNixConf() cuts comments, splits on blanks and joins the value with single spaces", () => {
  const parsed = parseNixConf(
    "# header\n\tsubstituters   =  https://a   https://b # two caches\r\n\nbuilders =\n",
  );
  assert.deepEqual(parsed.lines, [
    { kind: "setting", line: 2, name: "substituters", value: "https://a https://b" },
    { kind: "setting", line: 4, name: "builders", value: "" },
  ]);
});

Deno.test("parseNixConf() words a malformed line as Nix 2.8 does, and as Nix 2.20+ does", () => {
  for (const bad of ["max-jobs 0", "bogus", "include", "!include a b", "= x"]) {
    const old = parseNixConf(`${bad}\n`, { path: "/etc/nix/nix.conf", version: "2.8.0" });
    assert.equal(
      old.error?.nixMessage,
      `illegal configuration line '${bad}' in '/etc/nix/nix.conf'`,
    );
    const modern = parseNixConf(`${bad}\n`, { path: "/etc/nix/nix.conf", version: "2.24.0" });
    assert.equal(
      modern.error?.nixMessage,
      `syntax error in configuration line '${bad}' in '/etc/nix/nix.conf'`,
    );
  }
  assert.equal(syntaxErrorWording("nix (Lix, like Nix) 2.91.1"), "illegal configuration line");
});

Deno.test("parseNixConf() reproduces the error of a value continued on the next line (NixOS/nix#6876)", () => {
  const parsed = parseNixConf("substituters =\nhttps://cache.nixos.org/\n", {
    path: "/etc/nix/nix.conf",
    version: "2.10.3",
  });
  assert.equal(
    parsed.error?.nixMessage,
    "illegal configuration line 'https://cache.nixos.org/' in '/etc/nix/nix.conf'",
  );
  assert.equal(parsed.error?.line, 2);
});

Deno.test("parseNixConf() never throws and stops at its first error, whatever the text", () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 300 }), (text) => {
      const parsed = parseNixConf(text);
      const lines = text.split("\n").length;
      for (const l of parsed.lines) assert.ok(l.line >= 1 && l.line <= lines);
      if (parsed.error) assert.ok(parsed.error.line >= 1 && parsed.error.line <= lines);
    }),
    { numRuns: 3000 },
  );
});

Deno.test("nixConfSources() reads NIX_USER_CONF_FILES last to first so the first one wins, then NIX_CONFIG", () => {
  const env: NixConfEnv = {
    NIX_CONF_DIR: "/x",
    NIX_USER_CONF_FILES: "/u/first.conf:/u/second.conf",
    NIX_CONFIG: "cores = 1",
  };
  assert.deepEqual(nixConfSources(env).map((s) => `${s.kind}:${s.path}`), [
    "system:/x/nix.conf",
    "user:/u/second.conf",
    "user:/u/first.conf",
    "env:NIX_CONFIG",
  ]);
  assert.deepEqual(
    nixConfSources({ HOME: "/home/a", XDG_CONFIG_DIRS: "/etc/xdg:/opt/xdg" }).map((s) => s.path),
    [
      "/etc/nix/nix.conf",
      "/opt/xdg/nix/nix.conf",
      "/etc/xdg/nix/nix.conf",
      "/home/a/.config/nix/nix.conf",
    ],
  );
  assert.deepEqual(nixConfSources({ NIX_USER_CONF_FILES: "" }).map((s) => s.kind), ["system"]);
});

Deno.test("loadNixConf() follows include and !include relative to the including file, in place", async () => {
  const conf = await loadNixConf(
    files({
      "/etc/nix/nix.conf": "max-jobs = 4\ninclude conf.d/a.conf\n!include absent.conf\ncores = 2\n",
      "/etc/nix/conf.d/a.conf": "max-jobs = 8\ninclude ../b.conf\n",
      "/etc/nix/b.conf": "cores = 9\n",
    }),
    { env: {} },
  );
  assert.equal(conf.error, undefined);
  assert.equal(conf.settings.get("max-jobs")?.value, "8");
  assert.equal(conf.settings.get("cores")?.value, "2");
  assert.deepEqual(conf.settings.get("max-jobs")?.origins.map((o) => `${o.file}:${o.line}`), [
    "/etc/nix/conf.d/a.conf:1",
  ]);
  assert.deepEqual(conf.files.map((f) => [f.path, f.status]), [
    ["/etc/nix/nix.conf", "read"],
    ["/etc/nix/conf.d/a.conf", "read"],
    ["/etc/nix/b.conf", "read"],
    ["/etc/nix/absent.conf", "missing"],
    ["/etc/xdg/nix/nix.conf", "missing"],
  ]);
});

Deno.test("loadNixConf() reports an include cycle instead of recursing", async () => {
  const conf = await loadNixConf(
    files({ "/etc/nix/nix.conf": "include a.conf\n", "/etc/nix/a.conf": "include nix.conf\n" }),
    { env: {} },
  );
  assert.match(
    conf.error?.nixMessage ?? "",
    /includes itself \(\/etc\/nix\/nix.conf -> \/etc\/nix\/a.conf -> \/etc\/nix\/nix.conf\)/,
  );
  assert.equal(conf.error?.file, "/etc/nix/a.conf");
});

Deno.test("loadNixConf() appends extra- lines to lists, sorts sets, follows aliases and calls extra- on a string unknown", async () => {
  const conf = await loadNixConf(
    files({
      "/etc/nix/nix.conf": "trusted-users = root\nextra-trusted-users = alice\n" +
        "system-features = kvm  big-parallel kvm\nbuild-max-jobs = 3\nextra-builders = ssh://b x86_64-linux\n" +
        "extra-sandbox-paths = /bin/sh\n",
    }),
    { env: {} },
  );
  assert.equal(conf.settings.get("trusted-users")?.value, "root alice");
  assert.deepEqual(conf.settings.get("trusted-users")?.origins.map((o) => [o.line, o.append]), [
    [1, false],
    [2, true],
  ]);
  assert.equal(conf.settings.get("system-features")?.value, "big-parallel kvm");
  assert.equal(conf.settings.get("max-jobs")?.value, "3");
  assert.equal(conf.settings.get("max-jobs")?.origins[0]?.name, "build-max-jobs");
  assert.deepEqual(conf.unknown.map((u) => u.name), ["extra-builders"]);
  assert.equal(conf.settings.get("sandbox-paths")?.appendsToDefault, true);
});

Deno.test("loadNixConf() reads the Determinate installer's nix.conf, which includes nix.custom.conf", async () => {
  const text = await Deno.readTextFile(`${FIXTURES}determinate/nix.conf`);
  const conf = await loadNixConf(files({ "/etc/nix/nix.conf": text }), {
    env: {},
    version: "2.29.0",
  });
  assert.equal(conf.error, undefined);
  assert.equal(conf.files[1]?.path, "/etc/nix/nix.custom.conf");
  assert.equal(conf.files[1]?.status, "missing");
  assert.equal(conf.settings.get("max-jobs")?.value, "auto");
  assert.equal(conf.settings.get("bash-prompt-prefix")?.value, "(nix:$name)\\040");
  assert.equal(conf.settings.get("experimental-features")?.value, "flakes nix-command");
  assert.equal(conf.settings.get("trusted-substituters")?.origins[0]?.line, 14);
});

Deno.test("loadNixConf() explains the captured Nix 2.8 controller fixture value by value", async () => {
  const dir = `${FIXTURES}nix-2.8/`;
  const captured = parseConfigShowJson(
    await Deno.readTextFile(`${dir}controller.show-config.json`),
  );
  const conf = await loadNixConf(
    files({
      "/tmp/nbr-cap/etc/nix.conf": await Deno.readTextFile(`${dir}controller.nix.conf`),
      "/tmp/nbr-cap/etc/nix.custom.conf": await Deno.readTextFile(
        `${dir}controller.nix.custom.conf`,
      ),
    }),
    { env: { NIX_CONF_DIR: "/tmp/nbr-cap/etc", NIX_USER_CONF_FILES: "" }, version: "2.8.0" },
  );
  for (
    const key of [
      "builders",
      "builders-use-substitutes",
      "max-jobs",
      "cores",
      "trusted-users",
      "substituters",
    ]
  ) {
    assert.equal(conf.settings.get(key)?.value, captured.get(key)?.value, key);
  }
  assert.deepEqual(conf.settings.get("cores")?.origins.map((o) => [o.line, o.name]), [[
    5,
    "build-cores",
  ]]);
  assert.deepEqual(conf.settings.get("trusted-users")?.origins.map((o) => `${o.file}:${o.line}`), [
    "/tmp/nbr-cap/etc/nix.conf:7",
    "/tmp/nbr-cap/etc/nix.custom.conf:1",
  ]);
  // extra-system-features appends to Nix's default list, which already holds kvm.
  assert.equal(conf.settings.get("system-features")?.appendsToDefault, true);
  assert.equal(captured.get("system-features")?.value, "benchmark big-parallel kvm nixos-test");
});

Deno.test("loadNixConf() flags values Nix refuses with Nix's own words", async () => {
  const conf = await loadNixConf(
    files({
      "/etc/nix/nix.conf":
        "max-jobs = 0 1\nbuilders-use-substitutes = maybe\ncores = -1\nsandbox = relaxed\n",
    }),
    { env: {} },
  );
  assert.deepEqual(conf.invalidValues.map((e) => [e.line, e.nixMessage]), [
    [1, "configuration setting 'max-jobs' should be 'auto' or an integer"],
    [2, "Boolean setting 'builders-use-substitutes' has invalid value 'maybe'"],
    [3, "setting 'cores' has invalid value '-1'"],
  ]);
});

Deno.test("loadNixConf() treats an include that cannot be read (a directory) as Nix does: skipped", async () => {
  await using tmp = await tempDir();
  await Deno.mkdir(`${tmp.dir}/etc/dir.conf`, { recursive: true });
  await Deno.writeTextFile(`${tmp.dir}/etc/nix.conf`, "include dir.conf\ncores = 3\n");
  const conf = await loadNixConf(local, {
    env: { NIX_CONF_DIR: `${tmp.dir}/etc`, NIX_USER_CONF_FILES: "" },
  });
  assert.equal(conf.error, undefined);
  assert.equal(conf.files[1]?.status, "unreadable");
  assert.equal(conf.settings.get("cores")?.value, "3");
});

Deno.test("readNixConfEnv() tells an unset variable from an empty one and keeps newlines in NIX_CONFIG", async () => {
  const target = new EnvTarget({
    HOME: "/home/x",
    NIX_USER_CONF_FILES: "",
    NIX_CONFIG: "cores = 1\nmax-jobs = 0",
  });
  const result = await readNixConfEnv(target);
  assert.ok(result.ok);
  assert.deepEqual(result.env, {
    HOME: "/home/x",
    NIX_USER_CONF_FILES: "",
    NIX_CONFIG: "cores = 1\nmax-jobs = 0",
  });
});

// The oracle: the real Nix 2.8 reads the same files; what it shows must be what the files say.
interface OracleCase {
  name: string;
  files: Record<string, string>;
  env?: (dir: string) => Record<string, string>;
  keys: string[];
}

const ORACLE: OracleCase[] = [
  {
    name: "includes in place, aliases, extra- and sets",
    files: {
      "etc/nix.conf": "max-jobs = 4 # first\ninclude sub/a.conf\nbuild-cores = 3\n" +
        "trusted-users = root\nextra-trusted-users = alice bob\nsystem-features = kvm  big-parallel kvm\n",
      "etc/sub/a.conf": "max-jobs = 8\n!include ../absent.conf\n",
    },
    keys: ["max-jobs", "cores", "trusted-users", "system-features"],
  },
  {
    name: "user files and NIX_CONFIG override the system file, the first user file wins",
    files: {
      "etc/nix.conf": "max-jobs = 1\ncores = 1\nbuilders-use-substitutes = false\n",
      "u1.conf": "max-jobs = 2\n",
      "u2.conf": "max-jobs = 3\ncores = 5\n",
    },
    env: (d) => ({
      NIX_USER_CONF_FILES: `${d}/u1.conf:${d}/u2.conf`,
      NIX_CONFIG: "builders-use-substitutes = true\nsubstituters =",
    }),
    keys: ["max-jobs", "cores", "builders-use-substitutes", "substituters"],
  },
  {
    name: "XDG config home and dirs",
    files: {
      "etc/nix.conf": "max-jobs = 1\n",
      "home/.config/nix/nix.conf": "max-jobs = 6\n",
      "xdg/nix/nix.conf": "max-jobs = 7\ncores = 7\n",
    },
    env: (d) => ({ HOME: `${d}/home`, XDG_CONFIG_DIRS: `${d}/xdg` }),
    keys: ["max-jobs", "cores"],
  },
  {
    name: "an include that is a directory is skipped",
    files: { "etc/nix.conf": "include sub\ncores = 4\n", "etc/sub/.keep": "" },
    keys: ["cores"],
  },
];

const ORACLE_ERRORS: { name: string; text: string }[] = [
  { name: "a name without a value", text: "max-jobs 0\n" },
  { name: "a value on its own line", text: "substituters =\nhttps://cache.nixos.org/\n" },
  { name: "a missing include", text: "include nope.conf\n" },
  { name: "include with two paths", text: "!include a b\n" },
  { name: "max-jobs not a number", text: "max-jobs = 0 1\n" },
  { name: "a boolean that is not one", text: "builders-use-substitutes = maybe\n" },
  { name: "a negative core count", text: "cores = -1\n" },
];

function oracleText(value: unknown): string {
  if (Array.isArray(value)) return value.map(String).join(" ");
  return String(value);
}

Deno.test({
  name: "loadNixConf() gives the values the real Nix 2.8 shows, case by case",
  ignore: !HAVE_NIX,
  async fn() {
    for (const c of ORACLE) {
      await using tmp = await tempDir();
      for (const [path, text] of Object.entries(c.files)) {
        const full = `${tmp.dir}/${path}`;
        await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
        await Deno.writeTextFile(full, text);
      }
      const env = { NIX_CONF_DIR: `${tmp.dir}/etc`, NIX_USER_CONF_FILES: "", ...c.env?.(tmp.dir) };
      if (c.env?.(tmp.dir).HOME !== undefined) {
        delete (env as Record<string, string>).NIX_USER_CONF_FILES;
      }
      const nix = await nixShowConfig(env);
      assert.equal(nix.code, 0, `${c.name}: ${nix.stderr}`);
      const conf = await loadNixConf(local, { env, version: "2.8.0" });
      assert.equal(conf.error, undefined, c.name);
      for (const key of c.keys) {
        assert.equal(
          conf.settings.get(key)?.value,
          oracleText(nix.settings?.[key]?.value),
          `${c.name}: ${key}`,
        );
      }
    }
  },
});

Deno.test({
  name: "loadNixConf() refuses exactly what the real Nix 2.8 refuses, in Nix's words",
  ignore: !HAVE_NIX,
  async fn() {
    for (const c of ORACLE_ERRORS) {
      await using tmp = await tempDir();
      await Deno.mkdir(`${tmp.dir}/etc`);
      await Deno.writeTextFile(`${tmp.dir}/etc/nix.conf`, c.text);
      const env = { NIX_CONF_DIR: `${tmp.dir}/etc`, NIX_USER_CONF_FILES: "" };
      const nix = await nixShowConfig(env);
      assert.notEqual(nix.code, 0, c.name);
      const nixError = nix.stderr.split("\n").find((l) => l.startsWith("error: "))?.slice(7);
      const conf = await loadNixConf(local, { env, version: "2.8.0" });
      const ours = conf.error?.nixMessage ?? conf.invalidValues[0]?.nixMessage;
      assert.equal(ours, nixError, c.name);
    }
  },
});

Deno.test({
  name: "loadNixConf() calls unknown exactly the settings the real Nix 2.8 warns about",
  ignore: !HAVE_NIX,
  async fn() {
    await using tmp = await tempDir();
    await Deno.mkdir(`${tmp.dir}/etc`);
    await Deno.writeTextFile(
      `${tmp.dir}/etc/nix.conf`,
      "extra-builders = ssh://b x86_64-linux\nextra-max-jobs = 2\nmax-job = 3\nextra-platforms = aarch64-linux\n" +
        "extra-extra-platforms = armv7l-linux\n",
    );
    const env = { NIX_CONF_DIR: `${tmp.dir}/etc`, NIX_USER_CONF_FILES: "" };
    const nix = await nixShowConfig(env);
    const warned = [...nix.stderr.matchAll(/warning: unknown setting '([^']+)'/g)].map((m) => m[1])
      .sort();
    const known = new Set(Object.keys(nix.settings ?? {}));
    const conf = await loadNixConf(local, { env, version: "2.8.0", knownSettings: known });
    assert.deepEqual(conf.unknown.map((u) => u.name).sort(), warned);
    assert.equal(
      conf.settings.get("extra-platforms")?.value,
      oracleText(nix.settings?.["extra-platforms"]?.value),
    );
  },
});
