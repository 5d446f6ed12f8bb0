/**
 * Canary derivations: a one-step derivation no store or cache can already have (a nonce in it), built
 * with `--max-jobs 0` and exactly one machine as builder, then looked up on that builder to prove it
 * was built there, and deleted on both sides.
 *
 * Linux systems build with a tiny static program from `elf.ts` (no libc, no shell, works in the
 * sandbox, and for an emulated system it proves binfmt + qemu run that system's code); Darwin systems
 * build with `/bin/sh`. Everything runs through a {@link Target}, so every command has a time-out and
 * no value reaches a shell unquoted.
 *
 * @module
 */

import { elfArch, smokeElf } from "./elf.ts";
import { describeFailure, type RunFailure, type Target } from "./target.ts";

/** How a canary for a system is built. */
export type CanaryKind =
  /** A generated static ELF program, copied into the store as the builder. */
  | "elf"
  /** `/bin/sh -c ...` (Darwin, where `/bin/sh` always exists and there is no ELF). */
  | "sh";

/**
 * How a canary for `system` is built, or `null` when none can be (e.g. `riscv32-linux`, `wasm32-wasi`).
 *
 * @example
 * ```ts
 * import { canaryKind } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(canaryKind("aarch64-linux"), "elf");
 * assert.equal(canaryKind("aarch64-darwin"), "sh");
 * assert.equal(canaryKind("wasm32-wasi"), null);
 * ```
 */
export function canaryKind(system: string): CanaryKind | null {
  if (elfArch(system) !== undefined) return "elf";
  if (/^(x86_64|aarch64)-darwin$/.test(system)) return "sh";
  return null;
}

/**
 * A fresh nonce: 16 lower-case hex digits, safe in a store path name and in Nix and shell strings.
 *
 * @example
 * ```ts
 * import { newCanaryNonce } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * assert.match(newCanaryNonce(), /^[0-9a-f]{16}$/);
 * assert.notEqual(newCanaryNonce(), newCanaryNonce());
 * ```
 */
export function newCanaryNonce(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 16);
}

/**
 * Quotes a string as a Nix string literal (`"`, `\` and `${` escaped).
 *
 * @example
 * ```ts
 * import { nixString } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(nixString('a"${b}'), '"a\\"\\${b}"');
 * ```
 */
export function nixString(value: string): string {
  return `"${value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("${", "\\${")}"`;
}

/** What {@link canaryExpression} needs. */
export interface CanaryExpressionOptions {
  /** The derivation's `system`. */
  system: string;
  /** The nonce (see {@link newCanaryNonce}); it names the derivation and its inputs. */
  nonce: string;
  /** For an `elf` canary: the absolute path of the program on the machine that evaluates. */
  program?: string;
  /** `requiredSystemFeatures`, e.g. the line's mandatory features. */
  requiredSystemFeatures?: readonly string[];
}

/**
 * A Nix expression (for `nix-build -E`) of a one-step canary derivation named `nbr-canary-<nonce>`.
 * The `elf` form copies `program` into the store under a name holding the nonce too, so deleting one
 * canary's paths never touches another's.
 *
 * @example
 * ```ts
 * import { canaryExpression } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * const expr = canaryExpression({
 *   system: "aarch64-linux",
 *   nonce: "0123456789abcdef",
 *   program: "/tmp/nbr/canary-aarch64",
 *   requiredSystemFeatures: ["big-parallel"],
 * });
 * assert.match(expr, /name = "nbr-canary-0123456789abcdef";/);
 * assert.match(expr, /path = \/\. \+ "\/tmp\/nbr\/canary-aarch64";/);
 * assert.match(expr, /requiredSystemFeatures = \[ "big-parallel" \];/);
 * ```
 */
