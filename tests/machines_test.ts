import assert from "node:assert/strict";
import fc from "./_fast_check.ts";
import { LocalTarget } from "../lib/local_target.ts";
import {
  chooseMachine,
  describeMachine,
  machineCanBuild,
  machinesRules,
  parseMachines,
  resolveBuilders,
  suspiciousFeature,
  whyMachineCannotBuild,
} from "../lib/machines.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";
import {
  HAVE_NIX,
  LOCAL_SYSTEM,
  nixBuildersVerdict,
  tableRow,
  tempDir,
} from "./show_config_support_test.ts";

const SEED = "nixos x86_64-linux / - 8 1 kvm,big-parallel";

Deno.test("parseMachines() reads the seed post's line with '/' as the identity file and the features as mandatory", () => {
  const m = parseMachines(SEED, { version: "2.8.0", input: "/etc/nix/machines" }).machines[0]!;
  assert.equal(m.storeUri, "ssh://nixos");
  assert.equal(m.scheme, "ssh");
  assert.deepEqual(m.systems, ["x86_64-linux"]);
  assert.equal(m.sshKey, "/");
  assert.equal(m.maxJobs, 1);
  assert.equal(m.maxJobsDefaulted, true);
  assert.equal(m.speedFactor, 8);
  assert.deepEqual(m.supportedFeatures, ["1"]);
  assert.deepEqual(m.mandatoryFeatures, ["big-parallel", "kvm"]);
  assert.equal(m.input, "/etc/nix/machines");
  assert.equal(m.line, 1);
});

Deno.test("parseMachines() ends a '#' comment at the next ';' before Nix 2.29 and in Lix, at the line end from 2.29", () => {
  const text = "a x86_64-linux # retired; b aarch64-linux\nc i686-linux\n";
  const uris = (version: string) =>
    parseMachines(text, { version }).machines.map((m) => m.storeUri);
  assert.deepEqual(uris("2.28.4"), ["ssh://a", "ssh://b", "ssh://c"]);
  assert.deepEqual(uris("nix (Lix, like Nix) 2.93.0"), ["ssh://a", "ssh://b", "ssh://c"]);
  assert.deepEqual(uris("2.29.0"), ["ssh://a", "ssh://c"]);
});

Deno.test("parseMachines() numbers entries by the line they start on, also after ';'", () => {
  const text = "\n\na x86_64-linux;\n  b aarch64-linux ; c i686-linux\n";
  const lines = parseMachines(text).machines.map((m) => [m.rawUri, m.line]);
  assert.deepEqual(lines, [["a", 3], ["b", 4], ["c", 4]]);
});

Deno.test("parseMachines() reads the speed factor as an unsigned int before Nix 2.20 and as a float since", () => {
  const line = "h x86_64-linux - 8 1.5";
  const old = parseMachines(line, { version: "2.19.3" });
  assert.equal(
    old.errors[0]?.nixMessage,
    `bad machine specification: failed to convert column #4 in a row: '${line}' to 'unsigned int'`,
  );
  assert.equal(parseMachines(line, { version: "2.20.0" }).machines[0]?.speedFactor, 1.5);
  assert.equal(
    parseMachines("h x86_64-linux - 8 fast", { version: "2.24.0" }).errors[0]?.nixMessage,
    "bad machine specification: failed to convert column #4 in a row: 'h x86_64-linux - 8 fast' to 'float'",
  );
});

Deno.test("parseMachines() makes a speed factor of 0 into 1 and rejects a negative one with Nix's text", () => {
  assert.equal(parseMachines("h x86_64-linux - 8 0").machines[0]?.speedFactor, 1);
  assert.equal(
    parseMachines("h x86_64-linux - 8 -2", { version: "2.24.0" }).errors[0]?.nixMessage,
    "speed factor must be >= 0",
  );
});

Deno.test("parseMachines() treats '-', empty and missing columns as unset and ignores columns past #7", () => {
  const m = parseMachines("h - - - - - - - extra more").machines[0]!;
  assert.equal(m.systemsDefaulted, true);
  assert.deepEqual(m.systems, []);
  assert.equal(m.sshKey, undefined);
  assert.equal(m.maxJobs, 1);
  assert.equal(m.speedFactor, 1);
  assert.deepEqual(m.ignoredColumns, ["extra", "more"]);
  const bare = parseMachines("h").machines[0]!;
  assert.equal(bare.systemsDefaulted, true);
});

