/**
 * Which builder would take this derivation, and why: Nix's own choice replayed (build-remote's
 * rules: system, required and mandatory features, free slots from `/nix/var/nix/current-load`,
 * `load / speedFactor`, then the speed factor, then the load), plus when Nix builds locally instead
 * (`preferLocalBuild`, no machine, all busy) and when it gives up.
 *
 * @module
 */

import { ParseError } from "./errors.ts";
import type { Finding } from "./findings.ts";
import { chooseMachine, type Machine, resolveBuilders, whyMachineCannotBuild } from "./machines.ts";
import { parseNixVersion, readEffectiveConfig, settingList } from "./nix_config.ts";
import { describeFailure, type Target } from "./target.ts";

/** What a derivation asks of a machine (from `nix derivation show`). */
export interface DerivationNeeds {
  /** The derivation path. */
  drvPath: string;
  /** Its `system`. */
  system: string;
  /** Its `requiredSystemFeatures`. */
  requiredFeatures: string[];
  /** Its `preferLocalBuild`. */
  preferLocalBuild: boolean;
}

/** What {@link parseDerivationShow} names in its errors. */
const INPUT = "nix derivation show";

/**
 * Reads the needs of the first derivation in `nix derivation show` / `nix show-derivation` JSON
 * (plain env, or structured attrs in `__json`).
 *
 * @example
 * ```ts
 * import { parseDerivationShow } from "./explain.ts";
 * import assert from "node:assert/strict";
 *
 * const needs = parseDerivationShow(JSON.stringify({
 *   "/nix/store/abc-x.drv": { system: "x86_64-linux", env: { requiredSystemFeatures: "kvm big-parallel" } },
 * }));
 * assert.deepEqual(needs, {
 *   drvPath: "/nix/store/abc-x.drv",
 *   system: "x86_64-linux",
 *   requiredFeatures: ["kvm", "big-parallel"],
 *   preferLocalBuild: false,
 * });
 * ```
 */
export function parseDerivationShow(json: string): DerivationNeeds {
  let data: unknown;
  try {
    data = JSON.parse(json);
  } catch (error) {
    throw new ParseError(INPUT, `not JSON (${(error as Error).message})`);
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new ParseError(INPUT, "expected an object of derivations");
  }
  const entries = Object.entries(data as Record<string, unknown>);
  const [name, value] = entries[0] ?? [];
  if (name === undefined || value === null || typeof value !== "object") {
    throw new ParseError(INPUT, "the output names no derivation");
  }
  const drv = value as { system?: unknown; platform?: unknown; env?: Record<string, unknown> };
  const system = typeof drv.system === "string"
    ? drv.system
    : typeof drv.platform === "string"
    ? drv.platform
    : "";
  const env = drv.env ?? {};
  let features: string[] = [];
  let preferLocal = false;
  if (typeof env.__json === "string") {
    try {
      const attrs = JSON.parse(env.__json) as Record<string, unknown>;
      if (Array.isArray(attrs.requiredSystemFeatures)) {
        features = attrs.requiredSystemFeatures.map(String);
      }
      preferLocal = attrs.preferLocalBuild === true;
    } catch {
      // unreadable structured attrs: no features
    }
  } else {
    features = String(env.requiredSystemFeatures ?? "").split(/\s+/).filter((f) => f !== "");
    preferLocal = env.preferLocalBuild === "1";
  }
  // Newer Nix prints paths without /nix/store/ in `derivation show`; keep what it printed.
  return { drvPath: name, system, requiredFeatures: features, preferLocalBuild: preferLocal };
}

/**
 * The slot lock file Nix uses for a machine's slot: `<state>/current-load/<uri, '/' → '_'>-<slot>`.
 *
 * @example
 * ```ts
 * import { slotLockPath } from "./explain.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(slotLockPath("ssh-ng://builder1", 0), "/nix/var/nix/current-load/ssh-ng:__builder1-0");
 * ```
 */
export function slotLockPath(storeUri: string, slot: number, stateDir = "/nix/var/nix"): string {
  return `${stateDir}/current-load/${storeUri.replaceAll("/", "_")}-${slot}`;
}

/**
 * Counts busy slots: lock files that some process holds a write lock on, by inode, from
 * `/proc/locks` (read-only: taking the locks to test them would steal slots from real builds).
 *
 * @example
 * ```ts
 * import { busySlots } from "./explain.ts";
 * import assert from "node:assert/strict";
 *
 * const locks = "1: FLOCK  ADVISORY  WRITE 4242 fe:00:1234 0 EOF\n2: POSIX  ADVISORY  READ 1 fe:00:99 0 EOF\n";
 * assert.equal(busySlots(locks, [1234, 99, 5]), 1);
 * ```
 */