export function canaryExpression(options: CanaryExpressionOptions): string {
  const { system, nonce } = options;
  if (!/^[0-9a-z]+$/.test(nonce)) {
    throw new Error(`Cannot use canary nonce '${nonce}': only lower-case letters and digits`);
  }
  const kind = canaryKind(system);
  if (kind === null) throw new Error(`Cannot build a canary for '${system}': no program for it`);
  const features = options.requiredSystemFeatures ?? [];
  const lines = [
    "derivation {",
    `  name = "nbr-canary-${nonce}";`,
    `  system = ${nixString(system)};`,
  ];
  if (kind === "elf") {
    const program = options.program;
    if (program === undefined || !program.startsWith("/")) {
      throw new Error(`Cannot build a '${system}' canary: its program needs an absolute path`);
    }
    lines.push(
      `  builder = builtins.path { path = /. + ${
        nixString(program)
      }; name = "nbr-canary-prog-${nonce}"; };`,
      `  args = [ (builtins.placeholder "out") ];`,
    );
  } else {
    lines.push(
      `  builder = "/bin/sh";`,
      `  args = [ "-c" "echo nbr-canary ${nonce}; echo ${nonce} > $out" ];`,
    );
  }
  lines.push(`  nonce = "${nonce}";`, "  allowSubstitutes = false;");
  if (features.length > 0) {
    lines.push(`  requiredSystemFeatures = [ ${features.map(nixString).join(" ")} ];`);
  }
  lines.push("}");
  return lines.join("\n");
}

/** One `building '<drv>' on '<store>'` line of Nix's output. */
export interface RemoteBuildLine {
  /** The derivation path. */
  drv: string;
  /** The store URI the build went to, as Nix prints it (`ssh://builder1`). */
  store: string;
}

/**
 * Finds where Nix says it built each derivation: the `building '<drv>' on '<store>'...` lines that
 * Nix prints for remote builds (local builds print no `on`).
 *
 * @example
 * ```ts
 * import { parseRemoteBuildLines } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * const stderr = "building '/nix/store/abc-nbr-canary-1.drv' on 'ssh://builder1'...\ncopying 0 paths...\n";
 * assert.deepEqual(parseRemoteBuildLines(stderr), [{ drv: "/nix/store/abc-nbr-canary-1.drv", store: "ssh://builder1" }]);
 * ```
 */
export function parseRemoteBuildLines(output: string): RemoteBuildLine[] {
  const found: RemoteBuildLine[] = [];
  for (const match of output.matchAll(/building '([^']+\.drv)' on '([^']+)'/g)) {
    found.push({ drv: match[1]!, store: match[2]! });
  }
  return found;
}

/**
 * The host part of a store URI, for comparing what Nix printed with a machine line:
 * `ssh-ng://nixremote@builder1?remote-program=x` → `nixremote@builder1`; a bare host stays as is.
 *
 * @example
 * ```ts
 * import { storeHost } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(storeHost("ssh-ng://u@b1?remote-program=/x"), "u@b1");
 * assert.equal(storeHost("b1"), "b1");
 * ```
 */
