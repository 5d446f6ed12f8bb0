/**
 * Nix store paths: validating what a user typed or pasted (refused with the reason before anything
 * runs), and where Nix keeps a derivation's build log.
 *
 * The rules are Nix's own (`src/libstore/path.cc`): `/nix/store/`, a 32-character hash in Nix's
 * base-32 alphabet (`0123456789abcdfghijklmnpqrsvwxyz`, no `e o t u`), `-`, and a name of at most
 * 211 characters from `A-Z a-z 0-9 + - . _ ? =` that is not `.` or `..`.
 *
 * @module
 */

import { quoteForMessage, UsageError } from "./errors.ts";

/**
 * The store directory every path must live in.
 *
 * @example
 * ```ts
 * import { STORE_DIR, storePathProblem } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(storePathProblem("/tmp/f6qc9gny4w6ajssphr39im341ph0klsn-fail"), `it is not in ${STORE_DIR}`);
 * ```
 */
export const STORE_DIR = "/nix/store";

/**
 * Nix's base-32 alphabet (the digits and lower-case letters without `e`, `o`, `t`, `u`).
 *
 * @example
 * ```ts
 * import { NIX_BASE32 } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(NIX_BASE32.length, 32);
 * assert.equal([..."eotu"].some((c) => NIX_BASE32.includes(c)), false);
 * ```
 */
export const NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz";

/**
 * Length of the hash part of a store path.
 *
 * @example
 * ```ts
 * import { HASH_LENGTH, parseStorePath } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail").hash.length, HASH_LENGTH);
 * ```
 */
export const HASH_LENGTH = 32;

/**
 * Longest name Nix accepts.
 *
 * @example
 * ```ts
 * import { isStorePath, MAX_NAME_LENGTH } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * const prefix = "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-";
 * assert.equal(isStorePath(prefix + "a".repeat(MAX_NAME_LENGTH)), true);
 * assert.equal(isStorePath(prefix + "a".repeat(MAX_NAME_LENGTH + 1)), false);
 * ```
 */
export const MAX_NAME_LENGTH = 211;

/**
 * Where Nix keeps build logs when neither `NIX_LOG_DIR` nor a store setting says otherwise.
 *
 * @example
 * ```ts
 * import { buildLogFiles, DEFAULT_LOG_DIR, parseStorePath } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * const files = buildLogFiles(parseStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv"));
 * assert.equal(files.plain.startsWith(`${DEFAULT_LOG_DIR}/drvs/`), true);
 * ```
 */
export const DEFAULT_LOG_DIR = "/nix/var/log/nix";

const NAME_CHARS = /^[A-Za-z0-9+\-._?=]+$/;
const BASE32_CHARS = /^[0123456789abcdfghijklmnpqrsvwxyz]+$/;

/** A validated store path. */
export interface StorePath {
  /** The full path, e.g. `/nix/store/f6qc…-fail.drv`. */
  path: string;
  /** The 32-character hash part. */
  hash: string;
  /** The name after the hash and `-`. */
  name: string;
  /** `<hash>-<name>`. */
  baseName: string;
  /** Whether the name ends in `.drv`. */
  isDerivation: boolean;
}

/**
 * Why a text is not a valid store path, or `null` when it is one.
 *
 * @example
 * ```ts
 * import { storePathProblem } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(storePathProblem("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv"), null);
 * assert.equal(
 *   storePathProblem("/nix/store/f6qc9gny4w6ajssphr39im341ph0klse-fail.drv"),
 *   "the hash contains 'e', which is not a Nix base-32 character (0-9 a-z without e o t u)",
 * );
 * ```
 */
export function storePathProblem(text: string): string | null {
  if (text === "") return "it is empty";
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(text)) return "it contains control characters";
  if (/\s/.test(text)) return "it contains whitespace";
  if (!text.startsWith(`${STORE_DIR}/`)) {
    if (text.startsWith("/")) return `it is not in ${STORE_DIR}`;
    return `it is not an absolute path in ${STORE_DIR} (resolve links first, e.g. readlink -f result)`;
  }
  const rest = text.slice(STORE_DIR.length + 1);
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    return `it is a path inside the store path ${STORE_DIR}/${rest.slice(0, slash)}; pass that`;
  }
  if (rest.length < HASH_LENGTH + 2) {
    return `'${rest}' is too short: a store path is a ${HASH_LENGTH}-character hash, '-' and a name`;
  }
  const hash = rest.slice(0, HASH_LENGTH);
  if (!BASE32_CHARS.test(hash)) {
    const bad = [...hash].find((c) => !NIX_BASE32.includes(c)) ?? "?";
    return `the hash contains ${
      quoteForMessage(bad)
    }, which is not a Nix base-32 character (0-9 a-z without e o t u)`;
  }
  if (rest[HASH_LENGTH] !== "-") {
    return `the hash must be exactly ${HASH_LENGTH} characters followed by '-'`;
  }
  const name = rest.slice(HASH_LENGTH + 1);
  if (name.length > MAX_NAME_LENGTH) {
    return `the name is ${name.length} characters long; Nix allows at most ${MAX_NAME_LENGTH}`;
  }
  if (!NAME_CHARS.test(name)) {
    const bad = [...name].find((c) => !/[A-Za-z0-9+\-._?=]/.test(c)) ?? "?";
    return `the name contains ${quoteForMessage(bad)} (allowed: A-Z a-z 0-9 + - . _ ? =)`;
  }
  const first = name.split("-")[0];
  if (name === "." || name === ".." || first === "." || first === "..") {
    return "the name must not be '.' or '..' (nor start with '.-' or '..-')";
  }
  return null;
}

