/**
 * Property tests of `/proc/meminfo` (`lib/meminfo.ts`) and pressure stall files (`lib/psi.ts`):
 * any text gives figures or a `ParseError` naming the file and a line; printed files read back.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { parseMeminfo, parseSize } from "../../lib/meminfo.ts";
import { parsePressure, type PressureLine } from "../../lib/psi.ts";
import { lineCount, linesOf, parsedOrTypedError, RUNS, textOf } from "./_fuzz.ts";

const MEMINFO = [
  "MemTotal:",
  "MemFree:",
  "MemAvailable:",
  "SwapTotal:",
  "SwapFree:",
  "HugePages_Total:",
  "Active(anon):",
  "       ",
  "16384000",
  " kB",
  "kB",
  "0",
  "-5",
  "1.5",
];

Deno.test("parseMeminfo() gives figures or a ParseError naming the file and a line", () => {
  fc.assert(
    fc.property(linesOf(MEMINFO, { maxPieces: 4 }), (text) => {
      const info = parsedOrTypedError(() => parseMeminfo(text), {
        input: "/proc/meminfo",
        lines: lineCount(text),
      });
      if (info) assert.ok(Number.isFinite(info.totalBytes) && info.totalBytes >= 0);
    }),
    { numRuns: RUNS },
  );
});

const field = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_]{0,15}(\([a-z]{1,5}\))?$/);

Deno.test("parseMeminfo() reads back a printed meminfo file", () => {
  fc.assert(
    fc.property(
      fc.dictionary(field, fc.tuple(fc.nat(2 ** 40), fc.boolean()), { maxKeys: 10 }),
      fc.tuple(fc.nat(2 ** 40), fc.nat(2 ** 40), fc.nat(2 ** 40), fc.nat(2 ** 40)),
      (extra, [total, free, swapTotal, swapFree]) => {
        const all: Record<string, [number, boolean]> = {
          ...extra,
          MemTotal: [total, true],
          MemFree: [free, true],
          SwapTotal: [swapTotal, true],
          SwapFree: [swapFree, true],
        };
        const text = Object.entries(all).map(([k, [v, kb]]) =>
          `${`${k}:`.padEnd(15)} ${String(v).padStart(8)}${kb ? " kB" : ""}\n`
        ).join("");
        const info = parseMeminfo(text);
        for (const [k, [v, kb]] of Object.entries(all)) {
          assert.equal(info.fields[k], kb ? v * 1024 : v);
        }
        assert.equal(info.totalBytes, total * 1024);
        assert.equal(info.swapFreeBytes, swapFree * 1024);
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("parseSize() gives bytes or a ParseError naming the value", () => {
  fc.assert(
    fc.property(textOf(["512", "1.5", "G", "GiB", "M", "k", "B", " ", "-", "e9"]), (text) => {
      const bytes = parsedOrTypedError(() => parseSize(text), { input: "size" });
      if (bytes !== undefined) assert.ok(Number.isFinite(bytes) && bytes >= 0);
    }),
    { numRuns: RUNS },
  );
});

const PSI = [
  "some",
  "full",
  " avg10=",
  " avg60=",
  " avg300=",
  " total=",
  "1.50",
  "0.00",
  "123456",
  "-1",
  "\t",
];

Deno.test("parsePressure() gives pressure or a ParseError naming the file and a line", () => {
  fc.assert(
    fc.property(linesOf(PSI, { maxLines: 4, maxPieces: 14 }), (text) => {
      parsedOrTypedError(() => parsePressure(text, "/proc/pressure/io"), {
        input: "/proc/pressure/io",
        lines: lineCount(text),
      });
    }),
    { numRuns: RUNS },
  );
});

const pressureLine: fc.Arbitrary<PressureLine> = fc.record({
  avg10: fc.integer({ min: 0, max: 10000 }).map((n) => n / 100),
  avg60: fc.integer({ min: 0, max: 10000 }).map((n) => n / 100),
  avg300: fc.integer({ min: 0, max: 10000 }).map((n) => n / 100),
  totalUs: fc.nat(Number.MAX_SAFE_INTEGER),
});

function printLine(kind: string, p: PressureLine): string {
  return `${kind} avg10=${p.avg10.toFixed(2)} avg60=${p.avg60.toFixed(2)} ` +
    `avg300=${p.avg300.toFixed(2)} total=${p.totalUs}\n`;
}

Deno.test("parsePressure() reads back a printed pressure file, with and without a full line", () => {
  fc.assert(
    fc.property(pressureLine, fc.option(pressureLine, { nil: undefined }), (some, full) => {
      const text = printLine("some", some) + (full ? printLine("full", full) : "");
      assert.deepEqual(
        parsePressure(text),
        full ? { some: { ...some }, full: { ...full } } : {
          some: { ...some },
        },
      );
    }),
    { numRuns: RUNS },
  );
});
