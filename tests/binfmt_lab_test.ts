/**
 * check_binfmt against real binfmt_misc, real qemu and real Nix 2.8: each lab builder has its own
 * binfmt_misc instance (kernel 6.7+), so the cases change only that builder. Every case runs the
 * check over ssh, as on a real builder, with the smoke test (and the Nix smoke where it matters),
 * so each prediction is checked against what the kernel and Nix really do.
 *
 * One case uses the machine's own binfmt_misc: it registers a uniquely named entry pointing at the
 * real qemu (under the global lock) and removes it again.
 */
import assert from "node:assert/strict";
import { assessBinfmt, checkBinfmt, gatherBinfmtFacts } from "../lib/binfmt.ts";
import { applyBinfmt, revertBinfmt } from "../lib/binfmt_apply.ts";
import type { Finding } from "../lib/findings.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { RecordingTarget, writeSnapshot } from "../lib/recording_target.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import {
  type Builder,
  kernelHasNamespacedBinfmt,
  type Lab,
  labTest as anyLabTest,
  startLab,
} from "./lab/lab.ts";
import { withGlobalLock } from "./lab/lock.ts";

/**
 * These cases write to the builder's binfmt_misc: only safe when it is the builder's own instance
 * (Linux 6.7+). On older kernels they are skipped rather than touching the machine's entries.
 */
function labTest(name: string, fn: (t: Deno.TestContext) => Promise<void>): void {
  if (kernelHasNamespacedBinfmt()) anyLabTest(name, fn);
  else Deno.test({ name, ignore: true, fn });
}

const DEBIAN_LINE = "/usr/lib/binfmt.d/qemu-aarch64.conf";
const BINFMT = "/proc/sys/fs/binfmt_misc";

function target(lab: Lab, builder: Builder): SshTarget {
  return new SshTarget(builder.name, { sshArgs: [...lab.sshOptions], timeoutMs: 90_000 });
}

async function withBuilder(fn: (lab: Lab, builder: Builder, t: SshTarget) => Promise<void>) {
  await using lab = await startLab({ builders: 1, emulation: "namespace" });
  const builder = lab.builders[0]!;
  const t = target(lab, builder);
  try {
    await fn(lab, builder, t);
  } finally {
    await t.close();
  }
}

/** Writes `value` to a binfmt_misc file inside the builder (its own instance). */
async function binfmtWrite(builder: Builder, file: string, value: string): Promise<void> {
  const result = await builder.exec(
    ["sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", value, `${BINFMT}/${file}`],
    { timeoutMs: 10_000 },
  );
  assert.equal(result.code, 0, `write ${file}: ${result.stderr}`);
}

/** Debian's qemu-aarch64 line with another name / interpreter / flags. */
async function aarch64Line(name: string, interpreter?: string, flags?: string): Promise<string> {
  const fields = (await Deno.readTextFile(DEBIAN_LINE)).trim().split(":");
  fields[1] = name;
  if (interpreter !== undefined) fields[6] = interpreter;
  if (flags !== undefined) fields[7] = flags;
  return fields.join(":");
}

function get(findings: Finding[], id: string, system = "aarch64-linux"): Finding {
  const found = findings.filter((f) =>
    f.id === id && ((f.data as { system?: string } | undefined)?.system ?? system) === system
  );
  assert.equal(
    found.length,
    1,
    `${id} for ${system} in ${JSON.stringify(findings.map((f) => [f.id, f.status]))}`,
  );
  return found[0]!;
}

function absent(findings: Finding[], id: string): void {
  assert.deepEqual(findings.filter((f) => f.id === id).map((f) => f.summary), [], id);
}

