import assert from "node:assert/strict";
import { LocalTarget } from "../lib/local_target.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";
import {
  checkZramName,
  chooseAlgorithm,
  configureZram,
  hotAddZram,
  parseCompAlgorithm,
  parseMmStat,
  parseProcSwaps,
  readSwapLabel,
  readZramState,
  removeZram,
  swapOnZram,
} from "../lib/zram.ts";
import { withGlobalLock } from "./lab/lock.ts";

const FIXTURES = new URL("./fixtures/oom-proc/", import.meta.url).pathname;
const fixture = (name: string) => Deno.readTextFileSync(FIXTURES + name);
const isRoot = Deno.uid() === 0;
const hasZram = (() => {
  try {
    Deno.statSync("/sys/class/zram-control");
    return true;
  } catch {
    return false;
  }
})();

Deno.test("parseProcSwaps() reads a zram swap in use on Linux 6.18", () => {
  assert.deepEqual(parseProcSwaps(fixture("swaps-zram-in-use-linux-6.18.txt")), [{
    path: "/dev/zram1",
    type: "partition",
    sizeBytes: 2467836 * 1024,
    usedBytes: 482820 * 1024,
    priority: 100,
  }]);
  assert.deepEqual(parseProcSwaps(fixture("swaps-empty-linux-6.18.txt")), []);
});

Deno.test("parseProcSwaps() unescapes spaces and rejects a garbled line", () => {
  const swaps = parseProcSwaps("Filename Type Size Used Priority\n/swap\\040file file 1024 0 -2\n");
  assert.equal(swaps[0]?.path, "/swap file");
  assert.equal(swaps[0]?.priority, -2);
  assert.throws(() => parseProcSwaps("Filename\n/dev/sda2 partition\n"), /\/proc\/swaps:2/);
});

Deno.test("parseCompAlgorithm() finds the selected algorithm wherever the brackets are", () => {
  assert.deepEqual(parseCompAlgorithm(fixture("zram-comp_algorithm-linux-6.18.txt")), {
    selected: "lzo-rle",
    available: ["lzo-rle", "lzo", "lz4"],
  });
  assert.equal(
    parseCompAlgorithm(fixture("zram-comp_algorithm-selected-linux-6.18.txt")).selected,
    "lz4",
  );
  assert.deepEqual(parseCompAlgorithm(""), { available: [] });
});

Deno.test("parseMmStat() reads a zram device holding 470 MiB of incompressible pages", () => {
  assert.deepEqual(parseMmStat(fixture("zram-mm_stat-in-use-linux-6.18.txt")), {
    origDataBytes: 494927872,
    comprDataBytes: 417977550,
    memUsedBytes: 420335616,
    memLimitBytes: 0,
    memUsedMaxBytes: 420335616,
  });
  assert.throws(() => parseMmStat("1 2 3"), /expected at least 5 numbers/);
});

Deno.test("chooseAlgorithm() prefers zstd, then lz4, and returns null when nothing fits", () => {
  assert.equal(chooseAlgorithm(["lzo", "zstd", "lz4"]), "zstd");
  assert.equal(chooseAlgorithm(["lzo-rle", "lzo", "lz4"]), "lz4");
  assert.equal(chooseAlgorithm(["842"]), null);
});

Deno.test("checkZramName() refuses anything that is not zramN", () => {
  assert.equal(checkZramName("zram12"), "zram12");
  for (const bad of ["zram", "sda", "zram1/../../x", "zram-1"]) {
    assert.throws(() => checkZramName(bad), /is not a zram device name/, bad);
  }
});

async function fakeSysfs(devices: Record<string, { disksize: string; algo: string }>) {
  const root = await Deno.makeTempDir({ prefix: "nbr-sysfs-" });
  await Deno.mkdir(`${root}/block/vda`, { recursive: true });
  for (const [name, d] of Object.entries(devices)) {
    await Deno.mkdir(`${root}/block/${name}`, { recursive: true });
    await Deno.writeTextFile(`${root}/block/${name}/disksize`, d.disksize + "\n");
    await Deno.writeTextFile(`${root}/block/${name}/comp_algorithm`, d.algo + "\n");
  }
  return root;
}

