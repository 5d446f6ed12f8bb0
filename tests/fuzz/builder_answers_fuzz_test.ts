/**
 * Property tests of what a builder (or Nix) answers and the scripts parse: watch_builders' sampler
 * output (`lib/watch.ts`), verify_offload's facts sections (`lib/offload.ts`), `nix derivation
 * show` JSON (`lib/explain.ts`), canary build output (`lib/canary.ts`), killed builds in a build
 * log (`lib/oom.ts`), `ps` elapsed times (`lib/show_config.ts`), and the shared flag values
 * (`lib/cli.ts`). A compromised or broken builder gives values or typed errors, never a crash.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { InvalidArgumentError } from "@commander-js/extra-typings";
import { parseRemoteBuildLines } from "../../lib/canary.ts";
import { parseCount, parseSeconds } from "../../lib/cli.ts";
import { parseDerivationShow } from "../../lib/explain.ts";
import { parseResources, parseSections } from "../../lib/offload.ts";
import { parseBuildLogKills } from "../../lib/oom.ts";
import { parseEtime } from "../../lib/show_config.ts";
import { parseSample, parseSamplerHeader } from "../../lib/watch.ts";
import { lineCount, linesOf, parsedOrTypedError, RUNS, textOf } from "./_fuzz.ts";

const SAMPLER = [
  "#nbr-watch 1",
  "#nbr-watch 2",
  "h cpus ",
  "0-1",
  "0-4294967295",
  "h hostname ",
  "builder1",
  "h buildusers ",
  "999 995",
  "h interval ",
  "1",
  "#S 7",
  "#E 7",
  "#E 8",
  "u 924.25 1601.27",
  "l 1.07 0.47 0.23 3/138 16602",
  "c cpu  100 0 50 800 50 0 0 0 0 0",
  "m MemTotal:       2048000 kB",
  "P some avg10=1.50 avg60=0.20 avg300=0.00 total=2855",
  "o 2",
  "p 812 790 30001 10684 R aarch64 cc1 plus",
  "p x y z",
  " ",
  "-1",
  "NaN",
];

Deno.test("parseSamplerHeader() and parseSample() give values or a ParseError at a line", () => {
  fc.assert(
    fc.property(linesOf(SAMPLER, { maxLines: 12, maxPieces: 3 }), (text) => {
      const lines = text.split("\n");
      parsedOrTypedError(() => parseSamplerHeader(lines, "builder1 header"), {
        input: "builder1 header",
        lines: lineCount(text),
      });
      parsedOrTypedError(() => parseSample(lines, "builder1 sample"), {
        input: "builder1 sample",
        lines: lineCount(text),
      });
    }),
    { numRuns: RUNS },
  );
});

const SECTIONS = [
  "@nproc",
  "@loadavg",
  "@meminfo",
  "@df",
  "@code 0",
  "@code x",
  "@end",
  "@",
  "8",
  "0.52 0.40 0.30 1/100 123",
  "MemTotal: 16384000 kB",
  "MemAvailable: 8192000 kB",
  "Filesystem 1024-blocks Used Available Capacity Mounted on",
  "/dev/vda 1000 400 600 40% /nix",
  "noise from a login shell",
  "-1",
  "1e999",
];

Deno.test("parseSections() and parseResources() read any facts output without throwing", () => {
  fc.assert(
    fc.property(linesOf(SECTIONS, { maxLines: 14, maxPieces: 3 }), (text) => {
      const facts = parseResources(parseSections(text));
      for (const value of Object.values(facts)) {
        assert.ok(value === undefined || value === null || typeof value === "number");
      }
    }),
    { numRuns: RUNS },
  );
});

Deno.test("parseDerivationShow() gives a derivation's needs or a ParseError naming the command", () => {
  const drv = fc.record({
    system: fc.oneof(fc.string({ maxLength: 12 }), fc.integer(), fc.constant(null)),
    env: fc.oneof(
      fc.dictionary(
        fc.constantFrom("requiredSystemFeatures", "preferLocalBuild", "__json", "x"),
        fc.oneof(fc.string({ maxLength: 20 }), fc.jsonValue({ maxDepth: 1 })),
      ),
      fc.jsonValue({ maxDepth: 1 }),
    ),
  });
  fc.assert(
    fc.property(
      fc.oneof(
        fc.dictionary(fc.string({ maxLength: 30 }), drv, { maxKeys: 2 }).map((d) =>
          JSON.stringify(d)
        ),
        fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
        textOf(["{", "}", '"/nix/store/abc-x.drv"', ":", '{"env":', "null", "[", "]"]),
      ),
      (json) => {
        const needs = parsedOrTypedError(() => parseDerivationShow(json), {
          input: "nix derivation show",
        });
        if (needs) assert.ok(Array.isArray(needs.requiredFeatures));
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("parseRemoteBuildLines(), parseBuildLogKills() and parseEtime() never throw", () => {
  fc.assert(
    fc.property(
      linesOf([
        "building '",
        "/nix/store/abc-nbr-canary-1.drv",
        "' on '",
        "ssh://builder1",
        "'...",
        "error: builder for '",
        "' failed due to signal 9 (Killed)",
        "1-02:03:04",
        "03:04",
        "99-99:99:99",
        ":",
        "-",
      ], { maxLines: 6, maxPieces: 6 }),
      (text) => {
        for (const line of parseRemoteBuildLines(text)) assert.equal(typeof line.drv, "string");
        parseBuildLogKills(text);
        const seconds = parseEtime(text.split("\n")[0] ?? "");
        assert.ok(seconds === null || (Number.isFinite(seconds) && seconds >= 0));
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("--timeout and count values give a number or commander's InvalidArgumentError", () => {
  fc.assert(
    fc.property(textOf(["1", "0", ".", "5", "-", "e", "1e3", " ", "Infinity", "0x10"]), (text) => {
      for (const parse of [parseSeconds, parseCount]) {
        const value = parsedOrTypedError(() => parse(text), {
          input: text,
          type: InvalidArgumentError,
        });
        if (value !== undefined) assert.ok(Number.isFinite(value) && value >= 0);
      }
    }),
    { numRuns: RUNS },
  );
});
