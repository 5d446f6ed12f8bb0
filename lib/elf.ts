/**
 * Tiny static ELF programs generated in TypeScript (no downloaded binaries), one per Nix system, and
 * just enough ELF header reading to tell what a file is.
 *
 * Every program is the same few instructions, assembled from each architecture's documented
 * encodings: with no argument it writes `ok\n` to standard output and exits 0; given a path as its
 * first argument it first creates that directory (`mkdirat(AT_FDCWD, argv[1], 0755)`, exit 1 when that
 * fails), which makes it a complete builder for a one-step Nix derivation
 * (`args = [ (builtins.placeholder "out") ]`). Each one was verified by running it under the
 * matching `qemu-*-static` (see `tests/elf_test.ts`).
 *
 * Layout: the ELF header, one `PT_LOAD` program header mapping the whole file read+execute at
 * 0x400000, the code, then the 3-byte message; about 150–190 bytes.
 *
 * @module
 */

import { ParseError, quoteForMessage } from "./errors.ts";

/** What the smoke program prints when it works: exactly this, and exit status 0. */
export const SMOKE_OUTPUT = "ok\n";

/** How an architecture's ELF files identify themselves (what binfmt_misc magic matches on). */
export interface ElfIdentity {
  /** `EI_CLASS`: 32- or 64-bit. */
  bits: 32 | 64;
  /** `EI_DATA`: byte order. */
  endian: "little" | "big";
  /** `e_machine`. */
  machine: number;
  /** `e_flags` the generated program carries (the ABI bits some loaders check). */
  flags: number;
}

/** One architecture the generator knows. */
export interface ElfArch extends ElfIdentity {
  /** The CPU part of the Nix system strings it serves, e.g. `aarch64` (first one is canonical). */
  cpus: readonly string[];
  /** The qemu user-mode emulator's arch name (`qemu-<arch>-static`, `qemu-binfmt/<arch>-binfmt-P`). */
  qemuArch: string;
}

const ARCHES: readonly ElfArch[] = [
  arch(["x86_64"], "x86_64", 64, "little", 0x3e),
  arch(["i686", "i586", "i486", "i386"], "i386", 32, "little", 0x03),
  arch(["aarch64", "arm64"], "aarch64", 64, "little", 0xb7),
  // EF_ARM_EABI_VER5: 64-bit kernels run only EABI binaries in their 32-bit mode.
  arch(["armv7l", "armv6l", "armv5tel", "armv8l"], "arm", 32, "little", 0x28, 0x05000000),
  arch(["riscv64"], "riscv64", 64, "little", 0xf3),
  // ELFv2 ABI: the entry point is code, not a function descriptor.
  arch(["powerpc64le", "ppc64le"], "ppc64le", 64, "little", 0x15, 2),
  arch(["s390x"], "s390x", 64, "big", 0x16),
  // Identities only (entries are matched; no smoke program is generated for these).
  arch(["aarch64_be"], "aarch64_be", 64, "big", 0xb7),
  arch(["riscv32"], "riscv32", 32, "little", 0xf3),
  arch(["powerpc64", "ppc64"], "ppc64", 64, "big", 0x15, 1),
  arch(["powerpc", "ppc"], "ppc", 32, "big", 0x14),
  arch(["mips64el"], "mips64el", 64, "little", 0x08),
  arch(["mips64"], "mips64", 64, "big", 0x08),
  arch(["mipsel"], "mipsel", 32, "little", 0x08),
  arch(["mips"], "mips", 32, "big", 0x08),
  arch(["loongarch64"], "loongarch64", 64, "little", 0x102),
  arch(["sparc64"], "sparc64", 64, "big", 0x2b),
  arch(["sparc"], "sparc", 32, "big", 0x02),
  arch(["alpha"], "alpha", 64, "little", 0x9026),
  arch(["m68k"], "m68k", 32, "big", 0x04),
];

function arch(
  cpus: string[],
  qemuArch: string,
  bits: 32 | 64,
  endian: "little" | "big",
  machine: number,
  flags = 0,
): ElfArch {
  return { cpus, qemuArch, bits, endian, machine, flags };
}

/** `ELF` header `e_machine` names for messages. */
const MACHINE_NAMES: Record<number, string> = {
  0x02: "SPARC",
  0x03: "i386",
  0x08: "MIPS",
  0x14: "PowerPC",
  0x15: "PowerPC64",
  0x16: "s390",
  0x28: "ARM",
  0x2b: "SPARC V9",
  0x3e: "x86-64",
  0xb7: "AArch64",
  0xf3: "RISC-V",
  0x102: "LoongArch",
  0x9026: "Alpha",
  0x04: "m68k",
};