export function storeHost(uri: string): string {
  return uri.replace(/^[a-z][a-z0-9+.-]*:\/\//, "").replace(/\?.*$/, "").replace(/\/$/, "");
}

/** How a canary build ended. */
export type CanaryOutcome =
  /** Built, and the builder has the output (and, where it keeps one, the log). */
  | "built-there"
  /** Nix built it, but on another machine (or said nothing about where). */
  | "built-elsewhere"
  /** Nix built it but the builder has no trace of it. */
  | "unproven"
  /** The build failed; `message` holds Nix's own error. */
  | "failed"
  /** The build did not end in time. */
  | "timeout"
  /** No canary exists for this system, or it could not be prepared. */
  | "skipped";

/** What one canary build showed. */
export interface CanaryResult {
  /** The system it was built for. */
  system: string;
  /** How it ended. */
  outcome: CanaryOutcome;
  /** The nonce that made it unique. */
  nonce: string;
  /**
   * Nix's own time for the build, in milliseconds: from its `building '<drv>' on '<machine>'` line to
   * its `copying path '<out>' from '<machine>'` line (the whole `nix-build` when those are missing).
   */
  ms: number;
  /** Wall-clock time of the whole `nix-build` (evaluation, connection, every canary), in milliseconds. */
  totalMs?: number;
  /** The derivation, when Nix got that far. */
  drvPath?: string;
  /** The output path, when the build succeeded. */
  outPath?: string;
  /** Where Nix said it built it (`ssh://builder1`). */
  builtOn?: string;
  /** Whether the builder holds the output path. */
  outputOnBuilder?: boolean;
  /** The deriver the builder recorded for the output. */
  deriverOnBuilder?: string;
  /** Whether the builder kept a build log (legacy `ssh://` builders keep none: serve mode turns it off). */
  logOnBuilder?: boolean;
  /** Nix's own error lines when it failed, or why it was skipped. */
  message?: string;
  /** The argv that built it. */
  argv?: string[];
  /** Paths that could not be deleted again (on which side). */
  leftBehind?: string[];
}

/** What {@link runCanaries} needs. */
export interface RunCanariesOptions {
  /** The systems to build a canary for (one derivation each, all in one `nix-build`). */
  systems: readonly string[];
  /** The machine line to use as the only builder (passed as `--option builders`). */
  machineLine: string;
  /** The machine's store URI, to check Nix's `building ... on` line against. */
  storeUri: string;
  /** `requiredSystemFeatures` of every canary (at least the line's mandatory features). */
  requiredSystemFeatures?: readonly string[];
  /** Time-out of the build in milliseconds (default 60 000). */
  timeoutMs?: number;
  /** Fixed nonces by system (tests); fresh ones by default. */
  nonces?: Record<string, string>;
  /**
   * Canary programs already written on the controller, by system (see
   * {@link writeCanaryProgram}); the missing ones are written (and removed) for this call.
   */
  programs?: Record<string, string>;
  /** Keep the canaries' paths (for debugging); they are deleted by default. */
  keep?: boolean;
}

/**
 * Cleans Nix's output for a message: no ANSI escapes, no control bytes, no runs of blanks.
 *
 * @example
 * ```ts
 * import { cleanOutput } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(cleanOutput("\x1b[31;1merror:\x1b[0m  a\x01b  \n"), "error: a b\n");
 * ```
 */
export function cleanOutput(text: string): string {
  return text
    // deno-lint-ignore no-control-regex
    .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")
    // deno-lint-ignore no-control-regex
    .replace(/[\x00-\x08\x0b-\x1f\x7f\ufffd]/g, " ")
    .split("\n")
    .map((l) => l.replace(/[ \t]{2,}/g, " ").trim())
    .join("\n");
}

function nixErrorLines(stderr: string): string {
  const lines = cleanOutput(stderr).split("\n").filter((l) => l.trim() !== "");
  // Nix 2.8 prints a failed exec of the builder as a serialised error: keep its message only.
  for (let i = 0; i < lines.length; i++) {
    const exec = /(executing '[^']*': .*)$/.exec(lines[i]!);
    if (exec && /^(Error )+/.test(lines[i]!)) lines[i] = exec[1]!;
  }
  const interesting = lines.filter((l) =>
    /^(error|cannot build on|Failed to find a machine|warning: ignoring)/.test(l.trimStart()) ||
    /Exec format error|Permission denied|Connection|Host key|command not found|timed out/.test(l)
  );
  return [...new Set(interesting.length > 0 ? interesting : lines.slice(-3))].join("\n");
}

/**
 * Writes the canary program for `system` to a fresh temp directory on `target` (mode 0755) and
 * returns its path; `null` when `system` needs none (Darwin's `/bin/sh` canary) or has none.
 * Remove the directory when done.
 *
 * @example
 * ```ts
 * import { writeCanaryProgram } from "./canary.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new LocalTarget();
 * const path = await writeCanaryProgram(target, "x86_64-linux");
 * assert.ok(path !== null && path.endsWith("/canary-x86_64-linux"));
 * assert.equal((await target.run([path!])).stdout, "ok\n");
 * await Deno.remove(path!.slice(0, path!.lastIndexOf("/")), { recursive: true });
 * ```
 */
export async function writeCanaryProgram(target: Target, system: string): Promise<string | null> {
  if (canaryKind(system) !== "elf") return null;
  return await writeProgram(target, smokeElf(system), `canary-${system}`);
}

/** Writes bytes to a new temp file on the target; returns its path (under a fresh `mktemp -d`). */
async function writeProgram(target: Target, bytes: Uint8Array, name: string): Promise<string> {
  const made = await target.run(["mktemp", "-d", "/tmp/nbr-canary.XXXXXXXX"]);
  const dir = made.stdout.trim();
  if (made.code !== 0 || made.failure || !dir.startsWith("/")) {
    throw new Error(`Cannot make a temp dir for the canary: ${describeFailure(["mktemp"], made)}`);
  }
  const path = `${dir}/${name}`;
  const wrote = await target.run(
    ["sh", "-c", 'cat > "$1" && chmod 0755 "$1" && chmod 0755 "$2"', "sh", path, dir],
    { stdin: bytes },
  );
  if (wrote.code !== 0 || wrote.failure) {
    throw new Error(`Cannot write the canary program: ${describeFailure(["sh"], wrote)}`);
  }
  return path;
}

/** One line of Nix's output and when it arrived (ms since the build started). */
export interface TimedLine {
  /** Milliseconds since the build started. */
  at: number;
  /** The line, without its newline. */
  text: string;
}

/** What {@link readCanaryOutput} needs besides the lines. */
export interface ReadCanaryOutputOptions {
  /** The machine the canary was meant for. */
  storeUri: string;
  /** The nonces of the other canaries of the same `nix-build` (their lines are not this one's). */
  others?: readonly string[];
  /** How `nix-build` ended. */
  status: { code: number; failure?: RunFailure; stderr?: string; stdout?: string };
  /** Its whole wall-clock time (the canary's time when Nix's lines give none). */
  totalMs?: number;
  /** Its time-out, for the message. */
  timeoutMs?: number;
}

/**
 * Reads what Nix's output says about one canary (found by its nonce): the derivation, where Nix
 * built it (its \`building '<drv>' on '<machine>'\` line), the output it copied back, Nix's own
 * time for it (from that line to \`copying path '<out>' from\`), and, when it failed, Nix's error
 * lines. The outcome is \`skipped\` while the builder has yet to confirm a successful build.
 *
 * @example
 * ```ts
 * import { readCanaryOutput } from "./canary.ts";
 * import assert from "node:assert/strict";
 *
 * const lines = [
 *   { at: 100, text: "building '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nbr-canary-n1.drv' on 'ssh://b1'..." },
 *   { at: 550, text: "copying path '/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nbr-canary-n1' from 'ssh://b1'..." },
 * ];
 * const read = readCanaryOutput(lines, "n1", { storeUri: "ssh://b1", status: { code: 0 } });
 * assert.equal(read.builtOn, "ssh://b1");
 * assert.equal(read.ms, 450);
 * assert.equal(read.outPath, "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nbr-canary-n1");
 * assert.equal(read.outcome, "skipped"); // the builder must confirm it
 * ```
 */
export function readCanaryOutput(
  lines: readonly TimedLine[],
  nonce: string,
  options: ReadCanaryOutputOptions,
): Pick<CanaryResult, "outcome" | "ms" | "drvPath" | "outPath" | "builtOn" | "message"> {
  const output = lines.map((l) => l.text).join("\n");
  const status = options.status;
  const read: Pick<CanaryResult, "outcome" | "ms" | "drvPath" | "outPath" | "builtOn" | "message"> =
    {
      outcome: "skipped",
      ms: options.totalMs ?? 0,
    };
  const drvPath = new RegExp(`/nix/store/[0-9a-z]{32}-nbr-canary-${nonce}\\.drv`).exec(output)?.[0];
  if (drvPath !== undefined) read.drvPath = drvPath;
  const start = lines.find((l) => l.text.includes(`-nbr-canary-${nonce}.drv' on '`));
  const on = start ? parseRemoteBuildLines(start.text)[0]?.store : undefined;
  if (on !== undefined) read.builtOn = on;
  const copied = lines.find((l) =>
    /^copying path '/.test(l.text.trim()) && l.text.includes(`-nbr-canary-${nonce}' from '`)
  );
  const outPath = copied ? /'(\/nix\/store\/[^']+)'/.exec(copied.text)?.[1] : undefined;
  if (outPath !== undefined) read.outPath = outPath;
  const own = lines.filter((l) =>
    l.text.includes(nonce) && /error|failed|Exec format/i.test(l.text)
  );
  const end = copied ?? own.at(-1);
  if (start && end) read.ms = Math.max(0, end.at - start.at);
  if (outPath !== undefined) {
    if (on === undefined || storeHost(on) !== storeHost(options.storeUri)) {
      read.outcome = "built-elsewhere";
      read.message = on === undefined
        ? "Nix printed no \"building '...' on '...'\" line for the canary"
        : `Nix built it on '${on}', not on '${options.storeUri}'`;
      const ignored = /warning: ignoring the client-specified setting 'builders'[^\n]*/.exec(
        output,
      );
      if (ignored) read.message += `\n${ignored[0]}`;
    }
    return read;
  }
  if (status.failure === "timeout") {
    read.outcome = "timeout";
    read.message = `'nix-build' did not finish within ${options.timeoutMs ?? "its"} ms` +
      (on
        ? ` (it had started building on '${on}')`
        : " and never started the build: Nix waits for a free slot on the machine " +
          "(its max jobs is 0, or every slot is taken)");
    return read;
  }
  read.outcome = "failed";
  const others = options.others ?? [];
  // Nix's lines about this canary, and the ones about no canary in particular (connection errors).
  const relevant = lines.filter((l) => !others.some((n) => l.text.includes(n))).map((l) => l.text);
  read.message = status.failure
    ? describeFailure(["nix-build"], { stdout: "", stderr: "", ...status })
    : nixErrorLines(relevant.join("\n")) || `nix-build exited with ${status.code}`;
  return read;
}

