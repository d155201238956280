# Stream scripts' verbs, -t, and the copyTo* passthru (sourced by run.sh; issue 10 §6, §7):
#   - `./result oci oci:DIR:TAG` of examples.stream-image, read back by skopeo;
#   - `./result push docker://127.0.0.1:PORT/…` to a plain docker-registry the suite starts,
#     copied back by skopeo (every digest verified), docker pull + run;
#   - `./result -t NAME:TAG | docker load`: docker knows the image as NAME:TAG and runs it;
#   - copyToRegistry of a buildLayeredImage named 127.0.0.1:PORT/… with tag = null,
#     built by nix-build and run with --creds against a basic-auth registry: the pushed tag
#     is the image's imageTag; wrong credentials fail naming the registry;
#   - copyTo through `nix run` of the flake: docker://… and oci:…;
#   - copyToDockerDaemon: needs `load` (skipped, saying so, while this binary has none).
suite "verbs: stream-script verbs, -t, copyTo*"

command -v docker-registry >/dev/null 2>&1 || {
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; }
command -v htpasswd >/dev/null 2>&1 || {
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils >/dev/null; }
started_dockerd=
if [ -z "${DOCKER_HOST:-}" ]; then dockerd_start >/dev/null || fail "dockerd starts"; started_dockerd=1; fi

# verbs_registry DIR [USER PASS]: a docker-registry on a free port of 127.0.0.1 (basic auth
# with USER:PASS when given); sets vr_port and vr_pid.
verbs_registry() {
  local d=$1 auth=
  mkdir -p "$d"
  vr_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [ $# -ge 3 ]; then
    htpasswd -Bbn "$2" "$3" > "$d/htpasswd"
    auth="auth: { htpasswd: { realm: e2e, path: $d/htpasswd } }"
  fi
  cat > "$d/config.yml" <<CONF
version: 0.1
log: { level: info }
storage: { filesystem: { rootdirectory: $d/storage } }
http: { addr: 127.0.0.1:$vr_port }
$auth
CONF
  docker-registry serve "$d/config.yml" >"$d/log" 2>&1 &
  vr_pid=$!
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$vr_port") 2>/dev/null && return 0; sleep 0.2; done
  echo "docker-registry did not start:"; tail -5 "$d/log"; return 1
}

script=$(nb -A examples.stream-image 2>"$E2E_TMP/stderr")
if [ -z "$script" ]; then fail "verbs: examples.stream-image builds"; else
  # --- ./result oci oci:DIR:TAG ---------------------------------------------------------
  layout=$E2E_TMP/verbs-layout
  check "verbs: ./result oci oci:DIR:v1" "$script" oci "oci:$layout:v1"
  "$script" > "$E2E_TMP/verbs-image.tar" 2>/dev/null
  check_eq "verbs: skopeo reads the layout's tag v1 (config digest = the archive's)" \
    "$(tar -xOf "$E2E_TMP/verbs-image.tar" manifest.json | jq -r '.[0].Config' | sed 's|blobs/sha256/|sha256:|')" \
    "$(skopeo inspect --raw "oci:$layout:v1" 2>"$E2E_TMP/stderr" | jq -r .config.digest)"
  check "verbs: skopeo copy oci:DIR:v1 → dir: (every blob's digest verified)" \
    skopeo copy -q "oci:$layout:v1" "dir:$E2E_TMP/verbs-dir"

  # --- ./result push docker://… to a plain registry ------------------------------------
  if verbs_registry "$E2E_TMP/verbs-reg"; then
    img=127.0.0.1:$vr_port/e2e/stream
    check "verbs: ./result push docker://$img:pushed" "$script" push --tls-verify=false "docker://$img:pushed"
    check "verbs: skopeo copy of the pushed image (digests verified)" \
      skopeo copy -q --src-tls-verify=false "docker://$img:pushed" "oci:$E2E_TMP/verbs-pulled:x"
    check "verbs: docker pull of the pushed image" docker pull -q "$img:pushed"
    check_contains "verbs: docker run of the pushed image" "$(docker run --rm --network none "$img:pushed" 2>&1)" "Hello, world!"
    # Bad verb arguments: the verb's own error, nothing pushed.
    out=$("$script" push --tls-verify=false "docker://$img@sha256:$(printf '0%.0s' $(seq 64))" 2>&1); rc=$?
    if [ $rc -ne 0 ] && [[ "$out" == *"push takes a tag, not a digest"* ]]; then pass "verbs: ./result push …@digest: push's error"
    else fail "verbs: ./result push …@digest: push's error" "rc=$rc: $out"; fi

    # --- copyTo through `nix run` of the flake (docker:// and oci:) ----------------------
    flake=$E2E_TMP/verbs-flake
    mkdir -p "$flake"
    ( cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf - ) | tar -xf - -C "$flake"
    rm -f "$flake/flake.lock"; ( cd "$flake" && git init -q && git add -A ) >/dev/null 2>&1
    nix_run() { ( cd "$flake" && nix run --override-input nixpkgs "path:$STANDIN" --no-write-lock-file "$@" ); }
    check "verbs: nix run .#examples.stream-image.copyTo -- docker://$img:nixrun --tls-verify=false" \
      nix_run .#examples.stream-image.copyTo -- "docker://$img:nixrun" --tls-verify=false
    check_eq "verbs: copyTo pushed the same image as ./result push (same manifest digest)" \
      "$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$img:pushed" 2>&1)" \
      "$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$img:nixrun" 2>&1)"
    check "verbs: nix run …copyTo -- oci:DIR:t" nix_run .#examples.stream-image.copyTo -- "oci:$E2E_TMP/verbs-nixrun:t"
    check "verbs: skopeo reads copyTo's oci:DIR:t" skopeo inspect "oci:$E2E_TMP/verbs-nixrun:t"
    kill "$vr_pid" 2>/dev/null; wait "$vr_pid" 2>/dev/null
  else fail "verbs: a plain registry starts"; fi

  # --- -t NAME:TAG ------------------------------------------------------------------------
  out=$("$script" -t e2e/renamed:v7 2>"$E2E_TMP/stderr" | docker load 2>&1); rc=$?
  if [ $rc -eq 0 ] && [[ "$out" == *"e2e/renamed:v7"* ]]; then pass "verbs: ./result -t e2e/renamed:v7 | docker load names it so"
  else fail "verbs: ./result -t e2e/renamed:v7 | docker load" "rc=$rc: $out"; fi
  check_contains "verbs: docker run e2e/renamed:v7" "$(docker run --rm --network none e2e/renamed:v7 2>&1)" "Hello, world!"
  out=$("$script" -t 'Bad Name:v1' 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 0 ] && [[ "$out" == *"--repo-tag"* ]] && [[ "$out" == *"Bad Name"* ]]; then pass "verbs: a bad -t value is an error naming it"
  else fail "verbs: a bad -t value is an error naming it" "rc=$rc: $out"; fi