/**
 * The CPU part of a Nix system string: `aarch64-linux` → `aarch64`, `x86_64-v3-linux` → `x86_64`.
 *
 * @example
 * ```ts
 * import { systemCpu } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(systemCpu("x86_64-v3-linux"), "x86_64");
 * assert.equal(systemCpu("armv7l-linux"), "armv7l");
 * ```
 */
export function systemCpu(system: string): string {
  return system.split("-")[0] ?? "";
}

/**
 * The architecture of a Linux Nix system (`aarch64-linux`) when {@link smokeElf} can generate a
 * program for it, else `undefined` (another OS, or a CPU without instruction encodings here; see
 * {@link elfIdentity} for those).
 *
 * @example
 * ```ts
 * import { elfArch } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(elfArch("aarch64-linux")?.machine, 0xb7);
 * assert.equal(elfArch("armv6l-linux")?.qemuArch, "arm");
 * assert.equal(elfArch("x86_64-v2-linux")?.qemuArch, "x86_64");
 * assert.equal(elfArch("mips64el-linux"), undefined);
 * assert.equal(elfArch("x86_64-darwin"), undefined);
 * ```
 */
export function elfArch(system: string): ElfArch | undefined {
  const arch = elfIdentity(system);
  return arch !== undefined && hasSmokeProgram(arch) ? arch : undefined;
}

/**
 * The ELF identity of a Linux Nix system, including CPUs the generator has no program for (what
 * binfmt_misc entries are matched against), or `undefined` for other OSes and unknown CPUs.
 *
 * @example
 * ```ts
 * import { elfIdentity } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(elfIdentity("mips64el-linux")?.machine, 0x08);
 * assert.equal(elfIdentity("wasm32-wasi"), undefined);
 * ```
 */
export function elfIdentity(system: string): ElfArch | undefined {
  if (!/-linux$/.test(system)) return undefined;
  const cpu = systemCpu(system);
  return ARCHES.find((arch) => arch.cpus.includes(cpu));
}

/**
 * Every architecture the identity table knows, canonical system name first (`aarch64-linux`).
 *
 * @example
 * ```ts
 * import { knownArches } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(knownArches().some(([system]) => system === "s390x-linux"));
 * ```
 */
export function knownArches(): [string, ElfArch][] {
  return ARCHES.map((arch) => [`${arch.cpus[0]}-linux`, arch]);
}

/**
 * The Linux systems the generator can build a smoke program for (canonical names).
 *
 * @example
 * ```ts
 * import { smokeSystems } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(smokeSystems().includes("riscv64-linux"));
 * ```
 */
export function smokeSystems(): string[] {
  return ARCHES.filter(hasSmokeProgram).map((arch) => `${arch.cpus[0]}-linux`);
}

/**
 * Whether {@link smokeElf} can generate a program for this architecture.
 *
 * @example
 * ```ts
 * import { elfIdentity, hasSmokeProgram } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(hasSmokeProgram(elfIdentity("aarch64-linux")!), true);
 * assert.equal(hasSmokeProgram(elfIdentity("mips64el-linux")!), false);
 * ```
 */
export function hasSmokeProgram(arch: ElfArch): boolean {
  return CODE[arch.qemuArch] !== undefined;
}

/**
 * The architecture `uname -m` names (`x86_64`, `aarch64`, `armv7l`, `ppc64le`, ...), or `undefined`.
 *
 * @example
 * ```ts
 * import { archForUname } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(archForUname("ppc64le")?.qemuArch, "ppc64le");
 * assert.equal(archForUname("x86_64")?.machine, 0x3e);
 * ```
 */
export function archForUname(machine: string): ElfArch | undefined {
  return ARCHES.find((arch) => arch.cpus.includes(machine.trim()));
}

/**
 * Whether two architectures produce the same ELF identity (so one binfmt entry serves both and a
 * kernel of one runs the other natively), e.g. `armv6l` and `armv7l`.
 *
 * @example
 * ```ts
 * import { elfArch, sameIdentity } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(sameIdentity(elfArch("armv6l-linux")!, elfArch("armv7l-linux")!), true);
 * assert.equal(sameIdentity(elfArch("x86_64-linux")!, elfArch("i686-linux")!), false);
 * ```
 */
export function sameIdentity(a: ElfIdentity, b: ElfIdentity): boolean {
  return a.bits === b.bits && a.endian === b.endian && a.machine === b.machine;
}

