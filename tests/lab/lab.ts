/**
 * The builder lab: a Nix controller and N Nix builders on one Linux machine, each behaving like
 * its own host, for integration tests and demos.
 *
 * - Each **builder** is a long-lived holder process in its own user (identity-mapped), mount and
 *   pid namespace, with its own `/nix` (store + database), `/etc/nix`, `/root`, `/etc/passwd`
 *   and binfmt_misc instance (kernel 6.7+), and its own Debian `sshd` on 127.0.0.1:<port>
 *   started inside, so every ssh session sees the builder's `/nix`.
 * - The **controller** is a mount + pid namespace with its own `/nix`, `/etc/nix` (`max-jobs = 0`,
 *   `builders = @/etc/nix/machines`, `builders-use-substitutes = true`) and an overlay over
 *   `/root` whose `.ssh` is a lab directory (ssh config with `Host builderN` aliases, key,
 *   known_hosts). In it, plain `nix build` offloads like on a real controller.
 * - The holders' stdin is a pipe from this process: when it dies (even by SIGKILL) each holder's
 *   init sees EOF and exits, and the kernel ends every process and mount of that namespace.
 *
 * The machine's own `/nix`, `/etc/nix` and `/root/.ssh` are never written.
 *
 * @example Offload a build from the controller to a builder
 * ```ts ignore
 * import { startLab } from "./lab.ts";
 *
 * await using lab = await startLab({ builders: 2 });
 * const result = await lab.controller.exec(["nix", "build", "--impure", "--expr", "..."]);
 * await lab.builders[0]!.setFault("down");
 * ```
 *
 * @module
 */

import { canaryExpression, type CanarySystem, newNonce, writeCanaryElf } from "./canary.ts";
import { withGlobalLock } from "./lock.ts";
import {
  freePort,
  killTree,
  LabError,
  type LabRunOptions,
  type LabRunResult,
  run,
  runOk,
  sleep,
} from "./_run.ts";
import {
  cleanupLabs,
  LAB_ROOT,
  type LabState,
  processStart,
  removeGlobalBinfmt,
  writeState,
} from "./_state.ts";
import { generateKey, sshConfigBlock, SSHD_PATH, sshdConfig, SshdProcess } from "./sshd.ts";

export { LabError } from "./_run.ts";
export type { LabRunOptions, LabRunResult } from "./_run.ts";
export { cleanupLabs, type CleanupReport, LAB_ROOT } from "./_state.ts";

/** A nix.conf value: lists are space-joined, booleans `true`/`false`; `null` removes the setting. */
export type NixConfValue = string | number | boolean | readonly string[];

/** nix.conf settings by name. */
export type NixConfSettings = Record<string, NixConfValue | null>;

/** The faults a builder can be switched into. */
export type LabFault =
  /** sshd stopped: connections are refused. */
  | "down"
  /** sshd sent SIGSTOP: the kernel accepts connections, nothing ever answers. */
  | "hung"
  /** sshd restarted with a different host key than the controller's known_hosts holds. */
  | "wrong-host-key"
  /** The controller's key is no longer in the builder's authorized_keys. */
  | "key-refused"
  /** sshd sessions get `PATH=/usr/local/sbin:/usr/sbin:/sbin`, where no nix command lives. */
  | "nix-not-on-path"
  /**
   * The builder runs a `nix-daemon` with `trusted-users = root`, and the controller connects as
   * the unprivileged user `nixremote` (the usual non-root builder account).
   */
  | "untrusted-user"
  /** The builder's binfmt_misc `qemu-aarch64` entry is disabled (`echo 0`). */
  | "binfmt-disabled"
  /** The builder's binfmt_misc `qemu-aarch64` entry is removed (`echo -1`). */
  | "binfmt-removed"
  /** `extra-platforms` is dropped from the builder's nix.conf. */
  | "no-extra-platforms";

/** Every fault, in a stable order. */
export const LAB_FAULTS: readonly LabFault[] = [
  "down",
  "hung",
  "wrong-host-key",
  "key-refused",
  "nix-not-on-path",
  "untrusted-user",
  "binfmt-disabled",
  "binfmt-removed",
  "no-extra-platforms",
];

/** How the controller's machines line for a builder reads. */
export interface MachineOptions {
  /** `ssh` (legacy, `nix-store --serve`; the default) or `ssh-ng` (`nix-daemon --stdio`). */
  protocol?: "ssh" | "ssh-ng";
  /** ssh user; none (the alias's `User root`) by default. */
  user?: string;
  /** Systems; `x86_64-linux` plus `aarch64-linux` when the builder emulates it. */
  systems?: readonly string[];
  /** Max jobs column (default 2). */
  maxJobs?: number;
  /** Speed factor column (default 1). */
  speedFactor?: number;
  /** Supported features (default `big-parallel`). */
  supportedFeatures?: readonly string[];
  /** Mandatory features (default none). */
  mandatoryFeatures?: readonly string[];
}

/** Options for one builder. */
export interface BuilderOptions {
  /** nix.conf settings over the lab defaults (see {@link DEFAULT_BUILDER_NIX_CONF}). */
  nixConf?: NixConfSettings;
  /** Register qemu-aarch64 and set `extra-platforms = aarch64-linux` (default true). */
  emulation?: boolean;
  /** The controller's machines line for this builder. */
  machine?: MachineOptions;
}

/**
 * Where the aarch64 emulation is registered:
 * - `namespace`: each builder mounts its own binfmt_misc instance (kernel 6.7+); nothing global
 *   changes and faults stay per builder.
 * - `global`: one machine-global entry `nbr-lab-<id>` for the whole lab, registered and removed
 *   under `withGlobalLock("binfmt")`; binfmt faults then affect every builder of the lab.
 */
export type EmulationMode = "namespace" | "global";

