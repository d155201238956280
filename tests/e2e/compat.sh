# The compatibility suite (issue 11 §5): nixpkgs' docker-tools NixOS tests
# (nixos/tests/docker-tools.nix; ../../../shared/notes/nixpkgs-dockertools.md §4), each
# translated into one case below, built with the real Nix through our overlay
# (pkgs.dockerTools.* after `overlays = [ flake.overlays.default ]`, as a user switches),
# loaded into the real dockerd AND podman (private store) and run; sourced by run.sh.
#
# Every case ends with one line "PASS <case>" or "FAIL <case>", and the suite ends with the
# list of them (docs/compat.md maps them to the nixpkgs tests). A case that an existing
# suite already covers fully names that suite and re-asserts only what a user sees.
suite "compat: nixpkgs' docker-tools tests"

[ -n "${DOCKER_HOST:-}" ] || dockerd_start >/dev/null || fail "dockerd starts"
podman_setup

COMPAT=$E2E_TMP/compat; rm -rf "$COMPAT"; mkdir -p "$COMPAT"
COMPAT_RESULTS=()

# --- the images, as a nixpkgs user writes them -----------------------------------------
# A directory outside the store for the bare-path case (10): a plain path value in
# `contents`, and a string of `builtins.path` of another one.
mkdir -p "$COMPAT/bare/bin" "$COMPAT/bare-string/share/compat"
printf '#!/bin/sh\necho "bare path: $(cat /share/compat/bare.txt)"\n' > "$COMPAT/bare/bin/bare-hello"
chmod 755 "$COMPAT/bare/bin/bare-hello"
echo "from a builtins.path string" > "$COMPAT/bare-string/share/compat/bare.txt"

cat > "$COMPAT/compat.nix" <<'NIX'
{ standin, repo, bareDir, bareStringDir }:
let
  flake = (import (repo + "/flake.nix")).outputs { self = flake; nixpkgs = null; };
  pkgs = import standin { system = "x86_64-linux"; overlays = [ flake.overlays.default ]; };
  inherit (pkgs) hello bash coreutils busybox writeText runCommand;
  inherit (pkgs.dockerTools) buildLayeredImage buildLayeredImageWithNixDb streamLayeredImage;

  # A docker-archive written with plain tar and sha256sum, the layout of nixpkgs'
  # buildImage / `docker save` (<id>/layer.tar, <id>/json, <id>/VERSION, <sha>.json config,
  # manifest.json, repositories), gzipped as buildImage does. `layers` are shell snippets
  # run in an empty directory that becomes the layer; `order` lists the layers (by index)
  # as the manifest and rootfs.diff_ids name them, so a layer may appear twice. With
  # `linked`, each layer tar is stored once as <sha>.tar, which the manifest names, and
  # <id>/layer.tar is a symlink to it (the shape of nixpkgs' own fixture for #214434, and
  # of `docker save` since Docker 25); a repeat is named by the symlink.
  dockerArchive = { name, layers, order ? builtins.genList (i: i) (builtins.length layers), env ? [ ], linked ? false }:
    let
      n = builtins.length layers;
      layerScript = i: let I = toString i; in ''
        mkdir root${I}
        (cd root${I} && ${builtins.elemAt layers i})
        tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1 -C root${I} -cf layer${I}.tar .
        h${I}=$(sha256sum layer${I}.tar | cut -d' ' -f1)
        mkdir archive/$h${I}
        if [ -n "${if linked then "1" else ""}" ]; then
          mv layer${I}.tar archive/$h${I}.tar
          ln -s ../$h${I}.tar archive/$h${I}/layer.tar
          f${I}=$h${I}.tar
        else
          mv layer${I}.tar archive/$h${I}/layer.tar
          f${I}=$h${I}/layer.tar
        fi
        echo '1.0' > archive/$h${I}/VERSION
        printf '{"id":"%s"}' $h${I} > archive/$h${I}/json
      '';
      list = f: builtins.concatStringsSep "," (map f order);
      # The manifest names a layer by its file, and (when linked) a repeat of it by the
      # <id>/layer.tar symlink: both ways a reader must follow.
      manifestEntry = k:
        let i = builtins.elemAt order k; seen = builtins.elem i (builtins.genList (j: builtins.elemAt order j) k);
        in if linked && seen then "\"$h${toString i}/layer.tar\"" else "\"$f${toString i}\"";
      archiveScript = ''
        mkdir archive
        ${builtins.concatStringsSep "\n" (builtins.genList layerScript n)}
        # (unquoted here-documents: the shell fills in the layer hashes)
        cat > config.json <<EOF
        {"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:01Z","config":{"Env":${builtins.toJSON env},"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[${list (i: "\"sha256:$h${toString i}\"")}]}}
        EOF
        c=$(sha256sum config.json | cut -d' ' -f1)
        mv config.json archive/$c.json
        cat > archive/manifest.json <<EOF
        [{"Config":"$c.json","RepoTags":["${name}:latest"],"Layers":[${builtins.concatStringsSep "," (builtins.genList manifestEntry (builtins.length order))}]}]
        EOF
        cat > archive/repositories <<EOF
        {"${name}":{"latest":"$h${toString (builtins.elemAt order (builtins.length order - 1))}"}}
        EOF
        (cd archive && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1 -cf - $(ls)) | gzip -n > $out
      '';
    in
    # Run by bash (as nixpkgs' runCommand is): the stand-in's busybox sh would take its own
    # tar applet, which has no --sort, over Debian's GNU tar on PATH.
    runCommand "${name}.tar.gz" { script = archiveScript; } ''bash -e -c "$script"'';

  # A static busybox as /bin/sh and a few applets: the base images below run on their own.
  busyboxRoot = ''
    mkdir -p bin etc
    cp ${busybox}/bin/busybox bin/busybox
    for a in sh cat ls env stat id test; do ln -s busybox bin/$a; done
  '';
  tiny = i: writeText "compat-tiny-${toString i}" "tiny ${toString i}\n";
