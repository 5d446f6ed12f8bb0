/**
 * The `show_config` check: the effective Nix configuration with where each value comes from, the
 * machines list explained in words, and the mistakes in both flagged, each with its fix. Optionally
 * reaches the builders to compare what the machines list claims with what they offer.
 *
 * @module
 */

import { type Finding, finding } from "./findings.ts";
import {
  cannotTell,
  decodeHostKey,
  describeMachine,
  KNOWN_FEATURES,
  looksLikePublicKey,
  type Machine,
  machineCanBuild,
  type MachineError,
  type MachinesRules,
  machinesRules,
  parseMachines,
  resolveBuilders,
  type ResolvedBuilders,
  suspiciousFeature,
} from "./machines.ts";
import {
  canonPath,
  type ConfFile,
  loadNixConf,
  type NixConfLoad,
  readNixConfEnv,
} from "./nix_conf.ts";
import type { NixConfEnv } from "./nix_conf.ts";
import {
  type EffectiveConfig,
  type NixSettings,
  parseConfigShowText,
  parseNixVersion,
  readEffectiveConfig,
  settingList,
} from "./nix_config.ts";
import { SshTarget } from "./ssh_target.ts";
import { describeFailure, type Target, TargetError } from "./target.ts";

/** `nix --version` without any nix.conf (used when nix.conf makes every nix command fail). */
export const VERSION_WITHOUT_CONFIG: readonly string[] = [
  "env",
  "-u",
  "NIX_CONFIG",
  "NIX_CONF_DIR=/nonexistent",
  "NIX_USER_CONF_FILES=",
  "nix",
  "--version",
];

/** The settings shown by default: the post's five and the ones remote builds depend on. */
export const DEFAULT_KEYS: readonly string[] = [
  "builders",
  "builders-use-substitutes",
  "max-jobs",
  "cores",
  "system",
  "extra-platforms",
  "system-features",
  "substituters",
  "trusted-users",
  "sandbox",
  "extra-sandbox-paths",
  "max-silent-time",
  "experimental-features",
];

/** The role a machine plays. */
export type ConfigRole = "controller" | "builder";

/** Options for {@link checkConfig}. */
export interface CheckConfigOptions {
  /** The role; guessed from `max-jobs` and the machines list when absent. */
  role?: ConfigRole;
  /** Settings to show (default {@link DEFAULT_KEYS}); ignored with `all`. */
  keys?: readonly string[];
  /** Show every setting. */
  all?: boolean;
  /** Builders to reach over ssh and compare with the machines list (`--builder-host`). */
  builderHosts?: readonly string[];
  /** Reach the ssh builders of the machines list (default: only when the target is this machine). */
  followMachines?: boolean;
  /** Extra ssh `-o` options for builder connections. */
  sshOptions?: readonly string[];
  /** Absolute deadline (ms since the epoch) for builder connections. */
  deadline?: number;
  /** Opens a builder connection (default: an `SshTarget`); tests and `doctor` may pass their own. */
  openBuilder?: (spec: BuilderSpec) => Target;
}

/** How to reach one builder. */
export interface BuilderSpec {
  /** `[user@]host` as ssh gets it. */
  destination: string;
  /** A port from the store URI (`--host`-style `host:port`), if any. */
  port?: number;
  /** The identity file from the machines line. */
  sshKey?: string;
  /** The machines entries for this builder (none for a bare `--builder-host`). */
  machines: Machine[];
  /** What the user typed (`--builder-host`) or the store URI. */
  label: string;
}

/** A setting as shown. */
export interface ShownSetting {
  /** The setting's name (`extra-sandbox-paths` is shown as `sandbox-paths`). */
  name: string;
  /** Its effective value, as `nix config show` prints it; `null` when this Nix lacks it. */
  value: string | null;
  /** Nix's default, when the JSON form gave it. */
  defaultValue?: string;
  /** Whether the value differs from Nix's default. */
  differsFromDefault?: boolean;
  /** Where the value comes from: file:line of each contributing line, or a word. */
  origin: string[];
  /** A remark (e.g. why a name was mapped). */
  note?: string;
}

/** One machine in the report data. */
export interface MachineView {
  /** `file:line`. */
  where: string;
  /** The entry as written (comment cut). */
  text: string;
  /** The parsed machine. */
  machine: Machine;
  /** The explanation, field by field. */
  explained: string[];
}

/** What one reached builder offers. */
export interface BuilderView {
  /** The label (URI or `--builder-host`). */
  label: string;
  /** Whether its config could be read. */
  reached: boolean;
  /** Why not. */
  reason?: string;
  /** The login user over ssh. */
  user?: string;
  /** Its groups. */
  groups?: string[];
  /** Its `system`. */
  system?: string;
  /** `system` + `extra-platforms`. */
  systems?: string[];
  /** Its `system-features`. */
  features?: string[];
  /** Its `trusted-users`. */
  trustedUsers?: string[];
}

/** The structured part of the report (`--json` `data`). */
export interface ConfigData {
  /** Nix as found. */
  nix: { version: string | null; flavour: string | null; command: string[] | null; json: boolean };
  /** The role and whether it was guessed. */
  role: { value: ConfigRole; guessed: boolean; why: string };
  /** The settings shown. */
  settings: ShownSetting[];
  /** The nix.conf files Nix reads, in order, with their state. */
  files: ConfFile[];
  /** The environment that chose them. */
  env: NixConfEnv;
  /** The machines list. */
  builders: {
    /** The effective `builders` value. */
    setting: string | null;
    /** The rules applied. */
    rules: string;
    /** Every machine. */
    machines: MachineView[];
    /** Every `@file` met. */
    files: ResolvedBuilders["files"];
    /** Entries Nix rejects. */
    errors: MachineError[];
  };
  /** The builders reached. */
  reached: BuilderView[];
  /** The running nix-daemon, if any. */
  daemon: { running: boolean; startedAt?: number; staleFiles?: string[] } | null;
}

const FIX_RESTART =
  "restart the daemon so it rereads nix.conf: Linux `sudo systemctl restart nix-daemon`," +
  " macOS `sudo launchctl kickstart -k system/org.nixos.nix-daemon`";

function where(input: string, line: number): string {
  return `${input}:${line}`;
}

function sameTokens(a: string, b: string): boolean {
  const sa = a.split(/\s+/).filter((t) => t !== "").sort().join(" ");
  const sb = b.split(/\s+/).filter((t) => t !== "").sort().join(" ");
  return sa === sb;
}

const SYSTEM_RE = /^(?:builtin|[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)+)$/;