/** Options for {@link startLab}. */
export interface LabOptions {
  /** Number of builders, or one options object per builder (default 1). */
  builders?: number | readonly BuilderOptions[];
  /** Where emulation is registered; `namespace` when the kernel supports it, else `global`. */
  emulation?: EmulationMode;
  /** Controller nix.conf settings over the lab defaults (see {@link DEFAULT_CONTROLLER_NIX_CONF}). */
  controllerNixConf?: NixConfSettings;
  /**
   * `ConnectTimeout` in the controller's ssh config, seconds (default 10). 0 leaves it out, as on
   * a stock controller: a hung builder then stalls Nix's build hook forever.
   */
  connectTimeoutSeconds?: number;
  /** Time-out of the whole start-up in milliseconds (default 60 000). */
  timeoutMs?: number;
}

/** Options for {@link Builder.exec} and {@link Controller.exec}. */
export interface ExecOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Time-out in milliseconds (default 60 000); the process tree is killed. */
  timeoutMs?: number;
  /** Standard input. */
  stdin?: string | Uint8Array;
  /** Working directory inside the namespace (default: this process's, which the lab shares). */
  cwd?: string;
}

/** A finished {@link Controller.nixBuild}. */
export interface NixBuildResult extends LabRunResult {
  /** The output path (`out`) when the build succeeded. */
  outPath?: string;
  /** The derivation path when the build succeeded. */
  drvPath?: string;
}

/** nix.conf every builder starts with. */
export const DEFAULT_BUILDER_NIX_CONF: Readonly<Record<string, string>> = {
  "build-users-group": "",
  "sandbox": "false",
  "experimental-features": "nix-command",
  "substituters": "",
  "max-jobs": "2",
  "cores": "1",
  "system-features": "big-parallel benchmark nixos-test",
  "trusted-users": "root",
};

/** nix.conf the controller starts with: the post's controller. */
export const DEFAULT_CONTROLLER_NIX_CONF: Readonly<Record<string, string>> = {
  "build-users-group": "",
  "sandbox": "false",
  "experimental-features": "nix-command",
  "substituters": "",
  "max-jobs": "0",
  "builders": "@/etc/nix/machines",
  "builders-use-substitutes": "true",
};

/** PATH that sshd gives sessions under the `nix-not-on-path` fault. */
export const NO_NIX_PATH = "/usr/local/sbin:/usr/sbin:/sbin";

/** The unprivileged ssh user every builder has (used by the `untrusted-user` fault). */
export const REMOTE_USER = "nixremote";

const BINFMT_CONF = "/usr/lib/binfmt.d/qemu-aarch64.conf";
const BINFMT_DIR = "/proc/sys/fs/binfmt_misc";

/**
 * What this machine lacks for the lab, one item each (`[]` when everything is there).
 *
 * @example
 * ```ts
 * import { labPrerequisites } from "./lab.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(Array.isArray(labPrerequisites()));
 * ```
 */
export function labPrerequisites(): string[] {
  const missing: string[] = [];
  if (Deno.build.os !== "linux") return ["Linux"];
  if (Deno.uid() !== 0) missing.push("root");
  const need: [string, string][] = [
    ["nix", "nix-bin (nix)"],
    ["nix-store", "nix-bin (nix-store)"],
    ["nix-daemon", "nix-bin (nix-daemon)"],
    ["ssh", "openssh-client (ssh)"],
    ["ssh-keygen", "openssh-client (ssh-keygen)"],
    ["qemu-aarch64-static", "qemu-user-static (qemu-aarch64-static)"],
    ["unshare", "util-linux (unshare)"],
    ["nsenter", "util-linux (nsenter)"],
    ["flock", "util-linux (flock)"],
  ];
  for (const [program, what] of need) {
    if (which(program) === null) missing.push(what);
  }
  if (!exists(SSHD_PATH)) missing.push(`openssh-server (${SSHD_PATH})`);
  if (!exists(BINFMT_CONF)) missing.push(`qemu-user-static (${BINFMT_CONF})`);
  return missing;
}

let skipNoticePrinted = false;

/** Every lab test's name starts with this: `deno test --filter "/^lab: /"` runs only them. */
export const LAB_TEST_PREFIX = "lab: ";

/**
 * Registers a lab test: `Deno.test` when {@link labPrerequisites} are met; otherwise an ignored
 * test and one line on stderr naming what is missing, or, under `LAB_REQUIRED=1`, a failing test.
 */
export function labTest(title: string, fn: (t: Deno.TestContext) => Promise<void> | void): void {
  // The prefix is how `deno task test:lab` (--filter) picks the lab tests out of mixed files.
  const name = `${LAB_TEST_PREFIX}${title}`;
  const missing = labPrerequisites();
  if (missing.length === 0) {
    Deno.test({ name, fn });
    return;
  }
  const line = `Lab prerequisites missing: ${missing.join(", ")}`;
  if (Deno.env.get("LAB_REQUIRED") === "1") {
    Deno.test({
      name,
      fn() {
        throw new Error(`${line} (LAB_REQUIRED=1)`);
      },
    });
    return;
  }
  if (!skipNoticePrinted) {
    skipNoticePrinted = true;
    console.error(`lab tests skipped: ${line}`);
  }
  Deno.test({ name, ignore: true, fn });
}

/** Whether this kernel gives each user namespace its own binfmt_misc (Linux 6.7+). */
export function kernelHasNamespacedBinfmt(): boolean {
  const [major = 0, minor = 0] = Deno.osRelease().split(/[.-]/).map(Number);
  return major > 6 || (major === 6 && minor >= 7);
}

/**
 * Starts a lab: a controller and `options.builders` builders, ready for builds.
 *
 * Labs left behind by crashed runs are cleaned first. Throws a one-line {@link LabError} when a
 * part cannot start; whatever started is torn down again.
 */
