/**
 * show_config on this machine's real Nix 2.8, each scenario in its own NIX_CONF_DIR, and on
 * snapshots built from fixtures of newer Nix versions. Every finding id has a test that raises it
 * and one that does not (the clean scenarios raise none of the problem ids).
 */

import assert from "node:assert/strict";
import type { Finding } from "../lib/findings.ts";
import { RecordingTarget } from "../lib/recording_target.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";
import { checkConfig, type CheckConfigOptions, parseEtime } from "../lib/show_config.ts";
import type { Target } from "../lib/target.ts";
import { EnvTarget, HAVE_NIX, tempDir } from "./show_config_support_test.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const FIXTURES = `${ROOT}tests/fixtures/show_config/`;
const NIX = ["nix", "--extra-experimental-features", "nix-command"];

interface Scenario {
  /** nix.conf text; `@DIR` is replaced by the scenario's directory. */
  nixConf: string;
  /** Files to write, relative to the scenario's directory (`@DIR` replaced in contents). */
  files?: Record<string, string>;
  /** Extra environment for the target. */
  env?: Record<string, string>;
  /** Check options. */
  options?: CheckConfigOptions;
  /** Prepare more (symlinks, modes) before the check. */
  prepare?: (dir: string) => Promise<void>;
}

async function run(s: Scenario): Promise<Awaited<ReturnType<typeof checkConfig>>> {
  await using tmp = await tempDir();
  const sub = (t: string) => t.replaceAll("@DIR", tmp.dir);
  await Deno.mkdir(`${tmp.dir}/etc`);
  await Deno.writeTextFile(`${tmp.dir}/etc/nix.conf`, sub(s.nixConf));
  for (const [path, text] of Object.entries(s.files ?? {})) {
    const full = `${tmp.dir}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(full, sub(text));
  }
  await s.prepare?.(tmp.dir);
  const target = new EnvTarget({
    NIX_CONF_DIR: `${tmp.dir}/etc`,
    NIX_USER_CONF_FILES: "",
    ...Object.fromEntries(Object.entries(s.env ?? {}).map(([k, v]) => [k, sub(v)])),
  });
  return await checkConfig(target, { followMachines: false, ...s.options });
}

function ids(findings: Finding[], status?: Finding["status"]): string[] {
  return findings.filter((f) => status === undefined || f.status === status).map((f) => f.id);
}

function find(findings: Finding[], id: string): Finding {
  const f = findings.find((x) => x.id === id);
  assert.ok(f, `expected ${id} in ${JSON.stringify(ids(findings))}`);
  return f;
}

const CLEAN_CONTROLLER: Scenario = {
  nixConf: "max-jobs = 0\nbuilders = @@DIR/etc/machines\nbuilders-use-substitutes = true\n" +
    "substituters =\n",
  files: {
    "etc/machines": "ssh-ng://builder@b1 x86_64-linux,aarch64-linux - 4 1 big-parallel,kvm\n",
  },
};

const SEED_LINE = "nixos x86_64-linux / - 8 1 kvm,big-parallel";

const nixTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !HAVE_NIX, fn });

nixTest("checkConfig() finds nothing wrong with the post's controller done right", async () => {
  const { findings, data } = await run(CLEAN_CONTROLLER);
  assert.deepEqual(ids(findings), ["config/effective", "machines/summary"]);
  assert.equal(data.role.value, "controller");
  assert.equal(data.builders.machines.length, 1);
  assert.equal(
    data.settings.find((s) => s.name === "max-jobs")?.origin[0]?.endsWith("/etc/nix.conf:1"),
    true,
  );
});

nixTest("checkConfig() finds nothing wrong with a machine that builds for itself", async () => {
  const { findings, data } = await run({ nixConf: "cores = 2\n" });
  assert.deepEqual(ids(findings), ["config/effective"]);
  assert.equal(data.role.value, "builder");
  assert.equal(data.builders.files[0]?.status, "missing"); // the default @machines: no finding
});

nixTest(
  "checkConfig() traces each shown value to its nix.conf line, an alias and an include too",
  async () => {
    const { data } = await run({
      nixConf: "build-cores = 3\n!include more.conf\n",
      files: { "etc/more.conf": "extra-trusted-users = alice\n" },
      options: { keys: ["cores", "trusted-users", "max-jobs"] },
    });
    const origin = (name: string) => data.settings.find((s) => s.name === name)?.origin;
    assert.match(origin("cores")?.[0] ?? "", /\/etc\/nix.conf:1$/);
    assert.deepEqual(origin("trusted-users")?.map((o) => o.replace(/.*\/etc\//, "")), [
      "Nix's default",
      "more.conf:1 (extra-)",
    ]);
    assert.deepEqual(origin("max-jobs"), ["Nix's default"]);
    assert.equal(data.settings.find((s) => s.name === "trusted-users")?.value, "root alice");
  },
);

nixTest(
  "checkConfig() shows every setting with --all and marks values that differ from the default",
  async () => {
    const { data } = await run({ nixConf: "cores = 3\n", options: { all: true } });
    assert.ok(data.settings.length > 80);
    assert.equal(data.settings.find((s) => s.name === "cores")?.differsFromDefault, true);
    assert.equal(data.settings.find((s) => s.name === "keep-going")?.differsFromDefault, false);
    // Nix 2.8 prints experimental features as numbers in JSON (NixOS/nix#6424): names are shown.
    assert.equal(
      data.settings.find((s) => s.name === "experimental-features")?.value,
      "nix-command",
    );
  },
);

nixTest(
  "machines/builders-empty is critical on a controller whose empty builders hides the machines file",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\nbuilders =\n",
      files: { "etc/machines": "b1 x86_64-linux\n" },
    });
    const f = find(findings, "machines/builders-empty");
    assert.equal(f.status, "critical");
    assert.match(
      f.summary,
      /nix.conf:2\), so .*\/etc\/machines is not used: with max-jobs = 0 no build can start/,
    );
    assert.match(f.fix ?? "", /nix.distributedBuilds = true/);
  },
);

nixTest("machines/builders-empty is only a warning on a machine that builds itself", async () => {
  const { findings } = await run({
    nixConf: "builders =\n",
    files: { "etc/machines": "b1 x86_64-linux\n" },
  });
  assert.equal(find(findings, "machines/builders-empty").status, "warning");
});

nixTest(
  "machines/missing-file is critical when the controller is left with no machines",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\nbuilders = @/nonexistent/machines\n",
    });
    const f = find(findings, "machines/missing-file");
    assert.equal(f.status, "critical");
    assert.match(f.summary, /Nix silently runs with no machines/);
    assert.ok(!ids(findings).includes("machines/none"));
  },
);

nixTest(
  "machines/file-error when an @file is a directory, which fails every remote build",
  async () => {
    const { findings } = await run({ nixConf: "max-jobs = 0\nbuilders = @@DIR/etc\n" });
    assert.equal(find(findings, "machines/file-error").status, "critical");
  },
);

nixTest(
  "machines/none when the machines file exists but lists nothing and max-jobs = 0",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\nbuilders = @@DIR/etc/machines\n",
      files: { "etc/machines": "# nothing yet\n" },
    });
    assert.equal(find(findings, "machines/none").status, "critical");
  },
);

nixTest("machines/invalid-entry quotes Nix's own error for a value it rejects", async () => {
  const { findings } = await run({
    nixConf: "max-jobs = 0\n",
    files: { "etc/machines": "b1 x86_64-linux - two\n" },
  });
  const f = find(findings, "machines/invalid-entry");
  assert.equal(f.status, "critical");
  assert.match(
    f.summary,
    /machines:1: Nix rejects this entry and every remote build fails: error: bad machine specification: failed to convert column #3 in a row: 'b1 x86_64-linux - two' to 'unsigned int'/,
  );
});

nixTest(
  "machines/invalid-host-key for a column #7 that is not base64, or not a public key",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\n",
      files: {
        "etc/machines": "b1 x86_64-linux - 1 1 - - not!base64\nb2 x86_64-linux - 1 1 - - AAAA\n",
      },
    });
    const keys = findings.filter((f) => f.id === "machines/invalid-host-key");
    assert.deepEqual(keys.map((f) => f.status), ["critical", "warning"]);
  },
);

nixTest(
  "machines/invalid-host-key is not raised for the base64 of a real ssh host key",
  async () => {
    await using tmp = await tempDir();
    await new Deno.Command("ssh-keygen", {
      args: ["-q", "-t", "ed25519", "-N", "", "-f", `${tmp.dir}/k`],
    })
      .output();
    const key = btoa((await Deno.readTextFile(`${tmp.dir}/k.pub`)).trim());
    const { findings } = await run({
      nixConf: "max-jobs = 0\n",
      files: { "etc/machines": `b1 x86_64-linux - 1 1 - - ${key}\n` },
    });
    assert.ok(!ids(findings).includes("machines/invalid-host-key"));
  },
);

nixTest("machines/duplicate when a builder is listed twice", async () => {
  const { findings } = await run({
    nixConf: "max-jobs = 0\nbuilders = @@DIR/etc/machines ; b1 x86_64-linux\n",
    files: { "etc/machines": "b1 x86_64-linux - 2\n" },
  });
  assert.match(
    find(findings, "machines/duplicate").summary,
    /ssh:\/\/b1 is listed again \(first at .*machines:1\)/,
  );
});

nixTest("machines/host-port-unsupported on a Nix before 2.31", async () => {
  const { findings } = await run({
    nixConf: "max-jobs = 0\n",
    files: { "etc/machines": "ssh-ng://root@b1:2222 x86_64-linux\n" },
  });
  const f = find(findings, "machines/host-port-unsupported");
  assert.equal(f.status, "critical");
  assert.match(f.fix ?? "", /Host b1\n +Port 2222/);
});

nixTest(
  "machines/columns-shifted reads the seed post's line and proposes the line it meant",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\n",
      files: { "etc/machines": `${SEED_LINE}\n` },
    });
    const f = find(findings, "machines/columns-shifted");
    assert.equal(f.status, "warning");
    assert.match(f.fix ?? "", /^Write it as: nixos x86_64-linux - 8 1 kvm,big-parallel$/m);
    assert.match(f.detail ?? "", /'\/', a directory/);
    // With max-jobs = 0 its mandatory features leave ordinary builds nowhere to go.
    assert.equal(find(findings, "machines/mandatory-features").status, "critical");
    assert.equal(find(findings, "machines/identity-file-not-file").status, "warning");
    assert.ok(!ids(findings).includes("machines/feature-suspicious")); // a symptom of the shift
  },
);

nixTest("machines/columns-shifted is not raised for the corrected line", async () => {
  const { findings } = await run({
    nixConf: "max-jobs = 0\nbuilders-use-substitutes = true\n",
    files: { "etc/machines": "nixos x86_64-linux - 8 1 kvm,big-parallel\n" },
  });
  assert.deepEqual(ids(findings), ["config/effective", "machines/summary"]);
});

nixTest("machines/max-jobs-zero for a machine that can never get a build", async () => {
  const { findings } = await run({
    nixConf: "max-jobs = 0\n",
    files: { "etc/machines": "b1 x86_64-linux - 0\nb2 x86_64-linux\n" },
  });
  assert.match(find(findings, "machines/max-jobs-zero").summary, /ssh:\/\/b1 has max jobs 0/);
});

nixTest("machines/feature-suspicious for a near miss of a known feature", async () => {
  const { findings } = await run({
    nixConf: "max-jobs = 0\n",
    files: { "etc/machines": "b1 x86_64-linux - 2 1 big-paralel\n" },
  });
  assert.match(
    find(findings, "machines/feature-suspicious").summary,
    /did you mean 'big-parallel'/,
  );
});

nixTest(
  "machines/feature-custom names an unknown feature as OK; known and gccarch-* ones are not named",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\n",
      files: { "etc/machines": "b1 x86_64-linux - 2 1 cuda,big-parallel,gccarch-znver3\n" },
    });
    const custom = find(findings, "machines/feature-custom");
    assert.equal(custom.status, "ok");
    assert.match(custom.summary, /: cuda is a feature Nix does not define itself$/);
    assert.ok(!ids(findings).includes("machines/feature-suspicious"));
    const known = await run({
      nixConf: "max-jobs = 0\n",
      files: { "etc/machines": "b1 x86_64-linux - 2 1 kvm,big-parallel,gccarch-znver3\n" },
    });
    assert.ok(!ids(known.findings).includes("machines/feature-custom"));
  },
);

nixTest(
  "machines/mandatory-features is a warning while another machine takes ordinary builds",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\n",
      files: { "etc/machines": "b1 x86_64-linux - 2 1 - kvm\nb2 x86_64-linux\n" },
    });
    assert.equal(find(findings, "machines/mandatory-features").status, "warning");
  },
);

nixTest(
  "identity files: missing, a directory, readable by others, unreadable; none for a 0600 key",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\n",
      files: {
        "etc/machines":
          "a x86_64-linux @DIR/absent-key\nb x86_64-linux @DIR/keys\nc x86_64-linux @DIR/open-key\n" +
          "d x86_64-linux @DIR/loop\ne x86_64-linux @DIR/good-key\n",
      },
      async prepare(dir) {
        await Deno.mkdir(`${dir}/keys`);
        await Deno.writeTextFile(`${dir}/open-key`, "key", { mode: 0o644 });
        await Deno.chmod(`${dir}/open-key`, 0o644);
        await Deno.writeTextFile(`${dir}/good-key`, "key", { mode: 0o600 });
        await Deno.symlink(`${dir}/loop`, `${dir}/loop`);
      },
    });
    const byId = (id: string) =>
      findings.filter((f) => f.id === id).map((f) => f.summary.split(":")[1]);
    assert.equal(byId("machines/identity-file-missing").length, 1);
    assert.equal(byId("machines/identity-file-not-file").length, 1);
    assert.equal(byId("machines/identity-file-permissions").length, 1);
    assert.equal(byId("machines/identity-file-unreadable").length, 1);
    assert.ok(!findings.some((f) => f.summary.includes("good-key")));
  },
);

nixTest(
  "machines/no-machine-for-system when max-jobs = 0 and no machine builds this machine's system",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\n",
      files: { "etc/machines": "b1 aarch64-linux\n" },
    });
    assert.match(
      find(findings, "machines/no-machine-for-system").summary,
      /no machine builds x86_64-linux/,
    );
  },
);

nixTest(
  "config/nix-conf-rejected names file:line and Nix's error; the effective config is then unavailable",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 0\nsubstituters =\nhttps://cache.nixos.org/\n",
    });
    const f = find(findings, "config/nix-conf-rejected");
    assert.equal(f.status, "critical");
    assert.match(
      f.summary,
      /nix.conf:3: Nix refuses this file, so every nix command fails: error: illegal configuration line 'https:\/\/cache.nixos.org\/' in '.*\/etc\/nix.conf'$/,
    );
    assert.equal(find(findings, "config/effective-unavailable").status, "unknown");
  },
);

nixTest("config/invalid-value quotes Nix's error for a value of the wrong type", async () => {
  const { findings } = await run({ nixConf: "builders-use-substitutes = maybe\n" });
  assert.match(
    find(findings, "config/invalid-value").summary,
    /nix.conf:1: Nix refuses 'builders-use-substitutes = maybe': error: Boolean setting 'builders-use-substitutes' has invalid value 'maybe'/,
  );
});

nixTest("config/unknown-setting explains that extra-builders does not append", async () => {
  const { findings } = await run({ nixConf: "extra-builders = ssh://b1 x86_64-linux\n" });
  const f = find(findings, "config/unknown-setting");
  assert.equal(f.status, "warning");
  assert.match(f.detail ?? "", /'builders' is a string/);
});

nixTest("config/file-unreadable for an include Nix skips silently", async () => {
  const { findings } = await run({ nixConf: "include sub\n", files: { "etc/sub/.keep": "" } });
  assert.match(find(findings, "config/file-unreadable").summary, /Nix skips it silently/);
});

nixTest(
  "config/max-jobs-not-zero and config/builders-use-substitutes-off on a controller",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 2\n",
      files: { "etc/machines": "b1 x86_64-linux\n" },
    });
    assert.match(find(findings, "config/max-jobs-not-zero").summary, /role guessed: 1 machine/);
    assert.equal(find(findings, "config/builders-use-substitutes-off").status, "warning");
  },
);

nixTest(
  "config/max-jobs-not-zero is not raised when --role builder says it builds too",
  async () => {
    const { findings } = await run({
      nixConf: "max-jobs = 2\nbuilders-use-substitutes = true\n",
      files: { "etc/machines": "b1 x86_64-linux\n" },
      options: { role: "builder" },
    });
    assert.ok(!ids(findings).includes("config/max-jobs-not-zero"));
  },
);

Deno.test("config/effective-unavailable is critical where nix is not installed", async () => {
  const target = new EnvTarget({ PATH: "/nonexistent" });
  const { findings } = await checkConfig(target, { followMachines: false });
  const f = find(findings, "config/effective-unavailable");
  assert.equal(f.status, "critical");
  assert.match(f.summary, /nix is not installed/);
  assert.ok(!ids(findings).includes("config/effective"));
});

Deno.test("builder/unreachable when a --builder-host cannot be reached, as unknown with one line", async () => {
  const target = new EnvTarget({ NIX_USER_CONF_FILES: "" });
  const { findings, data } = await checkConfig(target, {
    followMachines: false,
    builderHosts: ["ssh://root@127.0.0.1:9"],
    sshOptions: ["ConnectTimeout=3"],
  });
  const f = find(findings, "builder/unreachable");
  assert.equal(f.status, "unknown");
  assert.ok(!f.summary.includes("\n"));
  assert.equal(data.reached[0]?.reached, false);
});

// Snapshots built from fixtures of other Nix versions.
function snapshot(dir: string, files: Record<string, string>, json = true): SnapshotTarget {
  const read = (name: string) => Deno.readTextFileSync(`${FIXTURES}${dir}/${name}`);
  const fail = { code: 1, stdout: "", stderr: "error: 'config' is not a recognised command" };
  return new SnapshotTarget({
    meta: { host: dir, collected_at: "2026-11-25T00:00:00Z", tool: "test" },
    commands: [
      { argv: ["nix", "--version"], code: 0, stdout: read("version.txt"), stderr: "" },
      {
        argv: [...NIX, "config", "show", "--json"],
        ...(json ? { code: 0, stdout: read("config-show.json"), stderr: "" } : fail),
      },
      { argv: [...NIX, "config", "show"], code: 0, stdout: read("config-show.txt"), stderr: "" },
    ],
    paths: { "/etc/nix/machines.absent": { exists: false } },
    files,
  });
}

async function snapshotCheck(dir: string, files: Record<string, string>): Promise<Finding[]> {
  return (await checkConfig(snapshot(dir, files), { role: "controller" })).findings;
}

Deno.test("checkConfig() on a Nix 2.24 snapshot flags host:port, and on 2.31 does not", async () => {
  const files = { "/etc/nix/machines": "ssh-ng://b1:2222 x86_64-linux - 2 1.5\n" };
  assert.ok(
    ids(await snapshotCheck("nix-2.24-constructed", files)).includes(
      "machines/host-port-unsupported",
    ),
  );
  const newer = await snapshotCheck("nix-2.31-constructed", files);
  assert.ok(!ids(newer).includes("machines/host-port-unsupported"));
  assert.ok(!ids(newer).includes("machines/invalid-entry")); // 1.5 is a valid speed factor since 2.20
});

Deno.test("checkConfig() on a Lix snapshot reads experimental features by name despite JSON integers", async () => {
  const { data } = await checkConfig(snapshot("lix-2.92-constructed", {}), {
    keys: ["experimental-features"],
  });
  assert.equal(data.settings[0]?.value, "nix-command");
  assert.equal(data.nix.flavour, "lix");
  assert.equal(data.builders.rules, "Lix 2.92.0");
});

Deno.test("checkConfig() on a Determinate Nix snapshot applies the rules of the Nix it is built on", async () => {
  const files = { "/etc/nix/machines": "ssh-ng://b1:2222 x86_64-linux - 2 1.5\n" };
  const { data, findings } = await checkConfig(snapshot("determinate-3.4.1-constructed", files), {
    role: "controller",
    keys: ["max-jobs"],
  });
  assert.equal(data.nix.flavour, "determinate");
  assert.equal(data.nix.version, "2.28.2");
  assert.equal(data.builders.rules, "Determinate Nix 2.28.2");
  // Nix 2.28 takes fractional speed factors (2.20+) but not yet host:port (2.31+).
  assert.ok(ids(findings).includes("machines/host-port-unsupported"));
  assert.ok(!ids(findings).includes("machines/invalid-entry"));
  assert.equal(data.settings[0]?.name, "max-jobs");
});

Deno.test("machines/file-unknown when a snapshot did not capture the machines file", async () => {
  const findings = await snapshotCheck("nix-2.24-constructed", {});
  assert.equal(find(findings, "machines/file-unknown").status, "unknown");
  assert.ok(!ids(findings).includes("machines/missing-file"));
});

nixTest("checkConfig() finds the same on a snapshot recorded from a live run as live", async () => {
  await using tmp = await tempDir();
  await Deno.mkdir(`${tmp.dir}/etc`);
  await Deno.writeTextFile(`${tmp.dir}/etc/nix.conf`, "max-jobs = 2\nextra-builders = x\n");
  await Deno.writeTextFile(`${tmp.dir}/etc/machines`, `${SEED_LINE}\nb2 x86_64-linux - two\n`);
  const live = new RecordingTarget(
    new EnvTarget({ NIX_CONF_DIR: `${tmp.dir}/etc`, NIX_USER_CONF_FILES: "" }),
  );
  const first = await checkConfig(live, { followMachines: false });
  const replay = await checkConfig(new SnapshotTarget(live.snapshot()), { followMachines: false });
  const shape = (fs: Finding[]) => fs.map((f) => `${f.status} ${f.id} ${f.summary}`);
  assert.deepEqual(shape(replay.findings), shape(first.findings));
  assert.ok(ids(first.findings, "critical").includes("machines/invalid-entry"));
});

Deno.test("parseEtime() reads ps elapsed times of every shape", () => {
  assert.equal(parseEtime("05:03"), 303);
  assert.equal(parseEtime("1:00:00"), 3600);
  assert.equal(parseEtime("2-01:00:01"), 2 * 86400 + 3601);
  assert.equal(parseEtime("garbage"), null);
});

// The script itself: exit codes, --json, one-line errors.
async function script(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command("deno", {
    args: ["run", "-A", `${ROOT}scripts/show_config.ts`, ...args],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

nixTest(
  "show_config --json carries the settings and the machines, and exits with the worst status",
  async () => {
    await using tmp = await tempDir();
    await Deno.mkdir(`${tmp.dir}/etc`);
    await Deno.writeTextFile(`${tmp.dir}/etc/nix.conf`, "max-jobs = 0\nsubstituters =\n");
    await Deno.writeTextFile(`${tmp.dir}/etc/machines`, `${SEED_LINE}\n`);
    const r = await script(["--json", "--no-follow"], {
      NIX_CONF_DIR: `${tmp.dir}/etc`,
      NIX_USER_CONF_FILES: "",
    });
    assert.equal(r.code, 2, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.tool, "show_config");
    assert.equal(report.status, "critical");
    assert.equal(report.data.builders.machines[0].machine.sshKey, "/");
    assert.equal(
      report.data.settings.find((s: { name: string }) => s.name === "max-jobs").value,
      "0",
    );
  },
);

nixTest(
  "show_config prints the settings and the machines explained above the findings",
  async () => {
    await using tmp = await tempDir();
    await Deno.mkdir(`${tmp.dir}/etc`);
    await Deno.writeTextFile(
      `${tmp.dir}/etc/nix.conf`,
      "max-jobs = 0\nbuilders-use-substitutes = true\n",
    );
    await Deno.writeTextFile(
      `${tmp.dir}/etc/machines`,
      "nixos x86_64-linux - 8 1 kvm,big-parallel\n",
    );
    const r = await script(["--no-follow"], {
      NIX_CONF_DIR: `${tmp.dir}/etc`,
      NIX_USER_CONF_FILES: "",
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^\* max-jobs +  ?= 0 +.*nix.conf:1$/m);
    assert.match(
      r.stdout,
      /host: nixos over legacy ssh:\/\/.*a bare host is always legacy ssh:\/\//,
    );
    assert.match(r.stdout, /show_config on localhost: OK/);
  },
);

Deno.test("show_config exits 3 with one line for a bad flag value", async () => {
  const r = await script(["--role", "boss"]);
  assert.equal(r.code, 3);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /'boss' is not a role/);
});

Deno.test("every finding id of show_config is documented on its runbook page", async () => {
  const source = await Deno.readTextFile(`${ROOT}lib/show_config.ts`);
  const page = await Deno.readTextFile(`${ROOT}runbook/show_config.md`);
  const found = new Set(
    [...source.matchAll(/"((?:config|machines|builder)\/[a-z-]+)"/g)].map((m) => m[1]!),
  );
  assert.ok(found.size > 25);
  for (const id of found) {
    assert.ok(page.includes(`\`${id}\``), `${id} is not on runbook/show_config.md`);
  }
});

// Keep a reference so a failing target type shows up at type-check time.
const _typecheck: Target | null = null;
void _typecheck;
