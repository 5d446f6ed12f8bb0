#!/usr/bin/env bash
# Bundles every scripts/*.ts into one self-contained OUT/<script>.js, without network: the npm
# packages come as tarballs (deno.lock's, fetched by Nix as fixed-output paths), are unpacked into
# a flat node_modules, and esbuild inlines them. This is the Nix build's counterpart of
# `deno task bundle`: `deno bundle` downloads its own esbuild binary from npm at run time, which the
# Nix sandbox forbids, so the flake runs nixpkgs' esbuild directly with the same settings.
#
# Usage: build-bundles.sh --src DIR --out DIR --esbuild PATH [--only NAME]... [NAME=TARBALL]...
#
# tests/flake_test.ts runs this very script outside Nix (with the esbuild binary Deno caches and
# the tarballs of deno.lock checked against their integrity hashes) and runs what it produces.
set -euo pipefail

src="" out="" esbuild="" only=()
tarballs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --src) src="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --esbuild) esbuild="$2"; shift 2 ;;
    --only) only+=("$2"); shift 2 ;;
    *=*) tarballs+=("$1"); shift ;;
    *) echo "build-bundles: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ -z "$src" ] || [ -z "$out" ] || [ -z "$esbuild" ]; then
  echo "build-bundles: --src, --out and --esbuild are required" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
modules="$work/node_modules"
mkdir -p "$modules"
for pair in ${tarballs[@]+"${tarballs[@]}"}; do
  name="${pair%%=*}"
  tarball="${pair#*=}"
  if [ -e "$modules/$name" ]; then
    echo "build-bundles: package '$name' given twice" >&2
    exit 2
  fi
  mkdir -p "$modules/$name"
  # npm tarballs hold one top directory (usually package/).
  tar -xzf "$tarball" -C "$modules/$name" --strip-components=1 --no-same-owner --no-same-permissions
done

# CommonJS packages (commander) call require(); an ES module has none, so give it Node's.
banner='import { createRequire as __nbrCreateRequire } from "node:module"; const require = __nbrCreateRequire(import.meta.url);'
shebang='#!/usr/bin/env -S deno run -A'

mkdir -p "$out"
count=0
for entry in "$src"/scripts/*.ts; do
  name=$(basename "$entry" .ts)
  if [ "${#only[@]}" -gt 0 ] && [[ " ${only[*]} " != *" $name "* ]]; then continue; fi
  NODE_PATH="$modules" "$esbuild" "$entry" --bundle --format=esm --platform=node --target=esnext \
    --banner:js="$banner" --log-level=warning --outfile="$work/$name.js"
  {
    echo "$shebang"
    sed '1{/^#!/d}' "$work/$name.js"
  } >"$out/$name.js"
  chmod 0755 "$out/$name.js"
  # Anything left to import must be a Node built-in: Deno provides those, nothing else.
  if grep -Eo '^import .* from "[^"]+"' "$out/$name.js" | grep -Ev 'from "node:' >&2; then
    echo "build-bundles: $name.js still imports a package" >&2
    exit 1
  fi
  count=$((count + 1))
done
if [ "$count" -eq 0 ]; then
  echo "build-bundles: no script bundled from $src/scripts" >&2
  exit 1
fi
echo "build-bundles: $count bundles in $out"
