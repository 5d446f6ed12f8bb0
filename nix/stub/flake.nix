{
  # The stub nixpkgs (./nixpkgs.nix) as a flake, to evaluate ../../flake.nix with Nix's own flake
  # machinery where nixpkgs cannot be fetched:
  #   nix --extra-experimental-features 'nix-command flakes' --store "$(mktemp -d)" flake show \
  #     path:$PWD --override-input nixpkgs path:$PWD/nix/stub
  description = "Stand-in for nixpkgs (placeholders, no packages): for checking flake.nix only";
  outputs = _: import ./nixpkgs.nix;
}
