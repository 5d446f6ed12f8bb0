/**
 * Is emulation (aarch64 on x86_64, or any other foreign Linux system) really working on a builder?
 * {@link checkBinfmt} reads binfmt_misc, Nix's settings and the registration sources through a
 * {@link Target}, judges them ({@link assessBinfmt}, pure), and proves the result by running a
 * generated static program for each system ({@link runSmoke}) and, on request, by building a
 * one-step derivation for it through the target's own Nix ({@link runNixSmoke}).
 *
 * @module
 */

import {
  type BinfmtEntry,
  type BinfmtRule,
  type BinfmtSourceRule,
  FLAG_MEANINGS,
  formatRegisterLine,
  hexToBytes,
  parseBinfmtD,
  parseBinfmtEntry,
  parseBinfmtSupport,
  ruleMatches,
  sameRule,
} from "./binfmt_entry.ts";
import {
  archForUname,
  type ElfArch,
  elfHeaderBytes,
  elfIdentity,
  hasSmokeProgram,
  knownArches,
  type LddReport,
  machineName,
  parseLddOutput,
  readElfHeader,
  sameIdentity,
  SMOKE_OUTPUT,
  smokeElf,
} from "./elf.ts";
import { quoteForMessage, UsageError } from "./errors.ts";
import { type Finding, finding, type Status } from "./findings.ts";
import { parseSshHost } from "./host.ts";
import { resolveBuilders } from "./machines.ts";
import { parseNixVersion, readEffectiveConfig, settingList } from "./nix_config.ts";
import { isStorePath, STORE_DIR } from "./store_path.ts";
import { describeFailure, type RunResult, type Target } from "./target.ts";

/** Where binfmt_misc lives. */
export const BINFMT_DIR = "/proc/sys/fs/binfmt_misc";

/** The directories `systemd-binfmt` reads, highest priority first (a name in an earlier one wins). */
export const BINFMT_D_DIRS: readonly string[] = [
  "/etc/binfmt.d",
  "/run/binfmt.d",
  "/usr/local/lib/binfmt.d",
  "/usr/lib/binfmt.d",
];

/** binfmt-support's admin directory (`update-binfmts --enable` registers from it at boot). */
export const BINFMT_SUPPORT_DIR = "/var/lib/binfmts";

/** How far the smoke test goes. */
export type SmokeMode =
  /** Nothing is executed. */
  | "off"
  /** Run the generated program for each system. */
  | "exec"
  /** Also build a one-step derivation for each system through the target's Nix. */
  | "nix";

/** The distribution family, for fix texts. */
export type PlatformKind = "nixos" | "debian" | "other";

/** What the target is, for fix texts and native-architecture decisions. */
export interface PlatformFacts {
  /** NixOS, Debian/Ubuntu, or anything else. */
  kind: PlatformKind;
  /** `PRETTY_NAME` from `/etc/os-release`, when there is one. */
  name?: string;
  /** Whether systemd runs the machine (`/run/systemd/system` exists). */
  systemd: boolean;
  /** `uname -m`, when it could be read. */
  machine?: string;
}

/** binfmt_misc as read from the target. */
export type BinfmtMiscFacts =
  | {
    /** Mounted and readable. */
    state: "mounted";
    /** `status` says `enabled`. */
    enabled: boolean;
    /** Entries in the kernel's lookup order: the most recently registered first. */
    entries: BinfmtEntry[];
    /** Entries that could not be parsed (name and reason). */
    errors: { name: string; reason: string }[];
  }
  | {
    /** `/proc/sys/fs/binfmt_misc` has no `status`: nothing is mounted there. */
    state: "not-mounted";
  }
  | {
    /** `/proc/sys/fs/binfmt_misc` does not exist: the kernel module is not loaded. */
    state: "no-kernel-support";
  }
  | {
    /** It could not be read at all. */
    state: "unreadable";
    /** Why. */
    reason: string;
  };

/** Nix's side, from `nix show-config`. */
export type NixFacts =
  | {
    ok: true;
    /** `system`. */
    system: string;
    /** `extra-platforms`. */
    extraPlatforms: string[];
    /** `sandbox`: `true`, `false` or `relaxed`. */
    sandbox: string;
    /** `sandbox-paths` (with `extra-sandbox-paths` merged in, as Nix prints it). */
    sandboxPaths: string[];
  }
  | {
    ok: false;
    /** Why the settings could not be read. */
    reason: string;
  };

/** What an interpreter path is on the target. */
export interface InterpreterFacts {
  /** The path as registered. */
  path: string;
  /** Every path from the registered one through each symlink hop to the file (normalised). */
  chain: string[];
  /** Whether the final file exists. */
  exists: boolean;
  /** Whether it is executable. */
  executable: boolean;
  /** `elf-static`, `elf-dynamic` (has `PT_INTERP`), `script` (`#!`), or `other`. */
  kind: "elf-static" | "elf-dynamic" | "script" | "other" | "unknown";
  /** The ELF loader (`PT_INTERP`) or the script's `#!` program. */
  loader?: string;
  /** For a script: its `#!` line after `#!` (program and arguments). */
  shebang?: string;
  /**
   * For a script: the programs it runs, as far as its first 4 KiB show: each `exec` line's command
   * and every store path it names (a NixOS `/run/binfmt` wrapper execs the emulator by store path).
   */
  execs?: string[];
  /** Set when a symlink loop was met. */
  loop?: boolean;
  /** What else it needs at run time; read only when Nix's sandbox is on (see {@link gatherInterpreterClosure}). */
  closure?: InterpreterClosure;
}

/** Store paths and their closures (`nix-store -qR`), by top-level store path. */
export interface StoreClosures {
  /** Each queried store path's closure (itself included). */
  closures: Record<string, string[]>;
  /** What could not be queried, and why. */
  gaps: string[];
}

/**
 * What an interpreter needs at run time besides its own file and symlink hops, read through the
 * target without changing anything: the `#!` program of a script (and its hops, its loader and
 * libraries), the programs a wrapper script runs, the ELF loader and the shared libraries of every
 * dynamically linked program among them (`ldd`), the link targets of each, and the closure of every
 * store path among them (`nix-store -qR`: Nix mounts a store path's closure with it).
 */
export interface InterpreterClosure extends StoreClosures {
  /** Host paths needed, in the order found, each with why. */
  needs: { path: string; why: string }[];
  /** What is missing even outside the sandbox: libraries `ldd` did not find, programs that do not exist. */
  broken: string[];
}

/** Everything {@link assessBinfmt} judges. */
export interface BinfmtFacts {
  /** The target's host name. */
  host: string;
  /** The target's platform. */
  platform: PlatformFacts;
  /** binfmt_misc. */
  binfmt: BinfmtMiscFacts;
  /** Nix's settings. */
  nix: NixFacts;
  /** Registration sources (binfmt.d lines, binfmt-support files), in `systemd-binfmt` order. */
  sources: BinfmtSourceRule[];
  /** Sources that could not be parsed. */
  sourceErrors: string[];
  /** Interpreters of the entries that serve the checked systems, by registered path. */
  interpreters: Record<string, InterpreterFacts>;
  /**
   * The closures of the store paths in `sandbox-paths` (Nix mounts each one's closure too); read only
   * when an interpreter the sandbox must see lives in the store.
   */
  sandboxStoreClosure?: StoreClosures;
}

/** Options for {@link checkBinfmt} and {@link assessBinfmt}. */
export interface CheckBinfmtOptions {
  /** The systems to check (`--system`). Default: the target's `extra-platforms` that are not native, plus {@link CheckBinfmtOptions.sentSystems}. */
  systems?: readonly string[];
  /** The systems a controller's machines file sends to this builder (checked by default too). */
  sentSystems?: readonly string[];
  /** `exec` (default on live targets), `nix`, or `off` (the default for snapshots). */
  smoke?: SmokeMode;
}

/** One system to check and why. */
export interface CheckedSystem {
  /** The Nix system string. */
  system: string;
  /** Why it is checked: `--system`, `extra-platforms`, `machines file`. */
  reasons: string[];
}

/** What {@link inspectBinfmt} returns. */
export interface BinfmtInspection {
  /** The findings, in check order. */
  findings: Finding[];
  /** The facts read. */
  facts: BinfmtFacts;
  /** The systems checked. */
  systems: CheckedSystem[];
}

const SYSTEM_RE = /^[a-z0-9_]+(-[a-z0-9_]+)+$/;

/**
 * Refuses a system string that is not `cpu-os` shaped (it is passed as an argument and written in
 * reports, so it must be plain).
 *
 * @example
 * ```ts
 * import { checkSystemName } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(checkSystemName("aarch64-linux"), "aarch64-linux");
 * assert.throws(() => checkSystemName("aarch64 linux"), /not a Nix system/);
 * ```
 */
export function checkSystemName(system: string): string {
  if (!SYSTEM_RE.test(system)) {
    throw new UsageError(
      `System ${quoteForMessage(system)} is not a Nix system name (like aarch64-linux)`,
    );
  }
  return system;
}

// ---------------------------------------------------------------------------------------------
// Reading (I/O, constant scripts: values only ever arrive as arguments)

const BINFMT_SCRIPT = `d=${BINFMT_DIR}
if [ ! -d "$d" ]; then echo "@@state no-dir"; exit 0; fi
if [ ! -e "$d/status" ]; then echo "@@state not-mounted"; exit 0; fi
printf '@@status %s\\n' "$(cat "$d/status")"
ls -f "$d" | while IFS= read -r n; do
  case $n in .|..|register|status) continue ;; esac
  printf '@@entry %s\\n' "$n"
  cat -- "$d/$n" || echo "@@unreadable"
done`;

const SOURCES_SCRIPT = `for d in ${BINFMT_D_DIRS.join(" ")}; do
  for f in "$d"/*.conf; do
    if [ -L "$f" ] && [ "$(readlink -- "$f")" = /dev/null ]; then printf '@@masked %s\\n' "$f"; continue; fi
    [ -f "$f" ] || continue
    printf '@@file %s\\n' "$f"; cat -- "$f"; echo
  done
done
for f in ${BINFMT_SUPPORT_DIR}/*; do
  [ -f "$f" ] || continue
  printf '@@binfmts %s\\n' "$f"; cat -- "$f"; echo
done
exit 0`;

const INTERPRETER_SCRIPT = `p=$1; n=0
while :; do
  printf '@@hop %s\\n' "$p"
  [ -L "$p" ] || break
  l=$(readlink -- "$p") || break
  case $l in /*) p=$l ;; *) p=\${p%/*}/$l ;; esac
  n=$((n+1)); if [ "$n" -gt 40 ]; then echo "@@loop"; exit 0; fi
done
if [ ! -e "$p" ]; then echo "@@missing"; exit 0; fi
if [ -x "$p" ]; then echo "@@executable"; fi
echo "@@head"
od -An -v -tx1 -N 4096 -- "$p"`;

function splitSections(text: string, marker: RegExp): { head: string; body: string }[] {
  const sections: { head: string; body: string[] }[] = [];
  for (const line of text.split("\n")) {
    const m = marker.exec(line);
    if (m) sections.push({ head: line, body: [] });
    else sections.at(-1)?.body.push(line);
  }
  return sections.map((s) => ({ head: s.head, body: s.body.join("\n") }));
}

/**
 * Parses the output of the binfmt_misc reading script: state, `status`, entries in lookup order.
 *
 * @example
 * ```ts
 * import { parseBinfmtDump } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * const facts = parseBinfmtDump(
 *   "@@status enabled\n@@entry python3.11\nenabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n",
 * );
 * assert.equal(facts.state, "mounted");
 * assert.equal(facts.state === "mounted" && facts.entries[0]?.interpreter, "/usr/bin/python3.11");
 * ```
 */
