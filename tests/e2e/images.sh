# Every example image (nix/examples.nix), built in the sandbox, then (sourced by run.sh):
#   - the store paths in each layer tar equal `nix-layers plan --json` for the same attrs
#     (the attrs are the image's stream script: passthru.stream, or the image itself);
#   - no helper file of the build (customisation-layer derivation, script) is a store layer;
#   - `docker load` of the file as built (gz / zstd / plain, or `./result | docker load`),
#     the repo tag, `docker run` output;
#   - `podman load` of the uncompressed archive and `podman run` output;
#   - `skopeo copy docker-archive:… oci:…` (verifies every diff_id).
suite "images: docker, podman, skopeo, layers vs plan"

dockerd_start >/dev/null || fail "dockerd starts" "$(tail -20 "${DOCKERD_DIR:-/nonexistent}/log" 2>/dev/null)"
podman_setup

# example | expected repo tag ("" = checked below) | expected output of the default Cmd | layer count
# Layer counts: store layers + the customisation layer, which nix-layers leaves out when
# there are no contents and no extra commands (nixpkgs always writes one, maybe empty).
EXAMPLES=(
  "layered-image|layered-image:latest|Hello, world!|5"
  "bin-merge|bin-merge:latest|Hello, world!|5"
  "max-layers-2|max-layers-2:latest|Hello, world!|2"
  "max-layers-3|max-layers-3:latest|Hello, world!|3"
  "created-now|created-now:latest|Hello, world!|2"
  "compressor-zstd|compressor-zstd:latest|Hello, world!|2"
  "compressor-none|compressor-none:latest|Hello, world!|2"
  "untagged||Hello, world!|2"
  "stream-image|stream-image:latest|Hello, world!|5"
  "non-root|non-root:latest|uid=1000 gid=1000 owner=1000:1000|4"
  "fake-root-commands|fake-root-commands:latest|(fakeRootCommand)|3"
  "many-paths|many-paths:latest|store paths: |99"
  "fake-root-chown|fake-root-chown:latest|user:user 1000:1000|3"
  "fakechroot|fakechroot:latest|home: app:app:12345:12345|4"
)

declare -A DOCKER_REF PODMAN_REF
for spec in "${EXAMPLES[@]}"; do
  IFS='|' read -r ex want_tag want_out want_layers <<<"$spec"
  echo " -- $ex"
  img=$(nb -A "examples.$ex" 2>"$E2E_TMP/stderr"); rc=$?
  if [ $rc -ne 0 ]; then fail "$ex: builds" "rc=$rc"; continue; fi
  pass "$ex: builds in the sandbox"
  tarball=$E2E_TMP/$ex.tar
  if [ "$ex" = stream-image ]; then
    script=$img
    check "$ex: ./result writes the image to stdout" sh -c "'$img' > '$tarball'"
  else
    script=$(nb -A "examples.$ex.passthru.stream" 2>"$E2E_TMP/stderr") || { fail "$ex: passthru.stream builds"; continue; }
    uncompressed "$img" "$tarball"
  fi

  # layers vs plan
  if "$NIX_LAYERS" plan --json --attrs "$script" >"$E2E_TMP/$ex.plan.json" 2>"$E2E_TMP/stderr"; then
    actual=$(layer_store_paths "$tarball"); planned=$(plan_store_paths "$E2E_TMP/$ex.plan.json")
    check_eq "$ex: store paths per layer = nix-layers plan" "$planned" "$actual"
  else fail "$ex: nix-layers plan --json --attrs <stream script>"; actual=$(layer_store_paths "$tarball"); fi
  check_eq "$ex: layer count" "$want_layers" "$(echo "$actual" | wc -l)"
  if echo "$actual" | grep -qE -- '-customisation-layer|/nix/store/[^ ]*-stream-|\.tar'; then
    fail "$ex: no helper of the build in a store layer" "$actual"
  else pass "$ex: no helper of the build in a store layer"; fi

  # docker
  if [ "$ex" = stream-image ]; then load=$("$img" | docker load 2>&1); rc=$?
  elif [ "$ex" = compressor-zstd ]; then
    # dockerd 20.10 (Debian 12) reads gzip but not zstd archives: check the format, load the stream.
    check_eq "$ex: the output is zstd" "28b52ffd" "$(head -c 4 "$img" | od -An -tx1 | tr -d ' \n')"
    load=$(zstd -d -c "$img" | docker load 2>&1); rc=$?
  else load=$(docker load -i "$img" 2>&1); rc=$?; fi
  ref=$(echo "$load" | sed -n 's/^Loaded image: //p' | tail -1)
  if [ $rc -eq 0 ] && [ -n "$ref" ]; then pass "$ex: docker load ($(basename "$img"))"; else fail "$ex: docker load" "$load"; continue; fi
  DOCKER_REF[$ex]=$ref
  [ -n "$want_tag" ] && check_eq "$ex: repo tag" "$want_tag" "$ref"
  run=$(docker run --rm --network none "$ref" 2>&1)
  check_contains "$ex: docker run prints" "$run" "$want_out"

  # podman (wants an uncompressed archive)
  load=$(pm load -i "$tarball" 2>&1); rc=$?
  pref=$(echo "$load" | sed -n -E 's/^Loaded image(\(s\))?: //p' | tail -1 | cut -d, -f1)
  if [ $rc -eq 0 ] && [ -n "$pref" ]; then pass "$ex: podman load"; else fail "$ex: podman load" "$load"; fi
  if [ -n "$pref" ]; then
    PODMAN_REF[$ex]=$pref
    run=$(pm run --rm --network none "$pref" 2>&1)
    check_contains "$ex: podman run prints" "$run" "$want_out"
  fi

  check "$ex: skopeo copy docker-archive: oci: (verifies diff_ids)" \
    skopeo copy -q "docker-archive:$tarball" "oci:$E2E_TMP/oci-$ex:latest"
  rm -rf "$E2E_TMP/oci-$ex"
