/**
 * nix-builder-runbook: parsers, the `Target` (local, ssh, snapshot) and the findings model behind the
 * scripts, for people who script their own checks of Nix remote builders.
 *
 * @example
 * ```ts
 * import { LocalTarget, makeReport } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const target = new LocalTarget();
 * const result = await target.run(["true"]);
 * const report = makeReport([{ id: "demo/true", status: result.code === 0 ? "ok" : "critical", summary: "true runs" }], {
 *   tool: "demo",
 *   host: target.host,
 * });
 * assert.equal(report.status, "ok");
 * ```
 *
 * @module
 */

export * from "./lib/errors.ts";
export * from "./lib/findings.ts";
export * from "./lib/target.ts";
export * from "./lib/local_target.ts";
export * from "./lib/ssh_target.ts";
export * from "./lib/snapshot_target.ts";
export * from "./lib/recording_target.ts";
export * from "./lib/host.ts";
export * from "./lib/shell_quote.ts";
export * from "./lib/nix_config.ts";
