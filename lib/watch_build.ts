/**
 * The wrapped build of `watch_builders.ts -- nix build ...`: runs Nix here with
 * `--log-format internal-json` added, follows its log, and says at the end where each derivation
 * was built and how long it took: the answer to "is it really offloading?".
 *
 * Nix runs as a direct child in this process's process group, so a Ctrl-C typed in the terminal
 * reaches it as usual and Nix stops its builds (local and remote) itself.
 *
 * @module
 */

import type { Finding } from "./findings.ts";
import {
  type BuildRecord,
  BuildTracker,
  type NixLogEvent,
  parseInternalJsonLine,
  withInternalJson,
} from "./internal_json.ts";

/** Options for {@link WrappedBuild}. */
export interface WrappedBuildOptions {
  /** The user's Nix command (`["nix", "build", ".#hello"]`), without `--log-format`. */
  argv: readonly string[];
  /** Time-out in ms: Nix gets SIGINT, then SIGKILL 10 s later. */
  timeoutMs: number;
  /** Called for each `@nix` event, with the time it was read. */
  onEvent?: (event: NixLogEvent, at: number) => void;
  /** Called for each standard-error line that is not an `@nix` event. */
  onText?: (line: string) => void;
  /** Called once for each derivation build that ended (built or failed). */
  onBuildEnd?: (build: BuildRecord) => void;
}

/** How the wrapped Nix ended. */
export interface WrappedBuildResult {
  /** Nix's exit code (128 + signal when killed by one; 127 when not installed). */
  code: number;
  /** What Nix printed on standard output (out paths, `--json`). */
  stdout: string;
  /** Set when Nix did not end on its own. */
  failure?: "timeout" | "interrupted" | "not-found";
  /** Wall time, ms. */
  elapsedMs: number;
}

const SIGNALS: Record<string, number> = { SIGINT: 2, SIGKILL: 9, SIGTERM: 15, SIGHUP: 1 };

/**
 * A Nix build run here with its log followed.
 *
 * @example
 * ```ts ignore
 * import { WrappedBuild } from "./watch_build.ts";
 *
 * const build = new WrappedBuild({ argv: ["nix", "build", ".#hello"], timeoutMs: 3600_000 });
 * const result = await build.run();
 * console.log(result.code, build.tracker.builds);
 * ```
 */
export class WrappedBuild {
  /** The builds seen so far. */
  readonly tracker: BuildTracker = new BuildTracker();
  /** The argv actually run (with `--log-format internal-json`). */
  readonly argv: string[];
  #options: WrappedBuildOptions;
  #child: Deno.ChildProcess | undefined;
  #failure: WrappedBuildResult["failure"];
  #killTimer: ReturnType<typeof setTimeout> | undefined;

  /** Validates the command (throws `RangeError` for a non-Nix one); nothing runs yet. */
  constructor(options: WrappedBuildOptions) {
    this.#options = options;
    this.argv = withInternalJson(options.argv);
  }

  /** Runs Nix to the end. */
  async run(): Promise<WrappedBuildResult> {
    const started = Date.now();
    const [program, ...args] = this.argv as [string, ...string[]];
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(program, {
        args,
        stdin: "inherit",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        return { code: 127, stdout: "", failure: "not-found", elapsedMs: 0 };
      }
      throw error;
    }
    this.#child = child;
    const timer = setTimeout(() => {
      this.#failure ??= "timeout";
      this.#stop();
    }, Math.max(1, this.#options.timeoutMs));
    const stdout = new Response(child.stdout).text();
    await this.#follow(child.stderr);
    const status = await child.status;
    clearTimeout(timer);
    clearTimeout(this.#killTimer);
    this.#child = undefined;
    const code = status.signal ? 128 + (SIGNALS[status.signal] ?? 0) : status.code;
    const result: WrappedBuildResult = {
      code,
      stdout: await stdout,
      elapsedMs: Date.now() - started,
    };
    if (this.#failure) result.failure = this.#failure;
    return result;
  }

  /** Asks Nix to stop (SIGINT, as Ctrl-C does), then kills it after 10 s. */
  interrupt(): void {
    this.#failure ??= "interrupted";
    this.#stop();
  }

  #stop(): void {
    const child = this.#child;
    if (!child) return;
    try {
      child.kill("SIGINT");
    } catch {
      return; // already gone
    }
    this.#killTimer ??= setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // gone
      }
    }, 10_000);
  }

  async #follow(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    const line = (text: string) => {
      const at = Date.now();
      let event: NixLogEvent | null = null;
      try {
        event = parseInternalJsonLine(text);
      } catch {
        event = null; // a damaged line is shown as text rather than lost
      }
      if (event === null) {
        if (text.trim() !== "") this.#options.onText?.(text);
        return;
      }
      const ended = this.tracker.handle(event, at);
      this.#options.onEvent?.(event, at);
      if (ended) this.#options.onBuildEnd?.(ended);
    };
    for await (const chunk of stream) {
      const parts = (partial + decoder.decode(chunk, { stream: true })).split("\n");
      partial = parts.pop() ?? "";
      for (const part of parts) line(part);
    }
    if (partial !== "") line(partial);
  }
}

