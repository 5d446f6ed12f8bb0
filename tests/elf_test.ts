/**
 * The generated programs really run: each one under the matching real `qemu-*-static` (and x86_64 /
 * i686 natively), and the ELF identities agree with the real qemu and nixpkgs registrations.
 */
import assert from "node:assert/strict";
import { parseBinfmtD, ruleMatches } from "../lib/binfmt_entry.ts";
import {
  archForUname,
  elfArch,
  elfHeaderBytes,
  elfIdentity,
  knownArches,
  readElfHeader,
  sameIdentity,
  SMOKE_OUTPUT,
  smokeElf,
  smokeSystems,
} from "../lib/elf.ts";

const FIXTURES = new URL("./fixtures/binfmt/", import.meta.url).pathname;
const decoder = new TextDecoder();

function which(program: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${program}`).isFile) return `${dir}/${program}`;
    } catch {
      // not here
    }
  }
  return null;
}

async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

async function writeProgram(dir: string, system: string): Promise<string> {
  const path = `${dir}/${system}`;
  await Deno.writeFile(path, smokeElf(system), { mode: 0o755 });
  return path;
}

const QEMU_MISSING = which("qemu-aarch64-static") === null;

Deno.test("smokeSystems() lists the seven systems with verified programs", () => {
  assert.deepEqual(smokeSystems(), [
    "x86_64-linux",
    "i686-linux",
    "aarch64-linux",
    "armv7l-linux",
    "riscv64-linux",
    "powerpc64le-linux",
    "s390x-linux",
  ]);
});

for (const system of smokeSystems()) {
  const qemu = `qemu-${elfArch(system)!.qemuArch}-static`;
  Deno.test({
    name: `smokeElf("${system}") prints ok and exits 0 under ${qemu}`,
    ignore: QEMU_MISSING,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "nbr-elf-" });
      try {
        const program = await writeProgram(dir, system);
        const result = await run([qemu, program]);
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, SMOKE_OUTPUT);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });

  Deno.test({
    name: `smokeElf("${system}") given a path creates that directory (mode 0755) and exits 0`,
    ignore: QEMU_MISSING,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "nbr-elf-" });
      try {
        const program = await writeProgram(dir, system);
        const result = await run([qemu, program, `${dir}/out`]);
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, SMOKE_OUTPUT);
        const info = await Deno.stat(`${dir}/out`);
        assert.equal(info.isDirectory, true);
        assert.equal((info.mode ?? 0) & 0o777, 0o755);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });

  Deno.test({
    name: `smokeElf("${system}") exits 1 without output when it cannot create the directory`,
    ignore: QEMU_MISSING,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "nbr-elf-" });
      try {
        const program = await writeProgram(dir, system);
        const result = await run([qemu, program, `${dir}/missing/out`]);
        assert.equal(result.code, 1);
        assert.equal(result.stdout, "");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name:
    "smokeElf() for armv7l-linux uses only ARMv5 instructions (runs on an arm926 and arm1176 cpu)",
  ignore: QEMU_MISSING,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "nbr-elf-" });
    try {
      const program = await writeProgram(dir, "armv7l-linux");
      for (const cpu of ["arm926", "arm1176"]) {
        const result = await run(["qemu-arm-static", "-cpu", cpu, program]);
        assert.equal(result.stdout, SMOKE_OUTPUT, `${cpu}: ${result.stderr}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("smokeElf() for x86_64-linux and i686-linux run natively on an x86_64 kernel", {
  ignore: Deno.build.arch !== "x86_64",
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-elf-" });
  try {
    for (const system of ["x86_64-linux", "i686-linux"]) {
      const program = await writeProgram(dir, system);
      const result = await run([program]);
      assert.equal(result.stdout, SMOKE_OUTPUT, `${system}: ${result.stderr}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("smokeElf() programs are static, tiny and carry their system's ELF identity", () => {
  for (const system of smokeSystems()) {
    const bytes = smokeElf(system);
    const header = readElfHeader(bytes)!;
    assert.ok(bytes.length < 210, `${system}: ${bytes.length} bytes`);
    assert.equal(header.type, 2);
    assert.equal(header.interpreter, undefined);
    assert.equal(sameIdentity(header, elfIdentity(system)!), true, system);
  }
});

Deno.test("smokeElf() refuses a system it has no instructions for, naming it", () => {
  assert.throws(() => smokeElf("mips64el-linux"), /Cannot generate a program for 'mips64el-linux'/);
  assert.throws(() => smokeElf("aarch64-darwin"), /'aarch64-darwin'/);
});

Deno.test("readElfHeader() finds PT_INTERP of a dynamic program and none in a static one", async () => {
  const bash = await Deno.readFile("/bin/bash");
  assert.match(readElfHeader(bash)?.interpreter ?? "", /^\/lib.*ld-linux.*\.so/);
  const qemu = which("qemu-aarch64-static");
  if (qemu !== null) {
    const header = readElfHeader((await Deno.readFile(qemu)).subarray(0, 4096))!;
    assert.equal(header.interpreter, undefined);
    assert.equal(header.machine, archForUname(Deno.build.arch)?.machine);
  }
  assert.equal(readElfHeader(new TextEncoder().encode("#!/bin/sh\nexit 0\n")), null);
});

Deno.test("elfHeaderBytes() of every smoke system matches Debian's qemu binfmt.d rule for it", () => {
  const checked: string[] = [];
  for (const system of smokeSystems()) {
    const arch = elfArch(system)!;
    let text: string;
    try {
      text = Deno.readTextFileSync(`/usr/lib/binfmt.d/qemu-${arch.qemuArch}.conf`);
    } catch {
      continue; // native architectures have no qemu file (x86_64, i386 on an x86_64 host)
    }
    const [rule] = parseBinfmtD(text, `qemu-${arch.qemuArch}.conf`);
    assert.equal(ruleMatches(rule!, elfHeaderBytes(arch, 2)), true, `${system} ET_EXEC`);
    assert.equal(ruleMatches(rule!, elfHeaderBytes(arch, 3)), true, `${system} ET_DYN`);
    assert.equal(ruleMatches(rule!, smokeElf(system)), true, `${system} program`);
    checked.push(system);
  }
  if (which("qemu-aarch64-static") !== null) assert.ok(checked.includes("aarch64-linux"));
});

Deno.test("elfIdentity() agrees with nixpkgs binfmt magics except three systems where nixpkgs uses another e_machine", () => {
  const magics: Record<string, { magic: string; mask: string }> = JSON.parse(
    Deno.readTextFileSync(`${FIXTURES}nixpkgs-binfmt-magics.json`),
  );
  const mismatches: string[] = [];
  for (const [system, { magic, mask }] of Object.entries(magics)) {
    const arch = elfIdentity(system);
    assert.ok(arch, `${system} has an identity`);
    const rule = {
      name: system,
      kind: "magic" as const,
      offset: 0,
      magic: Uint8Array.from(magic.match(/../g)!.map((h) => parseInt(h, 16))),
      mask: Uint8Array.from(mask.match(/../g)!.map((h) => parseInt(h, 16))),
      interpreter: "/run/binfmt/x",
      flags: "P",
    };
    if (!ruleMatches(rule, elfHeaderBytes(arch, 2))) mismatches.push(system);
  }
  // nixpkgs registers i686-linux with e_machine 6 (EM_486), sparc-linux as SPARC32PLUS (18) and
  // sparc64-linux as 32-bit SPARC: real i686 (EM_386), sparc (EM_SPARC 2) and sparc64 (EM_SPARCV9)
  // programs do not match those entries.
  assert.deepEqual(mismatches.sort(), ["i686-linux", "sparc-linux", "sparc64-linux"]);
});

Deno.test("archForUname() maps uname -m names, knownArches() lists canonical systems once", () => {
  assert.equal(archForUname("x86_64")?.qemuArch, "x86_64");
  assert.equal(archForUname("aarch64")?.qemuArch, "aarch64");
  assert.equal(archForUname("armv7l")?.qemuArch, "arm");
  assert.equal(archForUname("sparc42"), undefined);
  const names = knownArches().map(([system]) => system);
  assert.equal(new Set(names).size, names.length);
});
