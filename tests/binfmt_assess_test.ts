/**
 * assessBinfmt() judged on facts built from real captures (tests/fixtures/binfmt, origins in
 * tests/fixtures/README.md): every finding it can give is raised by one case and absent in another,
 * and each fix fits the platform. The live versions of these cases run in binfmt_lab_test.ts.
 */
import assert from "node:assert/strict";
import {
  assessBinfmt,
  type BinfmtFacts,
  type BinfmtMiscFacts,
  type CheckBinfmtOptions,
  type InterpreterFacts,
  parseBinfmtDump,
  parseInterpreterDump,
  parseSourcesDump,
  platformKind,
  selectSystems,
} from "../lib/binfmt.ts";
import { type BinfmtEntry, parseBinfmtD, parseBinfmtEntry } from "../lib/binfmt_entry.ts";
import type { Finding } from "../lib/findings.ts";

const F = new URL("./fixtures/binfmt/", import.meta.url).pathname;
const read = (path: string) => Deno.readTextFileSync(`${F}${path}`);
const entry = (path: string, name: string, enabled = true): BinfmtEntry => ({
  ...parseBinfmtEntry(read(path), name),
  enabled,
});

const QEMU_AARCH64 = "/usr/libexec/qemu-binfmt/aarch64-binfmt-P";
const STATIC_QEMU: InterpreterFacts = {
  path: QEMU_AARCH64,
  chain: [QEMU_AARCH64, "/usr/bin/qemu-aarch64-static"],
  exists: true,
  executable: true,
  kind: "elf-static",
};

/** A Debian x86_64 builder with the post's setup: qemu-aarch64 from binfmt-support, extra-platforms. */
function debianBuilder(over: Partial<BinfmtFacts> = {}): BinfmtFacts {
  return {
    host: "builder1",
    platform: { kind: "debian", systemd: true, machine: "x86_64" },
    binfmt: {
      state: "mounted",
      enabled: true,
      entries: [entry("proc/qemu-aarch64", "qemu-aarch64"), entry("proc/python3.11", "python3.11")],
      errors: [],
    },
    nix: {
      ok: true,
      system: "x86_64-linux",
      extraPlatforms: ["aarch64-linux", "i686-linux"],
      sandbox: "true",
      sandboxPaths: [],
    },
    sources: [
      ...parseBinfmtD(read("sources/qemu-aarch64.conf"), "/usr/lib/binfmt.d/qemu-aarch64.conf"),
    ],
    sourceErrors: [],
    interpreters: { [QEMU_AARCH64]: STATIC_QEMU },
    ...over,
  };
}

function nixosBuilder(flags: "P" | "PF", over: Partial<BinfmtFacts> = {}): BinfmtFacts {
  const file = flags === "P" ? "nixos" : "nixos-static";
  return {
    host: "nixos",
    platform: { kind: "nixos", systemd: true, machine: "x86_64" },
    binfmt: {
      state: "mounted",
      enabled: true,
      entries: [entry(`private/${file}-aarch64-linux`, "aarch64-linux")],
      errors: [],
    },
    nix: {
      ok: true,
      system: "x86_64-linux",
      extraPlatforms: ["aarch64-linux", "i686-linux"],
      sandbox: "true",
      sandboxPaths: ["/run/binfmt", "/nix/store/rhl4j0mpxcl9xrh0xi17xc8amzz0w0gf-qemu-5.1.0"],
    },
    sources: parseBinfmtD(read(`sources/${file}.conf`), "/etc/binfmt.d/nixos.conf"),
    sourceErrors: [],
    interpreters: {},
    ...over,
  };
}

function ids(findings: Finding[]): [string, string][] {
  return findings.map((f) => [f.id, f.status]);
}

function only(findings: Finding[], id: string): Finding {
  const found = findings.filter((f) => f.id === id);
  assert.equal(found.length, 1, `${id} in ${JSON.stringify(ids(findings))}`);
  return found[0]!;
}

function none(findings: Finding[], id: string): void {
  assert.deepEqual(findings.filter((f) => f.id === id), [], id);
}

const assess = (facts: BinfmtFacts, options: CheckBinfmtOptions = {}) =>
  assessBinfmt(facts, options);

