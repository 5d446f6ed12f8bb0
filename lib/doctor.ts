/**
 * The whole runbook from where you sit: which role this machine plays, then the checks for that role.
 *
 * @module
 */

import type { Finding } from "./findings.ts";
import { type EffectiveConfig, parseNixVersion, readEffectiveConfig } from "./nix_config.ts";
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
}

/** What {@link runDoctor} returns: findings per runbook step. */
export interface DoctorResult {
  /** The role this machine plays. */
  role: Role;
  /** Each step run, with its findings and its runbook page. */
  steps: { step: string; page: string; findings: Finding[] }[];
}

/**
 * Runs every runbook step that applies to the target's role.
 *
 * @example
 * ```ts
 * import { runDoctor } from "./doctor.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const result = await runDoctor(new LocalTarget({ timeoutMs: 20_000 }));
 * assert.equal(result.steps[0]?.step, "nix");
 * ```
 */
export async function runDoctor(
  target: Target,
  _options: DoctorOptions = {},
): Promise<DoctorResult> {
  const basics = await checkNix(target);
  const steps: DoctorResult["steps"] = [
    { step: "nix", page: SETUP_PAGE, findings: basics.findings },
  ];
  return { role: basics.role, steps };
}