export function parseBinfmtDump(text: string): BinfmtMiscFacts {
  if (/^@@state no-dir$/m.test(text)) return { state: "no-kernel-support" };
  if (/^@@state not-mounted$/m.test(text)) return { state: "not-mounted" };
  const status = /^@@status (.*)$/m.exec(text)?.[1]?.trim();
  const entries: BinfmtEntry[] = [];
  const errors: { name: string; reason: string }[] = [];
  for (const section of splitSections(text, /^@@(entry|status) /)) {
    if (!section.head.startsWith("@@entry ")) continue;
    const name = section.head.slice("@@entry ".length);
    if (/^@@unreadable$/m.test(section.body)) {
      errors.push({ name, reason: "cannot be read" });
      continue;
    }
    try {
      entries.push(parseBinfmtEntry(section.body.replace(/\n+$/, "\n"), name));
    } catch (error) {
      errors.push({ name, reason: (error as Error).message });
    }
  }
  return { state: "mounted", enabled: status === "enabled", entries, errors };
}

/**
 * Parses the output of the sources script into rules, `systemd-binfmt`'s file priority applied (a
 * file name in an earlier directory hides the same name later; a link to `/dev/null` masks it).
 *
 * @example
 * ```ts
 * import { parseSourcesDump } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * const { rules } = parseSourcesDump(
 *   "@@masked /etc/binfmt.d/qemu-arm.conf\n" +
 *     "@@file /usr/lib/binfmt.d/qemu-arm.conf\n:qemu-arm:M::\\x7fELF::/usr/bin/qemu-arm-static:F\n",
 * );
 * assert.deepEqual(rules, []);
 * ```
 */
export function parseSourcesDump(text: string): { rules: BinfmtSourceRule[]; errors: string[] } {
  const rules: BinfmtSourceRule[] = [];
  const errors: string[] = [];
  const seen = new Set<string>();
  for (const section of splitSections(text, /^@@(file|binfmts|masked) /)) {
    const [, kind = "", path = ""] = /^@@(\w+) (.*)$/.exec(section.head) ?? [];
    const base = path.slice(path.lastIndexOf("/") + 1);
    try {
      if (kind === "masked") seen.add(base);
      else if (kind === "file") {
        if (seen.has(base)) continue;
        seen.add(base);
        rules.push(...parseBinfmtD(section.body, path));
      } else if (kind === "binfmts") {
        rules.push(parseBinfmtSupport(section.body, path));
      }
    } catch (error) {
      errors.push((error as Error).message);
    }
  }
  return { rules, errors };
}

function normalizePath(path: string): string {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return "/" + parts.join("/");
}

/**
 * Parses the output of the interpreter script (symlink hops, existence, the first bytes in `od`
 * hex) into {@link InterpreterFacts}.
 *
 * @example
 * ```ts
 * import { parseInterpreterDump } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * const facts = parseInterpreterDump(
 *   "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
 *   "@@hop /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n@@hop /usr/libexec/qemu-binfmt/../../bin/qemu-aarch64-static\n" +
 *     "@@executable\n@@head\n 23 21 2f 62 69 6e 2f 73 68 0a\n",
 * );
 * assert.deepEqual(facts.chain, ["/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/usr/bin/qemu-aarch64-static"]);
 * assert.equal(facts.kind, "script");
 * assert.equal(facts.loader, "/bin/sh");
 * ```
 */
export function parseInterpreterDump(path: string, text: string): InterpreterFacts {
  const chain = [...text.matchAll(/^@@hop (.*)$/gm)].map((m) => normalizePath(m[1]!));
  const facts: InterpreterFacts = {
    path,
    chain: chain.length > 0 ? chain : [path],
    exists: !/^@@missing$/m.test(text) && !/^@@loop$/m.test(text),
    executable: /^@@executable$/m.test(text),
    kind: "unknown",
  };
  if (/^@@loop$/m.test(text)) facts.loop = true;
  const headAt = text.indexOf("@@head\n");
  if (facts.exists && headAt >= 0) {
    const hex = text.slice(headAt + "@@head\n".length).replace(/[^0-9a-fA-F]/g, "");
    const bytes = hexToBytes(hex.length % 2 === 0 ? hex : hex.slice(0, -1));
    const elf = readElfHeader(bytes);
    if (elf !== null) {
      facts.kind = elf.interpreter === undefined ? "elf-static" : "elf-dynamic";
      if (elf.interpreter !== undefined) facts.loader = elf.interpreter;
    } else if (bytes[0] === 0x23 && bytes[1] === 0x21) {
      facts.kind = "script";
      const text = new TextDecoder().decode(bytes.subarray(2));
      const line = text.split("\n")[0]?.trim() ?? "";
      const program = line.split(/\s+/)[0];
      if (program) facts.loader = program;
      if (line !== "") facts.shebang = line;
      facts.execs = scriptExecs(text.slice(text.indexOf("\n") + 1));
    } else {
      facts.kind = "other";
    }
  }
  return facts;
}

const STORE_PATH_IN_TEXT = new RegExp(
  `${STORE_DIR}/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\\-._?=]+(?:/[A-Za-z0-9+\\-._?=/]*)?`,
  "g",
);

