# The health-check units the flake's module makes of `settings`, through the stub module system:
#   nix-instantiate --eval --strict --json nix/stub/health.nix --arg settings '{ enable = true; }'
# `--arg bare true` evaluates nix/health-check-module.nix alone (set `package` then).
{
  settings,
  bare ? false,
}:
let
  stub = import ./eval.nix;
  config = (if bare then stub.evalHealthModule else stub.evalHealth) settings;
in
{
  service = config.systemd.services.nix-builder-health or null;
  # The OnFailure template (nix-builder-health-alert@.service), null when there is none.
  alert = config.systemd.services."nix-builder-health-alert@" or null;
  tmpfiles = config.systemd.tmpfiles.rules or [ ];
}
