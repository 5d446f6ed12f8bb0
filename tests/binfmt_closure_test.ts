/**
 * What an interpreter needs inside the Nix sandbox beyond its own file: `ldd` output parsed from real
 * captures (tests/fixtures/binfmt/ldd, closure; origins in tests/fixtures/README.md), the closure read
 * live from this machine (real ldd, real dash, real Nix 2.8), and sandboxNeeds() / assessBinfmt()
 * judging it. The lab run with a real sandboxed build is in binfmt_lab_test.ts.
 */
import assert from "node:assert/strict";
import {
  assessBinfmt,
  type BinfmtFacts,
  gatherInterpreterClosure,
  type InterpreterFacts,
  parseHopsDump,
  parseInterpreterDump,
  parseStoreClosureDump,
  sandboxNeeds,
} from "../lib/binfmt.ts";
import { parseBinfmtEntry } from "../lib/binfmt_entry.ts";
import { parseLddOutput } from "../lib/elf.ts";
import { ParseError } from "../lib/errors.ts";
import type { Finding } from "../lib/findings.ts";
import { LocalTarget } from "../lib/local_target.ts";

const F = new URL("./fixtures/binfmt/", import.meta.url).pathname;
const read = (path: string) => Deno.readTextFileSync(`${F}${path}`);
const ldd = (name: string) => {
  const c = JSON.parse(read(`ldd/${name}.json`)) as { stdout: string; stderr: string };
  return parseLddOutput(c.stdout, c.stderr, `ldd ${name}`);
};
const dumpOf = (path: string, text: string) =>
  `@@hop ${path}\n@@executable\n@@head\n` +
  [...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, "0")).join(" ") + "\n";

Deno.test("parseLddOutput() reads Debian 12's ldd of dynamic programs: each library's file and the loader, no vDSO", () => {
  assert.deepEqual(ldd("debian12-ls"), {
    kind: "dynamic",
    libraries: [
      { name: "libselinux.so.1", path: "/lib/x86_64-linux-gnu/libselinux.so.1" },
      { name: "libc.so.6", path: "/lib/x86_64-linux-gnu/libc.so.6" },
      { name: "libpcre2-8.so.0", path: "/lib/x86_64-linux-gnu/libpcre2-8.so.0" },
      { name: "/lib64/ld-linux-x86-64.so.2", path: "/lib64/ld-linux-x86-64.so.2" },
    ],
    notFound: [],
  });
  const nix = ldd("debian12-nix");
  assert.equal(nix.kind, "dynamic");
  if (nix.kind !== "dynamic") return;
  assert.equal(nix.libraries.length, 60);
  assert.deepEqual(nix.libraries.find((l) => l.name === "libnixstore.so"), {
    name: "libnixstore.so",
    path: "/usr/lib/nix/libnixstore.so",
  });
  assert.equal(nix.libraries.some((l) => l.name.startsWith("linux-vdso")), false);
});

Deno.test("parseLddOutput() tells a static-pie, a script and an absent file apart", () => {
  assert.deepEqual(ldd("debian12-qemu-aarch64-static"), { kind: "static" });
  assert.deepEqual(ldd("debian12-script"), { kind: "not-dynamic" });
  assert.deepEqual(ldd("debian12-absent"), {
    kind: "error",
    reason: "ldd: /nonexistent/qemu-aarch64: No such file or directory",
  });
});

Deno.test("parseLddOutput() lists libraries the loader cannot find (Debian's libsystemd-core)", () => {
  const report = ldd("debian12-libsystemd-core-not-found");
  assert.equal(report.kind, "dynamic");
  if (report.kind !== "dynamic") return;
  assert.deepEqual(report.notFound, ["libsystemd-shared-252.so"]);
  assert.equal(report.libraries.length, 15);
});

