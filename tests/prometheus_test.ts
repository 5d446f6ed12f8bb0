/**
 * The textfile-collector output, read back by a real Prometheus text-format parser (the npm package
 * parse-prometheus-text-format, a port of the Python client's parser), and the atomic write.
 */
import assert from "node:assert/strict";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { type MetricFamily, renderPrometheus, writeTextfile } from "../lib/prometheus.ts";

interface ParsedFamily {
  name: string;
  help: string;
  type: string;
  metrics: { value: string; labels?: Record<string, string> }[];
}

function parse(text: string): ParsedFamily[] {
  return parsePrometheusTextFormat(text) as ParsedFamily[];
}

const FAMILIES: MetricFamily[] = [
  {
    name: "nix_builder_filesystem_avail_bytes",
    help: "Free space for builds, bytes.",
    type: "gauge",
    samples: [
      { labels: { role: "store", path: "/nix/store" }, value: 83941961728 },
      { labels: { role: "build_dir", path: 'C:\\odd "dir"\nname' }, value: 0.5 },
    ],
  },
  {
    name: "nix_builder_oom_kills_total",
    help: "OOM kills since boot.\nSecond line \\ with a backslash.",
    type: "counter",
    samples: [{ value: 3 }],
  },
  { name: "nix_builder_empty", help: "No samples: left out.", type: "gauge", samples: [] },
  {
    name: "nix_builder_specials",
    help: "Special values.",
    type: "gauge",
    samples: [
      { labels: { v: "nan" }, value: NaN },
      { labels: { v: "inf" }, value: Infinity },
      { labels: { v: "-inf" }, value: -Infinity },
    ],
  },
];

Deno.test("renderPrometheus() output is read back by a Prometheus text parser, values and labels intact", () => {
  const text = renderPrometheus(FAMILIES);
  const parsed = parse(text);
  assert.deepEqual(parsed.map((f) => [f.name, f.type]), [
    ["nix_builder_filesystem_avail_bytes", "GAUGE"],
    ["nix_builder_oom_kills_total", "COUNTER"],
    ["nix_builder_specials", "GAUGE"],
  ]);
  const avail = parsed[0]!;
  assert.equal(avail.help, "Free space for builds, bytes.");
  assert.deepEqual(avail.metrics, [
    { value: "83941961728", labels: { role: "store", path: "/nix/store" } },
    { value: "0.5", labels: { role: "build_dir", path: 'C:\\odd "dir"\nname' } },
  ]);
  assert.equal(parsed[1]!.metrics[0]!.value, "3");
  assert.deepEqual(parsed[2]!.metrics.map((m) => m.value), ["NaN", "+Inf", "-Inf"]);
});

Deno.test("renderPrometheus() writes HELP and TYPE before samples and no timestamps", () => {
  const lines = renderPrometheus(FAMILIES).trimEnd().split("\n");
  assert.equal(lines[0], "# HELP nix_builder_filesystem_avail_bytes Free space for builds, bytes.");
  assert.equal(lines[1], "# TYPE nix_builder_filesystem_avail_bytes gauge");
  assert.equal(
    lines[4],
    "# HELP nix_builder_oom_kills_total OOM kills since boot.\\nSecond line \\\\ with a backslash.",
  );
  for (const line of lines.filter((l) => !l.startsWith("#"))) {
    // name{labels} value: exactly one value after the labels, no timestamp.
    assert.match(line, /^[a-z_:][a-z0-9_:]*(\{.*\})? \S+$/);
  }
  assert.ok(!lines.some((l) => l.includes("nix_builder_empty")));
  assert.equal(renderPrometheus([]), "");
});

