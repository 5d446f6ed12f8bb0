/**
 * One streaming pass over a build log: the last phase that started, the lines that explain the
 * failure (with context), and the tail, in bounded memory however large the log is.
 *
 * How: the bytes run through one deterministic automaton (Aho–Corasick over every trigger word,
 * line-anchored phase markers included) that also counts lines; only lines with a trigger are
 * decoded and classified by {@link LOG_RULES}. Nothing is held but the current chunk, the chunks
 * the tail needs, and a bounded number of excerpt groups.
 *
 * @module
 */

import { WasmAutomaton } from "./_dfa_wasm.ts";
import { stripAnsi } from "./build_output.ts";

/** What kind of failure a log line shows. */
export type ErrorKind =
  /** The builder (or a compiler in it) was killed, typically by the kernel's OOM killer. */
  | "oom"
  /** The disk or a quota is full. */
  | "disk"
  /** A compiler error (gcc, clang, rustc, ghc, javac, tsc, go). */
  | "compiler"
  /** A linker error. */
  | "linker"
  /** cmake, meson, autoconf `configure` errors. */
  | "build-system"
  /** nixpkgs stdenv's own errors (unpacking, `$src`). */
  | "stdenv"
  /** A failing test. */
  | "test"
  /** A program crashed or could not run (segfault, `command not found`, `Exec format error`). */
  | "runtime"
  /** make/ninja reporting that a step failed (a consequence, rarely the cause). */
  | "make"
  /** Any other `error:` line. */
  | "generic";

/** A rule that classifies one log line. */
export interface LogRule {
  /** Stable id, e.g. `compiler-error`. */
  id: string;
  /** What it shows. */
  kind: ErrorKind;
  /** How strongly it explains a failure: the strongest, earliest match is the likely cause. */
  weight: number;
  /** The pattern, tried on the line with ANSI escapes removed. */
  pattern: RegExp;
}

