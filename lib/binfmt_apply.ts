/**
 * `check_binfmt --apply` and `--revert` for machines that are not NixOS: register the missing
 * emulators from the installed qemu's `binfmt.d` files (or re-enable a disabled entry, mount
 * binfmt_misc, switch it on), record every change in the state directory
 * ({@link StateStore} of `atomic_file.ts`), and undo exactly those changes later.
 *
 * Registrations live in the kernel: a reboot ends them, so a record made before the last boot is
 * reverted as "already gone". The persistent fix is the package (`qemu-user-static`), which the
 * findings name.
 *
 * @module
 */

import { DEFAULT_STATE_DIR, fileOpsFor, StateStore } from "./atomic_file.ts";
import {
  BINFMT_D_DIRS,
  BINFMT_DIR,
  type BinfmtFacts,
  checkSystemName,
  gatherBinfmtFacts,
  matchingEntries,
  nativeKind,
  selectSystems,
} from "./binfmt.ts";
import {
  type BinfmtSourceRule,
  formatRegisterLine,
  parseRegisterLine,
  ruleMatches,
  sameRule,
} from "./binfmt_entry.ts";
import { elfHeaderBytes, elfIdentity } from "./elf.ts";
import { UsageError } from "./errors.ts";
import type { Finding } from "./findings.ts";
import { describeFailure, type Target } from "./target.ts";

/** The tool name in state records. */
export const BINFMT_APPLY_TOOL = "check_binfmt";

/** One change `--apply` makes. */
export type BinfmtChange =
  | { action: "mount" }
  | { action: "enable-status" }
  | { action: "enable-entry"; name: string }
  | { action: "register"; name: string; line: string; source: string };

/** Options for {@link applyBinfmt}. */
export interface ApplyBinfmtOptions {
  /** Systems to make work (`--system`); default as for the check. */
  systems?: readonly string[];
  /** Systems the controller's machines file sends here. */
  sentSystems?: readonly string[];
  /** The state directory on the target (default `/var/lib/nix-builder-runbook`). */
  stateDir?: string;
}

async function bootId(target: Target): Promise<string | undefined> {
  const text = await target.readFile("/proc/sys/kernel/random/boot_id").catch(() => null);
  return text?.trim() || undefined;
}

async function writeProc(target: Target, path: string, value: string): Promise<string | null> {
  const argv = ["sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", value, path];
  const result = await target.run(argv);
  if (result.code === 0 && !result.failure) return null;
  return describeFailure(["write", path], result);
}

