/**
 * Test support for show_config, nix_conf and machines: a target that runs real programs with a
 * chosen environment, and the real Nix 2.8 as an oracle (what does Nix itself make of a machines
 * text or a nix.conf). Exported helpers are used by the other test files; the tests here check the
 * helpers themselves.
 *
 * @module
 */

import assert from "node:assert/strict";
import { LocalTarget } from "../lib/local_target.ts";
import type { Machine } from "../lib/machines.ts";
import type {
  DirEntry,
  FileInfo,
  RunOptions,
  RunResult,
  StreamedRun,
  Target,
} from "../lib/target.ts";

/** Whether a program is on PATH. */
export function onPath(program: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      Deno.statSync(`${dir}/${program}`);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

/** Whether the real Nix 2.8 of Debian's nix-bin is here to act as the oracle. */
export const HAVE_NIX = onPath("nix") && onPath("nix-build");

/**
 * This machine, but every command runs under `env -i` with the given variables (plus PATH), like a
 * process started with that environment: how the tests point a real Nix at a temp NIX_CONF_DIR.
 */
export class EnvTarget implements Target {
  readonly kind = "local" as const;
  readonly host = "localhost";
  #inner = new LocalTarget({ timeoutMs: 30_000 });
  #env: Record<string, string>;

  constructor(env: Record<string, string>) {
    this.#env = { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", ...env };
  }

  #wrap(argv: readonly string[]): string[] {
    return ["env", "-i", ...Object.entries(this.#env).map(([k, v]) => `${k}=${v}`), ...argv];
  }

  run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    return this.#inner.run(this.#wrap(argv), options);
  }

  stream(argv: readonly string[], options?: RunOptions): StreamedRun {
    return this.#inner.stream(this.#wrap(argv), options);
  }

  readFile(path: string): Promise<string | null> {
    return this.#inner.readFile(path);
  }

  readDir(path: string): Promise<DirEntry[] | null> {
    return this.#inner.readDir(path);
  }

  stat(path: string): Promise<FileInfo | null> {
    return this.#inner.stat(path);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

/** A fresh temp directory, removed by the returned disposer. */
export async function tempDir(prefix = "nbr-sc-"): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix });
  return {
    dir,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** What the real Nix made of a `builders` value. */
export interface NixVerdict {
  /** The first `error:` line without the prefix, when Nix rejected the machines. */
  error: string | null;
  /** Nix's machine table rows `(systems, maxjobs, supportedFeatures, mandatoryFeatures)`. */
  table: string[];
  /** All of stderr. */
  stderr: string;
}

const PROBE = 'derivation{name="probe";system="riscv64-none";builder="/bin/sh";args=[];}';

/**
 * Runs the real `nix-build` with `--max-jobs 0 --builders <builders>` on a derivation for a system
 * no machine has, into a throw-away chroot store: the build hook parses the machines and, when it
 * accepts them, prints its table of machines. Nothing is built or contacted.
 */
export async function nixBuildersVerdict(builders: string, workDir: string): Promise<NixVerdict> {
  await Deno.mkdir(`${workDir}/conf`, { recursive: true });
  await Deno.writeTextFile(
    `${workDir}/conf/nix.conf`,
    "substituters =\nbuild-users-group =\nsandbox = false\n",
  );
  const out = await new Deno.Command("nix-build", {
    args: [
      "--store",
      `${workDir}/store`,
      "--no-out-link",
      "-E",
      PROBE,
      "--max-jobs",
      "0",
      "--builders",
      builders,
    ],
    env: { NIX_CONF_DIR: `${workDir}/conf`, NIX_USER_CONF_FILES: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  const lines = stderr.split("\n");
  const table: string[] = [];
  const header = lines.indexOf("(systems, maxjobs, supportedFeatures, mandatoryFeatures)");
  if (header >= 0) {
    for (const line of lines.slice(header + 1)) {
      if (!line.startsWith("(")) break;
      table.push(line);
    }
  }
  const errorLine = lines.find((l) => l.startsWith("error: "));
  const benign = errorLine?.startsWith("error: unable to start any build") ?? false;
  return { error: errorLine && !benign ? errorLine.slice(7) : null, table, stderr };
}

/** A machine as Nix 2.8's build hook lists it in its table. */
export function tableRow(m: Machine, localSystem: string): string {
  const systems = m.systemsDefaulted ? [localSystem] : m.systems;
  return `(${systems.join(", ")}, ${m.maxJobs}, ${m.supportedFeatures.join(", ")}, ${
    m.mandatoryFeatures.join(", ")
  })`;
}

/** Runs the real `nix show-config --json` with only the given environment. */
export async function nixShowConfig(
  env: Record<string, string>,
): Promise<{ code: number; settings: Record<string, { value: unknown }> | null; stderr: string }> {
  const out = await new Deno.Command("nix", {
    args: ["--extra-experimental-features", "nix-command", "show-config", "--json"],
    env: { PATH: Deno.env.get("PATH") ?? "", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  return {
    code: out.code,
    settings: out.code === 0 ? JSON.parse(stdout) : null,
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** This machine's Nix system name, as Nix 2.8 reports it. */
export const LOCAL_SYSTEM = `${Deno.build.arch}-${Deno.build.os}`;

Deno.test({
  name: "EnvTarget runs commands with exactly the given environment",
  async fn() {
    const target = new EnvTarget({ NIX_CONF_DIR: "/tmp/x y" });
    const result = await target.run(["sh", "-c", 'printf "%s|%s" "$NIX_CONF_DIR" "${HOME-unset}"']);
    assert.equal(result.stdout, "/tmp/x y|unset");
  },
});

Deno.test({
  name: "nixBuildersVerdict() reports the real Nix's machine table and its errors",
  ignore: !HAVE_NIX,
  async fn() {
    await using tmp = await tempDir();
    const ok = await nixBuildersVerdict("a x86_64-linux - 2 1 kvm", tmp.dir);
    assert.deepEqual(ok.table, ["(x86_64-linux, 2, kvm, )"]);
    assert.equal(ok.error, null);
    const bad = await nixBuildersVerdict("a x86_64-linux - two", tmp.dir);
    assert.match(bad.error ?? "", /failed to convert column #3/);
  },
});
