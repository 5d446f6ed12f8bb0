/**
 * What the NixOS module (nix/health-check-module.nix) generates, run for real as far as this
 * machine allows (no nixpkgs, no NixOS, no systemd as PID 1): the module is evaluated by the real
 * Nix with the stub module system of nix/stub/; the ExecStart it makes runs the real
 * scripts/health_check.ts, whose --nagios perfdata shows each threshold arrived; systemd's own
 * parser (systemd-analyze verify) takes the units; and the alert's script runs against a private
 * systemd-journald and lands there with its tag at priority err.
 */
import assert from "node:assert/strict";
import { evalStubHealth } from "./_nix_stub.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const LAB_REQUIRED = Deno.env.get("LAB_REQUIRED") === "1";

function which(program: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${program}`).isFile) return `${dir}/${program}`;
    } catch {
      // not here
    }
  }
  return null;
}

const HAVE_NIX = which("nix-instantiate") !== null;
if (!HAVE_NIX) console.error("nixos module tests skipped: nix-instantiate not found (nix-bin)");

async function run(
  argv: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [program, ...args] = argv as [string, ...string[]];
  const out = await new Deno.Command(program, {
    args,
    cwd: options.cwd ?? ROOT,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1", ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

interface Units {
  service: {
    onFailure: string[];
    serviceConfig: Record<string, string | number>;
  } | null;
  alert: { scriptArgs: string; script: string; serviceConfig: Record<string, string> } | null;
  tmpfiles: string[];
}

/** nix/stub/health.nix: the units of `settings` (a Nix expression), the module file alone. */
async function evalModule(settings: string): Promise<Units> {
  const r = await evalStubHealth(settings, { bare: true });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Units;
}

/**
 * An ExecStart= line split the way systemd does for what the module writes: words separated by
 * spaces, '…' and "…" quoting, backslash escapes outside single quotes, `%%` for a literal %. Any
 * other specifier is refused: the module must not leave one in a value.
 */
function execArgv(line: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (ch === " ") {
      if (word !== null) words.push(word);
      word = null;
    } else if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      assert.ok(end > i, `unbalanced ' in ${line}`);
      word = (word ?? "") + line.slice(i + 1, end);
      i = end;
    } else if (ch === '"') {
      const end = line.indexOf('"', i + 1);
      assert.ok(end > i, `unbalanced " in ${line}`);
      word = (word ?? "") + line.slice(i + 1, end);
      i = end;
    } else if (ch === "\\") {
      word = (word ?? "") + line[++i];
    } else {
      word = (word ?? "") + ch;
    }
  }
  if (word !== null) words.push(word);
  return words.map((w) => {
    assert.doesNotMatch(w.replaceAll("%%", ""), /%/, `a systemd specifier left in '${w}'`);
    return w.replaceAll("%%", "%");
  });
}

/** Every threshold option, set to a value no default has, so the perfdata shows which one won. */
const THRESHOLDS = `{
  freeSpace = { warning = "11%:"; critical = "2%:"; };
  memory = { warning = "12%:"; critical = "3%:"; };
  load = { warning = "~:7"; critical = "~:9"; };
  memoryPressure = { warning = "~:31"; critical = "~:41"; };
  oomKills = { warning = "~:3"; critical = "~:5"; window = "6h"; };
}`;

