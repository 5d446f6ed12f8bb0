/**
 * The Prometheus text exposition format, for node_exporter's textfile collector: `# HELP` and
 * `# TYPE` per family, escaped label values, no timestamps, and an atomic write (`x.prom.$$`, then
 * rename) so the collector never reads half a file.
 *
 * @module
 */

import { UsageError } from "./errors.ts";

/** A metric type this renderer writes. */
export type MetricType = "gauge" | "counter";

/** One sample of a family. */
export interface MetricSample {
  /** Label names and values. */
  labels?: Record<string, string>;
  /** The value (base units: seconds, bytes, ratios 0–1). */
  value: number;
}

/** A metric family: a name, its help and type, and its samples. */
export interface MetricFamily {
  /** Metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`; counters end in `_total`. */
  name: string;
  /** One line saying what it measures, with its unit. */
  help: string;
  /** `gauge` or `counter`. */
  type: MetricType;
  /** The samples (a family without samples is left out). */
  samples: MetricSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function escapeLabelValue(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

/**
 * Renders families in the text format (version 0.0.4). Throws `RangeError` for an invalid metric
 * or label name, a counter not ending in `_total`, or a name used twice.
 *
 * @example
 * ```ts
 * import { renderPrometheus } from "./prometheus.ts";
 * import assert from "node:assert/strict";
 *
 * const text = renderPrometheus([{
 *   name: "nix_builder_filesystem_avail_bytes",
 *   help: "Free space for unprivileged users, in bytes.",
 *   type: "gauge",
 *   samples: [{ labels: { path: "/nix/store" }, value: 1024 }],
 * }]);
 * assert.equal(
 *   text,
 *   "# HELP nix_builder_filesystem_avail_bytes Free space for unprivileged users, in bytes.\n" +
 *     "# TYPE nix_builder_filesystem_avail_bytes gauge\n" +
 *     'nix_builder_filesystem_avail_bytes{path="/nix/store"} 1024\n',
 * );
 * ```
 */
export function renderPrometheus(families: readonly MetricFamily[]): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const family of families) {
    if (!NAME.test(family.name)) throw new RangeError(`Invalid metric name '${family.name}'`);
    if (family.type === "counter" && !family.name.endsWith("_total")) {
      throw new RangeError(`Counter '${family.name}' must end in _total`);
    }
    if (seen.has(family.name)) throw new RangeError(`Metric '${family.name}' appears twice`);
    seen.add(family.name);
    if (family.samples.length === 0) continue;
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    for (const sample of family.samples) {
      const labels = Object.entries(sample.labels ?? {});
      for (const [name] of labels) {
        if (!LABEL.test(name) || name.startsWith("__")) {
          throw new RangeError(`Invalid label name '${name}' on ${family.name}`);
        }
      }
      const labelText = labels.length === 0
        ? ""
        : `{${labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",")}}`;
      lines.push(`${family.name}${labelText} ${formatValue(sample.value)}`);
    }
  }
  return lines.length === 0 ? "" : lines.join("\n") + "\n";
}

/**
 * Writes a textfile-collector file atomically: the text goes to `FILE.<pid>` in the same directory
 * (node_exporter only reads `*.prom`, so it ignores it), then is renamed over `FILE`. Throws
 * `UsageError` when the name does not end in `.prom` or the directory cannot be written.
 *
 * @example
 * ```ts
 * import { writeTextfile } from "./prometheus.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await writeTextfile(`${dir}/nix_builder.prom`, "# TYPE up gauge\nup 1\n");
 * assert.equal(await Deno.readTextFile(`${dir}/nix_builder.prom`), "# TYPE up gauge\nup 1\n");
 * assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["nix_builder.prom"]);
 * await assert.rejects(writeTextfile(`${dir}/metrics.txt`, ""), /\.prom/);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeTextfile(path: string, text: string): Promise<void> {
  if (!path.endsWith(".prom")) {
    throw new UsageError(
      `--prometheus '${path}': the name must end in .prom (node_exporter's textfile collector reads only *.prom)`,
    );
  }
  const temp = `${path}.${Deno.pid}`;
  try {
    await Deno.writeTextFile(temp, text, { mode: 0o644 });
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    const reason = error instanceof Deno.errors.NotFound
      ? "its directory does not exist"
      : error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : error instanceof Error
      ? error.message
      : String(error);
    throw new UsageError(`Cannot write --prometheus '${path}': ${reason}`);
  }
}
