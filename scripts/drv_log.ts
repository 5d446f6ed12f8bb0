#!/usr/bin/env -S deno run -A
/**
 * Overview: fetches a derivation's build log from wherever it lives (this machine, a builder over
 * ssh, every builder of the machines file, a snapshot) and shows the failure first: the last phase
 * that started, the likely cause with the error lines around it, then the tail. It replaces
 * `nix log /nix/store/<hash>-<drv>.drv | less -R` for the case where that fails or shows the wrong
 * thing. Give it `.drv` or output paths, or the text of a failed build (`--from-build-output`),
 * from which every failing derivation is taken. One streaming pass, however large the log.
 *
 * CLI arguments: see --help. Example: deno run -A scripts/drv_log.ts --builders /nix/store/…-foo.drv
 *
 * @module
 */

import { armDeadline, createCommand, parseCount, runMain, UsageError } from "../lib/cli.ts";
import {
  type BuildFailure,
  type BuildOutputSummary,
  parseBuildOutputStream,
  rootFailures,
} from "../lib/build_output.ts";
import {
  buildOutputFindings,
  type DrvLogResult,
  type LogSource,
  type LogView,
  readDrvLog,
  readGivenLog,
} from "../lib/drv_log.ts";
import { quoteForMessage } from "../lib/errors.ts";
import {
  exitCodeFor,
  type Finding,
  makeReport,
  renderJson,
  renderText,
  shouldColor,
} from "../lib/findings.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { parseNixVersion, readEffectiveConfig } from "../lib/nix_config.ts";
import { renderLogView } from "../lib/log_view.ts";
import { openOutput, type PagedOutput } from "../lib/pager.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import { parseStorePath, type StorePath } from "../lib/store_path.ts";
import type { Target } from "../lib/target.ts";

const TOOL = "drv_log";

/** Loaded only for --snapshot: its bundle validation (zod) would cost every other run start-up time. */
async function openSnapshot(dir: string): Promise<Target> {
  const { SnapshotTarget } = await import("../lib/snapshot_target.ts");
  return await SnapshotTarget.open(dir);
}

function program() {
  return createCommand({
    name: TOOL,
    description:
      "Fetch a derivation's build log from this machine, a builder or every builder, and show " +
      "the failure first: last phase, likely cause with the error lines around it, then the tail.",
    examples: [
      ["drv_log.ts /nix/store/…-foo.drv", "the failure excerpt and tail, from this machine"],
      ["nix build … 2>&1 | drv_log.ts --from-build-output -", "every failed derivation of a build"],
      [
        "drv_log.ts --builders /nix/store/…-foo.drv",
        "also look on every builder of the machines file",
      ],
      [
        "drv_log.ts --host builder1 --errors /nix/store/…-foo.drv",
        "only the failure, from builder1",
      ],
      ["drv_log.ts --tail 100 /nix/store/…-foo.drv", "the last 100 lines"],
      ["drv_log.ts --raw --output foo.log /nix/store/…-foo.drv", "the whole log, also saved"],
      ["drv_log.ts --log-file foo.log.bz2 --errors", "analyse a log file you already have"],
    ],
    runbook: "runbook/drv_log.md",
  })
    .argument("[paths...]", "store paths: .drv files or their outputs")
    .option(
      "--from-build-output <file>",
      "take every failing derivation from the output of a failed build (- for stdin)",
    )
    .option("--log-file <file>", "analyse a log file at hand, plain or .bz2 (- for stdin)")
    .option("--builders", "also look on every ssh builder of the machines file (builders setting)")
    .option("--skip-local", "do not look on this machine, only --host / --builders")
    .option(
      "--log-dir <dir>",
      "Nix's log directory (default: $NIX_LOG_DIR here, else /nix/var/log/nix)",
    )
    .option("--tail <n>", "show only the last N lines", parseCount)
    .option("--errors", "show only the failure excerpt")
    .option("--raw", "print the whole log")
    .option("--context <n>", "lines shown around each error line", parseCount, 3)
    .option("--output <file>", "also save the whole log to FILE (one derivation)")
    .option("--no-pager", "never page (less -R is used only on a terminal, for long output)");
}

type Options = ReturnType<ReturnType<typeof program>["opts"]>;

interface Subject {
  drv: StorePath;
  failure?: BuildFailure;
}

