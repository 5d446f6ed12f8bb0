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