/**
 * Signs that a machines line's columns are shifted (a column added or left out), and a line that
 * would read as intended. `null` when fewer than two signs show.
 *
 * @example The seed post's line has an extra column
 * ```ts
 * import { parseMachines } from "./machines.ts";
 * import { shiftedColumns } from "./show_config.ts";
 * import assert from "node:assert/strict";
 *
 * const m = parseMachines("nixos x86_64-linux / - 8 1 kvm,big-parallel").machines[0]!;
 * assert.equal(shiftedColumns(m)?.suggestion, "nixos x86_64-linux - 8 1 kvm,big-parallel");
 * assert.equal(shiftedColumns(parseMachines("nixos x86_64-linux - 8 1 kvm,big-parallel").machines[0]!), null);
 * ```
 */
export function shiftedColumns(
  machine: Machine,
  rules: MachinesRules = machinesRules(),
): { signs: string[]; suggestion?: string } | null {
  const signs = oddities(machine);
  if (signs.length < 2) return null;
  const cols = machine.columns;
  const candidates: string[][] = [];
  for (let k = 1; k < cols.length; k++) {
    candidates.push([...cols.slice(0, k), ...cols.slice(k + 1)]);
  }
  for (let k = 1; k <= Math.min(cols.length, 7); k++) {
    candidates.push([...cols.slice(0, k), "-", ...cols.slice(k)]);
  }
  for (const candidate of candidates) {
    const parsed = parseMachines(candidate.join(" "), { version: rules });
    const m = parsed.machines[0];
    if (
      parsed.errors.length === 0 && m && oddities(m).length === 0 &&
      m.mandatoryFeatures.length === 0
    ) {
      return { signs, suggestion: candidate.join(" ") };
    }
  }
  return { signs };
}

function oddities(m: Machine): string[] {
  const signs: string[] = [];
  const key = m.sshKey;
  if (key !== undefined) {
    if (key === "/" || key.endsWith("/")) {
      signs.push(`the identity-file column holds '${key}', a directory`);
    } else if (/^\d+(\.\d+)?$/.test(key)) {
      signs.push(`the identity-file column holds the number '${key}'`);
    } else if (SYSTEM_RE.test(key) && /-(linux|darwin)$/.test(key)) {
      signs.push(`the identity-file column holds '${key}', a system`);
    } else if (key.includes(",")) signs.push(`the identity-file column holds a list '${key}'`);
  }
  for (const s of m.systems) {
    if (!SYSTEM_RE.test(s)) signs.push(`the systems column holds '${s}', not a system`);
  }
  if (
    m.maxJobsDefaulted && !m.speedFactorDefaulted && m.speedFactor >= 2 &&
    Number.isInteger(m.speedFactor)
  ) {
    signs.push(
      `max jobs is unset while the speed factor is ${m.speedFactor}, which reads like a job count`,
    );
  }
  const numeric = m.supportedFeatures.filter((f) => /^\d+(\.\d+)?$/.test(f));
  if (numeric.length > 0) {
    signs.push(`the supported-features column holds the number '${numeric.join(",")}'`);
  }
  if (m.mandatoryFeatures.length > 0 && m.supportedFeatures.every((f) => /^\d+(\.\d+)?$/.test(f))) {
    signs.push(
      "features sit in the mandatory column while the supported column is empty or a number",
    );
  }
  return signs;
}

/** Parses `ps` `etime` (`[[dd-]hh:]mm:ss`) into seconds. */
export function parseEtime(text: string): number | null {
  const match = /^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$/.exec(text.trim());
  if (!match) return null;
  const [, d = "0", h = "0", m = "0", s = "0"] = match;
  return ((Number(d) * 24 + Number(h)) * 60 + Number(m)) * 60 + Number(s);
}

/**
 * The command used to find the daemon's age: the target's clock, then age and name of every
 * `nix-daemon` in this pid namespace (daemons of containers and other pid namespaces are skipped).
 */
export const DAEMON_AGE_COMMAND: readonly string[] = [
  "sh",
  "-c",
  "date +%s; self=$(readlink /proc/self/ns/pid 2>/dev/null); " +
  "ps -A -o pid= -o etime= -o comm= | while read -r pid etime comm; do " +
  'case "$comm" in *nix-daemon) ;; *) continue ;; esac; ' +
  'if [ -n "$self" ]; then ns=$(readlink "/proc/$pid/ns/pid" 2>/dev/null); ' +
  '[ -n "$ns" ] && [ "$ns" != "$self" ] && continue; fi; ' +
  'echo "$etime $comm"; done',
];

async function daemonStart(
  target: Target,
): Promise<{ running: boolean; startedAt?: number } | null> {
  const result = await target.run(DAEMON_AGE_COMMAND);
  if (result.code !== 0 || result.failure) return null;
  const [first, ...rest] = result.stdout.split("\n");
  const now = Number(first?.trim());
  if (!Number.isFinite(now) || first?.trim() === "") return null;
  let oldest: number | null = null;
  for (const line of rest) {
    const match = /^\s*(\S+)\s+(.*)$/.exec(line);
    if (!match) continue;
    const age = parseEtime(match[1]!);
    if (age !== null && (oldest === null || age > oldest)) oldest = age;
  }
  return oldest === null ? { running: false } : { running: true, startedAt: now - oldest };
}

function originOf(
  name: string,
  conf: NixConfLoad | null,
  effective: string | null,
  defaultValue: string | undefined,
): string[] {
  if (conf === null) return ["unknown (nix.conf not read)"];
  const set = conf.settings.get(name);
  if (set === undefined) {
    if (name === "experimental-features" && effective?.split(" ").includes("nix-command")) {
      return ["nix-command from this tool's --extra-experimental-features; the rest Nix's default"];
    }
    if (effective !== null && defaultValue !== undefined && !sameTokens(effective, defaultValue)) {
      return ["not from nix.conf: Nix computes it, or the command line / environment sets it"];
    }
    return ["Nix's default"];
  }
  const lines = set.origins.map((o) =>
    `${o.file === "NIX_CONFIG" ? "NIX_CONFIG" : o.file}:${o.line}${o.append ? " (extra-)" : ""}`
  );
  if (set.appendsToDefault) lines.unshift("Nix's default");
  if (effective !== null && !set.appendsToDefault && !sameTokens(set.value, effective)) {
    lines.push(`but Nix shows '${effective}': the files say '${set.value}'`);
  }
  return lines;
}

function isControllerRole(
  explicit: ConfigRole | undefined,
  maxJobs: string | undefined,
  machineCount: number,
): { value: ConfigRole; guessed: boolean; why: string } {
  if (explicit) return { value: explicit, guessed: false, why: "--role" };
  if (maxJobs === "0") return { value: "controller", guessed: true, why: "max-jobs = 0" };
  if (machineCount > 0) {
    return { value: "controller", guessed: true, why: `${machineCount} machine(s) in builders` };
  }
  return { value: "builder", guessed: true, why: "no machines and max-jobs ≠ 0" };
}

