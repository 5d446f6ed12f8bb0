/**
 * The `builders` setting and machines files, read with Nix's own rules for the Nix version in use,
 * and the rules Nix uses to pick a machine for a derivation.
 *
 * Rules, from the Nix source (`src/libstore/machines.cc`, `src/build-remote/build-remote.cc`):
 *
 * - Splitting. Before Nix 2.29 (and in Lix) the text is split on `\n` and `;` first, then each
 *   entry is cut at its first `#`: a `#` comment ends at the next `;`. Those versions mean to trim
 *   each entry but drop the result, so an entry of only blanks (an indented comment line, `a; ;b`)
 *   is rejected ("store URL was not found"). From Nix 2.29 each line is cut at its first `#`, then
 *   split on `;`, and each entry trimmed. Empty entries are skipped.
 * - An entry starting with `@` names a file, read recursively; a missing file is silently skipped
 *   (Nix logs it at debug level), any other read error fails the build.
 * - Columns are whitespace-separated; `-`, missing or empty means unset. Column #0 store URI
 *   (required; a bare host becomes legacy `ssh://`), #1 systems, #2 ssh identity file, #3 max jobs
 *   (unsigned int, default 1), #4 speed factor (unsigned int before 2.20, float since; `0` means 1),
 *   #5 supported features, #6 mandatory features, #7 base64 public host key. Further columns are
 *   ignored.
 * - A machine can build a derivation when it lists the derivation's system (or the system is
 *   `builtin`), has every required feature among its supported or mandatory features, and every
 *   one of its mandatory features is required by the derivation. Among machines with a free slot
 *   the lowest `load / speedFactor` wins, then the higher speed factor, then the lower load.
 *
 * @example Read the seed post's machines line the way Nix does
 * ```ts
 * import { parseMachines } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const { machines } = parseMachines("nixos x86_64-linux / - 8 1 kvm,big-parallel\n", {
 *   version: "2.24.0",
 *   input: "/etc/nix/machines",
 * });
 * const m = machines[0]!;
 * assert.equal(m.storeUri, "ssh://nixos");
 * assert.equal(m.sshKey, "/"); // column #2 is the identity file
 * assert.equal(m.maxJobs, 1); // '-' leaves max jobs unset
 * assert.equal(m.speedFactor, 8);
 * assert.deepEqual(m.supportedFeatures, ["1"]);
 * assert.deepEqual(m.mandatoryFeatures, ["big-parallel", "kvm"]);
 * ```
 *
 * @module
 */

import { quoteForMessage } from "./errors.ts";
import { TargetError } from "./target.ts";

/** A Nix version the rules depend on: `"2.8.0"`, `nix --version` output, or `parseNixVersion()`'s result. */
export type NixVersionLike =
  | string
  | { flavour?: "nix" | "lix" | "determinate"; version: readonly number[] };

/** The version-dependent rules {@link parseMachines} applies. */
export interface MachinesRules {
  /** Human-readable version the rules are for, e.g. `Nix 2.8.0`. */
  label: string;
  /** `nix`, `lix` or `determinate`. */
  flavour: "nix" | "lix" | "determinate";
  /** `[major, minor, patch]`. */
  version: [number, number, number];
  /** Nix ≥ 2.29: cut `#` comments per line before splitting on `;`. */
  commentsBeforeSemicolons: boolean;
  /** Nix ≥ 2.20 and Lix: the speed factor is a float (an unsigned int before). */
  floatSpeedFactor: boolean;
  /** Nix ≥ 2.31: `host:port` in an ssh store URI is a port; `"unknown"` for Lix. */
  hostPort: boolean | "unknown";
  /** Nix < 2.4: the old parser (`std::stoull`, no base64 check, other URI rule). */
  legacy: boolean;
}

/**
 * The newest rules known here, used when no version is given.
 *
 * @example
 * ```ts
 * import { LATEST_RULES_VERSION, machinesRules } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(machinesRules().label, `Nix ${LATEST_RULES_VERSION}`);
 * ```
 */
export const LATEST_RULES_VERSION = "2.31.0";

/**
 * The rules for a Nix version (default: the newest known).
 *
 * @example
 * ```ts
 * import { machinesRules } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(machinesRules("2.8.0").floatSpeedFactor, false);
 * assert.equal(machinesRules("2.29.1").commentsBeforeSemicolons, true);
 * assert.equal(machinesRules("nix (Lix, like Nix) 2.91.1").commentsBeforeSemicolons, false);
 * ```
 */
