/**
 * A throw-away OpenSSH server on 127.0.0.1 for tests: Debian's real `/usr/sbin/sshd`, generated
 * host and client keys, a known_hosts entry and an ssh_config with a `Host` alias.
 *
 * Needs root (sshd refuses to run otherwise) and `openssh-server`. The lab's builders use the same
 * function with `commandPrefix` to run the server inside their own mount namespace.
 *
 * @example Run a command over ssh, then stop the server
 * ```ts ignore
 * import { startSshd } from "./sshd.ts";
 * import assert from "node:assert/strict";
 *
 * await using sshd = await startSshd();
 * const out = await new Deno.Command("ssh", {
 *   args: [...sshd.sshOptions, sshd.host, "--", "echo", "it's here"],
 * }).output();
 * assert.equal(new TextDecoder().decode(out.stdout), "it's here\n");
 * ```
 *
 * @module
 */

import { freePort, isAlive, killTree, LabError, runOk, sleep, waitForPort } from "./_run.ts";

/** Where Debian's OpenSSH server lives. sshd must be started with its absolute path. */
export const SSHD_PATH = "/usr/sbin/sshd";

/** Options for {@link startSshd}. */
export interface StartSshdOptions {
  /** Directory for keys, config and log; a new temp dir (removed on stop) when absent. */
  dir?: string;
  /** Port on 127.0.0.1; a free one is picked when absent. */
  port?: number;
  /** The `Host` alias written to {@link Sshd.configFile} (default `lab-sshd`). */
  hostAlias?: string;
  /**
   * An existing client private key to authorise (its `.pub` must sit next to it); a new ed25519
   * key is generated in `dir` when absent.
   */
  identityFile?: string;
  /** Environment variables sshd sets for every session (`SetEnv`), e.g. `{ PATH: "/usr/sbin" }`. */
  setEnv?: Record<string, string>;
  /** Extra `sshd_config` lines, appended as given. */
  extraConfig?: readonly string[];
  /**
   * ssh client `ConnectTimeout` in seconds put into `sshOptions` and the config (default 10);
   * 0 leaves it out (ssh then waits for a hung server forever, as it does by default).
   */
  connectTimeoutSeconds?: number;
  /**
   * Runs sshd through this prefix, e.g. `["nsenter", "-t", pid, "-m", "-p", "--"]` to start it in
   * another namespace. The server's own pid is found among the prefix's descendants.
   */
  commandPrefix?: readonly string[];
  /** Time-out for start-up in milliseconds (default 10 000). */
  timeoutMs?: number;
}

/** A running sshd. Stop it with {@link Sshd.stop} or `await using`. */
export interface Sshd extends AsyncDisposable {
  /** Always `127.0.0.1`. */
  readonly host: "127.0.0.1";
  /** The port it listens on. */
  readonly port: number;
  /** Always `root`. */
  readonly user: "root";
  /** The `Host` alias in {@link Sshd.configFile}. */
  readonly hostAlias: string;
  /** The client private key that the server accepts. */
  readonly identityFile: string;
  /** A known_hosts file holding the server's host key for `[127.0.0.1]:<port>`. */
  readonly knownHostsFile: string;
  /**
   * ssh client arguments that reach this server with no other config:
   * `-F /dev/null -p <port> -i <key> -l root -o IdentitiesOnly=yes -o UserKnownHostsFile=<file>
   * -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=<n>`. Append the host.
   * ssh keeps the first value it sees for an option, so `-o` options placed before these win.
   */
  readonly sshOptions: readonly string[];
  /** An ssh_config file with a `Host <hostAlias>` block; use as `ssh -F <file> <alias>`. */
  readonly configFile: string;
  /** The server's `sshd_config`. */
  readonly sshdConfigFile: string;
  /** The server's host public key line (`ssh-ed25519 AAAA...`). */
  readonly hostPublicKey: string;
  /** Where the server's log (`sshd -e`) is written. */
  readonly logFile: string;
  /** The directory holding all of the above. */
  readonly dir: string;
  /** The pid of the listening sshd process (for SIGSTOP/SIGCONT); 0 once stopped. */
  readonly pid: number;
  /** Whether the server is running. */
  readonly running: boolean;
  /** Stops the server (SIGCONT, SIGTERM, then SIGKILL after 2 s); removes `dir` if it made it. */
  stop(): Promise<void>;
}

/** Generates an ed25519 key pair at `path` and `path.pub` with ssh-keygen. Returns the public line. */
export async function generateKey(path: string, comment = "nbr-lab"): Promise<string> {
  await runOk(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path], {
    timeoutMs: 15_000,
  });
  return (await Deno.readTextFile(`${path}.pub`)).trim();
}