/**
 * Runs the whole check on a target: effective config, nix.conf files, machines list, role-specific
 * findings, and (when reachable) the builders themselves.
 *
 * @example On a snapshot of a controller whose machines file is missing
 * ```ts
 * import { checkConfig } from "./show_config.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const nix = ["nix", "--extra-experimental-features", "nix-command"];
 * const target = new SnapshotTarget({
 *   meta: { host: "mac", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [
 *     { argv: ["nix", "--version"], code: 0, stdout: "nix (Nix) 2.8.0\n", stderr: "" },
 *     { argv: [...nix, "config", "show", "--json"], code: 1, stdout: "", stderr: "" },
 *     { argv: [...nix, "show-config", "--json"], code: 1, stdout: "", stderr: "" },
 *     { argv: [...nix, "config", "show"], code: 1, stdout: "", stderr: "" },
 *     {
 *       argv: [...nix, "show-config"],
 *       code: 0,
 *       stdout: "builders = @/etc/nix/machines\nbuilders-use-substitutes = true\nmax-jobs = 0\nsystem = x86_64-linux\n",
 *       stderr: "",
 *     },
 *   ],
 *   paths: { "/etc/nix/machines": { exists: false } },
 *   files: { "/etc/nix/nix.conf": "max-jobs = 0\nbuilders-use-substitutes = true\n" },
 * });
 * const { findings } = await checkConfig(target, {});
 * assert.ok(findings.some((f) => f.id === "machines/missing-file" && f.status === "critical"));
 * ```
 */
export async function checkConfig(
  target: Target,
  options: CheckConfigOptions = {},
): Promise<{ findings: Finding[]; data: ConfigData }> {
  const findings: Finding[] = [];
  // Nix itself.
  const versionArgv = ["nix", "--version"];
  const versionResult = await target.run(versionArgv);
  let version: ReturnType<typeof parseNixVersion> | null = null;
  let versionOut = versionResult;
  if (versionResult.code !== 0 && versionResult.code !== 127 && !versionResult.failure) {
    // A nix.conf Nix refuses makes every nix command fail: ask without reading any config.
    versionOut = await target.run(VERSION_WITHOUT_CONFIG);
  }
  if (versionOut.code === 0 && !versionOut.failure) {
    try {
      version = parseNixVersion(versionOut.stdout);
    } catch {
      version = null;
    }
  }
  const rules = machinesRules(version ?? undefined);
  const effective: EffectiveConfig =
    versionResult.failure === "not-found" || versionResult.code === 127
      ? {
        ok: false,
        reason: describeFailure(versionArgv, versionResult),
        result: versionResult,
        nixMissing: true,
      }
      : await readEffectiveConfig(target);
  let settings: NixSettings = new Map();
  if (effective.ok) {
    settings = effective.settings;
    await fixExperimentalFeatures(target, effective, settings);
    findings.push(finding(
      "config/effective",
      "ok",
      `${
        rules.label === "Nix 2.31.0" && !version ? "Nix" : rules.label
      }: effective settings read with '${effective.argv.slice(3).join(" ")}'`,
      {
        detail:
          "This is the client's view; the nix-daemon uses what it read from nix.conf when it started.",
      },
    ));
  } else {
    findings.push(finding(
      "config/effective-unavailable",
      effective.nixMissing ? "critical" : "unknown",
      effective.nixMissing
        ? `nix is not installed on ${target.host} (or not on PATH)`
        : `cannot read the effective Nix configuration: ${effective.reason}`,
      {
        fix: effective.nixMissing
          ? "Install Nix (NixOS: it is there; macOS: the official or Determinate installer; Debian: apt-get install nix-bin)"
          : "Run `nix --extra-experimental-features nix-command show-config` by hand and fix what it prints",
      },
    ));
  }
  const value = (name: string) => settings.get(name)?.value;

  // nix.conf files.
  const envResult = await readNixConfEnv(target);
  const env: NixConfEnv = envResult.ok ? envResult.env : {};
  let conf: NixConfLoad | null = null;
  try {
    const known = effective.ok ? new Set(settings.keys()) : undefined;
    conf = await loadNixConf(target, {
      env,
      ...(version ? { version } : {}),
      ...(known ? { knownSettings: known } : {}),
    });
  } catch (error) {
    findings.push(finding(
      "config/file-unreadable",
      "unknown",
      `cannot read nix.conf files: ${(error as Error).message}`,
    ));
  }
  if (conf) findings.push(...confFindings(conf));

  // Machines.
  const buildersSetting = effective.ok
    ? (value("builders") ?? "")
    : conf?.settings.get("builders")?.value ?? `@${env.NIX_CONF_DIR ?? "/etc/nix"}/machines`;
  const resolved = await resolveBuilders(
    buildersSetting,
    (path) => target.readFile(path.startsWith("/") ? path : canonPath(`/${path}`)),
    { version: rules },
  );
  const maxJobs = value("max-jobs") ?? conf?.settings.get("max-jobs")?.value;
  const role = isControllerRole(options.role, maxJobs, resolved.machines.length);
  const localSystem = value("system");
  const machineViews: MachineView[] = resolved.machines.map((m) => ({
    where: where(m.input, m.line),
    text: m.text,
    machine: m,
    explained: describeMachine(m, { rules, ...(localSystem ? { localSystem } : {}) }),
  }));
  findings.push(
    ...await machinesFindings({
      target,
      resolved,
      rules,
      role,
      maxJobs,
      buildersSetting,
      conf,
      env,
      ...(localSystem ? { localSystem } : {}),
    }),
  );

  // Role-specific settings.
  if (effective.ok) findings.push(...settingsFindings(role, settings, conf, resolved));

  // The daemon's age versus nix.conf.
  const daemon = await daemonFindings(target, conf, findings);

  // Builders.
  const reached: BuilderView[] = [];
  const follow = options.followMachines ?? target.kind === "local";
  const specs = builderSpecs(
    resolved.machines,
    options.builderHosts ?? [],
    follow && role.value === "controller",
  );
  // In parallel, so unreachable builders do not add up against the deadline; order kept.
  const results = await Promise.all(specs.map(async (spec) => {
    const own: Finding[] = [];
    return { view: await checkBuilder(spec, options, own), own };
  }));
  for (const { view, own } of results) {
    reached.push(view);
    findings.push(...own);
  }

  // Shown settings.
  const shown = shownSettings(options, settings, conf, effective.ok);
  const data: ConfigData = {
    nix: {
      version: version?.text ?? null,
      flavour: version?.flavour ?? null,
      command: effective.ok ? effective.argv : null,
      json: effective.ok ? effective.json : false,
    },
    role,
    settings: shown,
    files: conf?.files ?? [],
    env,
    builders: {
      setting: effective.ok ? buildersSetting : null,
      rules: rules.label,
      machines: machineViews,
      files: resolved.files,
      errors: resolved.errors,
    },
    reached,
    daemon,
  };
  return { findings, data };
}

