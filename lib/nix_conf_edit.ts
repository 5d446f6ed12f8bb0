/**
 * Minimal, line-level edits of a nix.conf text: set a few settings and leave every other byte as it
 * was. Lines are located with `parseNixConf` (lib/nix_conf.ts), so the edit follows Nix's own
 * reading of the file.
 *
 * @module
 */

import { ParseError } from "./errors.ts";
import { type NixConfLine, parseNixConf, SETTING_ALIASES } from "./nix_conf.ts";

/** What happened to one setting. */
export interface NixConfEditChange {
  /** The setting. */
  name: string;
  /** The value now. */
  value: string;
  /** `replaced` a value in place, `appended` a new line, or `unchanged` (already so). */
  action: "replaced" | "appended" | "unchanged";
  /** 1-based line in the new text. */
  line: number;
  /** The previous value on that line, for `replaced`. */
  previous?: string;
}

/** The result of {@link setNixConfSettings}. */
export interface NixConfEdit {
  /** The new text. */
  text: string;
  /** One entry per setting asked for, in order. */
  changes: NixConfEditChange[];
}

/** Options for {@link setNixConfSettings}. */
export interface SetNixConfOptions {
  /** The file's path, for error messages. */
  path?: string;
  /** A comment line put before appended settings (without `# `). */
  marker?: string;
}

function namesFor(canonical: string): Set<string> {
  const names = new Set([canonical]);
  for (const [alias, target] of Object.entries(SETTING_ALIASES)) {
    if (target === canonical) names.add(alias);
  }
  return names;
}

/**
 * Sets settings in nix.conf text with the smallest edit: when the file's last assignment of a
 * setting (or of an alias, like `build-max-jobs`) is not followed by an `include`, its value is
 * replaced in place, keeping indentation, spacing and a trailing comment; otherwise one
 * `name = value` line is appended at the end (after `marker`, once), where nothing in the file can
 * override it. Every other byte stays. Throws {@link ParseError} when Nix would reject the file.
 *
 * @example
 * ```ts
 * import { setNixConfSettings } from "./nix_conf_edit.ts";
 * import assert from "node:assert/strict";
 *
 * const edit = setNixConfSettings("sandbox = false\n  max-jobs   =  8   # many\n", {
 *   "max-jobs": "1",
 *   cores: "2",
 * }, { marker: "added by oom_mitigate" });
 * assert.equal(edit.text, "sandbox = false\n  max-jobs   =  1   # many\n# added by oom_mitigate\ncores = 2\n");
 * assert.deepEqual(edit.changes.map((c) => c.action), ["replaced", "appended"]);
 * ```
 */
export function setNixConfSettings(
  text: string,
  settings: Readonly<Record<string, string>>,
  options: SetNixConfOptions = {},
): NixConfEdit {
  const path = options.path ?? "nix.conf";
  const parsed = parseNixConf(text, { path });
  if (parsed.error) {
    throw new ParseError(path, parsed.error.nixMessage, { line: parsed.error.line });
  }
  const lines = text.split("\n");
  const changes: NixConfEditChange[] = [];
  const appended: string[] = [];
  for (const [name, value] of Object.entries(settings)) {
    if (!/^[A-Za-z0-9-]+$/.test(name) || /[\n#]/.test(value) || value.trim() !== value) {
      throw new ParseError(path, `cannot set '${name}' to '${value}': not a plain setting`);
    }
    const names = namesFor(SETTING_ALIASES[name] ?? name);
    const settingLines = parsed.lines.filter((l): l is Extract<NixConfLine, { kind: "setting" }> =>
      l.kind === "setting" && names.has(l.name)
    );
    const last = settingLines.at(-1);
    const includeAfter = last !== undefined &&
      parsed.lines.some((l) => l.kind === "include" && l.line > last.line);
    if (last !== undefined && !includeAfter) {
      if (last.value === value) {
        changes.push({ name, value, action: "unchanged", line: last.line });
        continue;
      }
      const raw = lines[last.line - 1]!;
      const hash = raw.indexOf("#");
      const code = hash >= 0 ? raw.slice(0, hash) : raw;
      const comment = hash >= 0 ? raw.slice(hash) : "";
      const match = /^(\s*\S+\s*=[ \t]*)(.*?)([ \t\r]*)$/.exec(code);
      if (!match) throw new ParseError(path, `cannot edit '${raw}'`, { line: last.line });
      // Nix splits a line on whitespace and wants '=' alone: 'max-jobs =' (empty) must not become
      // 'max-jobs =1', which Nix rejects as an illegal configuration line.
      const head = /[ \t]$/.test(match[1]!) ? match[1] : `${match[1]} `;
      lines[last.line - 1] = `${head}${value}${match[3]}${comment}`;
      changes.push({ name, value, action: "replaced", line: last.line, previous: last.value });
      continue;
    }
    appended.push(`${name} = ${value}`);
    changes.push({ name, value, action: "appended", line: 0 });
  }
  let out = lines.join("\n");
  if (appended.length > 0) {
    if (out !== "" && !out.endsWith("\n")) out += "\n";
    const block = [...(options.marker ? [`# ${options.marker}`] : []), ...appended];
    const firstLine = out === "" ? 1 : out.split("\n").length;
    out += block.join("\n") + "\n";
    let next = firstLine + (options.marker ? 1 : 0);
    for (const change of changes) if (change.action === "appended") change.line = next++;
  }
  return { text: out, changes };
}
