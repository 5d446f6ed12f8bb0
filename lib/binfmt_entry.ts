/**
 * binfmt_misc's text formats, parsed exactly as the kernel and the registration tools write them:
 * entry files (`/proc/sys/fs/binfmt_misc/<name>`), register strings
 * (`:name:type:offset:magic:mask:interpreter:flags`, the lines of `binfmt.d/*.conf`), binfmt-support's
 * format files (`/var/lib/binfmts/<name>`), and the kernel's matching rule.
 *
 * Pure: text in, typed value or a {@link ParseError} out.
 *
 * @module
 */

import { ParseError, quoteForMessage } from "./errors.ts";

/** What a registration matches on. */
export type BinfmtKind = "magic" | "extension";

/** A binfmt_misc rule: what a register string says, and what an entry file shows. */
export interface BinfmtRule {
  /** The entry's name (its file under `/proc/sys/fs/binfmt_misc`). */
  name: string;
  /** `magic` (type `M`) or `extension` (type `E`). */
  kind: BinfmtKind;
  /** Where in the file the magic starts (0 for extensions). */
  offset: number;
  /** The magic bytes; for an extension rule, the extension's bytes (without the dot). */
  magic: Uint8Array;
  /** The mask ANDed with the file's bytes before comparing; absent when there is none. */
  mask?: Uint8Array;
  /** The interpreter the kernel runs (a path). */
  interpreter: string;
  /** Flag letters as written (`P`, `O`, `C`, `F`), e.g. `"PF"`; `""` for none. */
  flags: string;
}

/** A live entry: a rule plus whether it is enabled. */
export interface BinfmtEntry extends BinfmtRule {
  /** Whether the kernel uses it (first line `enabled`). */
  enabled: boolean;
}

/** A rule read from a file, with where it came from. */
export interface BinfmtSourceRule extends BinfmtRule {
  /** The file it came from. */
  file: string;
  /** Its 1-based line in that file (1 for binfmt-support format files). */
  line: number;
}

/** What each flag letter means, for reports and the runbook. */
export const FLAG_MEANINGS: Readonly<Record<string, string>> = {
  P: "preserve-argv0: the interpreter gets the program's original argv[0] (multi-call binaries " +
    "like busybox need it)",
  O: "open-binary: the kernel passes the program as an open file descriptor, so execute-only " +
    "files run",
  C: "credentials: setuid/setgid and security labels come from the program, not the interpreter " +
    "(implies O)",
  F: "fix-binary: the kernel opened the interpreter when the entry was registered, so it works in " +
    "chroots, containers and the Nix sandbox without being visible there",
};

/**
 * Hex text (`7f454c46`) to bytes.
 *
 * @example
 * ```ts
 * import { hexToBytes } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual([...hexToBytes("7f454c46")], [0x7f, 0x45, 0x4c, 0x46]);
 * ```
 */
