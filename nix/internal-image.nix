# Shared body of buildLayeredImage and streamLayeredImage (private).
#
# The image derivation has `nix-layers` as its builder and nothing else: its structured
# attrs are the image attrs of docs/contract.md, and `exportReferencesGraph.closure` gives
# the binary the closure of `contents`, of every store path `config` mentions and, when
# there is one, of the customisation layer. Only extraCommands/fakeRootCommands need a
# shell, and then only in a separate derivation that makes the customisation layer.
{ lib, pkgs, system, nix-layers }:

{ command       # "build" or "stream-script": the nix-layers subcommand
, drvName       # the derivation's (file) name
, compressor    # build only; null for the stream script
, name, tag, contents, config, created, mtime, maxLayers, layering, layeringPipeline
, uid, gid, uname, gname
, architecture, includeStorePaths, extraCommands, fakeRootCommands, passthru, meta
, variant, enableFakechroot, debug
, includeNixDB ? false  # the builder writes a Nix database of the closure of contents
, fromImage ? null      # a base image archive: its layers come first
}:

assert lib.assertMsg (maxLayers > 1)
  "nix-layers: maxLayers must be greater than 1 (the customisation layer is one of them), got maxLayers = ${toString maxLayers}";
# proot, which enableFakechroot runs the commands in, is Linux-only (nixpkgs asserts the same).
assert lib.assertMsg (enableFakechroot -> pkgs.stdenv.buildPlatform.isLinux or true)
  "nix-layers: enableFakechroot needs proot, which runs only on Linux (build platform ${system})";

