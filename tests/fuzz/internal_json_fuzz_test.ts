/**
 * Property tests of Nix's `--log-format internal-json` lines (`lib/internal_json.ts`): any line is
 * an event, `null` (not `@nix`), or a `ParseError` naming the log; a printed event reads back (64-bit
 * ids exact); any sequence of valid events keeps the build tracker consistent.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { BuildTracker, type NixLogEvent, parseInternalJsonLine } from "../../lib/internal_json.ts";
import { parsedOrTypedError, RUNS, textOf } from "./_fuzz.ts";

const FRAGMENTS = [
  "@nix ",
  "{",
  "}",
  '"action":',
  '"start"',
  '"stop"',
  '"result"',
  '"msg"',
  '"setPhase"',
  '"id":',
  "34359738373",
  "1e400",
  '"fields":',
  "[",
  "]",
  '"/nix/store/33s9-hello.drv"',
  '{"a":1}',
  "null",
  ",",
  '"level":',
  '"type":',
  "105",
  '"msg":"x"',
];

Deno.test("parseInternalJsonLine() gives an event, null, or a ParseError naming the log", () => {
  fc.assert(
    fc.property(textOf(FRAGMENTS), (line) => {
      parsedOrTypedError(() => parseInternalJsonLine(line, "nix build (stderr)"), {
        input: "nix build (stderr)",
      });
    }),
    { numRuns: RUNS },
  );
});

const id = fc.bigInt({ min: 0n, max: 2n ** 63n }).map(String);
const field = fc.oneof(fc.string({ maxLength: 20 }), fc.integer());
const event: fc.Arbitrary<NixLogEvent> = fc.oneof(
  fc.record({
    action: fc.constant("start" as const),
    id,
    level: fc.nat(7),
    type: fc.constantFrom(0, 100, 101, 105, 108, 111),
    text: fc.string({ maxLength: 20 }),
    parent: id,
    fields: fc.array(field, { maxLength: 4 }),
  }),
  fc.record({ action: fc.constant("stop" as const), id }),
  fc.record({
    action: fc.constant("result" as const),
    id,
    type: fc.constantFrom(101, 104, 105, 106),
    fields: fc.array(field, { maxLength: 3 }),
  }),
  fc.record({ action: fc.constant("msg" as const), level: fc.nat(7), msg: fc.string() }).filter(
    (e) => !e.msg.includes("\x1b"),
  ),
  fc.record({ action: fc.constant("setPhase" as const), phase: fc.string({ maxLength: 20 }) }),
);

/** The printer: what Nix writes (ids as JSON numbers, which may exceed 2^53). */
function print(e: NixLogEvent): string {
  const json = JSON.stringify(e, (k, v) => (k === "id" || k === "parent") ? `@@${v}@@` : v);
  return "@nix " + json.replace(/"@@(\d+)@@"/g, "$1");
}

Deno.test("parseInternalJsonLine() reads back every printed event, 64-bit ids exact", () => {
  fc.assert(
    fc.property(event, (e) => {
      assert.deepEqual(parseInternalJsonLine(print(e)), { ...e });
    }),
    { numRuns: RUNS },
  );
});

Deno.test("BuildTracker follows any sequence of events without throwing", () => {
  fc.assert(
    fc.property(fc.array(event, { maxLength: 30 }), (events) => {
      const tracker = new BuildTracker();
      for (const e of events) tracker.handle(e, 0);
      for (const build of tracker.builds) {
        assert.ok(["running", "built", "failed"].includes(build.status));
      }
    }),
    { numRuns: RUNS },
  );
});