Deno.test("parseMachines() makes a bare host legacy ssh:// and keeps other store URIs", () => {
  const uris = parseMachines(
    "builder; ssh-ng://u@b2?remote-program=/nix/var/nix/profiles/default/bin/nix-daemon; " +
      "daemon; /some/store; auto",
  ).machines;
  assert.deepEqual(uris.map((m) => m.storeUri), [
    "ssh://builder",
    "ssh-ng://u@b2?remote-program=/nix/var/nix/profiles/default/bin/nix-daemon",
    "daemon",
    "/some/store",
    "auto",
  ]);
  assert.equal(uris[1]?.user, "u");
  assert.equal(uris[1]?.params["remote-program"], "/nix/var/nix/profiles/default/bin/nix-daemon");
  assert.equal(uris[3]?.scheme, "path");
});

Deno.test("parseMachines() takes the port out of host:port and [v6]:port", () => {
  const [a, b] = parseMachines("ssh-ng://root@b1:2222; ssh://[fe80::1]:22").machines;
  assert.deepEqual([a?.host, a?.port, a?.user], ["b1", 2222, "root"]);
  assert.deepEqual([b?.host, b?.port], ["fe80::1", 22]);
});

Deno.test("parseMachines() rejects a row whose first column is '-' with Nix's text", () => {
  assert.equal(
    parseMachines("- x86_64-linux").errors[0]?.nixMessage,
    "bad machine specification: store URL was not found at the first column of a row: '- x86_64-linux'",
  );
});

Deno.test("parseMachines() rejects a host key column that is not base64, as Nix 2.8 words it", () => {
  const { errors, machines } = parseMachines("h x86_64-linux - 1 1 - - not!base64", {
    version: "2.8.0",
  });
  assert.equal(machines.length, 0);
  assert.equal(errors[0]?.kind, "host-key");
  assert.match(errors[0]?.nixMessage ?? "", /is not valid base64 string: error: invalid character/);
});

Deno.test("parseMachines() before Nix 2.4 uses std::stoull and the old store URI rule", () => {
  const rules = machinesRules("2.3.16");
  assert.equal(rules.legacy, true);
  const m = parseMachines("remote-box x86_64-linux - 8x 1", { version: "2.3.16" }).machines[0]!;
  assert.equal(m.maxJobs, 8);
  assert.equal(m.storeUri, "remote-box");
  assert.equal(parseMachines("h x - x", { version: "2.3.16" }).errors[0]?.nixMessage, "stoull");
});

Deno.test("parseMachines() lists @file entries without following them; before 2.29 only when '@' comes first", () => {
  const text = "@/etc/nix/machines ; @ /etc/nix/more # note\n";
  const newer = parseMachines(text, { version: "2.29.0" });
  assert.deepEqual(newer.files.map((f) => f.path), ["/etc/nix/machines", "/etc/nix/more"]);
  assert.equal(newer.machines.length, 0);
  // Nix 2.8 keeps the blank after ';', so " @ /etc/nix/more" is a machine named '@'.
  const old = parseMachines(text, { version: "2.8.0" });
  assert.deepEqual(old.files.map((f) => f.path), ["/etc/nix/machines"]);
  assert.deepEqual(old.machines.map((m) => [m.rawUri, m.systems]), [["@", ["/etc/nix/more"]]]);
});

Deno.test("parseMachines() before 2.29 rejects an indented comment line, as the real Nix does", () => {
  const text = "a x86_64-linux\n  # b is retired\n";
  assert.equal(
    parseMachines(text, { version: "2.28.0" }).errors[0]?.nixMessage,
    "bad machine specification: store URL was not found at the first column of a row: '  '",
  );
  assert.equal(parseMachines(text, { version: "2.29.0" }).errors.length, 0);
});

Deno.test("parseMachines() never throws, whatever the text", () => {
  fc.assert(
    fc.property(
      fc.string({ maxLength: 200 }),
      fc.constantFrom("2.3.0", "2.8.0", "2.24.0", "2.31.0"),
      (text, version) => {
        const parsed = parseMachines(text, { version });
        const lines = text.split("\n").length;
        for (const e of parsed.entries) {
          const line = e.kind === "machine"
            ? e.machine.line
            : e.kind === "file"
            ? e.file.line
            : e.error.line;
          assert.ok(line >= 1 && line <= lines);
        }
      },
    ),
    { numRuns: 2000 },
  );
});

