# NixOS module: the Nix builder health check (scripts/health_check.ts) as a systemd timer.
#
#   services.nix-builder-health = {
#     enable = true;
#     package = inputs.nix-builder-runbook;   # this repository (the flake's `self`)
#     thresholds.freeSpace = { warning = "15%:"; critical = "5G:"; };
#     prometheus.textfileDirectory = "/var/lib/prometheus-node-exporter-text";
#     onFailure = [ "notify-admins@%n.service" ];   # besides the built-in alert
#   };
#
# Every 15 minutes (`startAt`) it runs the check as root. OK (0) and WARNING (1) count as success
# (`SuccessExitStatus = 1`; warnings land in the journal); CRITICAL (2) and UNKNOWN (3) fail the unit,
# which starts nix-builder-health-alert@.service (`alert.enable`, on by default: the failed unit's
# last log lines into the journal at priority err, tag nix-builder-health-alert) and the
# `onFailure` units. See runbook/scheduling.md.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.nix-builder-health;
  inherit (lib) mkEnableOption mkIf mkOption types;
  metricsFile = "${cfg.prometheus.textfileDirectory}/nix_builder.prom";

  # The template started by OnFailure= (%n: the failed unit, the template's instance).
  alertUnit = "nix-builder-health-alert@%n.service";

  # A threshold of health_check.ts: `null` leaves the flag out (the script's own default).
  threshold =
    flag: scriptDefault: what:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      description = ''
        ${what}: `${flag}` of health_check.ts (a Nagios range, see runbook/health_check.md);
        null leaves the flag out and the script's default applies (${scriptDefault}). The script
        checks the value: a bad one makes every run UNKNOWN, which fails the unit.
      '';
    };
  flag = name: value: lib.optionals (value != null) [ name value ];
  t = cfg.thresholds;
  thresholdArgs =
    flag "--warning" t.freeSpace.warning
    ++ flag "--critical" t.freeSpace.critical
    ++ flag "--memory-warning" t.memory.warning
    ++ flag "--memory-critical" t.memory.critical
    ++ flag "--load-warning" t.load.warning
    ++ flag "--load-critical" t.load.critical
    ++ flag "--pressure-warning" t.memoryPressure.warning
    ++ flag "--pressure-critical" t.memoryPressure.critical
    ++ flag "--oom-warning" t.oomKills.warning
    ++ flag "--oom-critical" t.oomKills.critical
    ++ flag "--oom-window" t.oomKills.window;

  args = [
    "--state-file"
    "/var/lib/nix-builder-runbook/health-state.json"
  ]
  ++ lib.optionals (cfg.prometheus.textfileDirectory != null) [ "--prometheus" metricsFile ]
  ++ thresholdArgs
  ++ cfg.extraArgs;
