/**
 * monitoring-plugins conventions: threshold ranges as the developer guidelines define them, and the
 * plugin line and perfdata checked by a strict parser written from the guidelines' grammar.
 */
import assert from "node:assert/strict";
import {
  formatPerfData,
  formatThreshold,
  parseThreshold,
  renderNagios,
  thresholdAlerts,
} from "../lib/nagios.ts";

/** The guidelines' table: range text, then values that alert and values that do not. */
const TABLE: [string, number[], number[]][] = [
  ["10", [-1, 10.001, 11, 1e9], [0, 5, 10]],
  ["10:", [-5, 0, 9.99], [10, 11, 1e12]],
  ["~:10", [10.5, 11, 1e9], [-1e9, -1, 0, 10]],
  ["10:20", [9, 21, -3], [10, 15, 20]],
  ["@10:20", [10, 15, 20], [9.99, 20.01, 0]],
  ["@10", [0, 5, 10], [-0.1, 10.1]],
  ["0", [0.5, 1, -1], [0]],
  ["-5:-1", [0, -0.5, -6], [-5, -3, -1]],
  ["1.5:2.5", [1.4, 2.6], [1.5, 2, 2.5]],
];

Deno.test("parseThreshold() alerts exactly as the monitoring-plugins guidelines say", () => {
  for (const [text, alert, quiet] of TABLE) {
    const t = parseThreshold(text);
    for (const v of alert) {
      assert.equal(thresholdAlerts(t, v), true, `${text} should alert at ${v}`);
    }
    for (const v of quiet) {
      assert.equal(thresholdAlerts(t, v), false, `${text} should not alert at ${v}`);
    }
  }
});

Deno.test("parseThreshold() reads start, end and @ into numbers", () => {
  assert.deepEqual(parseThreshold("~:10"), {
    start: -Infinity,
    end: 10,
    inside: false,
    text: "~:10",
  });
  assert.deepEqual(parseThreshold("10:"), { start: 10, end: Infinity, inside: false, text: "10:" });
  assert.deepEqual(parseThreshold("@1:2"), { start: 1, end: 2, inside: true, text: "@1:2" });
  assert.deepEqual(parseThreshold("7"), { start: 0, end: 7, inside: false, text: "7" });
});

Deno.test("parseThreshold() rejects malformed ranges naming the flag and the column", () => {
  const cases: [string, RegExp][] = [
    ["", /--warning:1:1: the threshold is empty/],
    ["20:10", /--warning:1:1: '20:10': the start is greater than the end/],
    ["abc", /--warning:1:1: 'abc' is not a number/],
    ["10:x", /--warning:1:4: 'x' is not a number/],
    ["@", /no upper end/],
    ["~", /no upper end/],
    [":10", /nothing before ':'/],
    ["1:2:3", /--warning:1:4: '1:2:3' has more than one ':'/],
    [" 10", /spaces around it/],
    ["1e3", /'1e3' is not a number/],
    ["-5", /start is greater than the end/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseThreshold(text, { input: "--warning" }), message, text);
    assert.throws(() => parseThreshold(text, { input: "--warning" }), { name: "ParseError" });
  }
});

Deno.test("formatThreshold() prints the shortest range text, scaled when asked", () => {
  for (const text of ["10", "10:", "~:10", "10:20", "@10:20", "@0:5", "~:", "0"]) {
    assert.equal(formatThreshold(parseThreshold(text)), text);
  }
  assert.equal(formatThreshold(parseThreshold("10:"), (v) => v * 2), "20:");
});

/**
 * A strict parser for plugin output, from the guidelines: `STATUS: text` then optionally ` | ` and
 * space-separated `'label'=value[UOM];[warn];[crit];[min];[max]`.
 */
const NUMBER = String.raw`-?\d+(?:\.\d+)?`;
const RANGE = String.raw`@?(?:~|${NUMBER})?:?(?:${NUMBER})?`;
const PERF = new RegExp(
  String.raw`^'((?:[^'=]|'')+)'=(${NUMBER})(s|ms|us|%|B|KB|MB|TB|c)?` +
    String.raw`(?:;(${RANGE})?(?:;(${RANGE})?(?:;(${NUMBER})?(?:;(${NUMBER})?)?)?)?)?$`,
);

interface ParsedPerf {
  label: string;
  value: number;
  uom: string;
  warn: string;
  crit: string;
  min: string;
  max: string;
}