/** The programs a script runs: each `exec` line's absolute command, then every store path it names. */
function scriptExecs(body: string): string[] {
  const out: string[] = [];
  // The first 4 KiB may end mid-line: only whole lines count.
  const lines = body.split("\n");
  if (!body.endsWith("\n")) lines.pop();
  for (const raw of lines) {
    const line = raw.trim();
    const exec = /^exec\s+(.*)$/.exec(line);
    if (!exec) continue;
    const words = exec[1]!.split(/\s+/).map((w) => w.replace(/^["']|["']$/g, ""));
    let i = 0;
    while (i < words.length && words[i]!.startsWith("-")) {
      if (words[i] === "--") {
        i++;
        break;
      }
      i += words[i] === "-a" ? 2 : 1; // bash: exec -a NAME; -c and -l take no value
    }
    const command = words[i];
    if (command?.startsWith("/")) out.push(normalizePath(command));
  }
  for (const m of lines.join("\n").matchAll(STORE_PATH_IN_TEXT)) {
    out.push(normalizePath(m[0]));
  }
  return [...new Set(out)];
}

/**
 * Parses `/etc/os-release` (and whether `/etc/NIXOS` exists) into the platform kind.
 *
 * @example
 * ```ts
 * import { platformKind } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(platformKind('ID=ubuntu\nID_LIKE=debian\n'), "debian");
 * assert.equal(platformKind("ID=nixos\n"), "nixos");
 * assert.equal(platformKind('ID="fedora"\n'), "other");
 * ```
 */
export function platformKind(osRelease: string | null, nixosMarker = false): PlatformKind {
  if (nixosMarker) return "nixos";
  const field = (name: string) =>
    new RegExp(`^${name}=(.*)$`, "m").exec(osRelease ?? "")?.[1]?.replace(/^["']|["']$/g, "") ??
      "";
  const id = field("ID");
  const like = field("ID_LIKE").split(/\s+/);
  if (id === "nixos") return "nixos";
  if (id === "debian" || id === "ubuntu" || like.includes("debian") || like.includes("ubuntu")) {
    return "debian";
  }
  return "other";
}

async function readPlatform(target: Target): Promise<PlatformFacts> {
  const [osRelease, nixos, systemd, uname] = await Promise.all([
    target.readFile("/etc/os-release").catch(() => null),
    target.stat("/etc/NIXOS").catch(() => null),
    target.stat("/run/systemd/system").catch(() => null),
    target.run(["uname", "-m"]),
  ]);
  const platform: PlatformFacts = {
    kind: platformKind(osRelease, nixos !== null),
    systemd: systemd !== null,
  };
  const pretty = /^PRETTY_NAME=(.*)$/m.exec(osRelease ?? "")?.[1]?.replace(/^["']|["']$/g, "");
  if (pretty) platform.name = pretty;
  if (uname.code === 0 && !uname.failure && uname.stdout.trim() !== "") {
    platform.machine = uname.stdout.trim();
  }
  return platform;
}

async function readBinfmt(target: Target): Promise<BinfmtMiscFacts> {
  const argv = ["sh", "-c", BINFMT_SCRIPT];
  const result = await target.run(argv);
  if (result.code !== 0 || result.failure) {
    return { state: "unreadable", reason: describeFailure(argv, result) };
  }
  return parseBinfmtDump(result.stdout);
}

async function readNix(target: Target): Promise<NixFacts> {
  const config = await readEffectiveConfig(target);
  if (!config.ok) return { ok: false, reason: config.reason };
  const s = config.settings;
  return {
    ok: true,
    system: s.get("system")?.value.trim() ?? "",
    extraPlatforms: settingList(s.get("extra-platforms")),
    sandbox: s.get("sandbox")?.value.trim() ?? "true",
    sandboxPaths: settingList(s.get("sandbox-paths")),
  };
}

async function readSources(
  target: Target,
): Promise<{ rules: BinfmtSourceRule[]; errors: string[] }> {
  const argv = ["sh", "-c", SOURCES_SCRIPT];
  const result = await target.run(argv);
  if (result.code !== 0 || result.failure) {
    return { rules: [], errors: [describeFailure(argv, result)] };
  }
  return parseSourcesDump(result.stdout);
}

async function readInterpreter(target: Target, path: string): Promise<InterpreterFacts | null> {
  const result = await target.run(["sh", "-c", INTERPRETER_SCRIPT, "sh", path]);
  if (result.code !== 0 || result.failure) return null;
  return parseInterpreterDump(path, result.stdout);
}

const HOPS_SCRIPT = `for p; do
  printf '@@path %s\\n' "$p"; n=0
  while [ -L "$p" ]; do
    n=$((n+1)); if [ "$n" -gt 40 ]; then echo "@@loop"; break; fi
    l=$(readlink -- "$p") || break
    case $l in /*) p=$l ;; *) p=\${p%/*}/$l ;; esac
    printf '@@hop %s\\n' "$p"
  done
  [ -e "$p" ] || echo "@@missing"
done`;

const STORE_CLOSURE_SCRIPT = `for p; do
  printf '@@root %s\\n' "$p"
  nix-store -qR "$p" 2>&1 || echo "@@failed"
done`;

/**
 * Parses the output of the symlink-hops script (`@@path` per asked path, then `@@hop` per link
 * followed, `@@missing` when the end does not exist, `@@loop` after 40 links): each path's link
 * targets, normalised, and whether it resolves to an existing file.
 *
 * @example
 * ```ts
 * import { parseHopsDump } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * const hops = parseHopsDump(
 *   "@@path /lib64/ld-linux-x86-64.so.2\n@@hop /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n" +
 *     "@@path /lib/x86_64-linux-gnu/libgone.so.1\n@@missing\n",
 * );
 * assert.deepEqual(hops["/lib64/ld-linux-x86-64.so.2"], {
 *   hops: ["/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"],
 *   exists: true,
 * });
 * assert.equal(hops["/lib/x86_64-linux-gnu/libgone.so.1"]?.exists, false);
 * ```
 */
export function parseHopsDump(text: string): Record<string, { hops: string[]; exists: boolean }> {
  const out: Record<string, { hops: string[]; exists: boolean }> = {};
  for (const section of splitSections(text, /^@@path /)) {
    const path = section.head.slice("@@path ".length);
    out[path] = {
      hops: [...section.body.matchAll(/^@@hop (.*)$/gm)].map((m) => normalizePath(m[1]!)),
      exists: !/^@@(missing|loop)$/m.test(section.body),
    };
  }
  return out;
}

/**
 * Parses the output of the store-closure script (`@@root` per store path, then what
 * `nix-store -qR` printed, `@@failed` when it failed): each path's closure, and why a query failed.
 *
 * @example A path Nix 2.8 knows and one it does not
 * ```ts
 * import { parseStoreClosureDump } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * const root = "/nix/store/2z9yvnw8r9vlcxl91ahf7a8w3s9pww73-nbr-binfmt-smoke-2939f743abbf4295.drv";
 * const closures = parseStoreClosureDump(
 *   `@@root ${root}\n/nix/store/fg8h2q3qbspbg8x9y9zbara6i4y7im6r-nbr-binfmt-smoke-aarch64-linux\n${root}\n` +
 *     "@@root /nix/store/00000000000000000000000000000000-nbr-absent\n" +
 *     "error: path '/nix/store/00000000000000000000000000000000-nbr-absent' is not valid\n@@failed\n",
 * );
 * assert.equal(closures.closures[root]?.length, 2);
 * assert.deepEqual(closures.gaps, [
 *   "nix-store -qR /nix/store/00000000000000000000000000000000-nbr-absent: error: path '/nix/store/00000000000000000000000000000000-nbr-absent' is not valid",
 * ]);
 * ```
 */
export function parseStoreClosureDump(text: string): StoreClosures {
  const result: StoreClosures = { closures: {}, gaps: [] };
  for (const section of splitSections(text, /^@@root /)) {
    const root = section.head.slice("@@root ".length);
    const lines = section.body.split("\n").map((l) => l.trim()).filter((l) => l !== "");
    if (lines.includes("@@failed")) {
      const why = lines.filter((l) => l !== "@@failed").at(-1) ?? "failed";
      result.gaps.push(`nix-store -qR ${root}: ${why}`);
      continue;
    }
    result.closures[root] = lines.filter((l) => l.startsWith(`${STORE_DIR}/`));
  }
  return result;
}

/** The top-level store path a path lies in, if it is in the store. */
function storeRoot(path: string): string | undefined {
  if (!path.startsWith(`${STORE_DIR}/`)) return undefined;
  const root = path.split("/").slice(0, 4).join("/");
  return isStorePath(root) ? root : undefined;
}

/** `inside=source` (or a bare path) of a sandbox-paths item, split at the first `=` as Nix does. */
function splitSandboxItem(item: string): [string, string | undefined] {
  const text = item.replace(/\?$/, "");
  const eq = text.indexOf("=");
  return eq < 0 ? [text, undefined] : [text.slice(0, eq), text.slice(eq + 1)];
}

/** What the Nix sandbox shows at `path`: the host path behind it (`inside=source` items mapped), or `undefined`. */
function sandboxSource(path: string, sandboxPaths: readonly string[]): string | undefined {
  let best: { inside: string; source: string } | undefined;
  for (const item of sandboxPaths) {
    const [insideRaw, sourceRaw] = splitSandboxItem(item);
    const inside = normalizePath(insideRaw);
    if (path !== inside && !path.startsWith(inside === "/" ? "/" : inside + "/")) continue;
    if (best === undefined || inside.length > best.inside.length) {
      best = { inside, source: normalizePath(sourceRaw ?? insideRaw) };
    }
  }
  if (best === undefined) return undefined;
  return normalizePath(best.source + path.slice(best.inside.length));
}

async function readStoreClosures(
  target: Target,
  roots: readonly string[],
  timeoutMs: number,
): Promise<StoreClosures> {
  if (roots.length === 0) return { closures: {}, gaps: [] };
  const argv = ["sh", "-c", STORE_CLOSURE_SCRIPT, "sh", ...roots];
  const result = await target.run(argv, { timeoutMs });
  if (result.failure || result.code !== 0) {
    return {
      closures: {},
      gaps: [
        `the store closure of ${roots.join(" ")}: ${describeFailure(["nix-store", "-qR"], result)}`,
      ],
    };
  }
  return parseStoreClosureDump(result.stdout);
}

/**
 * Reads what an interpreter needs at run time besides its own file (see {@link InterpreterClosure}),
 * without changing anything: the script's `#!` program and what it execs (followed up to 4 levels),
 * `ldd` of every dynamically linked program outside the store (inside it, the store closure has the
 * libraries), the symlink hops of each loader and library, and `nix-store -qR` of every store path
 * among them. A path covered by an `inside=source` item of `sandboxPaths` is followed to `source`,
 * which is what the sandbox shows there. Each command has a time-out; what fails is a gap.
 *
 * @example A `#!/bin/sh` wrapper on this Debian machine: dash, its loader and libc are needed
 * ```ts
 * import { gatherInterpreterClosure, parseInterpreterDump } from "./binfmt.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const script = "#!/bin/sh\nexec /usr/bin/qemu-aarch64-static \"$@\"\n";
 * const info = parseInterpreterDump(
 *   "/run/binfmt/aarch64-linux",
 *   "@@hop /run/binfmt/aarch64-linux\n@@executable\n@@head\n" +
 *     [...new TextEncoder().encode(script)].map((b) => b.toString(16).padStart(2, "0")).join(" ") +
 *     "\n",
 * );
 * const closure = await gatherInterpreterClosure(new LocalTarget(), info);
 * const needs = closure.needs.map((n) => n.path);
 * assert.ok(needs.includes("/bin/sh") && needs.includes("/usr/bin/qemu-aarch64-static"));
 * assert.ok(needs.includes("/lib/x86_64-linux-gnu/libc.so.6"));
 * ```
 */
export async function gatherInterpreterClosure(
  target: Target,
  info: InterpreterFacts,
  options: { sandboxPaths?: readonly string[]; timeoutMs?: number } = {},
): Promise<InterpreterClosure> {
  const sandboxPaths = options.sandboxPaths ?? [];
  const timeoutMs = options.timeoutMs ?? 15_000;
  const needs = new Map<string, string>();
  const gaps: string[] = [];
  const broken: string[] = [];
  const programs: { path: string; loader?: string }[] = [];
  const add = (path: string, why: string): string => {
    const p = normalizePath(path);
    if (!needs.has(p)) needs.set(p, why);
    return p;
  };
  const dynamic = (path: string, loader: string | undefined) =>
    programs.push(loader === undefined ? { path } : { path, loader });
  const final = info.chain.at(-1) ?? info.path;
  if (info.kind === "elf-dynamic") dynamic(final, info.loader);

  const visited = new Set<string>();
  const visit = async (path: string, why: string, depth: number): Promise<void> => {
    const wanted = add(path, why);
    if (visited.has(wanted)) return;
    visited.add(wanted);
    // An `inside=source` item shows the host's `source` at `inside`: `source` is read, but the
    // sandbox needs nothing at its own path (the bind mount follows its links too).
    const host = sandboxSource(wanted, sandboxPaths) ?? wanted;
    const mapped = host !== wanted;
    if (storeRoot(host) !== undefined) {
      if (mapped) add(storeRoot(host)!, `shown at ${wanted} by sandbox-paths`);
      return; // its store closure covers what it needs
    }
    const sub = await readInterpreter(target, host);
    if (sub === null) {
      gaps.push(`${host} (${why}) could not be inspected`);
      return;
    }
    if (!mapped) sub.chain.slice(1).forEach((hop, i) => add(hop, `link target of ${sub.chain[i]}`));
    if (!sub.exists) {
      broken.push(`${host} (${why}) ${sub.loop ? "is a symlink loop" : "does not exist"}`);
      return;
    }
    const subFinal = sub.chain.at(-1)!;
    if (sub.kind === "elf-dynamic") dynamic(subFinal, sub.loader);
    if (sub.kind !== "script" || depth >= 4) return;
    if (sub.loader?.startsWith("/")) {
      await visit(sub.loader, `#! program of ${subFinal}`, depth + 1);
    }
    for (const exec of sub.execs ?? []) await visit(exec, `run by ${subFinal}`, depth + 1);
  };
  if (info.kind === "script") {
    if (info.loader?.startsWith("/")) await visit(info.loader, `#! program of ${final}`, 1);
    for (const exec of info.execs ?? []) await visit(exec, `run by ${final}`, 1);
  }

  const linked: string[] = [];
  for (const program of programs) {
    if (program.loader?.startsWith("/")) {
      linked.push(add(program.loader, `ELF loader of ${program.path}`));
    }
    if (storeRoot(program.path) !== undefined) continue; // its libraries are in its closure
    const argv = ["ldd", program.path];
    const result = await target.run(argv, { timeoutMs });
    let report: LddReport;
    try {
      report = result.failure
        ? { kind: "error", reason: describeFailure(argv, result) }
        : parseLddOutput(result.stdout, result.stderr, `ldd ${program.path}`);
    } catch (error) {
      report = { kind: "error", reason: (error as Error).message };
    }
    if (report.kind === "error") {
      gaps.push(`the libraries of ${program.path} (ldd: ${report.reason})`);
      continue;
    }
    if (report.kind !== "dynamic") continue;
    for (const lib of report.libraries) {
      if (lib.path === undefined) continue;
      const why = lib.name === lib.path
        ? `ELF loader of ${program.path}`
        : `library ${lib.name} of ${program.path}`;
      linked.push(add(lib.path, why));
    }
    for (const name of report.notFound) {
      broken.push(`${name} (library of ${program.path}) not found`);
    }
  }

  const toFollow = [...new Set(linked)].filter((p) => storeRoot(p) === undefined);
  if (toFollow.length > 0) {
    const argv = ["sh", "-c", HOPS_SCRIPT, "sh", ...toFollow];
    const result = await target.run(argv, { timeoutMs });
    if (result.failure || result.code !== 0) {
      gaps.push(
        `the link targets of ${toFollow.join(", ")} (${describeFailure(argv.slice(0, 2), result)})`,
      );
    } else {
      const hops = parseHopsDump(result.stdout);
      for (const path of toFollow) {
        const found = hops[path];
        if (found === undefined) continue;
        let from = path;
        for (const hop of found.hops) {
          add(hop, `link target of ${from}`);
          from = hop;
        }
        if (!found.exists) broken.push(`${path} (${needs.get(path)}) does not exist`);
      }
    }
  }

  const roots = [...new Set([...info.chain, ...needs.keys()].map(storeRoot))]
    .filter((r): r is string => r !== undefined);
  const store = await readStoreClosures(target, roots, timeoutMs);
  return {
    needs: [...needs].map(([path, why]) => ({ path, why })),
    broken,
    closures: store.closures,
    gaps: [...gaps, ...store.gaps],
  };
}

/** The store paths in `sandbox-paths` (their source side): Nix mounts the closure of each. */
function sandboxStoreItems(sandboxPaths: readonly string[]): string[] {
  const roots = sandboxPaths.map((item) => {
    const [inside, source] = splitSandboxItem(item);
    return storeRoot(normalizePath(source ?? inside));
  });
  return [...new Set(roots.filter((r): r is string => r !== undefined))];
}

/**
 * Reads everything {@link assessBinfmt} needs from a target: platform, binfmt_misc, Nix's settings,
 * the registration sources, and the interpreters of the entries serving the systems to check.
 *
 * @example
 * ```ts ignore
 * import { gatherBinfmtFacts } from "./binfmt.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * const facts = await gatherBinfmtFacts(new LocalTarget(), { systems: ["aarch64-linux"] });
 * console.log(facts.binfmt.state);
 * ```
 */
export async function gatherBinfmtFacts(
  target: Target,
  options: CheckBinfmtOptions = {},
): Promise<BinfmtFacts> {
  const [platform, binfmt, nix, sources] = await Promise.all([
    readPlatform(target),
    readBinfmt(target),
    readNix(target),
    readSources(target),
  ]);
  const facts: BinfmtFacts = {
    host: target.host,
    platform,
    binfmt,
    nix,
    sources: sources.rules,
    sourceErrors: sources.errors,
    interpreters: {},
  };
  if (binfmt.state === "mounted") {
    const paths = new Set<string>();
    for (const { system } of selectSystems(facts, options)) {
      const arch = elfIdentity(system);
      if (arch === undefined) continue;
      for (const entry of matchingEntries(binfmt.entries, arch).enabled) {
        paths.add(entry.entry.interpreter);
      }
    }
    for (const path of paths) {
      const info = await readInterpreter(target, path);
      if (info !== null) facts.interpreters[path] = info;
    }
  }
  // With the sandbox on, what the interpreters need must be visible in it: read their closures.
  if (nix.ok && nix.sandbox !== "false") {
    let inStore = false;
    for (const info of Object.values(facts.interpreters)) {
      if (!info.exists || (info.kind !== "elf-dynamic" && info.kind !== "script")) continue;
      info.closure = await gatherInterpreterClosure(target, info, {
        sandboxPaths: nix.sandboxPaths,
      });
      inStore ||= Object.keys(info.closure.closures).length > 0 ||
        info.chain.some((p) => storeRoot(p) !== undefined);
    }
    const items = sandboxStoreItems(nix.sandboxPaths);
    if (inStore && items.length > 0) {
      facts.sandboxStoreClosure = await readStoreClosures(target, items, 30_000);
    }
  }
  return facts;
}

// ---------------------------------------------------------------------------------------------
// Judging (pure)

/** How an entry matches a system's ELF files: executables (`ET_EXEC`) and PIEs (`ET_DYN`). */
export interface EntryMatch {
  /** The entry. */
  entry: BinfmtEntry;
  /** Matches static / non-PIE executables. */
  exec: boolean;
  /** Matches PIE executables and shared objects. */
  dyn: boolean;
}

/**
 * The entries that match a system's ELF files, in the kernel's lookup order (the first enabled one
 * wins), split into enabled and disabled.
 *
 * @example
 * ```ts
 * import { matchingEntries } from "./binfmt.ts";
 * import { parseBinfmtEntry } from "./binfmt_entry.ts";
 * import { elfIdentity } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * const entry = parseBinfmtEntry(
 *   "enabled\ninterpreter /run/binfmt/aarch64-linux\nflags: P\noffset 0\n" +
 *     "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00ffffffffffff00fffeffffff\n",
 *   "aarch64-linux",
 * );
 * const { enabled } = matchingEntries([entry], elfIdentity("aarch64-linux")!);
 * assert.deepEqual(enabled.map((m) => [m.entry.name, m.exec, m.dyn]), [["aarch64-linux", true, true]]);
 * assert.equal(matchingEntries([entry], elfIdentity("riscv64-linux")!).enabled.length, 0);
 * ```
 */
export function matchingEntries(
  entries: readonly BinfmtEntry[],
  arch: ElfArch,
): { enabled: EntryMatch[]; disabled: EntryMatch[] } {
  const exec = elfHeaderBytes(arch, 2);
  const dyn = elfHeaderBytes(arch, 3);
  const enabled: EntryMatch[] = [];
  const disabled: EntryMatch[] = [];
  for (const entry of entries) {
    const match = { entry, exec: ruleMatches(entry, exec), dyn: ruleMatches(entry, dyn) };
    if (!match.exec && !match.dyn) continue;
    (entry.enabled ? enabled : disabled).push(match);
  }
  return { enabled, disabled };
}

function hostArch(facts: BinfmtFacts): ElfArch | undefined {
  const fromUname = facts.platform.machine ? archForUname(facts.platform.machine) : undefined;
  if (fromUname) return fromUname;
  return facts.nix.ok ? elfIdentity(facts.nix.system) : undefined;
}

/**
 * Whether the target's kernel runs `arch`'s programs without binfmt_misc: `native` (its own
 * architecture), `compat` (32-bit programs on a 64-bit x86_64 or aarch64 kernel, when built with that
 * support), or `null`.
 *
 * @example
 * ```ts
 * import { nativeKind } from "./binfmt.ts";
 * import { elfIdentity } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * const facts = {
 *   host: "b",
 *   platform: { kind: "other" as const, systemd: true, machine: "x86_64" },
 *   binfmt: { state: "not-mounted" as const },
 *   nix: { ok: false as const, reason: "no nix" },
 *   sources: [],
 *   sourceErrors: [],
 *   interpreters: {},
 * };
 * assert.equal(nativeKind(facts, elfIdentity("x86_64-v3-linux")!), "native");
 * assert.equal(nativeKind(facts, elfIdentity("i686-linux")!), "compat");
 * assert.equal(nativeKind(facts, elfIdentity("aarch64-linux")!), null);
 * ```
 */
export function nativeKind(facts: BinfmtFacts, arch: ElfArch): "native" | "compat" | null {
  const host = hostArch(facts);
  if (host !== undefined && sameIdentity(arch, host)) return "native";
  return compatRuns(host, arch) ? "compat" : null;
}

/** Whether a 64-bit kernel of `host` runs `arch`'s 32-bit programs itself (compat mode). */
function compatRuns(host: ElfArch | undefined, arch: ElfArch): boolean {
  if (host === undefined) return false;
  return (host.qemuArch === "x86_64" && arch.qemuArch === "i386") ||
    (host.qemuArch === "aarch64" && arch.qemuArch === "arm");
}

/**
 * The systems to check: the explicit ones, or the target's non-native `extra-platforms` plus the
 * systems the machines file sends to it.
 *
 * @example
 * ```ts
 * import { selectSystems } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * const facts = {
 *   host: "b",
 *   platform: { kind: "debian" as const, systemd: false, machine: "x86_64" },
 *   binfmt: { state: "not-mounted" as const },
 *   nix: { ok: true as const, system: "x86_64-linux", extraPlatforms: ["x86_64-v3-linux", "aarch64-linux"], sandbox: "false", sandboxPaths: [] },
 *   sources: [],
 *   sourceErrors: [],
 *   interpreters: {},
 * };
 * assert.deepEqual(selectSystems(facts, { sentSystems: ["riscv64-linux"] }).map((s) => s.system), ["aarch64-linux", "riscv64-linux"]);
 * ```
 */
export function selectSystems(
  facts: BinfmtFacts,
  options: CheckBinfmtOptions = {},
): CheckedSystem[] {
  const out = new Map<string, CheckedSystem>();
  const add = (system: string, reason: string) => {
    const entry = out.get(system) ?? { system, reasons: [] };
    if (!entry.reasons.includes(reason)) entry.reasons.push(reason);
    out.set(system, entry);
  };
  if (options.systems && options.systems.length > 0) {
    for (const system of options.systems) add(system, "--system");
    return [...out.values()];
  }
  const host = hostArch(facts);
  const native = (system: string) => {
    if (facts.nix.ok && system === facts.nix.system) return true;
    const arch = elfIdentity(system);
    return arch !== undefined && host !== undefined && sameIdentity(arch, host);
  };
  if (facts.nix.ok) {
    for (const system of facts.nix.extraPlatforms) {
      if (!native(system)) add(system, "extra-platforms");
    }
  }
  for (const system of options.sentSystems ?? []) {
    if (!native(system)) add(system, "machines file");
  }
  return [...out.values()];
}

/** The first `max` items, then how many more. */
function listSome(items: readonly string[], max: number): string {
  const shown = items.slice(0, max).join(", ");
  return items.length > max ? `${shown} and ${items.length - max} more` : shown;
}

function flagsText(flags: string): string {
  return flags === "" ? "no flags" : `flags ${flags}`;
}

function describeFlags(flags: string): string {
  if (flags === "") return "flags: none";
  return [...flags].map((f) => `flag ${f}: ${FLAG_MEANINGS[f] ?? "unknown"}`).join("\n");
}

/** Sandbox-path coverage: is `path` visible inside the sandbox given these `sandbox-paths` items? */
function covered(path: string, sandboxPaths: readonly string[]): boolean {
  return sandboxPaths.some((item) => {
    const inside = normalizePath(item.split("=")[0]!.replace(/\?$/, ""));
    return path === inside || path.startsWith(inside === "/" ? "/" : inside + "/");
  });
}

/** What the Nix sandbox must show for an entry's interpreter ({@link sandboxNeeds}). */
export interface SandboxNeeds {
  /** Paths needed inside the sandbox, each with why, in order (store closures not listed). */
  required: { path: string; why: string }[];
  /**
   * What to add to `sandbox-paths`: needed paths outside the store that no item covers, and
   * top-level store paths the sandbox does not show (Nix adds each one's closure with it).
   */
  missing: string[];
  /** Store paths of the needed closures that the sandbox would not show. */
  invisibleStorePaths: string[];
  /** How many store paths the needed closures hold. */
  storePaths: number;
  /** What is missing even outside the sandbox (libraries not found, programs that do not exist). */
  broken: string[];
  /** What could not be checked. */
  gaps: string[];
}

/**
 * What the Nix sandbox must show for an interpreter, and what of it the `sandbox-paths` items do not
 * cover. Without `F` the kernel opens the interpreter (every symlink hop) inside the sandbox; with or
 * without `F` it opens the ELF loader or `#!` program there, and those open their libraries and the
 * programs a wrapper execs there too. A store path is visible when an item covers it or it is in the
 * closure of a store path in `sandbox-paths` (Nix mounts those closures).
 *
 * @example A dynamically linked emulator without `F`: its loader and libraries must be visible too
 * ```ts
 * import { sandboxNeeds } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * const info = {
 *   path: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
 *   chain: ["/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/usr/bin/qemu-aarch64"],
 *   exists: true,
 *   executable: true,
 *   kind: "elf-dynamic" as const,
 *   loader: "/lib64/ld-linux-x86-64.so.2",
 *   closure: {
 *     needs: [{ path: "/lib/x86_64-linux-gnu/libglib-2.0.so.0", why: "library of /usr/bin/qemu-aarch64" }],
 *     broken: [],
 *     closures: {},
 *     gaps: [],
 *   },
 * };
 * const needs = sandboxNeeds(info, false, ["/usr/libexec/qemu-binfmt", "/usr/bin/qemu-aarch64"]);
 * assert.deepEqual(needs.missing, ["/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libglib-2.0.so.0"]);
 * ```
 */
export function sandboxNeeds(
  info: InterpreterFacts,
  hasF: boolean,
  sandboxPaths: readonly string[],
  sandboxStore?: StoreClosures,
): SandboxNeeds {
  const required = new Map<string, string>();
  const add = (path: string, why: string) => {
    const p = normalizePath(path);
    if (!required.has(p)) required.set(p, why);
  };
  if (!hasF) {
    info.chain.forEach((p, i) =>
      add(p, i === 0 ? "the registered interpreter" : `link target of ${info.chain[i - 1]}`)
    );
  }
  const final = info.chain.at(-1) ?? info.path;
  if (info.loader?.startsWith("/")) {
    add(info.loader, info.kind === "script" ? `#! program of ${final}` : `ELF loader of ${final}`);
  }
  for (const exec of info.execs ?? []) add(exec, `run by ${final}`);
  for (const need of info.closure?.needs ?? []) add(need.path, need.why);

  // Store paths: visible when covered, or in the closure of a store path in sandbox-paths.
  const closures = info.closure?.closures ?? {};
  const visible = new Set(Object.values(sandboxStore?.closures ?? {}).flat());
  for (const [root, closure] of Object.entries(closures)) {
    if (visible.has(root) || covered(root, sandboxPaths)) {
      for (const p of closure) visible.add(p);
    }
  }
  const storeVisible = (p: string) => visible.has(p) || covered(p, sandboxPaths);

  const missing: string[] = [];
  const neededRoots: string[] = [];
  for (const path of required.keys()) {
    const root = storeRoot(path);
    if (root !== undefined && !neededRoots.includes(root)) neededRoots.push(root);
    if (covered(path, sandboxPaths)) continue;
    const target = root ?? path;
    if (root !== undefined && storeVisible(root)) continue;
    if (!missing.includes(target)) missing.push(target);
  }
  // With F the interpreter itself is held open, but what its store path needs is still opened.
  const chainRoots = hasF ? info.chain.map(storeRoot).filter((r) => r !== undefined) : [];
  const storePaths = new Set<string>();
  for (const root of [...neededRoots, ...chainRoots]) {
    for (const p of closures[root] ?? [root]) {
      if (!(hasF && p === root && chainRoots.includes(root) && !neededRoots.includes(root))) {
        storePaths.add(p);
      }
    }
  }
  const invisibleStorePaths = [...storePaths].filter((p) => !storeVisible(p));
  const brings = (m: string, p: string) => m !== p && (closures[m]?.includes(p) ?? false);
  for (const p of invisibleStorePaths) {
    if (!missing.some((m) => m === p || brings(m, p))) missing.push(p);
  }
  // A store path another missing one brings along need not be listed.
  const toAdd = missing.filter((p) => !missing.some((m) => brings(m, p)));

  const gaps = [...(info.closure?.gaps ?? [])];
  if (info.closure === undefined && (info.kind === "elf-dynamic" || info.kind === "script")) {
    gaps.push(
      `what ${final} needs beyond ${
        info.kind === "script" ? "its #! program" : "its loader"
      } was not read`,
    );
  }
  if (storePaths.size > 0) gaps.push(...(sandboxStore?.gaps ?? []));
  return {
    required: [...required].map(([path, why]) => ({ path, why })),
    missing: toAdd,
    invisibleStorePaths,
    storePaths: storePaths.size,
    broken: info.closure?.broken ?? [],
    gaps,
  };
}

/** Fix texts, per platform. */
class Fixes {
  readonly #kind: PlatformKind;
  readonly #systemd: boolean;
  constructor(platform: PlatformFacts) {
    this.#kind = platform.kind;
    this.#systemd = platform.systemd;
  }

  noEntry(system: string, arch: ElfArch): string {
    const q = arch.qemuArch;
    if (this.#kind === "nixos") {
      return `boot.binfmt.emulatedSystems = [ "${system}" ];   # then: nixos-rebuild switch`;
    }
    const line = qemuRegisterLine(arch);
    if (this.#kind === "debian") {
      return [
        "apt-get install qemu-user-static binfmt-support   # registers qemu-* entries with flag F",
        `or: deno run -A scripts/check_binfmt.ts --system ${system} --apply   # from /usr/lib/binfmt.d/qemu-${q}.conf`,
      ].join("\n");
    }
    return [
      `install your distribution's static qemu user emulator (qemu-user-static; Arch: qemu-user-static-binfmt), or write`,
      `  ${line}`,
      `to /etc/binfmt.d/qemu-${q}.conf and run: ${
        this.#systemd
          ? "systemctl restart systemd-binfmt"
          : "write the line to /proc/sys/fs/binfmt_misc/register"
      }`,
    ].join("\n");
  }

  entryDisabled(name: string): string {
    const now = `echo 1 > ${BINFMT_DIR}/${name}`;
    if (this.#kind === "nixos") {
      return `systemctl restart systemd-binfmt   # or, until reboot: ${now}`;
    }
    if (this.#kind === "debian") return `update-binfmts --enable ${name}   # or: ${now}`;
    return now;
  }

  notMounted(): string {
    const mount = `mount -t binfmt_misc binfmt_misc ${BINFMT_DIR}`;
    if (this.#kind === "nixos") {
      return `systemctl start proc-sys-fs-binfmt_misc.mount   # NixOS adds it with boot.binfmt.emulatedSystems`;
    }
    if (this.#kind === "debian") {
      return `${mount}   # at boot: apt-get install binfmt-support (its service mounts it)`;
    }
    return this.#systemd
      ? `systemctl start proc-sys-fs-binfmt_misc.automount   # or: ${mount}`
      : mount;
  }

  noKernelSupport(): string {
    const now =
      `modprobe binfmt_misc && mount -t binfmt_misc binfmt_misc ${BINFMT_DIR}   # the kernel needs CONFIG_BINFMT_MISC`;
    if (this.#kind === "nixos") {
      return `boot.binfmt.emulatedSystems (or boot.kernelModules = [ "binfmt_misc" ]) loads and mounts it at boot; now: ${now}`;
    }
    return now;
  }

  globallyDisabled(): string {
    const now = `echo 1 > ${BINFMT_DIR}/status`;
    return this.#kind === "nixos"
      ? `${now}   # NixOS has no option for it: a fresh mount (reboot) starts enabled; find what wrote 0`
      : `${now}   # a fresh mount (reboot) starts enabled; find what wrote 0 (a container, a script)`;
  }

  nixConfig(): string {
    if (this.#kind === "nixos") {
      return "run nix show-config as the checking user (NixOS always has nix on PATH; an error there is what to fix), see runbook/show_config.md";
    }
    return [
      `install Nix${
        this.#kind === "debian" ? " (apt-get install nix-bin)" : ""
      } or put it on the PATH of non-interactive ssh sessions,`,
      "then: nix show-config must work for the checking user; see runbook/show_config.md",
    ].join("\n");
  }

  unreadable(names: string[]): string {
    const again = this.#kind === "debian"
      ? `update-binfmts --enable <name>   # or: systemctl restart systemd-binfmt`
      : this.#systemd
      ? "systemctl restart systemd-binfmt   # re-registers every entry from binfmt.d"
      : "register it again from its source";
    const nixos = this.#kind === "nixos"
      ? "systemctl restart systemd-binfmt   # flushes and registers exactly boot.binfmt's entries"
      : again;
    if (names.length === 0) {
      return `read it by hand: ls -f ${BINFMT_DIR}; cat ${BINFMT_DIR}/status (as root if permission is denied)`;
    }
    return [
      `look at it: cat ${BINFMT_DIR}/${names[0]}; remove a broken entry: echo -1 > ${BINFMT_DIR}/${
        names[0]
      }`,
      `then: ${nixos}`,
    ].join("\n");
  }

  unknownSystem(system: string): string {
    if (this.#kind === "nixos") {
      return `check it with a real build for ${system}; boot.binfmt.emulatedSystems also takes some non-ELF systems (wasm32-wasi, x86_64-windows) and registers their interpreter`;
    }
    return `check it with a real build for ${system}: register its interpreter in /etc/binfmt.d and add it to extra-platforms in /etc/nix/nix.conf, then restart nix-daemon`;
  }

  notOffered(systems: string[]): string {
    // The common ones first (knownArches() order: aarch64, armv7l, riscv64, ...).
    const order = knownArches().map(([s]) => s);
    const rank = (s: string) => order.indexOf(s) < 0 ? order.length : order.indexOf(s);
    const sorted = [...systems].sort((a, b) => rank(a) - rank(b));
    const first = sorted[0]!;
    const some = sorted.slice(0, 3);
    if (this.#kind === "nixos") {
      return [
        `boot.binfmt.emulatedSystems = [ ${
          some.map((x) => `"${x}"`).join(" ")
        } ];   # adds them to nix.settings.extra-platforms itself (addEmulatedSystemsToNixSandbox, on by default)`,
        `or, for an entry registered another way: nix.settings.extra-platforms = [ "${first}" ];   # then nixos-rebuild switch`,
      ].join("\n");
    }
    return [
      `add the ones to build here to /etc/nix/nix.conf: extra-platforms = ${
        some.join(" ")
      }   # then restart nix-daemon (systemctl restart nix-daemon)`,
      `then check it: deno run -A scripts/check_binfmt.ts --system ${first} --smoke=nix`,
    ].join("\n");
  }

  partialMatch(system: string, arch: ElfArch): string {
    const line = qemuRegisterLine(arch);
    if (this.#kind === "nixos") {
      return `drop the custom mask from boot.binfmt.registrations."${system}" (nixpkgs' default mask matches both), or set it to the qemu mask:\n${line}`;
    }
    return `register the entry with the qemu mask (e_type byte masked with fe):\n${line}`;
  }

  smoke(system: string, arch: ElfArch | undefined): string {
    const byHand = `run a ${system} program by hand${
      arch ? ` (qemu-${arch.qemuArch}-static ./program)` : ""
    }`;
    if (this.#kind === "nixos") {
      return `nothing above explains it: journalctl -b -u systemd-binfmt; dmesg; ${byHand}; see runbook/check_binfmt.md`;
    }
    return `nothing above explains it: dmesg${
      this.#systemd ? "; journalctl -b -u systemd-binfmt" : ""
    }; ${byHand}; see runbook/check_binfmt.md`;
  }

  interpreterMissing(system: string, entry: BinfmtEntry): string {
    if (this.#kind === "nixos") {
      return `nixos-rebuild switch   # recreates /run/binfmt/${system}; check boot.binfmt.registrations."${system}".interpreter`;
    }
    if (this.#kind === "debian" && entry.name.startsWith("qemu-")) {
      return `apt-get install --reinstall qemu-user-static   # provides ${entry.interpreter}`;
    }
    return `install the emulator at ${entry.interpreter}, or re-register the entry with an existing interpreter`;
  }

  sandbox(entry: BinfmtEntry, missing: string[], kind: InterpreterFacts["kind"]): string {
    const paths = missing.join(" ");
    if (this.#kind === "nixos") {
      return [
        "boot.binfmt.preferStaticEmulators = true;   # static qemu registered with F: nothing to expose",
        "or keep boot.binfmt.addEmulatedSystemsToNixSandbox = true (the default): /run/binfmt and the emulator's store path (with its closure) land in extra-sandbox-paths",
        `or nix.settings.extra-sandbox-paths = [ ${
          missing.map((p) => `"${p}"`).join(" ")
        } ];   # then nixos-rebuild switch`,
      ].join("\n");
    }
    const expose =
      `add to /etc/nix/nix.conf: extra-sandbox-paths = ${paths}   # then restart nix-daemon${
        missing.some((p) => p.startsWith(`${STORE_DIR}/`))
          ? " (a store path brings its closure)"
          : ""
      }`;
    if (kind === "elf-static" && !entry.flags.includes("F")) {
      const withF = formatRegisterLine({ ...entry, flags: entry.flags + "F" });
      return [
        `re-register with F: echo -1 > ${BINFMT_DIR}/${entry.name}; echo '${withF}' > ${BINFMT_DIR}/register`,
        `or ${expose}`,
      ].join("\n");
    }
    const install = this.#kind === "debian"
      ? "apt-get install qemu-user-static binfmt-support   # a static qemu registered with F needs nothing in the sandbox"
      : "register a statically linked emulator (qemu-<arch>-static) with F: it needs nothing in the sandbox";
    return [
      `${install}; F alone does not help a ${
        kind === "script" ? "script" : "dynamically linked"
      } interpreter`,
      `or ${expose}`,
    ].join("\n");
  }

  sandboxUnknown(system: string): string {
    const prove =
      `prove it: deno run -A scripts/check_binfmt.ts --system ${system} --smoke=nix (builds in the sandbox)`;
    if (this.#kind === "nixos") {
      return `${prove}\nNixOS: boot.binfmt.preferStaticEmulators = true; registers a static emulator with F, which needs nothing in the sandbox`;
    }
    return `${prove}\nor register a static emulator with F (${
      this.#kind === "debian"
        ? "apt-get install qemu-user-static binfmt-support"
        : "qemu-<arch>-static"
    }), which needs nothing in the sandbox`;
  }

  platformMissing(system: string): string {
    if (this.#kind === "nixos") {
      return `nix.settings.extra-platforms = [ "${system}" ];   # boot.binfmt.emulatedSystems sets it unless addEmulatedSystemsToNixSandbox = false`;
    }
    return `add to /etc/nix/nix.conf: extra-platforms = ${system}   # then restart nix-daemon (systemctl restart nix-daemon)`;
  }

  notPersistent(entry: BinfmtEntry, system: string): string {
    if (this.#kind === "nixos") {
      return `boot.binfmt.emulatedSystems = [ "${system}" ];   # NixOS re-registers it at every boot`;
    }
    const line = `echo '${formatRegisterLine(entry)}' > /etc/binfmt.d/${entry.name}.conf`;
    if (this.#systemd) return `${line}   # systemd-binfmt registers it at boot`;
    return this.#kind === "debian"
      ? `apt-get install qemu-user-static binfmt-support   # its service re-registers at boot\nor: ${line}   # read by systemd-binfmt, if systemd runs the machine`
      : `${line}   # read by systemd-binfmt; without systemd, register it from a boot script`;
  }

  severalEntries(keep: string, drop: string[]): string {
    const lines = [
      `keep one: echo -1 > ${BINFMT_DIR}/<name> for ${drop.join(", ")} (keeping ${keep}),`,
      "and remove its registration source so it does not come back at boot",
    ];
    if (this.#kind === "nixos") {
      lines.push(
        "NixOS: systemctl restart systemd-binfmt flushes every entry and registers only boot.binfmt's",
      );
    }
    return lines.join("\n");
  }
}

/**
 * A qemu-style register line for an architecture (magic: the ELF identity's first 20 bytes; mask:
 * everything but `EI_OSABI`, and `e_type` 2 or 3), with the usual static emulator path and flag F.
 *
 * @example
 * ```ts
 * import { qemuRegisterLine } from "./binfmt.ts";
 * import { elfIdentity } from "./elf.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   qemuRegisterLine(elfIdentity("aarch64-linux")!),
 *   ":qemu-aarch64:M:0:\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:" +
 *     "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/bin/qemu-aarch64-static:F",
 * );
 * ```
 */
export function qemuRegisterLine(arch: ElfArch): string {
  const magic = elfHeaderBytes(arch, 2).slice(0, 20);
  const mask = new Uint8Array(20).fill(0xff);
  mask[7] = 0;
  mask[arch.endian === "little" ? 16 : 17] = 0xfe;
  const rule: BinfmtRule = {
    name: `qemu-${arch.qemuArch}`,
    kind: "magic",
    offset: 0,
    magic,
    mask,
    interpreter: `/usr/bin/qemu-${arch.qemuArch}-static`,
    flags: "F",
  };
  return formatRegisterLine(rule);
}

/** The systems (canonical names) an entry serves. */
function systemsOf(entry: BinfmtEntry): string[] {
  const out: string[] = [];
  for (const [system, arch] of knownArches()) {
    if (
      ruleMatches(entry, elfHeaderBytes(arch, 2)) || ruleMatches(entry, elfHeaderBytes(arch, 3))
    ) {
      out.push(system);
    }
  }
  return out;
}

/**
 * Judges the facts: one finding per problem (and an `ok` one per working system), each with a fix
 * for the target's platform. Runs nothing; {@link checkBinfmt} adds the smoke tests.
 *
 * @example A Debian builder whose aarch64 entry is missing
 * ```ts
 * import { assessBinfmt } from "./binfmt.ts";
 * import assert from "node:assert/strict";
 *
 * const findings = assessBinfmt({
 *   host: "builder1",
 *   platform: { kind: "debian", systemd: true, machine: "x86_64" },
 *   binfmt: { state: "mounted", enabled: true, entries: [], errors: [] },
 *   nix: { ok: true, system: "x86_64-linux", extraPlatforms: ["aarch64-linux"], sandbox: "true", sandboxPaths: [] },
 *   sources: [],
 *   sourceErrors: [],
 *   interpreters: {},
 * });
 * assert.deepEqual(findings.map((f) => [f.id, f.status]), [["binfmt/no-entry", "critical"]]);
 * assert.match(findings[0]!.fix!, /apt-get install qemu-user-static binfmt-support/);
 * ```
 */
export function assessBinfmt(facts: BinfmtFacts, options: CheckBinfmtOptions = {}): Finding[] {
  const findings: Finding[] = [];
  if (facts.binfmt.state === "unreadable" && /could not reach the host/.test(facts.binfmt.reason)) {
    // Nothing else can be known; one line says why.
    return [
      finding("binfmt/unreadable", "unknown", `Cannot check ${facts.host}: ${facts.binfmt.reason}`),
    ];
  }
  const fixes = new Fixes(facts.platform);
  const systems = selectSystems(facts, options);
  const host = hostArch(facts);
  const nix = facts.nix;

  if (!nix.ok) {
    findings.push(finding(
      "binfmt/nix-config",
      "unknown",
      `Cannot read Nix's settings on ${facts.host}: extra-platforms and the sandbox were not checked`,
      { detail: nix.reason, fix: fixes.nixConfig() },
    ));
  }

  // Which systems need a binfmt entry at all.
  const plans = systems.map(({ system, reasons }) => {
    const arch = elfIdentity(system);
    const native = arch !== undefined && host !== undefined && sameIdentity(arch, host);
    const compat = arch !== undefined && compatRuns(host, arch);
    return { system, reasons, arch, native, compat };
  });
  const needEmulation = plans.filter((p) => p.arch !== undefined && !p.native);

  const b = facts.binfmt;
  let usable = true;
  if (b.state !== "mounted") {
    usable = false;
    if (b.state === "unreadable" || needEmulation.some((p) => !p.compat)) {
      const [summary, fix, detail] = b.state === "no-kernel-support"
        ? [
          `binfmt_misc is not available on ${facts.host}: ${BINFMT_DIR} does not exist`,
          fixes.noKernelSupport(),
          "the binfmt_misc kernel module is not loaded (or the kernel lacks it)",
        ]
        : b.state === "not-mounted"
        ? [
          `binfmt_misc is not mounted on ${facts.host}: no foreign program can run`,
          fixes.notMounted(),
          `${BINFMT_DIR} exists but holds no 'status' file`,
        ]
        : [`Cannot read binfmt_misc on ${facts.host}`, fixes.unreadable([]), b.reason];
      findings.push(finding(
        b.state === "unreadable" ? "binfmt/unreadable" : "binfmt/not-mounted",
        b.state === "unreadable" ? "unknown" : "critical",
        summary,
        { detail, ...(fix === undefined ? {} : { fix }) },
      ));
    }
  } else if (!b.enabled) {
    usable = false;
    if (needEmulation.length > 0) {
      findings.push(finding(
        "binfmt/disabled",
        "critical",
        `binfmt_misc is switched off on ${facts.host} (status: disabled): none of its ${b.entries.length} entries is used`,
        { fix: fixes.globallyDisabled() },
      ));
    }
  }

  for (const plan of plans) {
    const { system, arch } = plan;
    const why = plan.reasons.join(", ");
    if (arch === undefined) {
      findings.push(finding(
        "binfmt/unknown-system",
        "unknown",
        `${system}: no ELF identity known for it, so no binfmt entry can be matched to it`,
        {
          detail: `checked because of ${why}; known: ${knownArches().map(([s]) => s).join(", ")}`,
          fix: fixes.unknownSystem(system),
          data: { system },
        },
      ));
      continue;
    }
    const offered = !nix.ok || system === nix.system || nix.extraPlatforms.includes(system);
    if (!offered) {
      findings.push(finding(
        "binfmt/platform-missing",
        "critical",
        `${system}: Nix on ${facts.host} does not offer it (not in extra-platforms): it refuses with "a '${system}' with features {} is required to build ..."`,
        {
          detail: `system = ${nix.ok ? nix.system : "?"}, extra-platforms = ${
            nix.ok ? nix.extraPlatforms.join(" ") || "(empty)" : "?"
          }; checked because of ${why}`,
          fix: fixes.platformMissing(system),
          data: { system },
        },
      ));
    }
    if (plan.native) {
      findings.push(finding(
        "binfmt/native",
        "ok",
        `${system}: ${facts.host}'s own architecture (${
          machineName(arch.machine)
        }), no emulation needed`,
        { data: { system } },
      ));
      continue;
    }
    if (!usable) continue;
    const entries = b.state === "mounted" ? b.entries : [];
    const { enabled, disabled } = matchingEntries(entries, arch);
    if (enabled.length === 0) {
      if (plan.compat && disabled.length === 0) {
        findings.push(finding(
          "binfmt/native",
          "ok",
          `${system}: ${facts.host}'s kernel runs ${
            machineName(arch.machine)
          } programs itself (32-bit compat mode), no entry needed`,
          {
            detail: "the smoke test proves it; kernels without 32-bit support need a binfmt entry",
            data: { system },
          },
        ));
        continue;
      }
      if (disabled.length > 0) {
        const names = disabled.map((m) => m.entry.name);
        findings.push(finding(
          "binfmt/entry-disabled",
          "critical",
          `${system}: its binfmt entry ${names.join(", ")} is disabled on ${facts.host}`,
          {
            detail: `${disabled[0]!.entry.interpreter} (${flagsText(disabled[0]!.entry.flags)})`,
            fix: fixes.entryDisabled(names[0]!),
            data: { system, entries: names },
          },
        ));
      } else {
        findings.push(finding(
          "binfmt/no-entry",
          "critical",
          `${system}: no binfmt_misc entry on ${facts.host} matches ${
            machineName(arch.machine)
          } programs: builds fail with "Exec format error"`,
          {
            detail: `checked because of ${why}; ${entries.length} entries registered`,
            fix: fixes.noEntry(system, arch),
            data: { system },
          },
        ));
      }
      continue;
    }
    const winner = enabled[0]!;
    const entry = winner.entry;
    const info = facts.interpreters[entry.interpreter];
    const hasF = entry.flags.includes("F");
    const detail: string[] = [
      `interpreter ${entry.interpreter}${
        info && info.chain.length > 1 ? ` -> ${info.chain.slice(1).join(" -> ")}` : ""
      }${info && info.kind !== "unknown" ? ` (${info.kind})` : ""}`,
      describeFlags(entry.flags),
    ];
    if (nix.ok) {
      const sandboxOn = nix.sandbox !== "false";
      detail.push(
        `Nix sandbox: ${nix.sandbox}${
          sandboxOn ? (hasF ? " (F: the sandbox needs no path)" : "") : " (paths do not matter)"
        }`,
      );
    }
    const named = facts.sources.filter((s) => s.name === entry.name);
    const source = named.find((s) => sameRule(s, entry)) ?? named[0];
    if (source !== undefined) {
      const where = `${source.file}${source.line > 1 ? `:${source.line}` : ""}`;
      detail.push(
        sameRule(source, entry)
          ? `source: ${where} (registers it again at boot)`
          : `source: ${where}, which registers something else: ${formatRegisterLine(source)}`,
      );
    }
    findings.push(finding(
      "binfmt/entry",
      "ok",
      `${system}: ${entry.name} runs it with ${entry.interpreter} (${flagsText(entry.flags)})`,
      {
        detail: detail.join("\n"),
        data: {
          system,
          entry: entry.name,
          interpreter: entry.interpreter,
          flags: entry.flags,
          order: enabled.map((m) => m.entry.name),
        },
      },
    ));
    if (enabled.length > 1) {
      const names = enabled.map((m) => m.entry.name);
      findings.push(finding(
        "binfmt/several-entries",
        "warning",
        `${system}: ${enabled.length} entries match (${
          names.join(", ")
        }); ${entry.name} wins because it was registered last`,
        {
          detail: enabled.map((m, i) =>
            `${i === 0 ? "wins " : "unused"} ${m.entry.name}: ${m.entry.interpreter} (${
              flagsText(m.entry.flags)
            })`
          ).join("\n") +
            "\nthe winner changes with registration order (boot order, a container registering its own)",
          fix: fixes.severalEntries(entry.name, names.slice(1)),
          data: { system, order: names },
        },
      ));
    }
    if (!winner.exec || !winner.dyn) {
      const misses = winner.exec ? "PIE executables (ET_DYN)" : "non-PIE executables (ET_EXEC)";
      const backup = enabled.slice(1).find((m) => winner.exec ? m.dyn : m.exec);
      findings.push(finding(
        "binfmt/partial-match",
        backup ? "ok" : "warning",
        `${system}: ${entry.name}'s mask does not match ${misses}${
          backup ? `; ${backup.entry.name} covers them` : ': those fail with "Exec format error"'
        }`,
        {
          fix: fixes.partialMatch(system, arch),
          data: { system, entry: entry.name, exec: winner.exec, dyn: winner.dyn },
        },
      ));
    }
    if (info && (!info.exists || (!info.executable && !hasF))) {
      const what = info.loop
        ? "is a symlink loop"
        : !info.exists
        ? "does not exist"
        : "is not executable";
      findings.push(finding(
        "binfmt/interpreter-missing",
        hasF ? "warning" : "critical",
        hasF
          ? `${system}: ${entry.name}'s interpreter ${entry.interpreter} ${what}; it still works (F kept it open) until the entry is registered again, e.g. at reboot`
          : `${system}: ${entry.name}'s interpreter ${entry.interpreter} ${what}: every ${system} program fails`,
        {
          detail: info.chain.length > 1 ? `resolved: ${info.chain.join(" -> ")}` : "",
          fix: fixes.interpreterMissing(system, entry),
          data: { system, entry: entry.name, interpreter: entry.interpreter },
        },
      ));
    }
    const opensMore = info !== undefined && (info.kind === "elf-dynamic" || info.kind === "script");
    if (nix.ok && nix.sandbox !== "false" && (!hasF || opensMore)) {
      if (info === undefined) {
        findings.push(finding(
          "binfmt/sandbox-path",
          "unknown",
          `${system}: ${entry.name} has no F flag and its interpreter could not be inspected, so sandbox visibility is unknown`,
          {
            fix: fixes.sandboxUnknown(system),
            data: { system, entry: entry.name },
          },
        ));
      } else if (info.exists) {
        const needs = sandboxNeeds(info, hasF, nix.sandboxPaths, facts.sandboxStoreClosure);
        const chainCount = hasF ? 0 : info.chain.length;
        const detail = [
          `sandbox = ${nix.sandbox}; sandbox-paths = ${nix.sandboxPaths.join(" ") || "(empty)"}`,
          `needed inside the sandbox: ${needs.required.map((r) => r.path).join(", ")}`,
          ...needs.required.slice(chainCount).map((r) => `  ${r.path}: ${r.why}`),
          ...(needs.storePaths > 0
            ? [
              `store closure (nix-store -qR): ${needs.storePaths} path(s), ${needs.invisibleStorePaths.length} not visible${
                needs.invisibleStorePaths.length > 0
                  ? `: ${listSome(needs.invisibleStorePaths, 4)}`
                  : ""
              }`,
            ]
            : []),
          ...needs.broken.map((b) => `missing even outside the sandbox: ${b}`),
          ...needs.gaps.map((g) => `not checked: ${g}`),
          ...(info.kind === "script" && /(^|\/)env$/.test(info.loader ?? "")
            ? [
              `#!${
                info.shebang ?? info.loader
              }: env looks the program up in PATH, and Nix runs builders with PATH=/path-not-set: the wrapper needs an absolute #! line`,
            ]
            : []),
        ].join("\n");
        const data = {
          system,
          entry: entry.name,
          missing: needs.missing,
          ...(needs.gaps.length > 0 ? { gaps: needs.gaps } : {}),
          ...(needs.broken.length > 0 ? { broken: needs.broken } : {}),
        };
        const what = info.kind === "script" ? "a script" : "dynamically linked";
        if (needs.missing.length > 0) {
          findings.push(finding(
            "binfmt/sandbox-path",
            "critical",
            `${system}: ${
              hasF
                ? `${entry.name}'s interpreter is ${what}: F keeps it open, but the Nix sandbox cannot see`
                : `${entry.name} has no F flag and the Nix sandbox cannot see`
            } ${
              listSome(needs.missing, 6)
            }: sandboxed builds fail with "No such file or directory"`,
            { detail, fix: fixes.sandbox(entry, needs.missing, info.kind), data },
          ));
        } else if (needs.gaps.length > 0 || needs.broken.length > 0) {
          findings.push(finding(
            "binfmt/sandbox-path",
            "unknown",
            `${system}: ${entry.name}'s interpreter is ${what}${
              hasF ? "" : " with no F flag"
            }; the Nix sandbox shows what was found, but ${
              needs.broken.length > 0
                ? "some of what it needs is missing on the host"
                : "not everything it needs could be read"
            }`,
            { detail, fix: fixes.sandboxUnknown(system), data },
          ));
        }
      }
    }
    if (source === undefined) {
      findings.push(finding(
        "binfmt/not-persistent",
        "warning",
        `${system}: ${entry.name} has no registration source on ${facts.host}: it is gone after a reboot${
          facts.platform.systemd ? " or a restart of systemd-binfmt" : ""
        }`,
        {
          detail: `looked in ${[...BINFMT_D_DIRS, BINFMT_SUPPORT_DIR].join(", ")}`,
          fix: fixes.notPersistent(entry, system),
          data: { system, entry: entry.name },
        },
      ));
    }
  }

  if (b.state === "mounted" && b.enabled && nix.ok) {
    const checked = new Set(systems.map((s) => s.system));
    const bySystem = new Map<string, string[]>();
    for (const entry of b.entries) {
      if (!entry.enabled) continue;
      for (const system of systemsOf(entry)) {
        const arch = elfIdentity(system)!;
        if (host !== undefined && (sameIdentity(arch, host) || compatRuns(host, arch))) continue;
        if (checked.has(system) || system === nix.system || nix.extraPlatforms.includes(system)) {
          continue;
        }
        const alias = nix.extraPlatforms.some((p) => {
          const other = elfIdentity(p);
          return other !== undefined && sameIdentity(other, arch);
        });
        if (!alias) bySystem.set(system, [...(bySystem.get(system) ?? []), entry.name]);
      }
    }
    const unoffered = [...bySystem].map(([system, names]) => `${system} (${names.join(", ")})`);
    if (unoffered.length > 0) {
      findings.push(finding(
        "binfmt/not-offered",
        "ok",
        `${unoffered.length} more system(s) can run on ${facts.host} but Nix does not offer them: ${
          [...bySystem.keys()].slice(0, 5).join(", ")
        }${bySystem.size > 5 ? `, and ${bySystem.size - 5} more` : ""}`,
        {
          detail: `${unoffered.join("\n")}\nto build for one of them here:\n${
            fixes.notOffered([...bySystem.keys()])
          }`,
          fix: fixes.notOffered([...bySystem.keys()]),
          data: { systems: unoffered },
        },
      ));
    }
  }

  if (b.state === "mounted" && b.errors.length > 0) {
    findings.push(finding(
      "binfmt/unreadable",
      "unknown",
      `${b.errors.length} binfmt_misc entr${
        b.errors.length === 1 ? "y" : "ies"
      } could not be read on ${facts.host}`,
      {
        detail: b.errors.map((e) => `${e.name}: ${e.reason}`).join("\n"),
        fix: fixes.unreadable(b.errors.map((e) => e.name)),
      },
    ));
  }

  if (systems.length === 0 && nix.ok) {
    findings.push(finding(
      "binfmt/nothing-to-check",
      "ok",
      `Nix on ${facts.host} offers no foreign system (extra-platforms has none) and none was asked for`,
      { detail: "pass --system aarch64-linux to check one" },
    ));
  }
  return findings;
}

// ---------------------------------------------------------------------------------------------
// Proof

const SMOKE_SCRIPT = `umask 077
for d in "\${TMPDIR:-/tmp}" /var/tmp /dev/shm "$HOME"; do
  [ -n "$d" ] && [ -d "$d" ] && [ -w "$d" ] || continue
  t=$(mktemp "$d/nbr-smoke.XXXXXXXX" 2>/dev/null) || continue
  if ! { printf '#!/bin/sh\\nexit 0\\n' > "$t" && chmod 700 "$t" && "$t"; } 2>/dev/null; then
    rm -f "$t"; continue
  fi
  if ! base64 -d > "$t"; then rm -f "$t"; echo "cannot decode the program" >&2; exit 125; fi
  "$t"; r=$?
  rm -f "$t"
  exit "$r"
done
echo "no writable directory that allows running programs (tried \\$TMPDIR, /tmp, /var/tmp, /dev/shm, \\$HOME)" >&2
exit 125`;

/** The Nix expression of the one-step smoke derivation (a function of `program`, `system`, `nonce`). */
export const SMOKE_NIX_EXPRESSION = `{ program, system, nonce }:
derivation {
  name = "nbr-binfmt-smoke-\${nonce}";
  inherit system;
  builder = builtins.path { path = /. + program; name = "nbr-binfmt-smoke-\${system}"; };
  args = [ (builtins.placeholder "out") ];
}`;

const NIX_SMOKE_SCRIPT = `umask 077
d=$(mktemp -d "\${TMPDIR:-/tmp}/nbr-smoke.XXXXXXXX") || exit 125
trap 'rm -rf "$d"' EXIT
base64 -d > "$d/program" || exit 125
chmod 755 "$d/program" || exit 125
out=$(nix-build --no-out-link -E "$1" --argstr program "$d/program" --argstr system "$2" \\
  --argstr nonce "$3" --option substituters '' --option builders '') || exit "$?"
printf '%s\\n' "$out"
if [ -d "$out" ]; then nix-store --delete "$out" >/dev/null 2>&1; exit 0; fi
echo "the build reported $out but it is not a directory" >&2
exit 1`;

/** The outcome of a smoke run. */
export interface SmokeResult {
  /** The system. */
  system: string;
  /** `ok`, `failed`, or `error` (it could not be tried). */
  outcome: "ok" | "failed" | "error";
  /** One line: what happened. */
  message: string;
  /** The command's result. */
  result?: RunResult;
  /** Milliseconds it took. */
  ms: number;
}

function cleanNixOutput(text: string): string {
  // deno-lint-ignore no-control-regex
  const csi = /\x1b\[[0-9;?]*[A-Za-z]/g;
  // deno-lint-ignore no-control-regex
  const control = /[\x00-\x08\x0b\x0c\x0e-\x1f]/g;
  return text.replace(csi, "").replace(/\r/g, "\n").replace(control, "");
}

function base64(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/(.{76})/g, "$1\n") + "\n";
}

function lastLine(text: string): string {
  return text.trim().split("\n").map((l) => l.trim()).filter((l) => l !== "").at(-1) ?? "";
}

/**
 * Runs the generated program for `system` on the target (bytes sent on standard input, written to a
 * private temp file, executed, removed). Passes only on exit 0 and standard output exactly `ok\n`:
 * anything else (a shell's `Exec format error`, a `not found`, other output) fails.
 *
 * @example
 * ```ts
 * import { runSmoke } from "./binfmt.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const result = await runSmoke(new LocalTarget(), "x86_64-linux");
 * assert.equal(result.outcome, "ok");
 * ```
 */
export async function runSmoke(
  target: Target,
  system: string,
  options: { timeoutMs?: number } = {},
): Promise<SmokeResult> {
  const started = Date.now();
  const argv = ["sh", "-c", SMOKE_SCRIPT, "sh"];
  const result = await target.run(argv, {
    stdin: base64(smokeElf(system)),
    timeoutMs: options.timeoutMs ?? 30_000,
  });
  const ms = Date.now() - started;
  const base = { system, result, ms };
  if (result.code === 0 && !result.failure && result.stdout === SMOKE_OUTPUT) {
    return { ...base, outcome: "ok", message: `printed "ok" in ${ms} ms` };
  }
  const err = lastLine(result.stderr);
  if (result.failure) return { ...base, outcome: "error", message: describeFailure(argv, result) };
  if (result.code === 125) {
    return { ...base, outcome: "error", message: `could not stage the program: ${err}` };
  }
  const message = result.code === 126 || /Exec format error/i.test(err)
    ? `the kernel refused it (exit ${result.code}${
      err ? `: ${err}` : ""
    }): no enabled binfmt entry matched`
    : result.code === 127 || /not found|No such file/i.test(err)
    ? `the kernel could not start its interpreter (exit ${result.code}${err ? `: ${err}` : ""})`
    : result.code === 0
    ? `exited 0 but printed ${quoteForMessage(result.stdout, 40)} instead of "ok"`
    : `exited with ${result.code}${err ? `: ${err}` : ""}`;
  return { ...base, outcome: "failed", message };
}

/**
 * Builds a one-step derivation for `system` through the target's own Nix (`nix-build`, substituters
 * and remote builders off); its builder is the generated program, which creates `$out`. This proves
 * `extra-platforms`, the sandbox's view of the interpreter and binfmt together. The output is deleted
 * again; the program stays in the store until garbage collection (about 200 bytes).
 *
 * @example
 * ```ts ignore
 * import { runNixSmoke } from "./binfmt.ts";
 * import { SshTarget } from "./ssh_target.ts";
 *
 * const result = await runNixSmoke(new SshTarget("builder1"), "aarch64-linux");
 * console.log(result.outcome, result.message);
 * ```
 */
export async function runNixSmoke(
  target: Target,
  system: string,
  options: { timeoutMs?: number; nonce?: string } = {},
): Promise<SmokeResult> {
  const started = Date.now();
  const nonce = options.nonce ?? crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  const argv = ["sh", "-c", NIX_SMOKE_SCRIPT, "sh", SMOKE_NIX_EXPRESSION, system, nonce];
  const result = await target.run(argv, {
    stdin: base64(smokeElf(system)),
    timeoutMs: options.timeoutMs ?? 120_000,
  });
  const ms = Date.now() - started;
  const base = { system, result, ms };
  if (result.code === 0 && !result.failure) {
    return {
      ...base,
      outcome: "ok",
      message: `nix-build of a derivation for ${system} succeeded in ${ms} ms`,
    };
  }
  if (result.failure) {
    return { ...base, outcome: "error", message: describeFailure(["nix-build"], result) };
  }
  if (result.code === 127 && /nix-build/.test(result.stderr)) {
    return { ...base, outcome: "error", message: "'nix-build' is not installed or not on PATH" };
  }
  if (result.code === 125) {
    return {
      ...base,
      outcome: "error",
      message: `could not stage the program: ${lastLine(result.stderr)}`,
    };
  }
  // Nix 2.8 leaks its error framing (NULs, length bytes) and terminal codes into these lines.
  const stderr = cleanNixOutput(result.stderr);
  const refused =
    /a '([^']+)' with features \{[^}]*\} is required to build '[^']*', but I am a '[^']*'[^\n]*/
      .exec(stderr);
  const exec = /executing '([^']+)': ([^\n]+)/.exec(stderr);
  const message = refused
    ? `Nix refuses: ${refused[0].trim()}`
    : exec
    ? `the builder could not start: executing the ${system} program: ${exec[2]!.trim()}${
      /No such file/.test(exec[2]!)
        ? " (the interpreter is not visible in the sandbox, or missing)"
        : ""
    }`
    : `nix-build exited with ${result.code}: ${
      lastLine(stderr.split("\n").filter((l) => /error/.test(l)).join("\n") || stderr)
    }`;
  return { ...base, outcome: "failed", message };
}

function smokeFinding(
  kind: "exec" | "nix",
  result: SmokeResult,
  host: string,
  explained: boolean,
  platform: PlatformFacts,
): Finding {
  const id = kind === "exec" ? "binfmt/smoke" : "binfmt/smoke-nix";
  const what = kind === "exec" ? "a generated program" : "a one-step derivation";
  const status: Status = result.outcome === "ok"
    ? "ok"
    : result.outcome === "failed"
    ? "critical"
    : "unknown";
  const summary = `${result.system}: ${what} ${
    result.outcome === "ok" ? "ran" : "did not run"
  } on ${host}: ${result.message}`;
  const data = { system: result.system, outcome: result.outcome, ms: result.ms };
  if (status === "ok") return finding(id, status, summary, { data });
  const stderr = result.result ? lastLine(cleanNixOutput(result.result.stderr)) : "";
  const arch = elfIdentity(result.system);
  return finding(id, status, summary, {
    detail: stderr !== "" && !result.message.includes(stderr.replace(/^error: /, "")) ? stderr : "",
    fix: explained
      ? "fix the findings above for this system (runbook/check_binfmt.md), then run the check again"
      : new Fixes(platform).smoke(result.system, arch),
    data,
  });
}

/**
 * Everything {@link checkBinfmt} does, with the facts and the checked systems besides the findings.
 *
 * @example
 * ```ts ignore
 * import { inspectBinfmt } from "./binfmt.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * const { findings, systems } = await inspectBinfmt(new LocalTarget(), { systems: ["aarch64-linux"] });
 * console.log(systems, findings.map((f) => f.id));
 * ```
 */
export async function inspectBinfmt(
  target: Target,
  options: CheckBinfmtOptions = {},
): Promise<BinfmtInspection> {
  for (const system of options.systems ?? []) checkSystemName(system);
  for (const system of options.sentSystems ?? []) checkSystemName(system);
  const smoke = options.smoke ?? (target.kind === "snapshot" ? "off" : "exec");
  if (smoke !== "off" && target.kind === "snapshot") {
    throw new UsageError("A snapshot cannot run programs: use --no-smoke with --snapshot");
  }
  const facts = await gatherBinfmtFacts(target, options);
  const findings = assessBinfmt(facts, options);
  const systems = selectSystems(facts, options);
  if (smoke !== "off") {
    for (const { system } of systems) {
      const arch = elfIdentity(system);
      if (arch === undefined) continue;
      if (!hasSmokeProgram(arch)) {
        findings.push(finding(
          "binfmt/smoke",
          "unknown",
          `${system}: no smoke program exists for ${
            machineName(arch.machine)
          }; its entry was checked but nothing was run`,
          {
            fix:
              `prove it by hand: run a static ${system} program on ${target.host} (e.g. a busybox built for it), or build a derivation for ${system} there`,
            data: { system },
          },
        ));
        continue;
      }
      const explained = findings.some((f) =>
        f.status !== "ok" && (f.data as { system?: string } | undefined)?.system === system
      );
      const result = await runSmoke(target, system);
      findings.push(smokeFinding("exec", result, target.host, explained, facts.platform));
      if (smoke === "nix") {
        const nix = await runNixSmoke(target, system);
        findings.push(
          smokeFinding(
            "nix",
            nix,
            target.host,
            explained || result.outcome !== "ok",
            facts.platform,
          ),
        );
      }
    }
  }
  return { findings, facts, systems };
}

/**
 * The whole check: read, judge, prove. Returns the findings (ids `binfmt/*`, documented in
 * `runbook/check_binfmt.md`).
 *
 * @example This machine runs its own x86_64 programs
 * ```ts
 * import { checkBinfmt } from "./binfmt.ts";
 * import { LocalTarget } from "./local_target.ts";
 * import assert from "node:assert/strict";
 *
 * const findings = await checkBinfmt(new LocalTarget(), { systems: ["x86_64-linux"] });
 * assert.ok(findings.some((f) => f.id === "binfmt/native" && f.status === "ok"));
 * assert.ok(findings.some((f) => f.id === "binfmt/smoke" && f.status === "ok"));
 * ```
 */
export async function checkBinfmt(
  target: Target,
  options: CheckBinfmtOptions = {},
): Promise<Finding[]> {
  return (await inspectBinfmt(target, options)).findings;
}

/**
 * The systems a controller's machines list (`builders`, `@files` followed, with the rules of the
 * controller's Nix version) sends to one builder host; `[]` when the controller has no Nix or no
 * machine for that host. A machine line without systems builds the controller's own `system`.
 *
 * @example
 * ```ts
 * import { systemsSentTo } from "./binfmt.ts";
 * import { SnapshotTarget } from "./snapshot_target.ts";
 * import assert from "node:assert/strict";
 *
 * const nix = ["nix", "--extra-experimental-features", "nix-command"];
 * const controller = new SnapshotTarget({
 *   meta: { host: "laptop", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
 *   commands: [
 *     { argv: [...nix, "config", "show", "--json"], code: 0, stdout: '{"builders":{"value":"@/etc/nix/machines"},"system":{"value":"aarch64-darwin"}}', stderr: "" },
 *     { argv: ["nix", "--version"], code: 0, stdout: "nix (Nix) 2.24.0\n", stderr: "" },
 *   ],
 *   paths: {},
 *   files: { "/etc/nix/machines": "ssh-ng://root@nixos x86_64-linux,aarch64-linux - 8 1 kvm\n" },
 * });
 * assert.deepEqual(await systemsSentTo(controller, "nixos"), ["x86_64-linux", "aarch64-linux"]);
 * assert.deepEqual(await systemsSentTo(controller, "other"), []);
 * ```
 */
export async function systemsSentTo(controller: Target, builderHost: string): Promise<string[]> {
  const config = await readEffectiveConfig(controller);
  if (!config.ok) return [];
  const builders = config.settings.get("builders")?.value ?? "";
  if (builders.trim() === "") return [];
  const localSystem = config.settings.get("system")?.value.trim() ?? "";
  const versionRun = await controller.run(["nix", "--version"]);
  let version: ReturnType<typeof parseNixVersion> | undefined;
  try {
    if (versionRun.code === 0) version = parseNixVersion(versionRun.stdout);
  } catch {
    version = undefined;
  }
  const resolved = await resolveBuilders(
    builders,
    (path) => controller.readFile(path).catch(() => null),
    version === undefined ? {} : { version },
  );
  const want = parseSshHost(builderHost);
  const systems = new Set<string>();
  for (const machine of resolved.machines) {
    if (machine.host !== want.hostname) continue;
    if (want.user !== undefined && machine.user !== undefined && machine.user !== want.user) {
      continue;
    }
    const list = machine.systemsDefaulted ? [localSystem] : machine.systems;
    for (const system of list) if (SYSTEM_RE.test(system)) systems.add(system);
  }
  return [...systems];
}
