/**
 * Canary derivations for Nix 2.8 without nixpkgs, and the tiny static ELF programs they build with.
 *
 * Two builders are available:
 *
 * - `"sh"`: `/bin/sh -c "echo canary <nonce>; echo <nonce> > $out"`. Needs `/bin/sh` on the builder, so only works with
 *   `sandbox = false` (the lab's default, and Debian's) unless `sandbox-paths` maps a static shell.
 *   `x86_64-linux` only (an aarch64 `/bin/sh` does not exist on an x86_64 builder).
 * - `"elf"`: a generated static program (about 200 bytes, no libc) for the derivation's own
 *   architecture, copied into the store as the builder. It creates `$out` holding `ok\n`. It works
 *   in the sandbox too, and for `aarch64-linux` it proves that binfmt_misc + qemu really run
 *   aarch64 code on the builder.
 *
 * @example Build a canary on a lab builder
 * ```ts ignore
 * import { canaryExpression, newNonce, writeCanaryElf } from "./canary.ts";
 *
 * const elf = await writeCanaryElf("/tmp/my-dir", "aarch64-linux");
 * const expr = canaryExpression({ system: "aarch64-linux", nonce: newNonce(), builder: elf });
 * // nix-build --no-out-link -E <expr>   (in the lab's controller namespace)
 * ```
 *
 * @module
 */

/** The systems the canaries exist for. */
export type CanarySystem = "x86_64-linux" | "aarch64-linux";

/** Options for {@link canaryExpression}. */
export interface CanaryOptions {
  /** The derivation's `system`. */
  system: CanarySystem;
  /** A unique string (see {@link newNonce}) so no store or cache already has the output. */
  nonce: string;
  /**
   * `"sh"` (x86_64 only) for `/bin/sh -c "echo <nonce> > $out"`, or the path of a canary ELF
   * (see {@link writeCanaryElf}) matching `system`. Default `"sh"`.
   */
  builder?: "sh" | string;
  /** `requiredSystemFeatures` of the derivation (e.g. `["kvm"]`). */
  requiredSystemFeatures?: readonly string[];
}

/** A fresh nonce: lower-case letters and digits, safe in a store path name. */
export function newNonce(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 16);
}

/** Quotes a string as a Nix string literal. */
export function nixString(value: string): string {
  return `"${value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("${", "\\${")}"`;
}

/**
 * A Nix expression (for `nix-build -E` / `nix build --impure --expr`) of a one-step canary
 * derivation named `canary-<nonce>`.
 *
 * @example
 * ```ts
 * import { canaryExpression } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * const expr = canaryExpression({ system: "x86_64-linux", nonce: "abc123" });
 * assert.match(expr, /name = "canary-abc123";/);
 * assert.match(expr, /builder = "\/bin\/sh";/);
 * ```
 */
export function canaryExpression(options: CanaryOptions): string {
  const { system, nonce } = options;
  if (!/^[A-Za-z0-9+._?=-]+$/.test(nonce)) {
    throw new Error(`Cannot use nonce '${nonce}': only letters, digits and +._?=- are allowed`);
  }
  const builder = options.builder ?? "sh";
  const features = options.requiredSystemFeatures ?? [];
  const featureLine = features.length > 0
    ? `requiredSystemFeatures = [ ${features.map(nixString).join(" ")} ];`
    : "";
  if (builder === "sh") {
    if (system !== "x86_64-linux") {
      throw new Error(
        `Cannot build a '${system}' canary with /bin/sh: pass a canary ELF as builder`,
      );
    }
    return [
      "derivation {",
      `  name = "canary-${nonce}";`,
      `  system = ${nixString(system)};`,
      `  builder = "/bin/sh";`,
      `  args = [ "-c" "echo canary ${nonce}; echo ${nonce} > $out" ];`,
      `  ${featureLine}`,
      "}",
    ].join("\n");
  }
  if (!builder.startsWith("/")) {
    throw new Error(`Cannot use canary builder '${builder}': expected "sh" or an absolute path`);
  }
  const arch = system.split("-")[0];
  return [
    "derivation {",
    `  name = "canary-${nonce}";`,
    `  system = ${nixString(system)};`,
    `  builder = builtins.path { path = /. + ${
      nixString(builder)
    }; name = "canary-${arch}-elf"; };`,
    `  args = [ (builtins.placeholder "out") ];`,
    `  nonce = ${nixString(nonce)};`,
    `  ${featureLine}`,
    "}",
  ].join("\n");
}

/** What a canary output holds: `<nonce>\n` for the `sh` builder, `ok\n` for the ELF. */
export function expectedCanaryOutput(options: CanaryOptions): string {
  return (options.builder ?? "sh") === "sh" ? `${options.nonce}\n` : "ok\n";
}