/** Nix 2.8 (and Lix 2.92) print experimental features as numbers in JSON: take the text form. */
async function fixExperimentalFeatures(
  target: Target,
  effective: Extract<EffectiveConfig, { ok: true }>,
  settings: NixSettings,
): Promise<void> {
  const xp = settings.get("experimental-features");
  if (!effective.json || xp === undefined || !/^\d+( \d+)*$/.test(xp.value)) return;
  const argv = effective.argv.filter((a) => a !== "--json");
  const result = await target.run(argv);
  if (result.code !== 0 || result.failure) return;
  try {
    const text = parseConfigShowText(result.stdout, argv.join(" "));
    const fixed = text.get("experimental-features");
    if (fixed) settings.set("experimental-features", { ...xp, value: fixed.value });
  } catch {
    // keep the numbers
  }
}

function confFindings(conf: NixConfLoad): Finding[] {
  const out: Finding[] = [];
  if (conf.error) {
    const e = conf.error;
    out.push(finding(
      "config/nix-conf-rejected",
      "critical",
      `${
        where(e.file, e.line)
      }: Nix refuses this file, so every nix command fails: error: ${e.nixMessage}`,
      {
        detail: `line: '${e.text}'`,
        fix: e.nixMessage.includes("not found")
          ? "Create the included file, or write '!include' to make it optional"
          : e.nixMessage.includes("itself")
          ? "Break the include cycle"
          : "Write it as 'name = value' on one line (a value cannot continue on the next line);" +
            " NixOS/nix-darwin: fix nix.extraOptions or nix.settings",
      },
    ));
  }
  for (const e of conf.invalidValues) {
    out.push(finding(
      "config/invalid-value",
      "critical",
      `${where(e.file, e.line)}: Nix refuses '${e.text}': error: ${e.nixMessage}`,
      { fix: "Use a value of the setting's type (see `man nix.conf`)" },
    ));
  }
  for (const u of conf.unknown) {
    const base = u.name.startsWith("extra-") ? u.name.slice(6) : null;
    out.push(finding(
      "config/unknown-setting",
      "warning",
      `${where(u.file, u.line)}: '${u.name}' is not a setting this Nix knows: it only warns` +
        ` "unknown setting '${u.name}'" and ignores the line`,
      {
        ...(base === "builders"
          ? {
            detail: "'builders' is a string, not a list: 'extra-' does not append to it.",
            fix:
              "Put all machines in one 'builders = ...' value (entries separated by ';') or in the machines file",
          }
          : { fix: "Check the spelling and your Nix version's `man nix.conf`" }),
      },
    ));
  }
  for (const f of conf.files) {
    if (f.status !== "unreadable") continue;
    out.push(finding(
      "config/file-unreadable",
      "warning",
      `${f.path} exists but cannot be read${
        f.reason ? ` (${f.reason})` : ""
      }: Nix skips it silently`,
      { fix: `Make it readable (chmod 644 ${f.path}), or run this check as the user Nix runs as` },
    ));
  }
  return out;
}

interface MachinesContext {
  target: Target;
  resolved: ResolvedBuilders;
  rules: MachinesRules;
  role: { value: ConfigRole; guessed: boolean; why: string };
  maxJobs: string | undefined;
  buildersSetting: string;
  conf: NixConfLoad | null;
  env: NixConfEnv;
  localSystem?: string;
}

