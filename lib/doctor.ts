/**
 * The whole runbook from where you sit: which role this machine plays, then the checks for that role.
 *
 * @module
 */

import { cachingTarget } from "./caching_target.ts";
import { type Finding, makeReport, type Report, worstStatus } from "./findings.ts";
import { healthCheck } from "./health.ts";
import type { Machine } from "./machines.ts";
import { verifyMachines } from "./offload.ts";
import { checkConfig } from "./show_config.ts";
import {
  type EffectiveConfig,
  type NixSettings,
  parseNixVersion,
  readEffectiveConfig,
} from "./nix_config.ts";
import { describeFailure, type Target } from "./target.ts";

/** The role a machine plays in remote builds. */
export type Role = "controller" | "builder" | "unconfigured";

/** What {@link checkNix} found besides findings. */
export interface NixBasics {
  /** Findings about nix itself. */
  findings: Finding[];
  /** `nix --version`, parsed, when nix runs. */
  version?: ReturnType<typeof parseNixVersion>;
  /** The effective configuration. */
  config?: EffectiveConfig;
  /** The guessed role. */
  role: Role;
}

const SETUP_PAGE = "runbook/setup.md";

/**
 * Guesses the role from the effective settings: `max-jobs = 0` or a non-empty `builders` make a
 * controller; a machine whose `trusted-users` names someone besides root, or that has extra platforms,
 * is probably a builder.
 *
 * @example
 * ```ts
 * import { guessRole } from "./doctor.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(guessRole(new Map([["max-jobs", { value: "0" }]])), "controller");
 * assert.equal(guessRole(new Map([["max-jobs", { value: "8" }], ["builders", { value: "" }]])), "builder");
 * ```
 */
export function guessRole(settings: Map<string, { value: string }>): Role {
  const builders = settings.get("builders")?.value.trim() ?? "";
  const maxJobs = settings.get("max-jobs")?.value.trim();
  if (maxJobs === "0") return "controller";
  if (builders !== "" && !builders.startsWith("@")) return "controller";
  return "builder";
}

/**
 * Is nix there, which version, can its configuration be read, and which role does this machine play.
 *
 * @example
 * ```ts
 * import { checkNix } from "./doctor.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const bare = new SnapshotTarget({
 *   meta: { host: "new-machine", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [{ argv: ["nix", "--version"], code: 127, stdout: "", stderr: "", failure: "not-found" }],
 *   paths: {},
 *   files: {},
 * });
 * const basics = await checkNix(bare);
 * assert.equal(basics.findings[0]?.id, "nix/missing");
 * assert.equal(basics.role, "unconfigured");
 * ```
 */
export async function checkNix(target: Target): Promise<NixBasics> {
  const versionArgv = ["nix", "--version"];
  const versionResult = await target.run(versionArgv);
  if (versionResult.code !== 0 || versionResult.failure) {
    const missing = versionResult.failure === "not-found" || versionResult.code === 127;
    return {
      role: "unconfigured",
      findings: [{
        id: missing ? "nix/missing" : "nix/broken",
        status: missing ? "critical" : "unknown",
        summary: missing
          ? `nix is not installed on ${target.host} (or not on PATH)`
          : `nix --version failed on ${target.host}: ${
            describeFailure(versionArgv, versionResult)
          }`,
        fix: missing
          ? "Install Nix (https://nixos.org/download, or Debian's nix-bin), then read " + SETUP_PAGE
          : "Run `nix --version` by hand and fix what it prints",
      }],
    };
  }
  const findings: Finding[] = [];
  let version: ReturnType<typeof parseNixVersion> | undefined;
  try {
    version = parseNixVersion(versionResult.stdout);
    findings.push({
      id: "nix/version",
      status: "ok",
      summary: `${version.flavour === "nix" ? "Nix" : version.flavour} ${version.text}`,
      data: version,
    });
  } catch (error) {
    findings.push({ id: "nix/version", status: "unknown", summary: (error as Error).message });
  }
  const config = await readEffectiveConfig(target);
  if (!config.ok) {
    findings.push({
      id: "nix/config-unreadable",
      status: "unknown",
      summary: `cannot read the effective Nix configuration: ${config.reason}`,
      fix: "Run `nix --extra-experimental-features nix-command show-config` by hand",
    });
    return { findings, role: "unconfigured", config, ...(version ? { version } : {}) };
  }
  const role = guessRole(config.settings);
  findings.push({
    id: "doctor/role",
    status: "ok",
    summary: role === "controller"
      ? `${target.host} is a controller (max-jobs = ${
        config.settings.get("max-jobs")?.value
      }, builders = ${config.settings.get("builders")?.value || "(empty)"})`
      : `${target.host} builds locally (max-jobs = ${
        config.settings.get("max-jobs")?.value
      }): treated as a builder`,
    data: { role },
  });
  return { findings, role, config, ...(version ? { version } : {}) };
}