in
{
  options.services.nix-builder-health = {
    enable = mkEnableOption "the Nix builder health check of nix-builder-runbook, on a timer";

    package = mkOption {
      type = types.path;
      description = "The nix-builder-runbook checkout (the flake's `self`): `scripts/health_check.ts` is run from it.";
    };

    deno = mkOption {
      type = types.package;
      default = pkgs.deno;
      defaultText = lib.literalExpression "pkgs.deno";
      description = "The Deno that runs the script (2.x).";
    };

    script = mkOption {
      type = types.str;
      default = "${cfg.package}/scripts/health_check.ts";
      defaultText = lib.literalExpression ''"''${cfg.package}/scripts/health_check.ts"'';
      description = "The script to run: the source, or a `deno bundle` of it (no npm download at run time).";
    };

    startAt = mkOption {
      type = types.either types.str (types.listOf types.str);
      default = "*:0/15";
      description = "When to run the check (systemd.time(7) calendar events).";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--builder-user" "nixremote" "--require-swap" ];
      description = "More arguments for health_check.ts, after the `thresholds` (--builder-user, --require-swap...).";
    };

    thresholds = {
      freeSpace = {
        warning = threshold "--warning" "10%:" "Free space of the store and the build directory that warns (`15%:` below 15%, `20G:` below 20 GiB)";
        critical = threshold "--critical" "5%:" "Free space of the store and the build directory that is critical";
      };
      memory = {
        warning = threshold "--memory-warning" "10%:" "Available memory that warns (`15%:`, `2G:`)";
        critical = threshold "--memory-critical" "5%:" "Available memory that is critical";
      };
      load = {
        warning = threshold "--load-warning" "~:2" "5-minute load average per core that warns (`~:3` above 3)";
        critical = threshold "--load-critical" "~:4" "5-minute load average per core that is critical";
      };
      memoryPressure = {
        warning = threshold "--pressure-warning" "~:10" "Memory pressure (PSI `full avg60`, %) that warns";
        critical = threshold "--pressure-critical" "~:25" "Memory pressure (PSI `full avg60`, %) that is critical";
      };
      oomKills = {
        warning = threshold "--oom-warning" "0, any kill warns" "New OOM kills that warn";
        critical = threshold "--oom-critical" "none, no OOM count is critical" "New OOM kills that are critical (`~:2` more than two)";
        window = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "6h";
          description = ''
            Count the OOM kills of this last duration (`30m`, `6h`, `2d`; `--oom-window`) instead of
            those since the last run; null: since the last run.
          '';
        };
      };
    };

    prometheus.textfileDirectory = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text";
      description = ''
        Write the metrics to `nix_builder.prom` in this directory for node_exporter's textfile
        collector (`--collector.textfile.directory`); null writes none.
      '';
    };

    alert.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Start nix-builder-health-alert@%n.service when the check is CRITICAL or UNKNOWN: it writes
        the failed unit's last 40 log lines to the journal at priority err with the tag
        `nix-builder-health-alert` (`journalctl -t nix-builder-health-alert`, or `-p err`), as
        deploy/nix-builder-health-alert@.service does without NixOS. Your own `onFailure` units
        are started as well.
      '';
    };

    onFailure = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "notify-admins@%n.service" ];
      description = "More units to start when the check is CRITICAL or UNKNOWN (the service failed), besides the alert.";
    };
  };

  config = mkIf cfg.enable {
    systemd.services.nix-builder-health = {
      description = "Nix builder health check (nix-builder-runbook)";
      after = [ "nix-daemon.service" "network-online.target" ];
      startAt = cfg.startAt;
      onFailure = lib.optional cfg.alert.enable alertUnit ++ cfg.onFailure;
      # What the check runs on the machine: nix, sh, stat/df/id/nproc, getconf, dmesg, journalctl.
      path = [
        config.nix.package
        pkgs.bash
        pkgs.coreutils
        pkgs.getconf
        pkgs.util-linux
        pkgs.procps
        config.systemd.package
      ];
      environment = {
        NO_COLOR = "1";
        HOME = "/var/lib/nix-builder-runbook";
        DENO_DIR = "/var/cache/nix-builder-runbook/deno";
      };
      serviceConfig = {
        Type = "oneshot";
        # systemd reads % in ExecStart as a specifier: a literal one (-w 15%:) is written %%.
        ExecStart = lib.replaceStrings [ "%" ] [ "%%" ] (
          lib.escapeShellArgs ([ "${cfg.deno}/bin/deno" "run" "-A" cfg.script ] ++ args)
        );
        # WARNING (1) is logged, not a failure; CRITICAL (2) and UNKNOWN (3) fail the unit.
        SuccessExitStatus = "1";
        # The check's own deadline is --timeout (60 s); this is the backstop.
        TimeoutStartSec = "2min";
        StateDirectory = "nix-builder-runbook";
        CacheDirectory = "nix-builder-runbook";
        Nice = 10;
        IOSchedulingClass = "idle";
      };
    };

    # The alert: a template, %i is the failed unit (nix-builder-health.service).
    systemd.services."nix-builder-health-alert@" = mkIf cfg.alert.enable {
      description = "Alert: %i failed (Nix builder health check)";
      path = [ config.systemd.package ];
      scriptArgs = "%i";
      script = ''
        unit="$1"
        {
          echo "$unit failed: the Nix builder health check is CRITICAL or UNKNOWN; its last lines:"
          journalctl --unit "$unit" --lines 40 --no-pager --output cat || true
        } 2>&1 | systemd-cat --identifier nix-builder-health-alert --priority err
      '';
      serviceConfig.Type = "oneshot";
    };

    systemd.tmpfiles.rules = lib.optional (cfg.prometheus.textfileDirectory != null)
      "d ${cfg.prometheus.textfileDirectory} 0755 root root -";
  };
}