Deno.test("parseLddOutput() reads NixOS's ldd (loader with =>), musl's ldd, and a loader error", () => {
  assert.deepEqual(parseLddOutput(read("ldd/thirdparty-pwncollege-dojo-471-nix-ldd.txt")), {
    kind: "dynamic",
    libraries: [
      {
        name: "libc.so.6",
        path: "/nix/store/dbcw19dshdwnxdv5q2g6wldj6syyvq7l-glibc-2.39-52/lib/libc.so.6",
      },
      {
        name: "/lib64/ld-linux-x86-64.so.2",
        path:
          "/nix/store/dbcw19dshdwnxdv5q2g6wldj6syyvq7l-glibc-2.39-52/lib64/ld-linux-x86-64.so.2",
      },
    ],
    notFound: [],
  });
  assert.deepEqual(parseLddOutput(read("ldd/thirdparty-staticx-178-musl-ldd.txt")), {
    kind: "dynamic",
    libraries: [
      { name: "/lib/ld-musl-x86_64.so.1", path: "/lib/ld-musl-x86_64.so.1" },
      { name: "libc.so", path: "/lib/ld-musl-x86_64.so.1" },
    ],
    notFound: [],
  });
  assert.deepEqual(parseLddOutput("", read("ldd/thirdparty-staticx-178-glibc-ldd-on-musl.txt")), {
    kind: "error",
    reason:
      "test/musl/app: error while loading shared libraries: /lib/x86_64-linux-gnu/libc.so: invalid ELF header",
  });
});

Deno.test("parseLddOutput() refuses a line of no known form, naming the input and the line", () => {
  assert.throws(
    () => parseLddOutput("\tlibc.so.6 => /lib/libc.so.6 (0x1)\nsomething else\n", "", "ldd /x"),
    (e) =>
      e instanceof ParseError &&
      e.message === "Cannot parse ldd /x:2: unexpected line 'something else'",
  );
});

Deno.test("parseHopsDump() and parseStoreClosureDump() read what the scripts printed on this machine", () => {
  const hops = parseHopsDump(read("closure/debian12-hops-ls.txt"));
  assert.deepEqual(hops["/lib64/ld-linux-x86-64.so.2"]?.hops, [
    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
  ]);
  assert.deepEqual(hops["/lib/x86_64-linux-gnu/libpcre2-8.so.0"]?.hops, [
    "/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2",
  ]);
  assert.deepEqual(hops["/lib/x86_64-linux-gnu/libc.so.6"], { hops: [], exists: true });
  const store = parseStoreClosureDump(read("closure/nix-2.8-store-closure.txt"));
  assert.deepEqual(Object.keys(store.closures), [
    "/nix/store/2z9yvnw8r9vlcxl91ahf7a8w3s9pww73-nbr-binfmt-smoke-2939f743abbf4295.drv",
  ]);
  assert.equal(store.gaps.length, 1);
  assert.match(
    store.gaps[0]!,
    /00000000000000000000000000000000-nbr-absent: error: path .* is not valid$/,
  );
});

Deno.test("parseInterpreterDump() lists what a wrapper script execs: the NixOS wrapper's qemu store path (nixpkgs#110540)", () => {
  const wrapper = parseInterpreterDump(
    "/run/binfmt/aarch64-linux",
    dumpOf("/run/binfmt/aarch64-linux", read("thirdparty/nixpkgs-110540-run-binfmt-aarch64-linux")),
  );
  assert.equal(wrapper.shebang, "/usr/bin/env sh");
  assert.deepEqual(wrapper.execs, [
    "/nix/store/rhl4j0mpxcl9xrh0xi17xc8amzz0w0gf-qemu-5.1.0/bin/qemu-aarch64",
  ]);
  const bash = parseInterpreterDump(
    "/w",
    dumpOf("/w", '#!/bin/bash\nexec -a "$0" /usr/bin/qemu-aarch64-static "$@"\n'),
  );
  assert.deepEqual(bash.execs, ["/usr/bin/qemu-aarch64-static"]);
});

