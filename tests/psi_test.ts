import assert from "node:assert/strict";
import { parsePressure, readPressure, stallPercent } from "../lib/psi.ts";
import { LocalTarget } from "../lib/local_target.ts";
import { SnapshotTarget } from "../lib/snapshot_target.ts";

const FIXTURES = new URL("./fixtures/oom-proc/", import.meta.url).pathname;
const fixture = (name: string) => Deno.readTextFileSync(FIXTURES + name);

Deno.test("parsePressure() reads the stalls right after a memory cgroup swapped to zram", () => {
  const psi = parsePressure(fixture("pressure-memory-after-swapping-linux-6.18.txt"));
  assert.deepEqual(psi.some, { avg10: 20.65, avg60: 5.52, avg300: 1.24, totalUs: 4154536 });
  assert.deepEqual(psi.full, { avg10: 20.11, avg60: 5.42, avg300: 1.22, totalUs: 3953181 });
});

Deno.test("parsePressure() reads an idle machine as zero percentages", () => {
  const psi = parsePressure(fixture("pressure-memory-idle-linux-6.18.txt"));
  assert.equal(psi.some.avg60, 0);
  assert.equal(psi.full?.totalUs, 2345);
});

Deno.test("parsePressure() accepts a cpu file without a full line (Linux < 5.13)", () => {
  const psi = parsePressure(
    "some avg10=3.00 avg60=1.00 avg300=0.50 total=999\n",
    "/proc/pressure/cpu",
  );
  assert.equal(psi.full, undefined);
  assert.equal(psi.some.avg10, 3);
});

Deno.test("parsePressure() rejects a line that is not PSI, naming the line", () => {
  assert.throws(
    () => parsePressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=x\n"),
    /Cannot parse \/proc\/pressure\/memory:2: expected 'some\|full/,
  );
});

Deno.test("readPressure() returns null when the kernel has no PSI file", async () => {
  const target = new SnapshotTarget({
    meta: { host: "old", collected_at: "2026-11-25T00:00:00Z", tool: "t" },
    commands: [],
    paths: { "/proc/pressure/memory": { exists: false } },
    files: {},
  });
  assert.equal(await readPressure(target), null);
});

Deno.test("readPressure() reads this machine's memory pressure", async () => {
  const psi = await readPressure(new LocalTarget());
  assert.ok(psi !== null, "this VM's kernel has PSI");
  assert.ok(psi.some.totalUs >= 0);
});

Deno.test("stallPercent() turns two total counters into a share of the interval", () => {
  const a = { avg10: 0, avg60: 0, avg300: 0, totalUs: 2855 };
  const b = { avg10: 0, avg60: 0, avg300: 0, totalUs: 2855 + 250_000 };
  assert.equal(stallPercent(a, b, 1000), 25);
  assert.equal(stallPercent(b, a, 1000), 0);
  assert.equal(stallPercent(a, b, 0), 0);
});