labTest("check_binfmt on a working lab builder: entry, smoke and Nix smoke all OK", async () => {
  await withBuilder(async (_lab, _builder, t) => {
    const findings = await checkBinfmt(t, { smoke: "nix" });
    assert.deepEqual(findings.map((f) => [f.id, f.status]), [
      ["binfmt/entry", "ok"],
      ["binfmt/smoke", "ok"],
      ["binfmt/smoke-nix", "ok"],
    ]);
    assert.equal(
      get(findings, "binfmt/entry").summary,
      "aarch64-linux: qemu-aarch64 runs it with /usr/libexec/qemu-binfmt/aarch64-binfmt-P (flags POF)",
    );
    assert.match(
      get(findings, "binfmt/entry").detail!,
      /source: \/usr\/lib\/binfmt.d\/qemu-aarch64.conf \(registers it again at boot\)/,
    );
  });
});

labTest(
  "check_binfmt: a disabled entry is binfmt/entry-disabled and the program really fails",
  async () => {
    await withBuilder(async (_lab, builder, t) => {
      await builder.setFault("binfmt-disabled");
      const findings = await checkBinfmt(t);
      assert.equal(get(findings, "binfmt/entry-disabled").status, "critical");
      assert.match(
        get(findings, "binfmt/entry-disabled").fix!,
        /update-binfmts --enable qemu-aarch64/,
      );
      const smoke = get(findings, "binfmt/smoke");
      assert.equal(smoke.status, "critical");
      assert.match(smoke.summary, /the kernel refused it \(exit 126: .*Exec format error\)/);
      absent(findings, "binfmt/entry");
    });
  },
);

labTest(
  "check_binfmt: a removed entry is binfmt/no-entry; --apply registers it from binfmt.d, --revert removes it",
  async () => {
    await withBuilder(async (_lab, builder, t) => {
      await builder.setFault("binfmt-removed");
      const before = await checkBinfmt(t);
      assert.equal(get(before, "binfmt/no-entry").status, "critical");
      assert.match(
        get(before, "binfmt/no-entry").fix!,
        /apt-get install qemu-user-static binfmt-support/,
      );
      assert.equal(get(before, "binfmt/smoke").status, "critical");

      const stateDir = await Deno.makeTempDir({ prefix: "nbr-binfmt-state-" });
      try {
        const applied = await applyBinfmt(t, { stateDir });
        assert.deepEqual(applied.map((f) => [f.id, f.summary]), [[
          "binfmt/applied",
          "registered qemu-aarch64 from /usr/lib/binfmt.d/qemu-aarch64.conf:1 on builder1",
        ]]);
        const after = await checkBinfmt(t);
        assert.deepEqual(after.map((f) => [f.id, f.status]), [["binfmt/entry", "ok"], [
          "binfmt/smoke",
          "ok",
        ]]);
        const again = await applyBinfmt(t, { stateDir });
        assert.match(again[0]!.summary, /^nothing to change on builder1/);

        const reverted = await revertBinfmt(t, { stateDir });
        assert.deepEqual(reverted.map((f) => [f.id, f.summary]), [[
          "binfmt/reverted",
          "undid on builder1: registered qemu-aarch64 from /usr/lib/binfmt.d/qemu-aarch64.conf:1",
        ]]);
        assert.equal(get(await checkBinfmt(t), "binfmt/no-entry").status, "critical");
        assert.match(
          (await revertBinfmt(t, { stateDir }))[0]!.summary,
          /^nothing to revert on builder1/,
        );
      } finally {
        await Deno.remove(stateDir, { recursive: true });
      }
    });
  },
);

labTest(
  "check_binfmt: --revert leaves an entry alone that changed since --apply registered it",
  async () => {
    await withBuilder(async (_lab, builder, t) => {
      await builder.setFault("binfmt-removed");
      const stateDir = await Deno.makeTempDir({ prefix: "nbr-binfmt-state-" });
      try {
        await applyBinfmt(t, { stateDir });
        await binfmtWrite(builder, "qemu-aarch64", "-1");
        await binfmtWrite(builder, "register", await aarch64Line("qemu-aarch64", undefined, "F"));
        const reverted = await revertBinfmt(t, { stateDir });
        assert.deepEqual(reverted.map((f) => [f.id, f.status]), [[
          "binfmt/revert-skipped",
          "warning",
        ]]);
        assert.equal(get(await checkBinfmt(t, { smoke: "off" }), "binfmt/entry").status, "ok");
      } finally {
        await Deno.remove(stateDir, { recursive: true });
      }
    });
  },
);

