# Evaluates flake.nix's outputs with the stub nixpkgs (./nixpkgs.nix, ./lib.nix) and the health-check
# module with the stub module system, and returns what tests/flake_test.ts asserts on:
#
#   nix-instantiate --eval --strict --json nix/stub/check.nix
#
# What this proves: the flake's output attributes (apps per script, packages, devShells, checks,
# nixosModules) and the strings they are made of; that package.nix fetches every npm tarball of
# deno.lock with the lock's hash and passes them to build-bundles.sh; and that the module's options
# exist with these names and types and turn into this service definition. What it does not: that
# nixpkgs builds the package, or that NixOS accepts the module and generates working units (the
# flake's `checks.<linux>.health-check-module` does that where nixpkgs is available).
let
  inherit (import ./eval.nix) self system evalHealth;
  package = self.packages.${system}.default;

  enabled = evalHealth {
    enable = true;
    startAt = "hourly";
    extraArgs = [
      "--warning"
      "15%:"
      "--builder-user"
      "nixremote"
    ];
    prometheus.textfileDirectory = "/var/lib/prometheus-node-exporter-text";
    # An operator whose own notifier replaces the built-in alert (on by default: the default and
    # the thresholds are asserted by tests/nixos_module_test.ts through ./health.nix).
    alert.enable = false;
    onFailure = [ "notify-admins@%n.service" ];
  };
  minimal = evalHealth { enable = true; };
  disabled = evalHealth { };
  overridden = evalHealth {
    enable = true;
    script = "/opt/health_check.js";
  };
in
{
  systems = builtins.attrNames self.packages;
  packageNames = builtins.attrNames self.packages.${system};
  apps = builtins.mapAttrs (_: app: {
    inherit (app) type program;
  }) self.apps.${system};
  darwinApps = builtins.attrNames self.apps.aarch64-darwin;
  package = {
    inherit (package)
      name
      buildPhase
      installPhase
      installCheckPhase
      src
      ;
    mainProgram = package.meta.mainProgram;
    nativeBuildInputs = map (d: d.name) package.nativeBuildInputs;
  };
  devShell = map (d: d.name) self.devShells.${system}.default.packages;
  checks = builtins.attrNames self.checks.${system};
  darwinChecks = builtins.attrNames self.checks.aarch64-darwin;
  modules = builtins.attrNames self.nixosModules;
  health = {
    enabled = {
      service = enabled.systemd.services.nix-builder-health;
      tmpfiles = enabled.systemd.tmpfiles.rules;
    };
    minimal = {
      service = minimal.systemd.services.nix-builder-health;
      tmpfiles = minimal.systemd.tmpfiles.rules;
    };
    disabledHasService = disabled.systemd.services ? nix-builder-health;
    overriddenExecStart = overridden.systemd.services.nix-builder-health.serviceConfig.ExecStart;
  };
}
