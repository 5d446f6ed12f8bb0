# `nix flake check` (Linux): the health-check module in a real NixOS evaluation (no VM, nothing
# run), with the options an operator would set (thresholds, the default alert and an extra
# onFailure unit); the generated service, timer and alert template become the check's output, and
# the build fails if they lack what the module promises.
{
  nixpkgs,
  pkgs,
  module,
}:
let
  inherit (nixpkgs) lib;
  machine = lib.nixosSystem {
    modules = [
      module
      {
        nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
        boot.isContainer = true;
        system.stateVersion = lib.trivial.release;
        services.nix-builder-health = {
          enable = true;
          startAt = "hourly";
          thresholds = {
            freeSpace.warning = "15%:";
            load.critical = "~:6";
            oomKills.window = "6h";
          };
          extraArgs = [
            "--builder-user"
            "nixremote"
          ];
          prometheus.textfileDirectory = "/var/lib/prometheus-node-exporter-text";
          # Besides the built-in alert (alert.enable defaults to true).
          onFailure = [ "notify-admins@%n.service" ];
        };
      }
    ];
  };
  units = machine.config.systemd.units;
  service = units."nix-builder-health.service".text;
  timer = units."nix-builder-health.timer".text;
  alert = units."nix-builder-health-alert@.service".text;
  expect =
    text: needle:
    lib.assertMsg (lib.hasInfix needle text) "nix-builder-health unit lacks '${needle}':\n${text}";
in
# The assertions sit inside the text, so listing the flake's outputs does not evaluate NixOS; building
# the check (nix flake check, nix build) does.
pkgs.writeText "nix-builder-health-units" (
  assert expect service "SuccessExitStatus=1";
  assert expect service "OnFailure=";
  assert expect service "nix-builder-health-alert@%n.service";
  assert expect service "notify-admins@%n.service";
  assert expect service "share/nix-builder-runbook/health_check.js";
  assert expect service "--prometheus /var/lib/prometheus-node-exporter-text/nix_builder.prom";
  assert expect service "--warning 15%%:"; # systemd specifier escape of the literal %
  assert expect service "--load-critical '~:6'";
  assert expect service "--oom-window 6h --builder-user nixremote";
  assert expect timer "OnCalendar=hourly";
  # The template OnFailure= starts: its script gets the failed unit as $1 (%i).
  assert expect alert "Type=oneshot";
  assert expect alert "-start %i"; # ExecStart = the script (makeJobScript "<name>-start") + scriptArgs
  ''
    ${service}
    ${timer}
    ${alert}
  ''
)
