/**
 * The contract every script shares: common flags, opening the target, printing the report, exit codes,
 * a whole-run deadline, and no stack trace ever reaching a user.
 *
 * @module
 */

import { Command, CommanderError, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import { killAllProcesses } from "./_process.ts";
import { UsageError } from "./errors.ts";
import { exitCodeFor, renderJson, renderText, type Report, VERSION } from "./findings.ts";
import { LocalTarget } from "./local_target.ts";
import { SshTarget } from "./ssh_target.ts";
import { type Target, TargetError } from "./target.ts";

export { UsageError };

/**
 * Parses a positive number of seconds for `--timeout`-like flags.
 *
 * @example
 * ```ts
 * import { parseSeconds } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseSeconds("2.5"), 2.5);
 * assert.throws(() => parseSeconds("0"), /positive number/);
 * ```
 */
export function parseSeconds(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || !Number.isFinite(n) || n <= 0) {
    throw new InvalidArgumentError(`'${value}' is not a positive number of seconds.`);
  }
  return n;
}

/**
 * Parses a non-negative integer flag value.
 *
 * @example
 * ```ts
 * import { parseCount } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseCount("100"), 100);
 * assert.throws(() => parseCount("-1"), /whole number/);
 * ```
 */
export function parseCount(value: string): number {
  if (!/^\d+$/.test(value.trim())) {
    throw new InvalidArgumentError(`'${value}' is not a whole number.`);
  }
  return Number(value);
}

/**
 * Collects a repeatable flag's values.
 *
 * @example
 * ```ts
 * import { collectValues } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(collectValues("b", ["a"]), ["a", "b"]);
 * ```
 */
export function collectValues(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** What {@link createCommand} needs. */
export interface CommandSpec {
  /** The script's name, e.g. `show_config`. */
  name: string;
  /** One or two sentences: what it does and when to run it. */
  description: string;
  /** Example invocations, each `[command, what it does]`. */
  examples: [string, string][];
  /** The runbook page, relative to the repository root. */
  runbook: string;
  /**
   * Also accept monitoring-plugins' short forms `-H` (`--host`) and `-t` (`--timeout`), for checks
   * that Nagios/Icinga run. Default false.
   */
  pluginFlags?: boolean;
  /**
   * The script needs the live system (ssh, builds, samples): `--snapshot` is left out of `--help`.
   * It is still parsed, so the script refuses it with its own reason. Default false.
   */
  liveOnly?: boolean;
}

/**
 * A commander program with the shared flags: `--host`, `--snapshot`, `--json`, `--timeout`, `--verbose`,
 * `--ssh-option`, `--version`, `--help` (with examples). Scripts chain their own options onto it.
 *
 * @example
 * ```ts
 * import { createCommand } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * const program = createCommand({
 *   name: "demo",
 *   description: "A demo.",
 *   examples: [["demo --json", "print JSON"]],
 *   runbook: "runbook/demo.md",
 * });
 * program.parse(["--json", "--timeout", "5"], { from: "user" });
 * assert.equal(program.opts().json, true);
 * assert.equal(program.opts().timeout, 5);
 * ```
 */
export function createCommand(spec: CommandSpec) {
  const width = Math.max(...spec.examples.map(([cmd]) => cmd.length));
  const examples = spec.examples.map(([cmd, what]) => `  ${cmd.padEnd(width)}  # ${what}`);
  return new Command(spec.name)
    .description(spec.description)
    .option(
      spec.pluginFlags ? "-H, --host <host>" : "--host <host>",
      "run against HOST over ssh ([user@]host, ssh://..., ssh-ng://...)",
    )
    .addOption(
      new Option("--snapshot <dir>", "analyse a bundle written by scripts/collect.ts instead")
        .hideHelp(spec.liveOnly === true),
    )
    .option("--json", "print the report as JSON")
    .option(
      spec.pluginFlags ? "-t, --timeout <seconds>" : "--timeout <seconds>",
      "deadline for the whole run",
      parseSeconds,
      60,
    )
    .option("-v, --verbose", "show details of OK findings too")
    .option(
      "--ssh-option <option>",
      "extra ssh option, as for ssh -o (repeatable)",
      collectValues,
      [] as string[],
    )
    .version(`${spec.name} ${VERSION}`, "-V, --version")
    .helpOption("-h, --help", "show this help")
    .addHelpText(
      "after",
      `\nExamples:\n${examples.join("\n")}\n\nExit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.` +
        `\nRunbook: ${spec.runbook}\n`,
    )
    .exitOverride()
    .configureOutput({
      outputError: (text, write) => write(`${spec.name}: ${text.replace(/^error: /, "")}`),
    });
}

/** The shared flags, as parsed. */
export interface CommonOptions {
  /** `--host`. */
  host?: string;
  /** `--snapshot`. */
  snapshot?: string;
  /** `--json`. */
  json?: true;
  /** `--timeout`, seconds. */
  timeout: number;
  /** `--verbose`. */
  verbose?: true;
  /** `--ssh-option` values. */
  sshOption: string[];
}

/**
 * Opens the target the flags ask for: a snapshot, a host over ssh, or this machine. Its commands all
 * end before the run's deadline.
 *
 * @example
 * ```ts
 * import { openTarget } from "./cli.ts";
 * import assert from "node:assert/strict";
 *
 * const target = await openTarget({ timeout: 10, sshOption: [] });
 * assert.equal(target.kind, "local");
 * await assert.rejects(openTarget({ timeout: 10, sshOption: [], host: "h", snapshot: "/d" }), /both/);
 * ```
 */
export async function openTarget(options: CommonOptions): Promise<Target> {
  if (options.host !== undefined && options.snapshot !== undefined) {
    throw new UsageError("--host and --snapshot cannot be used both: pick where to look");
  }
  // Leave half a second of the deadline for rendering the report.
  const deadline = Date.now() + options.timeout * 1000 - 500;
  if (options.snapshot !== undefined) {
    // Loaded only for --snapshot: its bundle validation (zod) costs every other run start-up time.
    const { SnapshotTarget } = await import("./snapshot_target.ts");
    return await SnapshotTarget.open(options.snapshot);
  }
  if (options.host !== undefined) {
    return new SshTarget(options.host, { deadline, sshOptions: options.sshOption });
  }
  return new LocalTarget({ deadline });
}

/**
 * Prints a report (JSON or for people) and returns the exit code for it.
 *
 * @example
 * ```ts
 * import { emitReport } from "./cli.ts";
 * import { makeReport } from "./findings.ts";
 * import assert from "node:assert/strict";
 *
 * const report = makeReport([{ id: "a/b", status: "warning", summary: "s" }], { tool: "t", host: "h" });
 * assert.equal(emitReport(report, { json: true }, () => {}), 1);
 * ```
 */
export function emitReport(
  report: Report,
  options: { json?: true; verbose?: true },
  write: (text: string) => void = (text) => {
    Deno.stdout.writeSync(new TextEncoder().encode(text));
  },
): number {
  try {
    write(
      options.json ? renderJson(report) : renderText(report, { verbose: options.verbose === true }),
    );
  } catch (error) {
    // `| head` closing stdout early is not an error of the check: the exit code still tells.
    if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
  }
  return exitCodeFor(report.status);
}

function writeError(text: string): void {
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(text.endsWith("\n") ? text : text + "\n"));
  } catch {
    // stderr closed
  }
}