// The oracle: the real Nix 2.8 parses the same texts; its verdict must match ours.
const ORACLE_CASES = [
  SEED,
  "a x86_64-linux # c; b aarch64-linux",
  "a x86_64-linux\n\n  ; ;b i686-linux",
  "  # only a comment ; h2 x86_64-linux",
  "h x86_64-linux - -1",
  "h x86_64-linux - +5 2",
  "h x86_64-linux - 08",
  "h x86_64-linux - 8 1.5",
  "h x86_64-linux - 8 -1",
  "h x86_64-linux - 99999999999",
  "h x86_64-linux - 8 0",
  "h x86_64-linux - 8 1 - - !!!",
  "h x86_64-linux - 8 1 - - AAAA",
  "- x86_64-linux",
  "h - - - - kvm",
  "h x86_64-linux,aarch64-linux - 2 1 big-parallel,kvm benchmark AAAA extra1 extra2",
  "h\tx86_64-linux\t-\t3",
  "@/nonexistent/machines",
  "@/nonexistent/a ; @ /nonexistent/b",
  "a x86_64-linux\n  # b is retired\n",
  "",
];

Deno.test({
  name: "parseMachines() with Nix 2.8 rules agrees with the real Nix 2.8 on every case",
  ignore: !HAVE_NIX,
  async fn() {
    await using tmp = await tempDir();
    for (const builders of ORACLE_CASES) {
      const nix = await nixBuildersVerdict(builders, tmp.dir);
      const ours = await resolveBuilders(builders, () => Promise.resolve(null), {
        version: "2.8.0",
      });
      const error = ours.errors[0]?.nixMessage ?? null;
      assert.equal(error, nix.error, `error for ${JSON.stringify(builders)}`);
      if (error === null) {
        assert.deepEqual(
          ours.machines.map((m) => tableRow(m, LOCAL_SYSTEM)),
          nix.table,
          `machines for ${JSON.stringify(builders)}`,
        );
      }
    }
  },
});

Deno.test({
  name: "resolveBuilders() follows @files like the real Nix 2.8, and a directory fails both",
  ignore: !HAVE_NIX,
  async fn() {
    await using tmp = await tempDir();
    const m1 = `${tmp.dir}/m1`;
    const m2 = `${tmp.dir}/m2`;
    await Deno.writeTextFile(m1, `a x86_64-linux\n@${m2}\n@${tmp.dir}/absent\n`);
    await Deno.writeTextFile(m2, "b aarch64-linux - 4 # comment\n");
    const target = new LocalTarget();
    const builders = `@${m1}; c i686-linux`;
    const ours = await resolveBuilders(builders, (p) => target.readFile(p), { version: "2.8.0" });
    const nix = await nixBuildersVerdict(builders, `${tmp.dir}/oracle`);
    assert.deepEqual(ours.machines.map((m) => tableRow(m, LOCAL_SYSTEM)), nix.table);
    assert.deepEqual(ours.files.map((f) => [f.path, f.status]), [
      [m1, "read"],
      [m2, "read"],
      [`${tmp.dir}/absent`, "missing"],
    ]);
    assert.deepEqual(ours.machines.map((m) => [m.input, m.line]), [[m1, 1], [m2, 1], [
      "builders",
      1,
    ]]);

    await Deno.mkdir(`${tmp.dir}/dir`);
    const dirCase = `@${tmp.dir}/dir`;
    const oursDir = await resolveBuilders(dirCase, (p) => target.readFile(p), { version: "2.8.0" });
    assert.equal(oursDir.files[0]?.status, "error");
    const nixDir = await nixBuildersVerdict(dirCase, `${tmp.dir}/oracle`);
    assert.match(nixDir.stderr, /error: .*Is a directory/);
  },
});

Deno.test("resolveBuilders() reports an @file that includes itself instead of recursing", async () => {
  const files: Record<string, string> = { "/a": "x x86_64-linux\n@/b\n", "/b": "@/a\n" };
  const resolved = await resolveBuilders("@/a", (p) => Promise.resolve(files[p] ?? null));
  assert.deepEqual(resolved.files.map((f) => f.status), ["read", "read", "cycle"]);
  assert.match(resolved.files[2]?.reason ?? "", /\/a -> \/b -> \/a/);
  assert.equal(resolved.machines.length, 1);
});

