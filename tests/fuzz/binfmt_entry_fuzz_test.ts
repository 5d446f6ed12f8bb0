/**
 * Property tests of binfmt_misc's formats (`lib/binfmt_entry.ts`) and of the dumps `lib/binfmt.ts`
 * reads from a target: entry files, register strings, `binfmt.d` files and binfmt-support format
 * files give a rule or a `ParseError` naming the file and line; a printed register string reads
 * back as the rule it was printed from; an entry file as the kernel prints it reads back too.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { parseBinfmtDump, parseInterpreterDump, parseSourcesDump } from "../../lib/binfmt.ts";
import {
  type BinfmtRule,
  bytesToHex,
  formatRegisterLine,
  parseBinfmtD,
  parseBinfmtEntry,
  parseBinfmtSupport,
  parseRegisterLine,
} from "../../lib/binfmt_entry.ts";
import { readElfHeader } from "../../lib/elf.ts";
import { lineCount, linesOf, parsedOrTypedError, RUNS, textOf } from "./_fuzz.ts";

const ENTRY_FRAGMENTS = [
  "enabled",
  "disabled",
  "interpreter ",
  "/usr/bin/qemu-aarch64-static",
  "flags: ",
  "POCF",
  "offset ",
  "magic ",
  "mask ",
  "extension ",
  ".py",
  "7f454c46",
  "ffff",
  "0",
  "zz",
];

Deno.test("parseBinfmtEntry() gives an entry or a ParseError naming the file and a line", () => {
  fc.assert(
    fc.property(linesOf(ENTRY_FRAGMENTS, { maxLines: 8 }), (text) => {
      parsedOrTypedError(() => parseBinfmtEntry(text, "qemu-x"), {
        input: "/proc/sys/fs/binfmt_misc/qemu-x",
        lines: lineCount(text),
      });
    }),
    { numRuns: RUNS },
  );
});

const REGISTER_FRAGMENTS = [
  ":",
  "qemu-aarch64",
  "M",
  "E",
  "0",
  "\\x7f",
  "\\xff",
  "\\x",
  "\\x4",
  "ELF",
  "/usr/bin/qemu-aarch64-static",
  "OCF",
  "P",
  "|",
  ".",
  "..",
  "/",
];

Deno.test("parseRegisterLine() gives a rule or a ParseError naming the input and line", () => {
  fc.assert(
    fc.property(textOf(REGISTER_FRAGMENTS), (text) => {
      const rule = parsedOrTypedError(() => parseRegisterLine(text, "/etc/binfmt.d/x.conf", 7), {
        input: "/etc/binfmt.d/x.conf",
        lines: 7,
      });
      // Whatever was accepted prints to a string that reads back as the same rule.
      if (rule !== undefined && rule.kind === "magic") {
        assert.deepEqual(parseRegisterLine(formatRegisterLine(rule)), rule);
      }
    }),
    { numRuns: RUNS },
  );
});

const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });
const magicRule: fc.Arbitrary<BinfmtRule> = fc.record({
  name: fc.stringMatching(/^[A-Za-z0-9_.+-]{1,30}$/).filter((n) => n !== "." && n !== ".."),
  offset: fc.integer({ min: 0, max: 100 }),
  magic: bytes(1, 120),
  withMask: fc.boolean(),
  interpreter: fc.stringMatching(/^\/[A-Za-z0-9_\/.+-]{0,100}$/),
  flags: fc.subarray(["P", "O", "C", "F"]).map((f) => f.join("")),
}).map(({ withMask, ...r }) => {
  const rule: BinfmtRule = { ...r, kind: "magic" };
  if (withMask) rule.mask = r.magic.map((b) => b ^ 0x5a);
  return rule;
});
const extensionRule: fc.Arbitrary<BinfmtRule> = fc.record({
  name: fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/),
  ext: fc.stringMatching(/^[A-Za-z0-9_.-]{1,10}$/),
  interpreter: fc.stringMatching(/^\/[A-Za-z0-9_\/.-]{0,60}$/),
  flags: fc.subarray(["P", "O", "C", "F"]).map((f) => f.join("")),
}).map(({ ext, ...r }) => ({
  ...r,
  kind: "extension" as const,
  offset: 0,
  magic: new TextEncoder().encode(ext),
}));

Deno.test("parseRegisterLine(formatRegisterLine(rule)) is the rule, for magic and extension rules", () => {
  fc.assert(
    fc.property(fc.oneof(magicRule, extensionRule), (rule) => {
      assert.deepEqual(parseRegisterLine(formatRegisterLine(rule)), rule);
    }),
    { numRuns: RUNS },
  );
});

/** The printer for entry files: what the kernel shows in `/proc/sys/fs/binfmt_misc/<name>`. */
function entryFile(rule: BinfmtRule, enabled: boolean): string {
  const lines = [enabled ? "enabled" : "disabled", `interpreter ${rule.interpreter}`];
  lines.push(`flags: ${rule.flags}`);
  if (rule.kind === "extension") {
    lines.push(`extension .${new TextDecoder().decode(rule.magic)}`);
  } else {
    lines.push(`offset ${rule.offset}`, `magic ${bytesToHex(rule.magic)}`);
    if (rule.mask) lines.push(`mask ${bytesToHex(rule.mask)}`);
  }
  return lines.join("\n") + "\n";
}