/** The classification rules, in the order they are tried. */
export const LOG_RULES: readonly LogRule[] = [
  {
    id: "oom-killed",
    kind: "oom",
    weight: 6,
    pattern:
      /Killed signal terminated program|terminated with signal 9 \[Killed\]|signal: 9, SIGKILL|signal 9 \(Killed\)|(?:^|[\s\]:])Killed(?:\s|$)/,
  },
  {
    id: "out-of-memory",
    kind: "oom",
    weight: 6,
    pattern:
      /\b[Oo]ut of memory\b|Cannot allocate memory|memory exhausted|std::bad_alloc|\bMemoryError\b/,
  },
  {
    id: "disk-full",
    kind: "disk",
    weight: 6,
    pattern: /No space left on device|Disk quota exceeded/,
  },
  { id: "exec-format", kind: "runtime", weight: 5, pattern: /Exec format error/ },
  {
    id: "internal-compiler-error",
    kind: "compiler",
    weight: 4,
    pattern: /internal compiler error/,
  },
  {
    id: "compiler-error",
    kind: "compiler",
    weight: 4,
    pattern:
      /^\S.*?:\d+(?::\d+)?:\s*(?:fatal )?error(?:\[[\w-]+\])?:\s|^\S+\(\d+(?:,\d+)?\): error |error TS\d+:|^error\[E\d+\]:|^error: (?:could not compile|aborting due to)/,
  },
  {
    id: "linker-error",
    kind: "linker",
    weight: 4,
    pattern:
      /undefined reference to|Undefined symbols for architecture|undefined symbol: |(?:^|[\s/])ld(?:\.\w+)?: (?:error: |cannot find )|ld returned \d+ exit status|linker command failed|multiple definition of/,
  },
  { id: "cmake-error", kind: "build-system", weight: 4, pattern: /^CMake Error\b/ },
  { id: "meson-error", kind: "build-system", weight: 4, pattern: /^(?:\S+:\d+:\d+: )?ERROR: / },
  { id: "configure-error", kind: "build-system", weight: 4, pattern: /^configure: error: / },
  {
    id: "pkg-config-missing",
    kind: "build-system",
    weight: 4,
    pattern:
      /^Package .* was not found in the pkg-config search path|^Package '[^']*', required by .*, not found$/,
  },
  {
    id: "stdenv-error",
    kind: "stdenv",
    weight: 4,
    pattern:
      /do not know how to unpack source archive|variable \$src or \$srcs should point to the source|^error: cannot download /,
  },
  {
    id: "make-error",
    kind: "make",
    weight: 0.5,
    pattern:
      /^g?make(?:\[\d+\])?: \*\*\* |ninja: build stopped|^FAILED: |Makefile:\d+: recipe for target .* failed/,
  },
  {
    id: "test-failure",
    kind: "test",
    weight: 3,
    pattern:
      /^FAIL(?::|\s)|^--- FAIL:|^FAILED\b|\bFAILED \(|test result: FAILED|The following tests FAILED|^\s*# FAIL: +[1-9]|\b[1-9]\d* (?:tests? )?failed\b|\b[1-9]\d* failures?\b|(?<!\b0 )\b[Tt]ests? failed\b|Some tests failed|\bAssertionError\b|[Aa]ssertion .*failed|^FAIL$|\s(?:FAIL|FAILED)(?:\s|$)/,
  },
  { id: "traceback", kind: "runtime", weight: 2, pattern: /^Traceback \(most recent call last\)/ },
  {
    id: "crash",
    kind: "runtime",
    weight: 2,
    pattern: /Segmentation fault|Illegal instruction|core dumped|Bus error/,
  },
  { id: "command-not-found", kind: "runtime", weight: 2, pattern: /: (?:command )?not found$/ },
  {
    id: "exception",
    kind: "runtime",
    weight: 2,
    pattern: /^(?:[\w$]+\.)*[A-Z]\w*(?:Error|Exception)(?::\s|$)|^Exception in thread /,
  },
  { id: "missing-file", kind: "runtime", weight: 1.5, pattern: /No such file or directory/ },
  { id: "permission-denied", kind: "runtime", weight: 1.5, pattern: /Permission denied/ },
  {
    id: "error",
    kind: "generic",
    weight: 1,
    pattern: /(?:^|[\s:\]>|*(])(?:error|ERROR|Error)(?::|\[|\s\d)|^(?:fatal|FATAL): |npm ERR!/,
  },
];

/** The words that make a line worth classifying; every rule needs one of them to match. */
export const TRIGGERS: readonly string[] = [
  "error",
  "Error",
  "ERROR",
  "ERR!",
  "FAIL",
  "fail",
  "Failed",
  "Killed",
  "SIGKILL",
  "out of memory",
  "Out of memory",
  "Cannot allocate memory",
  "memory exhausted",
  "bad_alloc",
  "No space left on device",
  "Disk quota exceeded",
  "undefined reference",
  "Undefined symbols",
  "undefined symbol",
  "cannot find -l",
  "multiple definition of",
  "do not know how to unpack",
  "should point to the source",
  "Traceback (most recent call last)",
  "Segmentation fault",
  "Illegal instruction",
  "core dumped",
  "not found",
  "No such file or directory",
  "Permission denied",
  "fatal:",
  "FATAL:",
  "Exception",
];

/** Old stdenv (before 2023) phase headers: the header line and the phase it starts. */
export const LEGACY_PHASE_HEADERS: Readonly<Record<string, string>> = {
  "unpacking sources": "unpackPhase",
  "patching sources": "patchPhase",
  "configuring": "configurePhase",
  "building": "buildPhase",
  "running tests": "checkPhase",
  "installing": "installPhase",
  "post-installation fixup": "fixupPhase",
  "running install tests": "installCheckPhase",
};

/** A line of the log. */
export interface LogLine {
  /** 1-based line number. */
  line: number;
  /** The text (at most {@link MAX_LINE_CHARS} characters, then an ellipsis note). */
  text: string;
  /** Set when this line matched a rule. */
  match?: boolean;
}

/** A line that matched a rule. */
export interface LogMatch {
  /** 1-based line number. */
  line: number;
  /** What it shows. */
  kind: ErrorKind;
  /** The rule's id. */
  rule: string;
  /** The rule's weight. */
  weight: number;
  /** The line's text. */
  text: string;
}

/** Lines shown together: matches with their context. */
export interface LogGroup {
  /** The lines, consecutive. */
  lines: LogLine[];
  /** The matches among them. */
  matches: LogMatch[];
}

/** Where a phase started. */
export interface PhaseMark {
  /** The phase, e.g. `buildPhase`. */
  phase: string;
  /** 1-based line of the marker. */
  line: number;
  /** Which marker: `Running phase: X`, `@nix {"action":"setPhase"}`, or an old stdenv header. */
  marker: "running-phase" | "set-phase" | "header";
}

/** What one pass found. */
export interface LogScan {
  /** Bytes read. */
  bytes: number;
  /** Lines (a last line without a newline counts). */
  lines: number;
  /** Whether the last byte is a newline (or the log is empty). */
  endsWithNewline: boolean;
  /** Whether NUL bytes were seen: the log holds binary data (shown escaped). */
  binary: boolean;
  /** The last phase markers, oldest first (at most 32). */
  phases: PhaseMark[];
  /** The last phase that started. */
  lastPhase?: PhaseMark;
  /** The first matches (at most 200). */
  matches: LogMatch[];
  /** All matches. */
  matchCount: number;
  /** Matches per kind. */
  counts: Partial<Record<ErrorKind, number>>;
  /** Matches per rule id. */
  ruleCounts: Record<string, number>;
  /** The likely cause: the earliest of the strongest matches. */
  primary?: LogMatch;
  /** Groups chosen for display, in line order: the first ones, the one with the likely cause, the last. */
  groups: LogGroup[];
  /** All groups found. */
  groupCount: number;
  /** The last lines of the log. */
  tail: LogLine[];
  /** Set when the tail had to be cut to fit the memory bound. */
  tailTruncated: boolean;
  /** Whether phases and errors were looked for (false for a tail-only pass). */
  scannedErrors: boolean;
}

/** Options for {@link LogScanner}. */
export interface ScanOptions {
  /** Look for phases and error lines (default true); false only counts lines and keeps the tail. */
  errors?: boolean;
  /** How many last lines to keep (default 20). */
  tail?: number;
  /** Lines of context before and after each match (default 3). */
  context?: number;
  /** Groups kept from the start of the log (default 6; the last two are kept too). */
  maxGroups?: number;
  /** Lines per group before a new group starts (default 40). */
  maxGroupLines?: number;
  /** Bytes processed at a time (default 1 MiB). */
  chunkSize?: number;
  /** Most bytes kept for the tail (default 32 MiB); a longer tail is cut. */
  maxTailBytes?: number;
  /** The hot loop: `wasm` (default, faster) or `js` (the same automaton in JavaScript). */
  engine?: "wasm" | "js";
}

/** Longest line text kept; longer lines are cut with a note. */
export const MAX_LINE_CHARS = 2000;

const NL = 10;

interface Automaton {
  /** Transitions, pre-multiplied: `next = table[state + byte]`, states are multiples of 256. */
  table: Int32Array;
  /** The state after a newline (which also counts lines). */
  lineState: number;
  /** States at or above it are the line state or accepting. */
  eventFrom: number;
}

let automaton: Automaton | undefined;

function buildAutomaton(): Automaton {
  const encoder = new TextEncoder();
  const needles = [
    ...TRIGGERS,
    "\nRunning phase: ",
    "\n@nix {",
    ...Object.keys(LEGACY_PHASE_HEADERS).map((h) => `\n${h}\n`),
  ];
  const goto: Map<number, number>[] = [new Map()];
  const accepting: boolean[] = [false];
  for (const needle of needles) {
    let state = 0;
    for (const byte of encoder.encode(needle)) {
      let next = goto[state]!.get(byte);
      if (next === undefined) {
        next = goto.length;
        goto.push(new Map());
        accepting.push(false);
        goto[state]!.set(byte, next);
      }
      state = next;
    }
    accepting[state] = true;
  }
  const count = goto.length;
  const fail = new Int32Array(count);
  const delta = new Int32Array(count * 256);
  const queue: number[] = [];
  for (let byte = 0; byte < 256; byte++) {
    const next = goto[0]!.get(byte);
    if (next !== undefined) {
      delta[byte] = next;
      queue.push(next);
    }
  }
  for (let head = 0; head < queue.length; head++) {
    const state = queue[head]!;
    accepting[state] = accepting[state]! || accepting[fail[state]!]!;
    for (let byte = 0; byte < 256; byte++) {
      const next = goto[state]!.get(byte);
      const viaFail = delta[fail[state]! * 256 + byte]!;
      if (next !== undefined) {
        fail[next] = viaFail;
        queue.push(next);
        delta[state * 256 + byte] = next;
      } else {
        delta[state * 256 + byte] = viaFail;
      }
    }
  }
  // Renumber: plain states, then the line state, then accepting states, so one comparison in the
  // hot loop catches both a newline and a match.
  const line = goto[0]!.get(NL)!;
  const order: number[] = [];
  for (let s = 0; s < count; s++) if (!accepting[s] && s !== line) order.push(s);
  const lineIndex = order.length;
  order.push(line);
  for (let s = 0; s < count; s++) if (accepting[s]) order.push(s);
  const renumbered = new Int32Array(count);
  order.forEach((s, i) => (renumbered[s] = i));
  const table = new Int32Array(count * 256);
  for (let s = 0; s < count; s++) {
    for (let byte = 0; byte < 256; byte++) {
      table[renumbered[s]! * 256 + byte] = renumbered[delta[s * 256 + byte]!]! * 256;
    }
  }
  return { table, lineState: lineIndex * 256, eventFrom: lineIndex * 256 };
}

/**
 * The hot loop: runs the automaton from `from` to `to`, counting newlines in `regs[1]`; stops at
 * the first accepting state (returns its index) or at `to`. `regs[0]` carries the state.
 */
function runAutomaton(
  table: Int32Array,
  bytes: Uint8Array,
  from: number,
  to: number,
  regs: Int32Array,
  lineState: number,
): number {
  let state = regs[0]!;
  let lines = regs[1]!;
  let i = from;
  for (; i < to; i++) {
    state = table[state + bytes[i]!]!;
    if (state >= lineState) {
      if (state !== lineState) break;
      lines++;
    }
  }
  regs[0] = state;
  regs[1] = lines;
  return i;
}

/**
 * Counts newlines four bytes at a time.
 *
 * @example
 * ```ts
 * import { countNewlines } from "./log_scan.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(countNewlines(new TextEncoder().encode("a\nbb\n\nccc")), 3);
 * ```
 */
export function countNewlines(bytes: Uint8Array, from = 0, to = bytes.length): number {
  let count = 0;
  let i = from;
  while (i < to && ((bytes.byteOffset + i) & 3) !== 0) {
    if (bytes[i] === NL) count++;
    i++;
  }
  const words = (to - i) >>> 2;
  if (words > 0) {
    const view = new Uint32Array(bytes.buffer, bytes.byteOffset + i, words);
    for (let w = 0; w < words; w++) {
      const x = view[w]! ^ 0x0a0a0a0a;
      // High bit set in each byte of `x` that is not zero, i.e. each byte that was not '\n'.
      const nonZero = (((x & 0x7f7f7f7f) + 0x7f7f7f7f) | x) & 0x80808080;
      const zeros = ~nonZero & 0x80808080;
      if (zeros !== 0) count += Math.imul(zeros >>> 7, 0x01010101) >>> 24;
    }
    i += words * 4;
  }
  for (; i < to; i++) if (bytes[i] === NL) count++;
  return count;
}

interface Retained {
  bytes: Uint8Array;
  /** Whether `bytes` starts at the start of a line. */
  startsLine: boolean;
  /** Newlines in `bytes`. */
  newlines: number;
  /** Line number of the first (possibly partial) line. */
  firstLine: number;
}

interface OpenGroup {
  group: LogGroup;
  /** The last line number included. */
  endLine: number;
  /** Lines still wanted from the start of the next chunk. */
  pending: number;
}

const decoder = new TextDecoder();
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/;
// deno-lint-ignore no-control-regex
const CONTROL_ALL = /[\x00-\x08\x0b-\x1f\x7f]/g;

/** Turns a line's bytes into display text: terminal-style `\r` handling, control characters escaped. */
function lineText(bytes: Uint8Array, flags?: { binary: boolean }): string {
  if (flags !== undefined && !flags.binary && bytes.indexOf(0) >= 0) flags.binary = true;
  const cut = bytes.length > MAX_LINE_CHARS * 4 ? bytes.subarray(0, MAX_LINE_CHARS * 4) : bytes;
  let text = decoder.decode(cut);
  if (text.endsWith("\r")) text = text.slice(0, -1);
  const cr = text.lastIndexOf("\r");
  if (cr >= 0) text = text.slice(cr + 1);
  text = stripAnsi(text);
  if (CONTROL.test(text)) {
    text = text.replace(CONTROL_ALL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  }
  if (text.length > MAX_LINE_CHARS || cut !== bytes) {
    const more = bytes.length - cut.length + Math.max(0, text.length - MAX_LINE_CHARS);
    text = `${text.slice(0, MAX_LINE_CHARS)}… [line cut, ${more} more bytes]`;
  }
  return text;
}

/**
 * Classifies one line: a phase marker, a rule match, or nothing.
 *
 * @example
 * ```ts
 * import { classifyLine } from "./log_scan.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(classifyLine("c++: fatal error: Killed signal terminated program cc1plus").rule?.id, "oom-killed");
 * assert.equal(classifyLine("src/main.c:12:5: error: 'x' undeclared").rule?.kind, "compiler");
 * assert.equal(classifyLine("Running phase: buildPhase").phase, "buildPhase");
 * assert.equal(classifyLine("checking for strerror... yes").rule, undefined);
 * ```
 */
export function classifyLine(
  text: string,
): { phase?: string; marker?: PhaseMark["marker"]; rule?: LogRule } {
  const line = stripAnsi(text);
  let m = /^Running phase: (\S+)/.exec(line);
  if (m) return { phase: m[1]!, marker: "running-phase" };
  if (line.startsWith("@nix {")) {
    m = /"action":\s*"setPhase".*?"phase":\s*"([^"]+)"/.exec(line);
    return m ? { phase: m[1]!, marker: "set-phase" } : {};
  }
  if (Object.hasOwn(LEGACY_PHASE_HEADERS, line)) {
    return { phase: LEGACY_PHASE_HEADERS[line]!, marker: "header" };
  }
  const warningAt = line.search(/\bwarning:/i);
  for (const rule of LOG_RULES) {
    const match = rule.pattern.exec(line);
    if (!match) continue;
    // "warning: ... error ..." is a warning, unless it is about memory, disk or tests.
    if (
      warningAt >= 0 && warningAt < match.index + match[0].length &&
      (rule.kind === "compiler" || rule.kind === "generic" || rule.kind === "build-system")
    ) {
      continue;
    }
    return { rule };
  }
  return {};
}

