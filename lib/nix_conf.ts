/**
 * nix.conf files read with Nix's own rules, so each value can be traced to the file and line that
 * set it, and a file Nix would reject is reported with Nix's own error text.
 *
 * Rules, from the Nix source (`src/libutil/config.cc` / `configuration.cc`, `src/libstore/globals.cc`)
 * and checked against a real Nix 2.8:
 *
 * - Each line is cut at its first `#` and split on whitespace. An empty line is skipped; one token
 *   alone, or a second token that is not `=`, is a syntax error (`illegal configuration line` up to
 *   Nix 2.19 and in Lix, `syntax error in configuration line` since). The value is the remaining
 *   tokens joined by single spaces.
 * - `include PATH` (missing: `file '...' included from '...' not found`) and `!include PATH`
 *   (missing: ignored) read another file, relative to the including file's directory, in place.
 *   A file that exists but cannot be read is skipped silently.
 * - `extra-NAME` appends to a list, set or map setting; on any other setting it is an unknown
 *   setting (a warning, and ignored). Aliases (`build-max-jobs`...) set the setting they alias.
 * - Sources, later overriding earlier: `$NIX_CONF_DIR/nix.conf` (default `/etc/nix`); then the
 *   user files, `NIX_USER_CONF_FILES` (colon-separated) or `$XDG_CONFIG_HOME/nix/nix.conf` and each
 *   `$XDG_CONFIG_DIRS` entry's `nix/nix.conf`, applied last to first so the first one wins; then the
 *   `NIX_CONFIG` variable. A missing or unreadable source file is skipped silently.
 *
 * @example Trace a value to its line
 * ```ts
 * import { loadNixConf } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * const files: Record<string, string> = {
 *   "/etc/nix/nix.conf": "max-jobs = 0\n!include nix.custom.conf\n",
 *   "/etc/nix/nix.custom.conf": "extra-system-features = kvm # for VMs\n",
 * };
 * const conf = await loadNixConf({ readFile: async (p) => files[p] ?? null }, { env: {} });
 * assert.deepEqual(conf.settings.get("max-jobs")?.origins[0], {
 *   file: "/etc/nix/nix.conf",
 *   line: 1,
 *   name: "max-jobs",
 *   value: "0",
 *   append: false,
 * });
 * assert.equal(conf.settings.get("system-features")?.origins[0]?.file, "/etc/nix/nix.custom.conf");
 * ```
 *
 * @module
 */

import { cannotTell, type NixVersionLike } from "./machines.ts";
import { describeFailure, type Target } from "./target.ts";

/** One meaningful line of a nix.conf file. */
export type NixConfLine =
  | {
    kind: "setting";
    /** 1-based line number. */
    line: number;
    /** The name as written (may be an alias or `extra-...`). */
    name: string;
    /** The value: the tokens after `=` joined by single spaces. */
    value: string;
  }
  | {
    kind: "include";
    /** 1-based line number. */
    line: number;
    /** The path as written. */
    path: string;
    /** `!include`: a missing file is ignored. */
    optional: boolean;
  };

/** A file Nix would refuse to load: every nix command fails with this error. */
export interface NixConfError {
  /** The file (or `NIX_CONFIG`). */
  file: string;
  /** 1-based line. */
  line: number;
  /** The line as Nix quotes it (comment cut). */
  text: string;
  /** Nix's own error text, without the `error: ` prefix. */
  nixMessage: string;
}

/** What {@link parseNixConf} found in one text. */
export interface ParsedNixConf {
  /** Settings and includes, in order, up to the first error. */
  lines: NixConfLine[];
  /** The first line Nix rejects (Nix stops there). */
  error?: NixConfError;
}

/** Options for {@link parseNixConf}. */
export interface ParseNixConfOptions {
  /** The file's path (or `NIX_CONFIG`), used in Nix's messages. */
  path?: string;
  /** The Nix version, for the wording of errors (default: the newest). */
  version?: NixVersionLike;
}

function versionOf(version: NixVersionLike | undefined): { lix: boolean; v: number[] } {
  if (version === undefined) return { lix: false, v: [99, 0, 0] };
  if (typeof version === "string") {
    const match = /\)\s+(\d+)\.(\d+)/.exec(version) ?? /(\d+)\.(\d+)/.exec(version);
    return { lix: /Lix/.test(version), v: match ? [Number(match[1]), Number(match[2])] : [99, 0] };
  }
  return { lix: version.flavour === "lix", v: [...version.version] };
}