export function hexToBytes(hex: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`'${hex}' is not hex bytes`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Bytes to lower-case hex text, as entry files show them.
 *
 * @example
 * ```ts
 * import { bytesToHex } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(bytesToHex(new Uint8Array([0x7f, 0x45])), "7f45");
 * ```
 */
export function bytesToHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Decodes a register-string field the way the kernel does (`\xHH` escapes only; every other character
 * stands for itself).
 *
 * @example
 * ```ts
 * import { unescapeField } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual([...unescapeField("\\x7fELF")], [0x7f, 0x45, 0x4c, 0x46]);
 * ```
 */
export function unescapeField(field: string): Uint8Array {
  const out: number[] = [];
  const utf8 = new TextEncoder();
  for (let i = 0; i < field.length;) {
    const hex = /^\\x([0-9a-fA-F]{1,2})/.exec(field.slice(i));
    if (hex) {
      out.push(parseInt(hex[1]!, 16));
      i += hex[0].length;
    } else {
      const char = String.fromCodePoint(field.codePointAt(i)!);
      out.push(...utf8.encode(char));
      i += char.length;
    }
  }
  return new Uint8Array(out);
}

/**
 * Encodes bytes for a register string: every byte as `\xHH`, so no delimiter can slip in.
 *
 * @example
 * ```ts
 * import { escapeField } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(escapeField(new Uint8Array([0x7f, 0x45])), "\\x7f\\x45");
 * ```
 */
export function escapeField(bytes: Uint8Array): string {
  return [...bytes].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join("");
}

/**
 * Parses an entry file (`/proc/sys/fs/binfmt_misc/<name>`). Unknown lines are ignored, so a future
 * kernel's additions do not break it; a missing first line or interpreter is an error.
 *
 * @example Debian's qemu-aarch64, as registered by binfmt-support
 * ```ts
 * import { parseBinfmtEntry } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * const entry = parseBinfmtEntry(
 *   "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n" +
 *     "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n",
 *   "qemu-aarch64",
 * );
 * assert.equal(entry.enabled, true);
 * assert.equal(entry.flags, "PF");
 * assert.equal(entry.magic.length, 20);
 * ```
 */
export function parseBinfmtEntry(text: string, name: string, input?: string): BinfmtEntry {
  const source = input ?? `/proc/sys/fs/binfmt_misc/${name}`;
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const first = lines[0]?.trim();
  if (first !== "enabled" && first !== "disabled") {
    throw new ParseError(
      source,
      `expected 'enabled' or 'disabled', got ${quoteForMessage(lines[0] ?? "")}`,
      { line: 1 },
    );
  }
  let interpreter: string | undefined;
  let flags = "";
  let offset = 0;
  let magic: Uint8Array | undefined;
  let mask: Uint8Array | undefined;
  let extension: string | undefined;
  let maskLine = 1;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const at = { line: i + 1 };
    const hex = (value: string, what: string) => {
      try {
        return hexToBytes(value.trim());
      } catch {
        throw new ParseError(source, `${what} ${quoteForMessage(value)} is not hex`, at);
      }
    };
    if (line.startsWith("interpreter ")) interpreter = line.slice("interpreter ".length);
    else if (line.startsWith("flags:")) {
      flags = line.slice("flags:".length).trim();
      if (!/^[POCF]*$/.test(flags)) {
        throw new ParseError(source, `unknown flags ${quoteForMessage(flags)}`, at);
      }
    } else if (line.startsWith("offset ")) {
      const value = line.slice("offset ".length).trim();
      if (!/^\d+$/.test(value)) {
        throw new ParseError(source, `offset ${quoteForMessage(value)} is not a number`, at);
      }
      offset = Number(value);
    } else if (line.startsWith("magic ")) magic = hex(line.slice("magic ".length), "magic");
    else if (line.startsWith("mask ")) {
      mask = hex(line.slice("mask ".length), "mask");
      maskLine = i + 1;
    } else if (line.startsWith("extension ")) {
      extension = line.slice("extension ".length).replace(/^\./, "");
    }
  }
  // What is missing is missing at the end of the file.
  const end = { line: Math.max(1, lines.length) };
  if (interpreter === undefined) {
    throw new ParseError(source, "no 'interpreter' line", end);
  }
  if (magic === undefined && extension === undefined) {
    throw new ParseError(source, "neither a 'magic' nor an 'extension' line", end);
  }
  if (magic !== undefined && mask !== undefined && mask.length !== magic.length) {
    throw new ParseError(
      source,
      `mask has ${mask.length} bytes but magic has ${magic.length}`,
      { line: maskLine },
    );
  }
  const entry: BinfmtEntry = {
    name,
    enabled: first === "enabled",
    kind: magic !== undefined ? "magic" : "extension",
    offset: magic !== undefined ? offset : 0,
    magic: magic ?? new TextEncoder().encode(extension),
    interpreter,
    flags,
  };
  if (mask !== undefined) entry.mask = mask;
  return entry;
}

/**
 * Parses a register string `:name:type:offset:magic:mask:interpreter:flags` (the first character is
 * the delimiter), with the kernel's rules: `\xHH` escapes, empty offset = 0, empty mask = none, flags
 * from `POCF`, and the limits it enforces (interpreter ≤ 127 bytes, offset + magic ≤ 256 bytes).
 *
 * @example The line NixOS writes to /etc/binfmt.d/nixos.conf
 * ```ts
 * import { parseRegisterLine } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * const rule = parseRegisterLine(
 *   ":aarch64-linux:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:" +
 *     "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xfe\\xff\\xff\\xff:" +
 *     "/run/binfmt/aarch64-linux:P",
 * );
 * assert.equal(rule.name, "aarch64-linux");
 * assert.equal(rule.offset, 0);
 * assert.equal(rule.mask?.[14], 0);
 * assert.equal(rule.flags, "P");
 * ```
 */