/**
 * Scans a log pushed to it chunk by chunk; {@link LogScanner.finish} gives the result.
 *
 * @example
 * ```ts
 * import { LogScanner } from "./log_scan.ts";
 * import assert from "node:assert/strict";
 *
 * const scanner = new LogScanner({ tail: 2 });
 * scanner.push(new TextEncoder().encode("Running phase: buildPhase\nfoo.c:1:1: error: bad\nmake: *** [all] Error 1\n"));
 * const scan = scanner.finish();
 * assert.equal(scan.lines, 3);
 * assert.equal(scan.lastPhase?.phase, "buildPhase");
 * assert.equal(scan.primary?.line, 2);
 * assert.deepEqual(scan.tail.map((l) => l.line), [2, 3]);
 * ```
 */
export class LogScanner {
  #errors: boolean;
  #tailLines: number;
  #context: number;
  #maxGroups: number;
  #maxGroupLines: number;
  #chunkSize: number;
  #maxTailBytes: number;
  #auto: Automaton | undefined;
  #wasm: WasmAutomaton | undefined;
  #regs = new Int32Array(2);
  /** Current work buffer and how much of it is filled. */
  #buf: Uint8Array;
  #len = 0;
  #pool: Uint8Array[] = [];
  #retained: Retained[] = [];
  #newlines = 0;
  #bytes = 0;
  #lastByte = -1;
  #midLine = false;
  #flags = { binary: false };
  #phases: PhaseMark[] = [];
  #matches: LogMatch[] = [];
  #matchCount = 0;
  #counts: Partial<Record<ErrorKind, number>> = {};
  #ruleCounts: Record<string, number> = {};
  #primary: LogMatch | undefined;
  #primaryGroup: LogGroup | undefined;
  #open: OpenGroup | undefined;
  #first: LogGroup[] = [];
  #last: LogGroup[] = [];
  #groupCount = 0;
  #lastEndLine = 0;
  #lastClosed: LogGroup | undefined;
  #finished = false;

