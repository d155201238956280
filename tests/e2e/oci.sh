# OCI output and the hybrid archive, read by real tools (sourced by run.sh):
#   - the hybrid archive `build`/`stream` write: skopeo reads it as docker-archive: and
#     oci-archive: (copies verify every digest), podman loads it under its name;
#     (images.sh loads and runs every example in docker and podman);
#   - `nix-layers oci oci:DIR:TAG` with gzip, zstd and no compression: skopeo copy
#     oci:→oci: (verifies digests), umoci unpack (gzip, none: Debian's umoci has no zstd),
#     podman pull + run (all three), skopeo copy to docker-daemon: + docker run (gzip and
#     none: docker 20.10 has no zstd); two tags in one layout;
#   - `oci-archive:FILE:TAG` read by skopeo, byte-identical across runs and thread counts.
suite "oci: OCI layouts and the hybrid archive"

started_dockerd=
if [ -z "${DOCKER_HOST:-}" ]; then dockerd_start >/dev/null || fail "dockerd starts"; started_dockerd=1; fi
podman_setup # (again: images.sh removes its storage when done)

ex=layered-image
script=$(nb -A "examples.$ex.passthru.stream" 2>"$E2E_TMP/stderr")
if [ -z "$script" ]; then fail "oci: examples.$ex.passthru.stream builds"; else
  hybrid=$E2E_TMP/oci-hybrid.tar
  check "hybrid: ./result writes the archive" sh -c "'$script' > '$hybrid'"
  layers=$(tar -xOf "$hybrid" manifest.json | jq '.[0].Layers | length')
  check_eq "hybrid: skopeo inspect docker-archive: lists every layer" "$layers" \
    "$(skopeo inspect "docker-archive:$hybrid" 2>&1 | jq '.Layers | length' 2>&1)"
  check_eq "hybrid: skopeo inspect oci-archive: lists every layer" "$layers" \
    "$(skopeo inspect "oci-archive:$hybrid:latest" 2>&1 | jq '.Layers | length' 2>&1)"
  check "hybrid: skopeo copy docker-archive: oci: (verifies digests)" \
    skopeo copy -q "docker-archive:$hybrid" "oci:$E2E_TMP/from-docker-archive:x"
  check "hybrid: skopeo copy oci-archive: oci: (verifies digests)" \
    skopeo copy -q "oci-archive:$hybrid:latest" "oci:$E2E_TMP/from-oci-archive:x"
  check_eq "hybrid: both views hold the same config" \
    "$(skopeo inspect --config "docker-archive:$hybrid" 2>&1 | jq -c .rootfs)" \
    "$(skopeo inspect --config "oci-archive:$hybrid" 2>&1 | jq -c .rootfs)"
  load=$(pm load -i "$hybrid" 2>&1)
  check_contains "hybrid: podman load names the image (index annotation)" "$load" "$ex:latest"

  # podman names an image pulled from oci:DIR after DIR, which must be lowercase.
  layout=/tmp/nix-layers-e2e-oci-layout-$$; rm -rf "$layout"
  for fmt in gzip zstd none; do
    if "$NIX_LAYERS" oci --attrs "$script" --compression-format "$fmt" "oci:$layout:$fmt" 2>"$E2E_TMP/stderr"; then
      pass "oci:DIR:$fmt written"
    else fail "oci:DIR:$fmt written"; continue; fi
    check "oci:DIR:$fmt: skopeo copy oci: oci: (verifies digests)" \
      skopeo copy -q "oci:$layout:$fmt" "oci:$E2E_TMP/copy-$fmt:x"
    if [ "$fmt" != zstd ]; then
      check "oci:DIR:$fmt: umoci unpack" umoci unpack --rootless --image "$layout:$fmt" "$E2E_TMP/bundle-$fmt"
      check "oci:DIR:$fmt: the unpacked rootfs has /bin/hello" test -e "$E2E_TMP/bundle-$fmt/rootfs/bin/hello"
      rm -rf "$E2E_TMP/bundle-$fmt"
      check "oci:DIR:$fmt: skopeo copy to docker-daemon:" skopeo copy -q --dest-daemon-host "$DOCKER_HOST" \
        "oci:$layout:$fmt" "docker-daemon:oci-e2e:$fmt"
      check_contains "oci:DIR:$fmt: docker run" "$(docker run --rm --network none "oci-e2e:$fmt" 2>&1)" "Hello, world!"
    fi
    if id=$(pm pull -q "oci:$layout:$fmt" 2>"$E2E_TMP/stderr"); then pass "oci:DIR:$fmt: podman pull"
    else fail "oci:DIR:$fmt: podman pull" "$id"; fi
    check_contains "oci:DIR:$fmt: podman run" "$(pm run --rm --network none "$id" 2>&1)" "Hello, world!"
  done
  check_eq "oci:DIR: three tags in one layout" "gzip zstd none" \
    "$(jq -r '[.manifests[].annotations["org.opencontainers.image.ref.name"]] | join(" ")' "$layout/index.json")"

  a1=$E2E_TMP/a1.tar; a2=$E2E_TMP/a2.tar
  "$NIX_LAYERS" oci --attrs "$script" --threads 1 "oci-archive:$a1:t" 2>"$E2E_TMP/stderr" \
    && "$NIX_LAYERS" oci --attrs "$script" --threads 4 "oci-archive:$a2:t" 2>>"$E2E_TMP/stderr"
  check "oci-archive: byte-identical with --threads 1 and 4" cmp "$a1" "$a2"
  check "oci-archive: skopeo copy oci-archive: oci: (verifies digests)" \
    skopeo copy -q "oci-archive:$a1:t" "oci:$E2E_TMP/from-oci-archive-2:x"
  rm -rf "$layout"
fi

[ -n "$started_dockerd" ] && dockerd_stop
podman_cleanup
true