/**
 * Arms the whole-run deadline: when it passes, every child is killed and the run ends UNKNOWN (3).
 *
 * @example
 * ```ts
 * import { armDeadline } from "./cli.ts";
 *
 * const disarm = armDeadline("demo", 60);
 * disarm();
 * ```
 */
export function armDeadline(tool: string, seconds: number): () => void {
  const timer = setTimeout(() => {
    killAllProcesses();
    writeError(`${tool}: UNKNOWN: did not finish within the ${seconds} s deadline (--timeout)`);
    Deno.exit(3);
  }, seconds * 1000 + 250);
  Deno.unrefTimer(timer);
  return () => clearTimeout(timer);
}

let interruptsHeld = 0;

/**
 * Holds SIGINT while an interactive child that handles Ctrl-C itself (a pager such as `less`) owns
 * the terminal, so that Ctrl-C does not end the run and leave the child drawing over the shell.
 * SIGTERM and the deadline still end the run. Returns the release function (safe to call twice).
 *
 * @example
 * ```ts
 * import { holdInterrupts } from "./cli.ts";
 *
 * const release = holdInterrupts();
 * release();
 * ```
 */
export function holdInterrupts(): () => void {
  interruptsHeld++;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    interruptsHeld--;
  };
}

/** Options for {@link runMain}. */
export interface RunMainOptions {
  /**
   * Called on SIGINT, SIGTERM or SIGHUP before the default (kill children, exit 3); return `true`
   * when the script handles the signal itself, e.g. a live watch that ends on Ctrl-C with a verdict.
   */
  onInterrupt?: (signal: Deno.Signal) => boolean;
}

/**
 * Runs a script's body: exit with its code; any error becomes one line on stderr and exit 3
 * (`NBR_DEBUG=1` shows the stack). SIGINT/SIGTERM kill children and exit 3.
 *
 * @example
 * ```ts ignore
 * import { runMain } from "./cli.ts";
 *
 * await runMain("demo", async () => 0);
 * ```
 */
export async function runMain(
  tool: string,
  body: () => Promise<number>,
  options: RunMainOptions = {},
): Promise<never> {
  const onSignal = (signal: Deno.Signal) => () => {
    // A pager (less) owns the terminal and handles Ctrl-C itself: see holdInterrupts().
    if (signal === "SIGINT" && interruptsHeld > 0) return;
    if (options.onInterrupt?.(signal)) return;
    killAllProcesses();
    writeError(`${tool}: interrupted by ${signal}`);
    Deno.exit(3);
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const signal of signals) {
    try {
      Deno.addSignalListener(signal, onSignal(signal));
    } catch {
      // signals unsupported here
    }
  }
  let code: number;
  try {
    code = await body();
  } catch (error) {
    code = 3;
    if (error instanceof Deno.errors.BrokenPipe) {
      // stdout closed by the reader (`| head`): nothing left to say.
    } else if (error instanceof CommanderError) {
      // commander already printed the message (or the help / version).
      code = error.exitCode === 0 ? 0 : 3;
    } else if (
      error instanceof UsageError || error instanceof TargetError || error instanceof RangeError ||
      (error instanceof Error && error.name === "ParseError")
    ) {
      writeError(`${tool}: ${error.message}`);
    } else {
      const message = error instanceof Error ? error.message : String(error);
      writeError(`${tool}: UNKNOWN: ${message}`);
    }
    if (Deno.env.get("NBR_DEBUG") && error instanceof Error) writeError(error.stack ?? "");
  }
  killAllProcesses();
  Deno.exit(code);
}