/**
 * Writes the canary ELF for `system` to `<dir>/canary-<arch>` (mode 0755) and returns its path.
 */
export async function writeCanaryElf(dir: string, system: CanarySystem): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/canary-${system.split("-")[0]}`;
  await Deno.writeFile(path, canaryElf(system), { mode: 0o755 });
  await Deno.chmod(path, 0o755);
  return path;
}

/**
 * A static ELF64 executable for `system` that writes `ok\n` to standard output and, when given a
 * path as its first argument, creates that file holding `ok\n` (exit 1 when it cannot). Exit 0.
 *
 * Layout: ELF header (64 bytes), one PT_LOAD program header (56 bytes) mapping the whole file at
 * 0x400000 R+X, then the code at 0x400078, then the message.
 *
 * @example
 * ```ts
 * import { canaryElf } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * const elf = canaryElf("aarch64-linux");
 * assert.deepEqual([...elf.slice(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
 * assert.equal(new DataView(elf.buffer).getUint16(18, true), 0xb7);
 * ```
 */
export function canaryElf(system: CanarySystem): Uint8Array {
  const code = system === "aarch64-linux" ? aarch64Code() : x86_64Code();
  const machine = system === "aarch64-linux" ? 0xb7 : 0x3e;
  const base = 0x400000;
  const headerSize = 64 + 56;
  const total = headerSize + code.length;
  const bytes = new Uint8Array(total);
  const view = new DataView(bytes.buffer);
  bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0); // ELF, 64-bit, little-endian, SysV
  view.setUint16(16, 2, true); // e_type EXEC
  view.setUint16(18, machine, true); // e_machine
  view.setUint32(20, 1, true); // e_version
  view.setBigUint64(24, BigInt(base + headerSize), true); // e_entry
  view.setBigUint64(32, 64n, true); // e_phoff
  view.setBigUint64(40, 0n, true); // e_shoff
  view.setUint32(48, 0, true); // e_flags
  view.setUint16(52, 64, true); // e_ehsize
  view.setUint16(54, 56, true); // e_phentsize
  view.setUint16(56, 1, true); // e_phnum
  view.setUint16(58, 64, true); // e_shentsize
  view.setUint16(60, 0, true); // e_shnum
  view.setUint16(62, 0, true); // e_shstrndx
  const ph = 64;
  view.setUint32(ph + 0, 1, true); // p_type PT_LOAD
  view.setUint32(ph + 4, 5, true); // p_flags R+X
  view.setBigUint64(ph + 8, 0n, true); // p_offset
  view.setBigUint64(ph + 16, BigInt(base), true); // p_vaddr
  view.setBigUint64(ph + 24, BigInt(base), true); // p_paddr
  view.setBigUint64(ph + 32, BigInt(total), true); // p_filesz
  view.setBigUint64(ph + 40, BigInt(total), true); // p_memsz
  view.setBigUint64(ph + 48, 0x1000n, true); // p_align
  bytes.set(code, headerSize);
  return bytes;
}

const MESSAGE = [0x6f, 0x6b, 0x0a]; // "ok\n"

/** AArch64 code; each instruction from its documented A64 encoding. */
function aarch64Code(): Uint8Array {
  const movz = (rd: number, imm: number) => 0xd2800000 | (imm << 5) | rd;
  const movn = (rd: number, imm: number) => 0x92800000 | (imm << 5) | rd;
  const svc0 = 0xd4000001;
  const ldrSp = (rt: number, offset: number) => 0xf9400000 | ((offset / 8) << 10) | (31 << 5) | rt;
  const movReg = (rd: number, rm: number) => 0xaa0003e0 | (rm << 16) | rd; // ORR rd, xzr, rm
  const adr = (rd: number, offset: number) =>
    0x10000000 | ((offset & 3) << 29) | (((offset >> 2) & 0x7ffff) << 5) | rd;
  const cbz = (rt: number, offset: number) => 0xb4000000 | (((offset >> 2) & 0x7ffff) << 5) | rt;
  const tbnz63 = (rt: number, offset: number) =>
    0xb7000000 | (31 << 19) | (((offset >> 2) & 0x3fff) << 5) | rt;
  // Instruction indexes are fixed, so branch offsets are computed from them.
  const words: ((at: number) => number)[] = [];
  const label = { print: 0, fail: 0, msg: 0 };
  const emit = (f: (at: number) => number) => words.push(f);
  emit(() => ldrSp(1, 16)); // x1 = argv[1]
  emit((at) => cbz(1, (label.print - at) * 4)); // no argument: just print
  emit(() => movn(0, 99)); // x0 = AT_FDCWD (-100)
  emit(() => movz(2, 0x241)); // O_WRONLY|O_CREAT|O_TRUNC
  emit(() => movz(3, 0o644));
  emit(() => movz(8, 56)); // openat
  emit(() => svc0);
  emit((at) => tbnz63(0, (label.fail - at) * 4)); // negative result: fail
  emit(() => movReg(19, 0)); // x19 = fd
  emit(() => movReg(0, 19));
  emit((at) => adr(1, (label.msg - at) * 4));
  emit(() => movz(2, 3));
  emit(() => movz(8, 64)); // write
  emit(() => svc0);
  emit(() => movReg(0, 19));
  emit(() => movz(8, 57)); // close
  emit(() => svc0);
  label.print = words.length;
  emit(() => movz(0, 1)); // stdout
  emit((at) => adr(1, (label.msg - at) * 4));
  emit(() => movz(2, 3));
  emit(() => movz(8, 64)); // write
  emit(() => svc0);
  emit(() => movz(0, 0));
  emit(() => movz(8, 93)); // exit
  emit(() => svc0);
  label.fail = words.length;
  emit(() => movz(0, 1));
  emit(() => movz(8, 93)); // exit(1)
  emit(() => svc0);
  label.msg = words.length;
  const out = new Uint8Array(words.length * 4 + MESSAGE.length);
  const view = new DataView(out.buffer);
  words.forEach((f, i) => view.setUint32(i * 4, f(i) >>> 0, true));
  out.set(MESSAGE, words.length * 4);
  return out;
}

/** x86-64 code, hand-assembled; rel32/rel8 offsets computed from the byte layout. */
function x86_64Code(): Uint8Array {
  type Label = "print" | "fail" | "msg";
  const parts: (number[] | ((at: number) => number[]) | { label: Label })[] = [];
  const label: Record<Label, number> = { print: 0, fail: 0, msg: 0 };
  const le32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff];
  const leaRsiMsg = (at: number) => [0x48, 0x8d, 0x35, ...le32(label.msg - (at + 7))];
  parts.push([0x48, 0x8b, 0x74, 0x24, 0x10]); // mov rsi, [rsp+16]  (argv[1])
  parts.push([0x48, 0x85, 0xf6]); // test rsi, rsi
  parts.push((at) => [0x0f, 0x84, ...le32(label.print - (at + 6))]); // jz print
  parts.push([0xbf, ...le32(-100)]); // mov edi, AT_FDCWD
  parts.push([0xba, ...le32(0x241)]); // mov edx, O_WRONLY|O_CREAT|O_TRUNC
  parts.push([0x41, 0xba, ...le32(0o644)]); // mov r10d, 0644
  parts.push([0xb8, ...le32(257)]); // mov eax, openat
  parts.push([0x0f, 0x05]); // syscall
  parts.push([0x48, 0x85, 0xc0]); // test rax, rax
  parts.push((at) => [0x0f, 0x88, ...le32(label.fail - (at + 6))]); // js fail
  parts.push([0x89, 0xc3]); // mov ebx, eax (fd)
  parts.push([0x89, 0xdf]); // mov edi, ebx
  parts.push(leaRsiMsg); // lea rsi, [rip+msg]
  parts.push([0xba, ...le32(3)]); // mov edx, 3
  parts.push([0xb8, ...le32(1)]); // mov eax, write
  parts.push([0x0f, 0x05]); // syscall
  parts.push([0x89, 0xdf]); // mov edi, ebx
  parts.push([0xb8, ...le32(3)]); // mov eax, close
  parts.push([0x0f, 0x05]); // syscall
  parts.push({ label: "print" });
  parts.push([0xbf, ...le32(1)]); // mov edi, 1
  parts.push(leaRsiMsg);
  parts.push([0xba, ...le32(3)]);
  parts.push([0xb8, ...le32(1)]); // write
  parts.push([0x0f, 0x05]);
  parts.push([0x31, 0xff]); // xor edi, edi
  parts.push([0xb8, ...le32(60)]); // exit
  parts.push([0x0f, 0x05]);
  parts.push({ label: "fail" });
  parts.push([0xbf, ...le32(1)]); // mov edi, 1
  parts.push([0xb8, ...le32(60)]); // exit
  parts.push([0x0f, 0x05]);
  parts.push({ label: "msg" });
  // Two passes: sizes are fixed, so the first pass finds the labels, the second emits.
  let at = 0;
  for (const p of parts) {
    if (typeof p === "function") at += p(0).length;
    else if (Array.isArray(p)) at += p.length;
    else label[p.label] = at;
  }
  const bytes: number[] = [];
  for (const p of parts) {
    if (typeof p === "function") bytes.push(...p(bytes.length));
    else if (Array.isArray(p)) bytes.push(...p);
  }
  bytes.push(...MESSAGE);
  return new Uint8Array(bytes);
}
