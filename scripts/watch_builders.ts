#!/usr/bin/env -S deno run -A
/**
 * Overview: watch every builder live while a build runs: load against cores, CPU, memory and
 * swap, memory pressure, and the build processes (their names, memory, and whether they run
 * emulated under qemu), from one ssh connection per builder and one `sh` loop reading `/proc` on
 * it. Warns early, naming the oom_mitigate step, when memory runs short while builds run. With
 * `-- nix build ARGS...` it runs the build here and says at the end where each derivation was
 * built and how long it took.
 *
 * `-A` because Deno 2.9 only lets `--allow-all` read most of /proc (for `--local`).
 *
 * CLI arguments: see --help. Example: deno run -A scripts/watch_builders.ts -- nix build .#hello
 *
 * @module
 */

import { armDeadline, collectValues, createCommand, parseSeconds, runMain } from "../lib/cli.ts";
import { UsageError } from "../lib/errors.ts";
import { exitCodeFor, shouldColor } from "../lib/findings.ts";
import { parseSshHost } from "../lib/host.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { type Machine, resolveBuilders } from "../lib/machines.ts";
import { readEffectiveConfig } from "../lib/nix_config.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import { DEFAULT_THRESHOLDS } from "../lib/watch_alerts.ts";
import { machineLabel } from "../lib/watch_build.ts";
import { runWatch, type WatchOutput, type WatchTargetSpec } from "../lib/watch_run.ts";

const TOOL = "watch_builders";

function parsePercent(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value.trim()) || n <= 0 || n >= 100) {
    throw new UsageError(`'${value}' is not a percentage between 0 and 100`);
  }
  return n;
}

function parseInterval(value: string): number {
  const n = parseSeconds(value);
  if (n < 0.2 || n > 3600) throw new UsageError(`--interval '${value}': use 0.2 to 3600 seconds`);
  return n;
}

/** The builders of the machines file (or of the effective `builders` setting). */
async function machinesToWatch(
  file: string | undefined,
): Promise<{ machines: Machine[]; source: string }> {
  const local = new LocalTarget({ timeoutMs: 20_000 });
  let setting: string;
  let source: string;
  if (file !== undefined) {
    setting = `@${file}`;
    source = file;
    if ((await local.readFile(file)) === null) {
      throw new UsageError(`--machines '${file}': no such file`);
    }
  } else {
    const config = await readEffectiveConfig(local);
    if (!config.ok) throw new UsageError(`Cannot read the effective Nix config: ${config.reason}`);
    setting = config.settings.get("builders")?.value ?? "";
    source = "the builders setting";
  }
  const resolved = await resolveBuilders(setting, (path) => local.readFile(path));
  return { machines: resolved.machines, source };
}