Deno.test("a Debian builder with qemu-aarch64 (PF) and extra-platforms is OK: entry, i686 native", () => {
  const findings = assess(debianBuilder());
  assert.deepEqual(ids(findings), [
    ["binfmt/entry", "ok"],
    ["binfmt/native", "ok"],
  ]);
  const e = only(findings, "binfmt/entry");
  assert.equal(
    e.summary,
    "aarch64-linux: qemu-aarch64 runs it with /usr/libexec/qemu-binfmt/aarch64-binfmt-P (flags PF)",
  );
  assert.match(e.detail!, /-> \/usr\/bin\/qemu-aarch64-static \(elf-static\)/);
  assert.match(e.detail!, /flag F: fix-binary/);
  assert.match(
    e.detail!,
    /source: \/usr\/lib\/binfmt.d\/qemu-aarch64.conf, which registers something else: .*:OPF$/m,
  );
});

Deno.test("selectSystems() takes non-native extra-platforms plus the machines file's systems, or only --system", () => {
  const facts = debianBuilder();
  assert.deepEqual(selectSystems(facts, { sentSystems: ["x86_64-linux", "riscv64-linux"] }), [
    { system: "aarch64-linux", reasons: ["extra-platforms"] },
    { system: "i686-linux", reasons: ["extra-platforms"] },
    { system: "riscv64-linux", reasons: ["machines file"] },
  ]);
  assert.deepEqual(
    selectSystems(facts, { systems: ["s390x-linux"], sentSystems: ["riscv64-linux"] }),
    [
      { system: "s390x-linux", reasons: ["--system"] },
    ],
  );
});

Deno.test("binfmt/nix-config is UNKNOWN when Nix's settings cannot be read, absent when they can", () => {
  const f = only(
    assess(debianBuilder({ nix: { ok: false, reason: "'nix' is not installed or not on PATH" } }), {
      systems: ["aarch64-linux"],
    }),
    "binfmt/nix-config",
  );
  assert.equal(f.status, "unknown");
  assert.equal(f.detail, "'nix' is not installed or not on PATH");
  none(assess(debianBuilder()), "binfmt/nix-config");
});

Deno.test("binfmt/not-mounted is CRITICAL with the Debian mount fix when aarch64 needs it, absent for native systems", () => {
  const facts = debianBuilder({ binfmt: parseBinfmtDump("@@state not-mounted\n") });
  const f = only(assess(facts), "binfmt/not-mounted");
  assert.equal(f.status, "critical");
  assert.equal(f.summary, "binfmt_misc is not mounted on builder1: no foreign program can run");
  assert.match(f.fix!, /^mount -t binfmt_misc binfmt_misc \/proc\/sys\/fs\/binfmt_misc/);
  none(assess(facts), "binfmt/no-entry");
  none(assess(facts, { systems: ["x86_64-linux"] }), "binfmt/not-mounted");
  const nixos = only(
    assess(nixosBuilder("P", { binfmt: { state: "not-mounted" } })),
    "binfmt/not-mounted",
  );
  assert.match(nixos.fix!, /systemctl start proc-sys-fs-binfmt_misc.mount/);
  const noModule = only(
    assess(debianBuilder({ binfmt: parseBinfmtDump("@@state no-dir\n") })),
    "binfmt/not-mounted",
  );
  assert.match(noModule.fix!, /^modprobe binfmt_misc/);
});

