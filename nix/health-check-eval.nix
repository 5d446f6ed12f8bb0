# `nix flake check` (Linux): the health-check module in a real NixOS evaluation (no VM, nothing
# run), with the options an operator would set; the generated service and timer units become the
# check's output, and the build fails if they lack what the module promises.
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
          extraArgs = [
            "--warning"
            "15%:"
          ];
          prometheus.textfileDirectory = "/var/lib/prometheus-node-exporter-text";
          onFailure = [ "notify-admins@%n.service" ];
        };
      }
    ];
  };
  units = machine.config.systemd.units;
  service = units."nix-builder-health.service".text;
  timer = units."nix-builder-health.timer".text;
  expect =
    text: needle:
    lib.assertMsg (lib.hasInfix needle text) "nix-builder-health unit lacks '${needle}':\n${text}";
in
# The assertions sit inside the text, so listing the flake's outputs does not evaluate NixOS; building
# the check (nix flake check, nix build) does.
pkgs.writeText "nix-builder-health-units" (
  assert expect service "SuccessExitStatus=1";
  assert expect service "OnFailure=notify-admins@%n.service";
  assert expect service "share/nix-builder-runbook/health_check.js";
  assert expect service "--prometheus /var/lib/prometheus-node-exporter-text/nix_builder.prom";
  assert expect service "--warning 15%%:"; # systemd specifier escape of the literal %
  assert expect timer "OnCalendar=hourly";
  ''
    ${service}
    ${timer}
  ''
)