in
rec {
  # 1. an image on top of a layered image, and one on top of that (fromImage chains).
  layered-base = buildLayeredImage {
    name = "compat-layered-base"; tag = "latest";
    contents = [ hello ];
    extraCommands = "mkdir -p etc && echo from-layered-base > etc/base-release";
    config.Cmd = [ "/bin/hello" ];
  };
  on-layered = buildLayeredImage {
    name = "compat-on-layered"; tag = "latest";
    fromImage = layered-base;
    contents = [ bash coreutils ];
    extraCommands = "echo from-child > child-release";
    config.Cmd = [ "/bin/sh" "-c" "cat /etc/base-release /child-release && /bin/hello" ];
  };
  # (a streamLayeredImage: it reads its base when run)
  on-on-layered = streamLayeredImage {
    name = "compat-on-on-layered"; tag = "latest";
    fromImage = on-layered;
    extraCommands = "echo from-grandchild > grandchild-release";
    config.Cmd = [ "/bin/sh" "-c" "cat /etc/base-release /child-release /grandchild-release && /bin/hello" ];
  };

  # 2. on top of a buildImage-style single-layer docker-archive (gzipped).
  single-layer-base = dockerArchive {
    name = "compat-single-layer-base";
    layers = [ (busyboxRoot + "echo from-single-layer-base > etc/base-release") ];
  };
  on-single-layer = buildLayeredImage {
    name = "compat-on-single-layer"; tag = "latest";
    fromImage = single-layer-base;
    contents = [ hello ];
    config.Cmd = [ "/bin/sh" "-c" "cat /etc/base-release && /bin/hello" ];
  };

  # 3. Env inheritance: base Env, then the child's; the child's value wins, one entry each.
  env-base = buildLayeredImage {
    name = "compat-env-base"; tag = "latest";
    contents = [ coreutils ];
    config.Env = [ "PATH=/bin" "BASE_ONLY=base" "SHARED=base" ];
  };
  env-child = buildLayeredImage {
    name = "compat-env-child"; tag = "latest";
    fromImage = env-base;
    config.Env = [ "SHARED=child" "CHILD_ONLY=child" ];
    config.Cmd = [ "/bin/env" ];
  };

  # 4. a 2-layer base and maxLayers = 4: exactly 4 layers.
  two-layer-base = buildLayeredImage {
    name = "compat-two-layer-base"; tag = "latest";
    maxLayers = 2;
    contents = [ hello ];
    config.Cmd = [ "/bin/hello" ];
  };
  max-layers-4 = buildLayeredImage {
    name = "compat-max-layers-4"; tag = "latest";
    fromImage = two-layer-base;
    maxLayers = 4;
    contents = [ bash coreutils ];
    # (three more store paths, named in the command: contents entries must be directories)
    config.Cmd = [ "/bin/sh" "-c" "/bin/hello && ls /nix/store | wc -l # ${tiny 1} ${tiny 2} ${tiny 3}" ];
  };

  # 5. two independent layered images that share store paths (hello, busybox).
  shared-a = buildLayeredImage {
    name = "compat-shared-a"; tag = "latest";
    contents = [ hello bash ];
    config.Cmd = [ "/bin/hello" ];
  };
  shared-b = buildLayeredImage {
    name = "compat-shared-b"; tag = "latest";
    contents = [ hello coreutils ];
    config.Cmd = [ "/bin/hello" ];
  };

  # 6. a base whose manifest lists the same layer twice (nixpkgs#214434).
  repeated-base = dockerArchive {
    name = "compat-repeated-base";
    layers = [
      (busyboxRoot + "echo repeated > etc/repeated")
      "mkdir etc && echo middle > etc/middle"
    ];
    order = [ 0 1 0 ];
    linked = true;
  };
  on-repeated = buildLayeredImage {
    name = "compat-on-repeated"; tag = "latest";
    fromImage = repeated-base;
    contents = [ hello ];
    config.Cmd = [ "/bin/sh" "-c" "cat /etc/repeated /etc/middle && /bin/hello" ];
  };

  # 7. includeNixDB (buildLayeredImageWithNixDb).
  nix-db = buildLayeredImageWithNixDb {
    name = "compat-nix-db"; tag = "latest";
    contents = [ hello bash coreutils ];
    config.Cmd = [ "/bin/hello" ];
  };

  # 10. bare (non-derivation) paths in contents: a path value and a builtins.path string.
  bare-paths = buildLayeredImage {
    name = "compat-bare-paths"; tag = "latest";
    contents = [ bareDir "${builtins.path { path = bareStringDir; name = "compat-bare-string"; }}" busybox ];
    config.Cmd = [ "/bin/bare-hello" ];
  };

  # 11. includeStorePaths = false on top of a base (the single-layer one, which has a shell).
  no-store-paths-from = buildLayeredImage {
    name = "compat-no-store-paths-from"; tag = "latest";
    fromImage = single-layer-base;
    includeStorePaths = false;
    contents = [ hello ];
    config.Cmd = [ "/bin/hello" ];
  };

  # … and the same with enableFakechroot (nixpkgs' helloOnRootNoStoreFakechroot).
  no-store-paths-fakechroot = buildLayeredImage {
    name = "compat-no-store-paths-fakechroot"; tag = "latest";
    fromImage = single-layer-base;
    includeStorePaths = false;
    enableFakechroot = true;
    contents = [ hello ];
    fakeRootCommands = "mkdir -p /etc && echo fakechroot-ran > /etc/fakechroot-ran";
    config.Cmd = [ "/bin/hello" ];
  };

  inherit hello bash coreutils;
}
NIX

