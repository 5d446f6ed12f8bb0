import assert from "node:assert/strict";
import { LocalTarget } from "../lib/local_target.ts";
import { SshTarget } from "../lib/ssh_target.ts";
import { parseSshHost } from "../lib/host.ts";
import { shellJoin } from "../lib/shell_quote.ts";
import { type Sshd, startSshd } from "./lab/sshd.ts";

import { labTest } from "./lab/lab.ts";

/** ssh arguments that reach a test sshd and nothing else (no user config, its own known_hosts). */
function sshArgsFor(sshd: Sshd): string[] {
  return [
    "-F",
    "/dev/null",
    "-i",
    sshd.identityFile,
    "-o",
    `UserKnownHostsFile=${sshd.knownHostsFile}`,
  ];
}

/** Arguments that break naive quoting. */
const NASTY = [
  "plain",
  "with space",
  "it's",
  'double "quotes"',
  "$(touch /tmp/nbr-pwned)",
  "`touch /tmp/nbr-pwned`",
  "new\nline",
  "*",
  "?[a-z]",
  "~root",
  "ünïcødé ✓",
  "-n",
  "--",
  "",
  "back\\slash",
  "tab\there",
  "semi;colon && pipe | amp &",
  "'",
  "''",
  "$HOME ${PATH}",
];

Deno.test("shellJoin() round-trips every nasty argument through a real sh -c", async () => {
  const target = new LocalTarget({ timeoutMs: 5000 });
  const script = `for a in ${shellJoin(NASTY)}; do printf '%s\\0' "$a"; done`;
  const result = await target.run(["sh", "-c", script]);
  assert.equal(result.code, 0);
  assert.deepEqual(result.stdout.split("\0").slice(0, -1), NASTY);
});

Deno.test("LocalTarget.run() passes argv without a shell", async () => {
  const target = new LocalTarget({ timeoutMs: 5000 });
  const result = await target.run(["printf", "%s\\0", ...NASTY]);
  assert.deepEqual(result.stdout.split("\0").slice(0, -1), NASTY);
});

Deno.test("LocalTarget.run() kills a command and its children at the time-out", async () => {
  const target = new LocalTarget();
  const started = Date.now();
  const result = await target.run(["sh", "-c", "sleep 30 & sleep 30"], { timeoutMs: 300 });
  assert.equal(result.failure, "timeout");
  assert.equal(result.code, 124);
  assert.ok(Date.now() - started < 5000);
});

Deno.test("LocalTarget.run() reports a missing program as not-found, exit 127", async () => {
  const result = await new LocalTarget().run(["nbr-no-such-program"]);
  assert.equal(result.code, 127);
  assert.equal(result.failure, "not-found");
});

Deno.test("LocalTarget.run() never runs past the target's deadline", async () => {
  const target = new LocalTarget({ deadline: Date.now() + 300 });
  const result = await target.run(["sleep", "10"], { timeoutMs: 60_000 });
  assert.equal(result.failure, "timeout");
});

Deno.test("LocalTarget.readFile() returns null for an absent file and throws for a directory", async () => {
  const target = new LocalTarget();
  assert.equal(await target.readFile("/nonexistent/nix.conf"), null);
  await assert.rejects(target.readFile("/etc"), /localhost: cannot read \/etc/);
});

Deno.test("LocalTarget.readFile() reads /proc files", async () => {
  const text = await new LocalTarget().readFile("/proc/meminfo");
  assert.match(text ?? "", /^MemTotal:/);
});

