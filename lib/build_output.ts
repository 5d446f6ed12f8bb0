/**
 * The failing derivations in the text of a failed `nix build`, `nix-build`, `nixos-rebuild` or
 * `darwin-rebuild`, in every phrasing Nix has used (1.x to 2.3x, Lix, Determinate Nix):
 *
 * - `builder for '<drv>' failed with exit code N` (`error: ` prefix and `;` since 2.4, curly quotes
 *   in 1.x, `; last N log lines:` in 2.0–2.3), `... failed due to signal 9 (Killed)`,
 *   `... failed to produce output path for output 'out' ...`
 * - `error: Cannot build '<drv>'.` followed by `Reason: builder failed with exit code N.` or
 *   `Reason: N dependencies failed.` (2.2x+)
 * - `cannot build derivation '<drv>': N dependencies couldn't be built` (≤ 2.3) and
 *   `error: N dependencies of derivation '<drv>' failed to build` (2.4+)
 * - `error: build of '<drv>' on 'ssh://host' failed: ...`, `building '<drv>' on 'ssh://host'...`
 *   (which builder it ran on), `hash mismatch in fixed-output derivation '<drv>'`, time-outs, the
 *   platform mismatch message, and `Failed to find a machine for remote build!`.
 *
 * Every path is validated as a store path; anything else is reported as ignored, never passed on.
 *
 * @module
 */

import { HASH_LENGTH, STORE_DIR, storePathProblem } from "./store_path.ts";

/** Why a derivation did not build. */
export type FailureCause =
  /** Its builder failed (exit code or signal): it has a build log. */
  | "builder"
  /** It was never built because dependencies failed: no build log of its own. */
  | "dependency"
  /** A fixed-output derivation produced a different hash. */
  | "hash-mismatch"
  /** The builder succeeded but did not produce an output. */
  | "missing-output"
  /** `timeout` or `max-silent-time` was reached. */
  | "timeout"
  /** `max-build-log-size` was exceeded. */
  | "log-limit"
  /** No machine (local or remote) has the required system or features. */
  | "platform"
  /** The build hook found no machine for it. */
  | "no-machine"
  /** Anything else Nix said about it. */
  | "other";

/** One failing derivation as the build output tells it. */
export interface BuildFailure {
  /** The `.drv` path (validated). */
  drv: string;
  /** Why it failed. */
  cause: FailureCause;
  /** Nix's own words, e.g. `exit code 2`, `signal 9 (Killed)`, `3 dependencies failed`. */
  reason: string;
  /** The builder's exit code, when Nix said. */
  exitCode?: number;
  /** The signal that killed the builder, when Nix said. */
  signal?: number;
  /** Number of failed dependencies, for `dependency`. */
  dependencies?: number;
  /** The machine it was built on (`ssh://host`, `ssh-ng://...`), when the output says. */
  host?: string;
  /** The `last N log lines` Nix printed, without the `> ` prefix. */
  logTail: string[];
  /** The 1-based line of the output where its failure was first reported. */
  line: number;
}

/** A path-like text in the output that was not a valid store path. */
export interface IgnoredPath {
  /** The text, as found. */
  text: string;
  /** Why it was ignored. */
  reason: string;
  /** The 1-based line. */
  line: number;
}

/** What the build output says. */
export interface BuildOutputSummary {
  /** Every failing derivation, in the order the output first mentions it. */
  failures: BuildFailure[];
  /** Which machine each derivation was built on (`building '<drv>' on '<machine>'`). */
  builtOn: Record<string, string>;
  /** The top-level derivations of `error: build of '...' failed` (Nix ≤ 2.3). */
  topLevel: string[];
  /** Path-like texts that were not valid store paths. */
  ignored: IgnoredPath[];
  /** Lines read. */
  lines: number;
}

const CAUSE_RANK: Record<FailureCause, number> = {
  other: 0,
  dependency: 1,
  "no-machine": 2,
  platform: 2,
  "log-limit": 3,
  timeout: 3,
  "missing-output": 4,
  "hash-mismatch": 4,
  builder: 4,
};

