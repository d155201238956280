# referencesByPopularity (a sandboxed `nix-layers popularity` build reading
# exportReferencesGraph) against `nix-layers popularity FILE` run by hand on the same
# closure as `nix path-info --json -r` reports it (SRI narHash, extra keys). Sourced by run.sh.
suite "popularity: referencesByPopularity = nix-layers popularity"

for target in "builtins.head api.examples.many-paths.config.Cmd" "api.examples.layered-image.passthru.stream" "pkgs.hello"; do
  label=${target#api.examples.}
  rbp=$(nix-build --no-out-link -E "
    let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
        api = import $REPO/default.nix { inherit pkgs; };
    in api.referencesByPopularity ($target)" 2>"$E2E_TMP/stderr")
  if [ -z "$rbp" ] || [ ! -f "$rbp" ]; then fail "referencesByPopularity ($label) builds"; continue; fi
  pass "referencesByPopularity ($label) builds in the sandbox"
  root=$(nix-instantiate --eval --json -E "
    let pkgs = import $STANDIN { system = \"x86_64-linux\"; };
        api = import $REPO/default.nix { inherit pkgs; };
    in builtins.unsafeDiscardStringContext \"\${$target}\"" 2>/dev/null | jq -r .)
  root=$(echo "$root" | sed -E 's|^(/nix/store/[^/]+).*|\1|')
  nix path-info --json -r -S "$root" 2>"$E2E_TMP/stderr" | jq '{graph: .}' >"$E2E_TMP/graph.json"
  "$NIX_LAYERS" popularity "$E2E_TMP/graph.json" graph >"$E2E_TMP/by-hand" 2>"$E2E_TMP/stderr"
  if cmp -s "$rbp" "$E2E_TMP/by-hand"; then pass "$label: referencesByPopularity = nix-layers popularity (byte for byte, $(wc -l <"$rbp") paths)"
  else fail "$label: referencesByPopularity = nix-layers popularity" "$(diff "$rbp" "$E2E_TMP/by-hand" | head -20)"; fi
  check_eq "$label: the list is the closure (nix-store -qR), each path once" \
    "$(nix-store -qR "$root" | LC_ALL=C sort)" "$(LC_ALL=C sort -u "$rbp")"
  check_eq "$label: the least popular path, the root, comes last" "$root" "$(tail -1 "$rbp")"
done