/**
 * Builds one canary per system in `options.systems` with a single `nix-build` through the
 * controller's Nix: `--max-jobs 0`, only `options.machineLine` as builder, substituters off,
 * `--keep-going`. Each canary's time is Nix's own: from its `building '<drv>' on '<machine>'` line to
 * its `copying path '<out>' from '<machine>'` line. Then the builder (through `builder`, a target
 * on it) is asked whether it holds each output, its deriver and a build log; then every canary path
 * is deleted on both sides. Never throws for a failed build: each result's outcome and Nix's own
 * message say what happened.
 *
 * @example Prove that builder1 builds both of its systems
 * ```ts ignore
 * import { runCanaries } from "./canary.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import { SshTarget } from "./ssh_target.ts";
 *
 * const results = await runCanaries(new LocalTarget(), new SshTarget("builder1"), {
 *   systems: ["x86_64-linux", "aarch64-linux"],
 *   machineLine: "ssh://builder1 x86_64-linux,aarch64-linux - 2 1 big-parallel",
 *   storeUri: "ssh://builder1",
 * });
 * for (const r of results) console.log(r.system, r.outcome, r.ms);
 * ```
 */
export async function runCanaries(
  controller: Target,
  builder: Target | null,
  options: RunCanariesOptions,
): Promise<CanaryResult[]> {
  const results: CanaryResult[] = [];
  const ownDirs: string[] = [];
  const expressions: string[] = [];
  for (const system of options.systems) {
    const nonce = options.nonces?.[system] ?? newCanaryNonce();
    const result: CanaryResult = { system, outcome: "skipped", nonce, ms: 0 };
    results.push(result);
    const kind = canaryKind(system);
    if (kind === null) {
      result.message = `no canary program exists for '${system}'`;
      continue;
    }
    let program = options.programs?.[system];
    if (kind === "elf" && program === undefined) {
      try {
        program = await writeProgram(controller, smokeElf(system), `canary-${system}`);
        ownDirs.push(program.slice(0, program.lastIndexOf("/")));
      } catch (error) {
        result.message = (error as Error).message;
        continue;
      }
    }
    expressions.push(canaryExpression({
      system,
      nonce,
      ...(program !== undefined ? { program } : {}),
      requiredSystemFeatures: options.requiredSystemFeatures ?? [],
    }));
  }
  const building = results.filter((r) => r.message === undefined);
  if (building.length === 0) return results;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const argv = [
    "nix-build",
    "--no-out-link",
    "--keep-going",
    "--max-jobs",
    "0",
    "--option",
    "builders",
    options.machineLine,
    "--option",
    "substituters",
    "",
    "--option",
    "builders-use-substitutes",
    "false",
    "-E",
    `[\n${expressions.map((e) => `(${e})`).join("\n")}\n]`,
  ];
  // Nix's progress goes to stderr: merge it into stdout to timestamp each line as it arrives.
  const lines: TimedLine[] = [];
  const started = performance.now();
  const run = controller.stream(["/bin/sh", "-c", 'exec "$@" 2>&1', "sh", ...argv], { timeoutMs });
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of run.stdout) {
    const at = Math.round(performance.now() - started);
    pending += decoder.decode(chunk, { stream: true });
    const parts = pending.split("\n");
    pending = parts.pop() ?? "";
    for (const text of parts) lines.push({ at, text });
  }
  if (pending !== "") lines.push({ at: Math.round(performance.now() - started), text: pending });
  const status = await run.status;
  const total = Math.round(performance.now() - started);
  for (const result of building) {
    result.argv = argv;
    result.totalMs = total;
    Object.assign(
      result,
      readCanaryOutput(lines, result.nonce, {
        storeUri: options.storeUri,
        others: building.filter((r) => r !== result).map((r) => r.nonce),
        status,
        totalMs: total,
        timeoutMs,
      }),
    );
  }
  // The programs' store paths (their names hold the nonces) are in the derivations' text.
  const paths: string[] = [];
  for (const result of building) {
    if (result.outPath) paths.push(result.outPath);
    if (result.drvPath) {
      paths.push(result.drvPath);
      const text = await controller.readFile(result.drvPath).catch(() => null);
      const program = text?.match(/\/nix\/store\/[0-9a-z]{32}-nbr-canary-prog-[0-9a-z]+/)?.[0];
      if (program) paths.push(program);
    }
  }
  const toProve = building.filter((r) => r.outcome === "skipped" && r.outPath !== undefined);
  const clean = !options.keep && paths.length > 0;
  const [here, there] = await Promise.all([
    clean ? storeScript(controller, [], clean ? paths : []) : Promise.resolve(undefined),
    builder !== null && building.some((r) => r.outcome !== "timeout")
      ? storeScript(
        builder,
        toProve.map((r) => [r.outPath!, r.drvPath ?? ""]),
        clean ? paths : [],
      )
      : Promise.resolve(undefined),
  ]);
  for (const result of toProve) {
    const seen = there?.proved.get(result.outPath!);
    result.outputOnBuilder = seen?.valid ?? false;
    if (seen?.deriver) result.deriverOnBuilder = seen.deriver;
    if (seen?.valid) result.logOnBuilder = seen.log;
    result.outcome = result.outputOnBuilder ? "built-there" : "unproven";
    if (!result.outputOnBuilder) {
      result.message = builder === null
        ? "the builder could not be asked for the output"
        : `Nix said it built on '${result.builtOn}', but that builder does not hold ${result.outPath}`;
    }
  }
  const left = [
    ...(here?.left ?? []).map((p) => `controller:${p}`),
    ...(there?.left ?? []).map((p) => `builder:${p}`),
  ];
  for (const result of building) {
    const mine = left.filter((p) => p.includes(result.nonce));
    if (mine.length > 0) result.leftBehind = mine;
  }
  for (const dir of ownDirs) await controller.run(["rm", "-rf", "--", dir]);
  return results;
}

