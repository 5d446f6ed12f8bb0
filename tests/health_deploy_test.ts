/**
 * What ships for scheduling the health check: the crontab line run the way cron runs it, the
 * systemd units through `systemd-analyze verify`, and the NixOS module evaluated by the real Nix
 * with the stub module system of nix/stub/ (tests/nixos_module_test.ts runs what it generates).
 */
import assert from "node:assert/strict";
import { evalStubHealth } from "./_nix_stub.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function sh(script: string, env: Record<string, string> = {}, args: string[] = []) {
  const out = await new Deno.Command("sh", {
    args: ["-c", script, "sh", ...args],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** What cron does to a command: `\%` becomes `%`; an unescaped `%` ends it (the rest is stdin). */
function cronCommand(field: string): string {
  let out = "";
  for (let i = 0; i < field.length; i++) {
    const ch = field[i]!;
    if (ch === "\\" && field[i + 1] === "%") {
      out += "%";
      i++;
    } else if (ch === "%") {
      break;
    } else {
      out += ch;
    }
  }
  return out;
}

Deno.test("the crontab line escapes % and runs the check as cron would", async () => {
  const text = await Deno.readTextFile(`${ROOT}deploy/nix-builder-health.cron`);
  const jobs = text.split("\n").filter((l) => /^[\d*]/.test(l));
  assert.equal(jobs.length, 1);
  const fields = jobs[0]!.split(/\s+/);
  assert.deepEqual(fields.slice(0, 6), ["*/15", "*", "*", "*", "*", "root"]);
  const field = fields.slice(6).join(" ");
  // Every % is escaped, or cron would cut the command there.
  assert.doesNotMatch(field, /(^|[^\\])%/);
  const command = cronCommand(field);
  assert.match(command, / -w 10%: -c 5%: /);
  const dir = await Deno.makeTempDir();
  try {
    const local = command
      .replace("/opt/nix-builder-runbook", ROOT.replace(/\/$/, ""))
      .replace("/var/lib/prometheus/node-exporter", dir) +
      ` --state-file ${dir}/state.json --load-warning '~:1000' --load-critical '~:1000'` +
      ` --pressure-warning '~:100' --pressure-critical '~:100' --oom-warning '~:100000'`;
    const path = /^PATH=(.*)$/m.exec(text)![1]!;
    const run = await sh(local, { PATH: path, HOME: Deno.env.get("HOME") ?? "/root" });
    assert.equal(run.code, 0, run.stdout + run.stderr);
    // Healthy: nothing for cron to mail.
    assert.equal(run.stdout + run.stderr, "");
    assert.match(
      await Deno.readTextFile(`${dir}/nix_builder.prom`),
      /^nix_builder_health_status 0$/m,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the systemd units pass systemd-analyze verify and treat WARNING as success", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const unit of ["nix-builder-health.service", "nix-builder-health.timer"]) {
      const text = await Deno.readTextFile(`${ROOT}deploy/${unit}`);
      // The checkout lives elsewhere here; verify refuses an ExecStart that does not exist.
      await Deno.writeTextFile(
        `${dir}/${unit}`,
        text.replaceAll("/opt/nix-builder-runbook", ROOT.replace(/\/$/, "")),
      );
    }
    const alert = await Deno.readTextFile(`${ROOT}deploy/nix-builder-health-alert@.service`);
    await Deno.writeTextFile(`${dir}/nix-builder-health-alert@.service`, alert);
    const verify = await sh(
      'cd "$1" && systemd-analyze verify --man=no ./nix-builder-health.service ' +
        "./nix-builder-health.timer ./nix-builder-health-alert@x.service",
      {},
      [dir],
    );
    assert.equal(verify.code, 0, verify.stderr);
    // Unknown keys and bad values are warnings on stderr, not failures: there must be none.
    assert.equal(verify.stderr, "");
    const service = await Deno.readTextFile(`${ROOT}deploy/nix-builder-health.service`);
    assert.match(service, /^SuccessExitStatus=1$/m);
    assert.match(service, /^OnFailure=nix-builder-health-alert@%n\.service$/m);
    assert.match(service, /^Type=oneshot$/m);
    const timer = await Deno.readTextFile(`${ROOT}deploy/nix-builder-health.timer`);
    assert.match(timer, /^OnCalendar=\*:0\/15$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The units nix/health-check-module.nix makes of `settings`, through the stub module system. */
async function moduleUnits(settings: string) {
  const out = await evalStubHealth(settings, { bare: true });
  assert.equal(out.code, 0, out.stderr);
  return JSON.parse(out.stdout) as {
    service: {
      startAt: string;
      onFailure: string[];
      path: string[];
      serviceConfig: Record<string, string | number>;
    };
    alert: {
      scriptArgs: string;
      script: string;
      path: string[];
      serviceConfig: Record<string, string>;
    } | null;
    tmpfiles: string[];
  };
}

Deno.test("the NixOS module makes a oneshot service on a timer with thresholds, SuccessExitStatus and an alert", async () => {
  // nixpkgs is not on this machine: the module is evaluated by the real Nix with the stub lib and
  // module system of nix/stub/ (option names and types checked, mkIf/mkDefault applied).
  const units = await moduleUnits(`{
    enable = true;
    package = "/src";
    thresholds = {
      freeSpace = { warning = "15%:"; critical = "5G:"; };
      memory.critical = "3%:";
      load.warning = "~:3";
      oomKills.window = "6h";
    };
    extraArgs = [ "--builder-user" "nixremote" ];
    prometheus.textfileDirectory = "/var/lib/text";
    onFailure = [ "notify-admins@%n.service" ];
  }`);
  const service = units.service;
  assert.equal(service.serviceConfig.Type, "oneshot");
  assert.equal(service.serviceConfig.SuccessExitStatus, "1");
  const exec = String(service.serviceConfig.ExecStart);
  assert.match(exec, /^\/nix\/store\/[a-z0-9]+-deno\/bin\/deno /);
  // Each threshold set becomes its flag, in this order, before extraArgs; % is written %%.
  assert.equal(
    exec.replace(/^\S+ /, ""),
    "run -A /src/scripts/health_check.ts --state-file /var/lib/nix-builder-runbook/health-state.json " +
      "--prometheus /var/lib/text/nix_builder.prom --warning 15%%: --critical 5G: " +
      "--memory-critical 3%%: --load-warning '~:3' --oom-window 6h --builder-user nixremote",
  );
  // The built-in alert first, then the operator's units.
  assert.deepEqual(service.onFailure, [
    "nix-builder-health-alert@%n.service",
    "notify-admins@%n.service",
  ]);
  assert.ok(units.alert, "the module defines nix-builder-health-alert@");
  assert.equal(units.alert.scriptArgs, "%i");
  assert.equal(units.alert.serviceConfig.Type, "oneshot");
  assert.match(units.alert.script, /journalctl --unit "\$unit"/);
  assert.match(
    units.alert.script,
    /systemd-cat --identifier nix-builder-health-alert --priority err/,
  );
  assert.ok(units.alert.path.some((p) => p.endsWith("-systemd")), "journalctl is on its PATH");
  assert.equal(service.startAt, "*:0/15");
  assert.deepEqual(units.tmpfiles, ["d /var/lib/text 0755 root root -"]);
  assert.ok(service.path.some((p) => p.endsWith("-nix")), "nix is on the service's PATH");

  // No threshold set: no threshold flag (the script's defaults). Alert off: the operator's units only.
  const plain = await moduleUnits(`{
    enable = true;
    package = "/src";
    alert.enable = false;
    onFailure = [ "notify-admins@%n.service" ];
  }`);
  assert.equal(
    String(plain.service.serviceConfig.ExecStart).replace(/^\S+ /, ""),
    "run -A /src/scripts/health_check.ts --state-file /var/lib/nix-builder-runbook/health-state.json",
  );
  assert.deepEqual(plain.service.onFailure, ["notify-admins@%n.service"]);
  assert.equal(plain.alert, null);

  // Out of the box the alert is there: a failure is never silent.
  const minimal = await moduleUnits(`{ enable = true; package = "/src"; }`);
  assert.deepEqual(minimal.service.onFailure, ["nix-builder-health-alert@%n.service"]);
  assert.ok(minimal.alert);
});
