/**
 * The effective Nix configuration as `nix config show` (Nix ≥ 2.20) or `nix show-config` prints it,
 * text or JSON, and reading it from a target.
 *
 * @module
 */

import { ParseError, parseJsonText } from "./errors.ts";
import { describeFailure, type RunResult, type Target } from "./target.ts";

/** One setting of the effective configuration. */
export interface NixSetting {
  /** The value as Nix prints it in text form (lists space-joined, booleans `true`/`false`). */
  value: string;
  /** Nix's default in the same text form, when the JSON form gave it. */
  defaultValue?: string;
  /** Nix's description, when the JSON form gave it. */
  description?: string;
}

/** The effective configuration: settings by name. */
export type NixSettings = Map<string, NixSetting>;

/**
 * Formats a typed JSON setting value the way the text form prints it.
 *
 * @example
 * ```ts
 * import { settingText } from "./nix_config.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(settingText(["kvm", "big-parallel"]), "kvm big-parallel");
 * assert.equal(settingText(false), "false");
 * assert.equal(settingText({ "github.com": "x" }), "github.com=x");
 * ```
 */
export function settingText(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map(settingText).join(" ");
  if (typeof value === "object") {
    return Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${k}=${settingText(v)}`)
      .join(" ");
  }
  return String(value);
}

/**
 * Parses the text form: `name = value` lines (empty values print `name = `).
 *
 * @example
 * ```ts
 * import { parseConfigShowText } from "./nix_config.ts";
 * import assert from "node:assert/strict";
 *
 * const settings = parseConfigShowText("builders = \nmax-jobs = 0\nsystem = x86_64-linux\n");
 * assert.equal(settings.get("builders")?.value, "");
 * assert.equal(settings.get("max-jobs")?.value, "0");
 * ```
 */
export function parseConfigShowText(text: string, input = "nix config show"): NixSettings {
  const settings: NixSettings = new Map();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, "");
    if (line.trim() === "") continue;
    const eq = line.indexOf(" = ");
    const bare = line.endsWith(" =") ? line.length - 2 : -1;
    const at = eq >= 0 ? eq : bare;
    if (at <= 0) {
      throw new ParseError(input, `expected 'name = value', got '${line.slice(0, 80)}'`, {
        line: i + 1,
      });
    }
    const name = line.slice(0, at);
    if (!/^[A-Za-z0-9-]+$/.test(name)) {
      throw new ParseError(input, `'${name.slice(0, 80)}' is not a setting name`, { line: i + 1 });
    }
    settings.set(name, { value: line.slice(at + 3) });
  }
  return settings;
}

/** How deep arrays and objects nest in a JSON value (iteratively: no recursion to overflow). */
function depthOf(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    deepest = Math.max(deepest, depth + 1);
    if (deepest > 64) return deepest;
    for (const child of Object.values(v as Record<string, unknown>)) stack.push([child, depth + 1]);
  }
  return deepest;
}

/**
 * Parses the `--json` form: `{name: {value, defaultValue, description, ...}}` (Nix 2.4+) or the flat
 * `{name: value}` of Nix 2.3.
 *
 * @example
 * ```ts
 * import { parseConfigShowJson } from "./nix_config.ts";
 * import assert from "node:assert/strict";
 *
 * const settings = parseConfigShowJson('{"max-jobs":{"value":0,"defaultValue":1,"description":"d"}}');
 * assert.deepEqual(settings.get("max-jobs"), { value: "0", defaultValue: "1", description: "d" });
 * assert.equal(parseConfigShowJson('{"cores":"4"}').get("cores")?.value, "4");
 * ```
 */
export function parseConfigShowJson(text: string, input = "nix config show --json"): NixSettings {
  const data = parseJsonText(text, input);
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new ParseError(input, "expected a JSON object of settings");
  }
  const settings: NixSettings = new Map();
  for (const [name, entry] of Object.entries(data as Record<string, unknown>)) {
    // settingText() recurses: a value nested thousands deep would overflow the stack.
    if (depthOf(entry) > 64) {
      throw new ParseError(input, `setting '${name.slice(0, 80)}' is nested too deep`);
    }
    if (entry !== null && typeof entry === "object" && !Array.isArray(entry) && "value" in entry) {
      const e = entry as Record<string, unknown>;
      const setting: NixSetting = { value: settingText(e.value) };
      if ("defaultValue" in e) setting.defaultValue = settingText(e.defaultValue);
      if (typeof e.description === "string") setting.description = e.description;
      settings.set(name, setting);
    } else if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      settings.set(name, { value: settingText(entry) });
    } else {
      throw new ParseError(input, `setting '${name}' has no 'value'`);
    }
  }
  return settings;
}

/**
 * Parses `nix --version` output into `[major, minor, patch]` and the flavour (nix, lix, determinate).
 *
 * @example
 * ```ts
 * import { parseNixVersion } from "./nix_config.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseNixVersion("nix (Nix) 2.8.0\n"), { flavour: "nix", version: [2, 8, 0], text: "2.8.0" });
 * assert.equal(parseNixVersion("nix (Lix, like Nix) 2.91.1").flavour, "lix");
 * assert.equal(parseNixVersion("nix (Determinate Nix 3.6.2) 2.29.0").version[1], 29);
 * ```
 */
export function parseNixVersion(
  text: string,
): { flavour: "nix" | "lix" | "determinate"; version: [number, number, number]; text: string } {
  const line = text.trim().split("\n")[0] ?? "";
  const match = /\)\s+(\d+)\.(\d+)(?:\.(\d+))?[^\s]*\s*$/.exec(line) ??
    /(\d+)\.(\d+)(?:\.(\d+))?/.exec(line);
  if (!match) throw new ParseError("nix --version", `no version number in '${line.slice(0, 80)}'`);
  const flavour = /Lix/.test(line) ? "lix" : /Determinate/.test(line) ? "determinate" : "nix";
  const version: [number, number, number] = [
    Number(match[1]),
    Number(match[2]),
    Number(match[3] ?? 0),
  ];
  return { flavour, version, text: version.join(".") };
}

/**
 * Whether a version is at least `[major, minor]`.
 *
 * @example
 * ```ts
 * import { versionAtLeast } from "./nix_config.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(versionAtLeast([2, 8, 0], [2, 20]), false);
 * ```
 */
export function versionAtLeast(
  version: readonly number[],
  minimum: readonly [number, number],
): boolean {
  const [major = 0, minor = 0] = version;
  return major > minimum[0] || (major === minimum[0] && minor >= minimum[1]);
}

/** The effective configuration of a target, or why it could not be read. */
export type EffectiveConfig =
  | {
    ok: true;
    /** The settings. */
    settings: NixSettings;
    /** The argv that produced them. */
    argv: string[];
    /** Whether it came from the JSON form (so `defaultValue` is known). */
    json: boolean;
  }
  | {
    ok: false;
    /** One line: what failed. */
    reason: string;
    /** The last command's result. */
    result: RunResult;
    /** Whether nix itself is missing. */
    nixMissing: boolean;
  };

const NIX = ["nix", "--extra-experimental-features", "nix-command"];

/**
 * The commands tried, in order: `config show` (2.20+), then `show-config`; JSON first.
 *
 * @example
 * ```ts
 * import { CONFIG_COMMANDS } from "./nix_config.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(CONFIG_COMMANDS.map((argv) => argv.slice(3).join(" ")), [
 *   "config show --json",
 *   "show-config --json",
 *   "config show",
 *   "show-config",
 * ]);
 * ```
 */
export const CONFIG_COMMANDS: readonly (readonly string[])[] = [
  [...NIX, "config", "show", "--json"],
  [...NIX, "show-config", "--json"],
  [...NIX, "config", "show"],
  [...NIX, "show-config"],
];

/**
 * Reads the effective configuration the way the installed Nix supports: `nix config show --json`,
 * then `nix show-config --json`, then the text forms.
 *
 * @example
 * ```ts
 * import { readEffectiveConfig } from "./nix_config.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [{
 *     argv: ["nix", "--extra-experimental-features", "nix-command", "config", "show", "--json"],
 *     code: 0,
 *     stdout: '{"max-jobs":{"value":0,"defaultValue":1}}',
 *     stderr: "",
 *   }],
 *   paths: {},
 *   files: {},
 * });
 * const config = await readEffectiveConfig(target);
 * assert.equal(config.ok && config.settings.get("max-jobs")?.value, "0");
 * ```
 */
export async function readEffectiveConfig(target: Target): Promise<EffectiveConfig> {
  let last: { argv: string[]; result: RunResult } | undefined;
  for (const argv of CONFIG_COMMANDS) {
    const result = await target.run(argv);
    last = { argv: [...argv], result };
    if (result.failure === "not-found") break;
    if (result.failure === "timeout" || result.failure === "unreachable") break;
    if (result.code !== 0) continue;
    const json = argv.includes("--json");
    try {
      const settings = json
        ? parseConfigShowJson(result.stdout, argv.join(" "))
        : parseConfigShowText(result.stdout, argv.join(" "));
      return { ok: true, settings, argv: [...argv], json };
    } catch (error) {
      return {
        ok: false,
        reason: (error as Error).message,
        result,
        nixMissing: false,
      };
    }
  }
  const { argv, result } = last!;
  return {
    ok: false,
    reason: describeFailure(argv, result),
    result,
    nixMissing: result.failure === "not-found" || result.code === 127,
  };
}

/**
 * Splits a list setting's text value into its items.
 *
 * @example
 * ```ts
 * import { settingList } from "./nix_config.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(settingList({ value: "kvm  big-parallel" }), ["kvm", "big-parallel"]);
 * assert.deepEqual(settingList(undefined), []);
 * ```
 */
export function settingList(setting: NixSetting | undefined): string[] {
  return (setting?.value ?? "").split(/\s+/).filter((s) => s !== "");
}