export async function startLab(options: LabOptions = {}): Promise<Lab> {
  const missing = labPrerequisites();
  if (missing.length > 0) throw new LabError(`Lab prerequisites missing: ${missing.join(", ")}`);
  await cleanupLabs();
  const builderOptions = typeof options.builders === "number" || options.builders === undefined
    ? Array.from({ length: options.builders ?? 1 }, () => ({}))
    : [...options.builders];
  const emulation = options.emulation ?? (kernelHasNamespacedBinfmt() ? "namespace" : "global");
  const id = `lab-${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 6)}`;
  const dir = `${LAB_ROOT}/${id}`;
  await Deno.mkdir(LAB_ROOT, { recursive: true, mode: 0o755 });
  await Deno.mkdir(dir, { mode: 0o755 });
  await Deno.chmod(dir, 0o755);
  const lab = new Lab({ id, dir, emulation, connectTimeout: options.connectTimeoutSeconds ?? 10 });
  const timeoutMs = options.timeoutMs ?? 60_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const started = lab.start(builderOptions, options.controllerNixConf ?? {});
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LabError(`Cannot start the lab: not ready after ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    await Promise.race([started, timeout]);
    return lab;
  } catch (error) {
    await lab.stop();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** A controller and its builders. Stop it with {@link Lab.stop} or `await using`. */
export class Lab implements AsyncDisposable {
  /** The lab's id (`lab-...`), also its directory name under {@link LAB_ROOT}. */
  readonly id: string;
  /** `/tmp/nbr-lab/<id>`: every file of the lab. */
  readonly dir: string;
  /** Where aarch64 emulation is registered. */
  readonly emulation: EmulationMode;
  /** The controller. */
  readonly controller: Controller;
  #builders: Builder[] = [];
  #connectTimeout: number;
  #state: LabState;
  #stopped = false;
  #globalBinfmt: string | null = null;
  #clientKey = "";

  /** @internal Use {@link startLab}. */
  constructor(o: { id: string; dir: string; emulation: EmulationMode; connectTimeout: number }) {
    this.id = o.id;
    this.dir = o.dir;
    this.emulation = o.emulation;
    this.#connectTimeout = o.connectTimeout;
    this.controller = new Controller(this, `${o.dir}/controller`);
    this.#state = {
      id: o.id,
      ownerPid: Deno.pid,
      ownerStart: processStart(Deno.pid),
      holderPids: [],
      globalBinfmt: [],
      startedAt: new Date().toISOString(),
    };
  }

  /** The builders, `builder1` first. */
  get builders(): readonly Builder[] {
    return this.#builders;
  }

  /** A builder by name (`builder2`) or 0-based index; throws when there is none. */
  builder(which: string | number): Builder {
    const found = typeof which === "number"
      ? this.#builders[which]
      : this.#builders.find((b) => b.name === which);
    if (!found) throw new LabError(`No builder '${which}' in this lab`);
    return found;
  }

  /**
   * ssh arguments that reach every builder by its alias from outside the namespaces:
   * `["-F", "<controller ssh config>"]`, e.g. `ssh ...lab.sshOptions builder1 -- nix-store --version`.
   */
  get sshOptions(): readonly string[] {
    return ["-F", this.controller.sshConfigFile];
  }

  /**
   * Environment for tools run outside the namespaces: `NIX_SSHOPTS` (the same `-F`) for Nix's
   * own ssh, and `NBR_LAB_DIR` / `NBR_LAB_SSH_CONFIG` for scripts.
   */
  get env(): Readonly<Record<string, string>> {
    return {
      NIX_SSHOPTS: `-F ${this.controller.sshConfigFile}`,
      NBR_LAB_DIR: this.dir,
      NBR_LAB_SSH_CONFIG: this.controller.sshConfigFile,
    };
  }

  /** The client key the controller uses (its `.pub` is in every builder's authorized_keys). */
  get clientKey(): string {
    return this.#clientKey;
  }

  /** The path of the canary ELF for `system` (a tiny static program, see `canary.ts`). */
  canaryElf(system: CanarySystem): string {
    return `${this.dir}/canary/canary-${system.split("-")[0]}`;
  }

  /**
   * A canary derivation expression with a fresh nonce; `builder: "elf"` (default for aarch64)
   * uses the lab's canary ELF, `"sh"` uses `/bin/sh` (x86_64 only).
   */
  canary(system: CanarySystem, options: { builder?: "sh" | "elf" } = {}): {
    expression: string;
    nonce: string;
    name: string;
  } {
    const nonce = newNonce();
    const kind = options.builder ?? (system === "x86_64-linux" ? "sh" : "elf");
    const expression = canaryExpression({
      system,
      nonce,
      builder: kind === "sh" ? "sh" : this.canaryElf(system),
    });
    return { expression, nonce, name: `canary-${nonce}` };
  }

  /** Stops everything and removes the lab's directory. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    const problems: string[] = [];
    if (this.#globalBinfmt !== null) {
      const name = this.#globalBinfmt;
      const problem = await withGlobalLock("binfmt", () => removeGlobalBinfmt(name));
      if (problem) problems.push(problem);
    }
    await Promise.all([...this.#builders.map((b) => b.stop()), this.controller.stop()]);
    await Deno.remove(this.dir, { recursive: true }).catch((error) => {
      problems.push(`Cannot remove ${this.dir}: ${(error as Error).message}`);
    });
    if (problems.length > 0) throw new LabError(problems.join("; "));
  }

  /** Same as {@link Lab.stop}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** @internal */
  async start(builderOptions: BuilderOptions[], controllerNixConf: NixConfSettings): Promise<void> {
    await writeState(this.dir, this.#state);
    await writeCanaryElf(`${this.dir}/canary`, "x86_64-linux");
    await writeCanaryElf(`${this.dir}/canary`, "aarch64-linux");
    await Deno.mkdir(`${this.controller.dir}/ssh`, { recursive: true, mode: 0o700 });
    this.#clientKey = `${this.controller.dir}/ssh/id_ed25519`;
    await generateKey(this.#clientKey, "nbr-lab-controller");
    const clientPub = (await Deno.readTextFile(`${this.#clientKey}.pub`)).trim();
    const remoteUid = pickFreeId();
    this.#builders = builderOptions.map((o, i) =>
      new Builder(this, {
        index: i,
        name: `builder${i + 1}`,
        dir: `${this.dir}/builder${i + 1}`,
        options: o,
        clientPub,
        remoteUid,
        nsUser: this.emulation === "namespace",
      })
    );
    await Promise.all([
      ...this.#builders.map((b) => b.start()),
      this.controller.start(controllerNixConf),
    ]);
    if (this.emulation === "global" && this.#builders.some((b) => b.emulates)) {
      const name = `nbr-lab-${this.id.slice(4)}`;
      this.#state.globalBinfmt.push(name);
      await writeState(this.dir, this.#state);
      const first = this.#builders[0] as Builder;
      await withGlobalLock("binfmt", () => first.registerBinfmt(name));
      this.#globalBinfmt = name;
    }
    await this.writeControllerSsh();
    await this.controller.useBuilders();
  }

  /** @internal Records a namespace holder so `lab down` can end it after a crash. */
  async recordHolder(pid: number): Promise<void> {
    this.#state.holderPids.push(pid);
    await writeState(this.dir, this.#state);
  }

  /** @internal The binfmt entry name a builder's faults act on. */
  binfmtEntryFor(builder: Builder): string | null {
    if (!builder.emulates) return null;
    return this.emulation === "namespace" ? "qemu-aarch64" : this.#globalBinfmt;
  }

  /** @internal Global-mode binfmt changes go through one builder under the lock. */
  async binfmtWrite(builder: Builder, entry: string, value: string): Promise<void> {
    const write = () =>
      builder.execOk([
        "sh",
        "-c",
        'if [ "$2" = register ]; then printf "%s" "$1" > /proc/sys/fs/binfmt_misc/register; ' +
        'else printf "%s" "$1" > "/proc/sys/fs/binfmt_misc/$2"; fi',
        "sh",
        value,
        entry,
      ]);
    if (this.emulation === "global") await withGlobalLock("binfmt", write);
    else await write();
  }

  /** @internal */
  get connectTimeout(): number {
    return this.#connectTimeout;
  }

  /** @internal Writes the controller's ssh config and known_hosts for every builder. */
  async writeControllerSsh(): Promise<void> {
    const sshDir = `${this.controller.dir}/ssh`;
    const knownHosts = this.#builders.map((b) => `[127.0.0.1]:${b.port} ${b.hostPublicKey}`);
    await Deno.writeTextFile(`${sshDir}/known_hosts`, knownHosts.join("\n") + "\n");
    const blocks = this.#builders.map((b) =>
      sshConfigBlock({
        hostAlias: b.name,
        port: b.port,
        identityFile: this.#clientKey,
        knownHostsFile: `${sshDir}/known_hosts`,
        connectTimeout: this.#connectTimeout,
      })
    );
    await Deno.writeTextFile(`${sshDir}/config`, blocks.join("\n"), { mode: 0o600 });
  }
}

/**
 * A namespace holder: `unshare ... sh init.sh`, whose init stays alive until this process closes
 * its stdin. With `userns`, the user namespace gets an identity map of all ids first.
 */
class Holder {
  #child: Deno.ChildProcess | undefined;
  #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #pid = 0;
  #logPump: Promise<void> | undefined;

  /** Host pid of the namespace's init (target for nsenter); 0 before start. */
  get pid(): number {
    return this.#pid;
  }

  /** Host pid of the outermost process (what the state file records). */
  get outerPid(): number {
    return this.#child?.pid ?? 0;
  }

  async start(o: {
    userns: boolean;
    script: string;
    args: readonly string[];
    log: string;
    timeoutMs: number;
  }): Promise<void> {
    const inner = [
      "unshare",
      "--mount",
      "--pid",
      "--fork",
      "--propagation",
      "private",
      "--mount-proc",
      "--",
      "/bin/sh",
      o.script,
      ...o.args,
    ];
    const argv = o.userns
      ? ["unshare", "--user", "--", "/bin/sh", "-c", 'read -r _ && exec "$@"', "sh", ...inner]
      : inner;
    const [program, ...args] = argv as [string, ...string[]];
    const child = new Deno.Command(program, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    let exited = false;
    child.status.then(() => (exited = true));
    const output = { text: "" };
    this.#logPump = pumpTo(o.log, [child.stdout, child.stderr], output);
    if (o.userns) {
      // Wait until unshare has entered its new user namespace, then give it all ids.
      const own = Deno.readLinkSync("/proc/self/ns/user");
      const until = Date.now() + o.timeoutMs;
      while (true) {
        let theirs = own;
        try {
          theirs = Deno.readLinkSync(`/proc/${child.pid}/ns/user`);
        } catch {
          // not there yet, or gone (checked below)
        }
        if (theirs !== own) break;
        if (exited || Date.now() > until) {
          throw new LabError(
            `Cannot create a user namespace: ${output.text.trim() || "timed out"}`,
          );
        }
        await sleep(2);
      }
      try {
        await Deno.writeTextFile(`/proc/${child.pid}/uid_map`, "0 0 4294967295\n");
        await Deno.writeTextFile(`/proc/${child.pid}/gid_map`, "0 0 4294967295\n");
      } catch (error) {
        throw new LabError(`Cannot map ids into a user namespace: ${(error as Error).message}`);
      }
      await this.#stdin.write(new TextEncoder().encode("go\n"));
    }
    const deadline = Date.now() + o.timeoutMs;
    while (!/^ready$/m.test(output.text)) {
      if (exited || Date.now() > deadline) {
        const last = output.text.trim().split("\n").at(-1) ?? "";
        throw new LabError(
          `Cannot create namespaces: ${exited ? last || "unshare exited" : "not ready in time"}`,
        );
      }
      await sleep(10);
    }
    const init = findInit(child.pid);
    if (init === 0) throw new LabError("Cannot find the namespace's init process");
    this.#pid = init;
  }

  /** Ends the namespace: closes init's stdin, then kills what is left after 3 s. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    try {
      await this.#stdin?.close();
    } catch {
      // already closed
    }
    const deadline = Date.now() + 3000;
    let done = false;
    child.status.then(() => (done = true));
    while (!done && Date.now() < deadline) await sleep(10);
    if (!done) killTree(child.pid, "SIGKILL");
    await child.status;
    await this.#logPump;
    this.#child = undefined;
  }
}

/** Finds the pid-namespace init below an `unshare --fork`: the first descendant running `sh`. */
function findInit(pid: number): number {
  const queue = [pid];
  const seen: number[] = [];
  while (queue.length > 0) {
    const p = queue.shift() as number;
    seen.push(p);
    let comm = "";
    let nspid: string[] = [];
    try {
      comm = Deno.readTextFileSync(`/proc/${p}/comm`).trim();
      const status = Deno.readTextFileSync(`/proc/${p}/status`);
      nspid = (/^NSpid:\s*(.*)$/m.exec(status)?.[1] ?? "").trim().split(/\s+/);
      const children = Deno.readTextFileSync(`/proc/${p}/task/${p}/children`).trim();
      for (const c of children.split(/\s+/)) if (c !== "") queue.push(Number(c));
    } catch {
      continue;
    }
    if (nspid.at(-1) === "1" && nspid.length > 1 && comm !== "unshare") return p;
  }
  return 0;
}

async function pumpTo(
  path: string,
  streams: ReadableStream<Uint8Array>[],
  output: { text: string },
): Promise<void> {
  const file = await Deno.open(path, { append: true, create: true });
  const decoder = new TextDecoder();
  try {
    await Promise.all(streams.map(async (stream) => {
      try {
        for await (const chunk of stream) {
          await file.write(chunk);
          output.text = (output.text + decoder.decode(chunk, { stream: true })).slice(-8000);
        }
      } catch {
        // closed
      }
    }));
  } finally {
    file.close();
  }
}

const BUILDER_INIT = `set -eu
d="$1"
mount --bind "$d/nix" /nix
mount --bind "$d/etc-nix" /etc/nix
mount --bind "$d/home" /root
for f in passwd group shadow; do mount --bind "$d/etc/$f" "/etc/$f"; done
mount -t binfmt_misc binfmt_misc ${BINFMT_DIR}
echo ready
# bash as the namespace init reaps orphans (cat would leave them as zombies) and waits for EOF
exec bash -c 'while read -r _; do :; done'
`;

const CONTROLLER_INIT = `set -eu
d="$1"
mount --bind "$d/nix" /nix
mount --bind "$d/etc-nix" /etc/nix
mount -t overlay overlay -o "lowerdir=/root,upperdir=$d/root-upper,workdir=$d/root-work" /root
mkdir -p /root/.ssh /root/.config/nix
mount --bind "$d/ssh" /root/.ssh
mount --bind "$d/user-nix-conf" /root/.config/nix
echo ready
# bash as the namespace init reaps orphans (cat would leave them as zombies) and waits for EOF
exec bash -c 'while read -r _; do :; done'
`;

/** One builder host. */
export class Builder {
  /** `builder1`, `builder2`, ...: also its ssh alias on the controller. */
  readonly name: string;
  /** 0-based index in {@link Lab.builders}. */
  readonly index: number;
  /** `/tmp/nbr-lab/<id>/builderN`: its `nix/`, `etc-nix/`, `home/`, `ssh/`, logs. */
  readonly dir: string;
  /** Its sshd port on 127.0.0.1. */
  get port(): number {
    return this.#port;
  }
  /** Whether it emulates aarch64-linux (binfmt + extra-platforms). */
  readonly emulates: boolean;
  #lab: Lab;
  #port: number;
  #holder = new Holder();
  #sshd: SshdProcess | undefined;
  #daemon: Deno.ChildProcess | undefined;
  #daemonPump: Promise<void> | undefined;
  #nixConf: Record<string, string>;
  #machine: MachineOptions;
  #faults = new Set<LabFault>();
  #savedExtraPlatforms: string | undefined;
  #hostPublicKey = "";
  #clientPub: string;
  #remoteUid: number;
  #nsUser: boolean;

  /** @internal Use {@link startLab}. */
  constructor(lab: Lab, o: {
    index: number;
    name: string;
    dir: string;
    options: BuilderOptions;
    clientPub: string;
    remoteUid: number;
    nsUser: boolean;
  }) {
    this.#lab = lab;
    this.index = o.index;
    this.name = o.name;
    this.dir = o.dir;
    this.#port = freePort();
    this.emulates = o.options.emulation ?? true;
    this.#clientPub = o.clientPub;
    this.#remoteUid = o.remoteUid;
    this.#nsUser = o.nsUser;
    this.#machine = o.options.machine ?? {};
    this.#nixConf = { ...DEFAULT_BUILDER_NIX_CONF };
    if (this.emulates) this.#nixConf["extra-platforms"] = "aarch64-linux";
    applySettings(this.#nixConf, o.options.nixConf ?? {});
  }

  /** The builder's host public key line (what the controller's known_hosts holds). */
  get hostPublicKey(): string {
    return this.#hostPublicKey;
  }

  /** Host pid of the builder's namespace init (`nsenter -t <pid> ...`). */
  get pid(): number {
    return this.#holder.pid;
  }

  /** The `nsenter` prefix that runs a command inside this builder (as its sessions do). */
  get nsenter(): readonly string[] {
    return this.#nsPrefix();
  }

  /** The pid of its sshd listener (0 when stopped). */
  get sshdPid(): number {
    return this.#sshd?.pid ?? 0;
  }

  /** Its current nix.conf settings. */
  get nixConf(): Readonly<Record<string, string>> {
    return { ...this.#nixConf };
  }

  /** The faults currently switched on. */
  get faults(): ReadonlySet<LabFault> {
    return new Set(this.#faults);
  }

  /** The binfmt_misc entry its emulation uses (`null` without emulation). */
  get binfmtEntry(): string | null {
    return this.#lab.binfmtEntryFor(this);
  }

  /** Where its nix.conf lives outside the namespace (inside: `/etc/nix/nix.conf`). */
  get nixConfFile(): string {
    return `${this.dir}/etc-nix/nix.conf`;
  }

  /** The controller's machines line for this builder (fault-adjusted). */
  machineLine(overrides: MachineOptions = {}): string {
    const m = { ...this.#machine, ...overrides };
    const user = this.#faults.has("untrusted-user") ? REMOTE_USER : m.user;
    const systems = m.systems ??
      (this.emulates ? ["x86_64-linux", "aarch64-linux"] : ["x86_64-linux"]);
    const list = (items: readonly string[] | undefined, fallback: string) =>
      items === undefined ? fallback : items.length === 0 ? "-" : items.join(",");
    return [
      `${m.protocol ?? "ssh"}://${user ? `${user}@` : ""}${this.name}`,
      systems.join(","),
      "-",
      String(m.maxJobs ?? 2),
      String(m.speedFactor ?? 1),
      list(m.supportedFeatures, "big-parallel"),
      list(m.mandatoryFeatures, "-"),
      "-",
    ].join(" ");
  }

  /** Changes how the controller's machines line for this builder reads, and rewrites the file. */
  async setMachine(machine: MachineOptions): Promise<void> {
    this.#machine = { ...this.#machine, ...machine };
    await this.#lab.controller.useBuilders();
  }

  /**
   * Merges settings into the builder's nix.conf (`null` removes one) and rewrites it; with
   * `replace`, starts from the lab defaults instead. A running nix-daemon is restarted.
   */
  async setNixConf(settings: NixConfSettings, options: { replace?: boolean } = {}): Promise<void> {
    if (options.replace) {
      this.#nixConf = { ...DEFAULT_BUILDER_NIX_CONF };
      if (this.emulates) this.#nixConf["extra-platforms"] = "aarch64-linux";
    }
    applySettings(this.#nixConf, settings);
    await this.#writeNixConf();
    if (this.#daemon) {
      await this.#stopDaemon();
      await this.#startDaemon();
    }
  }

  /** Runs a command inside the builder (its mounts, users, binfmt), like an ssh session would. */
  exec(argv: readonly string[], options: ExecOptions = {}): Promise<LabRunResult> {
    return run([...this.#nsPrefix(options.cwd ?? "/"), ...argv], execRunOptions(options));
  }

  /** {@link Builder.exec} that throws a one-line {@link LabError} unless the command exits 0. */
  execOk(argv: readonly string[], options: ExecOptions = {}): Promise<LabRunResult> {
    return runOk([...this.#nsPrefix(options.cwd ?? "/"), ...argv], execRunOptions(options));
  }

  /** Switches a fault on (`on = true`, the default) or off. Idempotent. */
  async setFault(fault: LabFault, on = true): Promise<void> {
    if (this.#faults.has(fault) === on) return;
    if (on) this.#faults.add(fault);
    else this.#faults.delete(fault);
    switch (fault) {
      case "down":
        if (on) await this.#sshd?.stop();
        else if (!this.#faults.has("hung")) await this.#startSshd();
        return;
      case "hung":
        this.#sshd?.signal(on ? "SIGSTOP" : "SIGCONT");
        return;
      case "wrong-host-key":
      case "nix-not-on-path":
        await this.#writeSshdConfig();
        if (!this.#faults.has("down")) {
          await this.#sshd?.stop();
          await this.#startSshd();
        }
        return;
      case "key-refused":
        await this.#writeAuthorizedKeys();
        return;
      case "untrusted-user":
        if (on) {
          await this.#startDaemon();
        } else {
          await this.#stopDaemon();
        }
        await this.#lab.controller.useBuilders();
        return;
      case "binfmt-disabled":
      case "binfmt-removed": {
        const entry = this.binfmtEntry;
        if (entry === null) throw new LabError(`${this.name} has no emulation to break`);
        if (fault === "binfmt-disabled") {
          await this.#lab.binfmtWrite(this, entry, on ? "0" : "1");
        } else if (on) {
          await this.#lab.binfmtWrite(this, entry, "-1");
        } else {
          await this.registerBinfmt(entry);
        }
        return;
      }
      case "no-extra-platforms":
        if (on) {
          this.#savedExtraPlatforms = this.#nixConf["extra-platforms"];
          await this.setNixConf({ "extra-platforms": null });
        } else {
          await this.setNixConf({ "extra-platforms": this.#savedExtraPlatforms ?? null });
        }
        return;
    }
  }

  /** Switches every fault off. */
  async clearFaults(): Promise<void> {
    for (const fault of [...this.#faults].reverse()) await this.setFault(fault, false);
  }

  /** @internal Registers Debian's qemu-aarch64 line (renamed to `name`) in this builder's view. */
  async registerBinfmt(name: string): Promise<void> {
    const line = await binfmtLine(name);
    await this.#lab.binfmtWrite(this, "register", line);
  }

  /** @internal */
  async start(): Promise<void> {
    const d = this.dir;
    for (
      const sub of ["nix/store", "nix/var/nix", "etc-nix", "home", "ssh", "etc", "remote-home"]
    ) {
      await Deno.mkdir(`${d}/${sub}`, { recursive: true, mode: 0o755 });
    }
    await Deno.chmod(`${d}/nix/store`, 0o1775);
    await Deno.chown(`${d}/remote-home`, this.#remoteUid, this.#remoteUid);
    await this.#writeUsers();
    await this.#writeNixConf();
    const [hostPub] = await Promise.all([
      generateKey(`${d}/ssh/ssh_host_ed25519_key`, `${this.name}-host`),
      generateKey(`${d}/ssh/ssh_host_ed25519_key_other`, `${this.name}-other-host`),
      generateKey(`${d}/ssh/other_client_key`, "someone-else"),
    ]);
    this.#hostPublicKey = hostPub.split(" ").slice(0, 2).join(" ");
    await this.#writeAuthorizedKeys();
    await this.#writeSshdConfig();
    const script = `${d}/init.sh`;
    await Deno.writeTextFile(script, BUILDER_INIT);
    await this.#holder.start({
      userns: this.#nsUser,
      script,
      args: [d],
      log: `${d}/holder.log`,
      timeoutMs: 15_000,
    });
    await this.#lab.recordHolder(this.#holder.outerPid);
    if (this.emulates && this.#nsUser) await this.registerBinfmt("qemu-aarch64");
    for (let attempt = 1;; attempt++) {
      try {
        await this.#startSshd();
        break;
      } catch (error) {
        // Another program took the free port between freePort() and sshd's bind: pick again.
        if (attempt >= 3 || !/Address already in use|Bind to port/.test(String(error))) throw error;
        this.#port = freePort();
        await this.#writeSshdConfig();
      }
    }
  }

  /** @internal */
  async stop(): Promise<void> {
    this.#sshd?.signal("SIGCONT");
    await this.#stopDaemon();
    await this.#sshd?.stop();
    await this.#holder.stop();
  }

  #nsPrefix(cwd = "/"): string[] {
    return [
      "nsenter",
      "-t",
      String(this.#holder.pid),
      ...(this.#nsUser ? ["-U"] : []),
      "-m",
      "-p",
      `--wd=${cwd}`,
      "--",
    ];
  }

  async #startSshd(): Promise<void> {
    this.#sshd = new SshdProcess({
      argv: [...this.#nsPrefix(), SSHD_PATH, "-D", "-e", "-f", `${this.dir}/ssh/sshd_config`],
      logFile: `${this.dir}/sshd.log`,
      port: this.port,
    });
    await this.#sshd.start(10_000);
  }

  async #writeSshdConfig(): Promise<void> {
    const d = `${this.dir}/ssh`;
    const hostKey = this.#faults.has("wrong-host-key")
      ? `${d}/ssh_host_ed25519_key_other`
      : `${d}/ssh_host_ed25519_key`;
    await Deno.writeTextFile(
      `${d}/sshd_config`,
      sshdConfig({
        port: this.port,
        hostKey,
        authorizedKeysFile: `${d}/authorized_keys`,
        ...(this.#faults.has("nix-not-on-path") ? { setEnv: { PATH: NO_NIX_PATH } } : {}),
      }),
    );
  }

  async #writeAuthorizedKeys(): Promise<void> {
    const key = this.#faults.has("key-refused")
      ? (await Deno.readTextFile(`${this.dir}/ssh/other_client_key.pub`)).trim()
      : this.#clientPub;
    await Deno.writeTextFile(`${this.dir}/ssh/authorized_keys`, `${key}\n`, { mode: 0o644 });
    await Deno.chmod(`${this.dir}/ssh/authorized_keys`, 0o644);
  }

  async #writeNixConf(): Promise<void> {
    await Deno.writeTextFile(this.nixConfFile, renderNixConf(this.#nixConf));
  }

  async #writeUsers(): Promise<void> {
    const uid = this.#remoteUid;
    const add = async (file: string, line: string, mode: number) => {
      let text = await Deno.readTextFile(`/etc/${file}`);
      if (!text.endsWith("\n")) text += "\n";
      await Deno.writeTextFile(`${this.dir}/etc/${file}`, text + line + "\n", { mode });
      await Deno.chmod(`${this.dir}/etc/${file}`, mode);
    };
    await add(
      "passwd",
      `${REMOTE_USER}:x:${uid}:${uid}:Nix remote builds:${this.dir}/remote-home:/bin/sh`,
      0o644,
    );
    await add("group", `${REMOTE_USER}:x:${uid}:`, 0o644);
    await add("shadow", `${REMOTE_USER}:*:19000:0:99999:7:::`, 0o640);
  }

  async #startDaemon(): Promise<void> {
    if (this.#daemon) return;
    const socket = `${this.dir}/nix/var/nix/daemon-socket/socket`;
    await Deno.remove(socket).catch(() => {});
    const child = new Deno.Command("nsenter", {
      args: [...this.#nsPrefix().slice(1), "nix-daemon"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#daemon = child;
    const output = { text: "" };
    const pump = pumpTo(`${this.dir}/nix-daemon.log`, [child.stderr], output);
    this.#daemonPump = pump;
    const deadline = Date.now() + 10_000;
    while (!exists(socket)) {
      if (Date.now() > deadline) {
        await this.#stopDaemon();
        throw new LabError(`Cannot start nix-daemon on ${this.name}: ${output.text.trim()}`);
      }
      await sleep(20);
    }
  }

  async #stopDaemon(): Promise<void> {
    const child = this.#daemon;
    if (!child) return;
    this.#daemon = undefined;
    killTree(child.pid, "SIGTERM");
    const timer = setTimeout(() => killTree(child.pid, "SIGKILL"), 3000);
    await child.status;
    clearTimeout(timer);
    await this.#daemonPump;
  }
}

/** The controller host. */
export class Controller {
  /** `/tmp/nbr-lab/<id>/controller`: `nix/`, `etc-nix/`, `ssh/`, the overlay dirs. */
  readonly dir: string;
  #lab: Lab;
  #holder = new Holder();
  #nixConf: Record<string, string> = { ...DEFAULT_CONTROLLER_NIX_CONF };
  #machines: string | null = null;

  /** @internal Use {@link startLab}. */
  constructor(lab: Lab, dir: string) {
    this.#lab = lab;
    this.dir = dir;
  }

  /** Host pid of the controller namespace's init. */
  get pid(): number {
    return this.#holder.pid;
  }

  /** The `nsenter` prefix that runs a command inside the controller (cwd: `/`). */
  get nsenter(): readonly string[] {
    return this.#nsPrefix("/");
  }

  /** The controller's ssh config (its `/root/.ssh/config`), usable from outside with `ssh -F`. */
  get sshConfigFile(): string {
    return `${this.dir}/ssh/config`;
  }

  /** The controller's known_hosts. */
  get knownHostsFile(): string {
    return `${this.dir}/ssh/known_hosts`;
  }

  /** The controller's `/etc/nix` directory as seen from outside. */
  get confDir(): string {
    return `${this.dir}/etc-nix`;
  }

  /** The controller's machines file as seen from outside (inside: `/etc/nix/machines`). */
  get machinesFile(): string {
    return `${this.confDir}/machines`;
  }

  /** Its current nix.conf settings. */
  get nixConf(): Readonly<Record<string, string>> {
    return { ...this.#nixConf };
  }

  /**
   * Runs a command inside the controller namespace (its `/nix`, `/etc/nix`, `/root/.ssh`).
   * `NIX_*` variables of this process are not passed on; `options.env` is.
   */
  exec(argv: readonly string[], options: ExecOptions = {}): Promise<LabRunResult> {
    return run([...this.#nsPrefix(options.cwd ?? Deno.cwd()), ...argv], execRunOptions(options));
  }

  /**
   * `nix build --impure --no-link --json -L --expr <expression>` in the controller; parses the
   * output and derivation paths on success.
   */
  async nixBuild(
    expression: string,
    options: ExecOptions & { args?: readonly string[] } = {},
  ): Promise<NixBuildResult> {
    const result = await this.exec(
      [
        "nix",
        "build",
        "--impure",
        "--no-link",
        "--json",
        "-L",
        ...(options.args ?? []),
        "--expr",
        expression,
      ],
      { timeoutMs: 120_000, ...options },
    );
    if (result.code !== 0) return result;
    try {
      const parsed = JSON.parse(result.stdout) as {
        drvPath?: string;
        outputs?: Record<string, string>;
      }[];
      const first = parsed[0];
      const out = first?.outputs?.["out"];
      return {
        ...result,
        ...(out ? { outPath: out } : {}),
        ...(first?.drvPath ? { drvPath: first.drvPath } : {}),
      };
    } catch {
      return result;
    }
  }

  /** Merges settings into the controller's nix.conf (`null` removes one); `replace` starts over. */
  async setNixConf(settings: NixConfSettings, options: { replace?: boolean } = {}): Promise<void> {
    if (options.replace) this.#nixConf = { ...DEFAULT_CONTROLLER_NIX_CONF };
    applySettings(this.#nixConf, settings);
    await Deno.writeTextFile(`${this.confDir}/nix.conf`, renderNixConf(this.#nixConf));
  }

  /**
   * Writes the machines file verbatim (a string, or lines); `null` goes back to one line per
   * builder from {@link Builder.machineLine}.
   */
  async setMachines(machines: string | readonly string[] | null): Promise<void> {
    this.#machines = machines === null
      ? null
      : typeof machines === "string"
      ? machines
      : machines.join("\n") + "\n";
    await this.useBuilders();
  }

  /** @internal Rewrites the machines file from the builders (unless set verbatim). */
  async useBuilders(): Promise<void> {
    const text = this.#machines ??
      this.#lab.builders.map((b) => b.machineLine()).join("\n") + "\n";
    await Deno.writeTextFile(this.machinesFile, text);
  }

  /** @internal */
  async start(nixConf: NixConfSettings): Promise<void> {
    const d = this.dir;
    for (
      const sub of [
        "nix/store",
        "nix/var/nix",
        "etc-nix",
        "root-upper",
        "root-work",
        "user-nix-conf",
      ]
    ) {
      await Deno.mkdir(`${d}/${sub}`, { recursive: true, mode: 0o755 });
    }
    await Deno.mkdir(`${d}/ssh`, { recursive: true, mode: 0o700 });
    await this.setNixConf(nixConf);
    await Deno.writeTextFile(this.machinesFile, "");
    const script = `${d}/init.sh`;
    await Deno.writeTextFile(script, CONTROLLER_INIT);
    await this.#holder.start({
      userns: false,
      script,
      args: [d],
      log: `${d}/holder.log`,
      timeoutMs: 15_000,
    });
    await this.#lab.recordHolder(this.#holder.outerPid);
  }

  /** @internal */
  async stop(): Promise<void> {
    await this.#holder.stop();
  }

  #nsPrefix(cwd: string): string[] {
    return ["nsenter", "-t", String(this.#holder.pid), "-m", "-p", `--wd=${cwd}`, "--"];
  }
}

function execRunOptions(options: ExecOptions): LabRunOptions {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("NIX_")) env[k] = v;
  }
  Object.assign(env, options.env ?? {});
  return {
    timeoutMs: options.timeoutMs ?? 60_000,
    env,
    clearEnv: true,
    ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
  };
}

function applySettings(target: Record<string, string>, settings: NixConfSettings): void {
  for (const [name, value] of Object.entries(settings)) {
    if (!/^[A-Za-z0-9_-]+$/.test(name)) {
      throw new LabError(`Cannot set nix.conf setting '${name}': not a setting name`);
    }
    if (value === null) {
      delete target[name];
      continue;
    }
    const text = typeof value === "string"
      ? value
      : typeof value === "number" || typeof value === "boolean"
      ? String(value)
      : value.join(" ");
    if (/[\n#]/.test(text)) {
      throw new LabError(
        `Cannot set nix.conf setting '${name}': value '${text}' has '#' or a newline`,
      );
    }
    target[name] = text;
  }
}

/** Renders settings as nix.conf text, one `name = value` line each, in insertion order. */
export function renderNixConf(settings: Readonly<Record<string, string>>): string {
  return "# written by the nix-builder-runbook lab\n" +
    Object.entries(settings).map(([k, v]) => (v === "" ? `${k} =` : `${k} = ${v}`)).join("\n") +
    "\n";
}

async function binfmtLine(name: string): Promise<string> {
  const text = await Deno.readTextFile(BINFMT_CONF);
  const line = text.split("\n").map((l) => l.trim()).find((l) =>
    l !== "" && !l.startsWith("#") && !l.startsWith(";")
  );
  if (!line) throw new LabError(`Cannot read a registration line from ${BINFMT_CONF}`);
  const delimiter = line[0] as string;
  const fields = line.slice(1).split(delimiter);
  fields[0] = name;
  return delimiter + fields.join(delimiter);
}

function pickFreeId(): number {
  const used = new Set<number>();
  for (const file of ["/etc/passwd", "/etc/group"]) {
    for (const line of Deno.readTextFileSync(file).split("\n")) {
      const id = Number(line.split(":")[2]);
      if (Number.isInteger(id)) used.add(id);
    }
  }
  let id = 30_900;
  while (used.has(id)) id++;
  return id;
}

function which(program: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    if (dir !== "" && exists(`${dir}/${program}`)) return `${dir}/${program}`;
  }
  for (const dir of ["/usr/sbin", "/sbin"]) {
    if (exists(`${dir}/${program}`)) return `${dir}/${program}`;
  }
  return null;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
