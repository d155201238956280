# Helpers for the end-to-end suites (sourced by run.sh; bash).
#
# Everything runs as root on Debian 12, offline, with Debian's Nix 2.8 and the sandbox on.
# Recipes: ../../../shared/notes/nix-and-runtimes.md (dockerd start/stop, podman config).

E2E_PASSED=0
E2E_FAILED=0
E2E_FAILURES=()

pass() { E2E_PASSED=$((E2E_PASSED + 1)); echo "  ok   $1"; rm -f "${E2E_TMP:-/nonexistent}/stderr"; }
fail() {
  E2E_FAILED=$((E2E_FAILED + 1)); E2E_FAILURES+=("$1")
  echo "  FAIL $1"
  if [ $# -gt 1 ]; then printf '%s\n' "$2" | head -c 3000 | sed 's/^/       | /'; fi
  # the stderr of the last command that saved it there
  if [ -s "${E2E_TMP:-/nonexistent}/stderr" ]; then tail -15 "$E2E_TMP/stderr" | sed 's/^/       ! /'; fi
  rm -f "${E2E_TMP:-/nonexistent}/stderr"
}
# check NAME CMD...: passes when CMD succeeds.
check() { local name=$1; shift; local out; if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$out"; fi; }
# check_eq NAME EXPECTED ACTUAL
check_eq() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected: $2
actual:   $3"; fi; }
# check_contains NAME HAYSTACK NEEDLE
check_contains() { case "$2" in *"$3"*) pass "$1" ;; *) fail "$1" "expected to contain: $3
actual: $2" ;; esac; }
suite() { echo; echo "== $1"; }

# --- packages ------------------------------------------------------------------------
# Installs what is missing (CI is a clean Debian 12, as root). Never touches what is there.
ensure_packages() {
  local missing=() cmd pkg
  for pair in nix-build:nix-bin patchelf:patchelf skopeo:skopeo \
              umoci:umoci podman:podman runc:runc dockerd:docker.io jq:jq zstd:zstd \
              git:git pgrep:procps zcat:gzip fakeroot:fakeroot proot:proot; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  # nix-setup-systemd creates the nixbld group and users the builds run as.
  getent group nixbld >/dev/null 2>&1 || missing+=(nix-setup-systemd)
  # busybox-static, not the dynamic busybox: the stand-in builds run it in an empty sandbox.
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# --- Nix -----------------------------------------------------------------------------
nix_env() {
  export NIX_CONFIG='substituters =
experimental-features = nix-command flakes
sandbox = true'
  unset NIX_PATH
}

# The stand-in nixpkgs gets host copies of busybox-static and of the static nix-layers.
STANDIN=$REPO/tests/nixpkgs
standin_prepare() {
  local bin=$1
  mkdir -p "$STANDIN/host/busybox/bin"
  install -m 755 "$(command -v busybox)" "$STANDIN/host/busybox/bin/busybox"
  ln -sfn busybox "$STANDIN/host/busybox/bin/sh"
  install -m 755 "$bin" "$STANDIN/host/nix-layers"
  standin_copy_debian "$STANDIN/host/debian"
}

# Debian's own dynamically linked tools for the stand-in's stdenv and its `fakeroot` and
# `proot` (tests/nixpkgs/pkgs.nix patches them to run from the store): fakeroot works by
# LD_PRELOAD, so the shell and tools it runs must be dynamic, which busybox-static is not.
#   bin/      what a nixpkgs stdenv has on PATH: bash, coreutils, findutils, sed, grep, tar, gzip, getopt
#   libexec/  fakeroot-sysv (script), faked-sysv, proot, patchelf (used to patch the rest)
#   lib/      every shared library they need, ld-linux-x86-64.so.2, libfakeroot/libfakeroot-sysv.so
standin_copy_debian() {
  local dest=$1 f lib
  rm -rf "$dest"; mkdir -p "$dest/bin" "$dest/libexec" "$dest/lib/libfakeroot"
  for f in /bin/bash $(dpkg -L coreutils | grep -E '/s?bin/[^/]+$') \
           $(command -v find xargs sed grep tar gzip getopt); do
    [ -f "$f" ] && [ ! -L "$f" ] && cp "$f" "$dest/bin/"
  done
  for f in /usr/bin/fakeroot-sysv /usr/bin/faked-sysv /usr/bin/proot /usr/bin/patchelf; do cp "$f" "$dest/libexec/"; done
  cp /usr/lib/x86_64-linux-gnu/libfakeroot/libfakeroot-sysv.so "$dest/lib/libfakeroot/"
  for lib in $(for f in "$dest"/bin/* "$dest"/libexec/* "$dest"/lib/libfakeroot/*; do ldd "$f" 2>/dev/null; done \
               | sed -n 's|.*=> \(/[^ ]*\) .*|\1|p' | sort -u); do
    cp -L "$lib" "$dest/lib/"
  done
  cp -L /lib64/ld-linux-x86-64.so.2 "$dest/lib/"
  chmod -R u+w,go-w "$dest"
}

# nix-build of the repo's default.nix against the stand-in, no result link; prints out path.
nb() { nix-build --no-out-link "$REPO/default.nix" -I "nixpkgs=$STANDIN" "$@"; }
# nix-instantiate --eval of an expression with `api` (default.nix) and `pkgs` (stand-in) in scope.
nix_eval() {
  nix-instantiate --eval --strict --json -E "
    let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
        api = import $REPO/default.nix { inherit pkgs; };
    in $1"
}

# --- docker (recipe from the notes; leaves no process, mount or dir behind) -----------
dockerd_start() {
  local D; D=$(mktemp -d /tmp/e2e-dockerd.XXXXXX)
  dockerd --iptables=false --ip-masq=false --bridge=none \
    --data-root "$D/root" --exec-root "$D/exec" --pidfile "$D/docker.pid" \
    -H "unix://$D/docker.sock" >"$D/log" 2>&1 &
  DOCKERD_PID=$!; DOCKERD_DIR=$D; export DOCKER_HOST="unix://$D/docker.sock"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "dockerd failed to start:"; tail -20 "$D/log"; return 1
}
dockerd_stop() {
  [ -n "${DOCKERD_PID:-}" ] || return 0
  kill "$DOCKERD_PID" 2>/dev/null; wait "$DOCKERD_PID" 2>/dev/null
  for _ in $(seq 1 40); do pgrep -f "$DOCKERD_DIR" >/dev/null || break; sleep 0.5; done
  rm -rf "$DOCKERD_DIR"; unset DOCKER_HOST DOCKERD_DIR DOCKERD_PID
}

# --- podman: its own storage under $E2E_TMP, runc with ulimits (the VM lacks CAP_SYS_RESOURCE)
podman_setup() {
  PODMAN_DIR=$E2E_TMP/podman; mkdir -p "$PODMAN_DIR"
  cat > "$PODMAN_DIR/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF=$PODMAN_DIR/containers.conf
}
pm() { podman --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/run" --storage-driver vfs "$@"; }
# Unsets PODMAN_DIR: a later suite that finds it set assumes the store is still there.
podman_cleanup() { [ -n "${PODMAN_DIR:-}" ] && { pm rmi -a -f >/dev/null 2>&1; rm -rf "$PODMAN_DIR"; unset PODMAN_DIR; }; }

# --- docker-archive inspection ------------------------------------------------------
# uncompressed IMAGE OUT: writes the plain docker-archive (gz, zstd or none) to OUT.
uncompressed() {
  case "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" in
    1f8b*) zcat "$1" > "$2" ;;
    28b52ffd) zstd -q -d -c "$1" > "$2" ;;
    *) cp "$1" "$2" ;;
  esac
}
# layer_store_paths ARCHIVE.tar: one line per layer, the sorted top-level store paths in it
# ("-" when it has none).
layer_store_paths() {
  local tarball=$1 layer
  for layer in $(tar -xOf "$tarball" manifest.json | jq -r '.[0].Layers[]'); do
    local paths
    paths=$(tar -xOf "$tarball" "$layer" | tar -t | sed -e 's|^\./||' -e 's|^/||' \
      | sed -n 's|^nix/store/\([^/]\{1,\}\).*|/nix/store/\1|p' | LC_ALL=C sort -u | tr '\n' ' ')
    echo "${paths:--}"
  done
}
# plan_store_paths PLAN.json: the same shape, from `nix-layers plan --json`.
plan_store_paths() {
  jq -r '.layers[] | if .kind == "store" then ([.paths[].path] | sort | join(" ") + " ") else "-" end' "$1"
}