Deno.test("gatherInterpreterClosure() on this machine: a #!/bin/sh wrapper needs sh, dash, dash's loader and libc, and what it execs", async () => {
  const info = parseInterpreterDump(
    "/run/binfmt/aarch64-linux",
    dumpOf("/run/binfmt/aarch64-linux", '#!/bin/sh\nexec /usr/bin/qemu-aarch64-static "$@"\n'),
  );
  const closure = await gatherInterpreterClosure(new LocalTarget({ timeoutMs: 20_000 }), info);
  const expected: [string, string][] = [
    ["/bin/sh", "#! program of /run/binfmt/aarch64-linux"],
    ["/bin/dash", "link target of /bin/sh"],
    ["/usr/bin/qemu-aarch64-static", "run by /run/binfmt/aarch64-linux"],
    ["/lib64/ld-linux-x86-64.so.2", "ELF loader of /bin/dash"],
    ["/lib/x86_64-linux-gnu/libc.so.6", "library libc.so.6 of /bin/dash"],
    ["/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "link target of /lib64/ld-linux-x86-64.so.2"],
  ];
  assert.deepEqual(closure.needs.map((n) => [n.path, n.why]), expected);
  assert.deepEqual([closure.gaps, closure.broken, closure.closures], [[], [], {}]);
});

Deno.test("gatherInterpreterClosure() follows an inside=source sandbox-paths item to what the sandbox shows there", async () => {
  const info = parseInterpreterDump("/w", dumpOf("/w", "#!/bin/sh\nexit 0\n"));
  const closure = await gatherInterpreterClosure(new LocalTarget({ timeoutMs: 20_000 }), info, {
    sandboxPaths: ["/bin/sh=/usr/bin/qemu-aarch64-static"],
  });
  // Inside the sandbox /bin/sh is the static qemu binary: no dash, no libc, and nothing at the
  // source's own path (the bind mount shows it at /bin/sh).
  assert.deepEqual(closure.needs.map((n) => n.path), ["/bin/sh"]);
  // Mapped to the dynamic dash, what dash loads is looked up at its own paths: those are needed.
  const dash = await gatherInterpreterClosure(new LocalTarget({ timeoutMs: 20_000 }), info, {
    sandboxPaths: ["/bin/sh=/usr/bin/dash"],
  });
  const paths = dash.needs.map((n) => n.path);
  assert.ok(!paths.includes("/usr/bin/dash"), paths.join(" "));
  assert.ok(paths.includes("/lib/x86_64-linux-gnu/libc.so.6"), paths.join(" "));
});

Deno.test("gatherInterpreterClosure() names what it could not read: a store path Nix does not know, a missing #! program", async () => {
  const absent = "/nix/store/00000000000000000000000000000000-nbr-absent";
  const info = parseInterpreterDump(
    "/w",
    dumpOf("/w", `#!/nonexistent/sh\nexec ${absent}/bin/qemu "$@"\n`),
  );
  const closure = await gatherInterpreterClosure(new LocalTarget({ timeoutMs: 20_000 }), info);
  assert.deepEqual(closure.broken, ["/nonexistent/sh (#! program of /w) does not exist"]);
  assert.equal(closure.gaps.length, 1);
  assert.match(closure.gaps[0]!, /^nix-store -qR .*-nbr-absent: error: path .* is not valid$/);
});

// ---------------------------------------------------------------------------------------------
// Judging. Store paths below other than those from fixtures are illustrative (valid form, made up).

const QEMU_P = "/usr/libexec/qemu-binfmt/aarch64-binfmt-P";
const WRAPPER = "/nix/store/9w2d4hjv1q8m7ylc6ahrk0s3bz5xnpfg-qemu-aarch64-binfmt-P";
const QEMU_STORE = "/nix/store/rhl4j0mpxcl9xrh0xi17xc8amzz0w0gf-qemu-5.1.0";
const GLIBC = "/nix/store/dbcw19dshdwnxdv5q2g6wldj6syyvq7l-glibc-2.39-52";

function facts(
  flags: string,
  info: InterpreterFacts,
  sandboxPaths: string[],
  over: Partial<BinfmtFacts> = {},
): BinfmtFacts {
  const line = Deno.readTextFileSync(`${F}proc/qemu-aarch64`)
    .replace(/^interpreter .*$/m, `interpreter ${info.path}`)
    .replace(/^flags: .*$/m, `flags: ${flags}`);
  return {
    host: "builder1",
    platform: { kind: "debian", systemd: true, machine: "x86_64" },
    binfmt: {
      state: "mounted",
      enabled: true,
      entries: [parseBinfmtEntry(line, "qemu-aarch64")],
      errors: [],
    },
    nix: {
      ok: true,
      system: "x86_64-linux",
      extraPlatforms: ["aarch64-linux"],
      sandbox: "true",
      sandboxPaths,
    },
    sources: [],
    sourceErrors: [],
    interpreters: { [info.path]: info },
    ...over,
  };
}

function sandboxFinding(findings: Finding[]): Finding | undefined {
  const found = findings.filter((f) => f.id === "binfmt/sandbox-path");
  assert.ok(found.length <= 1);
  return found[0];
}

/** A Debian-style dynamically linked qemu, its libraries as Debian 12's ldd lists /bin/ls's. */
function dynamicQemu(): InterpreterFacts {
  const report = ldd("debian12-ls");
  assert.equal(report.kind, "dynamic");
  const libs = report.kind === "dynamic" ? report.libraries : [];
  return {
    path: QEMU_P,
    chain: [QEMU_P, "/usr/bin/qemu-aarch64"],
    exists: true,
    executable: true,
    kind: "elf-dynamic",
    loader: "/lib64/ld-linux-x86-64.so.2",
    closure: {
      needs: libs.map((l) => ({
        path: l.path!,
        why: `library ${l.name} of /usr/bin/qemu-aarch64`,
      })),
      broken: [],
      closures: {},
      gaps: [],
    },
  };
}

Deno.test("binfmt/sandbox-path: a dynamically linked emulator without F needs its loader and libraries visible too", () => {
  const exposed = ["/usr/libexec/qemu-binfmt", "/usr/bin/qemu-aarch64"];
  const f = sandboxFinding(assessBinfmt(facts("P", dynamicQemu(), exposed)));
  assert.equal(f?.status, "critical");
  assert.equal(
    f!.summary,
    'aarch64-linux: qemu-aarch64 has no F flag and the Nix sandbox cannot see /lib64/ld-linux-x86-64.so.2, /lib/x86_64-linux-gnu/libselinux.so.1, /lib/x86_64-linux-gnu/libc.so.6, /lib/x86_64-linux-gnu/libpcre2-8.so.0: sandboxed builds fail with "No such file or directory"',
  );
  assert.match(
    f!.detail!,
    /^ {2}\/lib\/x86_64-linux-gnu\/libc.so.6: library libc.so.6 of \/usr\/bin\/qemu-aarch64$/m,
  );
  // F alone would not help a dynamic interpreter: the fix says so instead of printing an F line.
  assert.doesNotMatch(f!.fix!, /re-register with F/);
  assert.match(f!.fix!, /^apt-get install qemu-user-static binfmt-support/);
  assert.match(
    f!.fix!,
    /extra-sandbox-paths = \/lib64\/ld-linux-x86-64.so.2 \/lib\/x86_64-linux-gnu\/libselinux.so.1 /,
  );
  const all = [...exposed, "/lib64", "/lib/x86_64-linux-gnu"];
  assert.equal(sandboxFinding(assessBinfmt(facts("P", dynamicQemu(), all))), undefined);
});

Deno.test("binfmt/sandbox-path with F: a dynamic interpreter still needs its loader and libraries; a static one nothing", () => {
  const f = sandboxFinding(assessBinfmt(facts("PF", dynamicQemu(), [])));
  assert.equal(f?.status, "critical");
  assert.match(
    f!.summary,
    /^aarch64-linux: qemu-aarch64's interpreter is dynamically linked: F keeps it open, but the Nix sandbox cannot see \/lib64\/ld-linux-x86-64.so.2, /,
  );
  assert.doesNotMatch(f!.summary, /aarch64-binfmt-P/); // the kernel holds the interpreter itself
  const staticQemu: InterpreterFacts = {
    path: QEMU_P,
    chain: [QEMU_P, "/usr/bin/qemu-aarch64-static"],
    exists: true,
    executable: true,
    kind: "elf-static",
  };
  assert.equal(sandboxFinding(assessBinfmt(facts("PF", staticQemu, []))), undefined);
});

/** NixOS's qemu registration: /run/binfmt/aarch64-linux -> the binfmt-P wrapper in the store. */
function nixosWrapper(): InterpreterFacts {
  return {
    path: "/run/binfmt/aarch64-linux",
    chain: ["/run/binfmt/aarch64-linux", `${WRAPPER}/bin/qemu-aarch64-binfmt-P`],
    exists: true,
    executable: true,
    kind: "elf-dynamic",
    loader: `${GLIBC}/lib/ld-linux-x86-64.so.2`,
    closure: {
      needs: [{ path: `${GLIBC}/lib/ld-linux-x86-64.so.2`, why: "ELF loader" }],
      broken: [],
      closures: { [WRAPPER]: [GLIBC, QEMU_STORE, WRAPPER], [GLIBC]: [GLIBC] },
      gaps: [],
    },
  };
}

Deno.test("binfmt/sandbox-path: a store path in sandbox-paths brings its closure (NixOS's /run/binfmt wrapper and qemu)", () => {
  const nixos = { platform: { kind: "nixos" as const, systemd: true, machine: "x86_64" } };
  const sandboxStoreClosure = { closures: { [WRAPPER]: [GLIBC, QEMU_STORE, WRAPPER] }, gaps: [] };
  const ok = facts("P", nixosWrapper(), ["/run/binfmt", WRAPPER], {
    ...nixos,
    sandboxStoreClosure,
  });
  assert.equal(sandboxFinding(assessBinfmt(ok)), undefined);
  // Even when the sandbox side could not be queried, the listed wrapper's own closure counts.
  const needs = sandboxNeeds(nixosWrapper(), false, ["/run/binfmt", WRAPPER]);
  assert.deepEqual([needs.missing, needs.invisibleStorePaths, needs.storePaths], [[], [], 3]);

  // addEmulatedSystemsToNixSandbox = false: the wrapper's store path and its closure are not there.
  const f = sandboxFinding(assessBinfmt(facts("P", nixosWrapper(), ["/run/binfmt"], nixos)));
  assert.equal(f?.status, "critical");
  assert.deepEqual((f!.data as { missing: string[] }).missing, [WRAPPER]);
  assert.match(f!.detail!, /^store closure \(nix-store -qR\): 3 path\(s\), 3 not visible: /m);
  assert.match(f!.fix!, new RegExp(`nix.settings.extra-sandbox-paths = \\[ "${WRAPPER}" \\];`));
});

Deno.test("binfmt/sandbox-path: a #!/usr/bin/env wrapper says env needs PATH; the exec'd qemu is in sandbox-paths (nixpkgs#110540)", () => {
  const wrapper = parseInterpreterDump(
    "/run/binfmt/aarch64-linux",
    dumpOf("/run/binfmt/aarch64-linux", read("thirdparty/nixpkgs-110540-run-binfmt-aarch64-linux")),
  );
  const conf = read("thirdparty/nixpkgs-110540-nix.conf");
  const sandboxPaths = /^extra-sandbox-paths = (.*)$/m.exec(conf)![1]!.split(" ");
  const f = sandboxFinding(assessBinfmt(facts("P", wrapper, sandboxPaths)));
  assert.deepEqual((f!.data as { missing: string[] }).missing, ["/usr/bin/env"]);
  assert.match(
    f!.detail!,
    /#!\/usr\/bin\/env sh: env looks the program up in PATH, and Nix runs builders with PATH=\/path-not-set/,
  );
  // Not read live (a unit test has no such host): said so rather than assumed fine.
  assert.match(
    f!.detail!,
    /^not checked: what \/run\/binfmt\/aarch64-linux needs beyond its #! program was not read$/m,
  );
});

Deno.test("binfmt/sandbox-path is UNKNOWN when nothing known is missing but not everything could be read", () => {
  const info = dynamicQemu();
  info.closure!.gaps.push(
    "the libraries of /usr/bin/qemu-aarch64 (ldd: 'ldd' is not installed or not on PATH)",
  );
  const all = [
    "/usr/libexec/qemu-binfmt",
    "/usr/bin/qemu-aarch64",
    "/lib64",
    "/lib/x86_64-linux-gnu",
  ];
  const f = sandboxFinding(assessBinfmt(facts("P", info, all)));
  assert.equal(f?.status, "unknown");
  assert.match(f!.summary, /not everything it needs could be read$/);
  assert.match(f!.fix!, /--smoke=nix/);
  // With sandbox = false nothing is needed at all.
  const off = facts("P", info, []);
  if (off.nix.ok) off.nix.sandbox = "false";
  assert.equal(sandboxFinding(assessBinfmt(off)), undefined);
});