/**
 * Starts sshd on 127.0.0.1 and waits until it accepts connections.
 *
 * Throws a one-line error when it cannot start (port taken, not root, sshd missing). sshd's
 * privilege-separation directory `/run/sshd` is created when missing, as Debian's service does.
 */
export async function startSshd(options: StartSshdOptions = {}): Promise<Sshd> {
  const ownsDir = options.dir === undefined;
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "nbr-sshd-" });
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 });
    const hostKey = `${dir}/ssh_host_ed25519_key`;
    const hostPublicKey = await generateKey(hostKey, "nbr-lab-host");
    let identityFile = options.identityFile;
    if (identityFile === undefined) {
      identityFile = `${dir}/id_ed25519`;
      await generateKey(identityFile, "nbr-lab-client");
    }
    const clientPublicKey = (await Deno.readTextFile(`${identityFile}.pub`)).trim();
    await Deno.writeTextFile(`${dir}/authorized_keys`, `${clientPublicKey}\n`);
    const attempts = options.port === undefined ? 3 : 1;
    let lastError: unknown;
    for (let attempt = 0; attempt < attempts; attempt++) {
      const port = options.port ?? freePort();
      try {
        return await launch({
          ...options,
          dir,
          ownsDir,
          port,
          hostKey,
          hostPublicKey,
          identityFile,
        });
      } catch (error) {
        lastError = error;
        if (
          !(error instanceof LabError) || !/Address already in use|Bind to port/.test(error.message)
        ) {
          throw error;
        }
      }
    }
    throw lastError;
  } catch (error) {
    if (ownsDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

interface LaunchOptions extends StartSshdOptions {
  dir: string;
  ownsDir: boolean;
  port: number;
  hostKey: string;
  hostPublicKey: string;
  identityFile: string;
}

async function launch(o: LaunchOptions): Promise<Sshd> {
  const hostAlias = o.hostAlias ?? "lab-sshd";
  const connectTimeout = o.connectTimeoutSeconds ?? 10;
  const sshdConfigFile = `${o.dir}/sshd_config`;
  await Deno.writeTextFile(
    sshdConfigFile,
    sshdConfig({
      port: o.port,
      hostKey: o.hostKey,
      authorizedKeysFile: `${o.dir}/authorized_keys`,
      ...(o.setEnv ? { setEnv: o.setEnv } : {}),
      ...(o.extraConfig ? { extraConfig: o.extraConfig } : {}),
    }),
  );
  const knownHostsFile = `${o.dir}/known_hosts`;
  await Deno.writeTextFile(knownHostsFile, `[127.0.0.1]:${o.port} ${o.hostPublicKey}\n`);
  const configFile = `${o.dir}/ssh_config`;
  await Deno.writeTextFile(
    configFile,
    sshConfigBlock({ ...o, hostAlias, connectTimeout, knownHostsFile }),
  );
  const sshOptions = [
    "-F",
    "/dev/null",
    "-p",
    String(o.port),
    "-i",
    o.identityFile,
    "-l",
    "root",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    `UserKnownHostsFile=${knownHostsFile}`,
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
    ...(connectTimeout > 0 ? ["-o", `ConnectTimeout=${connectTimeout}`] : []),
  ];
  const logFile = `${o.dir}/sshd.log`;
  const server = new SshdProcess({
    argv: [...(o.commandPrefix ?? []), SSHD_PATH, "-D", "-e", "-f", sshdConfigFile],
    logFile,
    port: o.port,
  });
  await server.start(o.timeoutMs ?? 10_000);
  const ownsDir = o.ownsDir;
  const dir = o.dir;
  let stopped = false;
  async function stop(): Promise<void> {
    if (stopped) return;
    stopped = true;
    await server.stop();
    if (ownsDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return {
    host: "127.0.0.1",
    port: o.port,
    user: "root",
    hostAlias,
    identityFile: o.identityFile,
    knownHostsFile,
    sshOptions,
    configFile,
    sshdConfigFile,
    hostPublicKey: o.hostPublicKey,
    logFile,
    dir,
    get pid() {
      return server.pid;
    },
    get running() {
      return server.running;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** The `sshd_config` text every lab server uses: 127.0.0.1 only, keys only, no PAM, no pid file. */
export function sshdConfig(o: {
  port: number;
  hostKey: string;
  authorizedKeysFile: string;
  setEnv?: Record<string, string>;
  extraConfig?: readonly string[];
}): string {
  return [
    `Port ${o.port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${o.hostKey}`,
    "PidFile none",
    `AuthorizedKeysFile ${o.authorizedKeysFile}`,
    "StrictModes no",
    "PermitRootLogin prohibit-password",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "PrintMotd no",
    "PrintLastLog no",
    "X11Forwarding no",
    "MaxStartups 100",
    "LogLevel INFO",
    ...Object.entries(o.setEnv ?? {}).map(([k, v]) => `SetEnv ${k}=${v}`),
    ...(o.extraConfig ?? []),
    "",
  ].join("\n");
}

/** An ssh_config `Host` block for a lab sshd. */
export function sshConfigBlock(o: {
  hostAlias: string;
  port: number;
  identityFile: string;
  knownHostsFile: string;
  connectTimeout: number;
}): string {
  return [
    `Host ${o.hostAlias}`,
    "  HostName 127.0.0.1",
    `  Port ${o.port}`,
    "  User root",
    `  IdentityFile ${o.identityFile}`,
    "  IdentitiesOnly yes",
    `  UserKnownHostsFile ${o.knownHostsFile}`,
    "  GlobalKnownHostsFile /dev/null",
    "  StrictHostKeyChecking yes",
    "  BatchMode yes",
    ...(o.connectTimeout > 0 ? [`  ConnectTimeout ${o.connectTimeout}`] : []),
    "",
  ].join("\n");
}

/**
 * One sshd process (possibly behind a namespace-entering prefix), its log pumped to a file.
 * Restartable: `start()` again after `stop()`.
 */
export class SshdProcess {
  #argv: readonly string[];
  #logFile: string;
  #port: number;
  #child: Deno.ChildProcess | undefined;
  #pid = 0;
  #exited = true;
  #log = "";
  #pump: Promise<void> | undefined;

  /** Describes the process; nothing runs until {@link SshdProcess.start}. */
  constructor(options: { argv: readonly string[]; logFile: string; port: number }) {
    this.#argv = options.argv;
    this.#logFile = options.logFile;
    this.#port = options.port;
  }

  /** Pid of the sshd listener itself (not the prefix); 0 when not running. */
  get pid(): number {
    return this.#exited ? 0 : this.#pid;
  }

  /** Whether the process is running (a SIGSTOPped server counts as running). */
  get running(): boolean {
    return !this.#exited;
  }

  /** Starts sshd and waits until it accepts TCP connections. */
  async start(timeoutMs: number): Promise<void> {
    if (!this.#exited) return;
    const [program, ...args] = this.#argv;
    if (program === undefined) throw new LabError("Cannot start sshd: empty command");
    this.#log = "";
    const child = new Deno.Command(program, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    })
      .spawn();
    this.#child = child;
    this.#exited = false;
    this.#pid = child.pid;
    child.status.then(() => {
      this.#exited = true;
    });
    this.#pump = this.#pumpLog(child.stderr);
    const ready = await waitForPort(this.#port, {
      timeoutMs,
      stillRunning: () => !this.#exited,
    });
    if (!ready) {
      await this.stop();
      const lines = this.#log.trim().split("\n").filter((l) => l !== "");
      const last = lines.slice(-2).join("; ") || "no output";
      throw new LabError(`Cannot start sshd on 127.0.0.1:${this.#port}: ${last}`);
    }
    this.#pid = findSshdPid(child.pid);
  }

  /** Sends a signal to the sshd listener (e.g. SIGSTOP to make it hang). */
  signal(signal: Deno.Signal): void {
    if (this.#exited || this.#pid === 0) return;
    try {
      Deno.kill(this.#pid, signal);
    } catch {
      // gone meanwhile
    }
  }

  /** Stops sshd: SIGCONT + SIGTERM, then SIGKILL of the whole tree after 2 s. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    if (!this.#exited) {
      this.signal("SIGCONT");
      this.signal("SIGTERM");
      const deadline = Date.now() + 2000;
      while (!this.#exited && Date.now() < deadline) await sleep(20);
      if (!this.#exited) killTree(child.pid, "SIGKILL");
      if (isAlive(this.#pid)) killTree(this.#pid, "SIGKILL");
      await child.status;
    }
    await this.#pump;
    this.#child = undefined;
    this.#pid = 0;
  }

  async #pumpLog(stream: ReadableStream<Uint8Array>): Promise<void> {
    const file = await Deno.open(this.#logFile, { append: true, create: true });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) {
        await file.write(chunk);
        this.#log = (this.#log + decoder.decode(chunk, { stream: true })).slice(-4000);
      }
    } catch {
      // stream closed
    } finally {
      file.close();
    }
  }
}

/** The sshd process at or below `pid` (a prefix such as nsenter forks it). */
function findSshdPid(pid: number): number {
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift() as number;
    try {
      const comm = Deno.readTextFileSync(`/proc/${p}/comm`).trim();
      if (comm === "sshd") return p;
      const children = Deno.readTextFileSync(`/proc/${p}/task/${p}/children`).trim();
      for (const c of children.split(/\s+/)) if (c !== "") queue.push(Number(c));
    } catch {
      // gone
    }
  }
  return pid;
}