let
  # --- layering (docs/nix.md): checked here so that a bad value fails evaluation -----
  layeringNames = [ "popularity" "autolayer" "reuse" ];
  describe = v:
    let type = builtins.typeOf v; in
    if type == "string" then "\"${v}\"" else if type == "int" then "an int" else "a ${type}";
  layeringAttrs =
    if layering == null then { }
    else if builtins.elem layering layeringNames then { inherit layering; }
    else throw "nix-layers: unknown layering ${describe layering} (use one of: ${builtins.concatStringsSep ", " layeringNames}; or null for the default, autolayer)";
  # nixpkgs takes a list of [function, args…] steps, or a path to a JSON file holding one;
  # the file is read here so the builder gets the list.
  pipelineFile = p: builtins.isPath p || (builtins.isString p && builtins.substring 0 1 p == "/");
  pipelineSteps =
    if builtins.isList layeringPipeline then layeringPipeline
    else if pipelineFile layeringPipeline then
      let steps = builtins.fromJSON (builtins.readFile layeringPipeline); in
      if builtins.isList steps then steps
      else throw "nix-layers: layeringPipeline file ${toString layeringPipeline} holds ${describe steps}, not a list of [function, args…] steps"
    else throw "nix-layers: layeringPipeline must be a list of [function, args…] steps or a path to a JSON file holding one, got ${describe layeringPipeline}";
  pipelineAttrs =
    if layeringPipeline == null then { }
    else if layering != null then throw "nix-layers: give layering or layeringPipeline, not both (got layering = ${describe layering})"
    else { layeringPipeline = pipelineSteps; };

  contentsList = if builtins.isList contents then contents else [ contents ];
  contentsPaths = map (c: "${c}") contentsList;
  imageName = lib.toLower name;

  # --- store paths a value refers to ----------------------------------------------
  # Every store path written in `s` whose string context says it is a real dependency
  # (a path literal, or an output of a derivation in the context). A store path written
  # as plain text without context is skipped, as nixpkgs' reference scan would.
  storeDir = builtins.storeDir;
  storePathRegex = "(${storeDir}/[0-9a-df-np-sv-z]{32}-[-+._?=0-9a-zA-Z]+)";
  nameOf = p: let b = baseNameOf p; in builtins.substring 33 (builtins.stringLength b) b;
  storePathsIn = s:
    let
      context = builtins.getContext s;
      exact = builtins.filter (k: context.${k}.path or false || context.${k}.allOutputs or false)
        (builtins.attrNames context);
      outputNames = builtins.concatMap
        (drv:
          let stem = builtins.substring 0 (builtins.stringLength (nameOf drv) - 4) (nameOf drv);
          in map (o: if o == "out" then stem else "${stem}-${o}") (context.${drv}.outputs or [ ]))
        (builtins.attrNames context);
      known = builtins.listToAttrs (map (n: { name = n; value = true; }) (exact ++ map (n: "name:${n}") outputNames));
      found = builtins.concatMap (x: if builtins.isList x then x else [ ])
        (builtins.split storePathRegex (builtins.unsafeDiscardStringContext s));
      wanted = builtins.filter (p: known ? ${p} || known ? "name:${nameOf p}") found;
    in
    builtins.attrNames (builtins.listToAttrs (map (p: { name = p; value = true; }) wanted));

  # --- customisation layer (only for extraCommands / fakeRootCommands) --------------
  # contents merged like symlinkJoin (directories merged, everything else a symlink into
  # the store; the same file from two contents is an error, as in the binary), then
  # extraCommands, then fakeRootCommands and tar under fakeroot, as nixpkgs does. With
  # enableFakechroot, fakeroot runs inside proot with the layer as `/` and /dev, /proc,
  # /sys, the store and the build directory bound into it; those are left out of the tar.
  # The shell under fakeroot is stdenv's `bash` from PATH (fakeroot's LD_PRELOAD needs a
  # dynamically linked shell and tools). Only POSIX sh and flags busybox has besides.
  mtimeForTouch =
    if mtime == "now" then ""
    else builtins.replaceStrings [ "T" "Z" "+00:00" ] [ " " "" "" ] mtime;
  # Runs under fakeroot with $1 = the layer's root ("/" inside proot).
  fakeRootScript = ''
    set -eu
    cd "$1"
    eval "$fakeRootCommands"
    # Directories proot binds into the layer for the commands, not part of it: prune them
    # (and /nix, made by proot to hold the store, unless the layer had a /nix before).
    set --
    if [ -n "$fakechroot" ]; then
      for d in ./dev ./proc ./sys ".${storeDir}" ".$NIX_BUILD_TOP" ''${pruneNix:-}; do
        set -- "$@" -path "$d" -prune -o
      done
    fi
    find . -mindepth 1 "$@" -print | LC_ALL=C sort > "$NIX_BUILD_TOP/layer-files"
    if [ -n "$mtimeForTouch" ]; then
      { echo .; cat "$NIX_BUILD_TOP/layer-files"; } | tr '\n' '\0' \
        | xargs -0 env TZ=UTC touch -h -d "$mtimeForTouch"
    fi
    set -- .
    while IFS= read -r f; do set -- "$@" "$f"; done < "$NIX_BUILD_TOP/layer-files"
    tar --numeric-owner --no-recursion -cf "$out/layer.tar" "$@"
  '';
  customisationLayer =
    if extraCommands == "" && fakeRootCommands == "" then null
    else pkgs.runCommand "${baseNameOf name}-customisation-layer"
      {
        nativeBuildInputs = [ pkgs.fakeroot ] ++ (if enableFakechroot then [ pkgs.proot ] else [ ]);
        inherit extraCommands fakeRootCommands fakeRootScript mtimeForTouch;
        contents = contentsPaths;
        fakechroot = if enableFakechroot then "1" else "";
      } ''
      root=$PWD/root
      mkdir "$root"
      for p in $contents; do
        if [ ! -d "$p" ]; then echo "contents entry $p is not a directory" >&2; exit 1; fi
        (cd "$p" && find . -mindepth 1 -type d) | while IFS= read -r d; do
          mkdir -p "$root/''${d#./}"
        done
        (cd "$p" && find . -mindepth 1 ! -type d) | while IFS= read -r f; do
          f=''${f#./}
          if [ -e "$root/$f" ] || [ -L "$root/$f" ]; then
            echo "contents conflict: /$f is in both $(readlink "$root/$f") and $p/$f" >&2
            exit 1
          fi
          ln -s "$p/$f" "$root/$f"
        done
      done
      (cd "$root" && eval "$extraCommands")
      mkdir -p "$out"
      if [ -n "$fakechroot" ]; then
        if [ ! -e "$root/nix" ] && [ ! -L "$root/nix" ]; then export pruneNix=./nix; fi
        binds=""
        for d in /dev/ /proc/ /sys/ ${storeDir}/ "$NIX_BUILD_TOP"; do
          if [ -e "$d" ]; then binds="$binds --bind=$d"; fi
        done
        proot -r "$root" $binds --pwd=/ fakeroot -- bash -c "$fakeRootScript" customisation-layer /
      else
        fakeroot -- bash -c "$fakeRootScript" customisation-layer "$root"
      fi
    '';

  # includeNixDB needs the closure of contents even when no store path is in the image.
  closureRoots =
    if !includeStorePaths then (if includeNixDB then contentsPaths else [ ])
    else storePathsIn (builtins.toJSON [ contentsPaths config ])
      ++ (if customisationLayer == null then [ ] else [ "${customisationLayer}" ]);

  # With structured attrs an empty exportReferencesGraph entry produces no key at all,
  # and the binary wants `closure` whenever includeStorePaths is true: give it [] then.
  closureAttrs =
    if closureRoots == [ ] then { closure = [ ]; }
    else { exportReferencesGraph.closure = closureRoots; };

  # The image attrs (docs/contract.md), shared by the image and its copy* programs.
  imageAttrs = {
    inherit system;
    builder = "${nix-layers}/bin/nix-layers";
    __structuredAttrs = true;

    # `name` is taken by the derivation (the file name), so the image name travels as
    # `imageName`.
    inherit imageName tag config created mtime maxLayers uid gid uname gname architecture
      variant debug includeStorePaths includeNixDB;
    contents = contentsPaths;
    customisationLayer = if customisationLayer == null then null else "${customisationLayer}";
    # The archive's path (a store path: a derivation's output, or a path literal copied to
    # the store). Its string context makes it an input of the build, and of the stream
    # script's closure, which reads it when run; it is never a root of `closure`, so it
    # is not a store layer of the image.
    fromImage = if fromImage == null then null else "${fromImage}";
  } // layeringAttrs // pipelineAttrs // closureAttrs;

  drv = derivation (imageAttrs // {
    name = drvName;
    args = [ command ];
  } // (if compressor == null then { } else { inherit compressor; }));

  imageTag =
    if tag != null then tag
    else builtins.substring (builtins.stringLength storeDir + 1) 32
      (builtins.unsafeDiscardStringContext drv.outPath);

  # nixpkgs' stream passthru has `conf` (the image description) and `streamScript` (the
  # program that streams it: `${streamScript} ${conf}`). Here the stream script is its own
  # conf (the image attrs after the #! line) and the program is nix-layers:
  # `${streamScript} stream ${conf}`.
  streamPassthru =
    if command == "stream-script" then { conf = drv; streamScript = "${nix-layers}/bin/nix-layers"; }
    else { };

  # --- copyTo* (docs/nix.md): programs that deliver this image, as nix2container's ------
  # Each is a stream script of the same image attrs written to $out/bin/<name> (so
  # `nix run .#image.copyToRegistry -- --creds u:p` runs it), whose `scriptArgs` (a verb
  # and its arguments) come before the user's. The tag is fixed to this result's
  # imageTag: with tag = null it is this output's hash, not the script's own. The
  # string has no context, so building a script does not build the image archive.
  copyProgram = scriptName: scriptArgs:
    derivation (imageAttrs // {
      name = scriptName;
      args = [ "stream-script" ];
      tag = imageTag;
      inherit scriptName scriptArgs;
    }) // { meta.mainProgram = scriptName; };
  # docker's rule: the first `/`-separated part is a registry host when it has a `.` or
  # a `:`, or is `localhost`; otherwise the image is on docker.io (`library/` for a
  # one-part name), which `push` wants spelt out.
  firstPart = builtins.match "([^/]*)/.*" imageName;
  hasHost = firstPart != null && (builtins.match ".*[.:].*" (builtins.head firstPart) != null
    || builtins.head firstPart == "localhost");
  registryName =
    if hasHost then imageName
    else if firstPart != null then "docker.io/${imageName}"
    else "docker.io/library/${imageName}";
  imageRefUnsafe = builtins.unsafeDiscardStringContext "${imageName}:${imageTag}";
  copyPassthru = {
    inherit imageRefUnsafe;
    copyToRegistry = copyProgram "copy-to-registry"
      [ "push" (builtins.unsafeDiscardStringContext "docker://${registryName}:${imageTag}") ];
    copyToDockerDaemon = copyProgram "copy-to-docker-daemon" [ "load" "docker" ];
    copyToPodman = copyProgram "copy-to-podman" [ "load" "podman" ];
    copyTo = copyProgram "copy-to" [ "copy-to" ];
  };
  allPassthru = passthru // streamPassthru // copyPassthru // { inherit imageTag imageName; };
in
drv // allPassthru // { passthru = allPassthru; inherit meta; }
