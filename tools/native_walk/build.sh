#!/usr/bin/env bash
# Builds the native-walk bench harness against the real ic-stable-structures source, offline.
#
#   tools/native_walk/build.sh CRATE_DIR            # an unpacked ic-stable-structures source tree
#   tools/native_walk/build.sh GIT_MIRROR [TAG]     # a git (bare) mirror of dfinity/stable-structures;
#                                                   # TAG (default v0.7.2) is extracted under target/
#
# The crate's source is linked as crate-src (ignored by git, never committed); its only mandatory
# dependency, ic_principal, is the local stub in ic_principal_stub/ (patched in by Cargo.toml), so
# nothing is fetched from a registry. The binary: tools/native_walk/target/release/native-walk.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${1:?usage: build.sh CRATE_DIR | GIT_MIRROR [TAG]}"
tag="${2:-v0.7.2}"
[ -d "$src" ] || { echo "build.sh: $src: no such directory" >&2; exit 2; }
src="$(cd "$src" && pwd)"
if [ -f "$src/Cargo.toml" ] && [ -d "$src/src" ]; then
    crate="$src"
elif git -C "$src" rev-parse --verify --quiet "$tag^{commit}" >/dev/null; then
    crate="$here/target/ic-stable-structures-$tag"
    if [ ! -f "$crate/Cargo.toml" ]; then
        mkdir -p "$crate.tmp"
        git -C "$src" archive "$tag" | tar -x -C "$crate.tmp"
        mv "$crate.tmp" "$crate"
    fi
else
    echo "build.sh: $src is neither a crate source tree nor a git repository with $tag" >&2
    exit 2
fi
grep -q '^name = "ic-stable-structures"' "$crate/Cargo.toml" || {
    echo "build.sh: $crate/Cargo.toml is not ic-stable-structures" >&2
    exit 2
}
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$crate/Cargo.toml" | head -1)"
ln -sfn "$crate" "$here/crate-src"
cd "$here"
NATIVE_WALK_CRATE_VERSION="$version" cargo build --release --offline
echo "built $here/target/release/native-walk against ic-stable-structures $version"