Deno.test("renderPrometheus() refuses bad names, counters without _total and duplicates", () => {
  const gauge = (name: string, labels: Record<string, string> = {}): MetricFamily => ({
    name,
    help: "h",
    type: "gauge",
    samples: [{ labels, value: 1 }],
  });
  assert.throws(() => renderPrometheus([gauge("2bad")]), /Invalid metric name '2bad'/);
  assert.throws(() => renderPrometheus([gauge("a-b")]), /Invalid metric name/);
  assert.throws(() => renderPrometheus([gauge("ok", { "bad-label": "x" })]), /Invalid label name/);
  assert.throws(() => renderPrometheus([gauge("ok", { __reserved: "x" })]), /Invalid label name/);
  assert.throws(
    () =>
      renderPrometheus([{ name: "kills", help: "h", type: "counter", samples: [{ value: 1 }] }]),
    /Counter 'kills' must end in _total/,
  );
  assert.throws(() => renderPrometheus([gauge("twice"), gauge("twice")]), /appears twice/);
});

Deno.test("writeTextfile() replaces the file atomically and leaves no temporary file", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/nix_builder.prom`;
  const big = (n: number) => `# TYPE x gauge\n${`x{i="${n}"} ${n}\n`.repeat(20_000)}`;
  try {
    await writeTextfile(path, big(1));
    // A reader polling while we rewrite sees the old or the new file, never a mix or a partial one.
    let stop = false;
    const seen = new Set<string>();
    const reader = (async () => {
      while (!stop) {
        const text = await Deno.readTextFile(path);
        assert.ok(text === big(1) || text === big(2), `partial read of ${text.length} bytes`);
        seen.add(text === big(1) ? "old" : "new");
        await new Promise((r) => setTimeout(r, 0));
      }
    })();
    for (let i = 0; i < 20; i++) await writeTextfile(path, big(i % 2 === 0 ? 2 : 1));
    stop = true;
    await reader;
    assert.ok(seen.size >= 1);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["nix_builder.prom"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeTextfile() refuses names node_exporter would ignore and says why a write failed", async () => {
  await assert.rejects(writeTextfile("/tmp/metrics.txt", ""), /must end in \.prom/);
  await assert.rejects(
    writeTextfile("/nonexistent-dir-nbr/x.prom", ""),
    /Cannot write --prometheus '\/nonexistent-dir-nbr\/x\.prom': its directory does not exist/,
  );
});

Deno.test("health_check --prometheus writes a textfile the parser reads: base units, counters, status", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../scripts/health_check.ts", import.meta.url).pathname,
        "--prometheus",
        `${dir}/nix_builder.prom`,
        "--state-file",
        `${dir}/state.json`,
        "--json",
      ],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const report = JSON.parse(new TextDecoder().decode(out.stdout));
    const families = parse(await Deno.readTextFile(`${dir}/nix_builder.prom`));
    const byName = new Map(families.map((f) => [f.name, f]));
    const status = byName.get("nix_builder_health_status")!;
    const values: Record<string, string> = { ok: "0", warning: "1", critical: "2", unknown: "3" };
    assert.equal(status.metrics[0]!.value, values[report.status]);
    for (const f of families) {
      assert.ok(f.help.length > 0, `${f.name} has no HELP`);
      assert.equal(f.type === "COUNTER", f.name.endsWith("_total"), f.name);
      // Base units: bytes and seconds, never KiB, percent or milliseconds.
      assert.doesNotMatch(f.name, /_(kb|kib|mb|percent|ms|milliseconds)\b/);
    }
    const checks = byName.get("nix_builder_health_check_status")!.metrics;
    assert.deepEqual(
      checks.map((m) => m.labels!.check).sort(),
      [...new Set(report.findings.map((f: { id: string }) => f.id) as string[])].sort(),
    );
    const total = Number(byName.get("nix_builder_memory_total_bytes")!.metrics[0]!.value);
    const meminfo = await Deno.readTextFile("/proc/meminfo");
    assert.equal(total, Number(/^MemTotal:\s+(\d+) kB$/m.exec(meminfo)![1]) * 1024);
    const store = byName.get("nix_builder_filesystem_avail_bytes")!.metrics[0]!;
    assert.deepEqual(store.labels, { role: "store", path: "/nix/store" });
    // Checked here: no host label; the file is the only one in its directory (atomic write).
    assert.ok(families.every((f) => f.metrics.every((m) => !("host" in (m.labels ?? {})))));
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.includes(".prom")),
      ["nix_builder.prom"],
    );
    assert.ok(!report.findings.some((f: { id: string }) => f.id === "health/prometheus-file"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