async function perform(target: Target, change: BinfmtChange): Promise<string | null> {
  switch (change.action) {
    case "mount": {
      const argv = ["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR];
      const result = await target.run(argv);
      return result.code === 0 && !result.failure ? null : describeFailure(argv, result);
    }
    case "enable-status":
      return await writeProc(target, `${BINFMT_DIR}/status`, "1");
    case "enable-entry":
      return await writeProc(target, `${BINFMT_DIR}/${change.name}`, "1");
    case "register":
      return await writeProc(target, `${BINFMT_DIR}/register`, change.line);
  }
}

function describeChange(change: BinfmtChange): string {
  switch (change.action) {
    case "mount":
      return `mounted binfmt_misc on ${BINFMT_DIR}`;
    case "enable-status":
      return "switched binfmt_misc on (status)";
    case "enable-entry":
      return `enabled entry ${change.name}`;
    case "register":
      return `registered ${change.name} from ${change.source}`;
  }
}

/** The qemu `binfmt.d` rule that serves `system`, preferring `qemu-<arch>`. */
function qemuSource(facts: BinfmtFacts, system: string): BinfmtSourceRule | undefined {
  const arch = elfIdentity(system);
  if (arch === undefined) return undefined;
  const exec = elfHeaderBytes(arch, 2);
  const dyn = elfHeaderBytes(arch, 3);
  const candidates = facts.sources.filter((s) =>
    BINFMT_D_DIRS.some((d) => s.file.startsWith(d + "/")) &&
    (ruleMatches(s, exec) || ruleMatches(s, dyn))
  );
  return candidates.find((s) => s.name === `qemu-${arch.qemuArch}`) ??
    candidates.find((s) => /qemu/.test(s.name + s.interpreter));
}

/**
 * Plans the changes that make each system runnable: what {@link applyBinfmt} would do, in order.
 * Systems that are native, or that no installed qemu serves, get no change (the latter a reason).
 *
 * @example Nothing mounted, no entry: mount, then register from Debian's file
 * ```ts
 * import { planBinfmtChanges } from "./binfmt_apply.ts";
 * import { parseBinfmtD } from "./binfmt_entry.ts";
 * import assert from "node:assert/strict";
 *
 * const line = ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:" +
 *   "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF";
 * const plan = planBinfmtChanges({
 *   host: "b",
 *   platform: { kind: "debian", systemd: false, machine: "x86_64" },
 *   binfmt: { state: "not-mounted" },
 *   nix: { ok: true, system: "x86_64-linux", extraPlatforms: ["aarch64-linux"], sandbox: "false", sandboxPaths: [] },
 *   sources: parseBinfmtD(line, "/usr/lib/binfmt.d/qemu-aarch64.conf"),
 *   sourceErrors: [],
 *   interpreters: {},
 * }, {});
 * assert.deepEqual(plan.changes.map((c) => c.action), ["mount", "register"]);
 * ```
 */
export function planBinfmtChanges(
  facts: BinfmtFacts,
  options: ApplyBinfmtOptions,
): { changes: BinfmtChange[]; problems: { system: string; reason: string }[] } {
  const changes: BinfmtChange[] = [];
  const problems: { system: string; reason: string }[] = [];
  const b = facts.binfmt;
  if (b.state === "no-kernel-support") {
    return {
      changes,
      problems: [{
        system: "*",
        reason: `${BINFMT_DIR} does not exist: load the module first (modprobe binfmt_misc)`,
      }],
    };
  }
  if (b.state === "unreadable") {
    return { changes, problems: [{ system: "*", reason: `cannot read binfmt_misc: ${b.reason}` }] };
  }
  const entries = b.state === "mounted" ? b.entries : [];
  if (b.state === "not-mounted") changes.push({ action: "mount" });
  else if (!b.enabled) changes.push({ action: "enable-status" });
  const names = new Set(entries.map((e) => e.name));
  for (const { system } of selectSystems(facts, options)) {
    const arch = elfIdentity(system);
    if (arch === undefined) {
      problems.push({ system, reason: "no ELF identity known for it" });
      continue;
    }
    const native = nativeKind(facts, arch);
    if (native === "native") continue;
    const { enabled, disabled } = matchingEntries(entries, arch);
    if (enabled.length > 0) continue;
    if (native === "compat" && disabled.length === 0) continue;
    if (disabled.length > 0) {
      const name = disabled[0]!.entry.name;
      if (!changes.some((c) => c.action === "enable-entry" && c.name === name)) {
        changes.push({ action: "enable-entry", name });
      }
      continue;
    }
    const source = qemuSource(facts, system);
    if (source === undefined) {
      problems.push({
        system,
        reason: `no installed qemu binfmt.d file serves it (looked in ${BINFMT_D_DIRS.join(", ")})`,
      });
      continue;
    }
    if (names.has(source.name)) {
      problems.push({
        system,
        reason:
          `an entry named ${source.name} exists already but does not match ${system} programs`,
      });
      continue;
    }
    if (changes.some((c) => c.action === "register" && c.name === source.name)) continue;
    changes.push({
      action: "register",
      name: source.name,
      line: formatRegisterLine(source),
      source: `${source.file}:${source.line}`,
    });
  }
  return { changes, problems };
}

function applied(summary: string, data?: unknown): Finding {
  const f: Finding = { id: "binfmt/applied", status: "ok", summary };
  if (data !== undefined) f.data = data;
  return f;
}

/**
 * Makes the checked systems runnable on a machine that is not NixOS, recording every change in the
 * state directory first (so a run killed half-way can still be reverted). Idempotent: what already
 * works is left alone. Returns `binfmt/applied` and `binfmt/apply-failed` findings; run the check
 * afterwards for the full picture.
 *
 * @example
 * ```ts ignore
 * import { applyBinfmt } from "./binfmt_apply.ts";
 * import { SshTarget } from "./ssh_target.ts";
 *
 * const findings = await applyBinfmt(new SshTarget("builder1"), { systems: ["aarch64-linux"] });
 * ```
 */
export async function applyBinfmt(
  target: Target,
  options: ApplyBinfmtOptions = {},
): Promise<Finding[]> {
  for (const system of options.systems ?? []) checkSystemName(system);
  const ops = fileOpsFor(target);
  const facts = await gatherBinfmtFacts(target, options);
  if (facts.platform.kind === "nixos") {
    const systems = selectSystems(facts, options).map((s) => `"${s.system}"`).join(" ");
    throw new UsageError(
      `--apply does not change NixOS: set boot.binfmt.emulatedSystems = [ ${systems} ]; then nixos-rebuild switch`,
    );
  }
  const store = await StateStore.open(ops, options.stateDir ?? DEFAULT_STATE_DIR);
  return await store.withLock(async () => {
    const findings: Finding[] = [];
    const { changes, problems } = planBinfmtChanges(facts, options);
    const boot = await bootId(target);
    for (const [step, change] of changes.entries()) {
      const record = store.newRecord(BINFMT_APPLY_TOOL, "binfmt", { ...change, step });
      if (boot !== undefined) record.bootId = boot;
      await store.save(record);
      const error = await perform(target, change);
      if (error !== null) {
        record.status = "abandoned";
        await store.save(record);
        findings.push({
          id: "binfmt/apply-failed",
          status: "critical",
          summary: `Could not apply on ${target.host}: ${describeChange(change)}: ${error}`,
          data: { change },
        });
        break;
      }
      record.status = "applied";
      await store.save(record);
      findings.push(
        applied(`${describeChange(change)} on ${target.host}`, { change, record: record.id }),
      );
    }
    for (const problem of problems) {
      findings.push({
        id: "binfmt/apply-failed",
        status: "critical",
        summary: `Cannot make ${problem.system} runnable on ${target.host}: ${problem.reason}`,
        fix:
          "apt-get install qemu-user-static binfmt-support   # ships /usr/lib/binfmt.d/qemu-*.conf",
        data: problem,
      });
    }
    if (changes.length === 0 && problems.length === 0) {
      findings.push(
        applied(`nothing to change on ${target.host}: every checked system already runs`),
      );
    }
    return findings;
  });
}

/**
 * Undoes what {@link applyBinfmt} recorded in the state directory, newest first: an entry it
 * registered is removed (only if it is still exactly what was registered), an entry it enabled is
 * disabled, binfmt_misc is switched off or unmounted again (unmounted only when no entry is left).
 * Idempotent: with nothing recorded it says so.
 *
 * @example
 * ```ts ignore
 * import { revertBinfmt } from "./binfmt_apply.ts";
 * import { LocalTarget } from "./local_target.ts";
 *
 * const findings = await revertBinfmt(new LocalTarget());
 * ```
 */
export async function revertBinfmt(
  target: Target,
  options: { stateDir?: string } = {},
): Promise<Finding[]> {
  const ops = fileOpsFor(target);
  const store = await StateStore.openExisting(ops, options.stateDir ?? DEFAULT_STATE_DIR);
  const nothing: Finding = {
    id: "binfmt/reverted",
    status: "ok",
    summary: `nothing to revert on ${target.host}: no change of check_binfmt --apply is recorded`,
  };
  if (store === null) return [nothing];
  return await store.withLock(async () => {
    // Newest first. Ids sort by second only, so order by creation time, then by step within a run.
    const step = (r: { detail: Record<string, unknown> }) => Number(r.detail.step ?? 0);
    const records = (await store.list({ tool: BINFMT_APPLY_TOOL, status: ["applied", "applying"] }))
      .sort((a, b) =>
        a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : step(b) - step(a)
      );
    if (records.length === 0) return [nothing];
    const boot = await bootId(target);
    const findings: Finding[] = [];
    for (const record of records) {
      const change = record.detail as unknown as BinfmtChange;
      const facts = await gatherBinfmtFacts(target, { systems: [] });
      const b = facts.binfmt;
      const entries = b.state === "mounted" ? b.entries : [];
      const gone = (why: string) => {
        record.status = "abandoned";
        findings.push({
          id: "binfmt/reverted",
          status: "ok",
          summary: `${describeChange(change)}: already undone (${why})`,
          data: { change, record: record.id },
        });
      };
      let undo: BinfmtChange | null = null;
      let value = "";
      if (record.bootId !== undefined && boot !== undefined && record.bootId !== boot) {
        gone("the machine rebooted since");
      } else if (change.action === "register") {
        const entry = entries.find((e) => e.name === change.name);
        if (entry === undefined) gone(`${change.name} is not registered`);
        else if (!sameRule(entry, parseRegisterLine(change.line))) {
          findings.push({
            id: "binfmt/revert-skipped",
            status: "warning",
            summary:
              `${change.name} on ${target.host} changed since --apply registered it; left alone`,
            fix: `remove it by hand if it should go: echo -1 > ${BINFMT_DIR}/${change.name}`,
            data: { change, record: record.id },
          });
          continue;
        } else {
          undo = change;
          value = "-1";
        }
      } else if (change.action === "enable-entry") {
        const entry = entries.find((e) => e.name === change.name);
        if (entry === undefined) gone(`${change.name} is not registered`);
        else if (!entry.enabled) gone(`${change.name} is disabled`);
        else {
          undo = change;
          value = "0";
        }
      } else if (change.action === "enable-status") {
        if (b.state !== "mounted" || !b.enabled) gone("binfmt_misc is off");
        else {
          undo = change;
          value = "0";
        }
      } else if (change.action === "mount") {
        if (b.state !== "mounted") gone("binfmt_misc is not mounted");
        else if (entries.length > 0) {
          findings.push({
            id: "binfmt/revert-skipped",
            status: "warning",
            summary:
              `binfmt_misc on ${target.host} still holds ${entries.length} entries; not unmounted`,
            data: { change, record: record.id },
          });
          record.status = "reverted";
          await store.save(record);
          continue;
        } else undo = change;
      }
      if (undo !== null) {
        const error = undo.action === "mount"
          ? await (async () => {
            const argv = ["umount", BINFMT_DIR];
            const result = await target.run(argv);
            return result.code === 0 && !result.failure ? null : describeFailure(argv, result);
          })()
          : await writeProc(
            target,
            undo.action === "register" || undo.action === "enable-entry"
              ? `${BINFMT_DIR}/${undo.name}`
              : `${BINFMT_DIR}/status`,
            value,
          );
        if (error !== null) {
          findings.push({
            id: "binfmt/revert-skipped",
            status: "warning",
            summary: `Could not undo on ${target.host}: ${describeChange(undo)}: ${error}`,
            data: { change, record: record.id },
          });
          continue;
        }
        record.status = "reverted";
        findings.push({
          id: "binfmt/reverted",
          status: "ok",
          summary: `undid on ${target.host}: ${describeChange(undo)}`,
          data: { change, record: record.id },
        });
      }
      await store.save(record);
    }
    return findings;
  });
}