/**
 * The first 128 bytes of an ELF file of this identity, for matching binfmt_misc entries: the
 * `e_ident`, `e_type` (2 = executable, 3 = PIE / shared object), `e_machine`, `e_version` and
 * `e_flags`, zeros elsewhere.
 *
 * @example
 * ```ts
 * import { elfArch, elfHeaderBytes } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * const head = elfHeaderBytes(elfArch("aarch64-linux")!, 3);
 * assert.deepEqual([...head.slice(16, 20)], [3, 0, 0xb7, 0]);
 * ```
 */
export function elfHeaderBytes(identity: ElfIdentity, type: 2 | 3): Uint8Array {
  const out = new Uint8Array(128);
  const view = new DataView(out.buffer);
  const little = identity.endian === "little";
  out.set([0x7f, 0x45, 0x4c, 0x46, identity.bits === 64 ? 2 : 1, little ? 1 : 2, 1, 0], 0);
  view.setUint16(16, type, little);
  view.setUint16(18, identity.machine, little);
  view.setUint32(20, 1, little);
  view.setUint32(identity.bits === 64 ? 48 : 36, identity.flags, little);
  return out;
}

/**
 * A readable name for an `e_machine` value.
 *
 * @example
 * ```ts
 * import { machineName } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(machineName(0xb7), "AArch64");
 * assert.equal(machineName(0x9999), "machine 0x9999");
 * ```
 */
export function machineName(machine: number): string {
  return MACHINE_NAMES[machine] ?? `machine 0x${machine.toString(16)}`;
}

// ---------------------------------------------------------------------------------------------
// A two-pass assembler: pieces of fixed size, labels resolved to absolute addresses.

type Emit = (at: number, labels: Readonly<Record<string, number>>) => number[];
type Piece = { size: number; emit: Emit } | { label: string };

const MESSAGE = [0x6f, 0x6b, 0x0a]; // "ok\n"

function assemble(pieces: readonly Piece[], base: number): number[] {
  const labels: Record<string, number> = {};
  let at = base;
  for (const piece of pieces) {
    if ("label" in piece) labels[piece.label] = at;
    else at += piece.size;
  }
  const out: number[] = [];
  at = base;
  for (const piece of pieces) {
    if ("label" in piece) continue;
    const bytes = piece.emit(at, labels);
    if (bytes.length !== piece.size) {
      throw new Error(`Cannot assemble: a piece of ${piece.size} bytes emitted ${bytes.length}`);
    }
    out.push(...bytes);
    at += piece.size;
  }
  return out;
}

function le32(word: number): number[] {
  return [word & 0xff, (word >>> 8) & 0xff, (word >>> 16) & 0xff, (word >>> 24) & 0xff];
}

/** A 4-byte little-endian instruction whose encoding may depend on its address and the labels. */
function word(
  encode: number | ((at: number, l: Readonly<Record<string, number>>) => number),
): Piece {
  return {
    size: 4,
    emit: (at, labels) => le32(typeof encode === "number" ? encode : encode(at, labels)),
  };
}

function bytes(...values: number[]): Piece {
  return { size: values.length, emit: () => values };
}

function label(name: string): Piece {
  return { label: name };
}

function lbl(labels: Readonly<Record<string, number>>, name: string): number {
  const at = labels[name];
  if (at === undefined) throw new Error(`Cannot assemble: no label '${name}'`);
  return at;
}

// --- AArch64 (A64 encodings from the Arm ARM) ---------------------------------------------------
function aarch64(): Piece[] {
  const movz = (rd: number, imm: number) => (0xd2800000 | (imm << 5) | rd) >>> 0;
  const movn = (rd: number, imm: number) => (0x92800000 | (imm << 5) | rd) >>> 0;
  const svc = 0xd4000001;
  const imm19 = (offset: number) => ((offset >> 2) & 0x7ffff) << 5;
  return [
    word(0xf9400be1), // ldr x1, [sp, #16]        argv[1]
    word((at, l) => (0xb4000000 | imm19(lbl(l, "print") - at) | 1) >>> 0), // cbz x1, print
    word(movn(0, 99)), // mov x0, #-100           AT_FDCWD
    word(movz(2, 0o755)), // mov x2, #0755
    word(movz(8, 34)), // mov x8, #34             mkdirat
    word(svc),
    word((at, l) => (0xb5000000 | imm19(lbl(l, "fail") - at) | 0) >>> 0), // cbnz x0, fail
    label("print"),
    word(movz(0, 1)), // mov x0, #1
    word((at, l) => {
      const offset = lbl(l, "msg") - at; // adr x1, msg
      return (0x10000000 | ((offset & 3) << 29) | (((offset >> 2) & 0x7ffff) << 5) | 1) >>> 0;
    }),
    word(movz(2, 3)), // mov x2, #3
    word(movz(8, 64)), // mov x8, #64             write
    word(svc),
    word(movz(0, 0)), // mov x0, #0
    word(movz(8, 93)), // mov x8, #93             exit
    word(svc),
    label("fail"),
    word(movz(0, 1)),
    word(movz(8, 93)),
    word(svc),
  ];
}

