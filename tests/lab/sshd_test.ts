import assert from "node:assert/strict";
import { labTest } from "./lab.ts";
import { startSshd } from "./sshd.ts";
import { isAlive, run } from "./_run.ts";

labTest(
  "startSshd() serves ssh on 127.0.0.1 with generated keys and strict host checking",
  async () => {
    const sshd = await startSshd({ hostAlias: "quoting-host" });
    try {
      assert.equal(sshd.host, "127.0.0.1");
      assert.equal(sshd.user, "root");
      const direct = await run(
        ["ssh", ...sshd.sshOptions, sshd.host, "--", "printf", "%s,", "'a b'", "'it'\\''s'"],
        { timeoutMs: 20_000 },
      );
      assert.equal(direct.code, 0, direct.stderr);
      assert.equal(direct.stdout, "a b,it's,");
      const alias = await run(["ssh", "-F", sshd.configFile, "quoting-host", "true"], {
        timeoutMs: 20_000,
      });
      assert.equal(alias.code, 0, alias.stderr);
      assert.equal(alias.stdout, "");
      const known = await Deno.readTextFile(sshd.knownHostsFile);
      assert.equal(known, `[127.0.0.1]:${sshd.port} ${sshd.hostPublicKey}\n`);
    } finally {
      await sshd.stop();
    }
    assert.equal(sshd.running, false);
    await assert.rejects(Deno.stat(sshd.dir));
  },
);

labTest("startSshd() refuses an unknown client key and SIGSTOP makes it hang", async () => {
  await using sshd = await startSshd();
  const stranger = await run([
    "ssh",
    ...sshd.sshOptions.filter((o) => o !== sshd.identityFile && o !== "-i"),
    "-i",
    `${sshd.dir}/ssh_host_ed25519_key`,
    sshd.host,
    "true",
  ], { timeoutMs: 20_000 });
  assert.equal(stranger.code, 255);
  assert.match(stranger.stderr, /Permission denied \(publickey\)/);
  const pid = sshd.pid;
  Deno.kill(pid, "SIGSTOP");
  const hung = await run(["ssh", "-o", "ConnectTimeout=1", ...sshd.sshOptions, sshd.host, "true"], {
    timeoutMs: 20_000,
  });
  Deno.kill(pid, "SIGCONT");
  assert.equal(hung.code, 255);
  assert.match(hung.stderr, /Connection timed out during banner exchange/);
  await sshd.stop();
  assert.equal(isAlive(pid), false);
});