export function busySlots(procLocks: string, inodes: readonly number[]): number {
  const held = new Set<number>();
  for (const line of procLocks.split("\n")) {
    const match = /\b(FLOCK|POSIX|OFDLCK)\s+\S+\s+WRITE\s+\S+\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(
      line,
    );
    if (match) held.add(Number(match[2]));
  }
  return inodes.filter((i) => held.has(i)).length;
}

/** One machine in the explanation. */
export interface ExplainedMachine {
  /** Its store URI. */
  builder: string;
  /** The line as written. */
  line: string;
  /** Busy slots now, and of how many. */
  load: number;
  /** Its max jobs. */
  maxJobs: number;
  /** Its speed factor. */
  speedFactor: number;
  /** `chosen`, `eligible` (could take it, but another scores better), `busy` or `unsuitable`. */
  verdict: "chosen" | "eligible" | "busy" | "unsuitable";
  /** Why, in words. */
  reasons: string[];
}

/** What Nix would do with the derivation. */
export interface Explanation {
  /** The derivation's needs. */
  needs: DerivationNeeds;
  /** `remote` (to `chosen`), `local`, `wait` (all fitting machines busy) or `fail`. */
  decision: "remote" | "local" | "wait" | "fail";
  /** The chosen machine's store URI, for `remote`. */
  chosen?: string;
  /** One sentence saying what happens. */
  summary: string;
  /** Each machine and its verdict, in the machines file's order. */
  machines: ExplainedMachine[];
  /** Whether the controller itself could build it (`max-jobs` > 0, system and features local). */
  canBuildLocally: boolean;
}

/** The controller's side of the decision. */
export interface LocalAbility {
  /** `max-jobs`. */
  maxJobs: number;
  /** `system`. */
  system: string;
  /** `extra-platforms`. */
  extraPlatforms: string[];
  /** `system-features`. */
  systemFeatures: string[];
}

/**
 * Replays Nix's build-remote decision for `needs` over `machines` with the given busy-slot counts.
 *
 * @example
 * ```ts
 * import { explainChoice } from "./explain.ts";
 * import { parseMachines } from "./machines.ts";
 * import assert from "node:assert/strict";
 *
 * const { machines } = parseMachines("ssh://b1 x86_64-linux - 2 1 big-parallel\nssh://b2 aarch64-linux - 2 4\n");
 * const local = { maxJobs: 0, system: "x86_64-linux", extraPlatforms: [], systemFeatures: [] };
 * const needs = { drvPath: "/nix/store/x.drv", system: "aarch64-linux", requiredFeatures: [], preferLocalBuild: false };
 * const e = explainChoice(needs, machines, {}, local);
 * assert.equal(e.decision, "remote");
 * assert.equal(e.chosen, "ssh://b2");
 * assert.equal(e.machines[0]?.verdict, "unsuitable");
 * ```
 */
