# A stand-in for the flake input `nixpkgs` on a machine without nixpkgs (tests/flake_test.ts): the
# stub lib (./lib.nix) and, per system, placeholder packages. A placeholder is an attribute set
# marked as a derivation with a made-up store path: nothing is built, and nothing about real
# packages (their versions, their build) is checked. mkDerivation and mkShell return their
# arguments, so the check can read the phases and the inputs they were given.
let
  lib = import ./lib.nix;
  systems = [
    "x86_64-linux"
    "aarch64-linux"
    "x86_64-darwin"
    "aarch64-darwin"
  ];
  placeholder =
    name: attrs:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
      meta = { };
    }
    // attrs;
  tool = name: placeholder name { meta.mainProgram = name; };

  pkgsFor =
    system:
    let
      hostPlatform = {
        inherit system;
        isLinux = builtins.match ".*-linux" system != null;
        isDarwin = builtins.match ".*-darwin" system != null;
      };
      stdenv = {
        inherit hostPlatform;
        mkDerivation = attrs: placeholder "${attrs.pname}-${attrs.version}" attrs;
      };
      pkgs = {
        inherit lib stdenv;
        stdenvNoCC = stdenv;
        callPackage =
          fn: overrides:
          let
            f = if builtins.isFunction fn then fn else import fn;
          in
          f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // overrides);
        # Like nixpkgs' fetchurl: a fixed-output fetch needs an SRI hash (here: deno.lock's sha512).
        fetchurl =
          { url, hash }:
          assert builtins.match "sha512-[A-Za-z0-9+/]{86}==" hash != null
            || throw "stub fetchurl: '${hash}' is not a sha512 SRI hash";
          placeholder (baseNameOf url) { inherit url hash; };
        mkShell = attrs: placeholder "nix-shell" attrs;
        writeText = name: text: placeholder name { inherit text; };
        deno = placeholder "deno" {
          meta = {
            mainProgram = "deno";
            platforms = systems;
          };
        };
        esbuild = tool "esbuild";
        makeWrapper = tool "make-wrapper";
        openssh = tool "openssh";
        bash = tool "bash";
        coreutils = tool "coreutils";
        getconf = tool "getconf";
        util-linux = tool "util-linux";
        procps = tool "procps";
        nix = tool "nix";
        systemd = tool "systemd";
      };
    in
    pkgs;
in
{
  inherit lib;
  legacyPackages = lib.genAttrs systems pkgsFor;
}