/**
 * The error for a text that is not a store path: a usage error, so the run ends UNKNOWN (3).
 *
 * @example
 * ```ts
 * import { parseStorePath, StorePathError } from "./store_path.ts";
 * import { UsageError } from "./errors.ts";
 * import assert from "node:assert/strict";
 *
 * const error = new StorePathError("result", "it is not an absolute path");
 * assert.equal(error.message, "Not a store path 'result': it is not an absolute path");
 * assert.ok(error instanceof UsageError);
 * assert.throws(
 *   () => parseStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn"),
 *   (e) => e instanceof StorePathError && /too short/.test(e.reason),
 * );
 * ```
 */
export class StorePathError extends UsageError {
  /** The rejected text. */
  readonly text: string;
  /** Why it was rejected. */
  readonly reason: string;

  /** Builds the error; the message reads `Not a store path 'TEXT': REASON`. */
  constructor(text: string, reason: string) {
    super(`Not a store path ${quoteForMessage(text)}: ${reason}`);
    this.name = "StorePathError";
    this.text = text;
    this.reason = reason;
  }
}

/**
 * Parses and validates a store path. A trailing `/` is dropped, and a derivation output suffix
 * (`^out`, `^*`, `!out`) as newer Nix prints them is stripped. Throws {@link StorePathError}.
 *
 * @example
 * ```ts
 * import { parseStorePath } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * const drv = parseStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv^*");
 * assert.equal(drv.path, "/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv");
 * assert.equal(drv.isDerivation, true);
 * assert.throws(() => parseStorePath("/nix/store/x;rm -rf /"), /Not a store path/);
 * ```
 */
export function parseStorePath(text: string): StorePath {
  let path = text;
  const suffix = /^(\/nix\/store\/[^/^!]+\.drv)[\^!][A-Za-z0-9*,+\-._?=]+$/.exec(path);
  if (suffix) path = suffix[1]!;
  if (path.length > STORE_DIR.length + 1 && path.endsWith("/") && !path.endsWith("//")) {
    path = path.slice(0, -1);
  }
  const problem = storePathProblem(path);
  if (problem !== null) throw new StorePathError(text, problem);
  const baseName = path.slice(STORE_DIR.length + 1);
  const name = baseName.slice(HASH_LENGTH + 1);
  return {
    path,
    hash: baseName.slice(0, HASH_LENGTH),
    name,
    baseName,
    isDerivation: name.endsWith(".drv"),
  };
}

/**
 * Whether a text is a valid store path.
 *
 * @example
 * ```ts
 * import { isStorePath } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail"), true);
 * assert.equal(isStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn"), false);
 * ```
 */
export function isStorePath(text: string): boolean {
  return storePathProblem(text) === null;
}

/** Where a derivation's build log lives under a log directory. */
export interface BuildLogFiles {
  /** The uncompressed log (`compress-build-log = false`). */
  plain: string;
  /** The bzip2-compressed log (the default). */
  bz2: string;
}

/**
 * The two files a derivation's log can be in: `<logDir>/drvs/<first 2 chars>/<rest>[.bz2]`.
 *
 * @example
 * ```ts
 * import { buildLogFiles, parseStorePath } from "./store_path.ts";
 * import assert from "node:assert/strict";
 *
 * const files = buildLogFiles(parseStorePath("/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv"));
 * assert.equal(files.bz2, "/nix/var/log/nix/drvs/f6/qc9gny4w6ajssphr39im341ph0klsn-fail.drv.bz2");
 * ```
 */
export function buildLogFiles(drv: StorePath, logDir: string = DEFAULT_LOG_DIR): BuildLogFiles {
  const dir = logDir.length > 1 && logDir.endsWith("/") ? logDir.slice(0, -1) : logDir;
  const plain = `${dir}/drvs/${drv.baseName.slice(0, 2)}/${drv.baseName.slice(2)}`;
  return { plain, bz2: `${plain}.bz2` };
}
