# Builds through every entry point (sourced by run.sh): nix-build of default.nix, the flake
# in a git checkout with the stand-in as nixpkgs, and the overlay.
suite "build: nix-build, flake, overlay"

out=$(nb -A examples.layered-image 2>"$E2E_TMP/stderr"); rc=$?
if [ $rc -eq 0 ] && [ -f "$out" ] && [ "$(head -c 2 "$out" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
  pass "nix-build default.nix -A examples.layered-image -I nixpkgs=<stand-in> (sandbox on): a .tar.gz"
  NB_LAYERED=$out
else fail "nix-build default.nix -A examples.layered-image" "rc=$rc: $out $(tail -5 "$E2E_TMP/stderr")"; NB_LAYERED=; fi

out=$(nb -A nix-layers 2>"$E2E_TMP/stderr"); rc=$?
if [ $rc -eq 0 ] && "$out/bin/nix-layers" --help >/dev/null 2>&1; then pass "nix-build -A nix-layers: the package runs"
else fail "nix-build -A nix-layers" "rc=$rc: $out"; fi

# --- the flake, from a git checkout (flakes only see tracked files) ---------------------
FLAKE_REPO=$E2E_TMP/flake-repo
mkdir -p "$FLAKE_REPO"
( cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -cf - ) | tar -xf - -C "$FLAKE_REPO"
rm -f "$FLAKE_REPO/flake.lock"
( cd "$FLAKE_REPO" && git init -q && git add -A ) >/dev/null 2>&1
flake_nix() { ( cd "$FLAKE_REPO" && nix "$@" --override-input nixpkgs "path:$STANDIN" --no-write-lock-file ); }

out=$(flake_nix build .#examples.layered-image --json 2>"$E2E_TMP/stderr"); rc=$?
flake_path=$(echo "$out" | jq -r '.[0].outputs.out' 2>/dev/null)
if [ $rc -eq 0 ] && [ -f "$flake_path" ]; then pass "nix build .#examples.layered-image --override-input nixpkgs path:<stand-in>"
else fail "nix build .#examples.layered-image (flake)" "rc=$rc: $out"; fi
check_eq "the flake and nix-build give the same image (same out path)" "$NB_LAYERED" "$flake_path"
out=$(flake_nix build .#default --json 2>"$E2E_TMP/stderr"); rc=$?
pkg=$(echo "$out" | jq -r '.[0].outputs.out' 2>/dev/null)
if [ $rc -eq 0 ] && [ -x "$pkg/bin/nix-layers" ]; then pass "nix build .#default (packages.x86_64-linux.default)"
else fail "nix build .#default" "rc=$rc: $out"; fi
check_eq "packages.<system>.nix-layers is packages.<system>.default, for both systems" \
  '{"aarch64-linux":true,"x86_64-linux":true}' \
  "$(flake_nix eval --json .#packages --apply 'ps: builtins.mapAttrs (s: p: p.default.drvPath == p.nix-layers.drvPath) ps' 2>"$E2E_TMP/stderr")"
check_eq "checks: the package and every example" "true" \
  "$(flake_nix eval --json .#checks.x86_64-linux --apply 'c: c ? nix-layers && c ? example-layered-image && c ? example-many-paths' 2>"$E2E_TMP/stderr")"
out=$(flake_nix flake check --no-build 2>&1); rc=$?
if [ $rc -eq 0 ]; then pass "nix flake check --no-build"; else fail "nix flake check --no-build" "$out"; fi
if [ ! -e "$FLAKE_REPO/flake.lock" ] && [ ! -e "$REPO/flake.lock" ]; then pass "no flake.lock written"
else fail "no flake.lock written" "$(ls -l "$FLAKE_REPO/flake.lock" "$REPO/flake.lock" 2>&1)"; fi

# --- the overlay -----------------------------------------------------------------------
overlay_expr="
  let
    flake = (import $REPO/flake.nix).outputs { self = flake; nixpkgs = null; };
    plain = import $STANDIN { system = \"x86_64-linux\"; };
    overlaid = import $STANDIN { system = \"x86_64-linux\"; overlays = [ flake.overlays.default ]; };
    direct = import $REPO/default.nix { pkgs = plain; };
    args = { name = \"Overlay-Test\"; contents = [ plain.hello ]; config.Cmd = [ \"\${plain.hello}/bin/hello\" ]; maxLayers = 3; };
  in"
check_eq "overlay: dockerTools.buildLayeredImage/streamLayeredImage, referencesByPopularity, nix-layers = the direct calls" \
  '[true,true,true,true]' \
  "$(nix-instantiate --eval --strict --json -E "$overlay_expr [
      ((overlaid.dockerTools.buildLayeredImage args).outPath == (direct.buildLayeredImage args).outPath)
      ((overlaid.dockerTools.streamLayeredImage args).outPath == (direct.streamLayeredImage args).outPath)
      ((overlaid.referencesByPopularity plain.hello).outPath == (direct.referencesByPopularity plain.hello).outPath)
      (overlaid.nix-layers.outPath == direct.nix-layers.outPath) ]" 2>&1)"
out=$(nix-build --no-out-link -E "$overlay_expr overlaid.dockerTools.buildLayeredImage args" 2>"$E2E_TMP/stderr"); rc=$?
if [ $rc -eq 0 ] && [ "$out" = "$(nix-instantiate --eval --json -E "$overlay_expr (direct.buildLayeredImage args).outPath" 2>/dev/null | tr -d '"')" ]; then
  pass "overlay: pkgs.dockerTools.buildLayeredImage builds, same out path as the direct call"
else fail "overlay: pkgs.dockerTools.buildLayeredImage builds" "rc=$rc: $out"; fi
check_eq "overlay: a later overlay's nix-layers is the one the image functions run" "true" \
  "$(nix-instantiate --eval --strict --json -E "$overlay_expr
      let o2 = import $STANDIN { system = \"x86_64-linux\"; overlays = [ flake.overlays.default
                 (final: prev: { nix-layers = prev.nix-layers // { outPath = \"/nix/store/00000000000000000000000000000000-other\"; }; }) ]; };
      in builtins.unsafeDiscardStringContext (o2.dockerTools.buildLayeredImage args).builder == \"/nix/store/00000000000000000000000000000000-other/bin/nix-layers\"" 2>&1)"

# Reproducible: rebuilding gives the same bytes (nix-build --check fails otherwise).
for a in examples.layered-image examples.bin-merge examples.stream-image examples.many-paths; do
  nb -A "$a" >/dev/null 2>&1   # built already, or build it now
  if nb -A "$a" --check >/dev/null 2>"$E2E_TMP/stderr"; then pass "$a: nix-build --check (bit-identical rebuild)"
  else fail "$a: nix-build --check (bit-identical rebuild)"; fi
done
# The customisation layers made under fakeroot and under proot + fakeroot too.
for a in fake-root-chown fakechroot; do
  layer=$(nix_eval "api.examples.$a.customisationLayer" 2>/dev/null | jq -r .)
  nb -A "examples.$a" >/dev/null 2>&1
  if [ -n "$layer" ] && nix-store --realise --check "$(nix-store -qd "$layer")" >/dev/null 2>"$E2E_TMP/stderr"; then
    pass "$a: its customisation layer rebuilds bit-identical (nix-store --realise --check)"
  else fail "$a: its customisation layer rebuilds bit-identical (nix-store --realise --check)"; fi
done
