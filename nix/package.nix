# The scripts as one package: bin/<script> for each scripts/<script>.ts, each a wrapper running
# nixpkgs' deno on a bundle (share/nix-builder-runbook/<script>.js) with `-A` (Deno 2.9 only lets
# --allow-all read most of /proc and /sys; what needs root is in runbook/install.md).
#
# No network inside the Nix sandbox: `deno run scripts/x.ts` would fetch npm packages, and
# `deno bundle` fetches its own esbuild, so the bundles are built here by nix/build-bundles.sh with
# nixpkgs' esbuild from the npm tarballs deno.lock pins (fixed-output fetches checked against the
# lock's integrity hashes, see nix/npm-deps.nix).
{
  lib,
  stdenvNoCC,
  fetchurl,
  deno,
  esbuild,
  makeWrapper,
  version ? (builtins.fromJSON (builtins.readFile ../deno.json)).version,
}:
let
  deps = import ./npm-deps.nix {
    lockFile = ../deno.lock;
    denoJson = ../deno.json;
  };
  tarballs = map (p: "${p.name}=${fetchurl { inherit (p) url hash; }}") deps.packages;
in
stdenvNoCC.mkDerivation {
  pname = "nix-builder-runbook";
  inherit version;

  # Only what the bundles are made of: editing tests or the runbook does not rebuild.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../deno.json
      ../deno.lock
      ../lib
      ../scripts
      ./build-bundles.sh
    ];
  };

  nativeBuildInputs = [
    esbuild
    makeWrapper
  ];

  buildPhase = ''
    runHook preBuild
    bash nix/build-bundles.sh --src . --out dist --esbuild ${lib.getExe esbuild} \
      ${lib.escapeShellArgs tarballs}
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    share=$out/share/nix-builder-runbook
    mkdir -p $out/bin $share
    for bundle in dist/*.js; do
      name=$(basename "$bundle" .js)
      install -m 0755 "$bundle" "$share/$name.js"
      # --no-config/--no-lock: a deno.json in the caller's directory must not change anything.
      makeWrapper ${lib.getExe deno} "$out/bin/$name" \
        --add-flags "run -A --no-config --no-lock --cached-only $share/$name.js" \
        --set-default DENO_NO_UPDATE_CHECK 1
    done
    runHook postInstall
  '';

  # Every wrapper starts, parses its flags and exits 0, in the sandbox: no network, no npm cache.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    export HOME=$TMPDIR DENO_DIR=$TMPDIR/deno-dir
    for program in $out/bin/*; do
      "$program" --version
    done
    runHook postInstallCheck
  '';

  meta = {
    description = "Check, fix and watch Nix remote builders: one script per runbook step";
    mainProgram = "doctor";
    platforms = deno.meta.platforms;
  };
}