const MAX_TAIL = 200;
const MAX_FAILURES = 10_000;
const MAX_IGNORED = 100;

// A quoted path: ASCII or curly quotes (Nix 1.x), the path itself checked separately.
const Q_OPEN = "['‘\"]";
const Q_CLOSE = "['’\"]";
const PATH = "(\\/nix\\/store\\/[^'’\"\\n]+)";
const QP = `${Q_OPEN}${PATH}${Q_CLOSE}`;

const RE = {
  building: new RegExp(`^building ${QP}(?: on ${Q_OPEN}([^'’"]+)${Q_CLOSE})?`),
  builderFailed: new RegExp(
    `builder for ${QP} failed (with exit code (\\d+)|due to signal (\\d+)(?: \\(([^)]*)\\))?|to produce output path(?: for output ${Q_OPEN}([^'’"]+)${Q_CLOSE})?)`,
  ),
  remoteFailed: new RegExp(`^build of ${QP} on ${Q_OPEN}([^'’"]+)${Q_CLOSE} failed(?:: (.*))?$`),
  cannotBuild: new RegExp(`^Cannot build ${QP}\\.?$`),
  reason: /^Reason: (.*?)\.?$/,
  depOld: new RegExp(`^cannot build derivation ${QP}: (\\d+) dependencies couldn't be built`),
  depNew: new RegExp(`^(\\d+) dependencies of derivation ${QP} failed to build`),
  buildOf: /^build of ((?:['‘"]\/nix\/store\/[^'’"\s]+['’"](?:, )?)+) failed$/,
  hashMismatch: new RegExp(`hash mismatch in fixed-output derivation ${QP}`),
  timedOut: new RegExp(`${QP} timed out after (\\d+) seconds( of silence)?`),
  logLimit: new RegExp(`${QP} killed after writing more than (\\d+) bytes of log output`),
  platform: new RegExp(
    `a ${Q_OPEN}([^'’"]+)${Q_CLOSE} with features \\{([^}]*)\\} is required to build ${QP}, but I am a ${Q_OPEN}([^'’"]+)${Q_CLOSE}`,
  ),
  noMachine: /^Failed to find a machine for remote build!?$/,
  logHint: /(?:^|run:?\s*['‘"]?)(?:nix log|nix-store -l) (\/nix\/store\/[^'’"\s]+?)['’"]?\.?$/,
  derivationName: /^derivation: (\S+)$/,
  lastLines: /^(?:;\s*)?[Ll]ast (\d+) log lines:$/,
  tailLine: /^> ?(.*)$/,
  inlineLast: /; last (\d+) log lines:$/,
};

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;

/**
 * Removes ANSI escape sequences (colours, OSC links) from a line.
 *
 * @example
 * ```ts
 * import { stripAnsi } from "./build_output.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(stripAnsi("\x1b[35;1m/nix/store/x\x1b[0m"), "/nix/store/x");
 * ```
 */
export function stripAnsi(text: string): string {
  return text.includes("\x1b") ? text.replace(ANSI, "") : text;
}

/**
 * Reads build output line by line, keeping only what it needs (bounded memory).
 *
 * @example
 * ```ts
 * import { BuildOutputParser } from "./build_output.ts";
 * import assert from "node:assert/strict";
 *
 * const parser = new BuildOutputParser();
 * parser.push("error: builder for '/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv' failed with exit code 1;");
 * parser.push("       last 1 log lines:");
 * parser.push("       > hello");
 * const summary = parser.finish();
 * assert.equal(summary.failures[0]?.exitCode, 1);
 * assert.deepEqual(summary.failures[0]?.logTail, ["hello"]);
 * ```
 */
export class BuildOutputParser {
  #failures = new Map<string, BuildFailure>();
  #builtOn: Record<string, string> = {};
  #topLevel: string[] = [];
  #ignored: IgnoredPath[] = [];
  #line = 0;
  /** The failure whose `last N log lines` are being read, and how it reads them. */
  #tailOf: { failure: BuildFailure; style: "arrow" | "indent"; seen: number } | undefined;
  /** The failure a `Cannot build` block is about (its `Reason:` line follows). */
  #blockOf: BuildFailure | undefined;
  #expectDerivationName = false;
  /** The derivation of the last `building '...'` line, and the log lines printed since (nix-build). */
  #current: { drv: string; lines: string[] } | undefined;

  /** Feeds one line (without its newline). */
  push(rawLine: string): void {
    this.#line++;
    const line = stripAnsi(rawLine).replace(/\r$/, "");
    const trimmed = line.trim();
    const text = trimmed.replace(/^error: /, "");

    if (this.#tailOf !== undefined && this.#readTail(line, trimmed)) return;

    if (this.#expectDerivationName) {
      this.#expectDerivationName = false;
      const name = RE.derivationName.exec(text);
      if (name) {
        const drv = this.#path(`${STORE_DIR}/${name[1]}`);
        if (drv) this.#record(drv, "no-machine", "no machine for its system and features", {});
        return;
      }
    }

    if (this.#blockOf !== undefined) {
      const reason = RE.reason.exec(text);
      if (reason) {
        this.#applyReason(this.#blockOf, reason[1]!);
        return;
      }
      const last = RE.lastLines.exec(text);
      if (last) {
        // Nix's own "last N log lines" replace whatever nix-build printed inline.
        this.#blockOf.logTail = [];
        this.#tailOf = { failure: this.#blockOf, style: "arrow", seen: 0 };
        return;
      }
      if (
        /^(Output paths:|\/nix\/store\/|For full logs, run|nix log |nix-store -l |Required system|Current system)/
          .test(text)
      ) {
        return;
      }
      this.#blockOf = undefined;
    }

    this.#parseLine(text, trimmed, line);
  }

  #readTail(line: string, trimmed: string): boolean {
    const tail = this.#tailOf!;
    if (tail.style === "arrow") {
      const m = RE.tailLine.exec(trimmed);
      if (m) {
        this.#addTail(tail.failure, m[1]!);
        return true;
      }
    } else if (/^ {2}/.test(line)) {
      // Nix ≤ 2.3 indents the log tail by two spaces.
      this.#addTail(tail.failure, line.slice(2));
      tail.seen++;
      return true;
    }
    this.#tailOf = undefined;
    return false;
  }

  #addTail(failure: BuildFailure, text: string): void {
    failure.logTail.push(text);
    if (failure.logTail.length > MAX_TAIL) failure.logTail.shift();
  }

  #parseLine(text: string, trimmed: string, raw: string = trimmed): void {
    let m: RegExpExecArray | null;
    if ((m = RE.building.exec(text))) {
      const drv = this.#path(m[1]!);
      if (drv && m[2] !== undefined) this.#builtOn[drv] = m[2];
      this.#current = drv ? { drv, lines: [] } : undefined;
      return;
    }
    if ((m = RE.remoteFailed.exec(text))) {
      const drv = this.#path(m[1]!);
      if (drv) {
        this.#builtOn[drv] = m[2]!;
        const failure = this.#record(drv, "other", `build on ${m[2]} failed`, { host: m[2]! });
        const rest = (m[3] ?? "").replace(/^error: /, "");
        if (rest !== "") {
          if (/^Cannot build /.test(rest)) {
            this.#parseLine(rest, rest);
          } else if (!RE.builderFailed.test(rest)) {
            failure.reason = rest.replace(/\.$/, "");
          } else {
            this.#parseLine(rest, rest);
          }
        }
      }
      return;
    }
    if ((m = RE.builderFailed.exec(text))) {
      const drv = this.#path(m[1]!);
      if (!drv) return;
      let failure: BuildFailure;
      if (m[3] !== undefined) {
        failure = this.#record(drv, "builder", `exit code ${m[3]}`, { exitCode: Number(m[3]) });
      } else if (m[4] !== undefined) {
        const name = m[5] ? ` (${m[5]})` : "";
        failure = this.#record(drv, "builder", `signal ${m[4]}${name}`, { signal: Number(m[4]) });
      } else {
        const output = m[6] ? ` '${m[6]}'` : "";
        failure = this.#record(drv, "missing-output", `did not produce output${output}`, {});
      }
      const inline = RE.inlineLast.exec(text);
      if (inline) {
        failure.logTail = [];
        this.#tailOf = { failure, style: "indent", seen: 0 };
      } else if (/;$/.test(trimmed)) {
        // 2.4+: "failed with exit code 1;" then "last N log lines:" on the next line.
        this.#blockOf = failure;
      }
      return;
    }
    if ((m = RE.cannotBuild.exec(text))) {
      const drv = this.#path(m[1]!);
      if (drv) this.#blockOf = this.#record(drv, "other", "cannot build", {});
      return;
    }
    if ((m = RE.depOld.exec(text))) {
      const drv = this.#path(m[1]!);
      if (drv) {
        const n = Number(m[2]);
        this.#record(drv, "dependency", `${n} ${n === 1 ? "dependency" : "dependencies"} failed`, {
          dependencies: n,
        });
      }
      return;
    }
    if ((m = RE.depNew.exec(text))) {
      const drv = this.#path(m[2]!);
      if (drv) {
        const n = Number(m[1]);
        this.#record(drv, "dependency", `${n} ${n === 1 ? "dependency" : "dependencies"} failed`, {
          dependencies: n,
        });
      }
      return;
    }
    if ((m = RE.buildOf.exec(text))) {
      for (const quoted of m[1]!.split(/, /)) {
        const drv = this.#path(quoted.slice(1, -1));
        if (drv && !this.#topLevel.includes(drv)) this.#topLevel.push(drv);
      }
      return;
    }
    if ((m = RE.hashMismatch.exec(text))) {
      const drv = this.#path(m[1]!);
      if (drv) this.#record(drv, "hash-mismatch", "hash mismatch in fixed-output derivation", {});
      return;
    }
    if ((m = RE.timedOut.exec(text))) {
      const drv = this.#path(m[1]!);
      const what = m[3] ? " of silence (max-silent-time)" : " (timeout)";
      if (drv) this.#record(drv, "timeout", `timed out after ${m[2]} seconds${what}`, {});
      return;
    }
    if ((m = RE.logLimit.exec(text))) {
      const drv = this.#path(m[1]!);
      if (drv) {
        this.#record(drv, "log-limit", `log exceeded ${m[2]} bytes (max-build-log-size)`, {});
      }
      return;
    }
    if ((m = RE.platform.exec(text))) {
      const drv = this.#path(m[3]!);
      if (drv) {
        const features = m[2]!.trim() === "" ? "" : ` with features {${m[2]}}`;
        this.#record(
          drv,
          "platform",
          `needs a '${m[1]}'${features}, this machine is '${m[4]}'`,
          {},
        );
      }
      return;
    }
    if (RE.noMachine.test(text)) {
      this.#expectDerivationName = true;
      return;
    }
    if ((m = RE.logHint.exec(text))) {
      // "For full logs, run 'nix log <drv>'": printed only for a builder that failed.
      const drv = this.#path(m[1]!);
      if (drv && !this.#failures.has(drv)) {
        this.#record(drv, "builder", "builder failed (Nix pointed to its log)", {});
      }
      return;
    }
    // nix-build prints the builder's output as it comes: keep the last lines of the current build.
    if (
      this.#current !== undefined &&
      !/^(copying \d+ paths|copying path |error: |warning: )/.test(trimmed)
    ) {
      this.#current.lines.push(raw);
      if (this.#current.lines.length > 25) this.#current.lines.shift();
    }
  }

  #applyReason(failure: BuildFailure, reason: string): void {
    let m: RegExpExecArray | null;
    if ((m = /^builder failed with exit code (\d+)/.exec(reason))) {
      this.#merge(failure, "builder", `exit code ${m[1]}`, { exitCode: Number(m[1]) });
    } else if ((m = /^builder failed due to signal (\d+)(?: \(([^)]*)\))?/.exec(reason))) {
      const name = m[2] ? ` (${m[2]})` : "";
      this.#merge(failure, "builder", `signal ${m[1]}${name}`, { signal: Number(m[1]) });
    } else if ((m = /^(\d+) dependenc(?:y|ies) failed/.exec(reason))) {
      const n = Number(m[1]);
      this.#merge(failure, "dependency", `${n} ${n === 1 ? "dependency" : "dependencies"} failed`, {
        dependencies: n,
      });
    } else if (/required system or feature not available/.test(reason)) {
      this.#merge(failure, "platform", reason, {});
    } else if (/timed out/.test(reason)) {
      this.#merge(failure, "timeout", reason, {});
    } else if (/hash mismatch/.test(reason)) {
      this.#merge(failure, "hash-mismatch", reason, {});
    } else {
      this.#merge(failure, "other", reason, {});
    }
  }

  /** Validates a path found in the output; records why when it is not a store path. */
  #path(text: string): string | null {
    const clean = text.replace(/[.,;:]+$/, "");
    const problem = storePathProblem(clean);
    if (problem === null) return clean;
    if (this.#ignored.length < MAX_IGNORED) {
      this.#ignored.push({ text: clean.slice(0, 300), reason: problem, line: this.#line });
    }
    return null;
  }

  #record(
    drv: string,
    cause: FailureCause,
    reason: string,
    extra: Partial<Pick<BuildFailure, "exitCode" | "signal" | "dependencies" | "host">>,
  ): BuildFailure {
    let failure = this.#failures.get(drv);
    if (failure === undefined) {
      const inline = this.#current?.drv === drv ? [...this.#current.lines] : [];
      failure = { drv, cause, reason, logTail: inline, line: this.#line };
      if (this.#failures.size < MAX_FAILURES) this.#failures.set(drv, failure);
      Object.assign(failure, extra);
      return failure;
    }
    this.#merge(failure, cause, reason, extra);
    return failure;
  }

  #merge(
    failure: BuildFailure,
    cause: FailureCause,
    reason: string,
    extra: Partial<Pick<BuildFailure, "exitCode" | "signal" | "dependencies" | "host">>,
  ): void {
    const placeholder = failure.reason === "cannot build" || failure.reason.startsWith("build on ");
    const rank = CAUSE_RANK[cause];
    const current = CAUSE_RANK[failure.cause];
    const replace = rank > current || (rank === current && placeholder);
    if (replace) {
      failure.cause = cause;
      failure.reason = reason;
    }
    // The first report wins: after a remote build, Nix's second line gives the hook's exit code.
    const fields = failure as unknown as Record<string, unknown>;
    for (const [key, value] of Object.entries(extra)) {
      if (value !== undefined && (replace || fields[key] === undefined)) fields[key] = value;
    }
  }

  /** Ends the input and returns what was found. */
  finish(): BuildOutputSummary {
    const failures = [...this.#failures.values()];
    for (const failure of failures) {
      if (failure.host === undefined && this.#builtOn[failure.drv] !== undefined) {
        failure.host = this.#builtOn[failure.drv]!;
      }
    }
    return {
      failures,
      builtOn: { ...this.#builtOn },
      topLevel: [...this.#topLevel],
      ignored: [...this.#ignored],
      lines: this.#line,
    };
  }
}

/**
 * Extracts every failing derivation from build output text.
 *
 * @example Nix 2.3: a builder failed, two derivations depended on it
 * ```ts
 * import { parseBuildOutput, rootFailures } from "./build_output.ts";
 * import assert from "node:assert/strict";
 *
 * const summary = parseBuildOutput([
 *   "building '/nix/store/c74h6ikm6iiri40f4xx0lnwpsbbix9d1-b43-firmware-5.100.138.drv'...",
 *   "builder for '/nix/store/c74h6ikm6iiri40f4xx0lnwpsbbix9d1-b43-firmware-5.100.138.drv' failed with exit code 126",
 *   "cannot build derivation '/nix/store/lhp9clw4wx4vqllsdpqvmfjxmzpi3pl0-firmware.drv': 1 dependencies couldn't be built",
 * ].join("\n"));
 * assert.deepEqual(summary.failures.map((f) => f.cause), ["builder", "dependency"]);
 * assert.equal(rootFailures(summary)[0]?.exitCode, 126);
 * ```
 */
export function parseBuildOutput(text: string): BuildOutputSummary {
  const parser = new BuildOutputParser();
  let start = 0;
  while (start <= text.length) {
    const end = text.indexOf("\n", start);
    if (end < 0) {
      if (start < text.length) parser.push(text.slice(start));
      break;
    }
    parser.push(text.slice(start, end));
    start = end + 1;
  }
  return parser.finish();
}

/**
 * Reads build output from a byte stream (a file, stdin) without holding it whole.
 *
 * @example
 * ```ts
 * import { parseBuildOutputStream } from "./build_output.ts";
 * import assert from "node:assert/strict";
 *
 * const stream = ReadableStream.from([new TextEncoder().encode(
 *   "error: 1 dependencies of derivation '/nix/store/dsrvvhrhalr8li1i9vq0r2xmb52ywcnk-unit-languagetool.service.drv' failed to build\n",
 * )]);
 * const summary = await parseBuildOutputStream(stream);
 * assert.equal(summary.failures[0]?.dependencies, 1);
 * ```
 */
export async function parseBuildOutputStream(
  stream: ReadableStream<Uint8Array>,
): Promise<BuildOutputSummary> {
  const parser = new BuildOutputParser();
  const decoder = new TextDecoder();
  let pending = "";
  const maxLine = 1 << 20;
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let start = 0;
    while (true) {
      const end = pending.indexOf("\n", start);
      if (end < 0) break;
      parser.push(pending.slice(start, Math.min(end, start + maxLine)));
      start = end + 1;
    }
    pending = pending.slice(start);
    if (pending.length > maxLine) pending = pending.slice(0, maxLine);
  }
  pending += decoder.decode();
  if (pending !== "") parser.push(pending);
  return parser.finish();
}

/**
 * The failures that have a build log of their own: everything but "a dependency failed".
 *
 * @example
 * ```ts
 * import { parseBuildOutput, rootFailures } from "./build_output.ts";
 * import assert from "node:assert/strict";
 *
 * const summary = parseBuildOutput(
 *   "error: 1 dependencies of derivation '/nix/store/dsrvvhrhalr8li1i9vq0r2xmb52ywcnk-unit-languagetool.service.drv' failed to build",
 * );
 * assert.deepEqual(rootFailures(summary), []);
 * ```
 */
export function rootFailures(summary: BuildOutputSummary): BuildFailure[] {
  return summary.failures.filter((f) =>
    f.cause !== "dependency" && f.cause !== "platform" && f.cause !== "no-machine"
  );
}

/**
 * Every valid store path mentioned in a text, in order, each once (for pasted snippets that do
 * not follow any of Nix's phrasings).
 *
 * @example
 * ```ts
 * import { findStorePaths } from "./build_output.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(
 *   findStorePaths("run 'nix log /nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv'."),
 *   ["/nix/store/f6qc9gny4w6ajssphr39im341ph0klsn-fail.drv"],
 * );
 * ```
 */
export function findStorePaths(text: string): string[] {
  const found: string[] = [];
  const re = new RegExp(
    `${STORE_DIR.replaceAll("/", "\\/")}\\/[0-9a-z]{${HASH_LENGTH}}-[A-Za-z0-9+\\-._?=]+`,
    "g",
  );
  for (const match of stripAnsi(text).matchAll(re)) {
    const path = match[0].replace(/[.]+$/, "");
    if (storePathProblem(path) === null && !found.includes(path)) found.push(path);
  }
  return found;
}
