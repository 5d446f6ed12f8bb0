import assert from "node:assert/strict";
import {
  applyFileRecord,
  cleanTempFiles,
  fileChangeState,
  type FileOps,
  fileOpsFor,
  type FileRecordDetail,
  localFileOps,
  LockBusyError,
  reconcileFileRecord,
  revertFileRecord,
  sha256Hex,
  StateStore,
  targetFileOps,
  TEMP_MARK,
} from "../lib/atomic_file.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const isRoot = Deno.uid() === 0;
const MODULE = new URL("../lib/atomic_file.ts", import.meta.url).href;

const BACKENDS: [string, () => FileOps][] = [
  ["localFileOps", () => localFileOps()],
  ["targetFileOps", () => targetFileOps(new LocalTarget({ timeoutMs: 20_000 }))],
];

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "nbr-atomic-" });
}

for (const [name, make] of BACKENDS) {
  Deno.test(`${name}: read() is null for a missing file and byte-exact otherwise`, async () => {
    const dir = await tempDir();
    try {
      const ops = make();
      assert.equal(await ops.read(`${dir}/missing`), null);
      const bytes = new Uint8Array([0, 1, 2, 255, 254, 10, 13, 0xc3]);
      await Deno.writeFile(`${dir}/bin`, bytes);
      assert.deepEqual(await ops.read(`${dir}/bin`), bytes);
      await Deno.writeFile(`${dir}/empty`, new Uint8Array());
      assert.deepEqual(await ops.read(`${dir}/empty`), new Uint8Array());
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`${name}: writeAtomic() creates a 0644 file and keeps an existing file's mode`, async () => {
    const dir = await tempDir();
    try {
      const ops = make();
      await ops.writeAtomic(`${dir}/new.conf`, enc.encode("a\n"));
      assert.equal((await Deno.stat(`${dir}/new.conf`)).mode! & 0o777, 0o644);
      await Deno.writeTextFile(`${dir}/old.conf`, "old\n");
      await Deno.chmod(`${dir}/old.conf`, 0o640);
      await ops.writeAtomic(`${dir}/old.conf`, enc.encode("new\n"));
      assert.equal(await Deno.readTextFile(`${dir}/old.conf`), "new\n");
      assert.equal((await Deno.stat(`${dir}/old.conf`)).mode! & 0o777, 0o640);
      await ops.writeAtomic(`${dir}/old.conf`, enc.encode("x"), { mode: 0o600 });
      assert.equal((await Deno.stat(`${dir}/old.conf`)).mode! & 0o777, 0o600);
      assert.deepEqual((await ops.list(dir))?.filter((n) => n.includes(TEMP_MARK)), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test({
    name: `${name}: writeAtomic() keeps an existing file's owner and group`,
    ignore: !isRoot,
    async fn() {
      const dir = await tempDir();
      try {
        await Deno.writeTextFile(`${dir}/owned`, "1");
        await Deno.chown(`${dir}/owned`, 65534, 65534);
        await make().writeAtomic(`${dir}/owned`, enc.encode("2"));
        const info = await Deno.stat(`${dir}/owned`);
        assert.deepEqual([info.uid, info.gid], [65534, 65534]);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });

  Deno.test(`${name}: lstat() sees a symlink and where it points; realpath() resolves it`, async () => {
    const dir = await tempDir();
    try {
      const ops = make();
      await Deno.writeTextFile(`${dir}/real.conf`, "x\n");
      await Deno.symlink(`${dir}/real.conf`, `${dir}/nix.conf`);
      const info = await ops.lstat(`${dir}/nix.conf`);
      assert.equal(info?.type, "symlink");
      assert.equal(info?.linkTarget, `${dir}/real.conf`);
      assert.equal((await ops.lstat(`${dir}/real.conf`))?.type, "file");
      assert.equal((await ops.lstat(dir))?.type, "directory");
      assert.equal(await ops.lstat(`${dir}/none`), null);
      assert.equal(await ops.realpath(`${dir}/nix.conf`), await Deno.realPath(`${dir}/real.conf`));
      assert.equal(await ops.realpath(`${dir}/none`), null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`${name}: mkdirp(), list() and remove() handle absent paths quietly`, async () => {
    const dir = await tempDir();
    try {
      const ops = make();
      await ops.mkdirp(`${dir}/a/b/c`, 0o700);
      assert.equal((await Deno.stat(`${dir}/a/b/c`)).mode! & 0o777, 0o700);
      assert.deepEqual(await ops.list(`${dir}/a`), ["b"]);
      assert.equal(await ops.list(`${dir}/none`), null);
      await ops.remove(`${dir}/none`);
      await Deno.writeTextFile(`${dir}/f`, "");
      await ops.remove(`${dir}/f`);
      assert.equal(await ops.lstat(`${dir}/f`), null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`${name}: lock() is exclusive and names the holder to the one who waits`, async () => {
    const dir = await tempDir();
    try {
      const ops = make();
      const held = await ops.lock(`${dir}/lock`, { timeoutMs: 2000, owner: "first run, pid 1" });
      const started = Date.now();
      await assert.rejects(
        ops.lock(`${dir}/lock`, { timeoutMs: 1000, owner: "second" }),
        (error: Error) => {
          assert.ok(error instanceof LockBusyError);
          assert.match(error.message, /is locked by another run \(first run, pid 1\)/);
          return true;
        },
      );
      assert.ok(Date.now() - started >= 900, "it waited for the time-out");
      await held.release();
      await held.release();
      const again = await ops.lock(`${dir}/lock`, { timeoutMs: 2000, owner: "third" });
      await again.release();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

async function spawnHolder(dir: string, backend: "local" | "target"): Promise<Deno.ChildProcess> {
  const code = `
    import { localFileOps, targetFileOps } from ${JSON.stringify(MODULE)};
    import { LocalTarget } from ${
    JSON.stringify(new URL("../lib/local_target.ts", import.meta.url).href)
  };
    const ops = ${backend === "local" ? "localFileOps()" : "targetFileOps(new LocalTarget())"};
    await ops.lock(${
    JSON.stringify(`${dir}/lock`)
  }, { timeoutMs: 5000, owner: "holder " + Deno.pid });
    console.log("held");
    await new Promise(() => setTimeout(() => {}, 600000));
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const first = await reader.read();
  assert.equal(dec.decode(first.value).trim(), "held");
  reader.releaseLock();
  return child;
}

for (const backend of ["local", "target"] as const) {
  Deno.test(`${backend} lock: a holder killed with SIGKILL releases it for the next run`, async () => {
    const dir = await tempDir();
    const ops = backend === "local" ? localFileOps() : targetFileOps(new LocalTarget());
    const child = await spawnHolder(dir, backend);
    try {
      await assert.rejects(
        ops.lock(`${dir}/lock`, { timeoutMs: 500, owner: "me" }),
        new RegExp(`locked by another run \\(holder ${child.pid}\\)`),
      );
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel();
      // The target lock's heartbeat notices the dead reader within about a second.
      const lock = await ops.lock(`${dir}/lock`, { timeoutMs: 5000, owner: "me" });
      await lock.release();
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // gone
      }
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("writeAtomic(): a writer killed at random points leaves the old or the new file, never a mix", async () => {
  const dir = await tempDir();
  const path = `${dir}/big.conf`;
  const oldBytes = new Uint8Array(8 * 1024 * 1024).fill(0x61);
  await Deno.writeFile(path, oldBytes);
  const oldSha = await sha256Hex(oldBytes);
  const newSha = await sha256Hex(new Uint8Array(8 * 1024 * 1024).fill(0x62));
  const code = `
    import { localFileOps } from ${JSON.stringify(MODULE)};
    console.log("start");
    await localFileOps().writeAtomic(${
    JSON.stringify(path)
  }, new Uint8Array(8 * 1024 * 1024).fill(0x62));
  `;
  const seen = new Set<string>();
  try {
    for (let i = 0; i < 12; i++) {
      await Deno.writeFile(path, oldBytes);
      const child = new Deno.Command(Deno.execPath(), {
        args: ["eval", "--ext=ts", code],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const reader = child.stdout.getReader();
      await reader.read();
      await new Promise((r) => setTimeout(r, Math.random() * 150));
      try {
        child.kill("SIGKILL");
      } catch {
        // it finished first: the new file
      }
      await child.status;
      reader.releaseLock();
      await child.stdout.cancel();
      const sha = await sha256Hex(await Deno.readFile(path));
      assert.ok(sha === oldSha || sha === newSha, `iteration ${i}: a mixed file`);
      seen.add(sha === oldSha ? "old" : "new");
      await cleanTempFiles(localFileOps(), path);
      assert.deepEqual(await localFileOps().list(dir), ["big.conf"]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.ok(seen.size >= 1);
  console.log(`killed writers left: ${[...seen].join(" and ")} content`);
});

Deno.test("fileOpsFor() refuses a snapshot", () => {
  const snapshot = new SnapshotTarget({
    meta: { host: "b", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [],
    paths: {},
    files: {},
  });
  assert.throws(() => fileOpsFor(snapshot), /A snapshot cannot be changed/);
  assert.equal(fileOpsFor(new LocalTarget()).host, "localhost");
});

Deno.test("StateStore.open() creates a private directory; openExisting() does not create one", async () => {
  const dir = await tempDir();
  try {
    assert.equal(await StateStore.openExisting(localFileOps(), `${dir}/state`), null);
    assert.equal(await Deno.stat(`${dir}/state`).catch(() => null), null);
    const store = await StateStore.open(localFileOps(), `${dir}/state/`);
    assert.equal(store.dir, `${dir}/state`);
    assert.equal((await Deno.stat(`${dir}/state/records`)).mode! & 0o777, 0o700);
    assert.ok(await StateStore.openExisting(localFileOps(), `${dir}/state`));
    await assert.rejects(
      StateStore.open(localFileOps(), "relative/state"),
      /must be an absolute path/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("StateStore.list() filters records and names a damaged one", async () => {
  const dir = await tempDir();
  try {
    const store = await StateStore.open(localFileOps(), dir);
    const a = store.newRecord("oom_mitigate", "zram", { device: "zram1" });
    const b = store.newRecord("other_tool", "file", { path: "/x" });
    b.status = "applied";
    await store.save(a);
    await store.save(b);
    assert.match(a.id, /^\d{8}T\d{6}Z-zram-[0-9a-f]{6}$/);
    assert.deepEqual((await store.list({ tool: "oom_mitigate" })).map((r) => r.id), [a.id]);
    assert.deepEqual((await store.list({ status: ["applied"] })).map((r) => r.id), [b.id]);
    await Deno.writeTextFile(store.recordPath("20261125T000000Z-bad-000000"), '{"id": 5}');
    await assert.rejects(store.list(), /records\/20261125T000000Z-bad-000000\.json: id/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("applyFileRecord() then revertFileRecord() restore a file byte for byte with its mode", async () => {
  const dir = await tempDir();
  try {
    const path = `${dir}/nix.conf`;
    const original = "# no final newline\r\nmax-jobs = 8";
    await Deno.writeTextFile(path, original);
    await Deno.chmod(path, 0o640);
    const store = await StateStore.open(localFileOps(), `${dir}/state`);
    const record = await store.withLock(() =>
      applyFileRecord(store, { tool: "t", path, content: "max-jobs = 1\n", extra: { why: "test" } })
    );
    assert.ok(record);
    assert.equal(record.status, "applied");
    assert.equal(record.detail.why, "test");
    const detail = record.detail as FileRecordDetail;
    assert.equal(detail.before?.mode, 0o640);
    assert.equal(await Deno.readTextFile(detail.before!.backup), original);
    assert.equal(await Deno.readTextFile(path), "max-jobs = 1\n");
    assert.equal(await fileChangeState(store.ops, detail), "after");
    assert.equal(await store.withLock(() => revertFileRecord(store, record)), "restored");
    assert.equal(await Deno.readTextFile(path), original);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o640);
    assert.equal(await store.withLock(() => revertFileRecord(store, record)), "already");
    assert.equal((await store.list())[0]?.status, "reverted");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("applyFileRecord() does nothing when the file already has the content", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(`${dir}/f`, "same\n");
    const store = await StateStore.open(localFileOps(), `${dir}/state`);
    assert.equal(
      await applyFileRecord(store, { tool: "t", path: `${dir}/f`, content: "same\n" }),
      null,
    );
    assert.deepEqual(await store.list(), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("revertFileRecord() removes a file the apply created, and refuses one changed since", async () => {
  const dir = await tempDir();
  try {
    const store = await StateStore.open(localFileOps(), `${dir}/state`);
    const created = await applyFileRecord(store, { tool: "t", path: `${dir}/new`, content: "x\n" });
    assert.equal((created!.detail as FileRecordDetail).before, null);
    assert.equal(await revertFileRecord(store, created!), "restored");
    assert.equal(await Deno.stat(`${dir}/new`).catch(() => null), null);

    await Deno.writeTextFile(`${dir}/edited`, "v1\n");
    const record = await applyFileRecord(store, {
      tool: "t",
      path: `${dir}/edited`,
      content: "v2\n",
    });
    await Deno.writeTextFile(`${dir}/edited`, "someone else's v3\n");
    assert.equal(await revertFileRecord(store, record!), "conflict");
    assert.equal(await Deno.readTextFile(`${dir}/edited`), "someone else's v3\n");
    assert.equal(record!.status, "applied");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("revertFileRecord() refuses to restore from a damaged backup and leaves the file", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(`${dir}/f`, "v1\n");
    const store = await StateStore.open(localFileOps(), `${dir}/state`);
    const record = await applyFileRecord(store, { tool: "t", path: `${dir}/f`, content: "v2\n" });
    await Deno.writeTextFile((record!.detail as FileRecordDetail).before!.backup, "tampered\n");
    await assert.rejects(revertFileRecord(store, record!), /is missing or damaged/);
    assert.equal(await Deno.readTextFile(`${dir}/f`), "v2\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("reconcileFileRecord() settles an interrupted edit by what the file holds", async () => {
  const dir = await tempDir();
  try {
    const store = await StateStore.open(localFileOps(), `${dir}/state`);
    await Deno.writeTextFile(`${dir}/f`, "v1\n");
    // Interrupt right after the backup and the 'applying' record.
    const stop = new Error("killed");
    await assert.rejects(
      applyFileRecord(store, {
        tool: "t",
        path: `${dir}/f`,
        content: "v2\n",
        onStep: (step) => {
          if (step === "backup") throw stop;
        },
      }),
      /killed/,
    );
    const [pending] = await store.list({ status: ["applying"] });
    assert.ok(pending);
    await Deno.writeTextFile(`${dir}/.f${TEMP_MARK}abc123`, "half");
    assert.equal(await reconcileFileRecord(store, pending), "before");
    assert.equal(pending.status, "abandoned");
    assert.deepEqual(await localFileOps().list(dir), ["f", "state"], "stray temp file removed");

    // Interrupted after the replace: the edit landed.
    await assert.rejects(
      applyFileRecord(store, {
        tool: "t",
        path: `${dir}/f`,
        content: "v2\n",
        onStep: (step) => {
          if (step === "replace") throw stop;
        },
      }),
    );
    const [landed] = await store.list({ status: ["applying"] });
    assert.equal(await reconcileFileRecord(store, landed!), "after");
    assert.equal(landed!.status, "applied");

    // Someone else changed it meanwhile: left applying.
    await assert.rejects(
      applyFileRecord(store, {
        tool: "t",
        path: `${dir}/f`,
        content: "v3\n",
        onStep: (step) => {
          if (step === "replace") throw stop;
        },
      }),
    );
    await Deno.writeTextFile(`${dir}/f`, "other\n");
    const [changed] = await store.list({ status: ["applying"] });
    assert.equal(await reconcileFileRecord(store, changed!), "changed");
    assert.equal((await store.list({ status: ["applying"] })).length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("StateStore.withLock() over the target backend keeps two runs apart", async () => {
  const dir = await tempDir();
  try {
    const ops = targetFileOps(new LocalTarget());
    const store = await StateStore.open(ops, dir);
    const order: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = store.withLock(async () => {
      order.push("first in");
      await gate;
      order.push("first out");
    }, { owner: "first" });
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(
      store.withLock(() => Promise.resolve(order.push("second")), { timeoutMs: 1000 }),
      /locked by another run \(first\)/,
    );
    release();
    await first;
    await store.withLock(() => Promise.resolve(order.push("third")));
    assert.deepEqual(order, ["first in", "first out", "third"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