// --- x86-64 ---------------------------------------------------------------------------------------
function x86_64(): Piece[] {
  const rel8 = (name: string): Piece => ({
    size: 1,
    emit: (at, l) => [(lbl(l, name) - (at + 1)) & 0xff],
  });
  return [
    bytes(0x48, 0x8b, 0x74, 0x24, 0x10), // mov rsi, [rsp+16]      argv[1]
    bytes(0x48, 0x85, 0xf6), // test rsi, rsi
    bytes(0x74), // jz print
    rel8("print"),
    bytes(0x48, 0xc7, 0xc7, 0x9c, 0xff, 0xff, 0xff), // mov rdi, -100   AT_FDCWD
    bytes(0xba, 0xed, 0x01, 0x00, 0x00), // mov edx, 0755
    bytes(0xb8, 0x02, 0x01, 0x00, 0x00), // mov eax, 258            mkdirat
    bytes(0x0f, 0x05), // syscall
    bytes(0x48, 0x85, 0xc0), // test rax, rax
    bytes(0x75), // jnz fail
    rel8("fail"),
    label("print"),
    bytes(0xbf, 0x01, 0x00, 0x00, 0x00), // mov edi, 1
    bytes(0x48, 0x8d, 0x35), // lea rsi, [rip+msg]
    { size: 4, emit: (at, l) => le32(lbl(l, "msg") - (at + 4)) },
    bytes(0xba, 0x03, 0x00, 0x00, 0x00), // mov edx, 3
    bytes(0xb8, 0x01, 0x00, 0x00, 0x00), // mov eax, 1              write
    bytes(0x0f, 0x05),
    bytes(0x31, 0xff), // xor edi, edi
    bytes(0xb8, 0x3c, 0x00, 0x00, 0x00), // mov eax, 60             exit
    bytes(0x0f, 0x05),
    label("fail"),
    bytes(0xbf, 0x01, 0x00, 0x00, 0x00),
    bytes(0xb8, 0x3c, 0x00, 0x00, 0x00),
    bytes(0x0f, 0x05),
  ];
}

// --- i386 (int 0x80 ABI) -----------------------------------------------------------------------
function i386(): Piece[] {
  const rel8 = (name: string): Piece => ({
    size: 1,
    emit: (at, l) => [(lbl(l, name) - (at + 1)) & 0xff],
  });
  return [
    bytes(0x8b, 0x4c, 0x24, 0x08), // mov ecx, [esp+8]         argv[1]
    bytes(0x85, 0xc9), // test ecx, ecx
    bytes(0x74), // jz print
    rel8("print"),
    bytes(0xbb, 0x9c, 0xff, 0xff, 0xff), // mov ebx, -100      AT_FDCWD
    bytes(0xba, 0xed, 0x01, 0x00, 0x00), // mov edx, 0755
    bytes(0xb8, 0x28, 0x01, 0x00, 0x00), // mov eax, 296       mkdirat
    bytes(0xcd, 0x80), // int 0x80
    bytes(0x85, 0xc0), // test eax, eax
    bytes(0x75), // jnz fail
    rel8("fail"),
    label("print"),
    bytes(0xbb, 0x01, 0x00, 0x00, 0x00), // mov ebx, 1
    bytes(0xb9), // mov ecx, msg
    { size: 4, emit: (_at, l) => le32(lbl(l, "msg")) },
    bytes(0xba, 0x03, 0x00, 0x00, 0x00), // mov edx, 3
    bytes(0xb8, 0x04, 0x00, 0x00, 0x00), // mov eax, 4         write
    bytes(0xcd, 0x80),
    bytes(0x31, 0xdb), // xor ebx, ebx
    bytes(0xb8, 0x01, 0x00, 0x00, 0x00), // mov eax, 1         exit
    bytes(0xcd, 0x80),
    label("fail"),
    bytes(0xbb, 0x01, 0x00, 0x00, 0x00),
    bytes(0xb8, 0x01, 0x00, 0x00, 0x00),
    bytes(0xcd, 0x80),
  ];
}