Deno.test("binfmt/disabled is CRITICAL when status says disabled, absent when enabled", () => {
  const dump = `@@status disabled\n@@entry qemu-aarch64\n${read("proc/qemu-aarch64")}`;
  const f = only(assess(debianBuilder({ binfmt: parseBinfmtDump(dump) })), "binfmt/disabled");
  assert.equal(f.status, "critical");
  assert.match(f.fix!, /^echo 1 > \/proc\/sys\/fs\/binfmt_misc\/status {3}# a fresh mount/);
  none(assess(debianBuilder()), "binfmt/disabled");
});

Deno.test("binfmt/unreadable is UNKNOWN for an entry that does not parse and for an unreadable binfmt_misc", () => {
  const dump = `@@status enabled\n@@entry broken\nwhatever\n@@entry qemu-aarch64\n${
    read("proc/qemu-aarch64")
  }`;
  const f = only(assess(debianBuilder({ binfmt: parseBinfmtDump(dump) })), "binfmt/unreadable");
  assert.equal(f.status, "unknown");
  assert.match(f.detail!, /^broken: Cannot parse \/proc\/sys\/fs\/binfmt_misc\/broken:1/);
  const unreadable = only(
    assess(debianBuilder({ binfmt: { state: "unreadable", reason: "'sh' timed out" } })),
    "binfmt/unreadable",
  );
  assert.equal(unreadable.detail, "'sh' timed out");
  none(assess(debianBuilder()), "binfmt/unreadable");
  const unreachable = assess(debianBuilder({
    binfmt: { state: "unreadable", reason: "could not reach the host: Connection refused" },
    nix: { ok: false, reason: "could not reach the host: Connection refused" },
  }));
  assert.deepEqual(ids(unreachable), [["binfmt/unreadable", "unknown"]]);
  assert.equal(
    unreachable[0]!.summary,
    "Cannot check builder1: could not reach the host: Connection refused",
  );
});

Deno.test("binfmt/unknown-system is UNKNOWN for wasm32-wasi, absent for aarch64-linux", () => {
  const f = only(assess(debianBuilder(), { systems: ["wasm32-wasi"] }), "binfmt/unknown-system");
  assert.equal(f.status, "unknown");
  none(assess(debianBuilder(), { systems: ["aarch64-linux"] }), "binfmt/unknown-system");
});

Deno.test("binfmt/platform-missing is CRITICAL when the checked system is not in extra-platforms", () => {
  const facts = debianBuilder({
    nix: {
      ok: true,
      system: "x86_64-linux",
      extraPlatforms: ["i686-linux"],
      sandbox: "true",
      sandboxPaths: [],
    },
  });
  const f = only(assess(facts, { sentSystems: ["aarch64-linux"] }), "binfmt/platform-missing");
  assert.equal(f.status, "critical");
  assert.match(f.summary, /a 'aarch64-linux' with features \{\} is required to build/);
  assert.equal(
    f.fix,
    "add to /etc/nix/nix.conf: extra-platforms = aarch64-linux   # then restart nix-daemon (systemctl restart nix-daemon)",
  );
  assert.match(
    only(
      assess(nixosBuilder("PF", { nix: { ...facts.nix } }), { systems: ["aarch64-linux"] }),
      "binfmt/platform-missing",
    )
      .fix!,
    /^nix\.settings\.extra-platforms = \[ "aarch64-linux" \];/,
  );
  none(assess(debianBuilder()), "binfmt/platform-missing");
});

Deno.test("binfmt/native is OK for the machine's own architecture and for i686 on x86_64, not for aarch64", () => {
  const own = only(assess(debianBuilder(), { systems: ["x86_64-linux"] }), "binfmt/native");
  assert.equal(
    own.summary,
    "x86_64-linux: builder1's own architecture (x86-64), no emulation needed",
  );
  const compat = only(assess(debianBuilder(), { systems: ["i686-linux"] }), "binfmt/native");
  assert.match(compat.summary, /32-bit compat mode/);
  none(assess(debianBuilder(), { systems: ["aarch64-linux"] }), "binfmt/native");
});

Deno.test("binfmt/entry-disabled is CRITICAL with update-binfmts on Debian and systemd-binfmt on NixOS", () => {
  const disabled = entry("private/systemd-qemu-aarch64-disabled", "qemu-aarch64", false);
  const facts = debianBuilder({
    binfmt: { state: "mounted", enabled: true, entries: [disabled], errors: [] },
  });
  const f = only(assess(facts), "binfmt/entry-disabled");
  assert.equal(f.status, "critical");
  assert.equal(f.summary, "aarch64-linux: its binfmt entry qemu-aarch64 is disabled on builder1");
  assert.match(f.fix!, /^update-binfmts --enable qemu-aarch64/);
  none(assess(facts), "binfmt/no-entry");
  const nixos = nixosBuilder("P");
  const nixosDisabled = {
    ...nixos.binfmt,
    entries: [{ ...entry("private/nixos-aarch64-linux", "aarch64-linux"), enabled: false }],
  };
  assert.match(
    only(assess({ ...nixos, binfmt: nixosDisabled } as BinfmtFacts), "binfmt/entry-disabled").fix!,
    /^systemctl restart systemd-binfmt/,
  );
  none(assess(debianBuilder()), "binfmt/entry-disabled");
});

Deno.test("binfmt/no-entry is CRITICAL; the fix is the NixOS option, the Debian packages or a binfmt.d line", () => {
  const empty = { state: "mounted" as const, enabled: true, entries: [], errors: [] };
  const debian = only(assess(debianBuilder({ binfmt: empty })), "binfmt/no-entry");
  assert.equal(debian.status, "critical");
  assert.match(debian.fix!, /^apt-get install qemu-user-static binfmt-support/);
  assert.match(debian.fix!, /--system aarch64-linux --apply/);
  const nixos = only(assess(nixosBuilder("P", { binfmt: empty })), "binfmt/no-entry");
  assert.equal(
    nixos.fix,
    'boot.binfmt.emulatedSystems = [ "aarch64-linux" ];   # then: nixos-rebuild switch',
  );
  const fedora = only(
    assess(
      debianBuilder({
        binfmt: empty,
        platform: { kind: "other", systemd: true, machine: "x86_64" },
      }),
    ),
    "binfmt/no-entry",
  );
  assert.match(
    fedora.fix!,
    /:qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46.*:\/usr\/bin\/qemu-aarch64-static:F\n/,
  );
  assert.match(fedora.fix!, /systemctl restart systemd-binfmt/);
  none(assess(debianBuilder()), "binfmt/no-entry");
});

Deno.test("binfmt/several-entries WARNS and names the newest registration as the winner", () => {
  const docker = entry("private/hand-aarch64-P", "qemu-aarch64-docker");
  const facts = debianBuilder({
    binfmt: {
      state: "mounted",
      enabled: true,
      entries: [docker, entry("proc/qemu-aarch64", "qemu-aarch64")],
      errors: [],
    },
    interpreters: {
      "/usr/bin/qemu-aarch64-static": {
        ...STATIC_QEMU,
        path: "/usr/bin/qemu-aarch64-static",
        chain: ["/usr/bin/qemu-aarch64-static"],
      },
    },
    nix: {
      ok: true,
      system: "x86_64-linux",
      extraPlatforms: ["aarch64-linux"],
      sandbox: "false",
      sandboxPaths: [],
    },
  });
  const findings = assess(facts);
  const f = only(findings, "binfmt/several-entries");
  assert.equal(f.status, "warning");
  assert.equal(
    f.summary,
    "aarch64-linux: 2 entries match (qemu-aarch64-docker, qemu-aarch64); qemu-aarch64-docker wins because it was registered last",
  );
  assert.match(
    only(findings, "binfmt/entry").summary,
    /qemu-aarch64-docker runs it with \/usr\/bin\/qemu-aarch64-static \(flags P\)/,
  );
  none(assess(debianBuilder()), "binfmt/several-entries");
});

Deno.test("binfmt/partial-match WARNS for a mask that misses PIE programs, and is OK when a later entry covers them", () => {
  const exact = parseBinfmtEntry(
    read("proc/qemu-aarch64").replace(
      /^mask .*$/m,
      "mask ffffffffffffff00ffffffffffffffffffffffff",
    ),
    "exact-aarch64",
  );
  const alone = debianBuilder({
    binfmt: { state: "mounted", enabled: true, entries: [exact], errors: [] },
  });
  const f = only(assess(alone), "binfmt/partial-match");
  assert.equal(f.status, "warning");
  assert.match(
    f.summary,
    /does not match PIE executables \(ET_DYN\): those fail with "Exec format error"/,
  );
  const covered = debianBuilder({
    binfmt: {
      state: "mounted",
      enabled: true,
      entries: [exact, entry("proc/qemu-aarch64", "qemu-aarch64")],
      errors: [],
    },
  });
  assert.equal(only(assess(covered), "binfmt/partial-match").status, "ok");
  none(assess(debianBuilder()), "binfmt/partial-match");
});

Deno.test("binfmt/interpreter-missing is CRITICAL without F, a WARNING with F (the kernel holds it open)", () => {
  const missing = { ...STATIC_QEMU, chain: [QEMU_AARCH64], exists: false, executable: false };
  const hand = entry("private/hand-aarch64-P", "hand-aarch64-P");
  const noF = debianBuilder({
    binfmt: { state: "mounted", enabled: true, entries: [hand], errors: [] },
    interpreters: {
      "/usr/bin/qemu-aarch64-static": { ...missing, path: "/usr/bin/qemu-aarch64-static" },
    },
  });
  const critical = only(assess(noF), "binfmt/interpreter-missing");
  assert.equal(critical.status, "critical");
  assert.equal(
    critical.summary,
    "aarch64-linux: hand-aarch64-P's interpreter /usr/bin/qemu-aarch64-static does not exist: every aarch64-linux program fails",
  );
  const withF = debianBuilder({ interpreters: { [QEMU_AARCH64]: missing } });
  const warning = only(assess(withF), "binfmt/interpreter-missing");
  assert.equal(warning.status, "warning");
  assert.match(warning.fix!, /apt-get install --reinstall qemu-user-static/);
  none(assess(debianBuilder()), "binfmt/interpreter-missing");
});

Deno.test("binfmt/sandbox-path is CRITICAL for an entry without F whose interpreter the sandbox cannot see", () => {
  const hand = entry("private/hand-aarch64-P", "hand-aarch64-P");
  const base = debianBuilder({
    binfmt: { state: "mounted", enabled: true, entries: [hand], errors: [] },
    interpreters: {
      "/usr/bin/qemu-aarch64-static": {
        ...STATIC_QEMU,
        path: "/usr/bin/qemu-aarch64-static",
        chain: ["/usr/bin/qemu-aarch64-static"],
      },
    },
  });
  const f = only(assess(base), "binfmt/sandbox-path");
  assert.equal(f.status, "critical");
  assert.match(f.summary, /the Nix sandbox cannot see \/usr\/bin\/qemu-aarch64-static/);
  assert.match(f.fix!, /re-register with F: .*:\/usr\/bin\/qemu-aarch64-static:PF'/);
  assert.match(f.fix!, /extra-sandbox-paths = \/usr\/bin\/qemu-aarch64-static/);
  const covered = { ...base, nix: { ...base.nix, sandboxPaths: ["/usr/bin"] } } as BinfmtFacts;
  none(assess(covered), "binfmt/sandbox-path");
  const off = { ...base, nix: { ...base.nix, sandbox: "false" } } as BinfmtFacts;
  none(assess(off), "binfmt/sandbox-path");
  none(assess(debianBuilder()), "binfmt/sandbox-path"); // qemu-aarch64 has F
});

Deno.test("binfmt/sandbox-path follows a NixOS /run/binfmt wrapper to its #! program (nixpkgs#110540)", () => {
  const wrapperDump = "@@hop /run/binfmt/aarch64-linux\n@@executable\n@@head\n" +
    [...new TextEncoder().encode(read("thirdparty/nixpkgs-110540-run-binfmt-aarch64-linux"))]
      .map((b) => b.toString(16).padStart(2, "0")).join(" ") +
    "\n";
  const wrapper = parseInterpreterDump("/run/binfmt/aarch64-linux", wrapperDump);
  assert.equal(wrapper.kind, "script");
  assert.equal(wrapper.loader, "/usr/bin/env");
  const conf = read("thirdparty/nixpkgs-110540-nix.conf");
  const sandboxPaths = /^extra-sandbox-paths = (.*)$/m.exec(conf)![1]!.split(" ");
  const facts = nixosBuilder("P", {
    interpreters: { "/run/binfmt/aarch64-linux": wrapper },
    nix: {
      ok: true,
      system: "x86_64-linux",
      extraPlatforms: ["aarch64-linux"],
      sandbox: "true",
      sandboxPaths,
    },
  });
  const f = only(assess(facts), "binfmt/sandbox-path");
  assert.match(f.summary, /cannot see \/usr\/bin\/env:/);
  assert.match(f.fix!, /boot\.binfmt\.preferStaticEmulators = true;/);
  none(assess(nixosBuilder("PF")), "binfmt/sandbox-path");
});

Deno.test("binfmt/not-persistent WARNS for an entry no binfmt.d or binfmt-support file registers", () => {
  const hand = entry("private/hand-aarch64-F", "hand-aarch64-F");
  const facts = debianBuilder({
    binfmt: { state: "mounted", enabled: true, entries: [hand], errors: [] },
  });
  const f = only(assess(facts), "binfmt/not-persistent");
  assert.equal(f.status, "warning");
  assert.equal(
    f.summary,
    "aarch64-linux: hand-aarch64-F has no registration source on builder1: it is gone after a reboot or a restart of systemd-binfmt",
  );
  assert.match(f.fix!, /^echo ':hand-aarch64-F:M:0:.*:F' > \/etc\/binfmt.d\/hand-aarch64-F.conf/);
  none(assess(debianBuilder()), "binfmt/not-persistent");
  none(assess(nixosBuilder("PF")), "binfmt/not-persistent");
});

Deno.test("binfmt/not-offered lists systems the kernel runs but Nix does not offer, once each", () => {
  const facts = debianBuilder({
    binfmt: {
      state: "mounted",
      enabled: true,
      entries: ["qemu-aarch64", "qemu-riscv64", "qemu-arm"].map((n) => entry(`proc/${n}`, n)),
      errors: [],
    },
  });
  const f = only(assess(facts), "binfmt/not-offered");
  assert.equal(f.status, "ok");
  assert.equal(
    f.summary,
    "2 more system(s) can run on builder1 but Nix does not offer them: riscv64-linux, armv7l-linux",
  );
  assert.equal(
    f.fix,
    "add the ones to build here to /etc/nix/nix.conf: extra-platforms = armv7l-linux riscv64-linux   # then restart nix-daemon (systemctl restart nix-daemon)\n" +
      "then check it: deno run -A scripts/check_binfmt.ts --system armv7l-linux --smoke=nix",
  );
  const nixos = only(
    assess({ ...facts, platform: { kind: "nixos", systemd: true, machine: "x86_64" } }),
    "binfmt/not-offered",
  );
  assert.match(
    nixos.fix!,
    /^boot\.binfmt\.emulatedSystems = \[ "armv7l-linux" "riscv64-linux" \];\s+# adds them to nix\.settings\.extra-platforms itself/,
  );
  assert.match(
    nixos.fix!,
    /^or, for an entry registered another way: nix\.settings\.extra-platforms = \[ "armv7l-linux" \];/m,
  );
  none(assess(debianBuilder()), "binfmt/not-offered");
});

Deno.test("every finding that is not OK (and binfmt/not-offered) carries a fix fitting NixOS, Debian and other Linux", () => {
  const hand = (name: string) => entry(`private/${name}`, name);
  const staticAt = (path: string) => ({ [path]: { ...STATIC_QEMU, path, chain: [path] } });
  const exact = parseBinfmtEntry(
    read("proc/qemu-aarch64").replace(
      /^mask .*$/m,
      "mask ffffffffffffff00ffffffffffffffffffffffff",
    ),
    "exact-aarch64",
  );
  const mounted = (entries: BinfmtEntry[], enabled = true): BinfmtMiscFacts => ({
    state: "mounted",
    enabled,
    entries,
    errors: [],
  });
  const cases: [Partial<BinfmtFacts>, CheckBinfmtOptions][] = [
    [{ binfmt: { state: "not-mounted" } }, {}],
    [{ binfmt: { state: "no-kernel-support" } }, {}],
    [{ binfmt: { state: "unreadable", reason: "'sh' timed out" } }, {}],
    [{ binfmt: mounted([entry("proc/qemu-aarch64", "qemu-aarch64")], false) }, {}],
    [{ binfmt: mounted([]) }, {}],
    [{ binfmt: mounted([entry("proc/qemu-aarch64", "qemu-aarch64", false)]) }, {}],
    [{
      binfmt: mounted([hand("hand-aarch64-F"), entry("proc/qemu-aarch64", "qemu-aarch64")]),
      interpreters: staticAt("/usr/bin/qemu-aarch64-static"),
    }, {}],
    [{ binfmt: mounted([exact]) }, {}],
    [{
      binfmt: mounted([hand("hand-aarch64-P")]),
      interpreters: staticAt("/usr/bin/qemu-aarch64-static"),
    }, {}],
    [{
      binfmt: mounted([hand("hand-aarch64-P")]),
      interpreters: {
        "/usr/bin/qemu-aarch64-static": {
          ...STATIC_QEMU,
          path: "/usr/bin/qemu-aarch64-static",
          exists: false,
        },
      },
    }, {}],
    [{ binfmt: mounted([hand("hand-aarch64-P")]) }, {}], // interpreter not inspected
    [{
      nix: {
        ok: true,
        system: "x86_64-linux",
        extraPlatforms: [],
        sandbox: "true",
        sandboxPaths: [],
      },
    }, { systems: ["aarch64-linux"] }],
    [{}, { systems: ["wasm32-wasi"] }],
    [{ nix: { ok: false, reason: "'nix' is not installed or not on PATH" } }, {
      systems: ["aarch64-linux"],
    }],
    [{
      binfmt: parseBinfmtDump(
        `@@status enabled\n@@entry broken\nwhatever\n@@entry qemu-aarch64\n${
          read("proc/qemu-aarch64")
        }`,
      ),
    }, {}],
    [{
      binfmt: mounted(["qemu-aarch64", "qemu-riscv64"].map((n) => entry(`proc/${n}`, n))),
    }, {}],
  ];
  const seen = new Set<string>();
  for (const kind of ["nixos", "debian", "other"] as const) {
    for (const [over, options] of cases) {
      const facts = debianBuilder({
        ...over,
        platform: { kind, systemd: true, machine: "x86_64" },
      });
      for (const f of assess(facts, options)) {
        if (f.status === "ok" && f.id !== "binfmt/not-offered") continue;
        seen.add(f.id);
        assert.ok(f.fix !== undefined && f.fix.trim() !== "", `${kind}: ${f.id} has no fix`);
        if (kind === "nixos") {
          // NixOS's nix.conf is generated and it has no apt: its fixes are options or live commands.
          assert.doesNotMatch(
            f.fix,
            /apt-get|update-binfmts|\/etc\/nix\/nix\.conf/,
            `${f.id}: ${f.fix}`,
          );
        }
      }
    }
  }
  assert.deepEqual([...seen].sort(), [
    "binfmt/disabled",
    "binfmt/entry-disabled",
    "binfmt/interpreter-missing",
    "binfmt/nix-config",
    "binfmt/no-entry",
    "binfmt/not-mounted",
    "binfmt/not-offered",
    "binfmt/not-persistent",
    "binfmt/partial-match",
    "binfmt/platform-missing",
    "binfmt/sandbox-path",
    "binfmt/several-entries",
    "binfmt/unknown-system",
    "binfmt/unreadable",
  ]);
});

Deno.test("binfmt/nothing-to-check is OK when Nix offers no foreign system and none is asked for", () => {
  const facts = debianBuilder({
    nix: {
      ok: true,
      system: "x86_64-linux",
      extraPlatforms: ["x86_64-v3-linux"],
      sandbox: "true",
      sandboxPaths: [],
    },
  });
  assert.equal(only(assess(facts), "binfmt/nothing-to-check").status, "ok");
  none(assess(debianBuilder()), "binfmt/nothing-to-check");
});

Deno.test("parseSourcesDump() lets /etc/binfmt.d override and mask /usr/lib/binfmt.d like systemd-binfmt", () => {
  const line = read("sources/qemu-aarch64.conf");
  const dump = "@@file /etc/binfmt.d/qemu-aarch64.conf\n" + line.replace(":OPF", ":F") +
    "@@file /usr/lib/binfmt.d/qemu-aarch64.conf\n" + line +
    "@@masked /etc/binfmt.d/qemu-arm.conf\n@@file /usr/lib/binfmt.d/qemu-arm.conf\n" +
    read("sources/qemu-arm.conf") +
    "@@binfmts /var/lib/binfmts/python3.11\n" + read("sources/var-lib-binfmts/python3.11");
  const { rules, errors } = parseSourcesDump(dump);
  assert.deepEqual(errors, []);
  assert.deepEqual(rules.map((r) => [r.name, r.flags, r.file]), [
    ["qemu-aarch64", "F", "/etc/binfmt.d/qemu-aarch64.conf"],
    ["python3.11", "", "/var/lib/binfmts/python3.11"],
  ]);
});

Deno.test("platformKind() reads os-release: NixOS, Debian family, anything else", () => {
  assert.equal(platformKind(Deno.readTextFileSync("/etc/os-release")), "debian");
  assert.equal(platformKind('NAME=NixOS\nID=nixos\nPRETTY_NAME="NixOS 24.11 (Vicuna)"\n'), "nixos");
  assert.equal(platformKind(null, true), "nixos");
  assert.equal(platformKind('ID=fedora\nID_LIKE=""\n'), "other");
});
