/**
 * scripts/oom_mitigate.ts end to end on this machine: real nix.conf edits in a temporary
 * NIX_CONF_DIR, real zram swap (as root, under the machine-wide "zram" lock), runs killed at random
 * points, devices that are not ours, a kernel without zram, the lock, and a lab builder over ssh.
 */
import assert from "node:assert/strict";
import {
  applyFileRecord,
  localFileOps,
  sha256Hex,
  StateStore,
  targetFileOps,
} from "../lib/atomic_file.ts";
import type { Finding, Report } from "../lib/findings.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { applyZram, OOM_TOOL, revertMitigations } from "../lib/oom_mitigate.ts";
import { collectOomEvidence } from "../lib/oom.ts";
import { RecordingTarget, writeSnapshot } from "../lib/recording_target.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import { readSwapLabel, readZramState, removeZram } from "../lib/zram.ts";
import { withGlobalLock } from "./lab/lock.ts";
import {
  kernelHasNamespacedBinfmt,
  LAB_TEST_PREFIX,
  labPrerequisites,
  labTest,
  startLab,
} from "./lab/lab.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `${ROOT}scripts/oom_mitigate.ts`;
const FIXTURES = `${ROOT}tests/fixtures/`;
const isRoot = Deno.uid() === 0;
const hasZram = (() => {
  try {
    Deno.statSync("/sys/class/zram-control");
    return true;
  } catch {
    return false;
  }
})();
const dec = new TextDecoder();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  report?: Report;
}

/** Runs the script (JSON output) with a clean Nix environment pointing at `confDir`. */
async function run(
  args: string[],
  options: { confDir?: string; env?: Record<string, string>; stdin?: string } = {},
): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, "--json", ...args],
    cwd: ROOT,
    env: {
      NO_COLOR: "1",
      NIX_USER_CONF_FILES: "",
      ...(options.confDir ? { NIX_CONF_DIR: options.confDir } : {}),
      ...options.env,
    },
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const result: Run = {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
  if (result.stdout.startsWith("{")) result.report = JSON.parse(result.stdout);
  return result;
}

const find = (r: Run, id: string): Finding | undefined =>
  r.report?.findings.find((f) => f.id === id);
const ids = (r: Run) => r.report?.findings.map((f) => f.id) ?? [];

async function confDir(content: string, mode = 0o644): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-nixconf-" });
  await Deno.writeTextFile(`${dir}/nix.conf`, content);
  await Deno.chmod(`${dir}/nix.conf`, mode);
  return dir;
}

const ORIGINAL =
  "# Debian's default\nsandbox = false\nmax-jobs = 8 # many\nsubstituters = https://cache.nixos.org";

// ---------------------------------------------------------------- serialize (nix.conf)