export function explainChoice(
  needs: DerivationNeeds,
  machines: readonly Machine[],
  load: Record<string, number>,
  local: LocalAbility,
): Explanation {
  const localSystems = [local.system, ...local.extraPlatforms];
  const missingLocal = needs.requiredFeatures.filter((f) => !local.systemFeatures.includes(f));
  const canBuildLocally = local.maxJobs > 0 &&
    (needs.system === "builtin" || localSystems.includes(needs.system)) &&
    missingLocal.length === 0;
  const choice = chooseMachine(machines, {
    system: needs.system,
    requiredFeatures: needs.requiredFeatures,
  }, {
    load,
    localSystem: local.system,
  });
  const explained: ExplainedMachine[] = choice.candidates.map((c) => {
    const suitable = whyMachineCannotBuild(c.machine, {
      system: needs.system,
      requiredFeatures: needs.requiredFeatures,
    }, { localSystem: local.system }).length === 0;
    const verdict: ExplainedMachine["verdict"] = choice.chosen === c.machine
      ? "chosen"
      : !suitable
      ? "unsuitable"
      : c.load >= c.machine.maxJobs
      ? "busy"
      : "eligible";
    const reasons = [...c.reasons];
    if (verdict === "chosen") {
      reasons.push(
        `free slot (${c.load}/${c.machine.maxJobs} busy), score load/speed = ${
          (c.load / c.machine.speedFactor).toFixed(2)
        }: the best`,
      );
    } else if (verdict === "eligible" && choice.chosen !== null) {
      const best = choice.chosen;
      const bestLoad = load[best.storeUri] ?? 0;
      const score = c.load / c.machine.speedFactor;
      const bestScore = bestLoad / best.speedFactor;
      const why = score > bestScore
        ? `${best.storeUri} scores lower (${bestScore.toFixed(2)})`
        : best.speedFactor > c.machine.speedFactor
        ? `same score; ${best.storeUri} has the higher speed factor (${best.speedFactor} > ${c.machine.speedFactor})`
        : bestLoad < c.load
        ? `same score and speed; ${best.storeUri} has fewer builds running`
        : `a full tie; ${best.storeUri} comes first in the machines list`;
      reasons.push(
        `could take it (${c.load}/${c.machine.maxJobs} busy, score load/speed = ${
          score.toFixed(2)
        }), but ${why}`,
      );
    }
    return {
      builder: c.machine.storeUri,
      line: c.machine.text,
      load: c.load,
      maxJobs: c.machine.maxJobs,
      speedFactor: c.machine.speedFactor,
      verdict,
      reasons,
    };
  });
  const base = { needs, machines: explained, canBuildLocally };
  const what = `${needs.system}${
    needs.requiredFeatures.length > 0 ? ` with {${needs.requiredFeatures.join(", ")}}` : ""
  }`;
  if (needs.preferLocalBuild && canBuildLocally) {
    return {
      ...base,
      decision: "local",
      summary: `built here: it sets preferLocalBuild and this machine can build ${what}`,
    };
  }
  if (choice.chosen !== null) {
    return {
      ...base,
      decision: "remote",
      chosen: choice.chosen.storeUri,
      summary: `built on ${choice.chosen.storeUri}`,
    };
  }
  if (canBuildLocally) {
    return {
      ...base,
      decision: "local",
      summary: choice.allBusy
        ? `built here: every machine that fits is busy and max-jobs = ${local.maxJobs} lets this machine build`
        : `built here: no machine builds ${what}, and this machine can`,
    };
  }
  if (choice.allBusy) {
    return {
      ...base,
      decision: "wait",
      summary: 'Nix waits: every machine that fits is busy ("waiting for a machine to build")',
    };
  }
  const nixSays = machines.length === 0
    ? "unable to start any build; either increase '--max-jobs' or enable remote builds"
    : 'Failed to find a machine for remote build!" and "unable to start any build; remote machines ' +
      "may not have all required system features";
  return {
    ...base,
    decision: "fail",
    summary: machines.length === 0
      ? `no machines at all, and this machine cannot build ${what}: Nix prints "${nixSays}"`
      : `no machine builds ${what}: Nix prints "${nixSays}"` +
        (local.maxJobs === 0
          ? ""
          : `, then refuses to build it here: "a '${needs.system}' with features {...} is required ` +
            `to build '...', but I am a '${local.system}' ..."`),
  };
}

/** The finding id for each decision. */
const EXPLAIN_IDS: Record<Explanation["decision"], string> = {
  remote: "offload/explain-remote",
  local: "offload/explain-local",
  wait: "offload/explain-wait",
  fail: "offload/explain-fail",
};

/** Options for {@link explainBuild}. */
export interface ExplainOptions {
  /** The `builders` text to use instead of the controller's effective one. */
  buildersOverride?: string;
  /** Time-out of the evaluation, in milliseconds (default 120 000). */
  evalTimeoutMs?: number;
}

/**
 * Explains where Nix would build `installable` (a `.drv` path, or anything `nix derivation show`
 * takes: `.#pkg`, `nixpkgs#hello`, a file with `--file`-less attr paths are not supported): reads the
 * derivation, the controller's effective config and machines, the current load, and replays the
 * choice. Returns a finding (`offload/explain-*`) and the explanation.
 *
 * @example
 * ```ts ignore
 * import { explainBuild } from "./explain.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * const { explanation } = await explainBuild(new LocalTarget(), "/nix/store/abc-hello.drv");
 * console.log(explanation?.summary);
 * ```
 */
