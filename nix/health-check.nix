# The flake's nixosModules.health-check: nix/health-check-module.nix (its options and the systemd
# service + timer) with this flake's package as the default, so the timer runs the bundled
# share/nix-builder-runbook/health_check.js with nixpkgs' deno: nothing is fetched from npm at run
# time, and a builder cut off from the internet still checks itself.
{ self }:
{ lib, pkgs, ... }:
let
  runbook = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
in
{
  imports = [ ./health-check-module.nix ];

  services.nix-builder-health = {
    package = lib.mkDefault self;
    script = lib.mkDefault "${runbook}/share/nix-builder-runbook/health_check.js";
  };
}
