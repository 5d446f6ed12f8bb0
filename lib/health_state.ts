/**
 * The health check's memory between runs: per host, the boot it last saw and the kernel's OOM kill
 * counter then, so the next run can report "OOM kills since the last run" rather than since boot.
 *
 * The file is JSON, written atomically (temporary file, fsync, rename), on the machine that runs
 * the check (for `--host`, the monitoring machine, one entry per builder).
 *
 * @module
 */

import { ParseError, parseJsonText, UsageError } from "./errors.ts";

/** What the last run saw on one host. */
export interface HostState {
  /** `/proc/sys/kernel/random/boot_id` then: a different one means the host rebooted since. */
  bootId: string;
  /** `/proc/vmstat` `oom_kill` then (kernel OOM kills since that boot). */
  oomKills: number;
  /** When the run happened, ISO 8601. */
  checkedAt: string;
}

/** The whole state file. */
export interface HealthState {
  /** Format version, `1`. */
  version: 1;
  /** By host name as the report shows it (`localhost`, `builder1`, `root@10.0.0.5`). */
  hosts: Record<string, HostState>;
}

/**
 * Where the state lives by default: `/var/lib/nix-builder-runbook/health-state.json` for root,
 * else `$XDG_STATE_HOME/nix-builder-runbook/health-state.json` (`~/.local/state/...`).
 *
 * @example
 * ```ts
 * import { defaultStatePath } from "./health_state.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(defaultStatePath({ uid: 0, env: {} }), "/var/lib/nix-builder-runbook/health-state.json");
 * assert.equal(
 *   defaultStatePath({ uid: 1000, env: { HOME: "/home/ops" } }),
 *   "/home/ops/.local/state/nix-builder-runbook/health-state.json",
 * );
 * ```
 */
export function defaultStatePath(
  who: { uid: number | null; env: Record<string, string | undefined> } = {
    uid: Deno.uid(),
    env: { HOME: Deno.env.get("HOME"), XDG_STATE_HOME: Deno.env.get("XDG_STATE_HOME") },
  },
): string {
  if (who.uid === 0) return "/var/lib/nix-builder-runbook/health-state.json";
  const base = who.env.XDG_STATE_HOME ||
    (who.env.HOME ? `${who.env.HOME}/.local/state` : "/tmp");
  return `${base}/nix-builder-runbook/health-state.json`;
}

/**
 * Parses state file text. Throws {@link ParseError} naming the file and what is wrong.
 *
 * @example
 * ```ts
 * import { parseHealthState } from "./health_state.ts";
 * import assert from "node:assert/strict";
 *
 * const state = parseHealthState(
 *   '{"version":1,"hosts":{"localhost":{"bootId":"b1","oomKills":2,"checkedAt":"2026-11-25T10:00:00Z"}}}',
 * );
 * assert.equal(state.hosts.localhost?.oomKills, 2);
 * assert.throws(() => parseHealthState("{", "/var/lib/x.json"), /Cannot parse \/var\/lib\/x\.json/);
 * ```
 */
export function parseHealthState(text: string, input = "health state"): HealthState {
  const value = parseJsonText(text, input);
  const fail = (where: string, reason: string): never => {
    throw new ParseError(input, `${where}: ${reason}`);
  };
  const isObject = (v: unknown): v is Record<string, unknown> =>
    v !== null && typeof v === "object" && !Array.isArray(v);
  if (!isObject(value)) return fail("top level", "expected an object");
  if (value.version !== 1) fail("version", `expected 1, got ${JSON.stringify(value.version)}`);
  if (!isObject(value.hosts)) return fail("hosts", "expected an object");
  const hosts: Record<string, HostState> = {};
  for (const [host, entry] of Object.entries(value.hosts)) {
    const at = `hosts.${host}`;
    if (!isObject(entry)) return fail(at, "expected an object");
    const { bootId, oomKills, checkedAt } = entry;
    if (typeof bootId !== "string" || bootId === "") fail(`${at}.bootId`, "expected a boot id");
    if (typeof oomKills !== "number" || !Number.isInteger(oomKills) || oomKills < 0) {
      fail(`${at}.oomKills`, "expected a whole number ≥ 0");
    }
    if (typeof checkedAt !== "string" || Number.isNaN(Date.parse(checkedAt))) {
      fail(`${at}.checkedAt`, "not an ISO 8601 time");
    }
    hosts[host] = {
      bootId: bootId as string,
      oomKills: oomKills as number,
      checkedAt: checkedAt as string,
    };
  }
  return { version: 1, hosts };
}

/** What {@link readHealthState} found. */
export interface StateRead {
  /** The state (empty when the file is absent or unusable). */
  state: HealthState;
  /** Why an existing file could not be used (it will be replaced on the next write). */
  problem?: string;
}

/**
 * Reads the state file; an absent file is an empty state, a corrupt one too (with `problem` saying
 * why), so one bad write never breaks every later run.
 *
 * @example
 * ```ts
 * import { readHealthState } from "./health_state.ts";
 * import assert from "node:assert/strict";
 *
 * const read = await readHealthState("/nonexistent/health-state.json");
 * assert.deepEqual(read, { state: { version: 1, hosts: {} } });
 * ```
 */
export async function readHealthState(path: string): Promise<StateRead> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { state: { version: 1, hosts: {} } };
    const reason = error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : (error as Error).message;
    return { state: { version: 1, hosts: {} }, problem: `cannot read ${path}: ${reason}` };
  }
  try {
    return { state: parseHealthState(text, path) };
  } catch (error) {
    return { state: { version: 1, hosts: {} }, problem: (error as Error).message };
  }
}

/**
 * Writes the state file atomically (creating its directory). Throws {@link UsageError} when it
 * cannot, naming the file.
 *
 * @example
 * ```ts
 * import { readHealthState, writeHealthState } from "./health_state.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const host = { bootId: "b1", oomKills: 0, checkedAt: "2026-11-25T10:00:00.000Z" };
 * await writeHealthState(`${dir}/sub/state.json`, { version: 1, hosts: { builder1: host } });
 * assert.deepEqual((await readHealthState(`${dir}/sub/state.json`)).state.hosts.builder1, host);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeHealthState(path: string, state: HealthState): Promise<void> {
  // Loaded when needed: the check's start-up does not pay for it.
  const { localFileOps } = await import("./atomic_file.ts");
  const ops = localFileOps();
  const at = path.lastIndexOf("/");
  const dir = at > 0 ? path.slice(0, at) : at === 0 ? "/" : ".";
  try {
    await ops.mkdirp(dir, 0o755);
    await ops.writeAtomic(path, new TextEncoder().encode(JSON.stringify(state, null, 2) + "\n"), {
      mode: 0o644,
    });
  } catch (error) {
    throw new UsageError(
      `Cannot write the state file ${path}: ${
        (error as Error).message
      } (use --state-file or --no-state)`,
    );
  }
}