Deno.test("resolveBuilders() says 'unknown' for a file a snapshot did not capture, and 'missing' for one it saw absent", async () => {
  const target = new SnapshotTarget({
    meta: { host: "h", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [],
    paths: { "/etc/nix/machines": { exists: false } },
    files: {},
  });
  const resolved = await resolveBuilders(
    "@/etc/nix/machines; @/etc/nix/other",
    (p) => target.readFile(p),
  );
  assert.deepEqual(resolved.files.map((f) => f.status), ["missing", "unknown"]);
});

Deno.test("machineCanBuild() sends a derivation to a machine with mandatory features only when it requires all of them", () => {
  const m = parseMachines("b x86_64-linux - 2 1 big-parallel kvm,nixos-test").machines[0]!;
  assert.equal(machineCanBuild(m, { system: "x86_64-linux" }), false);
  assert.equal(machineCanBuild(m, { system: "x86_64-linux", requiredFeatures: ["kvm"] }), false);
  assert.equal(
    machineCanBuild(m, { system: "x86_64-linux", requiredFeatures: ["kvm", "nixos-test"] }),
    true,
  );
  assert.equal(
    machineCanBuild(m, {
      system: "x86_64-linux",
      requiredFeatures: ["kvm", "nixos-test", "big-parallel"],
    }),
    true,
  );
  assert.equal(
    machineCanBuild(m, {
      system: "x86_64-linux",
      requiredFeatures: ["kvm", "nixos-test", "benchmark"],
    }),
    false,
  );
});

Deno.test("machineCanBuild() accepts 'builtin' on any machine and uses the local system for an unset column", () => {
  const [a, b] = parseMachines("a aarch64-linux; b").machines;
  assert.equal(machineCanBuild(a!, { system: "builtin" }), true);
  assert.equal(
    machineCanBuild(b!, { system: "x86_64-linux" }, { localSystem: "x86_64-linux" }),
    true,
  );
  assert.deepEqual(
    whyMachineCannotBuild(a!, { system: "x86_64-linux", requiredFeatures: ["kvm"] }),
    [
      "it does not build for x86_64-linux (it builds for aarch64-linux)",
      "it lacks the required features kvm",
    ],
  );
});

Deno.test("chooseMachine() picks the lowest load per speed, then the faster, then the less loaded, skipping full machines", () => {
  const { machines } = parseMachines(
    "a x86_64-linux - 2 1\nb x86_64-linux - 4 2\nc x86_64-linux - 1 1\nzero x86_64-linux - 0 9",
  );
  const sys = { system: "x86_64-linux" };
  assert.equal(chooseMachine(machines, sys).chosen?.storeUri, "ssh://b"); // all idle: higher speed
  assert.equal(
    chooseMachine(machines, sys, { load: { "ssh://b": 1 } }).chosen?.storeUri,
    "ssh://a", // 0/1 < 1/2
  );
  const full = chooseMachine(machines, sys, {
    load: { "ssh://a": 2, "ssh://b": 4, "ssh://c": 1 },
  });
  assert.equal(full.chosen, null);
  assert.equal(full.allBusy, true);
  assert.match(full.candidates[3]?.reasons[0] ?? "", /max jobs is 0/);
});

Deno.test("suspiciousFeature() flags numbers and near misses of known features, not custom names", () => {
  assert.match(suspiciousFeature("8") ?? "", /shifted/);
  assert.match(suspiciousFeature("nixos-tests") ?? "", /nixos-test/);
  assert.equal(suspiciousFeature("kvm"), null);
  assert.equal(suspiciousFeature("my-gpu"), null);
});

Deno.test("describeMachine() explains every field in words, including what mandatory features mean", () => {
  const m = parseMachines(
    "ssh-ng://builder@b1 x86_64-linux,aarch64-linux /root/.ssh/b1 8 2 big-parallel kvm " +
      btoa("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGV4YW1wbGU"),
  ).machines[0]!;
  assert.deepEqual(describeMachine(m), [
    "host: builder@b1 over ssh-ng:// (runs 'nix-daemon --stdio' there)",
    "systems: x86_64-linux, aarch64-linux",
    "identity: /root/.ssh/b1 (ssh -i /root/.ssh/b1)",
    "jobs: 8 at once",
    "speed factor: 2",
    "supports: big-parallel",
    "only takes derivations that require all of: kvm (mandatory features)",
    "host key: pinned (ssh-ed25519), known_hosts not used",
  ]);
});

Deno.test("describeMachine() warns that a Nix before 2.31 reads host:port as a host name", () => {
  const rules = machinesRules("2.24.0");
  const m = parseMachines("ssh-ng://b1:2222 x86_64-linux", { version: rules }).machines[0]!;
  assert.ok(
    describeMachine(m, { rules }).some((l) => l.includes("does not read ':2222' as a port")),
  );
  const newer = machinesRules("2.31.0");
  assert.ok(!describeMachine(m, { rules: newer }).some((l) => l.startsWith("port:")));
});