/**
 * Nix's wording for a malformed nix.conf line: `illegal configuration line` (Nix 2.8 measured,
 * Lix source) or `syntax error in configuration line` (current Nix source; from 2.20 inferred).
 *
 * @example
 * ```ts
 * import { syntaxErrorWording } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(syntaxErrorWording("2.8.0"), "illegal configuration line");
 * assert.equal(syntaxErrorWording("2.24.9"), "syntax error in configuration line");
 * ```
 */
export function syntaxErrorWording(version?: NixVersionLike): string {
  const { lix, v } = versionOf(version);
  const [major = 0, minor = 0] = v;
  const modern = !lix && (major > 2 || (major === 2 && minor >= 20));
  return modern ? "syntax error in configuration line" : "illegal configuration line";
}

/**
 * Parses one nix.conf text into settings and includes (not followed), stopping at the first line
 * Nix rejects.
 *
 * @example
 * ```ts
 * import { parseNixConf } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * const parsed = parseNixConf("builders = @/etc/nix/machines # remote\nmax-jobs 0\n", {
 *   path: "/etc/nix/nix.conf",
 *   version: "2.8.0",
 * });
 * assert.deepEqual(parsed.lines, [{ kind: "setting", line: 1, name: "builders", value: "@/etc/nix/machines" }]);
 * assert.equal(parsed.error?.nixMessage, "illegal configuration line 'max-jobs 0' in '/etc/nix/nix.conf'");
 * ```
 */
export function parseNixConf(text: string, options: ParseNixConfOptions = {}): ParsedNixConf {
  const path = options.path ?? "nix.conf";
  const wording = syntaxErrorWording(options.version);
  const lines: NixConfLine[] = [];
  const raw = text.split("\n");
  // A final newline does not start another line (Nix's loop ends at the end of the text).
  if (raw.length > 0 && raw[raw.length - 1] === "") raw.pop();
  for (let i = 0; i < raw.length; i++) {
    let line = raw[i]!;
    const hash = line.indexOf("#");
    if (hash >= 0) line = line.slice(0, hash);
    const tokens = line.split(/[ \t\n\r]+/).filter((t) => t !== "");
    if (tokens.length === 0) continue;
    const fail = (): ParsedNixConf => ({
      lines,
      error: {
        file: path,
        line: i + 1,
        text: line,
        nixMessage: `${wording} '${line}' in '${path}'`,
      },
    });
    if (tokens.length < 2) return fail();
    if (tokens[0] === "include" || tokens[0] === "!include") {
      if (tokens.length !== 2) return fail();
      lines.push({
        kind: "include",
        line: i + 1,
        path: tokens[1]!,
        optional: tokens[0] === "!include",
      });
      continue;
    }
    if (tokens[1] !== "=") return fail();
    lines.push({
      kind: "setting",
      line: i + 1,
      name: tokens[0]!,
      value: tokens.slice(2).join(" "),
    });
  }
  return { lines };
}

/** The directory part of a path, as Nix's `dirOf` (`.` when there is no `/`). */
function dirOf(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash < 0) return ".";
  return slash === 0 ? "/" : path.slice(0, slash);
}

/**
 * Nix's `canonPath` without symlink resolution: absolute, no `.`/`..`, single slashes.
 *
 * @example
 * ```ts
 * import { canonPath } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(canonPath("/etc/nix/../nix//nix.custom.conf"), "/etc/nix/nix.custom.conf");
 * ```
 */
export function canonPath(path: string): string {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return "/" + parts.join("/");
}

/** The environment variables that decide which nix.conf files Nix reads. */
export interface NixConfEnv {
  /** Directory of the system nix.conf (default `/etc/nix`). */
  NIX_CONF_DIR?: string;
  /** Colon-separated user config files; when set (even empty) replaces the XDG ones. */
  NIX_USER_CONF_FILES?: string;
  /** XDG config home (default `$HOME/.config`). */
  XDG_CONFIG_HOME?: string;
  /** XDG config dirs (default `/etc/xdg`). */
  XDG_CONFIG_DIRS?: string;
  /** The home directory. */
  HOME?: string;
  /** Extra nix.conf text applied last. */
  NIX_CONFIG?: string;
}