done

# Example-specific checks
if [ -n "${DOCKER_REF[layered-image]:-}" ]; then
  check_eq "layered-image: extraCommands ran in the customisation layer" "(extraCommand)" \
    "$(docker run --rm --network none "${DOCKER_REF[layered-image]}" /bin/cat /extraCommands 2>&1)"
  check_eq "layered-image: default created is 1970-01-01T00:00:01Z" "1970-01-01T00:00:01Z" \
    "$(docker inspect -f '{{.Created}}' "${DOCKER_REF[layered-image]}" 2>&1)"
  check_eq "layered-image: architecture amd64, os linux" "amd64 linux" \
    "$(docker inspect -f '{{.Architecture}} {{.Os}}' "${DOCKER_REF[layered-image]}" 2>&1)"
fi
if [ -n "${DOCKER_REF[bin-merge]:-}" ]; then
  run=$(docker run --rm --network none "${DOCKER_REF[bin-merge]}" 2>&1)
  for f in hello bash sh ls cat; do check_contains "bin-merge: /bin/$f from merged contents" " $run " " $f "; done
  check_eq "bin-merge: /bin/hello is a symlink into the store" "/nix/store" \
    "$(docker run --rm --network none "${DOCKER_REF[bin-merge]}" /bin/readlink /bin/hello 2>&1 | cut -c1-10)"
fi
if [ -n "${DOCKER_REF[created-now]:-}" ]; then
  created=$(docker inspect -f '{{.Created}}' "${DOCKER_REF[created-now]}" 2>&1)
  case "$created" in 1970-*|"") fail "created-now: created is the build time" "$created" ;;
    *) pass "created-now: created is the build time ($created)" ;; esac
fi
if [ -n "${DOCKER_REF[untagged]:-}" ]; then
  tag=$(nix_eval 'api.examples.untagged.imageTag' 2>/dev/null | tr -d '"')
  check_eq "untagged: repo tag = lowercased name : passthru.imageTag" "untagged:$tag" "${DOCKER_REF[untagged]}"
fi
if [ -n "${DOCKER_REF[fake-root-commands]:-}" ]; then
  check_eq "fake-root-commands: /tmp is 1777 (chmod in fakeRootCommands)" "1777" \
    "$(docker run --rm --network none "${DOCKER_REF[fake-root-commands]}" /bin/stat -c %a /tmp 2>&1)"
