/**
 * Property tests of what crosses into ssh and the remote shell: `parseSshHost` (`lib/host.ts`)
 * accepts a host or refuses it with a `UsageError` naming it, and nothing it accepts can reach ssh
 * as an option or a shell as syntax; `shellQuote`/`shellJoin` (`lib/shell_quote.ts`) read back byte
 * for byte through a real `sh`, also wrapped in the ssh target's remote watchdog.
 */

import fc from "../_fast_check.ts";
import assert from "node:assert/strict";
import { UsageError } from "../../lib/errors.ts";
import { parseSshHost } from "../../lib/host.ts";
import { shellJoin, shellQuote } from "../../lib/shell_quote.ts";
import { NASTY, parsedOrTypedError, RUNS, textOf } from "./_fuzz.ts";

const HOST_FRAGMENTS = [
  "ssh://",
  "ssh-ng://",
  "http://",
  "root@",
  "@",
  "builder",
  "nixos.example.org",
  ":22",
  ":",
  "[::1]",
  "[",
  "]",
  "%eth0",
  "?remote-program=/run/current-system/sw/bin/nix-daemon",
  "?",
  "&",
  "=",
  "%2F",
  "%",
  "%E0%A4%A",
  "-oProxyCommand=touch$IFS/tmp/x",
  "-",
  ";touch x",
  "$(touch x)",
  "`touch x`",
  "|",
  "&&",
  ">",
  "*",
  "~",
  "/",
];

Deno.test("parseSshHost() accepts a host or refuses it with a UsageError, and accepts nothing unsafe", () => {
  fc.assert(
    fc.property(textOf(HOST_FRAGMENTS, { maxPieces: 6 }), (spec) => {
      const host = parsedOrTypedError(() => parseSshHost(spec), { input: spec, type: UsageError });
      if (host === undefined) return;
      // What reaches ssh as the destination: never an option, never shell syntax or whitespace.
      assert.match(host.destination, /^(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9_:.%-]+$/);
      assert.ok(!host.destination.startsWith("-") && !host.hostname.startsWith("-"));
      assert.ok(host.port === undefined || (host.port >= 1 && host.port <= 65535));
    }),
    { numRuns: RUNS },
  );
});

Deno.test("parseSshHost() reads back every printed host spec", () => {
  const user = fc.option(fc.stringMatching(/^[a-z_][a-z0-9._-]{0,10}$/), { nil: undefined });
  const name = fc.oneof(
    fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){0,2}$/),
    fc.ipV4(),
  );
  fc.assert(
    fc.property(
      fc.constantFrom("", "ssh://", "ssh-ng://"),
      user,
      fc.oneof(name.map((n) => ({ n, v6: false })), fc.ipV6().map((n) => ({ n, v6: true }))),
      fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
      (scheme, u, { n, v6 }, port) => {
        const hostPart = v6 ? `[${n}]` : n;
        const spec = `${scheme}${u !== undefined ? `${u}@` : ""}${hostPart}${
          port !== undefined ? `:${port}` : ""
        }`;
        const host = parseSshHost(spec);
        assert.equal(host.hostname, n);
        assert.equal(host.user, u);
        assert.equal(host.port, port);
        assert.equal(host.destination, u !== undefined ? `${u}@${n}` : n);
      },
    ),
    { numRuns: RUNS },
  );
});

/** A long-lived `sh` that evaluates one command per request and answers with its output. */
class Shell {
  #child = new Deno.Command("sh", { stdin: "piped", stdout: "piped", stderr: "null" }).spawn();
  #writer = this.#child.stdin.getWriter();
  #reader = this.#child.stdout.getReader();
  #buffer = new Uint8Array(0);
  #end = new TextEncoder().encode(`@@END-${crypto.randomUUID()}@@`);

  /** Runs `command` (one shell command line) and returns its standard output. */
  async eval(command: string): Promise<string> {
    const end = new TextDecoder().decode(this.#end);
    await this.#writer.write(new TextEncoder().encode(`${command}\nprintf '${end}'\n`));
    while (true) {
      const at = indexOf(this.#buffer, this.#end);
      if (at >= 0) {
        const out = this.#buffer.subarray(0, at);
        this.#buffer = this.#buffer.slice(at + this.#end.length);
        return new TextDecoder("utf-8", { ignoreBOM: true }).decode(out);
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`sh ended while evaluating ${JSON.stringify(command)}`);
      const joined = new Uint8Array(this.#buffer.length + value.length);
      joined.set(this.#buffer);
      joined.set(value, this.#buffer.length);
      this.#buffer = joined;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#writer.close();
    this.#reader.releaseLock();
    await this.#child.stdout.cancel();
    await this.#child.status;
  }
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// argv cannot hold NUL, and text that is not well-formed UTF-16 has no bytes to send.
const arg = fc.oneof(
  fc.string({ unit: "binary", maxLength: 12 }),
  textOf(NASTY.filter((n) => n !== "\uD800"), { maxPieces: 6 }),
).filter((s) => !s.includes("\0") && s.isWellFormed());

Deno.test("shellJoin() reads back byte for byte through a real sh, for any arguments", async () => {
  await using sh = new Shell();
  await fc.assert(
    fc.asyncProperty(fc.array(arg, { minLength: 1, maxLength: 5 }), async (args) => {
      const out = await sh.eval(`printf '%s\\0' ${shellJoin(args)}`);
      assert.deepEqual(out.split("\0").slice(0, -1), args);
    }),
    { numRuns: RUNS },
  );
  assert.equal(shellQuote(""), "''");
});

// The ssh target's shape: the remote login shell runs `/bin/sh -c SCRIPT sh ARGS...`, quoted by
// shellJoin. A fork per case, so fewer cases; the quoting itself is covered above, and the real
// ssh path in tests/injection_test.ts.
const NESTED_RUNS = 1_000;

Deno.test("shellJoin() of a 'sh -c SCRIPT sh ARGS' command delivers any arguments intact", async () => {
  await using sh = new Shell();
  await fc.assert(
    fc.asyncProperty(fc.array(arg, { maxLength: 4 }), async (args) => {
      const line = shellJoin(["/bin/sh", "-c", 'exec printf "%s\\0" "$@"', "sh", ...args]);
      const out = await sh.eval(line);
      assert.deepEqual(out.split("\0").slice(0, -1), args.length > 0 ? args : [""]);
    }),
    { numRuns: NESTED_RUNS },
  );
});