Deno.test("parseBinfmtEntry() reads back an entry file as the kernel prints it", () => {
  fc.assert(
    fc.property(fc.oneof(magicRule, extensionRule), fc.boolean(), (rule, enabled) => {
      const entry = parseBinfmtEntry(entryFile(rule, enabled), rule.name);
      assert.deepEqual(entry, { ...rule, enabled });
    }),
    { numRuns: RUNS },
  );
});

Deno.test("parseBinfmtD() and parseBinfmtSupport() give rules or a ParseError naming the file and a line", () => {
  fc.assert(
    fc.property(
      linesOf([...REGISTER_FRAGMENTS, "# comment", ";", "magic", "extension", "yes", "no"], {
        maxLines: 11,
      }),
      (text) => {
        parsedOrTypedError(() => parseBinfmtD(text, "/usr/lib/binfmt.d/q.conf"), {
          input: "/usr/lib/binfmt.d/q.conf",
          lines: lineCount(text),
        });
        parsedOrTypedError(() => parseBinfmtSupport(text, "/var/lib/binfmts/qemu-x"), {
          input: "/var/lib/binfmts/qemu-x",
          lines: lineCount(text),
        });
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("the binfmt dumps read from a target never throw, whatever a target answers", () => {
  fc.assert(
    fc.property(
      linesOf([
        ...ENTRY_FRAGMENTS,
        "@@state not-mounted",
        "@@status enabled",
        "@@entry ",
        "@@unreadable",
        "@@file /etc/binfmt.d/a.conf",
        "@@binfmts /var/lib/binfmts/q",
        "@@masked ",
        "@@hop ",
        "@@head",
        "@@missing",
        "@@loop",
        "@@executable",
        " 7f 45 4c 46 02 01",
        ...REGISTER_FRAGMENTS,
      ], { maxLines: 14 }),
      (text) => {
        parseBinfmtDump(text);
        parseSourcesDump(text);
        parseInterpreterDump("/usr/bin/qemu", text);
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("readElfHeader() returns a header or null for any bytes, truncated ELF included", () => {
  const elfStart = fc.tuple(
    fc.constantFrom(1, 2),
    fc.constantFrom(1, 2),
    fc.uint8Array({ maxLength: 200 }),
  ).map(([cls, data, rest]) => new Uint8Array([0x7f, 0x45, 0x4c, 0x46, cls, data, 1, ...rest]));
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), elfStart), (head) => {
      const header = readElfHeader(head);
      assert.ok(header === null || typeof header.machine === "number");
    }),
    { numRuns: RUNS },
  );
});
