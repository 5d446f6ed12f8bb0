/**
 * POSIX shell quoting for arguments that cross a remote shell (ssh joins its arguments into one string).
 *
 * @module
 */

const SAFE = /^[A-Za-z0-9_\/.,:=@%+^-]+$/;

/**
 * Quotes one argument so a POSIX shell reads it back byte for byte.
 *
 * @example
 * ```ts
 * import { shellQuote } from "./shell_quote.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(shellQuote("/nix/store"), "/nix/store");
 * assert.equal(shellQuote("it's"), "'it'\\''s'");
 * assert.equal(shellQuote(""), "''");
 * ```
 */
export function shellQuote(arg: string): string {
  if (arg !== "" && SAFE.test(arg)) return arg;
  return `'${arg.replaceAll("'", "'\\''")}'`;
}

/**
 * Quotes every argument and joins them with spaces: one command line for `sh -c`.
 *
 * @example
 * ```ts
 * import { shellJoin } from "./shell_quote.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(shellJoin(["nix-store", "-l", "/nix/store/x y"]), "nix-store -l '/nix/store/x y'");
 * ```
 */
export function shellJoin(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}