// --- ARM A32, EABI (ARMv5+ encodings only, so armv6l and armv7l both run it) ---------------------
function arm(): Piece[] {
  const svc = 0xef000000;
  const branch = (cond: number, name: string) =>
    word((
      at,
      l,
    ) => (((cond << 28) | 0x0a000000 | (((lbl(l, name) - (at + 8)) >> 2) & 0xffffff)) >>> 0));
  return [
    word(0xe59d1008), // ldr r1, [sp, #8]       argv[1]
    word(0xe3510000), // cmp r1, #0
    branch(0x0, "print"), // beq print
    word(0xe3e00063), // mvn r0, #99            AT_FDCWD (-100)
    word(0xe3a02d07), // mov r2, #0x1c0         0700
    word(0xe382202d), // orr r2, r2, #0x2d      0755
    word(0xe3a07c01), // mov r7, #0x100
    word(0xe2877043), // add r7, r7, #0x43      323 = mkdirat
    word(svc),
    word(0xe3500000), // cmp r0, #0
    branch(0x1, "fail"), // bne fail
    label("print"),
    word(0xe3a00001), // mov r0, #1
    word((at, l) => (0xe28f1000 | (lbl(l, "msg") - (at + 8))) >>> 0), // add r1, pc, #msg
    word(0xe3a02003), // mov r2, #3
    word(0xe3a07004), // mov r7, #4             write
    word(svc),
    word(0xe3a00000), // mov r0, #0
    word(0xe3a07001), // mov r7, #1             exit
    word(svc),
    label("fail"),
    word(0xe3a00001),
    word(0xe3a07001),
    word(svc),
  ];
}

