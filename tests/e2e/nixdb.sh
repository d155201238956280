# includeNixDB / buildLayeredImageWithNixDb with the real Nix (sourced by run.sh):
#   - the image's layers, unpacked into a directory, are a Nix store that Nix 2.8 itself
#     reads: `nix-store --store local?root=DIR --verify --check-contents` passes and
#     `-qR` gives the host's closure; a changed file is reported as modified;
#   - the image is reproducible to the bit (`nix-build --check` rebuilds and compares);
#   - docker runs it and sees the database; the same with extraCommands (own layer).
suite "nixdb: includeNixDB read by the real Nix"

[ -n "${DOCKER_HOST:-}" ] || dockerd_start >/dev/null || fail "dockerd starts"

nixdb_expr() {
  echo "let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
            api = import $REPO/default.nix { inherit pkgs; };
        in { inherit (pkgs) hello bash; image = $1; }"
}
# unpack_layers ARCHIVE.tar DIR: every layer, in order, extracted into DIR.
unpack_layers() {
  local layer; mkdir -p "$2"
  for layer in $(tar -xOf "$1" manifest.json | jq -r '.[0].Layers[]'); do
    tar -xOf "$1" "$layer" | tar -x -C "$2" || return 1
  done
}

for variant in with-nix-db extra-commands; do
  case $variant in
    with-nix-db) expr=$(nixdb_expr 'api.buildLayeredImageWithNixDb { name = "with-nix-db"; tag = "latest";
        contents = [ pkgs.hello pkgs.bash ]; config.Cmd = [ "/bin/hello" ]; }') ;;
    extra-commands) expr=$(nixdb_expr 'api.buildLayeredImage { name = "nix-db-extra"; tag = "latest"; includeNixDB = true;
        contents = [ pkgs.hello pkgs.bash ]; extraCommands = "echo extra > extra"; config.Cmd = [ "/bin/hello" ]; }') ;;
  esac
  echo " -- $variant"
  img=$(nix-build --no-out-link -E "$expr" -A image 2>"$E2E_TMP/stderr") || { fail "$variant: builds"; continue; }
  pass "$variant: builds in the sandbox"
  hello=$(nix-build --no-out-link -E "$expr" -A hello 2>/dev/null)
  bash_=$(nix-build --no-out-link -E "$expr" -A bash 2>/dev/null)
  tarball=$E2E_TMP/$variant.tar root=$E2E_TMP/$variant-root
  uncompressed "$img" "$tarball"
  check "$variant: layers unpack into a directory" unpack_layers "$tarball" "$root"
  check_eq "$variant: schema version file" "10" "$(cat "$root/nix/var/nix/db/schema" 2>&1)"
  check_eq "$variant: GC roots for each content" \
    "$(for p in "$hello" "$bash_"; do echo "$(basename "$p") -> $p"; done | LC_ALL=C sort)" \
    "$(for l in "$root"/nix/var/nix/gcroots/docker/*; do echo "$(basename "$l") -> $(readlink "$l")"; done | LC_ALL=C sort)"
  layers=$(tar -xOf "$tarball" manifest.json | jq -r '.[0].Layers[]')
  last=$(tar -xOf "$tarball" "$(echo "$layers" | tail -1)" | tar -t | sed 's|^\./||' | tr '\n' ' ')
  check_contains "$variant: the last layer holds the database" "$last" "nix/var/nix/db/db.sqlite"
  if [ $variant = extra-commands ]; then
    before=$(tar -xOf "$tarball" "$(echo "$layers" | tail -2 | head -1)" | tar -t | sed 's|^\./||' | tr '\n' ' ')
    check_eq "$variant: extraCommands' layer, then the database as a layer of its own" "extra yes no" \
      "$(cat "$root/extra" 2>&1) $(case " $before" in *" extra "*) echo yes;; *) echo no;; esac) $(case " $last" in *" extra "*) echo yes;; *) echo no;; esac)"
  fi
  out=$(nix-store --store "local?root=$root" --verify --check-contents 2>&1); rc=$?
  if [ $rc -eq 0 ] && ! echo "$out" | grep -qiE "error|modified|invalid|warning"; then
    pass "$variant: nix-store --store local?root=DIR --verify --check-contents passes"
  else fail "$variant: nix-store --verify --check-contents" "rc=$rc: $out"; fi
  check_eq "$variant: nix-store -qR in the image = on the host" \
    "$(nix-store -qR "$hello" "$bash_" | LC_ALL=C sort)" \
    "$(nix-store --store "local?root=$root" -qR "$hello" "$bash_" 2>&1 | LC_ALL=C sort)"
  check_eq "$variant: narHash and narSize as the host's" \
    "$(nix-store -q --hash "$hello") $(nix-store -q --size "$hello")" \
    "$(nix-store --store "local?root=$root" -q --hash "$hello" 2>&1) $(nix-store --store "local?root=$root" -q --size "$hello" 2>&1)"
  check_eq "$variant: only the closure of contents is registered" \
    "$(nix-store -qR "$hello" "$bash_" | wc -l)" "$(nix path-info --store "local?root=$root" --all 2>&1 | wc -l)"

  # A changed file is found: --check-contents really compares the NAR hashes.
  victim=$(find "$root$hello" -type f | head -1)
  chmod u+w "$(dirname "$victim")" "$victim"; echo tampered >> "$victim"
  out=$(nix-store --store "local?root=$root" --verify --check-contents 2>&1)
  check_contains "$variant: a changed file is reported by --verify --check-contents" "$out" "was modified"
  chmod -R u+w "$root"; rm -rf "$root"

  # Reproducible to the bit: Nix rebuilds the image and compares the output.
  out=$(nix-build --no-out-link --check -E "$expr" -A image 2>&1); rc=$?
  if [ $rc -eq 0 ]; then pass "$variant: nix-build --check rebuilds the same bytes"
  else fail "$variant: nix-build --check rebuilds the same bytes" "rc=$rc: $(echo "$out" | tail -5)"; fi

  load=$(docker load -i "$img" 2>&1); ref=$(echo "$load" | sed -n 's/^Loaded image: //p' | tail -1)
  if [ -n "$ref" ]; then
    check_eq "$variant: docker run: the database and schema are in the container" "10 yes" \
      "$(docker run --rm --network none "$ref" /bin/sh -c 'cat /nix/var/nix/db/schema; test -s /nix/var/nix/db/db.sqlite && echo " yes"' 2>&1 | tr -d '\n')"
    check_contains "$variant: docker run prints" "$(docker run --rm --network none "$ref" 2>&1)" "Hello, world!"
  else fail "$variant: docker load" "$load"; fi
done