/**
 * The names of {@link NixConfEnv}, in a stable order.
 *
 * @example
 * ```ts
 * import { NIX_CONF_ENV_NAMES } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(NIX_CONF_ENV_NAMES.includes("NIX_CONFIG"), true);
 * ```
 */
export const NIX_CONF_ENV_NAMES = [
  "NIX_CONF_DIR",
  "NIX_USER_CONF_FILES",
  "XDG_CONFIG_HOME",
  "XDG_CONFIG_DIRS",
  "HOME",
  "NIX_CONFIG",
] as const;

/** Where a nix.conf source comes from. */
export interface NixConfSource {
  /** `system` ($NIX_CONF_DIR), `user` (NIX_USER_CONF_FILES or XDG), or `env` (NIX_CONFIG). */
  kind: "system" | "user" | "env";
  /** The file path, or `NIX_CONFIG`. */
  path: string;
}

/**
 * The sources Nix reads, in the order it applies them (later ones override earlier ones).
 *
 * @example
 * ```ts
 * import { nixConfSources } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(nixConfSources({ HOME: "/root", XDG_CONFIG_DIRS: "/etc/xdg" }).map((s) => s.path), [
 *   "/etc/nix/nix.conf",
 *   "/etc/xdg/nix/nix.conf",
 *   "/root/.config/nix/nix.conf",
 * ]);
 * ```
 */
export function nixConfSources(env: NixConfEnv): NixConfSource[] {
  const sources: NixConfSource[] = [
    { kind: "system", path: `${env.NIX_CONF_DIR ?? "/etc/nix"}/nix.conf` },
  ];
  let userFiles: string[];
  if (env.NIX_USER_CONF_FILES !== undefined) {
    userFiles = env.NIX_USER_CONF_FILES.split(":").filter((p) => p !== "");
  } else {
    const home = env.XDG_CONFIG_HOME ??
      (env.HOME !== undefined ? `${env.HOME}/.config` : undefined);
    const dirs = [
      ...(home !== undefined ? [home] : []),
      ...(env.XDG_CONFIG_DIRS ?? "/etc/xdg").split(":").filter((p) => p !== ""),
    ];
    userFiles = dirs.map((d) => `${d}/nix/nix.conf`);
  }
  for (const file of [...userFiles].reverse()) sources.push({ kind: "user", path: file });
  if (env.NIX_CONFIG !== undefined) sources.push({ kind: "env", path: "NIX_CONFIG" });
  return sources;
}

/** One assignment that contributed to a setting. */
export interface SettingOrigin {
  /** The file, or `NIX_CONFIG`. */
  file: string;
  /** 1-based line. */
  line: number;
  /** The name as written (an alias or `extra-...` form included). */
  name: string;
  /** The value as written. */
  value: string;
  /** Whether it appended (`extra-...`). */
  append: boolean;
}

/** A setting as the files leave it. */
export interface ConfSetting {
  /** The canonical name. */
  name: string;
  /** The value as Nix would print it (sets sorted and unique). */
  value: string;
  /** The assignment that set it last, then every append after it. */
  origins: SettingOrigin[];
  /** Whether only `extra-` lines set it, so they append to Nix's default value. */
  appendsToDefault: boolean;
}

/** A file met while loading. */
export interface ConfFile {
  /** The path (or `NIX_CONFIG`). */
  path: string;
  /** Which source it belongs to. */
  source: NixConfSource["kind"];
  /** The `include` line that pulled it in, if any. */
  includedFrom?: { file: string; line: number };
  /**
   * `read`, `missing` (skipped), `unreadable` (exists, Nix skips it silently), or `unknown` (the
   * target could not tell: not in a snapshot, unreachable).
   */
  status: "read" | "missing" | "unreadable" | "unknown";
  /** Why it could not be read. */
  reason?: string;
}

