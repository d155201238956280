# `nix-layers load docker|podman` into real engines (sourced by run.sh):
#   - a stream script image v1 loaded with `load ENGINE --attrs <script>` (no ./result
#     piping), then run;
#   - an app-only update v2: only the changed layers are sent (the summary line's counts),
#     and the container prints v2's output;
#   - v2 again: every layer present; with --no-cache every layer is sent again.
# docker: a private dockerd (graph driver, chain IDs); podman: a private store through
# CONTAINERS_STORAGE_CONF, which reaches the podman that nix-layers runs.
suite "load: docker and podman, only the layers they lack"

started_dockerd=
if [ -z "${DOCKER_HOST:-}" ]; then dockerd_start >/dev/null || fail "dockerd starts"; started_dockerd=1; fi
podman_setup
cat > "$PODMAN_DIR/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$PODMAN_DIR/root"
runroot = "$PODMAN_DIR/run"
CONF
export CONTAINERS_STORAGE_CONF=$PODMAN_DIR/storage.conf
# The layer cache (diff_ids of layers seen before) of these runs only.
export XDG_CACHE_HOME=$E2E_TMP/load-cache

# load_image V: the stream script of an image whose app (its Cmd) prints "load-V"; the
# rest (hello, busybox) is the same for every V.
load_image() {
  nix-build --no-out-link -E "
    let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
        api = import $REPO/default.nix { inherit pkgs; };
        app = pkgs.writeShellScript \"load-app\" \"echo load-$1\";
    in api.streamLayeredImage { name = \"load-e2e\"; tag = \"latest\"; contents = [ pkgs.hello ];
         config.Cmd = [ \"\${app}\" ]; }" 2>"$E2E_TMP/stderr"
}
# counts OUTPUT ENGINE: "SENT PRESENT" from the summary line, or nothing.
counts() {
  printf '%s\n' "$1" | sed -n -E "s/^nix-layers: loaded load-e2e:latest into $2: ([0-9]+) layers sent, ([0-9]+) already present\$/\1 \2/p"
}

v1=$(load_image v1); v2=$(load_image v2)
if [ -z "$v1" ] || [ -z "$v2" ]; then fail "load: the v1 and v2 stream scripts build"; else
  layers=$(jq -r '.layers | length' <("$NIX_LAYERS" plan --json --attrs "$v2" 2>/dev/null))
  for engine in docker podman; do
    run_in() { if [ "$engine" = docker ]; then docker run --rm --network none load-e2e:latest 2>&1
               else podman run --rm --network none load-e2e:latest 2>&1; fi; }

    out=$("$NIX_LAYERS" load "$engine" --attrs "$v1" 2>&1); rc=$?
    check_eq "load $engine: v1 loads (exit status)" 0 "$rc"
    check_eq "load $engine: v1, every layer sent" "$layers 0" "$(counts "$out" "$engine")"
    check_eq "load $engine: v1 runs" "load-v1" "$(run_in)"

    out=$("$NIX_LAYERS" load "$engine" --attrs "$v2" 2>&1); rc=$?
    check_eq "load $engine: v2 loads (exit status)" 0 "$rc"
    read -r sent present <<<"$(counts "$out" "$engine")"
    if [ -n "$sent" ] && [ "$present" -ge 1 ] && [ "$sent" -ge 1 ] && [ $((sent + present)) -eq "$layers" ]; then
      pass "load $engine: v2 sends only the changed layers ($sent sent, $present present)"
    else fail "load $engine: v2 sends only the changed layers" "$out"; fi
    check_eq "load $engine: v2 runs the new app" "load-v2" "$(run_in)"

    out=$("$NIX_LAYERS" load "$engine" --attrs "$v2" 2>&1)
    check_eq "load $engine: v2 again, every layer present" "0 $layers" "$(counts "$out" "$engine")"
    out=$("$NIX_LAYERS" load "$engine" --attrs "$v2" --no-cache 2>&1)
    check_eq "load $engine: --no-cache sends every layer" "$layers 0" "$(counts "$out" "$engine")"
    check_eq "load $engine: still runs" "load-v2" "$(run_in)"
  done
fi

unset CONTAINERS_STORAGE_CONF XDG_CACHE_HOME
[ -n "$started_dockerd" ] && dockerd_stop
podman_cleanup
true
