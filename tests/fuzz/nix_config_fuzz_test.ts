/**
 * Property tests of `nix config show` / `nix show-config` parsing (`lib/nix_config.ts`), text and
 * JSON, and of `nix --version`: any input gives settings or a `ParseError` naming the command (and,
 * for the text form, the line); printed settings read back as printed.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import {
  parseConfigShowJson,
  parseConfigShowText,
  parseNixVersion,
  settingText,
} from "../../lib/nix_config.ts";
import { lineCount, linesOf, parsedOrTypedError, RUNS, textOf } from "./_fuzz.ts";

const FRAGMENTS = [
  "builders",
  "max-jobs",
  " = ",
  " =",
  "=",
  "@/etc/nix/machines",
  "x86_64-linux",
  "true",
  "",
  "name",
  " ",
];

Deno.test("parseConfigShowText() gives settings or a ParseError at a line that exists", () => {
  fc.assert(
    fc.property(linesOf(FRAGMENTS), (text) => {
      parsedOrTypedError(() => parseConfigShowText(text, "nix show-config"), {
        input: "nix show-config",
        lines: lineCount(text),
      });
    }),
    { numRuns: RUNS },
  );
});

const name = fc.stringMatching(/^[a-z][a-z0-9-]{0,24}$/);
// What Nix prints: no newline, and a value never ends in CR (the reader drops one, as from CRLF).
const value = fc.string({ unit: "grapheme", maxLength: 30 }).filter((v) =>
  !v.includes("\n") && !v.endsWith("\r")
);

Deno.test("parseConfigShowText() reads back every printed 'name = value' line", () => {
  fc.assert(
    fc.property(fc.dictionary(name, value, { maxKeys: 20 }), (settings) => {
      const text = Object.entries(settings).map(([k, v]) => `${k} = ${v}\n`).join("");
      const parsed = parseConfigShowText(text);
      assert.deepEqual(
        Object.fromEntries([...parsed].map(([k, v]) => [k, v.value])),
        { ...settings },
      );
    }),
    { numRuns: RUNS },
  );
});

Deno.test("parseConfigShowJson() gives settings or a ParseError naming the command, for any JSON or text", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
        fc.dictionary(name, fc.jsonValue({ maxDepth: 2 })).map((v) => JSON.stringify(v)),
        textOf(['{"', '":', '{"value":', "[", "]", "}", ",", "null", "1", '"x"']),
      ),
      (text) => {
        parsedOrTypedError(() => parseConfigShowJson(text, "nix show-config --json"), {
          input: "nix show-config --json",
        });
      },
    ),
    { numRuns: RUNS },
  );
});

const jsonValue = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.integer(),
  fc.boolean(),
  fc.array(fc.stringMatching(/^[a-z0-9-]{1,10}$/), { maxLength: 5 }),
);

Deno.test("parseConfigShowJson() reads back every printed setting as its text form", () => {
  fc.assert(
    fc.property(
      fc.dictionary(name, fc.record({ value: jsonValue, defaultValue: jsonValue })),
      (settings) => {
        const parsed = parseConfigShowJson(JSON.stringify(settings));
        for (const [k, v] of Object.entries(settings)) {
          assert.deepEqual(parsed.get(k), {
            value: settingText(v.value),
            defaultValue: settingText(v.defaultValue),
          });
        }
        assert.equal(parsed.size, Object.keys(settings).length);
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("parseNixVersion() gives a version or a ParseError, and reads back printed versions", () => {
  fc.assert(
    fc.property(
      textOf(["nix (Nix) ", "nix (Lix, like Nix) ", "2.", "8.", "0", "\n", "pre", "Determinate"]),
      (text) => {
        parsedOrTypedError(() => parseNixVersion(text), { input: "nix --version" });
      },
    ),
    { numRuns: RUNS },
  );
  fc.assert(
    fc.property(
      fc.constantFrom("nix (Nix)", "nix (Lix, like Nix)", "nix (Determinate Nix 3.6.2)"),
      fc.tuple(fc.nat(99), fc.nat(99), fc.nat(99)),
      (prefix, version) => {
        const parsed = parseNixVersion(`${prefix} ${version.join(".")}\n`);
        assert.deepEqual(parsed.version, version);
      },
    ),
    { numRuns: RUNS },
  );
});