export function parseRegisterLine(
  text: string,
  input = "register string",
  lineNumber?: number,
): BinfmtRule {
  const line = text.replace(/\r?\n$/, "");
  const at = lineNumber === undefined ? undefined : { line: lineNumber };
  const fail = (reason: string) => new ParseError(input, reason, at);
  const delimiter = line[0];
  if (delimiter === undefined) throw fail("empty register string");
  const fields = line.slice(1).split(delimiter);
  // Seven fields; the kernel accepts a missing trailing flags field.
  if (fields.length < 6 || fields.length > 8 || (fields.length === 8 && fields[7] !== "")) {
    throw fail(
      `expected ${delimiter}name${delimiter}type${delimiter}offset${delimiter}magic${delimiter}` +
        `mask${delimiter}interpreter${delimiter}flags, got ${fields.length} fields in ${
          quoteForMessage(line)
        }`,
    );
  }
  const [name = "", type = "", offsetText = "", magicText = "", maskText = "", interpreter = ""] =
    fields;
  const flags = (fields[6] ?? "").trim();
  if (name === "" || name === "." || name === ".." || name.includes("/")) {
    throw fail(`name ${quoteForMessage(name)} is not allowed (empty, '.', '..' or with '/')`);
  }
  if (type !== "M" && type !== "E") {
    throw fail(`type ${quoteForMessage(type)} is neither M (magic) nor E (extension)`);
  }
  if (!/^[POCF]*$/.test(flags)) throw fail(`unknown flags ${quoteForMessage(flags)}`);
  if (interpreter === "") throw fail("the interpreter is empty");
  if (new TextEncoder().encode(interpreter).length > 127) {
    throw fail(`interpreter ${quoteForMessage(interpreter)} is longer than 127 bytes`);
  }
  if (type === "E") {
    if (magicText === "" || magicText.includes("/")) {
      throw fail(`extension ${quoteForMessage(magicText)} is empty or contains '/'`);
    }
    return {
      name,
      kind: "extension",
      offset: 0,
      magic: new TextEncoder().encode(magicText),
      interpreter,
      flags,
    };
  }
  if (!/^\d*$/.test(offsetText)) {
    throw fail(`offset ${quoteForMessage(offsetText)} is not a number`);
  }
  const offset = offsetText === "" ? 0 : Number(offsetText);
  const magic = unescapeField(magicText);
  if (magic.length === 0) throw fail("the magic is empty");
  if (offset + magic.length > 256) {
    throw fail(`offset ${offset} + ${magic.length} magic bytes reach past byte 256`);
  }
  const rule: BinfmtRule = { name, kind: "magic", offset, magic, interpreter, flags };
  if (maskText !== "") {
    const mask = unescapeField(maskText);
    if (mask.length !== magic.length) {
      throw fail(`mask has ${mask.length} bytes but magic has ${magic.length}`);
    }
    rule.mask = mask;
  }
  return rule;
}

/**
 * Writes a rule as a register string (every magic and mask byte escaped), ready for
 * `/proc/sys/fs/binfmt_misc/register` or a `binfmt.d` file.
 *
 * @example
 * ```ts
 * import { formatRegisterLine, parseRegisterLine } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * const line = ":python3.11:M::\\xa7\\x0d\\x0d\\x0a::/usr/bin/python3.11:";
 * assert.equal(formatRegisterLine(parseRegisterLine(line)), ":python3.11:M:0:\\xa7\\x0d\\x0d\\x0a::/usr/bin/python3.11:");
 * ```
 */
export function formatRegisterLine(rule: BinfmtRule): string {
  if (rule.kind === "extension") {
    return `:${rule.name}:E::${
      new TextDecoder().decode(rule.magic)
    }::${rule.interpreter}:${rule.flags}`;
  }
  const mask = rule.mask === undefined ? "" : escapeField(rule.mask);
  return `:${rule.name}:M:${rule.offset}:${
    escapeField(rule.magic)
  }:${mask}:${rule.interpreter}:${rule.flags}`;
}

/**
 * Parses a `binfmt.d` file the way `systemd-binfmt` reads it: one register string per line, blank lines
 * and lines starting with `#` or `;` ignored.
 *
 * @example
 * ```ts
 * import { parseBinfmtD } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * const rules = parseBinfmtD("# qemu\n:qemu-riscv64:M::\\x7fELF::/usr/bin/qemu-riscv64-static:F\n", "/etc/binfmt.d/q.conf");
 * assert.equal(rules[0]?.name, "qemu-riscv64");
 * assert.equal(rules[0]?.line, 2);
 * ```
 */
export function parseBinfmtD(text: string, file: string): BinfmtSourceRule[] {
  const rules: BinfmtSourceRule[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    rules.push({ ...parseRegisterLine(line, file, i + 1), file, line: i + 1 });
  }
  return rules;
}

/**
 * Parses a binfmt-support format file (`/var/lib/binfmts/<name>`, `/usr/share/binfmts/<name>` in
 * the admin-dir layout): one value per line — package, type, offset, magic, mask, interpreter,
 * detector, credentials, preserve, fix_binary. The flags follow from the last three, the way
 * `update-binfmts --enable` registers them.
 *
 * @example Debian's qemu-aarch64 (registered as `flags: PF`)
 * ```ts
 * import { parseBinfmtSupport } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * const rule = parseBinfmtSupport(
 *   "qemu-user-static\nmagic\n0\n\\x7f\\x45\\x4c\\x46\n\\xff\\xff\\xff\\xff\n" +
 *     "/usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\nno\nyes\nyes\n",
 *   "/var/lib/binfmts/qemu-aarch64",
 * );
 * assert.equal(rule.name, "qemu-aarch64");
 * assert.equal(rule.flags, "PF");
 * ```
 */