export function machinesRules(version?: NixVersionLike): MachinesRules {
  let flavour: "nix" | "lix" | "determinate" = "nix";
  let numbers: number[];
  if (version === undefined) {
    numbers = LATEST_RULES_VERSION.split(".").map(Number);
  } else if (typeof version === "string") {
    if (/Lix/.test(version)) flavour = "lix";
    else if (/Determinate/.test(version)) flavour = "determinate";
    const match = /\)\s+(\d+)\.(\d+)(?:\.(\d+))?/.exec(version) ??
      /(\d+)\.(\d+)(?:\.(\d+))?/.exec(version);
    if (!match) throw new TypeError(`No Nix version in ${quoteForMessage(version)}`);
    numbers = [Number(match[1]), Number(match[2]), Number(match[3] ?? 0)];
  } else {
    flavour = version.flavour ?? "nix";
    numbers = [...version.version];
  }
  const v: [number, number, number] = [numbers[0] ?? 0, numbers[1] ?? 0, numbers[2] ?? 0];
  const atLeast = (major: number, minor: number) =>
    v[0] > major || (v[0] === major && v[1] >= minor);
  const lix = flavour === "lix";
  const name = flavour === "lix" ? "Lix" : flavour === "determinate" ? "Determinate Nix" : "Nix";
  return {
    label: `${name} ${v.join(".")}`,
    flavour,
    version: v,
    commentsBeforeSemicolons: !lix && atLeast(2, 29),
    floatSpeedFactor: lix || atLeast(2, 20),
    hostPort: lix ? "unknown" : atLeast(2, 31),
    legacy: !lix && !atLeast(2, 4),
  };
}

/** One machine, as Nix reads it. */
export interface Machine {
  /** Where the entry is: a file path, or `builders` for the setting itself. */
  input: string;
  /** 1-based line in `input` where the entry starts. */
  line: number;
  /** The entry as Nix quotes it in errors (comment cut, trimmed the way the version does). */
  text: string;
  /** The whitespace-separated columns. */
  columns: string[];
  /** Column #0 as written. */
  rawUri: string;
  /** The store URI Nix uses (`ssh://` prepended to a bare host). */
  storeUri: string;
  /** The URI scheme: `ssh`, `ssh-ng`, or another store type (`local`, `daemon`, `unix`, `path`...). */
  scheme: string;
  /** For ssh stores: the ssh user, when the URI names one. */
  user?: string;
  /** For ssh stores: the host as written in the URI (without user and port). */
  host?: string;
  /** For ssh stores: a `:port` written in the URI. */
  port?: number;
  /** URI query parameters (`?remote-program=...`). */
  params: Record<string, string>;
  /** Column #1: systems this machine builds for. Empty when unset (Nix uses the local `system`). */
  systems: string[];
  /** Whether column #1 was unset, so the machine builds for the local `system`. */
  systemsDefaulted: boolean;
  /** Column #2: the ssh identity file (`ssh -i`), when set. */
  sshKey?: string;
  /** Column #3: how many builds at once (default 1). */
  maxJobs: number;
  /** Whether column #3 was unset. */
  maxJobsDefaulted: boolean;
  /** Column #4: the speed factor (default 1; `0` becomes 1). */
  speedFactor: number;
  /** Whether column #4 was unset. */
  speedFactorDefaulted: boolean;
  /** Column #5: supported features, sorted and unique (Nix keeps a set). */
  supportedFeatures: string[];
  /** Column #6: mandatory features, sorted and unique. */
  mandatoryFeatures: string[];
  /** Column #7: the base64-encoded public host key, when set. */
  publicHostKey?: string;
  /** Columns past #7, which Nix ignores. */
  ignoredColumns: string[];
}

/** An `@file` reference found in a text. */
export interface MachinesFileRef {
  /** Where the reference is. */
  input: string;
  /** 1-based line of the reference. */
  line: number;
  /** The path after `@`, trimmed, as Nix opens it. */
  path: string;
}

/** An entry Nix would reject, with Nix's own error text. */
export interface MachineError {
  /** Where the entry is. */
  input: string;
  /** 1-based line. */
  line: number;
  /** The entry as Nix quotes it. */
  text: string;
  /** The column at fault (0-based, as Nix numbers them), when one is. */
  column?: number;
  /** The error text Nix prints for it (without the `error: ` prefix). */
  nixMessage: string;
  /** What kind of problem it is. */
  kind: "no-uri" | "max-jobs" | "speed-factor" | "negative-speed-factor" | "host-key" | "file";
}

/** One entry of a parsed text, in order. */
export type MachinesEntry =
  | { kind: "machine"; machine: Machine }
  | { kind: "file"; file: MachinesFileRef }
  | { kind: "error"; error: MachineError };

/** What {@link parseMachines} found. */
export interface ParsedMachines {
  /** Every entry in order: machines, `@file` references and rejected entries. */
  entries: MachinesEntry[];
  /** The machines Nix accepts, in order. */
  machines: Machine[];
  /** The `@file` references, in order (not followed: see {@link resolveBuilders}). */
  files: MachinesFileRef[];
  /** Entries Nix would reject. Nix stops at the first: every remote build then fails. */
  errors: MachineError[];
  /** The rules used. */
  rules: MachinesRules;
}

/** Options for {@link parseMachines}. */
export interface ParseMachinesOptions {
  /** The Nix version whose rules apply (default: the newest known). */
  version?: NixVersionLike;
  /** The input's name for positions: a file path, or `builders` (default). */
  input?: string;
}

const WHITESPACE = /[ \t\n\r]+/;