  /** Creates a scanner. */
  constructor(options: ScanOptions = {}) {
    this.#errors = options.errors ?? true;
    this.#tailLines = Math.max(0, options.tail ?? 20);
    this.#context = Math.max(0, options.context ?? 3);
    this.#maxGroups = Math.max(1, options.maxGroups ?? 6);
    this.#maxGroupLines = Math.max(this.#context * 2 + 1, options.maxGroupLines ?? 40);
    this.#chunkSize = Math.max(4096, options.chunkSize ?? 1 << 20);
    this.#maxTailBytes = options.maxTailBytes ?? 32 << 20;
    this.#buf = new Uint8Array(this.#chunkSize);
    if (this.#errors) {
      this.#auto = automaton ??= buildAutomaton();
      this.#regs[0] = this.#auto.lineState;
      if ((options.engine ?? "wasm") === "wasm") {
        try {
          this.#wasm = new WasmAutomaton(this.#auto.table, this.#chunkSize);
        } catch {
          // No WebAssembly here: the JavaScript loop does the same.
        }
      }
    }
  }

  /** Bytes pushed so far. */
  get bytes(): number {
    return this.#bytes + this.#len;
  }

  /** Feeds bytes (any chunking). */
  push(bytes: Uint8Array): void {
    if (this.#finished) throw new Error("Cannot push to a finished scanner");
    let offset = 0;
    while (offset < bytes.length) {
      const take = Math.min(this.#buf.length - this.#len, bytes.length - offset);
      this.#buf.set(bytes.subarray(offset, offset + take), this.#len);
      this.#len += take;
      offset += take;
      if (this.#len === this.#buf.length) this.#flush(false);
    }
  }

  /**
   * Reads with `read` (which fills the given array and returns the byte count, or `null` at the
   * end) while the previous block is being scanned: reading and scanning overlap, as a file read
   * runs outside this thread. `onRead` sees every block (for tee and progress).
   */
  async readFrom(
    read: (into: Uint8Array) => Promise<number | null>,
    onRead?: (bytes: Uint8Array) => void | Promise<void>,
  ): Promise<void> {
    let current = new Uint8Array(this.#chunkSize);
    let next = new Uint8Array(this.#chunkSize);
    let n = await read(current);
    while (n !== null) {
      const pending = read(next);
      // A rejected read is awaited below; until then it must not count as unhandled.
      pending.catch(() => {});
      const block = current.subarray(0, n);
      if (onRead) await onRead(block);
      this.push(block);
      n = await pending;
      [current, next] = [next, current];
    }
  }

  #newBuffer(): Uint8Array {
    return this.#pool.pop() ?? new Uint8Array(this.#chunkSize);
  }

  #flush(final: boolean): void {
    if (this.#len === 0) return;
    const buf = this.#buf;
    const len = this.#len;
    let end = len;
    if (!final) {
      const lastNl = buf.subarray(0, len).lastIndexOf(NL);
      if (lastNl >= 0) end = lastNl + 1;
    }
    const next = this.#newBuffer();
    const rest = len - end;
    if (rest > 0) next.set(buf.subarray(end, len), 0);
    this.#buf = next;
    this.#len = rest;
    this.#process(buf, end);
  }

  #process(buf: Uint8Array, len: number): void {
    const chunk = buf.subarray(0, len);
    const firstLine = this.#newlines + 1;
    const startsLine = !this.#midLine;
    if (this.#bytes === 0 && chunk.subarray(0, 65536).indexOf(0) >= 0) this.#flags.binary = true;
    let newlines: number;
    if (this.#auto !== undefined) {
      this.#fillPending(chunk);
      newlines = this.#scanErrors(chunk);
    } else {
      newlines = countNewlines(chunk);
    }
    this.#newlines += newlines;
    this.#bytes += len;
    this.#lastByte = chunk[len - 1]!;
    this.#midLine = this.#lastByte !== NL;
    this.#retain({ bytes: chunk, startsLine, newlines, firstLine });
  }

  #retain(entry: Retained): void {
    this.#retained.push(entry);
    // Keep the previous chunk for context, and as many chunks as the tail needs.
    while (this.#retained.length > 2) {
      let later = 0;
      for (let i = 1; i < this.#retained.length; i++) later += this.#retained[i]!.newlines;
      let bytes = 0;
      for (const r of this.#retained) bytes += r.bytes.length;
      if (later < this.#tailLines + 1 && bytes <= this.#maxTailBytes) break;
      const dropped = this.#retained.shift()!;
      if (dropped.bytes.buffer.byteLength === this.#chunkSize && this.#pool.length < 2) {
        this.#pool.push(new Uint8Array(dropped.bytes.buffer));
      }
    }
  }

  /** Runs the automaton over a chunk, handling each event; returns the chunk's newline count. */
  #scanErrors(chunk: Uint8Array): number {
    const auto = this.#auto!;
    const regs = this.#regs;
    const start = this.#newlines;
    regs[1] = start;
    const len = chunk.length;
    const wasm = this.#wasm !== undefined && len <= this.#wasm.capacity ? this.#wasm : undefined;
    wasm?.load(chunk);
    let i = 0;
    while (i < len) {
      i = wasm !== undefined
        ? wasm.run(i, len, regs, auto.lineState)
        : runAutomaton(auto.table, chunk, i, len, regs, auto.lineState);
      if (i >= len) break;
      // An event: a trigger ended at byte i.
      const atNewline = chunk[i] === NL;
      const lineNo = regs[1]! + 1;
      const ls = i === 0 ? 0 : chunk.lastIndexOf(NL, i - 1) + 1;
      let le = atNewline ? i : chunk.indexOf(NL, i);
      if (le < 0) le = len;
      this.#handleLine(chunk, ls, le, lineNo);
      if (le < len) {
        regs[1] = regs[1]! + 1;
        regs[0] = auto.lineState;
        i = le + 1;
      } else {
        regs[0] = 0;
        i = len;
      }
    }
    return regs[1]! - start;
  }

  #handleLine(chunk: Uint8Array, ls: number, le: number, lineNo: number): void {
    const raw = chunk.subarray(ls, Math.min(le, ls + 65536));
    let text = decoder.decode(raw);
    if (text.endsWith("\r")) text = text.slice(0, -1);
    const result = classifyLine(text);
    if (result.phase !== undefined) {
      this.#phases.push({ phase: result.phase, line: lineNo, marker: result.marker! });
      if (this.#phases.length > 32) this.#phases.shift();
      return;
    }
    if (result.rule === undefined) return;
    const rule = result.rule;
    const match: LogMatch = {
      line: lineNo,
      kind: rule.kind,
      rule: rule.id,
      weight: rule.weight,
      text: lineText(chunk.subarray(ls, le), this.#flags),
    };
    this.#matchCount++;
    this.#counts[rule.kind] = (this.#counts[rule.kind] ?? 0) + 1;
    this.#ruleCounts[rule.id] = (this.#ruleCounts[rule.id] ?? 0) + 1;
    if (this.#matches.length < 200) this.#matches.push(match);
    const group = this.#addToGroup(chunk, ls, le, match);
    if (this.#primary === undefined || match.weight > this.#primary.weight) {
      this.#primary = match;
      this.#primaryGroup = group;
    }
  }

  /** Adds a match and its context to the open group, or closes it and opens a new one. */
  #addToGroup(chunk: Uint8Array, ls: number, le: number, match: LogMatch): LogGroup {
    const b = this.#context;
    let open = this.#open;
    if (
      open !== undefined &&
      (match.line - b > open.endLine + 1 || open.group.lines.length >= this.#maxGroupLines)
    ) {
      this.#closeGroup();
      open = undefined;
    }
    if (open === undefined && match.line <= this.#lastEndLine && this.#lastClosed !== undefined) {
      // The line is already shown at the end of the previous, full group: mark it there.
      const shown = this.#lastClosed.lines.find((l) => l.line === match.line);
      if (shown) shown.match = true;
      this.#lastClosed.matches.push(match);
      return this.#lastClosed;
    }
    if (open === undefined) {
      const before = Math.max(0, Math.min(b, match.line - 1 - this.#lastEndLine));
      open = {
        group: { lines: this.#linesBefore(chunk, ls, before, match.line), matches: [] },
        endLine: match.line - 1,
        pending: 0,
      };
      this.#open = open;
    }
    const lines = open.group.lines;
    if (match.line > open.endLine) {
      // Lines between the group's end and the match.
      const gap = match.line - 1 - open.endLine;
      if (gap > 0) lines.push(...this.#linesBefore(chunk, ls, gap, match.line));
      lines.push({ line: match.line, text: match.text, match: true });
      open.endLine = match.line;
    } else {
      const existing = lines.find((l) => l.line === match.line);
      if (existing) existing.match = true;
    }
    open.group.matches.push(match);
    // Lines after the match, as far as this chunk goes.
    const want = match.line + b - open.endLine;
    if (want > 0) {
      let pos = le + 1;
      // Skip lines already included (when the match was inside the group).
      for (let skip = open.endLine - match.line; skip > 0 && pos < chunk.length; skip--) {
        const nl = chunk.indexOf(NL, pos);
        pos = nl < 0 ? chunk.length : nl + 1;
      }
      let added = 0;
      while (added < want && pos < chunk.length) {
        let nl = chunk.indexOf(NL, pos);
        if (nl < 0) nl = chunk.length;
        open.endLine++;
        lines.push({ line: open.endLine, text: lineText(chunk.subarray(pos, nl), this.#flags) });
        pos = nl + 1;
        added++;
      }
      open.pending = want - added;
    }
    return open.group;
  }

  /** The `count` lines before the line starting at `ls` (numbered up to `lineNo - 1`). */
  #linesBefore(chunk: Uint8Array, ls: number, count: number, lineNo: number): LogLine[] {
    const out: LogLine[] = [];
    let end = ls - 1; // the newline ending the previous line
    let source = chunk;
    let retainedIndex = this.#retained.length - 1;
    let n = lineNo - 1;
    while (out.length < count && n >= 1) {
      if (end < 0) {
        // Continue in the previous chunk, if it is still retained.
        if (retainedIndex < 0) break;
        source = this.#retained[retainedIndex--]!.bytes;
        end = source.length - 1;
        if (source[end] !== NL) break; // a giant line split across chunks: stop here
      }
      const start = end === 0 ? 0 : source.lastIndexOf(NL, end - 1) + 1;
      out.unshift({ line: n, text: lineText(source.subarray(start, end), this.#flags) });
      n--;
      end = start - 1;
    }
    return out;
  }

  /** Appends the lines an open group still wants from the start of a new chunk. */
  #fillPending(chunk: Uint8Array): void {
    const open = this.#open;
    if (open === undefined || open.pending <= 0) return;
    let pos = 0;
    while (open.pending > 0 && pos < chunk.length) {
      let nl = chunk.indexOf(NL, pos);
      if (nl < 0) nl = chunk.length;
      open.endLine++;
      open.group.lines.push({
        line: open.endLine,
        text: lineText(chunk.subarray(pos, nl), this.#flags),
      });
      open.pending--;
      pos = nl + 1;
    }
  }

  #closeGroup(): void {
    const open = this.#open;
    if (open === undefined) return;
    this.#open = undefined;
    this.#lastEndLine = open.endLine;
    const group = open.group;
    this.#lastClosed = group;
    this.#groupCount++;
    if (this.#first.length < this.#maxGroups) {
      this.#first.push(group);
    } else {
      this.#last.push(group);
      if (this.#last.length > 2) this.#last.shift();
    }
  }

  /** Ends the input and returns the result. */
  finish(): LogScan {
    if (!this.#finished) {
      this.#flush(true);
      this.#finished = true;
      this.#closeGroup();
    }
    const endsWithNewline = this.#bytes === 0 || this.#lastByte === NL;
    const lines = this.#newlines + (endsWithNewline ? 0 : 1);
    const groups = [...this.#first];
    if (this.#primaryGroup !== undefined && !groups.includes(this.#primaryGroup)) {
      groups.push(this.#primaryGroup);
    }
    for (const g of this.#last) if (!groups.includes(g)) groups.push(g);
    groups.sort((a, b) => (a.lines[0]?.line ?? 0) - (b.lines[0]?.line ?? 0));
    const { tail, truncated } = this.#tail(lines, endsWithNewline);
    const scan: LogScan = {
      bytes: this.#bytes,
      lines,
      endsWithNewline,
      binary: this.#flags.binary,
      phases: [...this.#phases],
      matches: [...this.#matches],
      matchCount: this.#matchCount,
      counts: { ...this.#counts },
      ruleCounts: { ...this.#ruleCounts },
      groups,
      groupCount: this.#groupCount,
      tail,
      tailTruncated: truncated,
      scannedErrors: this.#errors,
    };
    const lastPhase = this.#phases.at(-1);
    if (lastPhase !== undefined) scan.lastPhase = lastPhase;
    if (this.#primary !== undefined) scan.primary = this.#primary;
    return scan;
  }

  #tail(lines: number, endsWithNewline: boolean): { tail: LogLine[]; truncated: boolean } {
    const want = this.#tailLines;
    if (want === 0 || lines === 0) return { tail: [], truncated: false };
    const out: LogLine[] = [];
    let n = lines;
    let truncated = false;
    // Walk back over the retained chunks; a line may span chunk boundaries.
    let pieces: Uint8Array[] = [];
    for (let r = this.#retained.length - 1; r >= 0 && out.length < want; r--) {
      const bytes = this.#retained[r]!.bytes;
      let end = bytes.length;
      if (r === this.#retained.length - 1 && endsWithNewline) end--; // drop the final newline
      while (out.length < want) {
        const nl = end <= 0 ? -1 : bytes.lastIndexOf(NL, end - 1);
        const piece = bytes.subarray(nl + 1, end);
        if (nl < 0) {
          // The line continues in the previous chunk.
          pieces.unshift(piece);
          break;
        }
        pieces.unshift(piece);
        out.unshift({ line: n--, text: lineText(concat(pieces), this.#flags) });
        pieces = [];
        end = nl;
      }
    }
    if (pieces.length > 0 && out.length < want && n >= 1) {
      // The walk reached the oldest retained chunk's start: a whole line only if it starts one.
      if (this.#retained[0]?.startsLine) {
        out.unshift({ line: n, text: lineText(concat(pieces), this.#flags) });
      } else {
        truncated = true;
      }
    }
    if (out.length < want && out.length < lines) truncated = true;
    return { tail: out, truncated };
  }
}

function concat(pieces: Uint8Array[]): Uint8Array {
  if (pieces.length === 1) return pieces[0]!;
  let size = 0;
  for (const p of pieces) size += p.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Scans a whole log given as text (tests, small logs).
 *
 * @example
 * ```ts
 * import { scanLogText } from "./log_scan.ts";
 * import assert from "node:assert/strict";
 *
 * const scan = scanLogText("building\nld: cannot find -lfoo\ncollect2: error: ld returned 1 exit status\n");
 * assert.equal(scan.lastPhase?.phase, "buildPhase");
 * assert.equal(scan.primary?.kind, "linker");
 * ```
 */
export function scanLogText(text: string, options: ScanOptions = {}): LogScan {
  const scanner = new LogScanner(options);
  scanner.push(new TextEncoder().encode(text));
  return scanner.finish();
}

/** Options for {@link scanLog}. */
export interface ScanStreamOptions extends ScanOptions {
  /** Sees every block of bytes as it is read (tee to a file, progress). */
  onBytes?: (bytes: Uint8Array) => void | Promise<void>;
}

/**
 * Scans a log from a byte stream in one pass.
 *
 * @example
 * ```ts
 * import { scanLog } from "./log_scan.ts";
 * import assert from "node:assert/strict";
 *
 * const stream = ReadableStream.from([new TextEncoder().encode("FAIL: test_a\n"), new TextEncoder().encode("done")]);
 * const scan = await scanLog(stream);
 * assert.equal(scan.lines, 2);
 * assert.equal(scan.endsWithNewline, false);
 * assert.equal(scan.primary?.kind, "test");
 * ```
 */
export async function scanLog(
  source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  options: ScanStreamOptions = {},
): Promise<LogScan> {
  const scanner = new LogScanner(options);
  for await (const chunk of source) {
    if (options.onBytes) await options.onBytes(chunk);
    scanner.push(chunk);
  }
  return scanner.finish();
}

/**
 * Scans a local file, reading straight into the scanner's buffers.
 *
 * @example
 * ```ts
 * import { scanLogFile } from "./log_scan.ts";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "Running phase: checkPhase\nFAIL: test_x\n");
 * const scan = await scanLogFile(path);
 * assert.equal(scan.lastPhase?.phase, "checkPhase");
 * await Deno.remove(path);
 * ```
 */
export async function scanLogFile(path: string, options: ScanStreamOptions = {}): Promise<LogScan> {
  const scanner = new LogScanner(options);
  using file = await Deno.open(path);
  await scanner.readFrom((into) => file.read(into), options.onBytes);
  return scanner.finish();
}

/**
 * The last `count` lines of a local regular file, found by reading backwards from its end (the way
 * `tail -n` does), without reading the rest. Line numbers are counted from the end: the last line
 * is `-1`.
 *
 * @example
 * ```ts
 * import { tailFile } from "./log_scan.ts";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "a\nb\nc\n");
 * assert.deepEqual((await tailFile(path, 2)).map((l) => l.text), ["b", "c"]);
 * await Deno.remove(path);
 * ```
 */
export async function tailFile(path: string, count: number): Promise<LogLine[]> {
  if (count <= 0) return [];
  using file = await Deno.open(path);
  const size = (await file.stat()).size;
  if (size === 0) return [];
  const block = 1 << 16;
  let position = size;
  let data = new Uint8Array(0);
  let newlines = 0;
  let skipFinal = -1;
  while (position > 0) {
    const read = Math.min(block, position);
    position -= read;
    await file.seek(position, Deno.SeekMode.Start);
    const buf = new Uint8Array(read);
    let got = 0;
    while (got < read) {
      const n = await file.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    const merged = new Uint8Array(buf.length + data.length);
    merged.set(buf, 0);
    merged.set(data, buf.length);
    data = merged;
    if (skipFinal < 0) skipFinal = data[data.length - 1] === NL ? 1 : 0;
    newlines = countNewlines(data);
    if (newlines - skipFinal >= count) break;
    if (data.length > 64 << 20) break;
  }
  let end = data.length - (skipFinal > 0 ? 1 : 0);
  const out: LogLine[] = [];
  let n = -1;
  while (out.length < count && end >= 0) {
    const nl = end === 0 ? -1 : data.lastIndexOf(NL, end - 1);
    if (nl < 0 && position > 0) break; // the line starts before what was read
    out.unshift({ line: n--, text: lineText(data.subarray(nl + 1, end)) });
    if (nl < 0) break;
    end = nl;
  }
  return out;
}