function viewOf(opts: Options): LogView {
  const chosen = [
    opts.tail !== undefined ? "--tail" : undefined,
    opts.errors ? "--errors" : undefined,
    opts.raw ? "--raw" : undefined,
  ].filter((v) => v !== undefined);
  if (chosen.length > 1) {
    throw new UsageError(`${chosen.join(" and ")} cannot be combined: pick one view`);
  }
  return opts.raw ? "raw" : opts.errors ? "errors" : opts.tail !== undefined ? "tail" : "default";
}

async function readBuildOutput(path: string): Promise<BuildOutputSummary> {
  if (path === "-") return await parseBuildOutputStream(Deno.stdin.readable);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw new UsageError(
      `--from-build-output ${quoteForMessage(path)}: ${(error as Error).message}`,
    );
  }
  return await parseBuildOutputStream(file.readable);
}

async function builderSources(
  local: Target,
  opts: Options,
  deadline: number,
  preferHost: string | undefined,
): Promise<{ sources: LogSource[]; findings: Finding[] }> {
  const findings: Finding[] = [];
  const config = await readEffectiveConfig(local);
  if (!config.ok) {
    findings.push({
      id: "builders/unreadable",
      status: "unknown",
      summary:
        `--builders: cannot read the effective Nix config on ${local.host}: ${config.reason}`,
    });
    return { sources: [], findings };
  }
  const version = await local.run(["nix", "--version"]);
  const parsedVersion = (() => {
    try {
      return version.code === 0 ? parseNixVersion(version.stdout) : undefined;
    } catch {
      return undefined;
    }
  })();
  const setting = config.settings.get("builders")?.value ?? "";
  const { resolveBuilders } = await import("../lib/machines.ts");
  const resolved = await resolveBuilders(setting, (p) => local.readFile(p), {
    ...(parsedVersion ? { version: parsedVersion } : {}),
  });
  const nixSshOpts = (Deno.env.get("NIX_SSHOPTS") ?? "").split(/\s+/).filter((s) => s !== "");
  const seen = new Set<string>();
  const sources: LogSource[] = [];
  for (const machine of resolved.machines) {
    if ((machine.scheme !== "ssh" && machine.scheme !== "ssh-ng") || machine.host === undefined) {
      continue;
    }
    const destination = machine.user !== undefined
      ? `${machine.user}@${machine.host}`
      : machine.host;
    const key = `${destination}:${machine.port ?? ""}:${machine.sshKey ?? ""}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const spec = machine.port !== undefined ? `ssh://${destination}:${machine.port}` : destination;
    let target: SshTarget;
    try {
      target = new SshTarget(spec, {
        deadline,
        sshArgs: [...nixSshOpts, ...(machine.sshKey !== undefined ? ["-i", machine.sshKey] : [])],
        sshOptions: opts.sshOption,
      });
    } catch (error) {
      findings.push({
        id: "builders/bad-host",
        status: "warning",
        summary: `skipped builder ${quoteForMessage(machine.storeUri)}: ${
          (error as Error).message
        }`,
      });
      continue;
    }
    const remoteProgram = machine.params["remote-program"];
    const nixStore = remoteProgram !== undefined && remoteProgram.includes("/")
      ? `${remoteProgram.slice(0, remoteProgram.lastIndexOf("/"))}/nix-store`
      : undefined;
    sources.push({ target, label: machine.storeUri, ...(nixStore ? { nixStore } : {}) });
  }
  if (resolved.machines.length === 0) {
    findings.push({
      id: "builders/none",
      status: "warning",
      summary: `--builders: the machines list on ${local.host} is empty (builders = '${setting}')`,
      fix: "scripts/show_config.ts explains the builders setting and the machines file",
    });
  }
  if (preferHost !== undefined) {
    sources.sort((a, b) =>
      Number((b.label ?? "").includes(preferHost)) - Number((a.label ?? "").includes(preferHost))
    );
  }
  return { sources, findings };
}