Deno.test({
  name:
    "every threshold option becomes its flag, and the generated ExecStart runs the real health_check with them",
  ignore: !HAVE_NIX,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "nbr-nixos-module-" });
    try {
      await Deno.writeTextFile(`${dir}/empty-kernel.log`, "");
      const units = await evalModule(`{
        enable = true;
        package = ${JSON.stringify(ROOT)};
        thresholds = ${THRESHOLDS};
        prometheus.textfileDirectory = ${JSON.stringify(dir)};
        # Here, not as root in /var/lib; an empty kernel log makes the OOM count 0 whatever the host saw.
        extraArgs = [ "--state-file" "${dir}/state.json" "--kernel-log" "${dir}/empty-kernel.log" ];
      }`);
      const exec = String(units.service!.serviceConfig.ExecStart);
      const argv = execArgv(exec);
      assert.match(argv[0]!, /^\/nix\/store\/[a-z0-9]+-deno\/bin\/deno$/);
      assert.deepEqual(argv.slice(1, 4), ["run", "-A", `${ROOT}/scripts/health_check.ts`]);

      // Each threshold flag health_check.ts has (its --help) is there, with the option's value.
      const help = await run([Deno.execPath(), "run", "-A", "scripts/health_check.ts", "--help"]);
      const flags = [...help.stdout.matchAll(/(--[a-z-]+) <(?:range|duration)>/g)].map((m) => m[1]);
      assert.deepEqual(flags.sort(), [
        "--critical",
        "--load-critical",
        "--load-warning",
        "--memory-critical",
        "--memory-warning",
        "--oom-critical",
        "--oom-warning",
        "--oom-window",
        "--pressure-critical",
        "--pressure-warning",
        "--warning",
      ]);
      const value = (flag: string) => argv[argv.indexOf(flag) + 1];
      for (const flag of flags) assert.ok(argv.includes(flag!), `${flag} missing from ${exec}`);
      assert.equal(value("--warning"), "11%:");
      assert.equal(value("--oom-window"), "6h");
      assert.match(exec, / --warning 11%%: /);
      assert.match(exec, / --load-warning '~:7' /);

      // The real script takes every flag (a bad one exits 3 with one line) and uses the values.
      const command = [Deno.execPath(), ...argv.slice(1)];
      const nagios = await run([...command, "--nagios"], { cwd: dir });
      assert.ok(
        [0, 1, 2].includes(nagios.code),
        `exit ${nagios.code}: ${nagios.stdout}${nagios.stderr}`,
      );
      const perf = nagios.stdout.split(" | ")[1] ?? "";
      assert.match(perf, /'load5_per_core'=[\d.]+;~:7;~:9;0/);
      assert.match(perf, /'memory_pressure_full_avg60'=[\d.]+%;~:31;~:41;0;100/);
      assert.match(perf, /'oom_kills'=0;~:3;~:5;0/);
      const memory = /'memory_available'=\d+B;(\d+):;(\d+):;0;(\d+)/.exec(perf);
      assert.ok(memory, perf);
      const [warn, crit, total] = memory.slice(1).map(Number) as [number, number, number];
      assert.ok(
        Math.abs(warn / total - 0.12) < 0.001 && Math.abs(crit / total - 0.03) < 0.001,
        perf,
      );
      const store = /'store_free'=\d+B;(\d+):;(\d+):/.exec(perf);
      assert.ok(store, perf);
      assert.ok(Math.abs(Number(store[1]) / Number(store[2]) - 11 / 2) < 0.01, perf);
      // --prometheus went to the textfile directory the option names.
      assert.match(
        await Deno.readTextFile(`${dir}/nix_builder.prom`),
        /^nix_builder_health_status /m,
      );

      const json = await run([...command, "--json"], { cwd: dir });
      const report = JSON.parse(json.stdout) as { findings: { id: string; summary: string }[] };
      const oom = report.findings.find((f) => f.id === "health/oom-kills");
      assert.equal(oom?.summary, "no OOM kills in the last 6 h");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the stub module system refuses a misspelt or mistyped threshold, as NixOS would",
  ignore: !HAVE_NIX,
  async fn() {
    const attempt = evalStubHealth;
    const typo = await attempt('{ enable = true; thresholds.load.warn = "~:3"; }');
    assert.notEqual(typo.code, 0);
    assert.match(
      typo.stderr,
      /`services\.nix-builder-health\.thresholds\.load\.warn' does not exist/,
    );
    const group = await attempt('{ enable = true; thresholds.disk.warning = "10%:"; }');
    assert.notEqual(group.code, 0);
    assert.match(group.stderr, /`services\.nix-builder-health\.thresholds\.disk' does not exist/);
    const number = await attempt("{ enable = true; thresholds.load.warning = 3; }");
    assert.notEqual(number.code, 0);
    assert.match(number.stderr, /thresholds\.load\.warning is not of type null or str/);
    const flag = await attempt('{ enable = true; alert.enable = "yes"; }');
    assert.notEqual(flag.code, 0);
    assert.match(flag.stderr, /alert\.enable is not of type bool/);
  },
});

const JOURNALD = ["/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"].find(
  (p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  },
);
const systemdMissing = [
  ...(HAVE_NIX ? [] : ["nix-instantiate"]),
  ...(which("systemd-analyze") ? [] : ["systemd-analyze"]),
];
const journalMissing = [
  ...systemdMissing,
  ...(JOURNALD ? [] : ["systemd-journald"]),
  ...(which("systemd-cat") && which("journalctl") ? [] : ["systemd-cat/journalctl"]),
  ...(which("unshare") ? [] : ["unshare"]),
  ...(Deno.uid() === 0 ? [] : ["root (a private mount namespace)"]),
];
const skipped: [string, string[]][] = [
  ["systemd-analyze", systemdMissing],
  ["journal", journalMissing],
];
for (const [what, missing] of skipped) {
  if (missing.length > 0 && !LAB_REQUIRED) {
    console.error(`nixos module ${what} test skipped: needs ${missing.join(", ")}`);
  }
}

