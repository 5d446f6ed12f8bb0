/**
 * Property tests of machines files and the `builders` setting (`lib/machines.ts`), with the rules
 * of every Nix version: any text gives machines and Nix's own errors (never an exception) at lines
 * that exist; printed machines lines read back field for field; `@file` graphs of any shape end.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { parseMachines, resolveBuilders } from "../../lib/machines.ts";
import { lineCount, linesOf, RUNS } from "./_fuzz.ts";

const VERSIONS = ["2.3.0", "2.8.0", "2.24.0", "2.29.0", "2.31.0", "nix (Lix, like Nix) 2.91.1"];

const FRAGMENTS = [
  "nixos",
  "ssh://",
  "ssh-ng://",
  "root@",
  "builder:2222",
  "[::1]",
  "?remote-program=/bin/nix-daemon",
  "x86_64-linux",
  ",aarch64-linux",
  "/root/.ssh/id",
  " ",
  "\t",
  "-",
  "8",
  "1.5",
  "-1",
  "inf",
  "nan",
  "+4",
  "kvm,big-parallel",
  "c3NoLWVkMjU1MTkgQUFBQQ==",
  "not!base64",
  "#",
  ";",
  "@/etc/nix/machines",
  "@",
];

Deno.test("parseMachines() never throws and places every machine and error on a line that exists", () => {
  fc.assert(
    fc.property(
      linesOf(FRAGMENTS, { maxLines: 8 }),
      fc.constantFrom(...VERSIONS),
      (text, version) => {
        const parsed = parseMachines(text, { version, input: "/etc/nix/machines" });
        const lines = lineCount(text);
        for (const entry of parsed.entries) {
          const at = entry.kind === "machine"
            ? entry.machine
            : entry.kind === "file"
            ? entry.file
            : entry.error;
          assert.equal(at.input, "/etc/nix/machines");
          assert.ok(at.line >= 1 && at.line <= lines, `line ${at.line} of ${lines}`);
        }
        for (const error of parsed.errors) {
          assert.ok(error.column === undefined || (error.column >= 0 && error.column <= 7));
          assert.ok(error.nixMessage !== "");
        }
        for (const m of parsed.machines) {
          assert.ok(m.maxJobs >= 0 && m.speedFactor !== 0, `${m.maxJobs} ${m.speedFactor}`);
          assert.ok(m.columns.length >= 1 && m.storeUri !== "");
        }
      },
    ),
    { numRuns: RUNS },
  );
});

const word = (re: RegExp) => fc.stringMatching(re);
const machine = fc.record({
  user: fc.option(word(/^[a-z][a-z0-9_-]{0,8}$/), { nil: undefined }),
  host: word(/^[a-z][a-z0-9-]{0,12}(\.[a-z]{2,5})?$/),
  port: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
  scheme: fc.constantFrom("", "ssh://", "ssh-ng://"),
  systems: fc.uniqueArray(fc.constantFrom("x86_64-linux", "aarch64-linux", "i686-linux"), {
    maxLength: 3,
  }),
  key: fc.option(word(/^\/[a-z0-9_\/.-]{1,20}$/), { nil: undefined }),
  maxJobs: fc.option(fc.integer({ min: 0, max: 4294967295 }), { nil: undefined }),
  speed: fc.option(fc.integer({ min: 1, max: 1000 }), { nil: undefined }),
  supported: fc.uniqueArray(word(/^[a-z][a-z0-9-]{0,10}$/), { maxLength: 4 }),
  mandatory: fc.uniqueArray(word(/^[a-z][a-z0-9-]{0,10}$/), { maxLength: 3 }),
  hostKey: fc.option(fc.string({ unit: "binary-ascii", minLength: 1, maxLength: 40 }).map(btoa), {
    nil: undefined,
  }),
});

/** The printer: a machines line as people write them (`-` for an unset column). */
function machineLine(m: typeof machine extends fc.Arbitrary<infer T> ? T : never): string {
  const hostPart = `${m.user !== undefined ? `${m.user}@` : ""}${m.host}`;
  const uri = m.scheme === "" ? hostPart : `${m.scheme}${hostPart}${m.port ? `:${m.port}` : ""}`;
  const list = (items: string[]) => items.length > 0 ? items.join(",") : "-";
  return [
    uri,
    list(m.systems),
    m.key ?? "-",
    m.maxJobs ?? "-",
    m.speed ?? "-",
    list(m.supported),
    list(m.mandatory),
    m.hostKey ?? "-",
  ].join(" ");
}

Deno.test("parseMachines() reads back every printed machines line field for field", () => {
  fc.assert(
    fc.property(fc.array(machine, { maxLength: 6 }), fc.constantFrom(...VERSIONS), (ms, v) => {
      const text = ms.map(machineLine).join("\n") + "\n";
      const parsed = parseMachines(text, { version: v });
      assert.deepEqual(parsed.errors, []);
      assert.equal(parsed.machines.length, ms.length);
      ms.forEach((m, i) => {
        const got = parsed.machines[i]!;
        assert.equal(got.line, i + 1);
        assert.equal(got.scheme, m.scheme === "ssh-ng://" ? "ssh-ng" : "ssh");
        assert.equal(got.user, m.user);
        assert.equal(got.host, m.host);
        assert.equal(got.port, m.scheme === "" ? undefined : m.port);
        assert.deepEqual(got.systems, m.systems);
        assert.equal(got.sshKey, m.key);
        assert.equal(got.maxJobs, m.maxJobs ?? 1);
        assert.equal(got.speedFactor, m.speed ?? 1);
        assert.deepEqual(got.supportedFeatures, [...m.supported].sort());
        assert.deepEqual(got.mandatoryFeatures, [...m.mandatory].sort());
        assert.equal(got.publicHostKey, m.hostKey);
      });
    }),
    { numRuns: RUNS },
  );
});

const FILES = ["/etc/nix/machines", "/etc/nix/m1", "/etc/nix/m2", "/etc/nix/m3"];

Deno.test("resolveBuilders() ends on any @file graph: cycles are reported, not followed", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.array(
          fc.oneof(
            fc.constantFrom(...FILES, "/etc/nix/missing").map((f) => `@${f}`),
            fc.constantFrom("b x86_64-linux", "b2 - - 2 1", "bad - - x"),
          ),
          { maxLength: 5 },
        ),
        { minLength: FILES.length, maxLength: FILES.length },
      ),
      fc.constantFrom(...VERSIONS),
      async (contents, version) => {
        const files = Object.fromEntries(FILES.map((f, i) => [f, contents[i]!.join("\n")]));
        const resolved = await resolveBuilders(
          "@/etc/nix/machines",
          (p) => Promise.resolve(files[p] ?? null),
          { version },
        );
        for (const file of resolved.files) {
          if (file.status === "cycle") assert.match(file.reason ?? "", /includes itself|nested/);
        }
        assert.ok(resolved.files.length <= 5 ** 5, `${resolved.files.length} files met`);
      },
    ),
    { numRuns: RUNS },
  );
});