export function parseBinfmtSupport(text: string, file: string): BinfmtSourceRule {
  const name = file.slice(file.lastIndexOf("/") + 1);
  const lines = text.split("\n");
  const field = (i: number) => (lines[i] ?? "").trim();
  // Each value is on its own line: name the line at fault (1-based: type 2, offset 3, magic 4,
  // mask 5, interpreter 6), or the last line of a file that ends before it.
  const fail = (i: number, reason: string) =>
    i < lines.length
      ? new ParseError(file, reason, { line: i + 1 })
      : new ParseError(file, `${reason} (the file ends before line ${i + 1})`, {
        line: lines.length,
      });
  const type = field(1);
  if (type !== "magic" && type !== "extension") {
    throw fail(1, `type ${quoteForMessage(type)} is neither 'magic' nor 'extension'`);
  }
  const yes = (i: number) => field(i) === "yes";
  const credentials = yes(7);
  const flags = (yes(8) ? "P" : "") + (credentials ? "OC" : "") + (yes(9) ? "F" : "");
  const colon = [2, 3, 4, 5].find((i) => field(i).includes(":"));
  if (colon !== undefined) throw fail(colon, `${quoteForMessage(field(colon))} contains ':'`);
  const line = type === "magic"
    ? `:${name}:M:${field(2)}:${field(3)}:${field(4)}:${field(5)}:${flags}`
    : `:${name}:E::${field(3)}::${field(5)}:${flags}`;
  try {
    return { ...parseRegisterLine(line, file), file, line: 1 };
  } catch (error) {
    const kind = error instanceof ParseError &&
      /^(?:the )?(offset|magic|extension|mask|interpreter)\b/.exec(error.reason)?.[1];
    if (!kind) throw error;
    const index = { offset: 2, magic: 3, extension: 3, mask: 4, interpreter: 5 }[kind]!;
    throw fail(index, (error as ParseError).reason);
  }
}

/**
 * Whether a magic rule matches a file that starts with `head` (the kernel compares
 * `(byte ^ magic) & mask` over `offset .. offset + magic.length`, within the first 256 bytes).
 * Extension rules never match by content.
 *
 * @example
 * ```ts
 * import { parseRegisterLine, ruleMatches } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * const rule = parseRegisterLine(":e:M:0:\\x7fELF\\x02:\\xff\\xff\\xff\\xff\\xfe:/i:");
 * assert.equal(ruleMatches(rule, new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 0x03])), true);
 * assert.equal(ruleMatches(rule, new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 0x01])), false);
 * ```
 */
export function ruleMatches(rule: BinfmtRule, head: Uint8Array): boolean {
  if (rule.kind !== "magic") return false;
  const end = rule.offset + rule.magic.length;
  if (end > 256 || end > head.length) return false;
  for (let i = 0; i < rule.magic.length; i++) {
    const mask = rule.mask?.[i] ?? 0xff;
    if (((head[rule.offset + i]! ^ rule.magic[i]!) & mask) !== 0) return false;
  }
  return true;
}

/**
 * The flags as the kernel shows them: in the order `P O C F`, with `O` added when `C` is set (the
 * kernel implies it), e.g. `OPF` → `POF`, `PC` → `POC`.
 *
 * @example
 * ```ts
 * import { normalizeFlags } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(normalizeFlags("OPF"), "POF");
 * assert.equal(normalizeFlags("CF"), "OCF");
 * ```
 */
export function normalizeFlags(flags: string): string {
  const set = new Set(flags);
  if (set.has("C")) set.add("O");
  return ["P", "O", "C", "F"].filter((f) => set.has(f)).join("");
}

/**
 * Whether two rules register the same thing (kind, offset, magic, mask, interpreter, flags; names
 * may differ). Flags are compared as the kernel shows them ({@link normalizeFlags}).
 *
 * @example
 * ```ts
 * import { parseRegisterLine, sameRule } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(sameRule(parseRegisterLine(":a:M::\\x7f:\\xff:/i:OPF"), parseRegisterLine(":b:M:0:\\x7f:\\xff:/i:PFO")), true);
 * ```
 */
export function sameRule(a: BinfmtRule, b: BinfmtRule): boolean {
  const same = (x: Uint8Array | undefined, y: Uint8Array | undefined) =>
    x === undefined || y === undefined
      ? x === y
      : x.length === y.length && x.every((v, i) => v === y[i]);
  return a.kind === b.kind && a.offset === b.offset && same(a.magic, b.magic) &&
    same(a.mask, b.mask) && a.interpreter === b.interpreter &&
    normalizeFlags(a.flags) === normalizeFlags(b.flags);
}