Deno.test("readZramState() with a sysfs root lacking zram says zram is unavailable", async () => {
  const root = await fakeSysfs({});
  try {
    const state = await readZramState(new LocalTarget(), { sysfsRoot: root });
    assert.equal(state.available, false);
    assert.equal(state.hotAdd, false);
    assert.deepEqual(state.devices, []);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("readZramState() without hot-add (zram module, no zram-control) is available but cannot hot-add", async () => {
  const root = await fakeSysfs({ zram0: { disksize: "0", algo: "[lzo] lz4" } });
  await Deno.mkdir(`${root}/module/zram`, { recursive: true });
  try {
    const state = await readZramState(new LocalTarget(), { sysfsRoot: root });
    assert.equal(state.available, true);
    assert.equal(state.hotAdd, false);
    assert.deepEqual(state.devices.map((d) => [d.name, d.owner, d.algorithm]), [[
      "zram0",
      "unused",
      "lzo",
    ]]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("readZramState() tells apart a device of ours, of zram-generator and of someone else", async () => {
  const target = new SnapshotTarget({
    meta: { host: "nixos", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [],
    paths: {
      "/sys/class/zram-control": { exists: true, entries: ["hot_add", "hot_remove"] },
      "/sys/module/zram": { exists: true, entries: [] },
      "/sys/block": { exists: true, entries: ["vda", "zram0", "zram1", "zram2"] },
      "/run/systemd/generator": { exists: true, entries: ["systemd-zram-setup@zram0.service"] },
    },
    files: {
      "/proc/swaps":
        "Filename Type Size Used Priority\n/dev/zram0 partition 8388604 0 5\n/dev/zram2 partition 1024 0 -2\n",
      "/sys/block/zram0/disksize": "8589934592\n",
      "/sys/block/zram0/comp_algorithm": "lzo lz4 [zstd]\n",
      "/sys/block/zram0/mm_stat": "0 0 0 0 0 0 0 0 0\n",
      "/sys/block/zram1/disksize": "1073741824\n",
      "/sys/block/zram1/comp_algorithm": "lzo [lz4] zstd\n",
      "/sys/block/zram1/mm_stat": "4096 74 12288 0 12288 0 0 0 0\n",
      "/sys/block/zram2/disksize": "1048576\n",
      "/sys/block/zram2/comp_algorithm": "[lzo] lz4 zstd\n",
      "/sys/block/zram2/mm_stat": "0 0 0 0 0 0 0 0 0\n",
    },
  });
  const state = await readZramState(target, { ours: new Set(["zram1"]) });
  assert.deepEqual(state.devices.map((d) => [d.name, d.owner]), [
    ["zram0", "zram-generator"],
    ["zram1", "ours"],
    ["zram2", "other"],
  ]);
  assert.equal(state.devices[0]?.swap?.priority, 5);
  assert.equal(state.devices[1]?.mmStat?.comprDataBytes, 74);
});

Deno.test({
  name:
    "hotAddZram(), configureZram(), swapOnZram() and removeZram() make and remove a real zram swap",
  ignore: !isRoot || !hasZram,
  async fn() {
    await withGlobalLock("zram", async () => {
      const target = new LocalTarget();
      const before = await readZramState(target);
      const note = await Deno.makeTempFile({ prefix: "nbr-hot-add-" });
      let device: string | undefined;
      try {
        device = await hotAddZram(target, { noteFile: note });
        assert.match(device, /^zram\d+$/);
        assert.equal(`zram${(await Deno.readTextFile(note)).trim()}`, device);
        assert.ok(!before.devices.some((d) => d.name === device), "a new device");
        const algorithm = chooseAlgorithm(before.devices[0]?.algorithms ?? ["lzo"]) ?? "lzo";
        await configureZram(target, device, { algorithm, sizeBytes: 64 * 1024 * 1024 });
        await swapOnZram(target, device, { label: "nbr-test-zram", priority: 77 });
        assert.equal(await readSwapLabel(target, device), "nbr-test-zram");
        const on = await readZramState(target, { ours: new Set([device]) });
        const mine = on.devices.find((d) => d.name === device)!;
        assert.equal(mine.owner, "ours");
        assert.equal(mine.diskSizeBytes, 64 * 1024 * 1024);
        assert.equal(mine.algorithm, algorithm);
        assert.equal(mine.swap?.priority, 77);
        assert.deepEqual(await removeZram(target, device), [
          `swapoff /dev/${device}`,
          `reset /dev/${device}`,
          `hot-remove /dev/${device}`,
        ]);
        assert.deepEqual(await removeZram(target, device), [], "a second removal does nothing");
        const after = await readZramState(target);
        assert.deepEqual(
          after.devices.map((d) => [d.name, d.diskSizeBytes]),
          before.devices.map((d) => [d.name, d.diskSizeBytes]),
          "the devices that were there are as they were",
        );
      } finally {
        if (device !== undefined) await removeZram(target, device).catch(() => {});
        await Deno.remove(note).catch(() => {});
      }
    });
  },
});