labTest(
  "check_binfmt: an interpreter that does not exist is CRITICAL and the program cannot start",
  async () => {
    await withBuilder(async (_lab, builder, t) => {
      await binfmtWrite(
        builder,
        "register",
        await aarch64Line("nbr-missing", "/nonexistent/qemu-aarch64", "P"),
      );
      const findings = await checkBinfmt(t);
      const missing = get(findings, "binfmt/interpreter-missing");
      assert.equal(missing.status, "critical");
      assert.equal(
        missing.summary,
        "aarch64-linux: nbr-missing's interpreter /nonexistent/qemu-aarch64 does not exist: every aarch64-linux program fails",
      );
      const smoke = get(findings, "binfmt/smoke");
      assert.equal(smoke.status, "critical");
      assert.match(smoke.summary, /the kernel could not start its interpreter \(exit 127/);
    });
  },
);

labTest(
  "check_binfmt: with F a deleted interpreter still works (WARNING) until it is registered again",
  async () => {
    await withBuilder(async (_lab, builder, t) => {
      const dir = await Deno.makeTempDir({ prefix: "nbr-qemu-copy-" });
      try {
        const copy = `${dir}/qemu-aarch64`;
        await Deno.copyFile("/usr/bin/qemu-aarch64-static", copy);
        await binfmtWrite(builder, "register", await aarch64Line("nbr-pinned", copy, "PF"));
        await Deno.remove(copy);
        const findings = await checkBinfmt(t);
        assert.equal(get(findings, "binfmt/interpreter-missing").status, "warning");
        assert.equal(get(findings, "binfmt/smoke").status, "ok");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
);

labTest(
  "check_binfmt: extra-platforms missing is binfmt/platform-missing and Nix really refuses",
  async () => {
    await withBuilder(async (_lab, builder, t) => {
      await builder.setFault("no-extra-platforms");
      const byDefault = await checkBinfmt(t, { smoke: "off" });
      assert.match(get(byDefault, "binfmt/not-offered").summary, /aarch64-linux/);
      const findings = await checkBinfmt(t, { systems: ["aarch64-linux"], smoke: "nix" });
      assert.equal(get(findings, "binfmt/platform-missing").status, "critical");
      assert.equal(get(findings, "binfmt/smoke").status, "ok");
      const nix = get(findings, "binfmt/smoke-nix");
      assert.equal(nix.status, "critical");
      assert.match(
        nix.summary,
        /Nix refuses: a 'aarch64-linux' with features \{\} is required to build '.*', but I am a 'x86_64-linux'/,
      );
    });
  },
);

labTest(
  "check_binfmt: no F flag with the sandbox on is binfmt/sandbox-path, and the sandboxed build really fails",
  async () => {
    await withBuilder(async (_lab, builder, t) => {
      await builder.setNixConf({ sandbox: "true" });
      await binfmtWrite(builder, "register", await aarch64Line("nbr-no-f", undefined, "P"));
      const findings = await checkBinfmt(t, { smoke: "nix" });
      const sandbox = get(findings, "binfmt/sandbox-path");
      assert.equal(sandbox.status, "critical");
      assert.match(
        sandbox.summary,
        /cannot see \/usr\/libexec\/qemu-binfmt\/aarch64-binfmt-P, \/usr\/bin\/qemu-aarch64-static:/,
      );
      assert.equal(get(findings, "binfmt/smoke").status, "ok");
      const nix = get(findings, "binfmt/smoke-nix");
      assert.equal(nix.status, "critical");
      assert.match(nix.summary, /executing the aarch64-linux program: No such file or directory/);

      // The fix it names works: expose both paths, and the same build succeeds.
      await builder.setNixConf({
        "extra-sandbox-paths": "/usr/libexec/qemu-binfmt /usr/bin/qemu-aarch64-static",
      });
      const fixed = await checkBinfmt(t, { smoke: "nix" });
      absent(fixed, "binfmt/sandbox-path");
      assert.equal(get(fixed, "binfmt/smoke-nix").status, "ok");
    });
  },
);

/** Builds, in the builder's own store, a `#!/bin/sh` wrapper that execs the static qemu by store path. */
const WRAPPER_EXPRESSION = `let
  qemu = builtins.path { path = /usr/bin/qemu-aarch64-static; name = "qemu-aarch64-static"; };
  build = builtins.toFile "nbr-wrapper-builder.sh" ''
    printf '#!/bin/sh\\nexec %s "$@"\\n' "$qemu" > "$out"
    /bin/chmod 555 "$out"
  '';
in derivation {
  name = "nbr-qemu-wrapper";
  system = "x86_64-linux";
  builder = "/bin/sh";
  args = [ build ];
  inherit qemu;
}`;

labTest(
  "check_binfmt: a #!/bin/sh wrapper in the store without F needs sh, dash, its loader and libc in the sandbox; the exec'd qemu comes with the wrapper's closure",
  async () => {
    await withBuilder(async (_lab, builder, t) => {
      const built = await builder.exec(["nix-build", "--no-out-link", "-E", WRAPPER_EXPRESSION], {
        timeoutMs: 120_000,
      });
      assert.equal(built.code, 0, built.stderr);
      const wrapper = built.stdout.trim().split("\n").at(-1)!;
      await builder.setNixConf({ sandbox: "true" });
      await binfmtWrite(builder, "register", await aarch64Line("nbr-wrapper", wrapper, ""));

      const findings = await checkBinfmt(t, { smoke: "nix" });
      const sandbox = get(findings, "binfmt/sandbox-path");
      assert.equal(sandbox.status, "critical");
      const missing = (sandbox.data as { missing: string[] }).missing;
      assert.deepEqual(missing, [
        wrapper,
        "/bin/sh",
        "/bin/dash",
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
      ]);
      assert.match(
        sandbox.detail!,
        /^store closure \(nix-store -qR\): 2 path\(s\), 2 not visible/m,
      );
      assert.equal(get(findings, "binfmt/smoke").status, "ok"); // outside the sandbox it runs
      const nix = get(findings, "binfmt/smoke-nix");
      assert.equal(nix.status, "critical");
      assert.match(nix.summary, /No such file or directory/);

      // The paths it names are enough: the same sandboxed build succeeds.
      await builder.setNixConf({ "extra-sandbox-paths": missing.join(" ") });
      const fixed = await checkBinfmt(t, { smoke: "nix" });
      absent(fixed, "binfmt/sandbox-path");
      assert.equal(get(fixed, "binfmt/smoke-nix").status, "ok");

      // And each is needed: without dash's libc the prediction and the real build fail together.
      const libc = "/lib/x86_64-linux-gnu/libc.so.6";
      await builder.setNixConf({
        "extra-sandbox-paths": missing.filter((p) => p !== libc).join(" "),
      });
      const noLibc = await checkBinfmt(t, { smoke: "nix" });
      assert.deepEqual((get(noLibc, "binfmt/sandbox-path").data as { missing: string[] }).missing, [
        libc,
      ]);
      assert.equal(get(noLibc, "binfmt/smoke-nix").status, "critical");
    });
  },
);

labTest("check_binfmt: with two entries the newest wins, exactly as the kernel picks", async () => {
  await withBuilder(async (_lab, builder, t) => {
    await binfmtWrite(builder, "register", await aarch64Line("nbr-second", undefined, "PF"));
    const two = await checkBinfmt(t);
    const several = get(two, "binfmt/several-entries");
    assert.equal(several.status, "warning");
    assert.deepEqual((several.data as { order: string[] }).order, ["nbr-second", "qemu-aarch64"]);
    assert.equal(get(two, "binfmt/smoke").status, "ok");

    // A broken third entry registered last takes over: predicted, and the program fails.
    await binfmtWrite(
      builder,
      "register",
      await aarch64Line("nbr-broken", "/nonexistent/qemu", "P"),
    );
    const three = await checkBinfmt(t);
    assert.deepEqual(
      (get(three, "binfmt/several-entries").data as { order: string[] }).order,
      ["nbr-broken", "nbr-second", "qemu-aarch64"],
    );
    assert.equal(get(three, "binfmt/interpreter-missing").status, "critical");
    assert.equal(get(three, "binfmt/smoke").status, "critical");

    // Removing it gives the next one back.
    await binfmtWrite(builder, "nbr-broken", "-1");
    assert.equal(get(await checkBinfmt(t), "binfmt/smoke").status, "ok");
  });
});

labTest(
  "check_binfmt: a snapshot recorded from a builder gives the same findings offline",
  async () => {
    await withBuilder(async (_lab, builder, t) => {
      await builder.setFault("binfmt-disabled");
      const recording = new RecordingTarget(t);
      const live = assessBinfmt(await gatherBinfmtFacts(recording));
      const dir = await Deno.makeTempDir({ prefix: "nbr-binfmt-bundle-" });
      try {
        await writeSnapshot(`${dir}/b`, recording.snapshot());
        const offline = await checkBinfmt(await SnapshotTarget.open(`${dir}/b`));
        assert.deepEqual(offline, live);
        assert.equal(get(offline, "binfmt/entry-disabled").status, "critical");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
);

labTest(
  "check_binfmt on this machine: a registered nbr-test entry becomes the winner and goes again",
  async (t) => {
    const local = new LocalTarget({ timeoutMs: 30_000 });
    let status: string;
    try {
      status = (await Deno.readTextFile(`${BINFMT}/status`)).trim();
    } catch {
      await t.step({
        name: "binfmt_misc is not mounted on this machine",
        ignore: true,
        fn: () => {},
      });
      return;
    }
    assert.equal(status, "enabled");
    const name = `nbr-test-${crypto.randomUUID().slice(0, 8)}`;
    await withGlobalLock("binfmt", async () => {
      await Deno.writeTextFile(
        `${BINFMT}/register`,
        await aarch64Line(name, "/usr/bin/qemu-aarch64-static", "F"),
      );
      try {
        const findings = await checkBinfmt(local, { systems: ["aarch64-linux"] });
        assert.match(
          get(findings, "binfmt/entry").summary,
          new RegExp(`^aarch64-linux: ${name} runs it`),
        );
        assert.equal(
          (get(findings, "binfmt/entry").data as { order: string[] }).order[0],
          name,
        );
        assert.equal(get(findings, "binfmt/not-persistent").status, "warning");
        assert.equal(get(findings, "binfmt/smoke").status, "ok");
      } finally {
        await Deno.writeTextFile(`${BINFMT}/${name}`, "-1");
      }
    });
    assert.equal(await Deno.stat(`${BINFMT}/${name}`).then(() => true, () => false), false);
  },
);

labTest("check_binfmt on a builder whose sshd is down: one UNKNOWN line saying so", async () => {
  await withBuilder(async (_lab, builder, t) => {
    await builder.setFault("down");
    const findings = await checkBinfmt(t);
    assert.equal(findings.length, 1);
    assert.equal(findings[0]!.id, "binfmt/unreadable");
    assert.equal(findings[0]!.status, "unknown");
    assert.match(
      findings[0]!.summary,
      /^Cannot check builder1: could not reach the host: .*Connection refused/,
    );
  });
});
