# `nix-layers push` to a real registry, pulled and run by real engines (sourced by run.sh):
#   - Debian's docker-registry on 127.0.0.1 (plain HTTP, which docker allows for 127.0.0.0/8);
#   - push of an example's stream script (gzip): docker pull + run, podman pull + run;
#   - a second push makes zero upload requests (the registry's access log);
#   - a zstd push: podman pull + run (docker 20.10 has no zstd).
suite "push: a registry, docker and podman"

command -v docker-registry >/dev/null 2>&1 || {
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null; }
started_dockerd=
if [ -z "${DOCKER_HOST:-}" ]; then dockerd_start >/dev/null || fail "dockerd starts"; started_dockerd=1; fi
podman_setup

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=$E2E_TMP/registry; mkdir -p "$reg"
cat > "$reg/config.yml" <<CONF
version: 0.1
log: { level: info }
storage: { filesystem: { rootdirectory: $reg/storage } }
http: { addr: 127.0.0.1:$port }
CONF
docker-registry serve "$reg/config.yml" >"$reg/log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
uploads() { grep -cE '"(POST|PATCH|PUT) /v2/[^ ]*/blobs/uploads/' "$reg/log"; }

ex=layered-image
script=$(nb -A "examples.$ex.passthru.stream" 2>"$E2E_TMP/stderr")
if [ -z "$script" ]; then fail "push: examples.$ex.passthru.stream builds"; else
  img=127.0.0.1:$port/e2e/$ex
  check "push: gzip to the registry" "$NIX_LAYERS" push --attrs "$script" --tls-verify=false "docker://$img:gzip"
  check "push: docker pull" docker pull -q "$img:gzip"
  check_contains "push: docker run" "$(docker run --rm --network none "$img:gzip" 2>&1)" "Hello, world!"
  check "push: podman pull" pm pull -q --tls-verify=false "$img:gzip"
  check_contains "push: podman run" "$(pm run --rm --network none "$img:gzip" 2>&1)" "Hello, world!"
  before=$(uploads)
  check "push: the first push's uploads are in the registry log" test "$before" -ge 6
  out=$("$NIX_LAYERS" push --attrs "$script" --tls-verify=false "docker://$img:again" 2>&1)
  check_contains "push: again, every blob present" "$out" "0 uploaded"
  check_eq "push: again, zero upload requests" "$before" "$(uploads)"
  check "push: zstd to the registry" "$NIX_LAYERS" push --attrs "$script" --tls-verify=false --compression-format zstd "docker://$img:zstd"
  check "push: zstd: podman pull" pm pull -q --tls-verify=false "$img:zstd"
  check_contains "push: zstd: podman run" "$(pm run --rm --network none "$img:zstd" 2>&1)" "Hello, world!"
fi

kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null
[ -n "$started_dockerd" ] && dockerd_stop
podman_cleanup
true