/** Everything {@link loadNixConf} found. */
export interface NixConfLoad {
  /** The sources in application order. */
  sources: NixConfSource[];
  /** Every file met, in reading order. */
  files: ConfFile[];
  /** Settings by canonical name. */
  settings: Map<string, ConfSetting>;
  /**
   * Assignments Nix would warn about as `unknown setting` and ignore: `extra-` on a setting that
   * is not a list (e.g. `extra-builders`), and, when `knownSettings` is given, names it lacks.
   */
  unknown: SettingOrigin[];
  /** Values Nix would refuse (`Boolean setting ... has invalid value ...`): fatal like syntax errors. */
  invalidValues: NixConfError[];
  /** The first syntax or include error: Nix refuses to start with it. */
  error?: NixConfError;
}

/** Options for {@link loadNixConf}. */
export interface LoadNixConfOptions {
  /** The environment of the process whose view is wanted (see {@link readNixConfEnv}). */
  env: NixConfEnv;
  /** The Nix version, for the wording of errors. */
  version?: NixVersionLike;
  /** The setting names the installed Nix knows, e.g. from `nix config show`; enables `unknown`. */
  knownSettings?: ReadonlySet<string>;
  /** Settings that take `extra-` besides the built-in list (lists, sets, maps). */
  appendable?: ReadonlySet<string>;
  /** How deep includes may nest before counting as a cycle (default 32). */
  maxDepth?: number;
}

/**
 * Aliases Nix 2.8 accepts (from `nix show-config --json`), canonical name for each.
 *
 * @example
 * ```ts
 * import { SETTING_ALIASES } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(SETTING_ALIASES["build-max-jobs"], "max-jobs");
 * assert.equal(SETTING_ALIASES["binary-caches"], "substituters");
 * ```
 */
export const SETTING_ALIASES: Readonly<Record<string, string>> = {
  "build-compress-log": "compress-build-log",
  "build-cores": "cores",
  "build-fallback": "fallback",
  "binary-caches-parallel-connections": "http-connections",
  "build-impersonate-linux-26": "impersonate-linux-26",
  "build-keep-log": "keep-build-log",
  "gc-keep-derivations": "keep-derivations",
  "env-keep-derivations": "keep-env-derivations",
  "gc-keep-outputs": "keep-outputs",
  "build-max-log-size": "max-build-log-size",
  "build-max-jobs": "max-jobs",
  "build-max-silent-time": "max-silent-time",
  "build-repeat": "repeat",
  "build-use-chroot": "sandbox",
  "build-use-sandbox": "sandbox",
  "build-chroot-dirs": "sandbox-paths",
  "build-sandbox-paths": "sandbox-paths",
  "build-use-substitutes": "substitute",
  "binary-caches": "substituters",
  "build-timeout": "timeout",
  "binary-cache-public-keys": "trusted-public-keys",
  "trusted-binary-caches": "trusted-substituters",
};

/**
 * List, set and map settings (the ones `extra-` appends to): Nix 2.8's, plus later ones.
 *
 * @example
 * ```ts
 * import { APPENDABLE_SETTINGS } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(APPENDABLE_SETTINGS.has("experimental-features"), true);
 * assert.equal(APPENDABLE_SETTINGS.has("max-jobs"), false);
 * ```
 */
export const APPENDABLE_SETTINGS: ReadonlySet<string> = new Set([
  "access-tokens",
  "allowed-impure-host-deps",
  "allowed-uris",
  "allowed-users",
  "experimental-features",
  "extra-platforms",
  "hashed-mirrors",
  "ignored-acls",
  "nix-path",
  "plugin-files",
  "sandbox-paths",
  "secret-key-files",
  "substituters",
  "system-features",
  "trusted-public-keys",
  "trusted-substituters",
  "trusted-users",
  "deprecated-features",
  "impure-env",
  "build-hook",
  "post-build-hook",
  "narinfo-cache-meta-ttl",
]);

/** Set-typed settings: Nix keeps them sorted and unique. */
const SET_SETTINGS = new Set([
  "system-features",
  "extra-platforms",
  "sandbox-paths",
  "trusted-substituters",
  "experimental-features",
  "ignored-acls",
  "allowed-impure-host-deps",
]);

