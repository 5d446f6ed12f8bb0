/**
 * binfmt_misc text formats, parsed from real captures: this machine's live entries (Debian 12,
 * binfmt-support), entries registered on this kernel in a private binfmt_misc instance (systemd-style,
 * by hand with and without F, no mask, no flags, extension, NixOS lines), and entries quoted in public
 * issue threads. Origins: tests/fixtures/README.md.
 */
import assert from "node:assert/strict";
import {
  bytesToHex,
  escapeField,
  formatRegisterLine,
  normalizeFlags,
  parseBinfmtD,
  parseBinfmtEntry,
  parseBinfmtSupport,
  parseRegisterLine,
  ruleMatches,
  sameRule,
  unescapeField,
} from "../lib/binfmt_entry.ts";
import { ParseError } from "../lib/errors.ts";

const F = new URL("./fixtures/binfmt/", import.meta.url).pathname;
const read = (path: string) => Deno.readTextFileSync(`${F}${path}`);

const QEMU_MASK = "ffffffffffffff00fffffffffffffffffeffffff";
const NIXPKGS_MASK = "ffffffffffffff00ffffffffffff00fffeffffff";
const AARCH64_MAGIC = "7f454c460201010000000000000000000200b700";

Deno.test("parseBinfmtEntry() reads Debian's qemu-aarch64 as binfmt-support registers it (PF)", () => {
  const e = parseBinfmtEntry(read("proc/qemu-aarch64"), "qemu-aarch64");
  assert.equal(e.enabled, true);
  assert.equal(e.kind, "magic");
  assert.equal(e.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
  assert.equal(e.flags, "PF");
  assert.equal(e.offset, 0);
  assert.equal(bytesToHex(e.magic), AARCH64_MAGIC);
  assert.equal(bytesToHex(e.mask!), QEMU_MASK);
});

Deno.test("parseBinfmtEntry() reads a 32-bit and a big-endian qemu entry (qemu-arm, qemu-s390x)", () => {
  const arm = parseBinfmtEntry(read("proc/qemu-arm"), "qemu-arm");
  assert.equal(bytesToHex(arm.magic), "7f454c4601010100000000000000000002002800");
  const s390 = parseBinfmtEntry(read("proc/qemu-s390x"), "qemu-s390x");
  assert.equal(bytesToHex(s390.magic).slice(32), "00020016");
});

Deno.test("parseBinfmtEntry() reads the systemd-binfmt registration of Debian's line: OPF shows as POF", () => {
  const e = parseBinfmtEntry(read("private/systemd-qemu-aarch64"), "qemu-aarch64");
  assert.equal(e.flags, "POF");
  const source = parseBinfmtD(
    read("sources/qemu-aarch64.conf"),
    "/usr/lib/binfmt.d/qemu-aarch64.conf",
  )[0]!;
  assert.equal(source.flags, "OPF");
  assert.equal(sameRule(source, e), true);
});

Deno.test("parseBinfmtEntry() reads a disabled entry with all its fields", () => {
  const e = parseBinfmtEntry(read("private/systemd-qemu-aarch64-disabled"), "qemu-aarch64");
  assert.equal(e.enabled, false);
  assert.equal(e.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
  assert.equal(bytesToHex(e.mask!), QEMU_MASK);
});

Deno.test("parseBinfmtEntry() reads hand registrations with F, with P, with POCF and with no flags and no mask", () => {
  assert.equal(parseBinfmtEntry(read("private/hand-aarch64-F"), "x").flags, "F");
  assert.equal(parseBinfmtEntry(read("private/hand-aarch64-P"), "x").flags, "P");
  assert.equal(parseBinfmtEntry(read("private/hand-aarch64-PCF"), "x").flags, "POCF");
  const bare = parseBinfmtEntry(read("private/hand-aarch64-noflags-nomask"), "x");
  assert.equal(bare.flags, "");
  assert.equal(bare.mask, undefined);
  assert.equal(bytesToHex(bare.magic), AARCH64_MAGIC);
});

Deno.test("parseBinfmtEntry() reads entries without mask and with empty flags (python3.11, llvm, jar)", () => {
  const python = parseBinfmtEntry(read("proc/python3.11"), "python3.11");
  assert.equal(python.flags, "");
  assert.equal(python.mask, undefined);
  assert.equal(bytesToHex(python.magic), "a70d0d0a");
  assert.equal(
    parseBinfmtEntry(read("proc/llvm-14-runtime.binfmt"), "llvm").interpreter,
    "/usr/bin/lli-14",
  );
  assert.equal(
    new TextDecoder().decode(parseBinfmtEntry(read("proc/jar"), "jar").magic),
    "PK\x03\x04",
  );
});

Deno.test("parseBinfmtEntry() reads an extension entry (no offset, no magic line)", () => {
  const e = parseBinfmtEntry(read("private/hand-extension"), "hand-ext");
  assert.equal(e.kind, "extension");
  assert.equal(new TextDecoder().decode(e.magic), "nbrtest");
  assert.equal(e.interpreter, "/bin/sh");
  assert.equal(e.offset, 0);
});

Deno.test("parseBinfmtEntry() reads NixOS entries: /run/binfmt interpreter, nixpkgs mask, P or PF", () => {
  const p = parseBinfmtEntry(read("private/nixos-aarch64-linux"), "aarch64-linux");
  assert.equal(p.interpreter, "/run/binfmt/aarch64-linux");
  assert.equal(p.flags, "P");
  assert.equal(bytesToHex(p.mask!), NIXPKGS_MASK);
  const pf = parseBinfmtEntry(read("private/nixos-static-armv7l-linux"), "armv7l-linux");
  assert.equal(pf.flags, "PF");
  assert.equal(pf.interpreter, "/run/binfmt/armv7l-linux");
});

Deno.test("parseBinfmtEntry() reads entries quoted in issue threads (docker POCF, box64 no flags, blog F)", () => {
  const docker = parseBinfmtEntry(read("thirdparty/tonistiigi-binfmt-246-qemu-arm"), "qemu-arm");
  assert.equal(docker.flags, "POCF");
  assert.equal(docker.interpreter, "/usr/bin/qemu-arm");
  const box64 = parseBinfmtEntry(read("thirdparty/box64-450-x86_64"), "x86_64");
  assert.equal(box64.flags, "");
  assert.equal(bytesToHex(box64.mask!), "ffffffffffffff00000000fffffffffffeffffff");
  const blog = parseBinfmtEntry(read("thirdparty/bvngee-blog-qemu-arm"), "qemu-arm");
  assert.equal(blog.flags, "F");
  assert.equal(bytesToHex(blog.mask!), NIXPKGS_MASK);
});

Deno.test("parseBinfmtEntry() rejects a file that is not an entry, naming the file and the line", () => {
  assert.throws(
    () => parseBinfmtEntry("1\n", "status"),
    (e: unknown) =>
      e instanceof ParseError &&
      e.message ===
        "Cannot parse /proc/sys/fs/binfmt_misc/status:1: expected 'enabled' or 'disabled', got '1'",
  );
  assert.throws(
    () => parseBinfmtEntry("enabled\nflags: P\nmagic 7f\n", "x"),
    /no 'interpreter' line/,
  );
  assert.throws(
    () => parseBinfmtEntry("enabled\ninterpreter /i\nflags: PZ\noffset 0\nmagic 7f\n", "x"),
    /:3: unknown flags 'PZ'/,
  );
  assert.throws(
    () =>
      parseBinfmtEntry("enabled\ninterpreter /i\nflags: \noffset 0\nmagic 7f45\nmask ff\n", "x"),
    /mask has 1 bytes but magic has 2/,
  );
});

Deno.test("parseRegisterLine() reads Debian's binfmt.d line and the NixOS line with literal ELF and empty offset", () => {
  const debian = parseBinfmtD(read("sources/qemu-arm.conf"), "/usr/lib/binfmt.d/qemu-arm.conf")[0]!;
  assert.equal(debian.name, "qemu-arm");
  assert.equal(debian.line, 1);
  assert.equal(bytesToHex(debian.magic), "7f454c4601010100000000000000000002002800");
  const [aarch64, riscv64] = parseBinfmtD(read("sources/nixos.conf"), "/etc/binfmt.d/nixos.conf");
  assert.equal(aarch64!.name, "aarch64-linux");
  assert.equal(bytesToHex(aarch64!.magic), AARCH64_MAGIC);
  assert.equal(bytesToHex(aarch64!.mask!), NIXPKGS_MASK);
  assert.equal(aarch64!.interpreter, "/run/binfmt/aarch64-linux");
  assert.equal(riscv64!.line, 2);
});

Deno.test("parseRegisterLine() and the kernel agree: each registered NixOS line shows as its captured entry", () => {
  const cases: [string, number, string][] = [
    ["sources/nixos.conf", 0, "private/nixos-aarch64-linux"],
    ["sources/nixos.conf", 1, "private/nixos-riscv64-linux"],
    ["sources/nixos-static.conf", 0, "private/nixos-static-aarch64-linux"],
    ["sources/nixos-static.conf", 1, "private/nixos-static-armv7l-linux"],
  ];
  for (const [file, index, entryFile] of cases) {
    const rule = parseBinfmtD(read(file), file)[index]!;
    const entry = parseBinfmtEntry(read(entryFile), rule.name);
    assert.equal(sameRule(rule, entry), true, entryFile);
  }
});

Deno.test("parseRegisterLine() reads extension lines, masks and any delimiter", () => {
  const ext = parseRegisterLine(":nbr-ext:E::nbrtest::/bin/sh:");
  assert.equal(ext.kind, "extension");
  assert.equal(sameRule(ext, parseBinfmtEntry(read("private/hand-extension"), "hand-ext")), true);
  const hash = parseRegisterLine("#x#M#3#\\x7fELF#\\xff\\xff\\xff\\xfe#/bin/i#F");
  assert.equal(hash.offset, 3);
  assert.equal(bytesToHex(hash.mask!), "fffffffe");
});

Deno.test("parseRegisterLine() refuses what the kernel refuses, quoting the value", () => {
  assert.throws(() => parseRegisterLine(":a:Q::\\x7f::/i:"), /type 'Q' is neither M/);
  assert.throws(
    () => parseRegisterLine(":a:M::\\x7fELF:\\xff:/i:"),
    /mask has 1 bytes but magic has 4/,
  );
  assert.throws(() => parseRegisterLine(":a:M::\\x7f::/i:Z"), /unknown flags 'Z'/);
  assert.throws(() => parseRegisterLine(":a/b:M::\\x7f::/i:"), /name 'a\/b' is not allowed/);
  assert.throws(
    () => parseRegisterLine(`:a:M::\\x7f::/${"x".repeat(127)}:`),
    /longer than 127 bytes/,
  );
  assert.throws(() => parseRegisterLine(":a:M:255:\\x7f\\x45::/i:"), /reach past byte 256/);
  assert.throws(() => parseRegisterLine(":a:M::\\x7f"), /got 4 fields/);
  assert.throws(
    () => parseBinfmtD("# c\n:a:M:x:\\x7f::/i:\n", "/etc/binfmt.d/a.conf"),
    /Cannot parse \/etc\/binfmt.d\/a.conf:2: offset 'x' is not a number/,
  );
});

Deno.test("formatRegisterLine() writes a line the parser reads back to the same rule", () => {
  for (
    const file of [
      "proc/qemu-aarch64",
      "private/hand-aarch64-noflags-nomask",
      "private/hand-extension",
    ]
  ) {
    const entry = parseBinfmtEntry(read(file), "n");
    const line = formatRegisterLine(entry);
    assert.equal(sameRule(parseRegisterLine(line), entry), true, line);
  }
});

Deno.test("parseBinfmtSupport() turns binfmt-support's files into the flags update-binfmts registers", () => {
  const qemu = parseBinfmtSupport(
    read("sources/var-lib-binfmts/qemu-aarch64"),
    "/var/lib/binfmts/qemu-aarch64",
  );
  assert.equal(qemu.name, "qemu-aarch64");
  assert.equal(qemu.flags, "PF");
  assert.equal(sameRule(qemu, parseBinfmtEntry(read("proc/qemu-aarch64"), "qemu-aarch64")), true);
  const python = parseBinfmtSupport(
    read("sources/var-lib-binfmts/python3.11"),
    "/var/lib/binfmts/python3.11",
  );
  assert.equal(python.flags, "");
  assert.equal(python.mask, undefined);
  assert.equal(sameRule(python, parseBinfmtEntry(read("proc/python3.11"), "python3.11")), true);
  const jar = parseBinfmtSupport(read("sources/var-lib-binfmts/jar"), "/var/lib/binfmts/jar");
  assert.equal(jar.interpreter, "/usr/bin/jexec");
});

Deno.test("ruleMatches() applies the mask byte by byte and never matches past the given bytes", () => {
  const rule = parseBinfmtEntry(read("proc/qemu-aarch64"), "qemu-aarch64");
  const head = new Uint8Array(64);
  head.set([
    0x7f,
    0x45,
    0x4c,
    0x46,
    2,
    1,
    1,
    3, /* OSABI, masked */
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    3,
    0,
    0xb7,
    0,
  ]);
  assert.equal(ruleMatches(rule, head), true);
  head[18] = 0xf3;
  assert.equal(ruleMatches(rule, head), false);
  assert.equal(ruleMatches(rule, head.subarray(0, 10)), false);
  assert.equal(ruleMatches(parseRegisterLine(":e:E::sh::/bin/sh:"), head), false);
});

Deno.test("normalizeFlags() orders flags as the kernel prints them and adds the O that C implies", () => {
  assert.equal(normalizeFlags("FP"), "PF");
  assert.equal(normalizeFlags("PC"), "POC");
  assert.equal(normalizeFlags(""), "");
});

Deno.test("unescapeField() and escapeField() round-trip every byte", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.deepEqual(unescapeField(escapeField(all)), all);
  assert.deepEqual([...unescapeField("\\x7")], [7]);
});