Deno.test("parseSshHost() refuses option injection, whitespace and shell metacharacters", () => {
  for (
    const bad of [
      "-oProxyCommand=touch",
      "h;touch",
      "$(touch)",
      "a b",
      "host\nother",
      "ssh://-oProxyCommand=x",
      "user@-host",
      "`id`",
      "",
      "http://host",
      "h:99999",
      "fe80::1",
    ]
  ) {
    assert.throws(() => parseSshHost(bad), /Host '/, bad);
  }
});

Deno.test("parseSshHost() accepts the forms Nix machines files use", () => {
  assert.equal(parseSshHost("nixos").destination, "nixos");
  assert.equal(parseSshHost("ssh://builder@nixos").destination, "builder@nixos");
  assert.deepEqual(parseSshHost("[::1]:2222").port, 2222);
  assert.equal(parseSshHost("[fe80::1%eth0]").hostname, "fe80::1%eth0");
  assert.equal(parseSshHost("ssh-ng://root@10.0.0.2/").destination, "root@10.0.0.2");
  assert.equal(parseSshHost("ssh-ng://h?ssh-key=/k&remote-store=x").params["ssh-key"], "/k");
});

Deno.test("SshTarget refuses a hostile host before running anything", async () => {
  const canary = await Deno.makeTempFile();
  await Deno.remove(canary);
  for (const host of [`h;touch ${canary}`, `$(touch ${canary})`, `-oProxyCommand=touch`]) {
    assert.throws(() => new SshTarget(host), /Host/);
  }
  await assert.rejects(Deno.stat(canary), Deno.errors.NotFound);
});

labTest("SshTarget delivers every nasty argument byte-identical through a real sshd", async () => {
  await using sshd = await startSshd();
  const target = new SshTarget(`root@127.0.0.1:${sshd.port}`, {
    timeoutMs: 15_000,
    sshArgs: sshArgsFor(sshd),
  });
  try {
    const result = await target.run(["printf", "%s\\0", ...NASTY]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.stdout.split("\0").slice(0, -1), NASTY);
    const stdin = await target.run(["cat"], { stdin: "from stdin\n" });
    assert.equal(stdin.stdout, "from stdin\n");
    const env = await target.run(["sh", "-c", 'printf %s "$NBR_X"'], { env: { NBR_X: "a b'c" } });
    assert.equal(env.stdout, "a b'c");
    assert.equal(await target.readFile("/nonexistent/file"), null);
    assert.match((await target.readFile("/etc/hostname")) ?? "", /\S/);
    assert.ok((await target.readDir("/etc"))?.some((e) => e.name === "passwd"));
    const info = await target.stat("/etc/passwd");
    assert.equal(info?.type, "file");
    assert.equal(info?.uid, 0);
    const own = await target.run(["sh", "-c", "exit 7"]);
    assert.equal(own.code, 7);
    assert.equal(own.failure, undefined);
  } finally {
    await target.close();
  }
});

labTest("SshTarget reuses one connection for many commands", async () => {
  await using sshd = await startSshd();
  const target = new SshTarget(`root@127.0.0.1:${sshd.port}`, {
    sshArgs: sshArgsFor(sshd),
  });
  try {
    const pids = new Set<string>();
    for (let i = 0; i < 5; i++) {
      // $PPID of the remote shell is the sshd session process; one master means one session parent.
      const result = await target.run(["sh", "-c", "cat /proc/$PPID/status | grep ^PPid"]);
      pids.add(result.stdout.trim());
    }
    assert.equal(pids.size, 1);
  } finally {
    await target.close();
  }
});

labTest("SshTarget tells an unreachable host from a failing remote command", async () => {
  await using sshd = await startSshd();
  const port = sshd.port;
  await sshd.stop();
  const target = new SshTarget(`root@127.0.0.1:${port}`, {
    sshArgs: ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"],
  });
  try {
    const result = await target.run(["true"]);
    assert.equal(result.failure, "unreachable");
    assert.match(result.stderr, /Connection refused/);
    await assert.rejects(target.readFile("/etc/hostname"), /could not reach the host/);
  } finally {
    await target.close();
  }
});

labTest("SshTarget ends a hung host within its time-out", async () => {
  await using sshd = await startSshd();
  Deno.kill(sshd.pid, "SIGSTOP");
  try {
    const target = new SshTarget(`root@127.0.0.1:${sshd.port}`, {
      timeoutMs: 2000,
      sshArgs: sshArgsFor(sshd),
    });
    const started = Date.now();
    const result = await target.run(["true"]);
    assert.equal(result.failure, "unreachable");
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    await target.close();
  } finally {
    Deno.kill(sshd.pid, "SIGCONT");
  }
});

labTest("SshTarget kills the remote process on time-out", async () => {
  await using sshd = await startSshd();
  const target = new SshTarget(`root@127.0.0.1:${sshd.port}`, {
    sshArgs: sshArgsFor(sshd),
  });
  try {
    const result = await target.run(["sleep", "7391"], { timeoutMs: 1000 });
    assert.equal(result.failure, "timeout");
    // The remote watchdog kills the command shortly after the local time-out.
    let alive = true;
    for (let i = 0; i < 40 && alive; i++) {
      const ps = await new LocalTarget().run(["pgrep", "-f", "^sleep 7391$"]);
      alive = ps.code === 0;
      if (alive) await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(alive, false, "remote sleep still running");
  } finally {
    await target.close();
  }
});
