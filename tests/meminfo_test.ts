import assert from "node:assert/strict";
import { formatBytes, parseMeminfo, parseSize, readMeminfo } from "../lib/meminfo.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";

const FIXTURES = new URL("./fixtures/oom-proc/", import.meta.url).pathname;
const fixture = (name: string) => Deno.readTextFileSync(FIXTURES + name);

Deno.test("parseMeminfo() reads a Linux 6.18 /proc/meminfo in bytes", () => {
  const info = parseMeminfo(fixture("meminfo-linux-6.18-vm.txt"));
  assert.equal(info.totalBytes, 24684092 * 1024);
  assert.equal(info.availableBytes, 24089408 * 1024);
  assert.equal(info.availableEstimated, false);
  assert.equal(info.swapTotalBytes, 0);
  assert.equal(info.fields.HugePages_Total, 0);
});

Deno.test("parseMeminfo() reads swap in use while a zram swap holds pages", () => {
  const info = parseMeminfo(fixture("meminfo-linux-6.18-zram-in-use.txt"));
  assert.equal(info.swapTotalBytes, 2467836 * 1024);
  assert.equal(info.swapTotalBytes - info.swapFreeBytes, (2467836 - 1984260) * 1024);
});

Deno.test("parseMeminfo() estimates available memory on kernels without MemAvailable", () => {
  const info = parseMeminfo(fixture("meminfo-no-memavailable.txt"));
  assert.equal(info.availableEstimated, true);
  // MemFree + Buffers + Cached
  assert.equal(info.availableBytes, (2510052 + 0 + 120284) * 1024);
});

Deno.test("parseMeminfo() keeps the unit-less HugePages counts as counts", () => {
  const info = parseMeminfo(fixture("meminfo-linux-3.14-plus.txt"));
  assert.equal(info.fields.HugePages_Total, 0);
  assert.equal(info.fields.Hugepagesize, 2048 * 1024);
  assert.equal(info.availableBytes, 8366284 * 1024);
});

Deno.test("parseMeminfo() rejects a malformed line naming the line", () => {
  assert.throws(
    () => parseMeminfo("MemTotal: 1 kB\nMemFree 2 kB\n"),
    /Cannot parse \/proc\/meminfo:2: expected 'Name: value \[kB\]', got 'MemFree 2 kB'/,
  );
});

Deno.test("parseMeminfo() rejects text without MemTotal", () => {
  assert.throws(
    () => parseMeminfo("MemFree: 1 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"),
    /no 'MemTotal' line/,
  );
});

Deno.test("readMeminfo() says the file is missing on a machine without /proc/meminfo", async () => {
  const target = new SnapshotTarget({
    meta: { host: "mac", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [],
    paths: { "/proc/meminfo": { exists: false } },
    files: {},
  });
  await assert.rejects(readMeminfo(target), /the file does not exist/);
});

Deno.test("formatBytes() and parseSize() speak binary units", () => {
  assert.equal(formatBytes(512 * 1024 ** 2), "512.0 MiB");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(parseSize("512M"), 512 * 1024 ** 2);
  assert.equal(parseSize("2 GiB"), 2 * 1024 ** 3);
  assert.throws(() => parseSize("-1G"), /'-1G' is not a size/);
});
