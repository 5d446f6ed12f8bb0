# flake.nix's outputs evaluated with the stub nixpkgs (./nixpkgs.nix, ./lib.nix), and the
# health-check module evaluated with the stub module system; used by ./check.nix and ./health.nix.
let
  root = ../..;
  nixpkgs = import ./nixpkgs.nix;
  inherit (nixpkgs) lib;
  flake = import (root + "/flake.nix");
  self =
    flake.outputs {
      inherit self nixpkgs;
    }
    // {
      outPath = toString root;
    };
  system = "x86_64-linux";
  pkgs = nixpkgs.legacyPackages.${system};

  # The two NixOS options the module reads from the rest of the system.
  nixosBase =
    { lib, pkgs, ... }:
    {
      options.nix.package = lib.mkOption {
        type = lib.types.package;
        default = pkgs.nix;
      };
      options.systemd.package = lib.mkOption {
        type = lib.types.package;
        default = pkgs.systemd;
      };
    };
  # The config of a system with `module` and `services.nix-builder-health = settings`.
  evalWith =
    module: settings:
    (lib.evalModules {
      modules = [
        nixosBase
        module
        { services.nix-builder-health = settings; }
      ];
      specialArgs = { inherit pkgs; };
      freeform = [
        [ ]
        [ "nix" ]
        [ "systemd" ]
      ];
    }).config;
in
{
  inherit self system lib;
  # With the flake's module (its package and bundled script as defaults).
  evalHealth = evalWith self.nixosModules.health-check;
  # With nix/health-check-module.nix alone: no flake defaults, `package` must be set.
  evalHealthModule = evalWith (root + "/nix/health-check-module.nix");
}