Deno.test({
  name:
    "serialize --persist --apply edits nix.conf minimally, again is a no-op, --revert twice restores it byte for byte",
  ignore: !isRoot,
  async fn() {
    const dir = await confDir(ORIGINAL, 0o640);
    const state = `${dir}/state`;
    try {
      const first = await run([
        "--mitigate",
        "serialize",
        "--persist",
        "--apply",
        "--state-dir",
        state,
      ], { confDir: dir });
      assert.equal(first.code, 0, first.stderr);
      const applied = find(first, "oom/serialize")!;
      assert.equal(
        applied.summary,
        `${dir}/nix.conf: max-jobs 8 -> 1 (line 3), cores = 2 appended (line 6)`,
      );
      assert.ok(!ids(first).includes("oom/nix-conf-managed"));
      assert.ok(!ids(first).includes("oom/nix-conf-overridden"));
      assert.ok(!ids(first).includes("oom/repaired"));
      const edited = await Deno.readTextFile(`${dir}/nix.conf`);
      assert.equal(
        edited,
        "# Debian's default\nsandbox = false\nmax-jobs = 1 # many\nsubstituters = https://cache.nixos.org\n" +
          "# Added by nix-builder-runbook oom_mitigate (undo: oom_mitigate.ts --revert)\ncores = 2\n",
      );
      assert.equal((await Deno.stat(`${dir}/nix.conf`)).mode! & 0o777, 0o640);
      // Nix itself reads the new values.
      const nix = await new Deno.Command("nix", {
        args: ["--extra-experimental-features", "nix-command", "show-config"],
        env: { NIX_CONF_DIR: dir, NIX_USER_CONF_FILES: "" },
        stdout: "piped",
      }).output();
      assert.match(dec.decode(nix.stdout), /^cores = 2$/m);
      assert.match(dec.decode(nix.stdout), /^max-jobs = 1$/m);

      const second = await run([
        "--mitigate",
        "serialize",
        "--persist",
        "--apply",
        "--state-dir",
        state,
      ], { confDir: dir });
      assert.equal(second.code, 0);
      assert.deepEqual(
        (find(second, "oom/serialize")!.data as { action: string }).action,
        "unchanged",
      );
      assert.equal(await Deno.readTextFile(`${dir}/nix.conf`), edited);

      const revert = await run(["--revert", "--state-dir", state], { confDir: dir });
      assert.equal(revert.code, 0);
      assert.deepEqual(ids(revert), ["oom/reverted"], "no conflict, nothing to repair");
      assert.match(
        find(revert, "oom/reverted")!.detail!,
        new RegExp(`^${dir}/nix.conf: restored from `),
      );
      assert.equal(await Deno.readTextFile(`${dir}/nix.conf`), ORIGINAL);
      assert.equal((await Deno.stat(`${dir}/nix.conf`)).mode! & 0o777, 0o640);
      const again = await run(["--revert", "--state-dir", state], { confDir: dir });
      assert.equal(again.code, 0);
      assert.deepEqual(ids(again), ["oom/nothing-to-revert"]);
      assert.equal(await Deno.readTextFile(`${dir}/nix.conf`), ORIGINAL);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("serialize --persist without --apply shows the edit and the command, and changes nothing", async () => {
  const dir = await confDir(ORIGINAL);
  try {
    const r = await run(
      [
        "--mitigate",
        "serialize",
        "--persist",
        "--kernel-log",
        "/dev/null",
        "--state-dir",
        `${dir}/state`,
      ],
      { confDir: dir },
    );
    const plan = find(r, "oom/serialize")!;
    assert.equal(plan.summary, "serialize: max-jobs 1, cores 2 (dry run)");
    assert.match(plan.detail!, /nix build --option max-jobs 1 --option cores 2 <installable>/);
    assert.match(
      plan.detail!,
      /--apply would edit .*nix\.conf: line 3: max-jobs 8 -> 1, append 'cores = 2'/,
    );
    assert.equal(await Deno.readTextFile(`${dir}/nix.conf`), ORIGINAL);
    assert.equal(
      await Deno.stat(`${dir}/state`).catch(() => null),
      null,
      "a dry run creates no state",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "serialize --persist --apply refuses a nix.conf that is a symlink and prints the nix.settings snippet",
  ignore: !isRoot,
  async fn() {
    const dir = await confDir(ORIGINAL);
    try {
      await Deno.rename(`${dir}/nix.conf`, `${dir}/managed.conf`);
      await Deno.symlink(`${dir}/managed.conf`, `${dir}/nix.conf`);
      const r = await run([
        "--mitigate",
        "serialize",
        "--persist",
        "--apply",
        "--state-dir",
        `${dir}/state`,
      ], {
        confDir: dir,
      });
      assert.equal(r.code, 1);
      const f = find(r, "oom/nix-conf-managed")!;
      assert.equal(
        f.summary,
        `not editing ${dir}/nix.conf: ${dir}/nix.conf is a symlink -> ${dir}/managed.conf`,
      );
      assert.match(f.detail!, /nix\.settings = \{ max-jobs = 1; cores = 2; \};$/);
      assert.equal(await Deno.readTextFile(`${dir}/managed.conf`), ORIGINAL);
      assert.equal((await Deno.lstat(`${dir}/nix.conf`)).isSymlink, true);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "serialize --persist --apply warns when NIX_CONFIG overrides cores for this account",
  ignore: !isRoot,
  async fn() {
    const dir = await confDir("sandbox = false\n");
    try {
      const r = await run([
        "--mitigate",
        "serialize",
        "--persist",
        "--apply",
        "--state-dir",
        `${dir}/state`,
      ], {
        confDir: dir,
        env: { NIX_CONFIG: "cores = 8" },
      });
      assert.equal(r.code, 1);
      assert.equal(
        find(r, "oom/nix-conf-overridden")?.summary,
        `cores = 2 is in ${dir}/nix.conf, but the NIX_CONFIG variable sets cores = 8 for builds started from this account`,
      );
      const plain = await run(["--revert", "--state-dir", `${dir}/state`], { confDir: dir });
      assert.equal(plain.code, 0);
      assert.equal(await Deno.readTextFile(`${dir}/nix.conf`), "sandbox = false\n");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "--revert leaves a nix.conf someone changed since the apply and says where the backup is",
  ignore: !isRoot,
  async fn() {
    const dir = await confDir(ORIGINAL);
    try {
      const state = `${dir}/state`;
      assert.equal(
        (await run(["--mitigate", "serialize", "--persist", "--apply", "--state-dir", state], {
          confDir: dir,
        })).code,
        0,
      );
      await Deno.writeTextFile(`${dir}/nix.conf`, "max-jobs = 3\n");
      const r = await run(["--revert", "--state-dir", state], { confDir: dir });
      assert.equal(r.code, 1);
      const f = find(r, "oom/revert-conflict")!;
      assert.equal(f.summary, `${dir}/nix.conf changed since oom_mitigate edited it: not restored`);
      assert.match(
        f.fix!,
        new RegExp(
          `^compare, then restore by hand: diff ${state}/backups/.*/nix\\.conf ${dir}/nix\\.conf$`,
        ),
      );
      assert.equal(await Deno.readTextFile(`${dir}/nix.conf`), "max-jobs = 3\n");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "a nix.conf edit interrupted after the replace is settled by the next --revert (oom/repaired)",
  ignore: !isRoot,
  async fn() {
    const dir = await confDir(ORIGINAL);
    const state = `${dir}/state`;
    try {
      const store = await StateStore.open(localFileOps(), state);
      // The run dies right after the atomic replace, before its record says "applied".
      await assert.rejects(
        store.withLock(() =>
          applyFileRecord(store, {
            tool: OOM_TOOL,
            path: `${dir}/nix.conf`,
            content: "max-jobs = 1\n",
            onStep: (step) => {
              if (step === "replace") throw new Error("killed");
            },
          })
        ),
        /killed/,
      );
      const diag = await run(["--kernel-log", "/dev/null", "--state-dir", state], { confDir: dir });
      assert.match(
        find(diag, "oom/incomplete-change")!.summary,
        new RegExp(`a run was killed while editing ${dir}/nix\\.conf$`),
      );
      const revert = await run(["--revert", "--state-dir", state], { confDir: dir });
      assert.equal(revert.code, 0, revert.stdout);
      assert.deepEqual(ids(revert), ["oom/repaired", "oom/reverted"]);
      assert.equal(
        find(revert, "oom/repaired")!.detail,
        `${dir}/nix.conf: the interrupted edit had landed`,
      );
      assert.equal(await Deno.readTextFile(`${dir}/nix.conf`), ORIGINAL);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ---------------------------------------------------------------- diagnosis through the CLI

Deno.test("--kernel-log reads the real 6.18 kill and exits CRITICAL (2)", async () => {
  const r = await run([
    "--kernel-log",
    `${FIXTURES}oom-kernel/linux-6.18-memcg-nix-build.dmesg-iso.txt`,
  ]);
  assert.equal(r.code, 2);
  assert.equal(find(r, "oom/build-killed")?.status, "critical");
});

Deno.test("--build-log - reads Nix's output from stdin", async () => {
  const r = await run(["--build-log", "-", "--kernel-log", "/dev/null"], {
    stdin: await Deno.readTextFile(`${FIXTURES}oom-kernel/nix-2.8-build-signal9.stderr.txt`),
  });
  assert.equal(r.code, 2);
  assert.match(
    find(r, "oom/build-log-killed")!.summary,
    /^standard input: 1 build failed due to signal 9/,
  );
});

Deno.test("usage errors exit 3 with one line and no stack", async () => {
  const cases: [string[], RegExp][] = [
    [["--apply"], /^oom_mitigate: --apply needs --mitigate serialize, zram or persistent\n$/],
    [
      ["--mitigate", "zram", "--apply", "--revert"],
      /^oom_mitigate: --apply and --revert cannot go together\n$/,
    ],
    [["--persist"], /^oom_mitigate: --persist goes with --mitigate serialize\n$/],
    [
      ["--mitigate", "zram", "--apply", "--snapshot", "/tmp"],
      /^oom_mitigate: --apply and --revert need a live machine, not --snapshot\n$/,
    ],
    [
      ["--mitigate", "swap"],
      /^oom_mitigate: option '--mitigate <name>' argument 'swap' is invalid\. Allowed choices are serialize, zram, persistent\.\n$/,
    ],
    [
      ["--kernel-log", "-", "--build-log", "-"],
      /^oom_mitigate: --build-log -: standard input is already read for --kernel-log\n$/,
    ],
    [
      ["--kernel-log", "/nonexistent/kern.log"],
      /^oom_mitigate: --kernel-log '\/nonexistent\/kern\.log': no such file\n$/,
    ],
    [
      ["--memory-percent", "0"],
      /^oom_mitigate: option '--memory-percent <n>' argument '0' is invalid\. '0' is not between 1 and 200\.\n$/,
    ],
  ];
  for (const [args, stderr] of cases) {
    const r = await run(args, { stdin: "" });
    assert.equal(r.code, 3, args.join(" "));
    assert.match(r.stderr, stderr, args.join(" "));
    assert.equal(r.stdout, "");
  }
});

Deno.test("persistent prints the NixOS snippet and the machines line with fewer jobs, and changes nothing", async () => {
  const machines = await Deno.makeTempFile({ suffix: ".machines" });
  try {
    await Deno.writeTextFile(machines, "nixos x86_64-linux / - 8 1 kvm,big-parallel\n");
    const r = await run([
      "--mitigate",
      "persistent",
      "--machines",
      machines,
      "--kernel-log",
      "/dev/null",
      "--max-jobs",
      "2",
    ]);
    const f = find(r, "oom/persistent")!;
    assert.equal(
      f.detail,
      [
        "# on the builder, in configuration.nix (NixOS), then nixos-rebuild switch:",
        "zramSwap = { enable = true; memoryPercent = 50; };",
        "nix.settings = { max-jobs = 2; cores = 2; };",
        "# on the controller, in /etc/nix/machines (or nix.buildMachines.*.maxJobs):",
        `# was (${machines}:1): nixos x86_64-linux / - 8 1 kvm,big-parallel`,
        "nixos x86_64-linux / 2 8 1 kvm,big-parallel",
      ].join("\n"),
    );
    assert.equal(find(r, "oom/machines-jobs-memory")?.status, "ok");
  } finally {
    await Deno.remove(machines);
  }
});

Deno.test({
  name:
    "as a non-root user: --apply reports oom/needs-root (3), and a restricted dmesg oom/kernel-log-unavailable",
  ignore: !isRoot,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "nbr-bundle-" });
    try {
      await Deno.chmod(dir, 0o755);
      const bundle = await new Deno.Command(Deno.execPath(), {
        args: ["bundle", "-o", `${dir}/oom_mitigate.js`, SCRIPT],
        cwd: ROOT,
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(bundle.code, 0, dec.decode(bundle.stderr));
      await Deno.mkdir(`${dir}/home`);
      await Deno.chown(`${dir}/home`, 65534, 65534);
      const asNobody = async (args: string[]) => {
        const out = await new Deno.Command("setpriv", {
          args: [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            Deno.execPath(),
            "run",
            "-A",
            `${dir}/oom_mitigate.js`,
            "--json",
            ...args,
          ],
          env: { HOME: `${dir}/home`, DENO_DIR: `${dir}/home`, NO_COLOR: "1" },
          cwd: "/tmp",
          stdout: "piped",
          stderr: "piped",
        }).output();
        return { code: out.code, report: JSON.parse(dec.decode(out.stdout)) as Report };
      };
      const apply = await asNobody([
        "--mitigate",
        "zram",
        "--apply",
        "--state-dir",
        `${dir}/state`,
      ]);
      assert.equal(apply.code, 3);
      assert.deepEqual(apply.report.findings.map((f) => [f.id, f.status]), [[
        "oom/needs-root",
        "unknown",
      ]]);
      assert.equal(await Deno.stat(`${dir}/state`).catch(() => null), null);
      const restricted = Number(await Deno.readTextFile("/proc/sys/kernel/dmesg_restrict"));
      if (restricted === 1) {
        const diag = await asNobody([]);
        const f = diag.report.findings.find((x) => x.id === "oom/kernel-log-unavailable");
        assert.equal(f?.status, "unknown");
        assert.equal(diag.code, 3);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "two applies cannot overlap: the second waits, then reports oom/locked (3) naming the holder",
  ignore: !isRoot,
  async fn() {
    const dir = await confDir(ORIGINAL);
    try {
      const store = await StateStore.open(localFileOps(), `${dir}/state`);
      await store.withLock(async () => {
        const started = Date.now();
        const r = await run(
          [
            "--mitigate",
            "serialize",
            "--persist",
            "--apply",
            "--state-dir",
            `${dir}/state`,
            "--lock-timeout",
            "1",
          ],
          { confDir: dir },
        );
        assert.equal(r.code, 3);
        assert.match(
          find(r, "oom/locked")!.summary,
          /is locked by another run \(the test holding it\); waited 1 s/,
        );
        assert.ok(Date.now() - started >= 1000);
      }, { owner: "the test holding it" });
      assert.equal(await Deno.readTextFile(`${dir}/nix.conf`), ORIGINAL);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ---------------------------------------------------------------- zram

/** name -> "disksize|swap priority" of every zram device now. */
async function zramSnapshot(): Promise<Map<string, string>> {
  const state = await readZramState(new LocalTarget());
  return new Map(
    state.devices.map((d) => [d.name, `${d.diskSizeBytes}|${d.swap?.priority ?? "-"}`]),
  );
}

async function ourDevices(state: string): Promise<string[]> {
  const store = await StateStore.openExisting(localFileOps(), state);
  const records = store ? await store.list({ tool: OOM_TOOL, kind: "zram" }) : [];
  return records.map((r) => r.detail.device).filter((d): d is string => typeof d === "string");
}

function zramTest(
  name: string,
  fn: () => Promise<void>,
  options: { lab?: boolean; ignore?: boolean } = {},
) {
  const noLab = options.lab === true && labPrerequisites().length > 0 &&
    Deno.env.get("LAB_REQUIRED") !== "1";
  Deno.test({
    name: options.lab ? `${LAB_TEST_PREFIX}${name}` : name,
    ignore: !isRoot || !hasZram || noLab || options.ignore === true,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () =>
      withGlobalLock("zram", async () => {
        const before = await zramSnapshot();
        await fn();
        // Whatever the test did, the devices that were there before are as they were.
        const after = await zramSnapshot();
        for (const [name, value] of before) assert.equal(after.get(name), value, `${name} changed`);
      }, { timeoutMs: 600_000 }),
  });
}

zramTest(
  "zram --apply twice makes one swap device, --revert twice removes it, other devices untouched",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "nbr-zram-" });
    const before = await zramSnapshot();
    try {
      const dry = await run([
        "--mitigate",
        "zram",
        "--kernel-log",
        "/dev/null",
        "--state-dir",
        `${dir}/state`,
      ]);
      assert.match(
        find(dry, "zram/swap")!.summary,
        /^zram swap: .* \(50% of .* RAM\), .*, priority 100 \(dry run\)$/,
      );
      assert.deepEqual(await zramSnapshot(), before, "a dry run touches nothing");

      const first = await run(["--mitigate", "zram", "--apply", "--state-dir", `${dir}/state`]);
      assert.equal(first.code, 0, first.stdout + first.stderr);
      // nothing else: no zram/no-algorithm, zram/apply-failed, zram/orphan-device
      assert.deepEqual(ids(first), ["zram/swap"]);
      const data = find(first, "zram/swap")!.data as {
        action: string;
        device: string;
        sizeBytes: number;
      };
      assert.equal(data.action, "applied");
      const device = data.device;
      assert.ok(!before.has(device));
      const swaps = await Deno.readTextFile("/proc/swaps");
      assert.match(swaps, new RegExp(`^/dev/${device}\\s+partition\\s+\\d+\\s+\\d+\\s+100$`, "m"));
      assert.match((await readSwapLabel(new LocalTarget(), device))!, /^nbr-oom-[0-9a-f]{6}$/);

      const second = await run(["--mitigate", "zram", "--apply", "--state-dir", `${dir}/state`]);
      assert.equal(second.code, 0);
      assert.equal((find(second, "zram/swap")!.data as { action: string }).action, "already");
      assert.equal((await zramSnapshot()).size, before.size + 1, "still one device of ours");

      const diag = await run(["--kernel-log", "/dev/null", "--state-dir", `${dir}/state`]);
      assert.match(find(diag, "zram/devices")!.summary, new RegExp(`${device} \\(ours\\)`));
      assert.equal(find(diag, "oom/mitigation-active")?.status, "ok");

      const revert = await run(["--revert", "--state-dir", `${dir}/state`]);
      assert.equal(revert.code, 0);
      assert.deepEqual(ids(revert), ["oom/reverted"], "no zram/swapoff-risk with RAM to spare");
      assert.equal(
        find(revert, "oom/reverted")!.detail,
        `${device}: swapoff /dev/${device}, reset /dev/${device}, hot-remove /dev/${device}`,
      );
      const again = await run(["--revert", "--state-dir", `${dir}/state`]);
      assert.deepEqual(ids(again), ["oom/nothing-to-revert"]);
      assert.deepEqual(await zramSnapshot(), before);
    } finally {
      for (const d of await ourDevices(`${dir}/state`)) {
        await removeZram(new LocalTarget(), d).catch(() => {});
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/**
 * A one-builder lab whose builder `fn` drives over ssh: `overSsh(args)` runs the script with
 * `--host builder1` and a state directory on the builder, as on a real one. Leftovers are removed.
 */
async function withZramBuilder(
  emulation: "global" | "namespace",
  fn: (b: { name: string; overSsh: (args: string[]) => Promise<Run> }) => Promise<void>,
): Promise<void> {
  await using lab = await startLab({ builders: 1, emulation });
  const name = lab.builders[0]!.name;
  const env = { NIX_SSHOPTS: lab.sshOptions.join(" ") };
  const state = `/tmp/nbr-zram-lab-state-${lab.id}`;
  const host = ["--host", name, "--state-dir", state, "--timeout", "120"];
  try {
    await fn({ name, overSsh: (args) => run([...host, ...args], { env }) });
  } finally {
    for (const d of await ourDevices(state).catch(() => [])) {
      await removeZram(new LocalTarget(), d).catch(() => {});
    }
    await Deno.remove(state, { recursive: true }).catch(() => {});
  }
}

zramTest(
  "zram over --host: apply on a lab builder makes one swap there, revert over ssh removes it",
  // A builder in the host's user namespace (emulation registered globally), as a real one is.
  () =>
    withZramBuilder("global", async ({ name, overSsh }) => {
      const before = await zramSnapshot();
      const apply = await overSsh(["--mitigate", "zram", "--apply"]);
      assert.equal(apply.code, 0, apply.stdout + apply.stderr);
      assert.equal(apply.report?.host, name);
      const data = find(apply, "zram/swap")!.data as { action: string; device: string };
      assert.equal(data.action, "applied");
      // The builder shares this kernel: its new swap is in this machine's /proc/swaps.
      assert.match(
        await Deno.readTextFile("/proc/swaps"),
        new RegExp(`^/dev/${data.device}\\s+partition\\s+\\d+\\s+\\d+\\s+100$`, "m"),
      );
      const again = await overSsh(["--mitigate", "zram", "--apply"]);
      assert.equal((find(again, "zram/swap")!.data as { action: string }).action, "already");

      const revert = await overSsh(["--revert"]);
      assert.equal(revert.code, 0, revert.stdout + revert.stderr);
      assert.deepEqual(ids(revert), ["oom/reverted"]);
      assert.deepEqual(await zramSnapshot(), before);
    }),
  { lab: true },
);

zramTest(
  "zram over --host on a builder in a user namespace (a container) is refused before anything changes",
  // Found against the lab: root in a user namespace can hot-add a zram device, but swapon
  // fails with EPERM (it needs CAP_SYS_ADMIN in the host's namespace). Say so up front.
  () =>
    withZramBuilder("namespace", async ({ overSsh }) => {
      const before = await zramSnapshot();
      const dry = await overSsh(["--mitigate", "zram", "--kernel-log", "/dev/null"]);
      assert.equal(dry.code, 2, dry.stdout + dry.stderr);
      assert.match(
        find(dry, "zram/not-permitted")!.summary,
        /runs in a user namespace \(a container\)/,
      );
      const apply = await overSsh(["--mitigate", "zram", "--apply"]);
      assert.equal(apply.code, 2);
      assert.deepEqual(ids(apply), ["zram/not-permitted"]);
      assert.deepEqual(await zramSnapshot(), before, "no device was hot-added");
    }),
  // The lab puts builders in a user namespace only where binfmt_misc is namespaced (6.7+).
  { lab: true, ignore: !kernelHasNamespacedBinfmt() },
);

zramTest(
  "a zram swap we did not create is never touched, even by a record that names it",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "nbr-zram-" });
    const target = new LocalTarget();
    let foreign: string | undefined;
    try {
      // Someone else's zram swap, on a device of its own: not `zramctl --find`, which would take
      // an unused device that is already there (this VM's zram0) and so change the machine.
      foreign = `zram${(await Deno.readTextFile("/sys/class/zram-control/hot_add")).trim()}`;
      const setup = [
        ["zramctl", "--size", "32M", `/dev/${foreign}`],
        ["mkswap", "-L", "someone-else", `/dev/${foreign}`],
        ["swapon", "-p", "3", `/dev/${foreign}`],
      ];
      for (const [program, ...args] of setup) {
        const out = await new Deno.Command(program!, { args, stdout: "null", stderr: "piped" })
          .output();
        assert.equal(out.code, 0, `${program}: ${dec.decode(out.stderr)}`);
      }
      const before = await zramSnapshot();

      const apply = await run(["--mitigate", "zram", "--apply", "--state-dir", `${dir}/state`]);
      assert.equal(apply.code, 0);
      const mine = (find(apply, "zram/swap")!.data as { device: string }).device;
      assert.notEqual(mine, foreign);
      const diag = await run(["--kernel-log", "/dev/null", "--state-dir", `${dir}/state`]);
      assert.match(
        find(diag, "zram/devices")!.detail!,
        new RegExp(`^${foreign}: other \\(active swap set up by something else\\)`, "m"),
      );
      assert.equal((await run(["--revert", "--state-dir", `${dir}/state`])).code, 0);
      assert.deepEqual(await zramSnapshot(), before, "the foreign swap is as it was");

      // A record claiming the foreign device (say its number was reused after a removal).
      const store = await StateStore.open(localFileOps(), `${dir}/state`);
      const record = store.newRecord(OOM_TOOL, "zram", {
        device: foreign,
        label: "nbr-oom-abcdef",
        step: "active",
      });
      record.status = "applied";
      record.bootId = (await Deno.readTextFile("/proc/sys/kernel/random/boot_id")).trim();
      await store.save(record);
      const refused = await run(["--revert", "--state-dir", `${dir}/state`]);
      assert.equal(refused.code, 1);
      assert.equal(
        find(refused, "oom/revert-conflict")?.summary,
        `${foreign} is a swap labelled 'someone-else', not ours ('nbr-oom-abcdef'): left alone`,
      );
      assert.deepEqual(await zramSnapshot(), before);
      assert.match(await Deno.readTextFile("/proc/swaps"), new RegExp(`^/dev/${foreign}\\s`, "m"));
    } finally {
      if (foreign !== undefined) await removeZram(target, foreign).catch(() => {});
      for (const d of await ourDevices(`${dir}/state`)) {
        if (d !== foreign) await removeZram(target, d).catch(() => {});
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
);

zramTest("zram --algorithm the kernel lacks is refused before anything is created", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-zram-" });
  const before = await zramSnapshot();
  try {
    const offered = (await readZramState(new LocalTarget())).devices[0]?.algorithms ?? [];
    const missing = ["zstd", "842", "deflate"].find((a) => !offered.includes(a));
    assert.ok(missing, "some algorithm is missing from this kernel");
    const r = await run([
      "--mitigate",
      "zram",
      "--apply",
      "--algorithm",
      missing!,
      "--state-dir",
      `${dir}/state`,
    ]);
    assert.equal(r.code, 2);
    assert.equal(
      find(r, "zram/no-algorithm")?.summary,
      `the kernel offers no '${missing}' for zram (offered: ${offered.join(", ")})`,
    );
    assert.deepEqual(await zramSnapshot(), before);
    assert.deepEqual(await ourDevices(`${dir}/state`), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

zramTest("a zram setup whose swapon fails is rolled back (zram/apply-failed)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-zram-" });
  const before = await zramSnapshot();
  const target = new LocalTarget();
  try {
    const store = await StateStore.open(localFileOps(), `${dir}/state`);
    // 40000 is past the kernel's highest swap priority (32767): swapon refuses it.
    const findings = await store.withLock(() =>
      applyZram(target, store, { memoryPercent: 1, priority: 40000 })
    );
    assert.equal(findings[0]?.id, "zram/apply-failed");
    assert.match(
      findings[0]!.summary,
      /^zram swap not set up: Cannot swapon \/dev\/zram\d+: 'swapon --priority 40000 \/dev\/zram\d+' exited with 1/,
    );
    assert.match(
      findings[0]!.detail!,
      /^rolled back: reset \/dev\/zram\d+, hot-remove \/dev\/zram\d+$/,
    );
    assert.deepEqual(await zramSnapshot(), before);
    assert.deepEqual((await store.list()).map((r) => r.status), ["abandoned"]);
  } finally {
    for (const d of await ourDevices(`${dir}/state`)) await removeZram(target, d).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

/** A process holding memory in a memory-limited cgroup; {@link memoryHog} starts one. */
interface Hog {
  stop: () => Promise<void>;
}

/** Runs a process that keeps `mb` MiB of incompressible memory in a memory cgroup limited to `limitMb`. */
async function memoryHog(mb: number, limitMb: number): Promise<Hog> {
  const name = `nbr-oom-test-${Deno.pid}`;
  let cgroup: string;
  try {
    Deno.statSync("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    cgroup = `/sys/fs/cgroup/memory/${name}`;
    await Deno.mkdir(cgroup);
    await Deno.writeTextFile(`${cgroup}/memory.limit_in_bytes`, `${limitMb}M`);
  } catch {
    cgroup = `/sys/fs/cgroup/${name}`;
    await Deno.mkdir(cgroup);
    await Deno.writeTextFile(`${cgroup}/memory.max`, `${limitMb}M`);
  }
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      'echo $$ > "$1/cgroup.procs" && tr -d "\\n" < /dev/urandom | head -c "$2M" | tail -n 1 | (sleep 120; wc -c)',
      "sh",
      cgroup,
      String(mb),
    ],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
  async function stop(): Promise<void> {
    const pids = (await Deno.readTextFile(`${cgroup}/cgroup.procs`)).split(/\s+/).filter(Boolean);
    for (const pid of pids) {
      try {
        Deno.kill(Number(pid), "SIGKILL");
      } catch {
        // gone
      }
    }
    await child.status;
    for (let i = 0; i < 50; i++) {
      try {
        await Deno.remove(cgroup);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  // Once only: a test may end the hog early, and the cleanup ends it again.
  let stopped: Promise<void> | undefined;
  return { stop: () => stopped ??= stop() };
}

/**
 * A zram swap of ours holding at least 100 MiB of a hog's pages: the hog keeps 300 MiB in a
 * cgroup limited to 100 MiB, so the rest is swapped out to our device. Cleans up after `fn`.
 */
async function withSwappedHog(
  fn: (s: { target: LocalTarget; store: StateStore; device: string; hog: Hog }) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "nbr-zram-" });
  const target = new LocalTarget();
  let hog: Hog | undefined;
  try {
    const store = await StateStore.open(localFileOps(), `${dir}/state`);
    const applied = await store.withLock(() =>
      applyZram(target, store, { memoryPercent: 5, priority: 100 })
    );
    const device = (applied[0]!.data as { device: string }).device;
    hog = await memoryHog(300, 100);
    let used = 0;
    for (let i = 0; i < 100 && used < 100 * 1024 * 1024; i++) {
      await new Promise((r) => setTimeout(r, 200));
      used = (await readZramState(target)).devices.find((d) => d.name === device)?.swap
        ?.usedBytes ?? 0;
    }
    assert.ok(used >= 100 * 1024 * 1024, `the hog swapped ${used} bytes to ${device}`);
    await fn({ target, store, device, hog });
  } finally {
    await hog?.stop();
    for (const d of await ourDevices(`${dir}/state`)) await removeZram(target, d).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

zramTest(
  "--revert refuses to swap off pages a memory-limited cgroup cannot take back, however much RAM is free",
  async () => {
    await withSwappedHog(async ({ target, store, device, hog }) => {
      // The default headroom: this 24 GiB VM has RAM to spare, but the hog's cgroup has none.
      const refused = await store.withLock(() => revertMitigations(target, store, {}));
      assert.equal(refused[0]?.id, "zram/swapoff-risk");
      assert.match(
        refused[0]!.summary,
        new RegExp(
          `^${device} holds .* of swapped pages; cgroup /nbr-oom-test-${Deno.pid} has .* in swap and .* left under its memory limit: swapoff would fail or OOM-kill there$`,
        ),
      );
      assert.match(await Deno.readTextFile("/proc/swaps"), new RegExp(`^/dev/${device}\\s`, "m"));
      // Once the cgroup's work is done, the same revert goes through.
      await hog.stop();
      const reverted = await store.withLock(() => revertMitigations(target, store, {}));
      assert.equal(reverted[0]?.id, "oom/reverted");
    });
  },
);

zramTest(
  "--revert refuses to swap off a zram swap holding more than RAM can take back (zram/swapoff-risk)",
  async () => {
    await withSwappedHog(async ({ target, store, device, hog }) => {
      // This 24 GiB VM has RAM for it; a headroom of 0 makes any swapped page "too much".
      const refused = await store.withLock(() =>
        revertMitigations(target, store, { swapoffHeadroom: 0 })
      );
      assert.equal(refused[0]?.id, "zram/swapoff-risk");
      assert.match(
        refused[0]!.summary,
        new RegExp(
          `^${device} holds \\d+\\.\\d MiB of swapped pages and only .* RAM is available: swapoff could run the machine out of memory$`,
        ),
      );
      assert.match(
        await Deno.readTextFile("/proc/swaps"),
        new RegExp(`^/dev/${device}\\s`, "m"),
        "still on",
      );
      // The hog lives in a memory-limited cgroup: swapoff cannot pull its pages back into it
      // (ENOMEM), so end it first; --force is about our headroom check, not the kernel's.
      await hog.stop();
      const forced = await store.withLock(() =>
        revertMitigations(target, store, { swapoffHeadroom: 0, force: true })
      );
      assert.equal(forced[0]?.id, "oom/reverted");
      assert.doesNotMatch(
        await Deno.readTextFile("/proc/swaps"),
        new RegExp(`^/dev/${device}\\s`, "m"),
      );
    });
  },
);

Deno.test("without the zram module: --mitigate zram is CRITICAL and apply creates nothing", async () => {
  const sys = await Deno.makeTempDir({ prefix: "nbr-sysfs-" });
  const dir = await Deno.makeTempDir({ prefix: "nbr-zram-" });
  try {
    await Deno.mkdir(`${sys}/block/vda`, { recursive: true });
    const plan = await run([
      "--mitigate",
      "zram",
      "--sysfs-root",
      sys,
      "--kernel-log",
      "/dev/null",
      "--state-dir",
      `${dir}/state`,
    ]);
    assert.equal(plan.code, 2);
    assert.equal(find(plan, "zram/unavailable")?.status, "critical");
    assert.equal(
      find(plan, "zram/unavailable")?.summary,
      "this kernel has no zram (module not loaded): cannot add zram swap",
    );
    const store = await StateStore.open(localFileOps(), `${dir}/state`);
    const applied = await applyZram(
      new LocalTarget(),
      store,
      { memoryPercent: 50, priority: 100 },
      { sysfsRoot: sys },
    );
    assert.deepEqual(applied.map((f) => [f.id, f.status]), [["zram/unavailable", "critical"]]);
    assert.deepEqual(await store.list(), []);
  } finally {
    await Deno.remove(sys, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a snapshot bundle of a machine without zram: diagnosis notes it, the zram plan is CRITICAL", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nbr-bundle-" });
  try {
    const recording = new RecordingTarget(new LocalTarget());
    await collectOomEvidence(recording, { kernelLog: { name: "x", text: "" } });
    const data = recording.snapshot();
    // The same machine, as if its kernel had no zram.
    data.paths["/sys/class/zram-control"] = { exists: false };
    data.paths["/sys/module/zram"] = { exists: false };
    data.paths["/sys/block"] = { exists: true, entries: ["vda"] };
    await writeSnapshot(`${dir}/bundle`, data);
    const diag = await run(["--snapshot", `${dir}/bundle`, "--kernel-log", "/dev/null"]);
    assert.equal(find(diag, "zram/unavailable")?.status, "ok");
    assert.equal(find(diag, "oom/memory")?.status, "ok");
    const plan = await run([
      "--snapshot",
      `${dir}/bundle`,
      "--kernel-log",
      "/dev/null",
      "--mitigate",
      "zram",
    ]);
    assert.equal(plan.code, 2);
    assert.equal(find(plan, "zram/unavailable")?.status, "critical");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- killed runs

zramTest(
  "runs killed at random points (SIGKILL/SIGTERM/SIGINT, 24 times) leave old or new state; the next run reports and repairs",
  async () => {
    const dir = await confDir(ORIGINAL);
    const state = `${dir}/state`;
    const initial = await zramSnapshot();
    const target = new LocalTarget();
    const originalSha = await sha256Hex(new TextEncoder().encode(ORIGINAL));
    const applyArgs = [
      "--mitigate",
      "zram",
      "--mitigate",
      "serialize",
      "--persist",
      "--apply",
      "--memory-percent",
      "2",
      "--state-dir",
      state,
    ];
    const outcomes = new Map<string, number>();
    const count = (key: string) => outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
    try {
      // How long the work of an apply takes once it holds the lock (Deno's start-up is most of a
      // run), to spread the kills over that work.
      const spawnApply = () =>
        new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", SCRIPT, "--json", ...applyArgs],
          cwd: ROOT,
          env: { NIX_CONF_DIR: dir, NIX_USER_CONF_FILES: "" },
          stdout: "null",
          stderr: "null",
        }).spawn();
      const locked = async (pid: number) => {
        for (let t = 0; t < 4000; t++) {
          const owner = await Deno.readTextFile(`${state}/lock`).catch(() => "");
          if (owner.includes(`pid ${pid} `)) return true;
          await new Promise((r) => setTimeout(r, 2));
        }
        return false;
      };
      const calibration = spawnApply();
      assert.ok(await locked(calibration.pid));
      const started = Date.now();
      assert.equal((await calibration.status).code, 0);
      const work = Date.now() - started;
      const newSha = await sha256Hex(await Deno.readFile(`${dir}/nix.conf`));
      assert.equal((await run(["--revert", "--state-dir", state], { confDir: dir })).code, 0);

      for (let i = 0; i < 24; i++) {
        // SIGINT is Ctrl-C at the terminal, SIGTERM a service manager, SIGKILL the OOM killer.
        const signal = (["SIGKILL", "SIGTERM", "SIGINT"] as const)[i % 3]!;
        const child = spawnApply();
        if (i % 4 === 3) {
          // now and then during start-up, before the lock
          await new Promise((r) => setTimeout(r, Math.random() * 400));
        } else {
          await locked(child.pid);
          await new Promise((r) => setTimeout(r, Math.random() * work * 1.1));
        }
        try {
          child.kill(signal);
        } catch {
          // it had finished
        }
        await child.status;

        // Old or new, never a mix.
        const sha = await sha256Hex(await Deno.readFile(`${dir}/nix.conf`));
        assert.ok(
          sha === originalSha || sha === newSha,
          `run ${i}: nix.conf is neither old nor new`,
        );
        // Devices that were there before are untouched.
        const now = await zramSnapshot();
        for (const [name, value] of initial) {
          assert.equal(now.get(name), value, `run ${i}: ${name} changed`);
        }

        // The next read-only run reports what a killed run left.
        const store = (await StateStore.openExisting(localFileOps(), state))!;
        const pending = (await store.list({ status: ["applying"] })).filter((r) =>
          r.tool === OOM_TOOL
        );
        const diag = await run(["--kernel-log", "/dev/null", "--state-dir", state], {
          confDir: dir,
        });
        if (pending.length > 0) {
          assert.ok(
            ids(diag).includes("oom/incomplete-change") || ids(diag).includes("zram/orphan-device"),
            `run ${i}: ${pending.length} pending record(s) not reported: ${ids(diag).join(", ")}`,
          );
        }
        const orphans = find(diag, "zram/orphan-device");
        count(
          pending.length === 0
            ? (sha === newSha ? "killed after the apply" : "killed before any change")
            : `killed mid-apply (${
              pending.map((r) => `${r.kind}:${r.detail.step ?? "edit"}`).join(",")
            })`,
        );

        // The next run repairs: half the time by reverting, half by applying again.
        if (i % 2 === 0) {
          const revert = await run(["--revert", "--state-dir", state], { confDir: dir });
          assert.ok(revert.code === 0, `run ${i}: revert exited ${revert.code}: ${revert.stdout}`);
        } else {
          const again = await run(applyArgs, { confDir: dir });
          assert.equal(again.code, 0, `run ${i}: apply exited ${again.code}: ${again.stdout}`);
          assert.equal(await sha256Hex(await Deno.readFile(`${dir}/nix.conf`)), newSha);
          const ours = [...(await zramSnapshot()).keys()].filter((n) => !initial.has(n));
          const active = (await readZramState(target)).swaps.filter((s) =>
            ours.some((o) => s.path === `/dev/${o}`)
          );
          assert.equal(
            active.length,
            1,
            `run ${i}: exactly one zram swap of ours is on (${ours.join(", ")})`,
          );
          assert.equal((await run(["--revert", "--state-dir", state], { confDir: dir })).code, 0);
        }
        assert.equal(
          await sha256Hex(await Deno.readFile(`${dir}/nix.conf`)),
          originalSha,
          `run ${i}: nix.conf restored`,
        );
        const left = [...(await zramSnapshot()).keys()].filter((n) => !initial.has(n));
        if (left.length > 0) {
          // Only a device hot-added in the instant before its number was written down may stay, and
          // the diagnosis must have named it.
          assert.ok(
            orphans,
            `run ${i}: ${left.join(", ")} left behind without a zram/orphan-device report`,
          );
          for (const name of left) {
            assert.match(orphans.summary, new RegExp(name));
            await removeZram(target, name);
          }
          count("orphan reported and removed by hand");
        }
        assert.deepEqual(
          (await store.list({ status: ["applying", "applied"] })).length,
          0,
          `run ${i}: records closed`,
        );
      }
    } finally {
      const ours = [...(await zramSnapshot()).keys()].filter((n) => !initial.has(n));
      for (const name of ours) await removeZram(target, name).catch(() => {});
      await Deno.remove(dir, { recursive: true });
      console.log([...outcomes].map(([k, v]) => `${v}× ${k}`).join("; "));
    }
  },
);

// ---------------------------------------------------------------- a lab builder over ssh

labTest(
  "oom_mitigate edits a lab builder's nix.conf over ssh, restores it byte for byte, and refuses a store-linked one",
  async () => {
    await using lab = await startLab({ builders: 1 });
    const builder = lab.builders[0]!;
    const env = { NIX_SSHOPTS: lab.sshOptions.join(" ") };
    const state = "/tmp/nbr-oom-lab-state-" + lab.id;
    const original = await Deno.readFile(builder.nixConfFile);
    const sshArgs = ["--host", builder.name, "--state-dir", state, "--timeout", "120"];

    const diag = await run([...sshArgs, "--kernel-log", "/dev/null"], { env });
    assert.equal(
      find(diag, "oom/jobs-memory")?.summary.startsWith(
        "max-jobs 2 × cores 1 = up to 2 compiler processes",
      ),
      true,
    );

    const apply = await run([...sshArgs, "--mitigate", "serialize", "--persist", "--apply"], {
      env,
    });
    assert.equal(apply.code, 0, apply.stdout + apply.stderr);
    assert.match(
      find(apply, "oom/serialize")!.summary,
      /^\/etc\/nix\/nix\.conf: max-jobs 2 -> 1 \(line \d+\), cores 1 -> 2 \(line \d+\)$/,
    );
    const edited = await Deno.readTextFile(builder.nixConfFile);
    assert.match(edited, /^max-jobs = 1$/m);
    const again = await run([...sshArgs, "--mitigate", "serialize", "--persist", "--apply"], {
      env,
    });
    assert.equal((find(again, "oom/serialize")!.data as { action: string }).action, "unchanged");
    const revert = await run([...sshArgs, "--revert"], { env });
    assert.equal(revert.code, 0, revert.stdout);
    assert.deepEqual(await Deno.readFile(builder.nixConfFile), original);
    assert.deepEqual(ids(await run([...sshArgs, "--revert"], { env })), ["oom/nothing-to-revert"]);

    // The lock over ssh: held on the builder (flock there), a second apply waits, then gives up.
    const remote = new SshTarget(builder.name, { sshArgs: [...lab.sshOptions] });
    try {
      const store = await StateStore.open(targetFileOps(remote), state);
      await store.withLock(async () => {
        const r = await run([
          ...sshArgs,
          "--mitigate",
          "serialize",
          "--persist",
          "--apply",
          "--lock-timeout",
          "1",
        ], {
          env,
        });
        assert.equal(r.code, 3);
        assert.match(find(r, "oom/locked")!.summary, /locked by another run \(a test over ssh\)/);
      }, { owner: "a test over ssh" });
    } finally {
      await remote.close();
    }
    assert.deepEqual(await Deno.readFile(builder.nixConfFile), original);

    // NixOS-style: nix.conf is a link into the builder's own Nix store.
    const storeFile = `${builder.dir}/nix/store/00000000000000000000000000000000-nix.conf`;
    await Deno.writeFile(storeFile, original);
    await Deno.remove(builder.nixConfFile);
    await Deno.symlink("/nix/store/00000000000000000000000000000000-nix.conf", builder.nixConfFile);
    const refused = await run([...sshArgs, "--mitigate", "serialize", "--persist", "--apply"], {
      env,
    });
    assert.equal(refused.code, 1);
    assert.equal(
      find(refused, "oom/nix-conf-managed")?.summary,
      "not editing /etc/nix/nix.conf: /etc/nix/nix.conf is NixOS or nix-darwin (a Nix store file) -> " +
        "/nix/store/00000000000000000000000000000000-nix.conf",
    );
    assert.deepEqual(await Deno.readFile(storeFile), original);
  },
);