/** Options for {@link runDoctor}. */
export interface DoctorOptions {
  /** Also reach out to the builders in the machines file (off for snapshots and `collect`). */
  reachBuilders?: boolean;
  /** Build canaries on each builder (default true; `--no-canary`). */
  canary?: boolean;
  /** Absolute deadline (ms since the epoch) for everything. */
  deadline?: number;
  /** Extra ssh `-o` options for builder connections. */
  sshOptions?: readonly string[];
}

/** One runbook step doctor ran. */
export interface DoctorStep {
  /** The step: `nix`, `config`, `offload`, `health <host>`. */
  step: string;
  /** The runbook page for its problems. */
  page: string;
  /** What it found. */
  findings: Finding[];
}

/** What {@link runDoctor} returns: findings per runbook step. */
export interface DoctorResult {
  /** The role this machine plays. */
  role: Role;
  /**
   * Why the role was guessed, when nothing configured says which role this machine plays (no
   * machines, max-jobs not 0, and nothing that serves other machines): most likely a fresh install.
   */
  roleGuess?: string;
  /** Each step run, with its findings and its runbook page. */
  steps: DoctorStep[];
}

function ssh(machine: Machine): boolean {
  return machine.scheme === "ssh" || machine.scheme === "ssh-ng";
}

/**
 * Runs every runbook step that applies to the target's role: nix itself; the config lint
 * (show_config); on a controller, every builder's offload proof (verify_offload) and health check; on a
 * builder, its own health check.
 *
 * @example A machine without nix gets one clear finding
 * ```ts
 * import { runDoctor } from "./doctor.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "fresh", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [{ argv: ["nix", "--version"], code: 127, stdout: "", stderr: "", failure: "not-found" }],
 *   paths: {},
 *   files: {},
 * });
 * const result = await runDoctor(target);
 * assert.equal(result.steps[0]?.findings[0]?.id, "nix/missing");
 * ```
 */
export async function runDoctor(
  target: Target,
  options: DoctorOptions = {},
): Promise<DoctorResult> {
  const deadline = options.deadline ?? Date.now() + 120_000;
  // Every step asks for nix's version and settings: read once. verify_offload keeps the uncached
  // target, because its canary builds must really run.
  const cached = cachingTarget(target);
  const basics = await checkNix(cached);
  if (basics.role === "unconfigured") {
    return {
      role: "unconfigured",
      steps: [{ step: "nix", page: SETUP_PAGE, findings: basics.findings }],
    };
  }
  const config = await checkConfig(cached, { followMachines: false, deadline });
  const role: Role = config.data.role.value;
  const steps: DoctorStep[] = [{
    step: "config",
    page: "runbook/show_config.md",
    findings: [
      ...basics.findings.filter((f) => f.id !== "doctor/role"),
      roleFinding(target, config.data.role),
      ...config.findings,
    ],
  }];
  // A guessed builder that serves nobody (trusted-users only root, no extra platforms) is most
  // likely a fresh machine: the summary then points to the setup page.
  const settings: NixSettings = basics.config?.ok ? basics.config.settings : new Map();
  const platforms = settings.get("extra-platforms");
  const servesOthers = (settings.get("trusted-users")?.value ?? "root").split(/\s+/)
    .some((u) => u !== "" && u !== "root") ||
    // Nix's default extra-platforms (i686-linux on x86_64...) says nothing about a role.
    (platforms !== undefined && platforms.value.trim() !== "" &&
      platforms.value !== platforms.defaultValue);
  const guess = role === "builder" && config.data.role.guessed && !servesOthers
    ? { roleGuess: config.data.role.why }
    : {};
  if (role === "builder") {
    const health = await healthCheck(cached, { deadline });
    steps.push({ step: "health", page: "runbook/health_check.md", findings: health.findings });
    return { role, ...guess, steps };
  }
  if (!options.reachBuilders) return { role, ...guess, steps };
  // Each builder's health check runs on verify_offload's own ssh connection, beside its checks:
  // one handshake per builder, reached as the daemon reaches it, and doctor costs about its
  // slowest builder.
  const machines = config.data.builders.machines.map((m) => m.machine).filter(ssh);
  const health = new Map<string, Promise<DoctorStep>>();
  const offload = await verifyMachines(target, {
    deadline,
    canary: options.canary ?? true,
    sshOptions: options.sshOptions ?? [],
    alongside: (machine, builder) => {
      // Two lines for one store URI (one per system) share one health check.
      if (health.has(machine.storeUri)) return Promise.resolve();
      const step = builderHealth(machine, builder, deadline);
      health.set(machine.storeUri, step);
      return step.then(() => {});
    },
  });
  steps.push({ step: "offload", page: "runbook/verify_offload.md", findings: offload.findings });
  const seen = new Set<string>();
  for (const machine of machines) {
    if (seen.has(machine.storeUri)) continue;
    seen.add(machine.storeUri);
    steps.push(
      await health.get(machine.storeUri) ??
        notChecked(machine, "ssh did not reach it as the nix-daemon would"),
    );
  }
  return { role, ...guess, steps };
}

