/**
 * Property tests of the nix.conf reader (`lib/nix_conf.ts`) and editor (`lib/nix_conf_edit.ts`):
 * any text gives lines or Nix's own error at a line that exists, never an exception; printed
 * settings read back as written; include graphs of any shape (cycles, self-includes, deep chains,
 * missing files) end with a result.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { loadNixConf, parseNixConf } from "../../lib/nix_conf.ts";
import { setNixConfSettings } from "../../lib/nix_conf_edit.ts";
import { lineCount, linesOf, parsedOrTypedError, RUNS } from "./_fuzz.ts";

const FRAGMENTS = [
  "max-jobs",
  "cores",
  "builders",
  "extra-",
  "system-features",
  "extra-platforms",
  "include",
  "!include",
  " = ",
  "=",
  " ",
  "\t",
  "#",
  "0",
  "auto",
  "@/etc/nix/machines",
  "nix.custom.conf",
  "/etc/nix/",
  "true",
  "kvm",
  "big-parallel",
];

const VERSIONS = ["2.3.0", "2.8.0", "2.24.0", "nix (Lix, like Nix) 2.91.1", undefined];

Deno.test("parseNixConf() never throws, and reports Nix's error at a line that exists", () => {
  fc.assert(
    fc.property(linesOf(FRAGMENTS), fc.constantFrom(...VERSIONS), (text, version) => {
      const parsed = parseNixConf(text, {
        path: "/etc/nix/nix.conf",
        ...(version ? { version } : {}),
      });
      const lines = lineCount(text);
      let previous = 0;
      for (const line of parsed.lines) {
        assert.ok(line.line > previous && line.line <= lines, `line ${line.line} in order`);
        previous = line.line;
        if (line.kind === "setting") {
          assert.ok(!/[ \t\n\r#]/.test(line.name) && line.name !== "", `name '${line.name}'`);
          assert.ok(!/[\n\r#]/.test(line.value), `value '${line.value}' has no newline or '#'`);
        }
      }
      if (parsed.error) {
        assert.ok(parsed.error.line > previous && parsed.error.line <= lines);
        assert.equal(parsed.error.file, "/etc/nix/nix.conf");
        assert.match(parsed.error.nixMessage, /configuration line .* in '\/etc\/nix\/nix\.conf'$/s);
      }
    }),
    { numRuns: RUNS },
  );
});

const settingName = fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/).filter((n) =>
  n !== "include" && !n.startsWith("extra-")
);
const token = fc.stringMatching(/^[A-Za-z0-9@\/.:,_=+-]{1,12}$/);
const blank = fc.constantFrom(" ", "  ", "\t", " \t ");

Deno.test("parseNixConf() reads back every printed setting, whatever the spacing and comments", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          name: settingName,
          value: fc.array(token, { maxLength: 4 }),
          before: fc.constantFrom("", " ", "\t"),
          around: blank,
          comment: fc.constantFrom("", " # a comment", "# x = y", " #"),
        }),
        { maxLength: 15 },
      ),
      (settings) => {
        const text =
          settings.map((s) =>
            `${s.before}${s.name}${s.around}=${s.around}${s.value.join(s.around)}${s.comment}`
          ).join("\n") + "\n";
        const parsed = parseNixConf(text);
        assert.equal(parsed.error, undefined);
        assert.deepEqual(
          parsed.lines.map((l) => l.kind === "setting" ? [l.name, l.value] : []),
          settings.map((s) => [s.name, s.value.join(" ")]),
        );
      },
    ),
    { numRuns: RUNS },
  );
});

const FILES = ["/etc/nix/nix.conf", "/etc/nix/a.conf", "/etc/nix/b.conf", "/etc/nix/sub/c.conf"];
const includeLine = fc.oneof(
  fc.constantFrom(...FILES).map((f) => `include ${f}`),
  fc.constantFrom(...FILES).map((f) => `!include ${f}`),
  fc.constantFrom("a.conf", "./b.conf", "sub/c.conf", "../nix/nix.conf", "missing.conf").map(
    (f) => `include ${f}`,
  ),
  fc.constantFrom("max-jobs = 0", "extra-system-features = kvm", "cores = 2", "bad line", ""),
);

Deno.test("loadNixConf() ends on any include graph: cycles and deep chains are errors, not hangs", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(includeLine, { maxLength: 5 }), { minLength: FILES.length, maxLength: 4 }),
      fc.integer({ min: 1, max: 40 }),
      async (contents, maxDepth) => {
        const files: Record<string, string> = {};
        FILES.forEach((f, i) => {
          if (contents[i] !== undefined) files[f] = contents[i]!.join("\n");
        });
        let reads = 0;
        const conf = await loadNixConf({
          readFile: (p) => {
            reads++;
            return Promise.resolve(files[p] ?? null);
          },
        }, { env: { NIX_USER_CONF_FILES: "" }, maxDepth });
        assert.ok(reads <= 1 + 5 ** Math.min(maxDepth, 6) + maxDepth * 5, `${reads} reads`);
        if (conf.error?.nixMessage.includes("includes itself")) {
          const chain = /\((.*)\)/.exec(conf.error.nixMessage)![1]!.split(" -> ");
          assert.ok(chain.indexOf(chain.at(-1)!) < chain.length - 1, "the cycle is named");
        }
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("setNixConfSettings() fails only with a ParseError at a line, and its result reads back", () => {
  fc.assert(
    fc.property(
      linesOf(FRAGMENTS),
      fc.constantFrom("1", "2", "auto"),
      fc.constantFrom("1", "4"),
      (text, maxJobs, cores) => {
        const edit = parsedOrTypedError(
          () => setNixConfSettings(text, { "max-jobs": maxJobs, cores }, { marker: "m" }),
          { input: "nix.conf", lines: lineCount(text) },
        );
        if (edit === undefined) return;
        const again = parseNixConf(edit.text);
        assert.equal(again.error, undefined);
        const last = (name: string) =>
          again.lines.flatMap((l) =>
            l.kind === "setting" && (l.name === name || l.name === `build-${name}`) ? [l.value] : []
          ).at(-1);
        if (!again.lines.some((l) => l.kind === "include")) {
          assert.equal(last("max-jobs"), maxJobs);
          assert.equal(last("cores"), cores);
        }
      },
    ),
    { numRuns: RUNS },
  );
});