// --- RISC-V RV64I ---------------------------------------------------------------------------------
function riscv64(): Piece[] {
  const iType = (imm: number, rs1: number, f3: number, rd: number, op: number) =>
    (((imm & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op) >>> 0;
  const addi = (rd: number, rs1: number, imm: number) => iType(imm, rs1, 0, rd, 0x13);
  const li = (rd: number, imm: number) => addi(rd, 0, imm);
  const ecall = 0x00000073;
  const bType = (f3: number, rs1: number, name: string) =>
    word((at, l) => {
      const imm = lbl(l, name) - at;
      return ((((imm >> 12) & 1) << 31) | (((imm >> 5) & 0x3f) << 25) | (0 << 20) | (rs1 << 15) |
        (f3 << 12) | (((imm >> 1) & 0xf) << 8) | (((imm >> 11) & 1) << 7) | 0x63) >>> 0;
    });
  const [a0, a1, a2, a7, sp] = [10, 11, 12, 17, 2];
  return [
    word(iType(16, sp, 3, a1, 0x03)), // ld a1, 16(sp)        argv[1]
    bType(0, a1, "print"), // beq a1, zero, print
    word(li(a0, -100)), // AT_FDCWD
    word(li(a2, 0o755)),
    word(li(a7, 34)), // mkdirat
    word(ecall),
    bType(1, a0, "fail"), // bne a0, zero, fail
    label("print"),
    word(li(a0, 1)),
    word((at, l) => { // auipc a1, %hi(msg)
      const offset = lbl(l, "msg") - at;
      return ((((offset + 0x800) >> 12) & 0xfffff) << 12 | (a1 << 7) | 0x17) >>> 0;
    }),
    word((at, l) => { // addi a1, a1, %lo(msg)
      const offset = lbl(l, "msg") - (at - 4);
      const hi = (offset + 0x800) >> 12;
      return addi(a1, a1, offset - (hi << 12));
    }),
    word(li(a2, 3)),
    word(li(a7, 64)), // write
    word(ecall),
    word(li(a0, 0)),
    word(li(a7, 93)), // exit
    word(ecall),
    label("fail"),
    word(li(a0, 1)),
    word(li(a7, 93)),
    word(ecall),
  ];
}

// --- POWER, 64-bit little-endian (ELFv2). Failed system calls set CR0[SO]. ---------------------
function ppc64le(): Piece[] {
  const li = (rt: number, imm: number) => ((14 << 26) | (rt << 21) | (imm & 0xffff)) >>> 0;
  const sc = 0x44000002;
  const bc = (bo: number, bi: number, name: string) =>
    word((at, l) => ((16 << 26) | (bo << 21) | (bi << 16) | ((lbl(l, name) - at) & 0xfffc)) >>> 0);
  return [
    word(0xe8810010), // ld r4, 16(r1)          argv[1]
    word(0x2c240000), // cmpdi r4, 0
    bc(12, 2, "print"), // beq print
    word(li(3, -100)), // AT_FDCWD
    word(li(5, 0o755)),
    word(li(0, 287)), // mkdirat
    word(sc),
    bc(12, 3, "fail"), // bso fail
    label("print"),
    word(li(3, 1)),
    word((_at, l) => ((15 << 26) | (4 << 21) | (lbl(l, "msg") >>> 16)) >>> 0), // lis r4, msg@h
    word((_at, l) => ((24 << 26) | (4 << 21) | (4 << 16) | (lbl(l, "msg") & 0xffff)) >>> 0), // ori
    word(li(5, 3)),
    word(li(0, 4)), // write
    word(sc),
    word(li(3, 0)),
    word(li(0, 1)), // exit
    word(sc),
    label("fail"),
    word(li(3, 1)),
    word(li(0, 1)),
    word(sc),
  ];
}

// --- z/Architecture (s390x), big-endian, variable-length instructions -------------------------
function s390x(): Piece[] {
  const be = (...values: number[]) => bytes(...values);
  const brc = (mask: number, name: string): Piece => ({
    size: 4,
    emit: (at, l) => {
      const halfwords = ((lbl(l, name) - at) >> 1) & 0xffff;
      return [0xa7, (mask << 4) | 0x4, halfwords >> 8, halfwords & 0xff];
    },
  });
  const lghi = (r: number, imm: number) => be(0xa7, (r << 4) | 0x9, (imm >> 8) & 0xff, imm & 0xff);
  return [
    be(0xe3, 0x30, 0xf0, 0x10, 0x00, 0x04), // lg %r3, 16(%r15)     argv[1]
    be(0xb9, 0x02, 0x00, 0x33), // ltgr %r3, %r3
    brc(8, "print"), // je print
    lghi(2, -100), // AT_FDCWD
    lghi(4, 0o755),
    lghi(1, 289), // mkdirat, number in %r1 with svc 0
    be(0x0a, 0x00), // svc 0
    be(0xb9, 0x02, 0x00, 0x22), // ltgr %r2, %r2
    brc(7, "fail"), // jne fail
    label("print"),
    lghi(2, 1),
    {
      size: 6, // larl %r3, msg
      emit: (at, l) => {
        const halfwords = ((lbl(l, "msg") - at) >> 1) >>> 0;
        return [0xc0, 0x30, ...[24, 16, 8, 0].map((s) => (halfwords >>> s) & 0xff)];
      },
    },
    lghi(4, 3),
    be(0x0a, 0x04), // svc 4: write
    lghi(2, 0),
    be(0x0a, 0x01), // svc 1: exit
    label("fail"),
    lghi(2, 1),
    be(0x0a, 0x01),
  ];
}

const CODE: Record<string, (() => Piece[]) | undefined> = {
  x86_64,
  i386,
  aarch64,
  arm,
  riscv64,
  ppc64le,
  s390x,
};

const BASE = 0x400000;

/**
 * The smoke program for a Linux system: a static ELF executable that prints `ok\n` and exits 0, or,
 * given a path as its first argument, creates that directory first (exit 1 when it cannot).
 * Throws for a system {@link elfArch} does not know.
 *
 * @example A static aarch64 executable of about 170 bytes
 * ```ts
 * import { readElfHeader, smokeElf } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * const elf = smokeElf("aarch64-linux");
 * const header = readElfHeader(elf);
 * assert.equal(header?.machine, 0xb7);
 * assert.equal(header?.bits, 64);
 * assert.equal(header?.interpreter, undefined); // static: no PT_INTERP
 * assert.ok(elf.length < 200);
 * ```
 */
export function smokeElf(system: string): Uint8Array {
  const arch = elfIdentity(system);
  const program = arch === undefined ? undefined : CODE[arch.qemuArch];
  if (arch === undefined || program === undefined) {
    throw new Error(
      `Cannot generate a program for '${system}': no instruction encoding known for it`,
    );
  }
  const pieces = [...program(), label("msg"), bytes(...MESSAGE)];
  const is64 = arch.bits === 64;
  const ehsize = is64 ? 64 : 52;
  const phentsize = is64 ? 56 : 32;
  const headerSize = ehsize + phentsize;
  const code = assemble(pieces, BASE + headerSize);
  const total = headerSize + code.length;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  const little = arch.endian === "little";
  out.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, little ? 1 : 2, 1, 0], 0);
  const u16 = (at: number, v: number) => view.setUint16(at, v, little);
  const u32 = (at: number, v: number) => view.setUint32(at, v, little);
  const addr = (at: number, v: number) =>
    is64 ? view.setBigUint64(at, BigInt(v), little) : view.setUint32(at, v, little);
  const w = is64 ? 8 : 4;
  u16(16, 2); // e_type ET_EXEC
  u16(18, arch.machine);
  u32(20, 1); // e_version
  addr(24, BASE + headerSize); // e_entry
  addr(24 + w, ehsize); // e_phoff
  addr(24 + 2 * w, 0); // e_shoff
  const rest = 24 + 3 * w;
  u32(rest, arch.flags); // e_flags
  u16(rest + 4, ehsize);
  u16(rest + 6, phentsize);
  u16(rest + 8, 1); // e_phnum
  u16(rest + 10, is64 ? 64 : 40); // e_shentsize
  u16(rest + 12, 0); // e_shnum
  u16(rest + 14, 0); // e_shstrndx
  const ph = ehsize;
  u32(ph, 1); // PT_LOAD
  if (is64) {
    u32(ph + 4, 5); // p_flags R+X
    addr(ph + 8, 0); // p_offset
    addr(ph + 16, BASE); // p_vaddr
    addr(ph + 24, BASE); // p_paddr
    addr(ph + 32, total); // p_filesz
    addr(ph + 40, total); // p_memsz
    addr(ph + 48, 0x1000); // p_align
  } else {
    u32(ph + 4, 0); // p_offset
    u32(ph + 8, BASE); // p_vaddr
    u32(ph + 12, BASE); // p_paddr
    u32(ph + 16, total); // p_filesz
    u32(ph + 20, total); // p_memsz
    u32(ph + 24, 5); // p_flags R+X
    u32(ph + 28, 0x1000); // p_align
  }
  out.set(code, headerSize);
  return out;
}