# cb ATTR: builds one attribute of compat.nix (prints the out path).
cb() {
  nix-build --no-out-link "$COMPAT/compat.nix" --argstr standin "$STANDIN" --argstr repo "$REPO" \
    --arg bareDir "$COMPAT/bare" --arg bareStringDir "$COMPAT/bare-string" -A "$1"
}

# --- per-case bookkeeping -----------------------------------------------------------------
case_begin() { CASE_NAME=$1; CASE_FAILED0=$E2E_FAILED; echo " -- $CASE_NAME"; }
case_end() {
  local r=PASS; [ "$E2E_FAILED" -eq "$CASE_FAILED0" ] || r=FAIL
  echo "  $r $CASE_NAME"; COMPAT_RESULTS+=("$r $CASE_NAME")
}
# build_image ATTR: builds it, or fails "<case>: ATTR builds" (with Nix's error) and returns 1.
# Sets IMG (the out path; for a stream script, the archive it wrote) and TARBALL (the
# uncompressed archive, for podman and tar).
build_image() {
  IMG=$(cb "$1" 2>"$E2E_TMP/stderr"); local rc=$?
  if [ $rc -ne 0 ] || [ -z "$IMG" ]; then fail "$CASE_NAME: $1 builds"; return 1; fi
  pass "$CASE_NAME: $1 builds (real Nix, sandbox, through the overlay)"
  TARBALL=$COMPAT/$1.tar
  if [ "$(head -c 2 "$IMG")" = '#!' ]; then
    "$IMG" > "$TARBALL" 2>"$E2E_TMP/stderr" || { fail "$CASE_NAME: ./result of $1 writes the image"; return 1; }
    pass "$CASE_NAME: ./result of $1 (streamLayeredImage) writes the image"
    IMG=$TARBALL
  else uncompressed "$IMG" "$TARBALL"; fi
}
# load_both ATTR REPO_TAG: docker load of the image as built and podman load of the plain
# archive; both must load under REPO_TAG.
load_both() {
  local out
  out=$(docker load -i "$IMG" 2>&1)
  check_contains "$CASE_NAME: docker load $1" "$out" "Loaded image: $2"
  out=$(pm load -i "$TARBALL" 2>&1)
  check_contains "$CASE_NAME: podman load $1" "$out" "$2"
}
# run_both NAME REF EXPECTED [ARGS...]: docker run and podman run print exactly EXPECTED.
run_both() {
  local name=$1 ref=$2 want=$3; shift 3
  check_eq "$CASE_NAME: docker run: $name" "$want" "$(docker run --rm --network none "$ref" "$@" 2>&1)"
  check_eq "$CASE_NAME: podman run: $name" "$want" "$(pm run --rm --network none "$ref" "$@" 2>&1)"
}
d_layers() { docker inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$1" 2>&1 | sed '/^$/d'; }
p_layers() { pm image inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$1" 2>&1 | sed '/^$/d'; }
# store_entries_in_export REF: how many nix/store entries the container's filesystem has
# (docker export of a created container: what the runtime assembled, not the layers).
store_entries_in_export() {
  local id n; id=$(docker create "$1" 2>/dev/null) || { echo "docker create failed"; return; }
  n=$(docker export "$id" | tar -t | grep -c '^nix/store/.')
  docker rm "$id" >/dev/null 2>&1; echo "$n"
}

# --- 1 ------------------------------------------------------------------------------------
case_begin "1 image on top of a layered image (fromImage = buildLayeredImage, and a chain of 3)"
if build_image layered-base; then
  base_tar=$TARBALL; load_both layered-base compat-layered-base:latest
  if build_image on-layered; then
    child_tar=$TARBALL; load_both on-layered compat-on-layered:latest
    run_both "files of base (etc/base-release, /bin/hello) and child (child-release, /bin/sh from bash)" \
      compat-on-layered:latest "from-layered-base
from-child
Hello, world!"
    check_eq "$CASE_NAME: the base's layers come first, in order (docker inspect RootFS)" \
      "$(d_layers compat-layered-base:latest)" "$(d_layers compat-on-layered:latest | head -n "$(d_layers compat-layered-base:latest | wc -l)")"
    check_eq "$CASE_NAME: and in podman" \
      "$(p_layers compat-layered-base:latest)" "$(p_layers compat-on-layered:latest | head -n "$(p_layers compat-layered-base:latest | wc -l)")"
    if build_image on-on-layered; then
      load_both on-on-layered compat-on-on-layered:latest
      run_both "a chain of three: every image's files" compat-on-on-layered:latest "from-layered-base
from-child
from-grandchild
Hello, world!"
      check_eq "$CASE_NAME: the chain keeps the child's layers (all of them) as its first layers" \
        "$(d_layers compat-on-layered:latest)" "$(d_layers compat-on-on-layered:latest | head -n "$(d_layers compat-on-layered:latest | wc -l)")"
    fi
  fi
fi
case_end

# --- 2 ------------------------------------------------------------------------------------
case_begin "2 image on top of a buildImage-style single-layer docker-archive"
if build_image single-layer-base; then
  check_eq "$CASE_NAME: the base is a gzipped legacy docker-archive with one layer" "1f8b 1 yes" \
    "$(head -c 2 "$IMG" | od -An -tx1 | tr -d ' ') $(tar -xOf "$TARBALL" manifest.json | jq '.[0].Layers | length') $(tar -tf "$TARBALL" repositories >/dev/null 2>&1 && echo yes)"
  load_both single-layer-base compat-single-layer-base:latest
  run_both "the base alone runs" compat-single-layer-base:latest "from-single-layer-base" /bin/cat /etc/base-release
  if build_image on-single-layer; then
    load_both on-single-layer compat-on-single-layer:latest
    run_both "base's /bin/sh and /etc/base-release, child's /bin/hello" compat-on-single-layer:latest "from-single-layer-base
Hello, world!"
    check_eq "$CASE_NAME: the base's layer is the first (docker inspect RootFS)" \
      "$(d_layers compat-single-layer-base:latest)" "$(d_layers compat-on-single-layer:latest | head -1)"
  fi
fi
case_end

# --- 3 ------------------------------------------------------------------------------------
case_begin "3 Env inherited from the base: child wins, no duplicate keys"
if build_image env-base && load_both env-base compat-env-base:latest && build_image env-child; then
  load_both env-child compat-env-child:latest
  want='["PATH=/bin","BASE_ONLY=base","SHARED=child","CHILD_ONLY=child"]'
  check_eq "$CASE_NAME: docker inspect Config.Env (base first, child's value, first-seen order)" "$want" \
    "$(docker inspect -f '{{json .Config.Env}}' compat-env-child:latest 2>&1)"
  check_eq "$CASE_NAME: podman image inspect Config.Env" "$want" \
    "$(pm image inspect -f '{{json .Config.Env}}' compat-env-child:latest 2>&1)"
  for engine in docker pm; do
    env_out=$($engine run --rm --network none compat-env-child:latest 2>&1)
    check_eq "$CASE_NAME: env in the container ($engine)" "BASE_ONLY=base CHILD_ONLY=child PATH=/bin SHARED=child " \
      "$(echo "$env_out" | grep -E '^(PATH|BASE_ONLY|SHARED|CHILD_ONLY)=' | LC_ALL=C sort | tr '\n' ' ')"
    check_eq "$CASE_NAME: no variable twice in the container's env ($engine)" "" \
      "$(echo "$env_out" | cut -d= -f1 | sort | uniq -d)"
  done
fi
case_end

# --- 4 ------------------------------------------------------------------------------------
case_begin "4 fromImage with 2 layers + maxLayers = 4 gives exactly 4 layers"
if build_image two-layer-base && load_both two-layer-base compat-two-layer-base:latest; then
  check_eq "$CASE_NAME: the base has 2 layers (docker inspect RootFS)" "2" "$(d_layers compat-two-layer-base:latest | wc -l)"
  if build_image max-layers-4; then
    load_both max-layers-4 compat-max-layers-4:latest
    check_eq "$CASE_NAME: exactly 4 layers (docker inspect RootFS)" "4" "$(d_layers compat-max-layers-4:latest | wc -l)"
    check_eq "$CASE_NAME: exactly 4 layers (podman image inspect RootFS)" "4" "$(p_layers compat-max-layers-4:latest | wc -l)"
    # hello + busybox from the base, bash, coreutils and 3 tiny files from the child
    run_both "every store path of base and child is there" compat-max-layers-4:latest "Hello, world!
7"
  fi
fi
# maxLayers counts the base's layers: a budget the base alone uses up is refused, naming both.
out=$(nix-build --no-out-link -E "(import $COMPAT/compat.nix { standin = \"$STANDIN\"; repo = \"$REPO\"; bareDir = null; bareStringDir = null; }).max-layers-4.override { maxLayers = 2; }" 2>&1)
rc=$?
if [ $rc -ne 0 ] && [[ $out == *"has 2 layers"* ]]; then pass "$CASE_NAME: maxLayers = 2 on a 2-layer base is refused, saying the base has 2 layers"
else fail "$CASE_NAME: maxLayers = 2 on a 2-layer base is refused, saying the base has 2 layers" "rc=$rc: $(echo "$out" | tail -5)"; fi
case_end

# --- 5 ------------------------------------------------------------------------------------
case_begin "5 layers shared between two layered images"
if build_image shared-a && load_both shared-a compat-shared-a:latest && build_image shared-b; then
  load_both shared-b compat-shared-b:latest
  shared=$(LC_ALL=C comm -12 <(d_layers compat-shared-a:latest | LC_ALL=C sort) <(d_layers compat-shared-b:latest | LC_ALL=C sort))
  if [ -n "$shared" ]; then pass "$CASE_NAME: diff_id intersection non-empty ($(echo "$shared" | wc -l) layers, docker inspect RootFS)"
  else fail "$CASE_NAME: diff_id intersection non-empty" "$(d_layers compat-shared-a:latest; echo; d_layers compat-shared-b:latest)"; fi
  pshared=$(LC_ALL=C comm -12 <(p_layers compat-shared-a:latest | LC_ALL=C sort) <(p_layers compat-shared-b:latest | LC_ALL=C sort))
  check_eq "$CASE_NAME: podman sees the same shared layers" "$shared" "$pshared"
  run_both "image a runs" compat-shared-a:latest "Hello, world!"
  run_both "image b runs" compat-shared-b:latest "Hello, world!"
fi
case_end

# --- 6 ------------------------------------------------------------------------------------
case_begin "6 repeated base layers (a base manifest listing one layer twice, nixpkgs#214434)"
if build_image repeated-base; then
  check_eq "$CASE_NAME: the base's manifest lists layer 1 twice, the second time by its <id>/layer.tar symlink" \
    "3 diff_ids, 2 distinct; layer 3 is a symlink to layer 1's file" \
    "$(tar -xOf "$TARBALL" "$(tar -xOf "$TARBALL" manifest.json | jq -r '.[0].Config')" | jq -r '.rootfs.diff_ids | "\(length) diff_ids, \(unique | length) distinct"'); layer 3 is $(
       l1=$(tar -xOf "$TARBALL" manifest.json | jq -r '.[0].Layers[0]'); l3=$(tar -xOf "$TARBALL" manifest.json | jq -r '.[0].Layers[2]')
       tar -tvf "$TARBALL" "$l3" | grep -q -- "-> ../$l1\$" && echo "a symlink to layer 1's file")"
  load_both repeated-base compat-repeated-base:latest
  base_layers=$(d_layers compat-repeated-base:latest)
  if build_image on-repeated; then
    load_both on-repeated compat-on-repeated:latest
    run_both "files of every base layer and the child" compat-on-repeated:latest "repeated
middle
Hello, world!"
    check_eq "$CASE_NAME: the child's first 3 layers are the base's a, b, a (docker inspect RootFS)" \
      "$base_layers" "$(d_layers compat-on-repeated:latest | head -3)"
    check_eq "$CASE_NAME: the repeated diff_id is the first and third" "yes" \
      "$(d_layers compat-on-repeated:latest | awk 'NR==1{a=$0} NR==3{print (a==$0 ? "yes" : "no")}')"
  fi
fi
case_end

# --- 7 ------------------------------------------------------------------------------------
# tests/e2e/nixdb.sh covers this fully on the unpacked layers (--verify --check-contents,
# -qR = the host's, narHash/narSize, a tampered file found, bit-identical rebuild). The
# stand-in has no nix package to put in the image, so here the host's Nix reads the
# container's filesystem as docker assembled it (docker export), as a user would.
case_begin "7 includeNixDB: nix-store -qR and --verify --check-contents on the container's filesystem"
if build_image nix-db; then
  load_both nix-db compat-nix-db:latest
  hello=$(cb hello 2>/dev/null); coreutils=$(cb coreutils 2>/dev/null); bash_=$(cb bash 2>/dev/null)
  run_both "the database is in the container" compat-nix-db:latest "10 yes" \
    /bin/sh -c 'cat /nix/var/nix/db/schema; test -s /nix/var/nix/db/db.sqlite && echo " yes"'
  root=$COMPAT/nix-db-export; mkdir -p "$root"
  if id=$(docker create compat-nix-db:latest 2>"$E2E_TMP/stderr") && docker export "$id" | tar -x -C "$root" 2>"$E2E_TMP/stderr"; then
    docker rm "$id" >/dev/null 2>&1
    check_eq "$CASE_NAME: nix-store -qR in the container's filesystem = on the host" \
      "$(nix-store -qR "$hello" "$bash_" "$coreutils" | LC_ALL=C sort)" \
      "$(nix-store --store "local?root=$root" -qR "$hello" "$bash_" "$coreutils" 2>&1 | LC_ALL=C sort)"
    check_eq "$CASE_NAME: nix-store -q --references (bash) in the container's filesystem = on the host" \
      "$(nix-store -q --references "$bash_" | LC_ALL=C sort)" \
      "$(nix-store --store "local?root=$root" -q --references "$bash_" 2>&1 | LC_ALL=C sort)"
    out=$(nix-store --store "local?root=$root" --verify --check-contents 2>&1); rc=$?
    if [ $rc -eq 0 ] && ! echo "$out" | grep -qiE "error|modified|invalid|warning"; then
      pass "$CASE_NAME: nix-store --verify --check-contents passes"
    else fail "$CASE_NAME: nix-store --verify --check-contents passes" "rc=$rc: $out"; fi
  else fail "$CASE_NAME: docker create + export"; fi
  chmod -R u+w "$root" 2>/dev/null; rm -rf "$root"
fi
case_end

# --- 8 ------------------------------------------------------------------------------------
# tests/e2e/images.sh (example fake-root-chown) covers it fully: docker and podman stat,
# and the owners in the layer tar. Re-asserted here in both engines.
case_begin "8 chown in fakeRootCommands persists"
IMG=$(nb -A examples.fake-root-chown 2>"$E2E_TMP/stderr") && [ -n "$IMG" ] || { fail "$CASE_NAME: examples.fake-root-chown builds"; IMG=; }
if [ -n "$IMG" ]; then
  TARBALL=$COMPAT/fake-root-chown.tar; uncompressed "$IMG" "$TARBALL"
  load_both fake-root-chown fake-root-chown:latest
  run_both "stat -c '%U:%G %u:%g' /home/user" fake-root-chown:latest "user:user 1000:1000" /bin/stat -c '%U:%G %u:%g' /home/user
fi
case_end

# --- 9 ------------------------------------------------------------------------------------
# tests/e2e/images.sh (example fakechroot) covers it fully (also the layer's contents and
# owners in the tar). Re-asserted here in both engines.
case_begin "9 enableFakechroot: mkdir /bin, chown 12345:12345, store path named only in the commands"
IMG=$(nb -A examples.fakechroot 2>"$E2E_TMP/stderr") && [ -n "$IMG" ] || { fail "$CASE_NAME: examples.fakechroot builds"; IMG=; }
if [ -n "$IMG" ]; then
  TARBALL=$COMPAT/fakechroot.tar; uncompressed "$IMG" "$TARBALL"
  load_both fakechroot fakechroot:latest
  coreutils=$(cb coreutils 2>/dev/null)
  for engine in docker pm; do
    run=$($engine run --rm --network none fakechroot:latest 2>&1)
    check_contains "$CASE_NAME: /home/app is 12345:12345 ($engine)" "$run" "home: app:app:12345:12345"
    check_contains "$CASE_NAME: mkdir /bin made /bin, its links point into coreutils, which is in the image ($engine)" \
      "$run" "bin: $coreutils/bin/cat"
    check_eq "$CASE_NAME: /bin/cat runs: coreutils (named only in fakeRootCommands) is in the image ($engine)" \
      "app:x:12345:" "$($engine run --rm --network none fakechroot:latest /bin/tail -1 /etc/group 2>&1)"
  done
fi
case_end

# --- 10 -----------------------------------------------------------------------------------
case_begin "10 bare (non-derivation) paths in contents (a path value, a builtins.path string)"
if build_image bare-paths; then
  load_both bare-paths compat-bare-paths:latest
  run_both "/bin/bare-hello (from the path value) reads /share/compat/bare.txt (from the string)" \
    compat-bare-paths:latest "bare path: from a builtins.path string"
fi
case_end

# --- 11 -----------------------------------------------------------------------------------
case_begin "11 includeStorePaths = false with fromImage (also with enableFakechroot)"
if build_image no-store-paths-from; then
  nbase=$(tar -xOf "$COMPAT/single-layer-base.tar" manifest.json 2>/dev/null | jq '.[0].Layers | length')
  own=$(tar -xOf "$TARBALL" manifest.json | jq -r ".[0].Layers[${nbase:-1}:][]")
  n=0; for l in $own; do n=$((n + $(tar -xOf "$TARBALL" "$l" | tar -t | sed 's|^\./||; s|^/||' | grep -c '^nix/store/.'))); done
  check_eq "$CASE_NAME: the image's own layers have no nix/store entries" "0" "$n"
  load_both no-store-paths-from compat-no-store-paths-from:latest
  check_eq "$CASE_NAME: docker export of the container: zero nix/store entries" "0" \
    "$(store_entries_in_export compat-no-store-paths-from:latest)"
  if docker run --rm --network none compat-no-store-paths-from:latest >/dev/null 2>&1; then
    fail "$CASE_NAME: without the host store, /bin/hello (a link into it) does not run"
  else pass "$CASE_NAME: without the host store, /bin/hello (a link into it) does not run"; fi
  for engine in docker pm; do
    check_eq "$CASE_NAME: runs with -v /nix/store:/nix/store:ro ($engine)" "Hello, world!" \
      "$($engine run --rm --network none -v /nix/store:/nix/store:ro compat-no-store-paths-from:latest 2>&1)"
    check_eq "$CASE_NAME: the base's files are there ($engine)" "from-single-layer-base" \
      "$($engine run --rm --network none compat-no-store-paths-from:latest /bin/cat /etc/base-release 2>&1)"
  done
fi
IMG=
if build_image no-store-paths-fakechroot; then
  load_both no-store-paths-fakechroot compat-no-store-paths-fakechroot:latest
  check_eq "$CASE_NAME: with enableFakechroot: docker export of the container: zero nix/store entries" "0" \
    "$(store_entries_in_export compat-no-store-paths-fakechroot:latest)"
  for engine in docker pm; do
    check_eq "$CASE_NAME: with enableFakechroot: runs with the host store mounted ($engine)" "Hello, world!" \
      "$($engine run --rm --network none -v /nix/store:/nix/store:ro compat-no-store-paths-fakechroot:latest 2>&1)"
    check_eq "$CASE_NAME: with enableFakechroot: the commands' file and the base's, side by side in /etc ($engine)" \
      "fakechroot-ran from-single-layer-base" \
      "$($engine run --rm --network none compat-no-store-paths-fakechroot:latest /bin/sh -c 'echo $(cat /etc/fakechroot-ran /etc/base-release)' 2>&1)"
  done
fi
case_end

# --- 12 -----------------------------------------------------------------------------------
# tests/e2e/images.sh (example created-now) checks docker's Created; here both engines, and
# that it parses as a date.
case_begin "12 created = \"now\""
IMG=$(nb -A examples.created-now 2>"$E2E_TMP/stderr") && [ -n "$IMG" ] || { fail "$CASE_NAME: examples.created-now builds"; IMG=; }
if [ -n "$IMG" ]; then
  TARBALL=$COMPAT/created-now.tar; uncompressed "$IMG" "$TARBALL"
  load_both created-now created-now:latest
  for engine in docker pm; do
    case $engine in docker) c=$(docker inspect -f '{{.Created}}' created-now:latest 2>&1) ;;
                    pm) c=$(pm image inspect -f '{{.Created}}' created-now:latest 2>&1) ;; esac
    if t=$(date -u -d "$(echo "$c" | sed -E 's/ \+0000 UTC$//; s/ UTC$//')" +%s 2>/dev/null) \
       && [ "$t" -gt 86400 ] && [ "$t" -le "$(date +%s)" ]; then
      pass "$CASE_NAME: Created parses as a date after 1970, not in the future ($engine: $c)"
    else fail "$CASE_NAME: Created parses as a date after 1970, not in the future ($engine)" "$c"; fi
  done
  run_both "it runs" created-now:latest "Hello, world!"
