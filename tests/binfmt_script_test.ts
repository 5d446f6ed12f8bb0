/**
 * scripts/check_binfmt.ts as users run it: exit codes, one-line errors, a snapshot bundle captured
 * from a lab builder, and the whole not-mounted → --apply → --revert cycle on real binfmt_misc in a
 * private user namespace (its own binfmt_misc instance, kernel 6.7+), so nothing global changes.
 */
import assert from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = `${ROOT}scripts/check_binfmt.ts`;
const BUNDLE = `${ROOT}tests/fixtures/binfmt/bundle-lab-entry-disabled`;
const decoder = new TextDecoder();

async function run(
  argv: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

const script = (...args: string[]) => run([Deno.execPath(), "run", "-A", SCRIPT, ...args]);

function namespacedBinfmt(): boolean {
  const [major = 0, minor = 0] = Deno.osRelease().split(/[.-]/).map(Number);
  return Deno.uid() === 0 && (major > 6 || (major === 6 && minor >= 7));
}

Deno.test("check_binfmt --help exits 0 and lists --system, --smoke, --apply, --revert with examples", async () => {
  const { code, stdout } = await script("--help");
  assert.equal(code, 0);
  for (
    const flag of [
      "--system <system>",
      "--smoke [kind]",
      "--no-smoke",
      "--apply",
      "--revert",
      "--state-dir <dir>",
    ]
  ) {
    assert.ok(stdout.includes(flag), flag);
  }
  assert.match(stdout, /Examples:\n {2}deno run -A scripts\/check_binfmt.ts /);
  assert.match(stdout, /Runbook: runbook\/check_binfmt.md/);
});

Deno.test("check_binfmt refuses a bad --system, --smoke value or flag mix with exit 3 and one line", async () => {
  const cases: [string[], RegExp][] = [
    [["--system", "aarch64 linux"], /^check_binfmt: .*'aarch64 linux' is not a Nix system name/],
    [
      ["--smoke=maybe"],
      /^check_binfmt: --smoke 'maybe': expected --smoke, --smoke=exec or --smoke=nix$/,
    ],
    [["--apply", "--revert"], /^check_binfmt: --apply and --revert cannot be used both$/],
    [["--snapshot", BUNDLE, "--smoke"], /^check_binfmt: A snapshot cannot run programs/],
    [["--snapshot", BUNDLE, "--apply"], /^check_binfmt: A snapshot cannot be changed/],
  ];
  for (const [args, message] of cases) {
    const { code, stdout, stderr } = await script(...args);
    assert.equal(code, 3, args.join(" "));
    assert.equal(stdout, "");
    assert.equal(stderr.trim().split("\n").length, 1, stderr);
    assert.match(stderr.trim(), message);
  }
});

Deno.test("check_binfmt --snapshot of a builder with a disabled entry exits 2 naming it, runs nothing", async () => {
  const { code, stdout } = await script("--snapshot", BUNDLE);
  assert.equal(code, 2);
  assert.match(stdout, /^check_binfmt on builder1: CRITICAL\n/);
  assert.match(
    stdout,
    /CRITICAL {2}binfmt\/entry-disabled {2}aarch64-linux: its binfmt entry qemu-aarch64 is disabled on builder1/,
  );
  assert.doesNotMatch(stdout, /binfmt\/smoke/);
  const json = JSON.parse((await script("--snapshot", BUNDLE, "--json")).stdout);
  assert.equal(json.status, "critical");
  assert.deepEqual(json.data.systems, [{ system: "aarch64-linux", reasons: ["extra-platforms"] }]);
  assert.deepEqual(json.data.binfmt.entries, [{
    name: "qemu-aarch64",
    enabled: false,
    interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
    flags: "POF",
  }]);
});

Deno.test("check_binfmt --system mips64el-linux checks the entry but reports the smoke test UNKNOWN (no program)", async () => {
  const { stdout } = await script("--system", "mips64el-linux", "--json");
  const smoke = JSON.parse(stdout).findings.filter((f: { id: string }) => f.id === "binfmt/smoke");
  assert.deepEqual(smoke.map((f: { status: string }) => f.status), ["unknown"]);
  assert.match(smoke[0].summary, /^mips64el-linux: no smoke program exists for MIPS/);
  const ok = JSON.parse((await script("--system", "x86_64-linux", "--json")).stdout).findings
    .filter((f: { id: string }) => f.id === "binfmt/smoke");
  assert.deepEqual(ok.map((f: { status: string }) => f.status), ["ok"]);
});

Deno.test({
  name:
    "check_binfmt: not mounted → --apply mounts and registers qemu-aarch64 → OK → --revert → not mounted",
  ignore: !namespacedBinfmt(),
  async fn() {
    const state = await Deno.makeTempDir({ prefix: "nbr-binfmt-state-" });
    // A private user + mount namespace; a tmpfs hides the machine's binfmt_misc mount, so the
    // directory looks exactly like an unmounted one. Mounting binfmt_misc there creates this
    // namespace's own instance.
    const steps = [
      "--no-smoke --system aarch64-linux",
      "--apply --system aarch64-linux --state-dir $S",
      "--apply --system aarch64-linux --state-dir $S --json",
      "--revert --state-dir $S",
      "--revert --state-dir $S",
      "--system aarch64-linux",
    ];
    const inner = [
      "set -u",
      "mount -t tmpfs -o size=1m tmpfs /proc/sys/fs/binfmt_misc || exit 99",
      ...steps.map((args, i) =>
        `echo "@@step ${i}"; "$D" run -A "$P" ${args.replace("$S", '"$S"')}; echo "@@code $?"`
      ),
    ].join("\n");
    try {
      const out = await run(
        [
          "unshare",
          "--user",
          "--map-root-user",
          "--mount",
          "--propagation",
          "private",
          "sh",
          "-c",
          inner,
        ],
        {
          D: Deno.execPath(),
          P: SCRIPT,
          S: state,
          PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
          NIX_CONFIG: "extra-platforms = aarch64-linux",
        },
      );
      assert.notEqual(out.code, 99, out.stderr);
      const results = out.stdout.split(/^@@step \d+\n/m).slice(1).map((chunk) => {
        const code = Number(/^@@code (\d+)$/m.exec(chunk)?.[1]);
        return { code, text: chunk.replace(/^@@code \d+\n?/m, "") };
      });
      assert.equal(results.length, steps.length, out.stdout + out.stderr);
      const [notMounted, apply, again, revert, revertAgain, after] = results;

      assert.equal(notMounted!.code, 2);
      assert.match(
        notMounted!.text,
        /CRITICAL {2}binfmt\/not-mounted {2}binfmt_misc is not mounted on localhost/,
      );
      assert.match(
        notMounted!.text,
        /fix: mount -t binfmt_misc binfmt_misc \/proc\/sys\/fs\/binfmt_misc/,
      );

      assert.equal(apply!.code, 0, apply!.text);
      assert.match(
        apply!.text,
        /OK {2}binfmt\/applied {2}mounted binfmt_misc on \/proc\/sys\/fs\/binfmt_misc on localhost/,
      );
      assert.match(
        apply!.text,
        /binfmt\/applied {2}registered qemu-aarch64 from \/usr\/lib\/binfmt.d\/qemu-aarch64.conf:1/,
      );
      assert.match(
        apply!.text,
        /binfmt\/smoke {4}aarch64-linux: a generated program ran on localhost/,
      );

      assert.equal(again!.code, 0);
      const json = JSON.parse(again!.text);
      assert.match(json.findings[0].summary, /^nothing to change on localhost/);
      assert.equal(json.data.binfmt.entries[0].name, "qemu-aarch64");

      assert.equal(revert!.code, 0);
      assert.match(revert!.text, /binfmt\/reverted {2}undid on localhost: registered qemu-aarch64/);
      assert.match(revert!.text, /binfmt\/reverted {2}undid on localhost: mounted binfmt_misc/);
      assert.match(revertAgain!.text, /nothing to revert on localhost/);

      assert.equal(after!.code, 2);
      assert.match(after!.text, /binfmt\/not-mounted/);
      assert.match(after!.text, /CRITICAL {2}binfmt\/smoke .*the kernel refused it \(exit 126/);
    } finally {
      await Deno.remove(state, { recursive: true });
    }
  },
});
