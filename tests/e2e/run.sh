#!/usr/bin/env bash
# End-to-end tests of nix-layers' Nix side, with real Nix 2.8 (sandbox on), offline:
#   eval.sh        API shape, argument errors, passthru (nix-instantiate)
#   build.sh       nix-build of default.nix and `nix build` through the flake, the overlay
#   images.sh      every example loaded into dockerd and podman and run; layers vs plan; skopeo
#   oci.sh         the hybrid archive as docker-archive:/oci-archive:, `oci` output via skopeo, umoci, podman, docker
#   push.sh        `push` to a local docker-registry, then docker and podman pull + run; re-push uploads nothing
#   verbs.sh       stream-script verbs (`./result push|oci …`), `-t`, copyToRegistry/copyTo (nix run)
#   load.sh        `load docker|podman`: an app-only update sends only the changed layers, then runs
#   popularity.sh  referencesByPopularity == `nix-layers popularity` on the same graph
#   nixdb.sh       includeNixDB: the unpacked image is a store the real Nix verifies
#   fromimage.sh   fromImage: a layered image on a layered image, and a stream on it, in docker and podman
#   compat.sh      nixpkgs' docker-tools NixOS tests, one case each, in docker and podman (docs/compat.md)
# As root on Debian 12; installs missing packages with apt-get. Ends with one line
# "N passed, N failed" and exits nonzero on any failure.
# E2E_ONLY="eval build" runs only those suites (the binary is built and the stand-in filled anyway).
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$REPO/tests/e2e
. "$E2E/lib.sh"

[ "$(id -u)" = 0 ] || { echo "tests/e2e/run.sh must run as root (Nix single-user store, dockerd, podman)"; exit 2; }
E2E_TMP=$(mktemp -d /tmp/nix-layers-e2e.XXXXXX)
cleanup() { dockerd_stop; podman_cleanup; rm -rf "$E2E_TMP"; }
trap cleanup EXIT

start=$(date +%s)
ensure_packages
nix_env

echo "== cargo build (static)"
( cd "$REPO" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target x86_64-unknown-linux-gnu ) >"$E2E_TMP/cargo.log" 2>&1 \
  || { tail -30 "$E2E_TMP/cargo.log"; echo "0 passed, 1 failed"; exit 1; }
NIX_LAYERS=$REPO/target/x86_64-unknown-linux-gnu/release/nix-layers
standin_prepare "$NIX_LAYERS"

for s in eval build images oci push verbs load popularity nixdb fromimage compat; do
  if [ -z "${E2E_ONLY:-}" ] || [[ " $E2E_ONLY " == *" $s "* ]]; then
    t0=$(date +%s); . "$E2E/$s.sh"; echo "   ($s: $(( $(date +%s) - t0 )) s)"
  fi
done

echo
if [ "$E2E_FAILED" -gt 0 ]; then printf 'failed: %s\n' "${E2E_FAILURES[@]}"; fi
echo "e2e time: $(( $(date +%s) - start )) s"
echo "$E2E_PASSED passed, $E2E_FAILED failed"
[ "$E2E_FAILED" -eq 0 ]