export async function explainBuild(
  controller: Target,
  installable: string,
  options: ExplainOptions = {},
): Promise<{ findings: Finding[]; explanation?: Explanation }> {
  const nix = ["nix", "--extra-experimental-features", "nix-command flakes"];
  let shown = await controller.run([...nix, "derivation", "show", installable], {
    timeoutMs: options.evalTimeoutMs ?? 120_000,
  });
  if (shown.code !== 0 && /not a recognised command|'derivation'/.test(shown.stderr)) {
    shown = await controller.run([...nix, "show-derivation", installable], {
      timeoutMs: options.evalTimeoutMs ?? 120_000,
    });
  }
  if (shown.code !== 0 || shown.failure) {
    return {
      findings: [{
        id: "offload/explain-failed",
        status: "unknown",
        summary: `cannot read the derivation of '${installable}'`,
        detail: describeFailure(["nix", "derivation", "show", installable], shown),
        fix: "Pass a .drv path (nix-instantiate prints one) or an installable such as .#pkg.",
      }],
    };
  }
  const needs = parseDerivationShow(shown.stdout);
  if (!needs.drvPath.startsWith("/")) needs.drvPath = `/nix/store/${needs.drvPath}`;
  const [config, versionRun] = await Promise.all([
    readEffectiveConfig(controller),
    controller.run(["nix-store", "--version"]),
  ]);
  if (!config.ok) {
    return {
      findings: [{
        id: "offload/explain-failed",
        status: "unknown",
        summary: "cannot read the controller's effective config",
        detail: config.reason,
      }],
    };
  }
  const s = config.settings;
  let version: string | undefined;
  try {
    version = parseNixVersion(versionRun.stdout).text;
  } catch {
    version = undefined;
  }
  const resolved = await resolveBuilders(
    options.buildersOverride ?? s.get("builders")?.value ?? "",
    (path) => controller.readFile(path),
    version !== undefined ? { version } : {},
  );
  const maxJobsText = s.get("max-jobs")?.value ?? "1";
  const local: LocalAbility = {
    maxJobs: maxJobsText === "auto" ? 1 : Number(maxJobsText) || 0,
    system: s.get("system")?.value ?? "",
    extraPlatforms: settingList(s.get("extra-platforms")),
    systemFeatures: settingList(s.get("system-features")),
  };
  const load = await readLoad(controller, resolved.machines);
  const explanation = explainChoice(needs, resolved.machines, load, local);
  const status = explanation.decision === "fail"
    ? "critical"
    : explanation.decision === "wait"
    ? "warning"
    : "ok";
  const detail = [
    `derivation: ${needs.drvPath}`,
    `needs: ${needs.system}, features {${needs.requiredFeatures.join(", ")}}` +
    (needs.preferLocalBuild ? ", preferLocalBuild" : ""),
    `this machine: max-jobs = ${maxJobsText}, system = ${local.system}` +
    (local.extraPlatforms.length > 0
      ? `, extra-platforms = ${local.extraPlatforms.join(" ")}`
      : "") +
    (explanation.canBuildLocally ? " (can build it)" : " (cannot build it)"),
    ...explanation.machines.map((m) =>
      `${
        m.verdict.padEnd(10)
      } ${m.builder} (${m.load}/${m.maxJobs} busy, speed ${m.speedFactor}): ${
        m.reasons.join("; ") || "fits"
      }`
    ),
  ].join("\n");
  const finding: Finding = {
    id: EXPLAIN_IDS[explanation.decision],
    status,
    summary: `${needs.drvPath.replace(/^\/nix\/store\/[0-9a-z]{32}-/, "")}: ${explanation.summary}`,
    detail,
    data: explanation,
  };
  if (status !== "ok") {
    finding.fix = explanation.decision === "fail"
      ? "Add a machine that builds it (systems, and every required feature in column 6 or 7), or " +
        "offer the system/features on an existing builder and list them on its line."
      : "Wait, raise the fitting machines' max jobs (column 4), or add a builder.";
  }
  return { findings: [finding], explanation };
}

/** Busy slots per machine, from the slot lock files and `/proc/locks` (Linux; 0 elsewhere). */
async function readLoad(
  controller: Target,
  machines: readonly Machine[],
): Promise<Record<string, number>> {
  const load: Record<string, number> = {};
  const files = machines.flatMap((m) =>
    Array.from(
      { length: Math.min(m.maxJobs, 256) },
      (_, slot) => ({ m, path: slotLockPath(m.storeUri, slot) }),
    )
  );
  if (files.length === 0) return load;
  const stat = await controller.run([
    "sh",
    "-c",
    'for f in "$@"; do if [ -e "$f" ]; then stat -c "%i" -- "$f"; else echo -; fi; done',
    "sh",
    ...files.map((f) => f.path),
  ]);
  let locks: string | null = null;
  try {
    locks = await controller.readFile("/proc/locks");
  } catch {
    locks = null;
  }
  const inodes = stat.stdout.split("\n");
  for (const m of machines) load[m.storeUri] = 0;
  if (locks === null || stat.code !== 0) return load;
  files.forEach((f, i) => {
    const inode = Number(inodes[i]);
    if (Number.isInteger(inode) && busySlots(locks!, [inode]) > 0) {
      load[f.m.storeUri] = (load[f.m.storeUri] ?? 0) + 1;
    }
  });
  return load;
}