fi

# --- copyToRegistry: basic auth, tag = null ------------------------------------------------
if verbs_registry "$E2E_TMP/verbs-auth" e2euser e2epass; then
  name=127.0.0.1:$vr_port/e2e/app
  expr="let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
            api = import $REPO/default.nix { inherit pkgs; };
        in api.buildLayeredImage { name = \"$name\"; contents = [ pkgs.hello ]; config.Cmd = [ \"\${pkgs.hello}/bin/hello\" ]; }"
  prog=$(nix-build --no-out-link -E "($expr).copyToRegistry" 2>"$E2E_TMP/stderr")
  tag=$(nix-instantiate --eval --json -E "($expr).imageTag" 2>/dev/null | jq -r .)
  ref=$(nix-instantiate --eval --json -E "($expr).imageRefUnsafe" 2>/dev/null | jq -r .)
  check_eq "verbs: imageRefUnsafe = imageName:imageTag" "$name:$tag" "$ref"
  if [ -x "$prog/bin/copy-to-registry" ]; then
    pass "verbs: nix-build (buildLayeredImage …).copyToRegistry: \$out/bin/copy-to-registry"
    out=$("$prog/bin/copy-to-registry" --creds e2euser:wrong --tls-verify=false 2>&1); rc=$?
    if [ $rc -eq 1 ] && [[ "$out" == *"127.0.0.1:$vr_port"* ]]; then pass "verbs: copy-to-registry with wrong --creds: exit 1 naming the registry"
    else fail "verbs: copy-to-registry with wrong --creds" "rc=$rc: $out"; fi
    check "verbs: copy-to-registry --creds e2euser:e2epass" "$prog/bin/copy-to-registry" --creds e2euser:e2epass --tls-verify=false
    check_eq "verbs: the registry's tag is the image's imageTag (tag = null)" "$tag" \
      "$(skopeo list-tags --tls-verify=false --creds e2euser:e2epass "docker://$name" 2>&1 | jq -r '.Tags | join(" ")')"
    # The pushed config is the built archive's config.
    archive=$(nix-build --no-out-link -E "$expr" 2>"$E2E_TMP/stderr")
    check_eq "verbs: the pushed image's config is the built archive's" \
      "$(tar -xzOf "$archive" manifest.json | jq -r '.[0].Config' | sed 's|blobs/sha256/|sha256:|')" \
      "$(skopeo inspect --raw --tls-verify=false --creds e2euser:e2epass "docker://$name:$tag" 2>&1 | jq -r .config.digest)"
  else fail "verbs: nix-build (buildLayeredImage …).copyToRegistry" "$prog"; fi
  kill "$vr_pid" 2>/dev/null; wait "$vr_pid" 2>/dev/null
else fail "verbs: a basic-auth registry starts"; fi

# --- copyToDockerDaemon (needs `load`) --------------------------------------------------------
if "$NIX_LAYERS" load --help >/dev/null 2>&1; then
  prog=$(nb -A examples.stream-image.copyToDockerDaemon 2>"$E2E_TMP/stderr")
  docker rmi -f stream-image:latest >/dev/null 2>&1
  check "verbs: copy-to-docker-daemon" "$prog/bin/copy-to-docker-daemon"
  check_contains "verbs: docker run stream-image:latest after copy-to-docker-daemon" \
    "$(docker run --rm --network none stream-image:latest 2>&1)" "Hello, world!"
else
  echo "  skip verbs: copyToDockerDaemon: this nix-layers has no \`load\` subcommand yet (issue 10 §5, another branch)"
fi

[ -n "$started_dockerd" ] && dockerd_stop
true