/** The alert's script as NixOS writes it (`#!bash`, then `set -e`; strict: writeShellApplication). */
async function alertScript(dir: string, strict: boolean): Promise<string> {
  const units = await evalModule('{ enable = true; package = "/src"; }');
  assert.ok(units.alert, "alert.enable is on by default");
  assert.equal(units.alert.scriptArgs, "%i");
  const file = `${dir}/alert-${strict ? "strict" : "plain"}.sh`;
  await Deno.writeTextFile(
    file,
    `#!/bin/bash\n${
      strict ? "set -o errexit -o nounset -o pipefail" : "set -e"
    }\n${units.alert.script}`,
  );
  await Deno.chmod(file, 0o755);
  return file;
}

Deno.test({
  name: "systemd's own parser takes the generated service and the alert template",
  ignore: systemdMissing.length > 0 && !LAB_REQUIRED,
  async fn() {
    assert.deepEqual(systemdMissing, []);
    const dir = await Deno.makeTempDir({ prefix: "nbr-nixos-units-" });
    try {
      const units = await evalModule(`{
        enable = true;
        package = ${JSON.stringify(ROOT)};
        thresholds = ${THRESHOLDS};
        prometheus.textfileDirectory = "/var/lib/prometheus-node-exporter-text";
      }`);
      const service = units.service!;
      // NixOS's deno is not here: the same line with this machine's deno, which must exist.
      const exec = String(service.serviceConfig.ExecStart).replace(/^\S+/, Deno.execPath());
      await Deno.writeTextFile(
        `${dir}/nix-builder-health.service`,
        `[Unit]\nDescription=t\nOnFailure=${service.onFailure.join(" ")}\n\n[Service]\n` +
          `Type=${service.serviceConfig.Type}\nExecStart=${exec}\n` +
          `SuccessExitStatus=${service.serviceConfig.SuccessExitStatus}\n`,
      );
      const script = await alertScript(dir, false);
      await Deno.writeTextFile(
        `${dir}/nix-builder-health-alert@.service`,
        `[Unit]\nDescription=Alert: %i failed\n\n[Service]\nType=${
          units.alert!.serviceConfig.Type
        }\nExecStart=${script} ${units.alert!.scriptArgs}\n`,
      );
      const verify = await run([
        "systemd-analyze",
        "verify",
        "--man=no",
        "./nix-builder-health.service",
        "./nix-builder-health-alert@nix-builder-health.service.service",
      ], { cwd: dir });
      assert.equal(verify.code, 0, verify.stderr);
      assert.equal(verify.stderr, "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the alert writes the failed unit to the journal, tag nix-builder-health-alert, priority err",
  ignore: journalMissing.length > 0 && !LAB_REQUIRED,
  async fn() {
    assert.deepEqual(journalMissing, []);
    const dir = await Deno.makeTempDir({ prefix: "nbr-nixos-alert-" });
    try {
      const plain = await alertScript(dir, false);
      const strict = await alertScript(dir, true);
      // A journald of its own, in a private mount namespace (its /run and journal directories are
      // tmpfs there): the machine's journal and kernel log see nothing of it.
      const inside = `
        set -eu
        mount -t tmpfs tmpfs /run
        mkdir -p /run/systemd/journal /run/log/journal
        if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
        SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_LEVEL=err "$1" 2>/dev/null &
        journald=$!
        trap 'kill $journald; wait $journald || true' EXIT
        for _ in $(seq 100); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.05; done
        "$2" nix-builder-health.service
        "$3" nix-builder-health.service
        for _ in $(seq 100); do
          n=$(journalctl -t nix-builder-health-alert -p err -o cat --no-pager | grep -c failed || true)
          [ "$n" -ge 2 ] && break
          sleep 0.05
        done
        journalctl -t nix-builder-health-alert -o json --no-pager
      `;
      const r = await run(
        [
          "unshare",
          "--mount",
          "--propagation",
          "private",
          "--",
          "sh",
          "-c",
          inside,
          "sh",
          JOURNALD!,
          plain,
          strict,
        ],
        { env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" } },
      );
      assert.equal(r.code, 0, r.stderr);
      const entries = r.stdout.trim().split("\n").map((l) =>
        JSON.parse(l) as { MESSAGE: string; PRIORITY: string; SYSLOG_IDENTIFIER: string }
      );
      const headers = entries.filter((e) => e.MESSAGE.includes("failed"));
      assert.equal(headers.length, 2, r.stdout);
      for (const e of headers) {
        assert.equal(e.SYSLOG_IDENTIFIER, "nix-builder-health-alert");
        assert.equal(e.PRIORITY, "3");
        assert.match(e.MESSAGE, /^nix-builder-health\.service failed: /);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