// Proves and deletes in one call. $1: how many outputs to look for; then that many pairs of
// output and derivation; the rest: paths to delete (only the valid ones are).
// Prints "@valid <out>", "@deriver <out> <drv>", "@log <out>" and "@left <paths>" lines.
const STORE_SCRIPT = `n=$1; shift
while [ "$n" -gt 0 ]; do
  out=$1 drv=$2; shift 2; n=$((n - 1))
  if nix-store --check-validity "$out" 2>/dev/null; then
    echo "@valid $out"
    echo "@deriver $out $(nix-store --query --deriver "$out" 2>/dev/null)"
    if [ -n "$drv" ] && nix-store --read-log "$drv" >/dev/null 2>&1; then echo "@log $out"; fi
  fi
done
[ $# -eq 0 ] && exit 0
if ! inv=$(nix-store --check-validity --print-invalid "$@" 2>/dev/null); then echo "@left $*"; exit 0; fi
keep=
for p in "$@"; do
  case "
$inv
" in *"
$p
"*) ;; *) keep="$keep $p" ;; esac
done
[ -z "$keep" ] && exit 0
nix-store --delete $keep >/dev/null 2>&1 || echo "@left$keep"
`;

interface StoreAnswer {
  proved: Map<string, { valid: boolean; deriver?: string; log: boolean }>;
  left: string[];
}

async function storeScript(
  target: Target,
  prove: [string, string][],
  remove: string[],
): Promise<StoreAnswer> {
  const result = await target.run([
    "/bin/sh",
    "-c",
    STORE_SCRIPT,
    "sh",
    String(prove.length),
    ...prove.flat(),
    ...remove,
  ]);
  const answer: StoreAnswer = { proved: new Map(), left: [] };
  if (result.failure || result.code !== 0) {
    answer.left = remove;
    return answer;
  }
  for (const line of result.stdout.split("\n")) {
    const [tag, first, second] = line.trim().split(/\s+/);
    if (tag === "@valid" && first) answer.proved.set(first, { valid: true, log: false });
    if (tag === "@deriver" && first && second) {
      const seen = answer.proved.get(first);
      if (seen) seen.deriver = second;
    }
    if (tag === "@log" && first) {
      const seen = answer.proved.get(first);
      if (seen) seen.log = true;
    }
    if (tag === "@left") answer.left.push(...line.trim().split(/\s+/).slice(1));
  }
  return answer;
}
