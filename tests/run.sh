#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. cargo test: unit tests, the popularity vectors in ../shared/data, image structure,
#      determinism and every bad input (tests/cli); the registry client against real
#      docker-registry processes it starts on 127.0.0.1 (tests/registry);
#   2. tests/e2e/run.sh: the real binary as a Nix 2.8 builder (sandbox on), the flake and
#      overlay offline, and every example image loaded into dockerd and podman and run.
# Installs what it needs when missing (apt-get, as root). Exits nonzero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/data/popularity ]; then
  echo "tests/run.sh: ../shared/data/popularity is missing (the popularity vectors live next to the repo); the vector tests will fail" >&2
fi

# tests/registry starts Debian's docker-registry (plain, htpasswd, token, TLS), with
# htpasswd, openssl certificates and skopeo to check what was pushed.
missing=()
for pair in docker-registry:docker-registry htpasswd:apache2-utils openssl:openssl skopeo:skopeo strace:strace script:bsdutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== cargo test"
cargo test --release --locked

echo "== end-to-end: Nix, docker, podman, skopeo"
bash tests/e2e/run.sh