fi
case_end

# --- 13 -----------------------------------------------------------------------------------
# tests/e2e/images.sh (example non-root) checks the run and the 0755 1000:1000 /nix,
# /nix/store in the layer tar; here both engines, and the modes as the container sees them.
case_begin "13 uid/gid/uname/gname = 1000/1000/user/user: loads and runs as 1000"
IMG=$(nb -A examples.non-root 2>"$E2E_TMP/stderr") && [ -n "$IMG" ] || { fail "$CASE_NAME: examples.non-root builds"; IMG=; }
if [ -n "$IMG" ]; then
  TARBALL=$COMPAT/non-root.tar; uncompressed "$IMG" "$TARBALL"
  load_both non-root non-root:latest
  run_both "runs as 1000:1000, store files owned by 1000:1000" non-root:latest "uid=1000 gid=1000 owner=1000:1000"
  coreutils=$(cb coreutils 2>/dev/null)
  run_both "/nix and /nix/store are 755, owned by 1000" non-root:latest "755 1000:1000
755 1000:1000" "$coreutils/bin/stat" -c '%a %u:%g' /nix /nix/store
fi
case_end

echo
echo "compat: per nixpkgs test case"
printf '  %s\n' "${COMPAT_RESULTS[@]}"
rm -rf "$COMPAT"