/** A builder's health check, its findings named after the builder. */
async function builderHealth(
  machine: Machine,
  builder: Target,
  deadline: number,
): Promise<DoctorStep> {
  try {
    const result = await healthCheck(builder, { deadline });
    return {
      step: `health ${machine.storeUri}`,
      page: "runbook/health_check.md",
      findings: result.findings.map((f) => ({
        ...f,
        summary: `${machine.storeUri}: ${f.summary}`,
      })),
    };
  } catch (error) {
    return notChecked(machine, (error as Error).message);
  }
}

/** The health step of a builder that could not be reached: the offload findings say why. */
function notChecked(machine: Machine, why: string): DoctorStep {
  return {
    step: `health ${machine.storeUri}`,
    page: "runbook/health_check.md",
    findings: [{
      id: "health/unreachable",
      status: "unknown",
      summary: `${machine.storeUri}: health not checked: ${why}`,
      fix: "See the offload findings for this builder (runbook/verify_offload.md)",
    }],
  };
}

function roleFinding(
  target: Target,
  role: { value: "controller" | "builder"; guessed: boolean; why: string },
): Finding {
  return {
    id: "doctor/role",
    status: "ok",
    summary: `${target.host} is a ${role.value} (${
      role.guessed ? "guessed from " : ""
    }${role.why})`,
    ...(role.guessed && role.value === "builder"
      ? {
        detail:
          "Nothing here offloads builds (max-jobs is not 0 and no machines are configured), " +
          "so doctor checks this machine as a builder. To offload builds from it, start at " +
          "runbook/setup.md; pass --role to show_config to say which role it plays.",
      }
      : {}),
    data: role,
  };
}

/**
 * The doctor report: every step's findings, each problem pointing to its step's runbook page.
 *
 * @example
 * ```ts
 * import { doctorReport } from "./doctor.ts";
 * import assert from "node:assert/strict";
 *
 * const report = doctorReport({
 *   role: "builder",
 *   steps: [{ step: "health", page: "runbook/health_check.md", findings: [
 *     { id: "health/load", status: "warning", summary: "load", fix: "lower max-jobs" },
 *   ] }],
 * }, "builder1");
 * assert.equal(report.findings[0]?.fix, "lower max-jobs\nsee runbook/health_check.md");
 * assert.equal(report.status, "warning");
 * ```
 */
export function doctorReport(result: DoctorResult, host: string): Report {
  const findings: Finding[] = result.steps.flatMap((step) =>
    step.findings.map((f) =>
      f.status === "ok" || f.fix?.includes("runbook/")
        ? f
        : { ...f, fix: `${f.fix ? f.fix + "\n" : ""}see ${step.page}` }
    )
  );
  return makeReport(findings, {
    tool: "doctor",
    host,
    data: { role: result.role, steps: result.steps.map((s) => ({ step: s.step, page: s.page })) },
  });
}

/**
 * The summary table doctor prints under the findings: one row per step with its worst status, the
 * number of problems and the runbook page to open.
 *
 * @example
 * ```ts
 * import { renderDoctorSummary } from "./doctor.ts";
 * import assert from "node:assert/strict";
 *
 * const text = renderDoctorSummary({
 *   role: "builder",
 *   steps: [{ step: "health", page: "runbook/health_check.md", findings: [
 *     { id: "health/load", status: "warning", summary: "load" },
 *   ] }],
 * });
 * assert.match(text, /health +WARNING +1 +runbook\/health_check\.md/);
 * ```
 */
export function renderDoctorSummary(result: DoctorResult): string {
  const rows = result.steps.map((step) => {
    const status = worstStatus(step.findings.map((f) => f.status));
    const problems = step.findings.filter((f) => f.status !== "ok").length;
    return [step.step, status.toUpperCase(), String(problems), problems > 0 ? step.page : "-"];
  });
  const header = ["step", "status", "problems", "open"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  // A fresh machine is the README's first run: say plainly how doctor read it and where to go.
  const guess = result.roleGuess === undefined || result.role !== "builder" ? [] : [
    "",
    `Nothing here offloads builds (${result.roleGuess}), so this machine was checked as a builder.`,
    "To send builds to remote builders from here, start at runbook/setup.md.",
  ];
  return ["", `Summary (${result.role})`, line(header), ...rows.map(line), ...guess, ""].join("\n");
}
