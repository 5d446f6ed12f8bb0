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
 * @example The parsers, and a check of one's own against a snapshot (what `collect.ts` writes)
 * ```ts
 * import { exitCodeFor, makeReport, parseMachines, parseNixConf, SnapshotTarget } from "./mod.ts";
 * import assert from "node:assert/strict";
 *
 * const conf = parseNixConf("builders = @/etc/nix/machines\nmax-jobs = 0\n");
 * assert.deepEqual(conf.lines.map((l) => l.kind === "setting" ? l.value : ""), ["@/etc/nix/machines", "0"]);
 * const [machine] = parseMachines("ssh-ng://nixos x86_64-linux,aarch64-linux - 8 1 big-parallel").machines;
 * assert.deepEqual(machine?.systems, ["x86_64-linux", "aarch64-linux"]);
 *
 * const target = new SnapshotTarget({
 *   meta: { host: "nixos", collected_at: "2026-11-25T10:00:00Z", tool: "collect 0.1.0" },
 *   commands: [{ argv: ["nproc"], code: 0, stdout: "8\n", stderr: "" }],
 *   paths: {},
 *   files: {},
 * });
 * const cores = Number((await target.run(["nproc"])).stdout);
 * const report = makeReport([{
 *   id: "demo/cores",
 *   status: cores >= (machine?.maxJobs ?? 1) ? "ok" : "warning",
 *   summary: `${cores} cores for ${machine?.maxJobs} jobs`,
 * }], { tool: "demo", host: target.host });
 * assert.equal(exitCodeFor(report.status), 0);
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
export * from "./lib/caching_target.ts";
export * from "./lib/host.ts";
export * from "./lib/shell_quote.ts";
export * from "./lib/nix_config.ts";
export * from "./lib/meminfo.ts";
export * from "./lib/psi.ts";
export * from "./lib/kernel_log.ts";
export * from "./lib/zram.ts";
export * from "./lib/atomic_file.ts";
export * from "./lib/nix_conf_edit.ts";
export * from "./lib/oom.ts";
export * from "./lib/oom_mitigate.ts";
export * from "./lib/machines.ts";
export * from "./lib/nix_conf.ts";
export * from "./lib/show_config.ts";
export * from "./lib/elf.ts";
export * from "./lib/binfmt_entry.ts";
export * from "./lib/binfmt.ts";
export * from "./lib/binfmt_apply.ts";
export * from "./lib/nagios.ts";
export * from "./lib/prometheus.ts";
export * from "./lib/health_state.ts";
export * from "./lib/health.ts";
export * from "./lib/internal_json.ts";
export * from "./lib/watch.ts";
export * from "./lib/watch_alerts.ts";
export * from "./lib/watch_session.ts";
export * from "./lib/watch_board.ts";
export * from "./lib/watch_build.ts";
export * from "./lib/watch_view.ts";
export * from "./lib/watch_run.ts";
export * from "./lib/offload.ts";
export * from "./lib/explain.ts";
export * from "./lib/canary.ts";
export * from "./lib/spinner.ts";
export * from "./lib/store_path.ts";
export * from "./lib/build_output.ts";
export * from "./lib/log_scan.ts";
export * from "./lib/build_log.ts";
export * from "./lib/log_view.ts";
export * from "./lib/drv_log.ts";
export * from "./lib/progress.ts";
export * from "./lib/pager.ts";
export * from "./lib/doctor.ts";