/** Boolean settings (Nix 2.8's, from `nix show-config --json`). */
const BOOL_SETTINGS = new Set([
  "accept-flake-config",
  "allow-dirty",
  "allow-import-from-derivation",
  "allow-new-privileges",
  "allow-symlinked-store",
  "allow-unsafe-native-code-during-evaluation",
  "auto-optimise-store",
  "builders-use-substitutes",
  "compress-build-log",
  "enforce-determinism",
  "eval-cache",
  "fallback",
  "filter-syscalls",
  "fsync-metadata",
  "http2",
  "impersonate-linux-26",
  "keep-build-log",
  "keep-derivations",
  "keep-env-derivations",
  "keep-failed",
  "keep-going",
  "keep-outputs",
  "preallocate-contents",
  "print-missing",
  "pure-eval",
  "require-sigs",
  "restrict-eval",
  "run-diff-hook",
  "sandbox-fallback",
  "show-trace",
  "substitute",
  "sync-before-registering",
  "trace-function-calls",
  "use-case-hack",
  "use-registries",
  "use-sqlite-wal",
  "warn-dirty",
]);

/** Unsigned integer settings checked here. */
const UINT_SETTINGS = new Set(["cores", "max-silent-time", "timeout", "build-poll-interval"]);

/**
 * The error Nix gives when a value cannot be used for a setting (checked for the settings that
 * matter to remote builds and every boolean); `null` when fine or unchecked.
 *
 * @example
 * ```ts
 * import { invalidValueMessage } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(invalidValueMessage("max-jobs", "0 1"), "configuration setting 'max-jobs' should be 'auto' or an integer");
 * assert.equal(invalidValueMessage("builders-use-substitutes", "maybe"), "Boolean setting 'builders-use-substitutes' has invalid value 'maybe'");
 * assert.equal(invalidValueMessage("max-jobs", "auto"), null);
 * ```
 */
export function invalidValueMessage(name: string, value: string): string | null {
  if (name === "max-jobs") {
    return value === "auto" || /^\+?\d+$/.test(value)
      ? null
      : "configuration setting 'max-jobs' should be 'auto' or an integer";
  }
  if (name === "sandbox") {
    return ["true", "false", "relaxed", "yes", "no", "1", "0"].includes(value)
      ? null
      : `option 'sandbox' has invalid value '${value}'`;
  }
  if (BOOL_SETTINGS.has(name)) {
    return ["true", "false", "yes", "no", "1", "0"].includes(value)
      ? null
      : `Boolean setting '${name}' has invalid value '${value}'`;
  }
  if (UINT_SETTINGS.has(name)) {
    return /^\+?\d+$/.test(value) ? null : `setting '${name}' has invalid value '${value}'`;
  }
  return null;
}

function render(name: string, tokens: string[]): string {
  return SET_SETTINGS.has(name) ? [...new Set(tokens)].sort().join(" ") : tokens.join(" ");
}

/**
 * Loads the nix.conf files a Nix process would read, through `target.readFile` (a `Target`, or any
 * reader returning `null` for a missing file and throwing for other failures), following includes.
 *
 * @example A file Nix would reject
 * ```ts
 * import { loadNixConf } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * const files: Record<string, string> = { "/etc/nix/nix.conf": "include missing.conf\n" };
 * const conf = await loadNixConf({ readFile: async (p) => files[p] ?? null }, { env: {}, version: "2.8.0" });
 * assert.equal(conf.error?.nixMessage, "file '/etc/nix/missing.conf' included from '/etc/nix/nix.conf' not found");
 * assert.equal(conf.error?.line, 1);
 * ```
 */