async function main(): Promise<number> {
  const program = createCommand({
    name: TOOL,
    description:
      "Watch every builder live (load, CPU, memory, pressure, build processes) while a " +
      "build runs; warn before memory runs out; with -- nix build ..., say where each derivation " +
      "was built.",
    examples: [
      ["deno run -A scripts/watch_builders.ts", "every builder of the machines file, until Ctrl-C"],
      [
        "deno run -A scripts/watch_builders.ts -- nix build .#hello",
        "run a build, see where it goes",
      ],
      ["deno run -A scripts/watch_builders.ts --host builder1 --host builder2", "these builders"],
      ["deno run -A scripts/watch_builders.ts --once --json", "one sample per builder, NDJSON"],
      ["deno run -A scripts/watch_builders.ts --local --interval 2", "this machine too, every 2 s"],
    ],
    runbook: "runbook/watch_builders.md",
    liveOnly: true,
  })
    .option(
      "--machines <file>",
      "watch the builders of this machines file (default: Nix's builders setting)",
    )
    .option("--local", "also watch this machine")
    .option("--interval <seconds>", "seconds between samples", parseInterval, 1)
    .option("--once", "take one sample of each builder, print it, exit with the worst status")
    .option(
      "--duration <seconds>",
      "stop after this long (also ends a wrapped build)",
      parseSeconds,
      86400,
    )
    .option("--plain", "plain lines even on a terminal")
    .option("--ascii", "ASCII bars and sparklines")
    .option(
      "--mem-warn <percent>",
      "warn when available memory falls under this share while builds run",
      parsePercent,
      DEFAULT_THRESHOLDS.memoryWarnPercent,
    )
    .option(
      "--mem-crit <percent>",
      "critical under this share",
      parsePercent,
      DEFAULT_THRESHOLDS.memoryCriticalPercent,
    )
    .option(
      "--psi-warn <percent>",
      "warn when memory pressure (PSI some avg10) reaches this while builds run",
      parsePercent,
      DEFAULT_THRESHOLDS.pressureWarnPercent,
    )
    .option(
      "--psi-crit <percent>",
      "critical from this pressure",
      parsePercent,
      DEFAULT_THRESHOLDS.pressureCriticalPercent,
    )
    .argument(
      "[nix-command...]",
      "after --: a Nix build to run here and follow (internal-json log)",
    );
  // The shared flags, as this script reads them: --host is repeatable (every value a builder).
  for (const option of program.options) {
    if (option.long === "--host") {
      option.description = "a builder to watch over ssh (repeatable; default: the machines file)";
      option.argParser((value: string, previous: unknown) =>
        collectValues(value, Array.isArray(previous) ? previous : [])
      );
    } else if (option.long === "--json") {
      option.description = "one JSON object per line: per sample per builder, then a summary";
    } else if (option.long === "--verbose") {
      option.description = "with --plain: a line per build process too";
    } else if (option.long === "--timeout") {
      option.description =
        "with --once: deadline of the run; else: wait for a builder's first sample";
    }
  }
  program.parse(Deno.args, { from: "user" });
  const opts = program.opts();
  const hostValue: unknown = opts.host;
  const hosts = Array.isArray(hostValue) ? hostValue.map(String) : [];
  const command = program.args;
  if (opts.snapshot !== undefined) {
    throw new UsageError(
      "--snapshot: watch_builders watches live builders; a snapshot has no samples",
    );
  }
  if (opts.once && command.length > 0) {
    throw new UsageError("--once and a wrapped build exclude each other: drop one");
  }
  if (opts.once) armDeadline(TOOL, opts.timeout);

  const connectTimeoutS = Math.max(1, Math.min(10, Math.floor(opts.timeout)));
  const durationMs = opts.duration * 1000;
  const sshTarget = (spec: string, extra: string[] = []) => () =>
    new SshTarget(spec, {
      timeoutMs: durationMs + 60_000,
      connectTimeoutS,
      sshOptions: [...opts.sshOption, ...extra],
    });
  const builders: WatchTargetSpec[] = [];
  let buildersConfigured = true;
  if (hosts.length > 0) {
    for (const host of hosts) {
      parseSshHost(host); // refuses a bad host before anything runs
      builders.push({ label: host, open: sshTarget(host) });
    }
  } else if (opts.machines !== undefined || !opts.local) {
    const { machines, source } = await machinesToWatch(opts.machines);
    const skipped: string[] = [];
    for (const m of machines) {
      if (m.scheme !== "ssh" && m.scheme !== "ssh-ng") {
        skipped.push(m.storeUri);
        continue;
      }
      const label = machineLabel(m.storeUri);
      if (builders.some((b) => b.label === label)) continue;
      parseSshHost(m.storeUri);
      builders.push({
        label,
        open: sshTarget(m.storeUri, m.sshKey ? [`IdentityFile=${m.sshKey}`] : []),
      });
    }
    for (const uri of skipped) console.error(`${TOOL}: not watching '${uri}': not an ssh builder`);
    if (builders.length === 0 && !opts.local) {
      throw new UsageError(
        `No builders to watch: ${source} lists no ssh builder; pass --host HOST or --local`,
      );
    }
    buildersConfigured = builders.length > 0;
  }
  if (opts.local) builders.push({ label: "localhost", open: () => new LocalTarget() });

  const tty = (() => {
    try {
      return Deno.stdout.isTerminal();
    } catch {
      return false;
    }
  })();
  const output: WatchOutput = opts.json ? "json" : tty && !opts.plain ? "tty" : "plain";
  const result = await runWatch({
    builders,
    intervalS: opts.interval,
    once: opts.once === true,
    durationMs,
    connectTimeoutMs: opts.timeout * 1000,
    thresholds: {
      memoryWarnPercent: opts.memWarn,
      memoryCriticalPercent: opts.memCrit,
      pressureWarnPercent: opts.psiWarn,
      pressureCriticalPercent: opts.psiCrit,
    },
    output,
    color: output === "tty" && shouldColor(),
    ascii: opts.ascii === true,
    verbose: opts.verbose === true,
    ...(command.length > 0 ? { build: command } : {}),
    buildersConfigured,
    signal: interrupted.signal,
  });
  return exitCodeFor(result.status);
}

// Ctrl-C is how a watch normally ends: the first one closes every connection and prints the
// verdict; a second one ends the run at once (runMain's default), restoring the terminal first.
const interrupted = new AbortController();
function onInterrupt(): boolean {
  if (!interrupted.signal.aborted) {
    interrupted.abort();
    return true;
  }
  try {
    Deno.stdout.writeSync(new TextEncoder().encode("\x1b[?25h\x1b[?1049l"));
  } catch {
    // stdout closed
  }
  return false;
}

if (import.meta.main) await runMain(TOOL, main, { onInterrupt });
