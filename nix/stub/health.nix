# The health-check service the flake's module makes of `settings`, through the stub module system:
#   nix-instantiate --eval --strict --json nix/stub/health.nix --arg settings '{ enable = true; }'
{ settings }:
let
  config = (import ./eval.nix).evalHealth settings;
in
{
  service = config.systemd.services.nix-builder-health or null;
  tmpfiles = config.systemd.tmpfiles.rules or [ ];
}