/** What {@link readElfHeader} found. */
export interface ElfHeader extends ElfIdentity {
  /** `e_type`: 2 executable, 3 shared object / PIE. */
  type: number;
  /** The `PT_INTERP` path (the dynamic loader) when the file has one and it lies within `bytes`. */
  interpreter?: string;
}

/**
 * Reads an ELF header (and `PT_INTERP`, when the given bytes reach it); `null` when the bytes are not
 * an ELF file.
 *
 * @example
 * ```ts
 * import { readElfHeader, smokeElf } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(readElfHeader(smokeElf("armv7l-linux"))?.flags, 0x05000000);
 * assert.equal(readElfHeader(new TextEncoder().encode("#!/bin/sh\n")), null);
 * ```
 */
export function readElfHeader(bytes: Uint8Array): ElfHeader | null {
  if (bytes.length < 52) return null;
  if (bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46) return null;
  const bits = bytes[4] === 1 ? 32 : bytes[4] === 2 ? 64 : null;
  const endian = bytes[5] === 1 ? "little" : bytes[5] === 2 ? "big" : null;
  if (bits === null || endian === null) return null;
  if (bits === 64 && bytes.length < 64) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const little = endian === "little";
  const w = bits === 64 ? 8 : 4;
  const addr = (at: number) =>
    bits === 64 ? Number(view.getBigUint64(at, little)) : view.getUint32(at, little);
  const header: ElfHeader = {
    bits,
    endian,
    type: view.getUint16(16, little),
    machine: view.getUint16(18, little),
    flags: view.getUint32(24 + 3 * w, little),
  };
  const phoff = addr(24 + w);
  const rest = 24 + 3 * w;
  const phentsize = view.getUint16(rest + 6, little);
  const phnum = view.getUint16(rest + 8, little);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + phentsize > bytes.length || phentsize < (bits === 64 ? 56 : 32)) break;
    if (view.getUint32(ph, little) !== 3) continue; // PT_INTERP
    const offset = bits === 64 ? addr(ph + 8) : addr(ph + 4);
    const size = bits === 64 ? addr(ph + 32) : addr(ph + 16);
    if (offset + size <= bytes.length && size > 0) {
      const raw = bytes.subarray(offset, offset + size);
      const end = raw.indexOf(0);
      header.interpreter = new TextDecoder().decode(end >= 0 ? raw.subarray(0, end) : raw);
    }
    break;
  }
  return header;
}

/** One shared object `ldd` lists for a program. */
export interface LddLibrary {
  /** The name the program asks for (`DT_NEEDED`), or the loader's own path. */
  name: string;
  /** The file the loader maps for it; absent when it was `not found`. */
  path?: string;
}