export async function loadNixConf(
  target: Pick<Target, "readFile">,
  options: LoadNixConfOptions,
): Promise<NixConfLoad> {
  const sources = nixConfSources(options.env);
  const out: NixConfLoad = {
    sources,
    files: [],
    settings: new Map(),
    unknown: [],
    invalidValues: [],
  };
  const maxDepth = options.maxDepth ?? 32;
  // Files that include the next one twice, 30 deep, mean 2^30 reads: stop at this many in all.
  const maxIncludes = 1000;
  let includes = 0;
  const appendable = (name: string) =>
    APPENDABLE_SETTINGS.has(name) || (options.appendable?.has(name) ?? false);
  const tokens = new Map<string, string[]>();
  // Appends extend the lists in place; their values are rendered once, at the end (linear, where
  // a copy and a sort per `extra-` line made 100,000 lines take hours).
  const appended = new Set<string>();
  const done = (): NixConfLoad => {
    for (const name of appended) out.settings.get(name)!.value = render(name, tokens.get(name)!);
    return out;
  };

  const isKnown = (n: string) =>
    SETTING_ALIASES[n] !== undefined ||
    (options.knownSettings !== undefined
      ? options.knownSettings.has(n)
      : !n.startsWith("extra-") || n === "extra-platforms");

  const apply = (origin: SettingOrigin) => {
    let name = origin.name;
    let append = false;
    if (!isKnown(name)) {
      const base = name.startsWith("extra-") ? name.slice(6) : null;
      if (base !== null && isKnown(base) && appendable(SETTING_ALIASES[base] ?? base)) {
        name = base;
        append = true;
      } else {
        out.unknown.push(origin);
        return;
      }
    }
    const canonical = SETTING_ALIASES[name] ?? name;
    const invalid = invalidValueMessage(canonical, origin.value);
    if (invalid !== null) {
      out.invalidValues.push({
        file: origin.file,
        line: origin.line,
        text: `${origin.name} = ${origin.value}`,
        nixMessage: invalid,
      });
    }
    const parts = origin.value.split(" ").filter((t) => t !== "");
    const previous = out.settings.get(canonical);
    if (append) {
      const merged = tokens.get(canonical) ?? [];
      for (const part of parts) merged.push(part);
      tokens.set(canonical, merged);
      appended.add(canonical);
      if (previous !== undefined) previous.origins.push({ ...origin, append: true });
      else {
        out.settings.set(canonical, {
          name: canonical,
          value: "",
          origins: [{ ...origin, append: true }],
          appendsToDefault: true,
        });
      }
    } else {
      tokens.set(canonical, parts);
      out.settings.set(canonical, {
        name: canonical,
        value: render(canonical, parts),
        origins: [{ ...origin, append: false }],
        appendsToDefault: false,
      });
    }
  };

  // Parses one text with its includes in place, collecting assignments; false on a fatal error.
  async function collect(
    text: string,
    path: string,
    source: NixConfSource["kind"],
    stack: string[],
    into: SettingOrigin[],
  ): Promise<boolean> {
    const parsed = parseNixConf(text, {
      path,
      ...(options.version !== undefined ? { version: options.version } : {}),
    });
    for (const line of parsed.lines) {
      if (line.kind === "setting") {
        into.push({
          file: path,
          line: line.line,
          name: line.name,
          value: line.value,
          append: false,
        });
        continue;
      }
      const dir = dirOf(path);
      let includePath: string;
      if (line.path.startsWith("/")) {
        includePath = canonPath(line.path);
      } else if (!dir.startsWith("/")) {
        out.error = {
          file: path,
          line: line.line,
          text: `${line.optional ? "!include" : "include"} ${line.path}`,
          nixMessage: `not an absolute path: '${dir}/${line.path}'`,
        };
        return false;
      } else {
        includePath = canonPath(`${dir}/${line.path}`);
      }
      const includedFrom = { file: path, line: line.line };
      if (stack.includes(includePath) || stack.length >= maxDepth) {
        out.error = {
          file: path,
          line: line.line,
          text: `${line.optional ? "!include" : "include"} ${line.path}`,
          nixMessage: stack.includes(includePath)
            ? `'${includePath}' includes itself (${
              [...stack, includePath].join(" -> ")
            }): Nix would recurse until it crashes`
            : `includes nest deeper than ${maxDepth}: Nix would recurse until it crashes`,
        };
        return false;
      }
      let content: string | null;
      try {
        content = await target.readFile(includePath);
      } catch (error) {
        out.files.push({
          path: includePath,
          source,
          includedFrom,
          status: cannotTell(error) ? "unknown" : "unreadable",
          reason: error instanceof Error ? error.message : String(error),
        });
        continue;
      }
      if (content === null) {
        out.files.push({ path: includePath, source, includedFrom, status: "missing" });
        if (!line.optional) {
          out.error = {
            file: path,
            line: line.line,
            text: `include ${line.path}`,
            nixMessage: `file '${includePath}' included from '${path}' not found`,
          };
          return false;
        }
        continue;
      }
      out.files.push({ path: includePath, source, includedFrom, status: "read" });
      if (++includes > maxIncludes) {
        out.error = {
          file: path,
          line: line.line,
          text: `${line.optional ? "!include" : "include"} ${line.path}`,
          nixMessage: `more than ${maxIncludes} files included in all (the same ones again and ` +
            "again): Nix would read every one",
        };
        return false;
      }
      if (!(await collect(content, includePath, source, [...stack, includePath], into))) {
        return false;
      }
    }
    if (parsed.error) {
      out.error = parsed.error;
      return false;
    }
    return true;
  }

  for (const source of sources) {
    let text: string | null;
    if (source.kind === "env") {
      text = options.env.NIX_CONFIG ?? null;
      out.files.push({ path: "NIX_CONFIG", source: "env", status: "read" });
    } else {
      try {
        text = await target.readFile(source.path);
      } catch (error) {
        out.files.push({
          path: source.path,
          source: source.kind,
          status: cannotTell(error) ? "unknown" : "unreadable",
          reason: error instanceof Error ? error.message : String(error),
        });
        continue;
      }
      out.files.push({
        path: source.path,
        source: source.kind,
        status: text === null ? "missing" : "read",
      });
    }
    if (text === null) continue;
    const assignments: SettingOrigin[] = [];
    const ok = await collect(text, source.path, source.kind, [source.path], assignments);
    if (!ok) return done();
    // Nix applies experimental-features settings of one source before the others.
    const xp = (o: SettingOrigin) =>
      o.name === "experimental-features" || o.name === "extra-experimental-features";
    for (const a of assignments.filter(xp)) apply(a);
    for (const a of assignments.filter((a) => !xp(a))) apply(a);
  }
  return done();
}

