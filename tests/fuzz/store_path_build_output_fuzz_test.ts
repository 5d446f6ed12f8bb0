/**
 * Property tests of store paths (`lib/store_path.ts`) and failed-build output (`lib/build_output.ts`):
 * any pasted text is a store path or a `StorePathError` (a usage error: exit 3) before anything
 * runs; a printed store path reads back; any build output gives failures whose paths are valid
 * store paths on lines that exist, never an exception.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { findStorePaths, parseBuildOutput } from "../../lib/build_output.ts";
import { UsageError } from "../../lib/errors.ts";
import {
  buildLogFiles,
  MAX_NAME_LENGTH,
  NIX_BASE32,
  parseStorePath,
  StorePathError,
  storePathProblem,
} from "../../lib/store_path.ts";
import { lineCount, linesOf, parsedOrTypedError, RUNS, textOf } from "./_fuzz.ts";

const HASH = "f6qc9gny4w6ajssphr39im341ph0klsn";
const PATH_FRAGMENTS = [
  "/nix/store/",
  HASH,
  "e",
  "-",
  "fail",
  ".drv",
  "^out",
  "^*",
  "!out",
  "/",
  "//",
  ";rm -rf /",
  "$(touch x)",
  " ",
  "..",
  ".",
  "a".repeat(220),
];

Deno.test("parseStorePath() gives a store path or a StorePathError (exit 3), for any text", () => {
  fc.assert(
    fc.property(textOf(PATH_FRAGMENTS, { maxPieces: 8 }), (text) => {
      const path = parsedOrTypedError(() => parseStorePath(text), {
        input: text,
        type: StorePathError,
      });
      if (path !== undefined) {
        assert.equal(storePathProblem(path.path), null);
        assert.match(path.path, /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$/);
        const files = buildLogFiles(path);
        assert.ok(files.plain.startsWith("/nix/var/log/nix/drvs/") && !files.plain.includes(".."));
      }
    }),
    { numRuns: RUNS },
  );
  assert.ok(new StorePathError("x", "y") instanceof UsageError);
});

const hash = fc.array(fc.constantFrom(...NIX_BASE32), { minLength: 32, maxLength: 32 })
  .map((c) => c.join(""));
const name = fc.array(
  fc.constantFrom(..."abcXYZ019+-._?=".split("")),
  { minLength: 1, maxLength: MAX_NAME_LENGTH },
).map((c) => c.join("")).filter((n) => !/^\.\.?(-|$)/.test(n));

Deno.test("parseStorePath() reads back every printed store path, with an output suffix too", () => {
  fc.assert(
    fc.property(hash, name, fc.constantFrom("", "/", "^out", "^*", "!dev"), (h, n, suffix) => {
      const path = `/nix/store/${h}-${n}`;
      const drv = suffix.length > 1 && !n.endsWith(".drv") ? `${path}.drv` : path;
      const parsed = parseStorePath(drv + suffix);
      assert.deepEqual(
        [parsed.path, parsed.hash, parsed.name, parsed.isDerivation],
        [drv, h, drv.slice(44), drv.endsWith(".drv")],
      );
    }),
    { numRuns: RUNS },
  );
});

const OUTPUT_FRAGMENTS = [
  "error: ",
  "builder for '",
  `/nix/store/${HASH}-fail.drv`,
  "/nix/store/eeee-bad.drv",
  "' failed with exit code 2;",
  "' failed due to signal 9 (Killed)",
  "building '",
  "' on 'ssh://builder1'...",
  "Cannot build '",
  "'.",
  "Reason: builder failed with exit code 1.",
  "Reason: 3 dependencies failed.",
  "       last 10 log lines:",
  "       > ",
  "1 dependencies of derivation '",
  "' failed to build",
  "hash mismatch in fixed-output derivation '",
  "Failed to find a machine for remote build!",
  "derivation: ",
  "‘",
  "’",
  "\x1b[31;1m",
  "\x1b[0m",
  "For full logs, run 'nix log ",
];

Deno.test("parseBuildOutput() never throws, and names only valid store paths on lines that exist", () => {
  fc.assert(
    fc.property(linesOf(OUTPUT_FRAGMENTS, { maxLines: 10, maxPieces: 6 }), (text) => {
      const summary = parseBuildOutput(text);
      const lines = lineCount(text);
      for (const failure of summary.failures) {
        assert.equal(storePathProblem(failure.drv), null, failure.drv);
        assert.ok(failure.line >= 1 && failure.line <= lines);
      }
      for (const drv of [...summary.topLevel, ...Object.keys(summary.builtOn)]) {
        assert.equal(storePathProblem(drv), null, drv);
      }
      for (const ignored of summary.ignored) assert.ok(ignored.line <= lines);
      for (const path of findStorePaths(text)) assert.equal(storePathProblem(path), null);
    }),
    { numRuns: RUNS },
  );
});

Deno.test("parseBuildOutput() reads back a failure printed the way Nix 2.8 prints it", () => {
  fc.assert(
    fc.property(hash, name, fc.integer({ min: 1, max: 255 }), (h, n, code) => {
      const drv = `/nix/store/${h}-${n}.drv`;
      const summary = parseBuildOutput(
        `building '${drv}'...\nerror: builder for '${drv}' failed with exit code ${code};\n` +
          "       last 1 log lines:\n       > boom\n",
      );
      assert.deepEqual(
        summary.failures.map((f) => [f.drv, f.cause, f.exitCode, f.logTail]),
        [[drv, "builder", code, ["boom"]]],
      );
    }),
    { numRuns: RUNS },
  );
});