function parsePluginOutput(output: string): { status: string; text: string; perf: ParsedPerf[] } {
  assert.ok(output.endsWith("\n") && output.indexOf("\n") === output.length - 1, "one line");
  const line = output.slice(0, -1);
  const m = /^(OK|WARNING|CRITICAL|UNKNOWN): ([^|]*?)(?: \| (.*))?$/.exec(line);
  assert.ok(m, `not a plugin line: ${line}`);
  const perf: ParsedPerf[] = [];
  // Labels are quoted and may hold spaces: split on spaces outside quotes.
  const items = m[3] === undefined ? [] : m[3].match(/'(?:[^']|'')*'=\S*/g) ?? [];
  assert.equal(items.join(" "), m[3] ?? "", "perfdata is only label=value items");
  for (const item of items) {
    const p = PERF.exec(item);
    assert.ok(p, `bad perfdata item: ${item}`);
    perf.push({
      label: p[1]!.replaceAll("''", "'"),
      value: Number(p[2]),
      uom: p[3] ?? "",
      warn: p[4] ?? "",
      crit: p[5] ?? "",
      min: p[6] ?? "",
      max: p[7] ?? "",
    });
    if (p[4]) parseThreshold(p[4]);
    if (p[5]) parseThreshold(p[5]);
  }
  return { status: m[1]!, text: m[2]!, perf };
}

Deno.test("renderNagios() output parses with the guidelines' grammar, labels and ranges intact", () => {
  const out = renderNagios("critical", "store 2% free", [
    {
      label: "store free",
      value: 1024,
      uom: "B",
      warn: parseThreshold("5000:"),
      crit: "2000:",
      min: 0,
      max: 8192,
    },
    { label: "it's", value: 0.125, uom: "%", warn: parseThreshold("~:10") },
    { label: "load", value: 3 },
    { label: "inside", value: 15, warn: parseThreshold("@10:20"), max: 100 },
  ]);
  const parsed = parsePluginOutput(out);
  assert.equal(parsed.status, "CRITICAL");
  assert.equal(parsed.text, "store 2% free");
  assert.deepEqual(parsed.perf, [
    {
      label: "store free",
      value: 1024,
      uom: "B",
      warn: "5000:",
      crit: "2000:",
      min: "0",
      max: "8192",
    },
    { label: "it's", value: 0.125, uom: "%", warn: "~:10", crit: "", min: "", max: "" },
    { label: "load", value: 3, uom: "", warn: "", crit: "", min: "", max: "" },
    { label: "inside", value: 15, uom: "", warn: "@10:20", crit: "", min: "", max: "100" },
  ]);
  assert.equal(formatPerfData({ label: "x", value: 1, min: 0 }), "'x'=1;;;0");
});

Deno.test("renderNagios() keeps the summary on one line and free of the perfdata separator", () => {
  const out = renderNagios("warning", "first | second\nthird\r\nfourth", [{
    label: "a",
    value: 1,
  }]);
  assert.equal(out, "WARNING: first / second; third; fourth | 'a'=1\n");
  assert.equal(parsePluginOutput(out).perf.length, 1);
  assert.equal(renderNagios("unknown", "no perfdata"), "UNKNOWN: no perfdata\n");
});

Deno.test("formatPerfData() refuses labels the grammar cannot carry and non-finite values", () => {
  assert.throws(() => formatPerfData({ label: "a=b", value: 1 }), /has '='/);
  assert.throws(() => formatPerfData({ label: "", value: 1 }), /empty/);
  assert.throws(() => formatPerfData({ label: "a", value: NaN }), /Cannot put NaN/);
  assert.equal(
    formatPerfData({ label: "big", value: 270553174016, uom: "B" }),
    "'big'=270553174016B",
  );
  assert.equal(formatPerfData({ label: "tiny", value: 1e-7 }), "'tiny'=0");
});

Deno.test("health_check --nagios prints one line the strict grammar accepts, exit code matching its status", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../scripts/health_check.ts", import.meta.url).pathname,
        "--nagios",
        "--state-file",
        `${dir}/state.json`,
        "-w",
        "99.9%:",
      ],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const parsed = parsePluginOutput(text);
    const codes: Record<string, number> = { OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3 };
    assert.equal(out.code, codes[parsed.status]);
    // The store is less than 99.9% free: at least WARNING, and the summary names it.
    assert.ok(out.code >= 1);
    assert.match(parsed.text, /^localhost: .*store \/nix\/store: \d+% free/);
    const store = parsed.perf.find((p) => p.label === "store_free");
    assert.ok(store, text);
    assert.equal(store.uom, "B");
    assert.equal(store.min, "0");
    // The -w percentage is converted into bytes (of used + available, as df's Use% counts): above
    // the free space, which is why it warned, and below the filesystem's size.
    const warnBytes = Number(store.warn.replace(/:$/, ""));
    assert.ok(warnBytes > store.value && warnBytes < Number(store.max), store.warn);
    for (const label of ["memory_available", "load5_per_core", "oom_kills"]) {
      assert.ok(parsed.perf.some((p) => p.label === label), `${label} missing in ${text}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