async function machinesFindings(ctx: MachinesContext): Promise<Finding[]> {
  const out: Finding[] = [];
  const { resolved, rules, role } = ctx;
  const controllerNoLocal = role.value === "controller" && ctx.maxJobs === "0";
  const none = resolved.machines.length === 0;
  let explained = false;
  const buildersOrigin = ctx.conf?.settings.get("builders")?.origins.at(-1);

  // builders empty while a machines file exists.
  if (ctx.buildersSetting.trim() === "") {
    const machinesFile = `${ctx.env.NIX_CONF_DIR ?? "/etc/nix"}/machines`;
    let exists = false;
    try {
      exists = (await ctx.target.stat(machinesFile)) !== null;
    } catch {
      exists = false;
    }
    if (exists || controllerNoLocal) {
      explained = true;
      out.push(finding(
        "machines/builders-empty",
        controllerNoLocal ? "critical" : "warning",
        `builders is empty${
          buildersOrigin ? ` (${where(buildersOrigin.file, buildersOrigin.line)})` : ""
        }` +
          (exists ? `, so ${machinesFile} is not used` : "") +
          (controllerNoLocal ? ": with max-jobs = 0 no build can start" : ""),
        {
          detail:
            "NixOS and nix-darwin write 'builders =' (empty) unless nix.distributedBuilds is on; " +
            "an empty value overrides the default '@/etc/nix/machines'.",
          fix:
            "NixOS / nix-darwin: nix.distributedBuilds = true; with nix.buildMachines = [ ... ];\n" +
            `other Linux: set 'builders = @${machinesFile}' in ${
              ctx.env.NIX_CONF_DIR ?? "/etc/nix"
            }/nix.conf` +
            " (or remove the empty 'builders =' line), then " +
            FIX_RESTART.replace(/^restart/, "restart"),
        },
      ));
    }
  }

  // The default '@$NIX_CONF_DIR/machines' pointing nowhere is normal on a machine that builds itself.
  const buildersChosen = role.value === "controller" || buildersOrigin !== undefined;
  for (const file of resolved.files) {
    if (file.status === "missing" && buildersChosen) {
      explained = true;
      out.push(finding(
        "machines/missing-file",
        controllerNoLocal && none ? "critical" : "warning",
        `${file.path} (named at ${where(file.from.input, file.from.line)}) does not exist: ` +
          "Nix silently runs with no machines from it" +
          (controllerNoLocal && none ? "; with max-jobs = 0 no build can start" : ""),
        {
          detail:
            "Nix only logs 'cannot find machines file' at debug level; builds then fail with " +
            "\"unable to start any build; either increase '--max-jobs' or enable remote builds\".",
          fix:
            `Create ${file.path} with one machine per line (see runbook/setup.md), or point builders at the right file;` +
            "\nNixOS / nix-darwin: nix.buildMachines writes /etc/nix/machines when nix.distributedBuilds = true",
        },
      ));
    } else if (file.status === "unknown") {
      explained = true;
      out.push(finding(
        "machines/file-unknown",
        "unknown",
        `cannot tell whether ${file.path} (named at ${
          where(file.from.input, file.from.line)
        }) exists: ${file.reason}`,
        { fix: "Run the check on the machine itself, or collect a new snapshot" },
      ));
    } else if (file.status === "error" || file.status === "cycle") {
      out.push(finding(
        "machines/file-error",
        "critical",
        `${file.path} (named at ${
          where(file.from.input, file.from.line)
        }) cannot be used: ${file.reason}` +
          (file.status === "error" ? "; Nix fails every remote build on it" : ""),
        {
          fix: file.status === "cycle"
            ? "Remove the @file that refers back"
            : `Make ${file.path} a readable file`,
        },
      ));
    }
  }

  for (const error of resolved.errors) {
    const hostKey = error.kind === "host-key";
    out.push(finding(
      hostKey ? "machines/invalid-host-key" : "machines/invalid-entry",
      "critical",
      `${
        where(error.input, error.line)
      }: Nix rejects this entry and every remote build fails: error: ${error.nixMessage}`,
      {
        detail: `entry: '${error.text}'`,
        fix: hostKey
          ? "Column #7 must be the base64 of the host's public key line: base64 -w0 < /etc/ssh/ssh_host_ed25519_key.pub, or '-'"
          : error.kind === "no-uri"
          ? "Start the line with the store URI, e.g. ssh-ng://builder@host"
          : error.kind === "max-jobs"
          ? "Column #3 is max jobs: a whole number, or '-'"
          : "Column #4 is the speed factor: a number ≥ 0 (whole numbers before Nix 2.20), or '-'",
      },
    ));
  }

  const seen = new Map<string, Machine>();
  for (const m of resolved.machines) {
    const at = where(m.input, m.line);
    const previous = seen.get(m.storeUri);
    if (previous) {
      out.push(finding(
        "machines/duplicate",
        "warning",
        `${at}: ${m.storeUri} is listed again (first at ${where(previous.input, previous.line)})`,
        {
          detail:
            "Both entries share the same slot locks; the second one's systems and features only confuse.",
          fix: "Keep one line per builder (merge the systems and features into it)",
        },
      ));
    } else {
      seen.set(m.storeUri, m);
    }
    if (m.port !== undefined && rules.hostPort === false) {
      out.push(finding(
        "machines/host-port-unsupported",
        "critical",
        `${at}: ${rules.label} does not read ':${m.port}' in '${m.rawUri}' as a port: ssh is asked for host '${m.host}:${m.port}'`,
        {
          detail:
            "Only Nix 2.31+ takes a port from the store URI. Before, the connection fails with " +
            '"Could not resolve hostname".',
          fix: `Put the port in root's ~/.ssh/config:\n  Host ${m.host}\n    Port ${m.port}\n` +
            `and write the URI without it (${m.scheme}://${
              m.user ? `${m.user}@` : ""
            }${m.host}), or use NIX_SSHOPTS='-p ${m.port}'`,
        },
      ));
    }
    const shifted = shiftedColumns(m, rules);
    if (shifted) {
      out.push(finding(
        "machines/columns-shifted",
        "warning",
        `${at}: the columns of '${m.text}' look shifted, so Nix reads it differently than intended`,
        {
          detail: [
            ...shifted.signs,
            `Nix reads: identity ${
              m.sshKey ?? "unset"
            }, max jobs ${m.maxJobs}, speed factor ${m.speedFactor}, ` +
            `supported {${m.supportedFeatures.join(", ")}}, mandatory {${
              m.mandatoryFeatures.join(", ")
            }}`,
          ].join("\n"),
          fix: shifted.suggestion
            ? `Write it as: ${shifted.suggestion}\n(columns: URI systems identity max-jobs speed-factor supported mandatory host-key; '-' for unset)`
            : "Columns are: URI systems identity max-jobs speed-factor supported mandatory host-key; '-' for unset",
        },
      ));
    }
    if (m.maxJobs === 0) {
      out.push(finding(
        "machines/max-jobs-zero",
        "warning",
        `${at}: ${m.storeUri} has max jobs 0, so Nix never sends it a build`,
        {
          fix:
            "Set column #3 to the number of builds it may run at once (e.g. its core count / cores)",
        },
      ));
    }
    if (!shifted) {
      const custom: string[] = [];
      for (const feature of [...m.supportedFeatures, ...m.mandatoryFeatures]) {
        const why = suspiciousFeature(feature);
        if (why) {
          out.push(finding("machines/feature-suspicious", "warning", `${at}: ${why}`, {
            fix:
              "Features are names like kvm, big-parallel, nixos-test, benchmark, comma-separated",
          }));
        } else if (!KNOWN_FEATURES.includes(feature) && !feature.startsWith("gccarch-")) {
          custom.push(feature);
        }
      }
      // Custom features are legitimate (a derivation asks for them with requiredSystemFeatures),
      // so an unknown name is said, not alarmed; a reached builder that lacks it is CRITICAL.
      if (custom.length > 0) {
        out.push(finding(
          "machines/feature-custom",
          "ok",
          `${at}: ${custom.join(", ")} ${custom.length === 1 ? "is a feature" : "are features"} ` +
            "Nix does not define itself",
          {
            detail: "Fine when the builder's system-features lists them and derivations ask for " +
              "them (requiredSystemFeatures). show_config checks the builder's list when it can " +
              "reach it (builder/feature-not-offered); a typo of a name Nix knows is a warning.",
            data: { features: custom },
          },
        ));
      }
    }
    if (m.mandatoryFeatures.length > 0) {
      const stranded = (m.systemsDefaulted && ctx.localSystem ? [ctx.localSystem] : m.systems)
        .filter((sys) =>
          !resolved.machines.some((other) =>
            machineCanBuild(other, { system: sys, requiredFeatures: [] }, {
              ...(ctx.localSystem ? { localSystem: ctx.localSystem } : {}),
            })
          )
        );
      const blocking = stranded.length > 0;
      out.push(finding(
        "machines/mandatory-features",
        blocking && controllerNoLocal ? "critical" : "warning",
        blocking
          ? `${at}: ${m.storeUri} only takes derivations that require all of ${
            m.mandatoryFeatures.join(", ")
          }, ` +
            `and no machine takes ordinary ${stranded.join(", ")} derivations` +
            (controllerNoLocal
              ? ': with max-jobs = 0 they fail ("remote machines may not have all required system features")'
              : "")
          : `${at}: ${m.storeUri} only takes derivations that require all of ${
            m.mandatoryFeatures.join(", ")
          }`,
        {
          detail:
            "Column #6 holds mandatory features: a derivation that does not require every one of them " +
            "is never sent there (most derivations require none).",
          fix:
            "If these were meant as supported features, move them to column #5 and put '-' in column #6",
        },
      ));
    }
    if (m.publicHostKey !== undefined) {
      const decoded = decodeHostKey(m.publicHostKey);
      if (decoded !== null && !looksLikePublicKey(decoded)) {
        out.push(finding(
          "machines/invalid-host-key",
          "warning",
          `${at}: column #7 decodes to '${
            decoded.slice(0, 40)
          }', not an ssh public key: ssh will reject the host`,
          {
            fix: "Use base64 -w0 < /etc/ssh/ssh_host_ed25519_key.pub (run on the builder), or '-'",
          },
        ));
      }
    }
    if (m.sshKey !== undefined && (m.scheme === "ssh" || m.scheme === "ssh-ng")) {
      out.push(...await identityFindings(ctx.target, m, at));
    }
  }

  if (
    role.value === "controller" && ctx.maxJobs === "0" && ctx.localSystem &&
    resolved.machines.length > 0
  ) {
    const covering = resolved.machines.filter((m) =>
      m.systemsDefaulted || m.systems.includes(ctx.localSystem!)
    );
    if (covering.length === 0) {
      out.push(finding(
        "machines/no-machine-for-system",
        "warning",
        `no machine builds ${ctx.localSystem}, this machine's own system, and max-jobs = 0: ` +
          `${ctx.localSystem} derivations that are not in a cache cannot be built`,
        {
          detail: "Only derivations with preferLocalBuild = true still build here.",
          fix:
            `Add a builder for ${ctx.localSystem}, or let this machine build its own system (max-jobs ≥ 1)`,
        },
      ));
    }
  }

  if (none && controllerNoLocal && !explained && resolved.errors.length === 0) {
    out.push(finding(
      "machines/none",
      "critical",
      `no machines in builders ('${ctx.buildersSetting}') and max-jobs = 0: no build can start`,
      {
        detail:
          "Builds fail with \"unable to start any build; either increase '--max-jobs' or enable remote builds\".",
        fix: "Add machines (see runbook/setup.md), or set max-jobs ≥ 1",
      },
    ));
  }
  if (resolved.machines.length > 0) {
    out.push(finding(
      "machines/summary",
      "ok",
      `${resolved.machines.length} machine(s) read with ${rules.label}'s rules`,
      { detail: resolved.machines.map((m) => `${where(m.input, m.line)}: ${m.text}`).join("\n") },
    ));
  }
  return out;
}