/**
 * The builder name to show for a machine URI: `ssh://root@builder1?x=y` gives `builder1`, and a
 * local build (`""`) gives `local`.
 *
 * @example
 * ```ts
 * import { machineLabel } from "./watch_build.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(machineLabel("ssh-ng://nix@builder1:2222?remote-program=x"), "builder1");
 * assert.equal(machineLabel(""), "local");
 * ```
 */
export function machineLabel(machine: string): string {
  if (machine === "") return "local";
  const rest = machine.replace(/^[a-z][a-z0-9+.-]*:\/\//, "").replace(/\?.*$/, "");
  const host = rest.slice(rest.lastIndexOf("@") + 1);
  return host.replace(/:\d+$/, "") || machine;
}

/**
 * Formats a duration for people: `850 ms`, `12.3 s`, `4m05s`, `1h02m`.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./watch_build.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual([850, 12_340, 245_000, 3_720_000].map(formatDuration), ["850 ms", "12.3 s", "4m05s", "1h02m"]);
 * ```
 */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** What {@link buildFindings} needs besides the builds. */
export interface BuildOutcome {
  /** Nix's exit code. */
  code: number;
  /** Why Nix did not end on its own, when it did not. */
  failure?: WrappedBuildResult["failure"];
  /** Nix's error messages. */
  errors: readonly string[];
  /** Whether builders were configured (a local build then means "not offloading"). */
  buildersConfigured: boolean;
}

/**
 * The verdict on a wrapped build: where each derivation was built, builds that failed, and
 * derivations built here although builders are configured.
 *
 * Finding ids: `watch/offloaded` (ok), `watch/nothing-built` (ok), `watch/built-locally`
 * (warning), `watch/build-failed` (critical), `watch/nix-failed` (critical).
 *
 * @example
 * ```ts
 * import { buildFindings } from "./watch_build.ts";
 * import assert from "node:assert/strict";
 *
 * const builds = [
 *   { drvPath: "/nix/store/a-x.drv", name: "x", machine: "ssh://builder1", startedAt: 0, endedAt: 4000, status: "built" as const },
 *   { drvPath: "/nix/store/b-y.drv", name: "y", machine: "", startedAt: 0, endedAt: 100, status: "built" as const },
 * ];
 * const findings = buildFindings(builds, { code: 0, errors: [], buildersConfigured: true });
 * assert.deepEqual(findings.map((f) => [f.id, f.status]), [
 *   ["watch/offloaded", "ok"],
 *   ["watch/built-locally", "warning"],
 * ]);
 * assert.equal(findings[0]!.summary, "1 of 2 derivations went to a remote builder: 1 on builder1");
 * ```
 */
export function buildFindings(builds: readonly BuildRecord[], outcome: BuildOutcome): Finding[] {
  const findings: Finding[] = [];
  const remote = builds.filter((b) => b.machine !== "");
  const local = builds.filter((b) => b.machine === "");
  const failed = builds.filter((b) => b.status === "failed");
  if (builds.length === 0) {
    if (outcome.code === 0 && outcome.failure === undefined) {
      findings.push({
        id: "watch/nothing-built",
        status: "ok",
        summary: "nothing was built: every output was already there or came from a cache",
      });
    }
  } else if (remote.length > 0) {
    const per = new Map<string, number>();
    for (const b of remote) {
      per.set(machineLabel(b.machine), (per.get(machineLabel(b.machine)) ?? 0) + 1);
    }
    const list = [...per].map(([m, n]) => `${n} on ${m}`).join(", ");
    findings.push({
      id: "watch/offloaded",
      status: "ok",
      summary: `${remote.length} of ${builds.length} derivation${
        builds.length === 1 ? "" : "s"
      } went to a remote builder: ${list}`,
    });
  }
  if (local.length > 0 && outcome.buildersConfigured) {
    const names = local.slice(0, 3).map((b) => b.name).join(", ");
    findings.push({
      id: "watch/built-locally",
      status: "warning",
      summary:
        `${local.length} derivation${local.length === 1 ? " was" : "s were"} built on this ` +
        `machine although builders are configured: ${names}${local.length > 3 ? ", ..." : ""}`,
      detail: "Nix builds here when max-jobs > 0 and no builder matches (system, features), when " +
        "every builder is busy or down, or for preferLocalBuild / allowSubstitutes = false derivations.",
      fix: "to force offloading set max-jobs = 0; see why a builder was not picked: " +
        "deno run -A scripts/show_config.ts",
    });
  }
  for (const b of failed) {
    findings.push({
      id: "watch/build-failed",
      status: "critical",
      summary: `${b.name} failed on ${machineLabel(b.machine)}: ${b.error ?? "see the log"}`,
      fix: `read its log: deno run -A scripts/drv_log.ts ${b.drvPath}`,
      data: { drvPath: b.drvPath, machine: b.machine },
    });
  }
  if ((outcome.code !== 0 || outcome.failure) && failed.length === 0) {
    const why = outcome.failure === "timeout"
      ? "it ran past --duration and was stopped"
      : outcome.failure === "interrupted"
      ? "it was interrupted"
      : outcome.failure === "not-found"
      ? "nix is not installed or not on PATH"
      : outcome.errors.at(-1)?.replace(/^error: /, "").split("\n")[0] ?? `exit ${outcome.code}`;
    findings.push({
      id: "watch/nix-failed",
      status: "critical",
      summary: `the build did not finish: ${why}`,
      data: { code: outcome.code },
    });
  }
  return findings;
}