fi
if [ -n "${DOCKER_REF[fake-root-chown]:-}" ]; then
  check_eq "fake-root-chown: chown -R in fakeRootCommands persists (stat -c %U:%G in the container)" \
    "user:user 1000:1000
user:user 1000:1000" "$(docker run --rm --network none "${DOCKER_REF[fake-root-chown]}" 2>&1)"
  check_eq "fake-root-chown: and in podman" "user:user 1000:1000" \
    "$(pm run --rm --network none "${PODMAN_REF[fake-root-chown]}" /bin/stat -c '%U:%G %u:%g' /home/user 2>&1)"
fi
if [ -n "${DOCKER_REF[fakechroot]:-}" ]; then
  run=$(docker run --rm --network none "${DOCKER_REF[fakechroot]}" 2>&1)
  check_contains "fakechroot: the useradd-style line appended to /etc/passwd persists" "$run" \
    "passwd: app:x:12345:12345::/home/app:/bin/sh"
  check_contains "fakechroot: chown to the new user persists (stat -c %U:%G)" "$run" "home: app:app:12345:12345"
  check_contains "fakechroot: mkdir /bin and links into a store path named only in the commands" "$run" "bin: /nix/store/"
  check_contains "fakechroot: runs in podman too" "$(pm run --rm --network none "${PODMAN_REF[fakechroot]}" 2>&1)" \
    "home: app:app:12345:12345"
  last=$(tar -xOf "$E2E_TMP/fakechroot.tar" manifest.json | jq -r '.[0].Layers[-1]')
  check_eq "fakechroot: the customisation layer holds only the layer (no dev, proc, sys, build dir, store)" \
    "./ ./bin/ ./etc/ ./home/ ./home/app/" \
    "$(tar -xOf "$E2E_TMP/fakechroot.tar" "$last" | tar -t | grep -v -e '^\./bin/.' -e '^\./etc/.' | tr '\n' ' ' | sed 's/ $//')"
  check_eq "fakechroot: /home/app is 12345:12345 in the layer tar" "12345/12345" \
    "$(tar -xOf "$E2E_TMP/fakechroot.tar" "$last" | tar --numeric-owner -tvf - ./home/app/ | awk '{print $2}')"
fi
if [ -f "$E2E_TMP/non-root.tar" ]; then
  first=$(tar -xOf "$E2E_TMP/non-root.tar" manifest.json | jq -r '.[0].Layers[0]')
  listing=$(tar -xOf "$E2E_TMP/non-root.tar" "$first" | tar --numeric-owner -tvf -)
  check_eq "non-root: nix/ and nix/store/ are directories 0755 owned by 1000:1000" \
    "drwxr-xr-x 1000/1000 drwxr-xr-x 1000/1000" \
    "$(echo "$listing" | awk '$NF ~ /^(\.?\/)?nix\/(store\/)?$/ { printf "%s %s ", $1, $2 }' | sed 's/ $//')"
fi
if [ -n "${DOCKER_REF[many-paths]:-}" ]; then
  n=$(docker run --rm --network none "${DOCKER_REF[many-paths]}" 2>&1 | sed -n 's/^store paths: //p')
  if [ "${n:-0}" -gt 100 ] 2>/dev/null; then pass "many-paths: $n store paths in the container (> 100)"
  else fail "many-paths: more than 100 store paths in the container" "$n"; fi
fi


none=$(nb -A examples.compressor-none 2>/dev/null)
if [ -n "$none" ] && tar -tf "$none" manifest.json >/dev/null 2>&1; then pass "compressor-none: the output is a plain tar"
else fail "compressor-none: the output is a plain tar" "$none"; fi