function trimNix(s: string): string {
  return s.replace(/^[ \t\n\r]+/, "").replace(/[ \t\n\r]+$/, "");
}

function lineAt(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/** Splits `text` on any of `separators`, skipping empty pieces, keeping each piece's offset. */
function tokenize(text: string, separators: string, base = 0): { text: string; offset: number }[] {
  const out: { text: string; offset: number }[] = [];
  let start = -1;
  for (let i = 0; i <= text.length; i++) {
    const sep = i === text.length || separators.includes(text[i]!);
    if (sep) {
      if (start >= 0) out.push({ text: text.slice(start, i), offset: base + start });
      start = -1;
    } else if (start < 0) {
      start = i;
    }
  }
  return out;
}

/** The raw entries of a text: each entry's text (as Nix quotes it) and its 1-based line. */
function splitEntries(text: string, rules: MachinesRules): { text: string; line: number }[] {
  const out: { text: string; line: number }[] = [];
  // Offsets only grow: count the newlines since the last one asked for (linear, not quadratic).
  let counted = { offset: 0, line: 1 };
  const lineOf = (offset: number) => {
    if (offset < counted.offset) counted = { offset: 0, line: 1 };
    counted = {
      offset,
      line: counted.line + lineAt(text.slice(counted.offset, offset), offset) - 1,
    };
    return counted.line;
  };
  if (rules.commentsBeforeSemicolons) {
    for (const piece of tokenize(text, "\n")) {
      const hash = piece.text.indexOf("#");
      const code = hash >= 0 ? piece.text.slice(0, hash) : piece.text;
      for (const entry of tokenize(code, ";", piece.offset)) {
        const trimmed = trimNix(entry.text);
        if (trimmed !== "") out.push({ text: trimmed, line: lineOf(entry.offset) });
      }
    }
  } else {
    // Nix < 2.29 and Lix call `trim(line);` and drop the result: entries keep their whitespace,
    // so a whitespace-only entry (an indented comment, "a; ;b") reaches the parser and is rejected.
    for (const piece of tokenize(text, "\n;")) {
      const hash = piece.text.indexOf("#");
      const entry = hash >= 0 ? piece.text.slice(0, hash) : piece.text;
      if (entry !== "") out.push({ text: entry, line: lineOf(piece.offset) });
    }
  }
  return out;
}

const UINT_MAX = 4294967295;

/** Nix's `string2Int<unsigned int>` (boost::lexical_cast): digits with an optional `+`. */
function parseUnsigned(token: string): number | null {
  if (!/^\+?\d+$/.test(token)) return null;
  const n = Number(token.replace(/^\+/, ""));
  return n <= UINT_MAX ? n : null;
}

/** Nix < 2.4's `std::stoull`: leading digits (and sign) count, the rest is ignored. */
function parseStoull(token: string): number | null {
  const match = /^[+-]?\d+/.exec(token);
  if (!match) return null;
  const n = Number(match[0]);
  // stoull wraps negative values around; such a value is "huge", not an error.
  return n < 0 ? Number.MAX_SAFE_INTEGER : n;
}

/** Nix's `string2Float<float>` (boost::lexical_cast). */
function parseFloatNix(token: string): number | null {
  if (/^[+-]?(?:inf|infinity)$/i.test(token)) return token.startsWith("-") ? -Infinity : Infinity;
  if (/^[+-]?nan$/i.test(token)) return NaN;
  if (!/^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(token)) return null;
  return Number(token);
}

/** Nix's base64 decoder (stops at `=`, skips `\n`); `null` with the bad character otherwise. */
function base64DecodeNix(text: string): { ok: true; value: string } | { ok: false; char: string } {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  let bits = 0;
  let d = 0;
  const bytes: number[] = [];
  for (const c of text) {
    if (c === "=") break;
    if (c === "\n") continue;
    const digit = alphabet.indexOf(c);
    if (digit < 0) return { ok: false, char: c };
    bits += 6;
    d = ((d << 6) | digit) & 0xffffff;
    if (bits >= 8) {
      bytes.push((d >> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return { ok: true, value: new TextDecoder().decode(new Uint8Array(bytes)) };
}

/**
 * Decodes a machines-file public host key column the way Nix does.
 *
 * @example
 * ```ts
 * import { decodeHostKey } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(decodeHostKey(btoa("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB")), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB");
 * assert.equal(decodeHostKey("not!base64"), null);
 * ```
 */
export function decodeHostKey(column: string): string | null {
  const decoded = base64DecodeNix(column);
  return decoded.ok ? decoded.value : null;
}

/**
 * Whether a decoded host key reads `<key type> <base64 key>` as a known_hosts entry needs.
 *
 * @example
 * ```ts
 * import { looksLikePublicKey } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(looksLikePublicKey("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB root@builder1"), true);
 * assert.equal(looksLikePublicKey("AAAAC3NzaC1lZDI1NTE5AAAAIB"), false);
 * ```
 */
export function looksLikePublicKey(decoded: string): boolean {
  return /^(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp(?:256|384|521)|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,2}(?:\s.*)?\s*$/s
    .test(decoded);
}

/**
 * Nix's store URI rule: what a column #0 value becomes.
 *
 * @example
 * ```ts
 * import { machinesRules, normalizeStoreUri } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(normalizeStoreUri("builder1"), "ssh://builder1");
 * assert.equal(normalizeStoreUri("ssh-ng://builder1"), "ssh-ng://builder1");
 * assert.equal(normalizeStoreUri("localhost"), "ssh://localhost");
 * assert.equal(normalizeStoreUri("localhost", machinesRules("2.3.16")), "localhost");
 * ```
 */
export function normalizeStoreUri(uri: string, rules: MachinesRules = machinesRules()): string {
  if (rules.legacy) {
    return uri.includes("://") || uri.startsWith("local") || uri.startsWith("remote") ||
        uri.startsWith("auto") || uri.startsWith("/")
      ? uri
      : `ssh://${uri}`;
  }
  return uri.includes("://") || uri.includes("/") || uri === "auto" || uri === "daemon" ||
      uri === "local" || uri.startsWith("auto?") || uri.startsWith("daemon?") ||
      uri.startsWith("local?") || uri.startsWith("?")
    ? uri
    : `ssh://${uri}`;
}

function describeUri(storeUri: string): Pick<Machine, "scheme" | "params"> & {
  user?: string;
  host?: string;
  port?: number;
} {
  const schemeMatch = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(storeUri);
  if (!schemeMatch) {
    const bare = storeUri.split("?")[0] ?? "";
    return { scheme: bare.includes("/") ? "path" : bare || "auto", params: {} };
  }
  const scheme = schemeMatch[1]!;
  let rest = storeUri.slice(schemeMatch[0].length);
  const params: Record<string, string> = {};
  const q = rest.indexOf("?");
  if (q >= 0) {
    for (const pair of rest.slice(q + 1).split("&")) {
      if (pair === "") continue;
      const eq = pair.indexOf("=");
      const key = eq < 0 ? pair : pair.slice(0, eq);
      const value = eq < 0 ? "" : pair.slice(eq + 1);
      try {
        params[decodeURIComponent(key)] = decodeURIComponent(value);
      } catch {
        params[key] = value;
      }
    }
    rest = rest.slice(0, q);
  }
  if (scheme !== "ssh" && scheme !== "ssh-ng") return { scheme, params };
  const out: {
    scheme: string;
    params: Record<string, string>;
    user?: string;
    host?: string;
    port?: number;
  } = {
    scheme,
    params,
  };
  const at = rest.lastIndexOf("@");
  if (at >= 0) {
    out.user = rest.slice(0, at);
    rest = rest.slice(at + 1);
  }
  const v6 = /^\[([^\]]*)\](?::(\d+))?$/.exec(rest);
  if (v6) {
    out.host = v6[1]!;
    if (v6[2] !== undefined) out.port = Number(v6[2]);
  } else {
    const colon = rest.lastIndexOf(":");
    if (colon >= 0 && rest.indexOf(":") === colon && /^\d+$/.test(rest.slice(colon + 1))) {
      out.host = rest.slice(0, colon);
      out.port = Number(rest.slice(colon + 1));
    } else {
      out.host = rest;
    }
  }
  return out;
}

function featureSet(column: string): string[] {
  return [...new Set(tokenize(column, ",").map((p) => p.text))].sort();
}

function parseEntry(
  text: string,
  line: number,
  input: string,
  rules: MachinesRules,
): { machine: Machine } | { error: MachineError } {
  const columns = text.split(WHITESPACE).filter((t) => t !== "");
  const isSet = (i: number) => columns.length > i && columns[i] !== "" && columns[i] !== "-";
  const fail = (kind: MachineError["kind"], nixMessage: string, column?: number) => ({
    error: { input, line, text, nixMessage, kind, ...(column === undefined ? {} : { column }) },
  });
  if (rules.legacy) {
    if (columns.length < 1) return fail("no-uri", `bad machine specification '${text}'`, 0);
  } else if (!isSet(0)) {
    return fail(
      "no-uri",
      `bad machine specification: store URL was not found at the first column of a row: '${text}'`,
      0,
    );
  }
  const convert = (i: number, type: string) =>
    `bad machine specification: failed to convert column #${i} in a row: '${text}' to '${type}'`;
  let maxJobs = 1;
  if (isSet(3)) {
    const n = rules.legacy ? parseStoull(columns[3]!) : parseUnsigned(columns[3]!);
    if (n === null) {
      return fail("max-jobs", rules.legacy ? "stoull" : convert(3, "unsigned int"), 3);
    }
    maxJobs = n;
  }
  let speedFactor = 1;
  if (isSet(4)) {
    const token = columns[4]!;
    const n = rules.legacy
      ? parseStoull(token)
      : rules.floatSpeedFactor
      ? parseFloatNix(token)
      : parseUnsigned(token);
    if (n === null) {
      return fail(
        "speed-factor",
        rules.legacy ? "stoull" : convert(4, rules.floatSpeedFactor ? "float" : "unsigned int"),
        4,
      );
    }
    speedFactor = n;
  }
  let publicHostKey: string | undefined;
  if (isSet(7)) {
    publicHostKey = columns[7]!;
    if (!rules.legacy) {
      const decoded = base64DecodeNix(publicHostKey);
      if (!decoded.ok) {
        // Nix 2.8 prints the bad character through '%c', which shows as ''.
        return fail(
          "host-key",
          `bad machine specification: a column #7 in a row: '${text}' is not valid base64 string: ` +
            `error: invalid character in Base64 string: ''`,
          7,
        );
      }
    }
  }
  if (speedFactor === 0) speedFactor = 1;
  if (speedFactor < 0) return fail("negative-speed-factor", "speed factor must be >= 0", 4);
  const rawUri = columns[0]!;
  const storeUri = normalizeStoreUri(rawUri, rules);
  const uri = describeUri(storeUri);
  const machine: Machine = {
    input,
    line,
    text,
    columns,
    rawUri,
    storeUri,
    scheme: uri.scheme,
    params: uri.params,
    systems: isSet(1) ? [...new Set(tokenize(columns[1]!, ",").map((p) => p.text))] : [],
    systemsDefaulted: !isSet(1),
    maxJobs,
    maxJobsDefaulted: !isSet(3),
    speedFactor,
    speedFactorDefaulted: !isSet(4),
    supportedFeatures: isSet(5) ? featureSet(columns[5]!) : [],
    mandatoryFeatures: isSet(6) ? featureSet(columns[6]!) : [],
    ignoredColumns: columns.slice(8),
  };
  if (uri.user !== undefined) machine.user = uri.user;
  if (uri.host !== undefined) machine.host = uri.host;
  if (uri.port !== undefined) machine.port = uri.port;
  if (isSet(2)) machine.sshKey = columns[2]!;
  if (publicHostKey !== undefined) machine.publicHostKey = publicHostKey;
  return { machine };
}

/**
 * Parses a machines text (a machines file, or the `builders` setting itself) with the rules of a
 * Nix version. `@file` entries are listed, not followed ({@link resolveBuilders} follows them).
 * Entries Nix would reject are returned with Nix's own error text rather than thrown.
 *
 * @example Comments and `;` changed meaning in Nix 2.29
 * ```ts
 * import { parseMachines } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const text = "a x86_64-linux # old builder; b aarch64-linux\n";
 * assert.equal(parseMachines(text, { version: "2.28.0" }).machines.length, 2);
 * assert.equal(parseMachines(text, { version: "2.29.0" }).machines.length, 1);
 * ```
 *
 * @example Nix's own error for a value it rejects
 * ```ts
 * import { parseMachines } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const { errors } = parseMachines("h x86_64-linux - 8 1.5", { version: "2.8.0" });
 * assert.equal(
 *   errors[0]?.nixMessage,
 *   "bad machine specification: failed to convert column #4 in a row: 'h x86_64-linux - 8 1.5' to 'unsigned int'",
 * );
 * assert.equal(parseMachines("h x86_64-linux - 8 1.5", { version: "2.20.0" }).errors.length, 0);
 * ```
 */
export function parseMachines(text: string, options: ParseMachinesOptions = {}): ParsedMachines {
  const rules = machinesRules(options.version);
  const input = options.input ?? "builders";
  const result: ParsedMachines = { entries: [], machines: [], files: [], errors: [], rules };
  for (const entry of splitEntries(text, rules)) {
    if (entry.text.startsWith("@")) {
      const file: MachinesFileRef = { input, line: entry.line, path: trimNix(entry.text.slice(1)) };
      result.files.push(file);
      result.entries.push({ kind: "file", file });
      continue;
    }
    const parsed = parseEntry(entry.text, entry.line, input, rules);
    if ("machine" in parsed) {
      result.machines.push(parsed.machine);
      result.entries.push({ kind: "machine", machine: parsed.machine });
    } else {
      result.errors.push(parsed.error);
      result.entries.push({ kind: "error", error: parsed.error });
    }
  }
  return result;
}

/**
 * Whether a read failure says nothing about the file (snapshot gap, unreachable host, time-out).
 *
 * @example
 * ```ts
 * import { cannotTell } from "./machines.ts";
 * import { TargetError } from "./target.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(cannotTell(new TargetError("b", "/etc/nix/machines", "timed out", "timeout")), true);
 * assert.equal(cannotTell(new TargetError("b", "/etc/nix/machines", "permission denied")), false);
 * assert.equal(cannotTell(new Error("boom")), false);
 * ```
 */
export function cannotTell(error: unknown): boolean {
  return error instanceof TargetError &&
    (error.failure === "not-captured" || error.failure === "unreachable" ||
      error.failure === "timeout" || error.failure === "aborted");
}

/** What happened to one `@file` while resolving. */
export interface ResolvedFile {
  /** The path as written after `@`. */
  path: string;
  /** Where the reference is. */
  from: { input: string; line: number };
  /**
   * `read`, `missing` (Nix skips it silently), `error` (Nix fails), `cycle` (Nix recurses forever),
   * or `unknown` (the reader could not tell: not in a snapshot, host unreachable, time-out).
   */
  status: "read" | "missing" | "error" | "cycle" | "unknown";
  /** Why it could not be read, for `error` and `cycle`. */
  reason?: string;
  /** Machines it contributed (directly). */
  machineCount: number;
}

/** The machines list Nix ends up with, and how it got there. */
export interface ResolvedBuilders {
  /** Every machine Nix would use, in Nix's order (inline entries and files, depth first). */
  machines: Machine[];
  /** Entries Nix would reject (Nix stops at the first). */
  errors: MachineError[];
  /** Every `@file` met, in order. */
  files: ResolvedFile[];
  /** The rules used. */
  rules: MachinesRules;
}

/** Options for {@link resolveBuilders}. */
export interface ResolveBuildersOptions {
  /** The Nix version whose rules apply. */
  version?: NixVersionLike;
  /** Name of the setting's own text in positions (default `builders`). */
  input?: string;
  /** How deep `@file` may nest before it counts as a cycle (default 32). */
  maxDepth?: number;
}

/**
 * Resolves the `builders` setting into machines: inline entries and `@file`s, read recursively
 * through `readFile` (which returns `null` for a missing file and throws for any other failure,
 * like `Target.readFile`). A missing file is recorded, not thrown, as Nix silently skips it.
 *
 * @example
 * ```ts
 * import { resolveBuilders } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const files: Record<string, string> = { "/etc/nix/machines": "b1 x86_64-linux\n@/etc/nix/more\n" };
 * const resolved = await resolveBuilders("@/etc/nix/machines; b0 aarch64-linux", async (p) => files[p] ?? null);
 * assert.deepEqual(resolved.machines.map((m) => m.storeUri), ["ssh://b1", "ssh://b0"]);
 * assert.equal(resolved.files[1]?.status, "missing");
 * ```
 */
export async function resolveBuilders(
  buildersSetting: string,
  readFile: (path: string) => Promise<string | null>,
  options: ResolveBuildersOptions = {},
): Promise<ResolvedBuilders> {
  const rules = machinesRules(options.version);
  const out: ResolvedBuilders = { machines: [], errors: [], files: [], rules };
  const maxDepth = options.maxDepth ?? 32;
  // Files that name the next one twice, 30 deep, mean 2^30 reads: stop at this many in all.
  const maxReads = 1000;
  let reads = 0;
  async function walk(text: string, input: string, stack: string[]): Promise<void> {
    const parsed = parseMachines(text, { version: rules, input });
    for (const entry of parsed.entries) {
      if (entry.kind === "machine") out.machines.push(entry.machine);
      else if (entry.kind === "error") out.errors.push(entry.error);
      else {
        const { path } = entry.file;
        const record: ResolvedFile = {
          path,
          from: { input, line: entry.file.line },
          status: "read",
          machineCount: 0,
        };
        out.files.push(record);
        if (stack.includes(path) || stack.length >= maxDepth) {
          record.status = "cycle";
          record.reason = stack.includes(path)
            ? `'${path}' includes itself (${
              [...stack, path].join(" -> ")
            }): Nix would recurse until it crashes`
            : `more than ${maxDepth} nested @files`;
          continue;
        }
        let content: string | null;
        try {
          content = await readFile(path);
        } catch (error) {
          record.status = cannotTell(error) ? "unknown" : "error";
          record.reason = error instanceof Error ? error.message : String(error);
          continue;
        }
        if (content === null) {
          record.status = "missing";
          continue;
        }
        if (++reads > maxReads) {
          record.status = "cycle";
          record.reason =
            `more than ${maxReads} @files read in all (the same ones again and again)`;
          continue;
        }
        const before = out.machines.length;
        await walk(content, path, [...stack, path]);
        record.machineCount = out.machines.length - before;
      }
    }
  }
  await walk(buildersSetting, options.input ?? "builders", []);
  return out;
}

/** What a derivation needs from a machine. */
export interface BuildNeeds {
  /** The derivation's `system` (`builtin` matches any machine). */
  system: string;
  /** Its `requiredSystemFeatures`. */
  requiredFeatures?: readonly string[];
}

/**
 * Why a machine cannot take a derivation, in Nix's terms; empty when it can.
 *
 * @example
 * ```ts
 * import { parseMachines, whyMachineCannotBuild } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const m = parseMachines("b x86_64-linux - 2 1 big-parallel kvm").machines[0]!;
 * assert.deepEqual(whyMachineCannotBuild(m, { system: "x86_64-linux" }), [
 *   "it only takes derivations that require all of its mandatory features (kvm); this one requires none",
 * ]);
 * ```
 */
export function whyMachineCannotBuild(
  machine: Pick<Machine, "systems" | "supportedFeatures" | "mandatoryFeatures">,
  needs: BuildNeeds,
  options: { localSystem?: string } = {},
): string[] {
  const reasons: string[] = [];
  const systems = machine.systems.length > 0
    ? machine.systems
    : options.localSystem !== undefined
    ? [options.localSystem]
    : [];
  if (needs.system !== "builtin" && !systems.includes(needs.system)) {
    reasons.push(
      `it does not build for ${needs.system} (it builds for ${
        systems.join(", ") || "the local system"
      })`,
    );
  }
  const required = [...new Set(needs.requiredFeatures ?? [])];
  const missing = required.filter((f) =>
    !machine.supportedFeatures.includes(f) && !machine.mandatoryFeatures.includes(f)
  );
  if (missing.length > 0) reasons.push(`it lacks the required features ${missing.join(", ")}`);
  const unmet = machine.mandatoryFeatures.filter((f) => !required.includes(f));
  if (unmet.length > 0) {
    reasons.push(
      `it only takes derivations that require all of its mandatory features (${
        machine.mandatoryFeatures.join(", ")
      }); this one requires ${required.length > 0 ? required.join(", ") : "none"}`,
    );
  }
  return reasons;
}

/**
 * Whether a machine can take a derivation: its system, all required features among supported or
 * mandatory ones, and every mandatory feature required.
 *
 * @example
 * ```ts
 * import { machineCanBuild, parseMachines } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const m = parseMachines("b x86_64-linux,aarch64-linux - 2 1 big-parallel").machines[0]!;
 * assert.equal(machineCanBuild(m, { system: "aarch64-linux", requiredFeatures: ["big-parallel"] }), true);
 * assert.equal(machineCanBuild(m, { system: "x86_64-linux", requiredFeatures: ["kvm"] }), false);
 * ```
 */
export function machineCanBuild(
  machine: Pick<Machine, "systems" | "supportedFeatures" | "mandatoryFeatures">,
  needs: BuildNeeds,
  options: { localSystem?: string } = {},
): boolean {
  return whyMachineCannotBuild(machine, needs, options).length === 0;
}

/** A machine {@link chooseMachine} considered. */
export interface MachineCandidate {
  /** The machine. */
  machine: Machine;
  /** Busy slots (builds running on it). */
  load: number;
  /** Why it was left out; empty when it could take the build. */
  reasons: string[];
}

/** What {@link chooseMachine} decided. */
export interface MachineChoice {
  /** The machine Nix would use now, or `null`. */
  chosen: Machine | null;
  /** Every machine with its load and why it was left out. */
  candidates: MachineCandidate[];
  /** Whether some machine could build it but all its slots are busy (Nix waits then). */
  allBusy: boolean;
}

/**
 * Picks the machine Nix's build hook would use: among machines that can build the derivation and
 * have a free slot (load < max jobs), the lowest `load / speedFactor`, then the higher speed factor,
 * then the lower load; the first in the list on a full tie. A machine with max jobs 0 never gets a
 * build.
 *
 * @example
 * ```ts
 * import { chooseMachine, parseMachines } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const { machines } = parseMachines("slow x86_64-linux - 4 1\nfast x86_64-linux - 4 4\n");
 * const choice = chooseMachine(machines, { system: "x86_64-linux" }, { load: { "ssh://fast": 3 } });
 * assert.equal(choice.chosen?.storeUri, "ssh://slow"); // 0/1 < 3/4
 * ```
 */
export function chooseMachine(
  machines: readonly Machine[],
  needs: BuildNeeds,
  options: { load?: Record<string, number>; localSystem?: string } = {},
): MachineChoice {
  const candidates: MachineCandidate[] = [];
  let best: MachineCandidate | null = null;
  let rightType = false;
  for (const machine of machines) {
    const load = options.load?.[machine.storeUri] ?? 0;
    const reasons = whyMachineCannotBuild(machine, needs, options);
    const candidate: MachineCandidate = { machine, load, reasons };
    candidates.push(candidate);
    if (reasons.length > 0) continue;
    rightType = true;
    if (load >= machine.maxJobs) {
      reasons.push(
        machine.maxJobs === 0
          ? "its max jobs is 0, so it never has a free slot"
          : `all ${machine.maxJobs} of its slots are busy`,
      );
      continue;
    }
    if (best === null) {
      best = candidate;
      continue;
    }
    const score = load / machine.speedFactor;
    const bestScore = best.load / best.machine.speedFactor;
    if (
      score < bestScore ||
      (score === bestScore &&
        (machine.speedFactor > best.machine.speedFactor ||
          (machine.speedFactor === best.machine.speedFactor && load < best.load)))
    ) {
      best = candidate;
    }
  }
  return { chosen: best?.machine ?? null, candidates, allBusy: rightType && best === null };
}

/**
 * The system features Nix itself knows (others are fine, but are often typos).
 *
 * @example
 * ```ts
 * import { KNOWN_FEATURES } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(KNOWN_FEATURES.includes("big-parallel"), true);
 * assert.equal(KNOWN_FEATURES.includes("bigparallel"), false);
 * ```
 */
export const KNOWN_FEATURES: readonly string[] = [
  "benchmark",
  "big-parallel",
  "kvm",
  "nixos-test",
  "apple-virt",
  "uid-range",
  "recursive-nix",
  "ca-derivations",
];

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

/**
 * Why a feature name is probably a mistake (a number, or a near miss of a known feature); `null`
 * when it looks fine. `gccarch-*` and custom names are fine.
 *
 * @example
 * ```ts
 * import { suspiciousFeature } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * assert.match(suspiciousFeature("1") ?? "", /number/);
 * assert.match(suspiciousFeature("big-paralel") ?? "", /big-parallel/);
 * assert.equal(suspiciousFeature("gccarch-znver3"), null);
 * ```
 */
export function suspiciousFeature(feature: string): string | null {
  if (/^[+-]?\d+(\.\d+)?$/.test(feature)) {
    return `'${feature}' is a number, not a feature name: the columns are probably shifted`;
  }
  if (KNOWN_FEATURES.includes(feature) || feature.startsWith("gccarch-")) return null;
  for (const known of KNOWN_FEATURES) {
    const distance = editDistance(feature.toLowerCase(), known);
    if (distance > 0 && distance <= 2 && known.length > 3) {
      return `'${feature}' is not a feature Nix knows; did you mean '${known}'?`;
    }
  }
  return null;
}

/** Options for {@link describeMachine}. */
export interface DescribeMachineOptions {
  /** The controller's `system`, for a machine whose systems column is unset. */
  localSystem?: string;
  /** The rules (for the `host:port` remark). */
  rules?: MachinesRules;
}

/**
 * The machine in plain words, one line per field.
 *
 * @example
 * ```ts
 * import { describeMachine, parseMachines } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const m = parseMachines("nixos x86_64-linux / - 8 1 kvm,big-parallel").machines[0]!;
 * const lines = describeMachine(m);
 * assert.match(lines[0]!, /legacy ssh:\/\//);
 * assert.ok(lines.some((l) => l.startsWith("only takes derivations that require all of: big-parallel, kvm")));
 * ```
 */
export function describeMachine(machine: Machine, options: DescribeMachineOptions = {}): string[] {
  const lines: string[] = [];
  const who = machine.user !== undefined ? `${machine.user}@${machine.host}` : machine.host;
  const via = machine.port !== undefined ? ` port ${machine.port}` : "";
  if (machine.scheme === "ssh") {
    const bare = !machine.rawUri.includes("://");
    lines.push(
      `host: ${who}${via} over legacy ssh:// (runs 'nix-store --serve --write' there)` +
        (bare ? "; a bare host is always legacy ssh://, never ssh-ng://" : ""),
    );
  } else if (machine.scheme === "ssh-ng") {
    lines.push(`host: ${who}${via} over ssh-ng:// (runs 'nix-daemon --stdio' there)`);
  } else {
    lines.push(`store: ${machine.storeUri} (not an ssh builder)`);
  }
  if (machine.params["remote-program"] !== undefined) {
    lines.push(`remote program: ${machine.params["remote-program"]}`);
  }
  if (machine.port !== undefined && options.rules?.hostPort === false) {
    lines.push(
      `port: ${options.rules.label} does not read ':${machine.port}' as a port (Nix 2.31+ does)`,
    );
  }
  lines.push(
    machine.systemsDefaulted
      ? `systems: unset, so the controller's own system${
        options.localSystem ? ` (${options.localSystem})` : ""
      }`
      : `systems: ${machine.systems.join(", ")}`,
  );
  lines.push(
    machine.sshKey === undefined
      ? "identity: unset, ssh's own keys of the user running the daemon (root)"
      : `identity: ${machine.sshKey} (ssh -i ${machine.sshKey})`,
  );
  lines.push(
    `jobs: ${machine.maxJobs} at once` + (machine.maxJobsDefaulted ? " (unset: default 1)" : "") +
      (machine.maxJobs === 0 ? ": it never gets a build" : ""),
  );
  lines.push(
    `speed factor: ${machine.speedFactor}` + (machine.speedFactorDefaulted ? " (unset)" : ""),
  );
  lines.push(
    machine.supportedFeatures.length > 0
      ? `supports: ${machine.supportedFeatures.join(", ")}`
      : "supports: no special features",
  );
  if (machine.mandatoryFeatures.length > 0) {
    lines.push(
      `only takes derivations that require all of: ${machine.mandatoryFeatures.join(", ")}` +
        " (mandatory features)",
    );
  } else {
    lines.push("takes any derivation for its systems whose required features it supports");
  }
  if (machine.publicHostKey !== undefined) {
    const decoded = decodeHostKey(machine.publicHostKey);
    lines.push(
      `host key: pinned (${
        decoded ? decoded.split(" ")[0] : "not decodable"
      }), known_hosts not used`,
    );
  } else {
    lines.push("host key: from root's known_hosts");
  }
  if (machine.ignoredColumns.length > 0) {
    lines.push(`ignored columns: ${machine.ignoredColumns.join(" ")} (Nix reads only 8)`);
  }
  return lines;
}