async function identityFindings(target: Target, m: Machine, at: string): Promise<Finding[]> {
  const key = m.sshKey!;
  const path = key.startsWith("/") ? key : canonPath(`/${key}`);
  let info;
  try {
    info = await target.stat(path);
  } catch (error) {
    if (cannotTell(error)) return [];
    return [finding(
      "machines/identity-file-unreadable",
      "unknown",
      `${at}: cannot check identity file ${key}: ${
        error instanceof TargetError ? error.message : String(error)
      }`,
      { fix: "Run this check as root, the user the nix-daemon runs ssh as" },
    )];
  }
  if (info === null) {
    return [finding(
      "machines/identity-file-missing",
      "warning",
      `${at}: identity file ${key} does not exist: ssh warns and falls back to root's default keys`,
      {
        fix:
          `Create it (ssh-keygen -t ed25519 -f ${key} -N ''), copy ${key}.pub to the builder's authorized_keys,` +
          " or put '-' in column #2 to use root's default keys",
      },
    )];
  }
  if (info.type !== "file") {
    return [finding(
      "machines/identity-file-not-file",
      "warning",
      `${at}: identity file ${key} is a ${info.type}, not a key file: ssh cannot load it and falls back to root's other keys`,
      {
        detail: key === "/"
          ? "Column #2 is the identity file; '/' there is the root directory, not 'default'. Use '-' for unset."
          : undefined,
        fix: "Put the private key's path in column #2, or '-' for root's default keys",
      },
    )];
  }
  if (info.uid === 0 && (info.mode & 0o077) !== 0) {
    return [finding(
      "machines/identity-file-permissions",
      "warning",
      `${at}: identity file ${key} is mode ${
        info.mode.toString(8).padStart(4, "0")
      }: ssh ignores a private key others can read`,
      {
        detail:
          "ssh prints 'WARNING: UNPROTECTED PRIVATE KEY FILE!' and 'This private key will be ignored.'",
        fix: `chmod 600 ${key}`,
      },
    )];
  }
  return [];
}

function settingsFindings(
  role: { value: ConfigRole; guessed: boolean; why: string },
  settings: NixSettings,
  conf: NixConfLoad | null,
  resolved: ResolvedBuilders,
): Finding[] {
  const out: Finding[] = [];
  if (role.value !== "controller") return out;
  const originText = (name: string) => {
    const o = conf?.settings.get(name)?.origins.at(-1);
    return o ? ` (${where(o.file, o.line)})` : " (Nix's default)";
  };
  const guessed = role.guessed
    ? ` (role guessed: ${role.why}; pass --role builder if it should build too)`
    : "";
  const maxJobs = settings.get("max-jobs")?.value;
  if (maxJobs !== undefined && maxJobs !== "0") {
    out.push(finding(
      "config/max-jobs-not-zero",
      "warning",
      `max-jobs = ${maxJobs}${
        originText("max-jobs")
      } on a controller: it also builds locally${guessed}`,
      {
        detail:
          "With max-jobs ≥ 1 Nix builds here whenever it finds no free builder, or the derivation prefers local builds.",
        fix:
          "NixOS / nix-darwin: nix.settings.max-jobs = 0;\nother: max-jobs = 0 in /etc/nix/nix.conf, then " +
          FIX_RESTART,
      },
    ));
  }
  const bus = settings.get("builders-use-substitutes")?.value;
  if (bus === "false" && resolved.machines.length > 0) {
    out.push(finding(
      "config/builders-use-substitutes-off",
      "warning",
      `builders-use-substitutes = false${
        originText("builders-use-substitutes")
      }: every input is copied from here to the builders`,
      {
        detail:
          "Builders could fetch inputs from their own substituters (e.g. cache.nixos.org) instead.",
        fix: "NixOS / nix-darwin: nix.settings.builders-use-substitutes = true;\n" +
          "other: builders-use-substitutes = true in /etc/nix/nix.conf, then " + FIX_RESTART,
      },
    ));
  }
  return out;
}

async function daemonFindings(
  target: Target,
  conf: NixConfLoad | null,
  findings: Finding[],
): Promise<ConfigData["daemon"]> {
  const daemon = await daemonStart(target);
  if (daemon === null || !daemon.running || daemon.startedAt === undefined || conf === null) {
    return daemon;
  }
  // The daemon reads its own NIX_CONF_DIR (normally /etc/nix): a client pointed elsewhere says
  // nothing about it.
  const systemSource = conf.sources.find((s) => s.kind === "system")?.path;
  if (systemSource !== "/etc/nix/nix.conf") return daemon;
  const stale: string[] = [];
  for (const file of conf.files) {
    if (file.status !== "read" || file.source !== "system") continue;
    try {
      const info = await target.stat(file.path);
      if (info && info.mtime > daemon.startedAt) stale.push(file.path);
    } catch {
      // cannot tell
    }
  }
  if (stale.length > 0) {
    findings.push(finding(
      "config/daemon-stale",
      "warning",
      `${stale.join(", ")} changed after the nix-daemon started (${
        new Date(daemon.startedAt * 1000).toISOString()
      }): ` +
        "the daemon still uses the old settings",
      {
        detail:
          "'nix config show' shows the client's view; builds run by the daemon use what it read at start." +
          " The machines file needs no restart.",
        fix:
          "NixOS / other Linux: sudo systemctl restart nix-daemon\nmacOS (nix-darwin or installer): " +
          "sudo launchctl kickstart -k system/org.nixos.nix-daemon",
      },
    ));
  }
  return { ...daemon, staleFiles: stale };
}

