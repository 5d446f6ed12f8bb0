# The npm packages deno.lock pins, as `fetchurl` arguments, and a check that deno.json's imports
# can be resolved from a plain node_modules directory (what nix/build-bundles.sh gives esbuild).
#
# Builtins only (no nixpkgs), so it evaluates anywhere:
#   nix-instantiate --eval --strict --json nix/npm-deps.nix \
#     --arg lockFile ./deno.lock --arg denoJson ./deno.json -A packages
#
# Each package: { name, version, url, hash } where `hash` is the lock's SRI integrity (sha512-...),
# so every tarball is a fixed-output fetch that Nix checks against the same hash Deno checks.
{ lockFile, denoJson }:
let
  lock = builtins.fromJSON (builtins.readFile lockFile);
  config = builtins.fromJSON (builtins.readFile denoJson);

  lockVersion = lock.version or "unknown";

  # "name@1.2.3" or "@scope/name@1.2.3_peer@4.5.6" (peer-dependency variant of one tarball).
  parseKey =
    key:
    let
      m = builtins.match "(@?[^@]+)@([^_]+)(_.*)?" key;
    in
    if m == null then
      throw "Cannot parse deno.lock npm entry '${key}': expected name@version"
    else
      {
        name = builtins.elemAt m 0;
        version = builtins.elemAt m 1;
      };

  lastOf = list: builtins.elemAt list (builtins.length list - 1);
  # "@scope/name" -> "name": npm tarballs are named after the unscoped name.
  unscoped = name: lastOf (builtins.split "/" name);

  entryFor =
    key:
    let
      p = parseKey key;
      e = lock.npm.${key};
    in
    if !(e ? integrity) then
      throw "deno.lock npm entry '${key}' has no integrity hash"
    else
      p
      // {
        url = e.tarball or "https://registry.npmjs.org/${p.name}/-/${unscoped p.name}-${p.version}.tgz";
        hash = e.integrity;
      };

  entries = map entryFor (builtins.attrNames (lock.npm or { }));

  # Peer-dependency variants share one tarball: keep one entry per name@version.
  byNameVersion = builtins.listToAttrs (
    map (e: {
      name = "${e.name}@${e.version}";
      value = e;
    }) entries
  );
  packages = builtins.attrValues byNameVersion;

  # A flat node_modules holds one version per name.
  names = map (e: e.name) packages;
  duplicates = builtins.filter (
    n: builtins.length (builtins.filter (m: m == n) names) > 1
  ) names;

  # Every import must be `"name": "npm:name@version"` (or `"name/": "npm:name@version/"`), so the
  # bare specifier in the source is the package name that node_modules resolves.
  importProblems = builtins.filter (x: x != null) (
    map (
      key:
      let
        target = config.imports.${key};
        bare = builtins.head (builtins.match "(.*[^/])/?" key);
        m = builtins.match "npm:(@?[^@]+)@[^/]+/?" target;
      in
      if m != null && builtins.head m == bare then null else "${key} -> ${target}"
    ) (builtins.attrNames (config.imports or { }))
  );
in
assert
  lockVersion == "4" || lockVersion == "5"
  || throw "deno.lock version ${lockVersion}: only versions 4 and 5 are understood";
assert
  duplicates == [ ]
  || throw "deno.lock pins two versions of ${builtins.head duplicates}: a flat node_modules cannot hold both";
assert
  importProblems == [ ]
  || throw "deno.json import ${builtins.head importProblems} is not an npm package of the same name";
{
  inherit packages;
  # For build-bundles.sh: "name=url" words are turned into "name=/nix/store/...tgz" by the caller.
  names = map (e: e.name) packages;
}