function jsonOf(result: DrvLogResult): Record<string, unknown> {
  const scan = result.scan ?? result.fromBuildOutput;
  return {
    subject: result.subject,
    found: result.found ?? null,
    ...(result.scan
      ? {
        bytes: result.scan.bytes,
        lines: result.tailFromEnd ? null : result.scan.lines,
        lastPhase: result.scan.lastPhase ?? null,
        primary: result.scan.primary ?? null,
        counts: result.scan.counts,
        groups: result.scan.groups,
        tail: result.scan.tail,
      }
      : {}),
    ...(result.passed ? result.passed : {}),
    ...(result.fromBuildOutput && !result.scan
      ? { fromBuildOutput: { primary: scan?.primary ?? null, tail: scan?.tail ?? [] } }
      : {}),
    attempts: result.attempts,
    reasons: result.reasons,
    ...(result.truncated !== undefined ? { truncated: result.truncated } : {}),
  };
}

async function main(): Promise<number> {
  const cmd = program();
  cmd.parse(Deno.args, { from: "user" });
  const opts = cmd.opts();
  const paths = cmd.args;
  armDeadline(TOOL, opts.timeout);
  const deadline = Date.now() + opts.timeout * 1000 - 500;

  // Everything the user gave is checked before any command runs.
  const view = viewOf(opts);
  const inputs = [
    paths.length > 0 ? "store paths" : undefined,
    opts.fromBuildOutput !== undefined ? "--from-build-output" : undefined,
    opts.logFile !== undefined ? "--log-file" : undefined,
  ].filter((v) => v !== undefined);
  if (inputs.length === 0) {
    throw new UsageError(
      "nothing to look up: give a .drv or output path, --from-build-output FILE, or --log-file FILE",
    );
  }
  if (inputs.length > 1) throw new UsageError(`${inputs.join(" and ")} cannot be combined`);
  if (opts.json && view === "raw") {
    throw new UsageError("--raw and --json cannot be combined: use --output FILE to save the log");
  }
  if (opts.host !== undefined && opts.snapshot !== undefined) {
    throw new UsageError("--host and --snapshot cannot be used both: pick where to look");
  }
  if (opts.logFile !== undefined && (opts.host || opts.builders || opts.snapshot)) {
    throw new UsageError(
      "--log-file reads a local file: --host, --builders and --snapshot do not apply",
    );
  }
  if (opts.skipLocal && opts.host === undefined && !opts.builders) {
    throw new UsageError("--skip-local needs --host or --builders: there would be nowhere to look");
  }
  if (opts.fromBuildOutput === "-" && opts.logFile === "-") {
    throw new UsageError("only one input can be read from stdin");
  }
  const subjects: Subject[] = paths.map((p) => ({ drv: parseStorePath(p) }));
  const hosts = opts.host !== undefined ? [opts.host] : [];
  const sshTargets = hosts.map((h) => new SshTarget(h, { deadline, sshOptions: opts.sshOption }));
  const findings: Finding[] = [];
  let buildOutput: BuildOutputSummary | undefined;
  if (opts.fromBuildOutput !== undefined) {
    buildOutput = await readBuildOutput(opts.fromBuildOutput);
    findings.push(...buildOutputFindings(buildOutput));
    for (const failure of rootFailures(buildOutput)) {
      subjects.push({ drv: parseStorePath(failure.drv), failure });
    }
  }
  if (opts.output !== undefined && subjects.length > 1) {
    throw new UsageError(`--output saves one log, and there are ${subjects.length} derivations`);
  }

  const color = !opts.json && shouldColor();
  const out: PagedOutput = opts.json
    ? openOutput({ pager: false })
    : openOutput({ pager: opts.pager !== false });
  let outputFile: Deno.FsFile | undefined;
  const results: DrvLogResult[] = [];
  const targets: Target[] = [...sshTargets];
  try {
    const tee = async (bytes: Uint8Array): Promise<boolean> => {
      if (opts.output !== undefined) {
        outputFile ??= await Deno.open(opts.output, { write: true, create: true, truncate: true });
        let written = 0;
        while (written < bytes.length) written += await outputFile.write(bytes.subarray(written));
      }
      if (view === "raw") return await out.write(bytes);
      return true;
    };
    const readOptions = {
      view,
      tail: view === "tail" ? opts.tail! : 20,
      context: opts.context,
      ...(opts.logDir !== undefined ? { logDir: opts.logDir } : {}),
      timeoutMs: Math.max(1000, deadline - Date.now()),
      ...(view === "raw" || opts.output !== undefined ? { onBytes: tee } : {}),
      progress: !opts.json,
    };

    if (opts.logFile !== undefined) {
      results.push(await readGivenLog(opts.logFile, readOptions));
    } else {
      const sources: LogSource[] = [];
      if (!opts.skipLocal) {
        const local: Target = opts.snapshot !== undefined
          ? await openSnapshot(opts.snapshot)
          : new LocalTarget({ deadline });
        targets.push(local);
        sources.push({ target: local, nixLog: local.kind === "local" });
      }
      for (const target of sshTargets) sources.push({ target });
      if (opts.builders) {
        // The machines list is this machine's (or the snapshot's), even with --skip-local.
        const configTarget = targets.find((t) => t.kind !== "ssh") ??
          (opts.snapshot !== undefined
            ? await openSnapshot(opts.snapshot)
            : new LocalTarget({ deadline }));
        const builtOn = subjects.map((s) => s.failure?.host).find((h) => h !== undefined)
          ?.replace(/^ssh(-ng)?:\/\//, "").split("?")[0];
        const builders = await builderSources(configTarget, opts, deadline, builtOn);
        findings.push(...builders.findings);
        for (const source of builders.sources) {
          if (sources.some((s) => s.target.host === source.target.host)) continue;
          sources.push(source);
          targets.push(source.target);
        }
      }
      for (const subject of subjects) {
        if (view === "raw" && subjects.length > 1) {
          if (!(await out.write(`==> ${subject.drv.path} <==\n`))) break;
        }
        const result = await readDrvLog(sources, subject.drv, {
          ...readOptions,
          timeoutMs: Math.max(1000, deadline - Date.now()),
          ...(subject.failure ? { failure: subject.failure } : {}),
        });
        results.push(result);
        if (result.stopped) break;
        if (view !== "raw" && !opts.json) await writeView(out, result, view, color);
      }
    }
    if (opts.logFile !== undefined && view !== "raw" && !opts.json) {
      await writeView(out, results[0]!, view, color);
    }
    if (outputFile === undefined && opts.output !== undefined && results[0]?.found !== undefined) {
      // The log was found but empty: still write the (empty) file.
      outputFile = await Deno.open(opts.output, { write: true, create: true, truncate: true });
    }

    for (const result of results) findings.push(...result.findings);
    if (opts.output !== undefined && outputFile !== undefined) {
      findings.push({
        id: "log/saved",
        status: "ok",
        summary: `the whole log was saved to ${opts.output}`,
      });
    }
    const report = makeReport(findings, {
      tool: TOOL,
      host: targets.find((t) => t.kind !== "ssh")?.host ?? targets[0]?.host ?? "localhost",
      data: {
        logs: results.map(jsonOf),
        ...(buildOutput
          ? {
            buildOutput: {
              failures: buildOutput.failures,
              builtOn: buildOutput.builtOn,
              topLevel: buildOutput.topLevel,
              ignored: buildOutput.ignored,
            },
          }
          : {}),
      },
    });
    if (opts.json) {
      await out.write(renderJson(report));
    } else if (view === "raw") {
      // stdout carries the log only; the report goes to stderr when something is wrong.
      if (report.status !== "ok") {
        Deno.stderr.writeSync(
          new TextEncoder().encode(
            renderText(report, { color: false, verbose: opts.verbose === true }),
          ),
        );
      }
    } else {
      await out.write("\n" + renderText(report, { color, verbose: opts.verbose === true }));
    }
    return exitCodeFor(report.status);
  } finally {
    outputFile?.close();
    await out.close();
    for (const target of targets) await target.close().catch(() => {});
  }
}

async function writeView(out: PagedOutput, result: DrvLogResult, view: LogView, color: boolean) {
  const viewName = view === "raw" ? "default" : view;
  if (result.scan !== undefined && result.found !== undefined) {
    await out.write(
      renderLogView(result.scan, { drv: result.subject, source: result.found.description }, {
        view: viewName,
        color,
        ...(result.tailFromEnd ? { tailFromEnd: true } : {}),
      }),
    );
  } else if (result.fromBuildOutput !== undefined) {
    await out.write(
      renderLogView(
        result.fromBuildOutput,
        {
          drv: result.subject,
          source: `no log found; these are the last ${result.fromBuildOutput.lines} lines the ` +
            "build output showed",
        },
        { view: viewName, color },
      ),
    );
  }
}

if (import.meta.main) {
  await runMain(TOOL, main);
}