/** What `ldd` says about one program. */
export type LddReport =
  | {
    /** Dynamically linked: the loader listed what it maps. */
    kind: "dynamic";
    /** The shared objects with a file, in `ldd`'s order (the kernel's vDSO left out). */
    libraries: LddLibrary[];
    /** Names the loader could not find (`=> not found`, musl's `Error loading shared library`). */
    notFound: string[];
  }
  | {
    /** `statically linked` (a static-pie): it needs no file besides itself. */
    kind: "static";
  }
  | {
    /** `not a dynamic executable`: a static non-PIE program, or not an ELF program at all. */
    kind: "not-dynamic";
  }
  | {
    /** `ldd` could not read it (no such file, a loader error). */
    kind: "error";
    /** The first error line. */
    reason: string;
  };

const ADDRESS = String.raw`\(0x[0-9a-fA-F]+\)`;
const LDD_FOUND = new RegExp(`^(\\S+) => (/.*?) ${ADDRESS}$`);
const LDD_VIRTUAL_ARROW = new RegExp(`^(\\S+) =>\\s+${ADDRESS}$`);
const LDD_BARE = new RegExp(`^(\\S+) ${ADDRESS}$`);
const LDD_NOT_FOUND = /^(\S+) => not found$/;
const MUSL_NOT_FOUND = /^Error loading shared library (\S+): .*$/;

/**
 * Parses what `ldd <program>` printed (glibc's and musl's formats): the shared objects the loader
 * would map, with their files. Standard error carries `not a dynamic executable`, `ldd: …: No such
 * file or directory`, loader errors and musl's missing libraries; glibc's `version … not found`
 * warnings there are ignored. Throws {@link ParseError} on a standard output line of no known form.
 *
 * @example Debian 12's `ldd /usr/bin/dash`
 * ```ts
 * import { parseLddOutput } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * const report = parseLddOutput(
 *   "\tlinux-vdso.so.1 (0x00007f48d6569000)\n" +
 *     "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f48d6354000)\n" +
 *     "\t/lib64/ld-linux-x86-64.so.2 (0x00007f48d656b000)\n",
 * );
 * assert.deepEqual(report, {
 *   kind: "dynamic",
 *   libraries: [
 *     { name: "libc.so.6", path: "/lib/x86_64-linux-gnu/libc.so.6" },
 *     { name: "/lib64/ld-linux-x86-64.so.2", path: "/lib64/ld-linux-x86-64.so.2" },
 *   ],
 *   notFound: [],
 * });
 * assert.deepEqual(parseLddOutput("\tstatically linked\n"), { kind: "static" });
 * assert.deepEqual(parseLddOutput("", "\tnot a dynamic executable\n"), { kind: "not-dynamic" });
 * ```
 */
export function parseLddOutput(stdout: string, stderr = "", input = "ldd"): LddReport {
  const libraries: LddLibrary[] = [];
  const notFound: string[] = [];
  let kind: "dynamic" | "static" | "not-dynamic" | undefined;
  const lines = stdout.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === "") continue;
    let m: RegExpExecArray | null;
    if (line === "statically linked") kind ??= "static";
    else if (line === "not a dynamic executable") kind ??= "not-dynamic";
    else if ((m = LDD_NOT_FOUND.exec(line))) notFound.push(m[1]!);
    else if ((m = LDD_FOUND.exec(line))) libraries.push({ name: m[1]!, path: m[2]! });
    else if (LDD_VIRTUAL_ARROW.test(line)) continue; // older glibc: `linux-vdso.so.1 =>  (0x…)`
    else if ((m = LDD_BARE.exec(line))) {
      // An absolute name is the loader; a bare name is the kernel's vDSO, which is no file.
      if (m[1]!.startsWith("/")) libraries.push({ name: m[1]!, path: m[1]! });
    } else {
      throw new ParseError(input, `unexpected line ${quoteForMessage(line)}`, { line: i + 1 });
    }
  }
  let error: string | undefined;
  for (const raw of stderr.split("\n")) {
    const line = raw.trim();
    if (line === "" || /: version `[^']*' not found \(required by /.test(line)) continue;
    const musl = MUSL_NOT_FOUND.exec(line);
    if (musl) notFound.push(musl[1]!);
    else if (line === "not a dynamic executable") kind ??= "not-dynamic";
    else if (/^Error relocating /.test(line)) continue; // musl: a missing symbol, not a file
    else error ??= line;
  }
  if (libraries.length > 0 || notFound.length > 0) return { kind: "dynamic", libraries, notFound };
  if (kind === "static" || kind === "not-dynamic") return { kind };
  return { kind: "error", reason: error ?? "ldd printed nothing" };
}
