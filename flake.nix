{
  description = "nix-builder-runbook: check, fix and watch Nix remote builders, one script per runbook step";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      # Controllers are often Macs; builders and the NixOS module are Linux.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # scripts/<name>.ts -> "<name>": one app and one bin/<name> each.
      isScript = file: builtins.match ".*\\.ts" file != null && builtins.match ".*_test\\.ts" file == null;
      scripts = map (file: builtins.head (builtins.match "(.*)\\.ts" file)) (
        builtins.filter isScript (builtins.attrNames (builtins.readDir ./scripts))
      );
    in
    {
      packages = forAllSystems (pkgs: {
        nix-builder-runbook = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.nix-builder-runbook;
      });

      # nix run .#health_check -- --verbose ; nix run .  (doctor)
      apps = forAllSystems (
        pkgs:
        let
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          app = name: {
            type = "app";
            program = "${package}/bin/${name}";
            meta.description = "nix-builder-runbook ${name} (runbook/${name}.md)";
          };
        in
        nixpkgs.lib.genAttrs scripts app // { default = app "doctor"; }
      );

      # The health check as a systemd service + timer (thresholds, Prometheus textfile, an
      # OnFailure journal alert); see nix/health-check-module.nix for the options.
      nixosModules.health-check = import ./nix/health-check.nix { inherit self; };
      nixosModules.default = self.nixosModules.health-check;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          # deno for every task; esbuild to run nix/build-bundles.sh as the package build does;
          # the lab tests (deno task test) also want nix, sshd, qemu-user and util-linux.
          packages = [
            pkgs.deno
            pkgs.esbuild
            pkgs.openssh
          ];
          shellHook = ''
            export DENO_NO_UPDATE_CHECK=1
          '';
        };
      });

      checks = forAllSystems (
        pkgs:
        {
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        }
        // nixpkgs.lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
          # Evaluates the module in a real NixOS configuration (no VM).
          health-check-module = import ./nix/health-check-eval.nix {
            inherit nixpkgs pkgs;
            module = self.nixosModules.health-check;
          };
        }
      );
    };
}
