# NixOS module: the Nix builder health check (scripts/health_check.ts) as a systemd timer.
#
#   services.nix-builder-health = {
#     enable = true;
#     package = inputs.nix-builder-runbook;   # this repository (the flake's `self`)
#     prometheus.textfileDirectory = "/var/lib/prometheus-node-exporter-text";
#     onFailure = [ "notify-admins@%n.service" ];
#   };
#
# Every 15 minutes (`startAt`) it runs the check as root. OK (0) and WARNING (1) count as success
# (`SuccessExitStatus = 1`; warnings land in the journal); CRITICAL (2) and UNKNOWN (3) fail the unit,
# which starts the `onFailure` units. See runbook/scheduling.md.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.nix-builder-health;
  inherit (lib) mkEnableOption mkIf mkOption types;
  metricsFile = "${cfg.prometheus.textfileDirectory}/nix_builder.prom";
  args = [
    "--state-file"
    "/var/lib/nix-builder-runbook/health-state.json"
  ]
  ++ lib.optionals (cfg.prometheus.textfileDirectory != null) [ "--prometheus" metricsFile ]
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
      example = [ "-w" "15%:" "-c" "5%:" "--builder-user" "nixremote" ];
      description = "More arguments for health_check.ts (thresholds, --builder-user, --require-swap...).";
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

    onFailure = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "notify-admins@%n.service" ];
      description = "Units to start when the check is CRITICAL or UNKNOWN (the service failed).";
    };
  };

  config = mkIf cfg.enable {
    systemd.services.nix-builder-health = {
      description = "Nix builder health check (nix-builder-runbook)";
      after = [ "nix-daemon.service" "network-online.target" ];
      startAt = cfg.startAt;
      onFailure = cfg.onFailure;
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

    systemd.tmpfiles.rules = lib.optional (cfg.prometheus.textfileDirectory != null)
      "d ${cfg.prometheus.textfileDirectory} 0755 root root -";
  };
}
