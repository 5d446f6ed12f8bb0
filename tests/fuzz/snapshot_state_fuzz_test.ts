/**
 * Property tests of the JSON and small text formats the scripts read: snapshot bundles
 * (`meta.json`, `commands.json`, `paths.json`), `--apply` change records, the health check's state
 * file, `/proc/swaps` and zram's sysfs files, and monitoring-plugins thresholds. Any content gives a
 * value or a `ParseError` naming the file (and where it is line-based, the line).
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { parseChangeRecord } from "../../lib/atomic_file.ts";
import { parseDuration, parseSpaceThreshold } from "../../lib/health.ts";
import { parseHealthState } from "../../lib/health_state.ts";
import { parseThreshold } from "../../lib/nagios.ts";
import { loadSnapshot } from "../../lib/snapshot_target.ts";
import { parseCompAlgorithm, parseMmStat, parseProcSwaps } from "../../lib/zram.ts";
import { assertTypedError, lineCount, linesOf, parsedOrTypedError, RUNS, textOf } from "./_fuzz.ts";

/** JSON close to a format's shape: the right keys with values of any type, or any JSON at all. */
function jsonNear(keys: string[], depth = 2): fc.Arbitrary<string> {
  const anyValue = fc.jsonValue({ maxDepth: depth });
  const object = fc.dictionary(fc.constantFrom(...keys), anyValue, { maxKeys: keys.length });
  return fc.oneof(
    { arbitrary: object.map((o) => JSON.stringify(o)), weight: 4 },
    { arbitrary: fc.array(object, { maxLength: 3 }).map((a) => JSON.stringify(a)), weight: 2 },
    { arbitrary: anyValue.map((v) => JSON.stringify(v)), weight: 1 },
    { arbitrary: textOf(["{", "}", "[", "]", '"', ":", ",", ...keys, "null"]), weight: 1 },
  );
}

Deno.test("loadSnapshot() gives a bundle or a ParseError naming the bad file and where in it", async () => {
  // /dev/shm when there is one: 30,000 small writes.
  const shm = await Deno.stat("/dev/shm").then((s) => s.isDirectory, () => false);
  const dir = await Deno.makeTempDir({
    prefix: "nbr-fuzz-bundle-",
    ...(shm ? { dir: "/dev/shm" } : {}),
  });
  let hasCommands = false;
  let hasPaths = false;
  try {
    await fc.assert(
      fc.asyncProperty(
        jsonNear(["host", "collected_at", "tool"]),
        fc.option(jsonNear(["argv", "code", "stdout", "stderr", "failure"]), { nil: undefined }),
        fc.option(
          fc.oneof(
            jsonNear(["exists", "entries", "stat", "redacted"]),
            fc.dictionary(
              fc.constantFrom("/etc/nix/nix.conf", "/etc/../root", "relative", "/a\0b", "/x/."),
              fc.jsonValue({ maxDepth: 2 }),
            ).map((o) => JSON.stringify(o)),
          ),
          { nil: undefined },
        ),
        async (meta, commands, paths) => {
          Deno.writeTextFileSync(`${dir}/meta.json`, meta);
          for (const [name, text] of [["commands.json", commands], ["paths.json", paths]]) {
            if (text !== undefined) Deno.writeTextFileSync(`${dir}/${name}`, text);
            else if (name === "commands.json" ? hasCommands : hasPaths) {
              Deno.removeSync(`${dir}/${name}`);
            }
          }
          hasCommands = commands !== undefined;
          hasPaths = paths !== undefined;
          try {
            await loadSnapshot(dir);
          } catch (error) {
            const input = (error as { input?: string }).input ?? "";
            assert.ok(input.startsWith(`${dir}/`) && input.endsWith(".json"), String(error));
            assertTypedError(error, { input });
          }
        },
      ),
      { numRuns: RUNS },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseChangeRecord() and parseHealthState() give a value or a ParseError naming the file", () => {
  fc.assert(
    fc.property(
      jsonNear([
        "id",
        "tool",
        "kind",
        "status",
        "host",
        "createdAt",
        "updatedAt",
        "detail",
        "bootId",
        "version",
        "hosts",
      ]),
      (text) => {
        parsedOrTypedError(() => parseChangeRecord(text, "/var/lib/x/records/r.json"), {
          input: "/var/lib/x/records/r.json",
        });
        parsedOrTypedError(() => parseHealthState(text, "/var/lib/x/health.json"), {
          input: "/var/lib/x/health.json",
        });
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("parseProcSwaps(), parseMmStat() and parseCompAlgorithm() give values or a ParseError", () => {
  fc.assert(
    fc.property(
      linesOf([
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority",
        "/dev/zram0",
        "/swap\\040file",
        "partition",
        "file",
        "\t",
        " ",
        "8388604",
        "0",
        "-2",
        "100",
        "[zstd]",
        "lz4",
        "lzo-rle",
      ], { maxLines: 5 }),
      (text) => {
        parsedOrTypedError(() => parseProcSwaps(text), {
          input: "/proc/swaps",
          lines: lineCount(text),
        });
        parsedOrTypedError(() => parseMmStat(text, "/sys/block/zram0/mm_stat"), {
          input: "/sys/block/zram0/mm_stat",
        });
        const algorithms = parseCompAlgorithm(text);
        assert.ok(algorithms.available.every((a) => a !== "" && !/\s/.test(a)));
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("thresholds and durations from flags give a value or a ParseError at a column", () => {
  fc.assert(
    fc.property(
      textOf(["@", "~", ":", "10", "5.5", "-3", "%", "G", "M", "h", "d", "30m", "1e3", " "], {
        maxPieces: 6,
      }),
      (text) => {
        const flag = { input: "--warning" };
        parsedOrTypedError(() => parseThreshold(text, flag), flag);
        parsedOrTypedError(() => parseSpaceThreshold(text, "--warning"), flag);
        const seconds = parsedOrTypedError(() => parseDuration(text, "--warning"), flag);
        if (seconds !== undefined) assert.ok(Number.isFinite(seconds) && seconds > 0);
      },
    ),
    { numRuns: RUNS },
  );
});