/**
 * The command {@link readNixConfEnv} runs: prints each variable as `NAME=value` or `NAME` (unset),
 * NUL-separated.
 *
 * @example Run it here with a known environment
 * ```ts
 * import { NIX_CONF_ENV_COMMAND, parseNixConfEnv } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * const [program, ...args] = NIX_CONF_ENV_COMMAND;
 * const { stdout } = await new Deno.Command(program!, {
 *   args,
 *   clearEnv: true,
 *   env: { HOME: "/home/alice", NIX_CONFIG: "max-jobs = 2" },
 * }).output();
 * assert.deepEqual(parseNixConfEnv(new TextDecoder().decode(stdout)), {
 *   HOME: "/home/alice",
 *   NIX_CONFIG: "max-jobs = 2",
 * });
 * ```
 */
export const NIX_CONF_ENV_COMMAND: readonly string[] = [
  "sh",
  "-c",
  'for v in "$@"; do eval "s=\\${$v+x}"; if [ -n "$s" ]; then eval "x=\\$$v"; printf "%s=%s\\0" "$v" "$x"; ' +
  'else printf "%s\\0" "$v"; fi; done',
  "sh",
  ...NIX_CONF_ENV_NAMES,
];

/**
 * Parses the output of {@link NIX_CONF_ENV_COMMAND}.
 *
 * @example
 * ```ts
 * import { parseNixConfEnv } from "./nix_conf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseNixConfEnv("HOME=/root\0NIX_CONFIG\0NIX_CONF_DIR=/etc/nix\0"), {
 *   HOME: "/root",
 *   NIX_CONF_DIR: "/etc/nix",
 * });
 * ```
 */
export function parseNixConfEnv(text: string): NixConfEnv {
  const env: Record<string, string> = {};
  for (const item of text.split("\0")) {
    const eq = item.indexOf("=");
    if (eq <= 0) continue;
    const name = item.slice(0, eq);
    if ((NIX_CONF_ENV_NAMES as readonly string[]).includes(name)) env[name] = item.slice(eq + 1);
  }
  return env as NixConfEnv;
}

/**
 * Reads, on a target, the variables that decide which nix.conf files Nix reads there.
 *
 * @example
 * ```ts
 * import { readNixConfEnv } from "./nix_conf.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const result = await readNixConfEnv(new LocalTarget());
 * assert.ok(result.ok && typeof result.env === "object");
 * ```
 */
export async function readNixConfEnv(
  target: Target,
): Promise<{ ok: true; env: NixConfEnv } | { ok: false; reason: string }> {
  const result = await target.run(NIX_CONF_ENV_COMMAND);
  if (result.code !== 0 || result.failure) {
    return { ok: false, reason: describeFailure(NIX_CONF_ENV_COMMAND, result) };
  }
  return { ok: true, env: parseNixConfEnv(result.stdout) };
}