# includeStorePaths = false: only the customisation layer; runs with the host store mounted.
nsp=$(nix-build --no-out-link -E "
  let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
      api = import $REPO/default.nix { inherit pkgs; };
  in api.buildLayeredImage { name = \"no-store-paths\"; tag = \"latest\"; includeStorePaths = false;
       contents = [ pkgs.hello ]; config.Cmd = [ \"/bin/hello\" ]; }" 2>"$E2E_TMP/stderr")
if [ -n "$nsp" ]; then
  uncompressed "$nsp" "$E2E_TMP/nsp.tar"
  check_eq "includeStorePaths = false: one layer, no store path in it" "-" "$(layer_store_paths "$E2E_TMP/nsp.tar")"
  ref=$(docker load -i "$nsp" 2>&1 | sed -n 's/^Loaded image: //p' | tail -1)
  check_contains "includeStorePaths = false: runs with -v /nix/store:/nix/store:ro" \
    "$(docker run --rm --network none -v /nix/store:/nix/store:ro "$ref" 2>&1)" "Hello, world!"
else fail "includeStorePaths = false: builds"; fi

# variant (nixpkgs' argument) is written into the image config; debug = true prints the
# layer plan (`nix-layers plan`'s table) in the build log, for build and stream alike.
vexpr="let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
           api = import $REPO/default.nix { inherit pkgs; };
       in api.buildLayeredImage { name = \"variant-debug\"; tag = \"latest\"; compressor = \"none\";
            variant = \"v8\"; debug = true; contents = [ pkgs.hello ]; config.Cmd = [ \"/bin/hello\" ]; }"
vimg=$(nix-build --no-out-link -E "$vexpr" 2>"$E2E_TMP/stderr")
if [ -n "$vimg" ]; then
  cfg=$(tar -xOf "$vimg" manifest.json | jq -r '.[0].Config')
  check_eq "variant = \"v8\": the image config's variant" '"v8"' "$(tar -xOf "$vimg" "$cfg" | jq -c .variant)"
  check_eq "variant: skopeo reads it" '"v8"' "$(skopeo inspect --config "docker-archive:$vimg" 2>&1 | jq -c .variant)"
  ref=$(docker load -i "$vimg" 2>&1 | sed -n 's/^Loaded image: //p' | tail -1)
  check_contains "variant: docker load and run" "$(docker run --rm --network none "$ref" 2>&1)" "Hello, world!"
  log=$(nix-store -l "$vimg" 2>&1)
  check_contains "debug = true: the build log has the layer plan" "$log" "nix-layers: debug: layer plan"
  check_contains "debug = true: the plan's table (strategy and a layer of hello)" "$log" "layering: autolayer"
  check_contains "debug = true: the plan lists hello's store path" "$log" "-hello-2.12.1"
  slog=$(nix-build --no-out-link -E "($vexpr).passthru.stream" 2>&1 >/dev/null; nix-store -l "$(nix-instantiate -E "($vexpr).passthru.stream" 2>/dev/null)" 2>&1)
  check_contains "debug = true: the stream script's build log has it too" "$slog" "nix-layers: debug: layer plan"
else fail "variant + debug image builds"; fi
check_eq "no variant by default (amd64): no variant key in the config" "null" \
  "$(tar -xOf "$none" "$(tar -xOf "$none" manifest.json | jq -r '.[0].Config')" | jq -c .variant)"

# Each layering strategy: a small stream image (maxLayers 3, so that the strategies have to
# choose) builds, its layers are the plan's, the plan names the strategy, and it loads and
# runs in docker and podman.
for strategy in popularity autolayer reuse; do
  ex=layering-$strategy
  echo " -- $ex"
  script=$(nix-build --no-out-link -E "
    let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
        api = import $REPO/default.nix { inherit pkgs; };
    in api.streamLayeredImage { name = \"$ex\"; tag = \"latest\"; maxLayers = 3; layering = \"$strategy\";
         contents = [ pkgs.hello pkgs.bash pkgs.coreutils ]; config.Cmd = [ \"\${pkgs.hello}/bin/hello\" ]; }" \
    2>"$E2E_TMP/stderr") || { fail "$ex: builds"; continue; }
  tarball=$E2E_TMP/$ex.tar
  check "$ex: ./result writes the image" sh -c "'$script' > '$tarball'"
  if "$NIX_LAYERS" plan --json --attrs "$script" >"$E2E_TMP/$ex.plan.json" 2>"$E2E_TMP/stderr"; then
    check_eq "$ex: the plan names the strategy" "\"$strategy\"" "$(jq .layering "$E2E_TMP/$ex.plan.json")"
    check_eq "$ex: store paths per layer = nix-layers plan" \
      "$(plan_store_paths "$E2E_TMP/$ex.plan.json")" "$(layer_store_paths "$tarball")"
  else fail "$ex: nix-layers plan --json --attrs <stream script>" "$(cat "$E2E_TMP/stderr")"; fi
  ref=$(docker load -i "$tarball" 2>&1 | sed -n 's/^Loaded image: //p' | tail -1)
  check_contains "$ex: docker load and run" "$(docker run --rm --network none "$ref" 2>&1)" "Hello, world!"
  pref=$(pm load -i "$tarball" 2>&1 | sed -n -E 's/^Loaded image(\(s\))?: //p' | tail -1 | cut -d, -f1)
  check_contains "$ex: podman load and run" "$(pm run --rm --network none "$pref" 2>&1)" "Hello, world!"
done

# Issue 8 §3: valid but non-default values (an offset `created`, a registry host and port
# in the name, mixed case, the largest uid) written by nix-layers straight from a tiny
# fake store (no Nix), normalised so that podman, docker and skopeo all read the config.
V=$E2E_TMP/values; rm -rf "$V"; mkdir -p "$V/store/00000000000000000000000000000000-data"
echo data > "$V/store/00000000000000000000000000000000-data/file"
cat > "$V/attrs.json" <<JSON
{"name": "localhost:5000/Team/App", "tag": "v1.0_rc-1", "compressor": "none",
 "created": "2020-01-01T00:00:00+01:00", "mtime": "2020-01-01T00:00:00.5-00:30",
 "uid": 4294967294, "gid": 4294967294, "config": {"Cmd": ["/bin/true"]},
 "closure": [{"path": "$V/store/00000000000000000000000000000000-data", "references": []}],
 "outputs": {"out": "$V/image.tar"}}
JSON
if NIX_STORE=$V/store "$NIX_LAYERS" build --attrs "$V/attrs.json" 2>"$E2E_TMP/stderr"; then
  pass "values: offset created, registry-host name, uid 2^32-2: built"
  check_eq "values: created normalised to UTC" "2019-12-31T23:00:00Z" \
    "$(tar -xOf "$V/image.tar" manifest.json | jq -r '.[0].Config' | xargs tar -xOf "$V/image.tar" | jq -r .created)"
  load=$(pm load -i "$V/image.tar" 2>&1)
  check_contains "values: podman load, repo tag lowercased" "$load" "localhost:5000/team/app:v1.0_rc-1"
  check_eq "values: podman reads created" "2019-12-31 23:00:00 +0000 UTC" \
    "$(pm image inspect -f '{{.Created}}' localhost:5000/team/app:v1.0_rc-1 2>&1)"
  load=$(docker load -i "$V/image.tar" 2>&1)
  check_contains "values: docker load" "$load" "localhost:5000/team/app:v1.0_rc-1"
  check "values: skopeo copy docker-archive: oci: (reads the config, verifies diff_ids)" \
    skopeo copy -q "docker-archive:$V/image.tar" "oci:$V/oci:latest"
else fail "values: offset created, registry-host name, uid 2^32-2: built" "$(cat "$E2E_TMP/stderr")"; fi
# What engines refuse is refused at build time, naming the key.
for bad in '"created": "2020-01-01T00:00:60Z"' '"tag": "a:b"' '"uid": 9223372036854775808'; do
  key=$(echo "$bad" | cut -d'"' -f2)
  jq ". + {$bad}" "$V/attrs.json" > "$V/bad.json"
  if NIX_STORE=$V/store "$NIX_LAYERS" build --attrs "$V/bad.json" --out "$V/bad.tar" 2>"$E2E_TMP/stderr"; then
    fail "values: $bad is refused" "built"
  else check_contains "values: $bad is refused naming the key" "$(cat "$E2E_TMP/stderr")" "\`$key\`"; fi
done
rm -rf "$V"

dockerd_stop
podman_cleanup