function builderSpecs(
  machines: readonly Machine[],
  hosts: readonly string[],
  follow: boolean,
): BuilderSpec[] {
  const specs = new Map<string, BuilderSpec>();
  const ssh = machines.filter((m) => (m.scheme === "ssh" || m.scheme === "ssh-ng") && m.host);
  for (const host of hosts) {
    const bare = host.replace(/^ssh(-ng)?:\/\//, "").split("?")[0]!;
    const hostname = bare.slice(bare.lastIndexOf("@") + 1).replace(/:\d+$/, "");
    const matching = ssh.filter((m) => m.host === hostname);
    const port = /:(\d+)$/.exec(bare);
    const spec: BuilderSpec = {
      destination: bare.replace(/:\d+$/, ""),
      machines: matching,
      label: host,
      ...(port ? { port: Number(port[1]) } : {}),
    };
    specs.set(`--${host}`, spec);
  }
  if (follow) {
    for (const m of ssh) {
      if ([...specs.values()].some((s) => s.machines.includes(m))) continue;
      const destination = m.user !== undefined ? `${m.user}@${m.host}` : m.host!;
      const key = `${destination}:${m.port ?? ""}:${m.sshKey ?? ""}`;
      const existing = specs.get(key);
      if (existing) {
        existing.machines.push(m);
        continue;
      }
      specs.set(key, {
        destination,
        machines: [m],
        label: m.storeUri,
        ...(m.port !== undefined ? { port: m.port } : {}),
        ...(m.sshKey !== undefined ? { sshKey: m.sshKey } : {}),
      });
    }
  }
  return [...specs.values()];
}

function defaultOpenBuilder(spec: BuilderSpec, options: CheckConfigOptions): Target {
  const nixSshOpts = (Deno.env.get("NIX_SSHOPTS") ?? "").split(/\s+/).filter((s) => s !== "");
  return new SshTarget(
    spec.port !== undefined ? `ssh://${spec.destination}:${spec.port}` : spec.destination,
    {
      sshArgs: [...nixSshOpts, ...(spec.sshKey !== undefined ? ["-i", spec.sshKey] : [])],
      sshOptions: [...(options.sshOptions ?? [])],
      ...(options.deadline !== undefined ? { deadline: options.deadline } : {}),
      timeoutMs: 20_000,
    },
  );
}

async function checkBuilder(
  spec: BuilderSpec,
  options: CheckConfigOptions,
  findings: Finding[],
): Promise<BuilderView> {
  const view: BuilderView = { label: spec.label, reached: false };
  let target: Target;
  try {
    target = options.openBuilder ? options.openBuilder(spec) : defaultOpenBuilder(spec, options);
  } catch (error) {
    view.reason = (error as Error).message;
    findings.push(finding("builder/unreachable", "unknown", `${spec.label}: ${view.reason}`));
    return view;
  }
  try {
    const idArgv = ["sh", "-c", "id -un; id -Gn"];
    const id = await target.run(idArgv);
    if (id.code !== 0 || id.failure) {
      view.reason = describeFailure(idArgv, id);
      findings.push(finding(
        "builder/unreachable",
        "unknown",
        `${spec.label}: cannot compare with the builder's own config: ${view.reason}`,
        {
          detail: Deno.uid?.() !== 0
            ? "This check ran as a non-root user; the nix-daemon connects as root with root's ssh config."
            : undefined,
          fix:
            "See runbook/verify_offload.md for connection problems (ssh as root, keys, known_hosts)",
        },
      ));
      return view;
    }
    const [user = "", groups = ""] = id.stdout.split("\n");
    view.user = user.trim();
    view.groups = groups.trim().split(/\s+/).filter((g) => g !== "");
    const config = await readEffectiveConfig(target);
    if (!config.ok) {
      view.reason = config.reason;
      findings.push(finding(
        "builder/unreachable",
        "unknown",
        `${spec.label}: reached as ${view.user}, but cannot read its Nix config: ${config.reason}`,
        {
          fix: config.nixMissing
            ? "nix is not on the PATH of non-interactive ssh sessions there: add ?remote-program=<path to nix-daemon>" +
              " (ssh-ng) or fix the login PATH; see runbook/verify_offload.md"
            : "Run `nix show-config` on the builder by hand",
        },
      ));
      return view;
    }
    view.reached = true;
    const s = config.settings;
    view.system = s.get("system")?.value ?? "";
    view.systems = [...new Set([view.system, ...settingList(s.get("extra-platforms"))])].filter((
      x,
    ) => x !== "");
    view.features = settingList(s.get("system-features"));
    view.trustedUsers = settingList(s.get("trusted-users"));
    const problems = compareBuilder(spec, view);
    findings.push(...problems);
    if (problems.length === 0) {
      findings.push(finding(
        "builder/checked",
        "ok",
        `${spec.label}: reached as ${view.user}; offers ${view.systems.join(", ")}` +
          (view.features.length ? ` with ${view.features.join(", ")}` : "") +
          `; ${view.user} is trusted`,
      ));
    }
    return view;
  } finally {
    await target.close();
  }
}

/**
 * Whether `user` (with `groups`) is in a `trusted-users` list (`*`, names, `@group`). root counts as
 * listed only when listed, as the daemon matches it; callers decide that root over ssh is trusted
 * anyway (it opens the local store itself).
 *
 * @example
 * ```ts
 * import { isTrustedUser } from "./show_config.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isTrustedUser("alice", ["wheel"], ["root", "@wheel"]), true);
 * assert.equal(isTrustedUser("nixremote", ["nixremote"], ["root"]), false);
 * ```
 */
export function isTrustedUser(
  user: string,
  groups: readonly string[],
  trusted: readonly string[],
): boolean {
  return trusted.some((t) =>
    t === "*" || t === user || (t.startsWith("@") && groups.includes(t.slice(1)))
  );
}

function compareBuilder(spec: BuilderSpec, view: BuilderView): Finding[] {
  const out: Finding[] = [];
  const systems = view.systems ?? [];
  const features = view.features ?? [];
  for (const m of spec.machines) {
    const at = where(m.input, m.line);
    const missingSystems = m.systems.filter((s) => s !== "builtin" && !systems.includes(s));
    if (missingSystems.length > 0) {
      out.push(finding(
        "builder/system-not-offered",
        "critical",
        `${at}: the line claims ${missingSystems.join(", ")}, but ${spec.label} offers only ${
          systems.join(", ")
        }`,
        {
          detail:
            `Builds for ${missingSystems.join(", ")} sent there fail: "a '${
              missingSystems[0]
            }' with features {...} ` +
            `is required to build '...', but I am a '${view.system}'".`,
          fix:
            `On the builder: add ${
              missingSystems.join(" ")
            } to extra-platforms (with working binfmt emulation,` +
            " NixOS: boot.binfmt.emulatedSystems), or remove them from the machines line",
        },
      ));
    }
    // A number in a features column is a shifted column (flagged already), not a claim.
    const claimed = [...m.supportedFeatures, ...m.mandatoryFeatures].filter((f) =>
      !/^\d+(\.\d+)?$/.test(f)
    );
    const missingFeatures = claimed.filter((f) => !features.includes(f));
    if (missingFeatures.length > 0) {
      out.push(finding(
        "builder/feature-not-offered",
        "critical",
        `${at}: the line claims ${
          missingFeatures.join(", ")
        }, but ${spec.label}'s system-features are ${features.join(", ") || "(none)"}`,
        {
          detail: "Derivations requiring them are sent there and fail: \"a '...' with features {" +
            `${missingFeatures.join(", ")}} is required to build '...'\".`,
          fix:
            `On the builder: add ${
              missingFeatures.join(" ")
            } to system-features (NixOS: nix.settings.system-features;` +
            " note it replaces the default list), or drop them from the machines line",
        },
      ));
    }
  }
  const user = view.user ?? "";
  // root is trusted whatever trusted-users says: with the default store ('auto') root can write
  // Nix's state directory, so 'nix-store --serve' and 'nix-daemon --stdio' open the local store
  // themselves and never ask the daemon (checked on the lab: a root@ build succeeds with
  // trusted-users = nixremote). verify_offload counts root the same way.
  if (
    user !== "" && user !== "root" &&
    !isTrustedUser(user, view.groups ?? [], view.trustedUsers ?? [])
  ) {
    out.push(finding(
      "builder/ssh-user-not-trusted",
      "critical",
      `${spec.label}: the ssh user '${user}' is not in the builder's trusted-users (${
        (view.trustedUsers ?? []).join(" ") || "empty"
      })`,
      {
        detail:
          'Builds fail with "you are not privileged to build input-addressed derivations" or ' +
          '"lacks a signature by a trusted key".',
        fix: `On the builder: NixOS nix.settings.trusted-users = [ "root" "${user}" ];` +
          ` other: trusted-users = root ${user} in /etc/nix/nix.conf, then restart nix-daemon`,
      },
    ));
  }
  return out;
}

function shownSettings(
  options: CheckConfigOptions,
  settings: NixSettings,
  conf: NixConfLoad | null,
  haveEffective: boolean,
): ShownSetting[] {
  const names = options.all ? [...settings.keys()].sort() : [...(options.keys ?? DEFAULT_KEYS)];
  const out: ShownSetting[] = [];
  for (const requested of names) {
    let name = requested;
    let note: string | undefined;
    if (!settings.has(name) && name.startsWith("extra-") && settings.has(name.slice(6))) {
      name = name.slice(6);
      note = `'${requested}' is not a setting of its own: it appends to '${name}', shown here`;
    }
    const s = settings.get(name);
    const shown: ShownSetting = {
      name,
      value: s?.value ?? (haveEffective ? null : conf?.settings.get(name)?.value ?? null),
      origin: originOf(name, conf, s?.value ?? null, s?.defaultValue),
    };
    if (s?.defaultValue !== undefined) {
      shown.defaultValue = s.defaultValue;
      shown.differsFromDefault = !sameTokens(s.defaultValue, s.value);
    }
    if (haveEffective && s === undefined) note = `this Nix has no setting '${requested}'`;
    if (note) shown.note = note;
    out.push(shown);
  }
  return out;
}

/**
 * The settings and the machines explained, for people (printed above the findings).
 *
 * @example
 * ```ts
 * import { renderConfigText } from "./show_config.ts";
 * import assert from "node:assert/strict";
 *
 * const text = renderConfigText({
 *   nix: { version: "2.8.0", flavour: "nix", command: null, json: true },
 *   role: { value: "builder", guessed: true, why: "no machines" },
 *   settings: [{ name: "max-jobs", value: "1", defaultValue: "1", differsFromDefault: false, origin: ["Nix's default"] }],
 *   files: [],
 *   env: {},
 *   builders: { setting: "", rules: "Nix 2.8.0", machines: [], files: [], errors: [] },
 *   reached: [],
 *   daemon: null,
 * });
 * assert.match(text, /max-jobs += 1 +Nix's default/);
 * ```
 */
export function renderConfigText(data: ConfigData): string {
  const lines: string[] = [];
  const nix = data.nix.version
    ? `${data.nix.flavour === "nix" ? "Nix" : data.nix.flavour} ${data.nix.version}`
    : "Nix";
  lines.push(
    `${nix}, role ${data.role.value}${data.role.guessed ? ` (guessed: ${data.role.why})` : ""}` +
      (data.nix.command ? `; settings from '${data.nix.command.slice(3).join(" ")}'` : ""),
  );
  const read = data.files.filter((f) => f.status === "read").map((f) => f.path);
  if (read.length > 0) lines.push(`nix.conf files read: ${read.join(", ")}`);
  lines.push("", "Settings (* differs from Nix's default):");
  const width = Math.max(...data.settings.map((s) => s.name.length), 8);
  const shown = (s: ShownSetting) =>
    s.value === null ? "(not a setting of this Nix)" : s.value === "" ? "(empty)" : s.value;
  const valueWidth = Math.min(Math.max(...data.settings.map((s) => shown(s).length), 5), 36);
  for (const s of data.settings) {
    const mark = s.differsFromDefault ? "*" : " ";
    lines.push(
      `${mark} ${s.name.padEnd(width)} = ${shown(s).padEnd(valueWidth)}  ${s.origin.join(", ")}`,
    );
    if (s.note) lines.push(`  ${" ".repeat(width)}   ${s.note}`);
  }
  lines.push("");
  const b = data.builders;
  if (b.setting !== null) {
    lines.push(
      `Machines (builders = ${b.setting === "" ? "(empty)" : b.setting}; ${b.rules} rules):`,
    );
  } else {
    lines.push(`Machines (${b.rules} rules):`);
  }
  for (const f of b.files) {
    if (f.status !== "read") {
      lines.push(`  @${f.path}: ${f.status}${f.reason ? ` (${f.reason})` : ""}`);
    }
  }
  if (b.machines.length === 0) lines.push("  (none)");
  for (const m of b.machines) {
    lines.push(`  ${m.where}  ${m.text}`);
    for (const e of m.explained) lines.push(`      ${e}`);
  }
  for (const e of b.errors) {
    lines.push(`  ${e.input}:${e.line}  ${e.text}\n      rejected by Nix: ${e.nixMessage}`);
  }
  if (data.reached.length > 0) {
    lines.push("", "Builders reached:");
    for (const r of data.reached) {
      lines.push(
        r.reached
          ? `  ${r.label}: as ${r.user}; system ${r.system}; platforms ${
            r.systems?.join(" ")
          }; features ${r.features?.join(" ") || "(none)"}; trusted-users ${
            r.trustedUsers?.join(" ") || "(none)"
          }`
          : `  ${r.label}: not compared (${r.reason})`,
      );
    }
  }
  return lines.join("\n") + "\n\n";
}
