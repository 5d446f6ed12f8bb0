import assert from "node:assert/strict";
import fc from "./_fast_check.ts";
import {
  buildLogFiles,
  isStorePath,
  NIX_BASE32,
  parseStorePath,
  StorePathError,
  storePathProblem,
} from "../lib/store_path.ts";

const DRV = "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv";

Deno.test("parseStorePath() splits a real Nix 2.8 drv path into hash, name and kind", () => {
  const drv = parseStorePath(DRV);
  assert.deepEqual(drv, {
    path: DRV,
    hash: "f6qc9gny4w6ajssphr39im341ph0klsn",
    name: "fail.drv",
    baseName: "f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv",
    isDerivation: true,
  });
  assert.equal(
    parseStorePath("/nix/store/3q3hxld9r4i7x4xwp5m8hn7kbln76c2r-test").isDerivation,
    false,
  );
});

Deno.test("parseStorePath() accepts the output suffixes newer Nix prints and a trailing slash", () => {
  assert.equal(parseStorePath(`${DRV}^*`).path, DRV);
  assert.equal(parseStorePath(`${DRV}^out,dev`).path, DRV);
  assert.equal(parseStorePath(`${DRV}!out`).path, DRV);
  assert.equal(
    parseStorePath("/nix/store/3q3hxld9r4i7x4xwp5m8hn7kbln76c2r-test/").path,
    "/nix/store/3q3hxld9r4i7x4xwp5m8hn7kbln76c2r-test",
  );
});

Deno.test("storePathProblem() names the reason for each kind of bad path", () => {
  const cases: [string, RegExp][] = [
    ["", /empty/],
    ["result", /not an absolute path.*readlink -f result/],
    ["/tmp/x", /not in \/nix\/store/],
    ["/nix/store/abc-foo", /too short/],
    ["/nix/store/f6qc9gny4w6ajssphr39im341ph0klse-fail.drv", /'e', which is not a Nix base-32/],
    ["/nix/store/F6qc9gny4w6ajssphr39im341ph0klsn-fail.drv", /'F'/],
    [
      "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsnn-fail.drv",
      /exactly 32 characters followed by '-'/,
    ],
    ["/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fa'il.drv", /the name contains '''/],
    ["/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-$(id)", /the name contains '\$'/],
    ["/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-..", /must not be '\.' or '\.\.'/],
    ["/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv/bin/sh", /inside the store path/],
    ["/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail\n.drv", /control characters/],
    ["/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail .drv", /whitespace/],
    [`/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-${"a".repeat(212)}`, /212 characters long/],
  ];
  for (const [text, reason] of cases) {
    assert.match(storePathProblem(text) ?? "(valid)", reason, `for ${JSON.stringify(text)}`);
  }
});

Deno.test("parseStorePath() refuses shell metacharacters and options with a StorePathError naming the text", () => {
  for (
    const text of [
      "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-x;rm",
      "-oProxyCommand=touch",
      "$(touch x)",
      "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-`id`",
    ]
  ) {
    assert.throws(
      () => parseStorePath(text),
      (e: unknown) =>
        e instanceof StorePathError && e.text === text && /^Not a store path '/.test(e.message),
    );
  }
  assert.throws(() => parseStorePath("-oProxyCommand=touch /tmp/x"), {
    message: "Not a store path '-oProxyCommand=touch /tmp/x': it contains whitespace",
  });
});

Deno.test("buildLogFiles() places logs like Nix: drvs/<2 chars>/<rest>[.bz2] under the log dir", () => {
  const files = buildLogFiles(parseStorePath(DRV), "/tmp/store/nix/var/log/nix/");
  assert.equal(
    files.plain,
    "/tmp/store/nix/var/log/nix/drvs/f6/qc9gny4w6ajssphr39im341ph0klsn-fail.drv",
  );
  assert.equal(files.bz2, `${files.plain}.bz2`);
});

Deno.test("storePathProblem() accepts every generated valid path and never throws on any string", () => {
  const base32 = fc.constantFrom(...NIX_BASE32.split(""));
  const nameChar = fc.constantFrom(
    ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-._?=".split(""),
  );
  fc.assert(
    fc.property(
      fc.array(base32, { minLength: 32, maxLength: 32 }),
      fc.array(nameChar, { minLength: 1, maxLength: 211 }),
      (hash, name) => {
        const n = name.join("");
        fc.pre(n !== "." && n !== ".." && n.split("-")[0] !== "." && n.split("-")[0] !== "..");
        const path = `/nix/store/${hash.join("")}-${n}`;
        assert.equal(storePathProblem(path), null);
        assert.equal(parseStorePath(path).name, n);
      },
    ),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 300 }), (text) => {
      const problem = storePathProblem(`/nix/store/${text}`);
      assert.equal(isStorePath(`/nix/store/${text}`), problem === null);
    }),
    { numRuns: 10_000 },
  );
});
