# fromImage with the real Nix, docker and podman (sourced by run.sh):
#   - a layered image (gz) on a layered image: its first layers are the base's, byte for
#     byte; maxLayers counts them (nixpkgs' "fromImage with 2 layers and maxLayers = 4 gives
#     exactly 4 layers", here with the base's count); Env is inherited (ours wins, no
#     duplicate variable); docker and podman run it and see files of both images;
#   - streamLayeredImage on that image: the base is read when the script runs, it is in the
#     script's closure but in no store layer (never unpacked into the store); docker and
#     podman load the stream and run it; skopeo verifies every diff_id;
#   - bases written by `docker save` and by skopeo's `oci-archive:` (gzip layers) work.
suite "fromimage: layered images on layered images"

[ -n "${DOCKER_HOST:-}" ] || dockerd_start >/dev/null || fail "dockerd starts"
[ -n "${PODMAN_DIR:-}" ] || podman_setup

fromimage_expr() {
  echo "let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
            api = import $REPO/default.nix { inherit pkgs; };
            base = api.buildLayeredImage { name = \"fi-base\"; tag = \"latest\";
              contents = [ pkgs.bash pkgs.coreutils ];
              config.Env = [ \"FROM_BASE=yes\" \"SHARED=base\" ]; };
            marker = pkgs.writeText \"fi-marker\" \"from the top image\\n\";
            top = api.buildLayeredImage { name = \"fi-top\"; tag = \"latest\"; fromImage = base;
              contents = [ pkgs.hello ]; maxLayers = MAXLAYERS;
              config.Env = [ \"SHARED=top\" \"TOP=yes\" ];
              config.Cmd = [ \"/bin/sh\" \"-c\" \"hello; cat \${marker}; echo env: \$FROM_BASE \$SHARED \$TOP; test -L /bin/cat && test -L /bin/hello && echo both-bins\" ]; };
            stream = api.streamLayeredImage { name = \"fi-stream\"; tag = \"latest\"; fromImage = top;
              config.Cmd = [ \"/bin/sh\" \"-c\" \"echo streamed; \${pkgs.hello}/bin/hello\" ]; };
        in { inherit base top stream; }"
}

# The base's layer count decides maxLayers: base layers + 1 store layer + the customisation layer.
expr=$(fromimage_expr | sed 's/MAXLAYERS/100/')
base=$(nix-build --no-out-link -E "$expr" -A base 2>"$E2E_TMP/stderr") || fail "fromimage: the base builds"
if [ -n "$base" ]; then
  uncompressed "$base" "$E2E_TMP/fi-base.tar"
  base_layers=$(tar -xOf "$E2E_TMP/fi-base.tar" manifest.json | jq '.[0].Layers | length')
  want=$((base_layers + 2))
  expr=$(fromimage_expr | sed "s/MAXLAYERS/$want/")
  top=$(nix-build --no-out-link -E "$expr" -A top 2>"$E2E_TMP/stderr")
  if [ -n "$top" ]; then
    pass "fromimage: buildLayeredImage { fromImage = <layered image>; } builds in the sandbox"
    uncompressed "$top" "$E2E_TMP/fi-top.tar"
    layers=$(tar -xOf "$E2E_TMP/fi-top.tar" manifest.json | jq -r '.[0].Layers[]')
    check_eq "fromimage: maxLayers = base layers ($base_layers) + 2 gives exactly that many layers" \
      "$want" "$(echo "$layers" | wc -l)"
    base_sums=$(for l in $(tar -xOf "$E2E_TMP/fi-base.tar" manifest.json | jq -r '.[0].Layers[]'); do
      tar -xOf "$E2E_TMP/fi-base.tar" "$l" | sha256sum | cut -d' ' -f1; done)
    top_sums=$(for l in $(echo "$layers" | head -n "$base_layers"); do
      tar -xOf "$E2E_TMP/fi-top.tar" "$l" | sha256sum | cut -d' ' -f1; done)
    check_eq "fromimage: the first layers are the base's, byte for byte" "$base_sums" "$top_sums"
    check_eq "fromimage: Env merged as nixpkgs does (base first, ours wins, one entry per name)" \
      '["FROM_BASE=yes","SHARED=top","TOP=yes"]' \
      "$(tar -xOf "$E2E_TMP/fi-top.tar" "$(tar -xOf "$E2E_TMP/fi-top.tar" manifest.json | jq -r '.[0].Config')" | jq -c .config.Env)"
    layer_paths=$(layer_store_paths "$E2E_TMP/fi-top.tar")
    if echo "$layer_paths" | grep -q -- "$(basename "$base")"; then fail "fromimage: the base archive is in no store layer" "$layer_paths"
    else pass "fromimage: the base archive is in no store layer"; fi

    want_out="Hello, world!
from the top image
env: yes top yes"
    load=$(docker load -i "$top" 2>&1); ref=$(echo "$load" | sed -n 's/^Loaded image: //p' | tail -1)
    if [ -n "$ref" ]; then
      run=$(docker run --rm --network none "$ref" 2>&1)
      check_contains "fromimage: docker run: hello (top), cat (base), Env of both" "$run" "$want_out"
      check_contains "fromimage: docker run: /bin holds the base's and the top's entries" "$run" "both-bins"
    else fail "fromimage: docker load" "$load"; fi
    load=$(pm load -i "$E2E_TMP/fi-top.tar" 2>&1)
    pref=$(echo "$load" | sed -n -E 's/^Loaded image(\(s\))?: //p' | tail -1 | cut -d, -f1)
    if [ -n "$pref" ]; then
      check_contains "fromimage: podman run: files and Env of both images" "$(pm run --rm --network none "$pref" 2>&1)" "$want_out"
    else fail "fromimage: podman load" "$load"; fi
    check "fromimage: skopeo copy docker-archive: oci: (verifies diff_ids)" \
      skopeo copy -q "docker-archive:$E2E_TMP/fi-top.tar" "oci:$E2E_TMP/fi-oci:latest"

    # maxLayers one short: the build fails, saying how many layers the base has.
    expr_short=$(fromimage_expr | sed "s/MAXLAYERS/$((want - 1))/")
    out=$(nix-build --no-out-link -E "$expr_short" -A top 2>&1); rc=$?
    if [ $rc -ne 0 ] && [[ $out == *"the base image (\`fromImage\`) has $base_layers layers"* ]]; then
      pass "fromimage: maxLayers too small for the base: the build log says how many layers it has"
    else fail "fromimage: maxLayers too small for the base" "rc=$rc: $(echo "$out" | tail -5)"; fi

    # streamLayeredImage on the (gzip) top image, read when the script runs.
    script=$(nix-build --no-out-link -E "$expr" -A stream 2>"$E2E_TMP/stderr")
    if [ -n "$script" ]; then
      pass "fromimage: streamLayeredImage { fromImage = …; } builds"
      check_contains "fromimage: the base archive is in the stream script's closure" "$(nix-store -qR "$script")" "$top"
      "$script" > "$E2E_TMP/fi-stream.tar" 2>"$E2E_TMP/stderr"
      check_eq "fromimage: the stream starts with the top image's layers" "$top_sums" \
        "$(for l in $(tar -xOf "$E2E_TMP/fi-stream.tar" manifest.json | jq -r '.[0].Layers[]' | head -n "$base_layers"); do
             tar -xOf "$E2E_TMP/fi-stream.tar" "$l" | sha256sum | cut -d' ' -f1; done)"
      load=$("$script" 2>/dev/null | docker load 2>&1); ref=$(echo "$load" | sed -n 's/^Loaded image: //p' | tail -1)
      if [ -n "$ref" ]; then
        check_contains "fromimage: ./stream | docker load; docker run" "$(docker run --rm --network none "$ref" 2>&1)" "streamed
Hello, world!"
        check_eq "fromimage: docker sees every layer of base, top and stream" \
          "$(tar -xOf "$E2E_TMP/fi-stream.tar" manifest.json | jq '.[0].Layers | length')" \
          "$(docker inspect -f '{{len .RootFS.Layers}}' "$ref" 2>&1)"
      else fail "fromimage: ./stream | docker load" "$load"; fi
      load=$(pm load -i "$E2E_TMP/fi-stream.tar" 2>&1)
      pref=$(echo "$load" | sed -n -E 's/^Loaded image(\(s\))?: //p' | tail -1 | cut -d, -f1)
      if [ -n "$pref" ]; then
        check_contains "fromimage: podman load of the stream; podman run" "$(pm run --rm --network none "$pref" 2>&1)" "streamed"
      else fail "fromimage: podman load of the stream" "$load"; fi
    else fail "fromimage: streamLayeredImage { fromImage = …; } builds"; fi

    # Bases written by the real tools: `docker save` (docker 20.10's layout) and skopeo's
    # oci-archive (gzip layer blobs), streamed by hand from the stream script's attrs.
    if [ -n "${script:-}" ] && [ -n "$(docker images -q fi-top:latest 2>/dev/null)" ]; then
      docker save fi-top:latest > "$E2E_TMP/fi-saved.tar" 2>"$E2E_TMP/stderr"
      skopeo copy -q --dest-compress --dest-compress-format gzip \
        "docker-archive:$E2E_TMP/fi-top.tar" "oci-archive:$E2E_TMP/fi-top-oci.tar:latest" 2>"$E2E_TMP/stderr"
      oci_manifest=$(tar -xOf "$E2E_TMP/fi-top-oci.tar" index.json | jq -r '.manifests[0].digest | sub(":"; "/")')
      check_eq "fromimage: skopeo's oci-archive has gzip layer blobs" "application/vnd.oci.image.layer.v1.tar+gzip" \
        "$(tar -xOf "$E2E_TMP/fi-top-oci.tar" "blobs/$oci_manifest" | jq -r '[.layers[].mediaType] | unique | join(" ")')"
      for kind in saved:fi-saved.tar oci:fi-top-oci.tar; do
        name=${kind%%:*} file=$E2E_TMP/${kind#*:}
        tail -n +2 "$script" | jq --arg b "$file" --arg t "$name" '.fromImage = $b | .tag = $t' > "$E2E_TMP/fi-$name.json"
        load=$("$NIX_LAYERS" stream --attrs "$E2E_TMP/fi-$name.json" 2>"$E2E_TMP/stderr" | docker load 2>&1)
        ref=$(echo "$load" | sed -n 's/^Loaded image: //p' | tail -1)
        if [ -n "$ref" ]; then
          check_contains "fromimage: on a base from $([ $name = saved ] && echo 'docker save' || echo "skopeo's oci-archive (gzip layers)"): docker run" \
            "$(docker run --rm --network none "$ref" 2>&1)" "streamed
Hello, world!"
        else fail "fromimage: on a base from $name: stream | docker load" "$load"; fi
      done
    fi
  else fail "fromimage: buildLayeredImage { fromImage = <layered image>; } builds"; fi
fi
rm -rf "$E2E_TMP/fi-oci"
