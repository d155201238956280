# Evaluation-level checks (sourced by run.sh): API shape, arguments, errors, passthru,
# what the derivations hand to the binary.
suite "eval: API, arguments, passthru"

check_eq "default.nix returns exactly the API" \
  '["buildLayeredImage","buildLayeredImageWithNixDb","examples","nix-layers","referencesByPopularity","streamLayeredImage"]' \
  "$(nix_eval 'builtins.attrNames api' 2>&1)"

# The documented arguments (docs/nix.md), with whether each has a default.
build_args='{"architecture":true,"compressor":true,"config":true,"contents":true,"created":true,"debug":true,"enableFakechroot":true,"extraCommands":true,"fakeRootCommands":true,"fromImage":true,"gid":true,"gname":true,"includeNixDB":true,"includeStorePaths":true,"layering":true,"layeringPipeline":true,"maxLayers":true,"meta":true,"mtime":true,"name":false,"passthru":true,"tag":true,"uid":true,"uname":true,"variant":true}'
stream_args=$(echo "$build_args" | jq -c 'del(.compressor)')
# (lib.functionArgs: the functions are lib.makeOverridable functors, as in nixpkgs.)
check_eq "buildLayeredImage takes exactly nixpkgs' documented arguments" "$build_args" \
  "$(nix_eval 'pkgs.lib.functionArgs api.buildLayeredImage' 2>&1)"
check_eq "streamLayeredImage takes the same minus compressor" "$stream_args" \
  "$(nix_eval 'pkgs.lib.functionArgs api.streamLayeredImage' 2>&1)"

# An expression written for nixpkgs (every argument of its streamLayeredImage but includeNixDB,
# with nixpkgs' kinds of values) evaluates, and the new ones reach the builder.
nixpkgs_args='name = "all-args"; tag = "t"; contents = [ pkgs.hello ]; config.Cmd = [ "/bin/hello" ];
  architecture = "arm"; variant = "v7"; created = "now"; mtime = "2024-01-01T00:00:00Z";
  uid = 1000; gid = 1000; uname = "u"; gname = "g"; maxLayers = 10; extraCommands = "mkdir tmp";
  fakeRootCommands = "chown 1000 tmp"; enableFakechroot = true; includeStorePaths = true;
  passthru.extra = 1; meta.description = "d"; layeringPipeline = null; debug = true; fromImage = null;'
check_eq "every nixpkgs argument (but includeNixDB) is accepted by both functions" \
  '{"build":["v7",true,"arm",1,"d",true],"stream":["v7",true,"arm",1,"d",true]}' \
  "$(nix_eval "let b = api.buildLayeredImage { $nixpkgs_args compressor = \"zstd\"; };
                   s = api.streamLayeredImage { $nixpkgs_args };
                   f = i: [ i.variant i.debug i.architecture i.extra i.meta.description (builtins.isString i.drvPath) ];
               in { build = f b; stream = f s; }" 2>&1)"
check_eq "variant defaults to nixpkgs' (\"\" on x86_64 and aarch64, v7 on armv7l); debug to false" \
  '[["","","v7"],false]' \
  "$(nix-instantiate --eval --strict --json -E "[ (map (s: (import $REPO/default.nix { pkgs = import $STANDIN { system = s; }; }).examples.layered-image.variant) [ \"x86_64-linux\" \"aarch64-linux\" \"armv7l-linux\" ]) (import $REPO/default.nix { pkgs = import $STANDIN { system = \"x86_64-linux\"; }; }).examples.layered-image.debug ]" 2>&1)"

# .override, as nixpkgs' lib.makeOverridable gives it: a set or a function of the old arguments.
check_eq ".override on buildLayeredImage/streamLayeredImage results (set, function, chained, passthru.stream)" \
  '["a","b","bc","bc","s2",true]' \
  "$(nix_eval 'let i = api.buildLayeredImage { name = "x"; tag = "a"; }; o = i.override { tag = "b"; };
                   o2 = o.override (old: { tag = old.tag + "c"; });
                   s = (api.streamLayeredImage { name = "s"; tag = "s1"; }).override { tag = "s2"; };
               in [ i.imageTag o.imageTag o2.imageTag o2.passthru.stream.imageTag s.imageTag
                    (o2.drvPath == (api.buildLayeredImage { name = "x"; tag = "bc"; }).drvPath) ]' 2>&1)"
check_eq "streamLayeredImage passthru: conf is the script itself, streamScript the nix-layers binary" \
  '[true,"nix-layers",true]' \
  "$(nix_eval 'let s = api.examples.stream-image; in [ (s.conf.outPath == s.outPath) (baseNameOf s.streamScript)
                  (s.passthru.conf.outPath == s.outPath) ]' 2>&1)"

# includeNixDB reaches the builder: false by default, true through buildLayeredImageWithNixDb
# (and its passthru.stream) and through streamLayeredImage.
check_eq "includeNixDB: default false; buildLayeredImageWithNixDb, its stream, streamLayeredImage: true" \
  '[false,true,true,true]' \
  "$(nix_eval 'let w = api.buildLayeredImageWithNixDb { name = "x"; }; in [
      (api.buildLayeredImage { name = "x"; }).includeNixDB w.includeNixDB w.passthru.stream.includeNixDB
      (api.streamLayeredImage { name = "x"; includeNixDB = true; }).includeNixDB ]' 2>&1)"

# An unknown argument is an evaluation error that names it.
# (fromImageName is buildImage's, not the layered functions', in nixpkgs too.)
out=$(nix_eval '(api.buildLayeredImage { name = "x"; fromImageName = null; }).drvPath' 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *"unexpected argument 'fromImageName'"* ]]; then pass "unknown argument fromImageName is an error naming it"
else fail "unknown argument fromImageName is an error naming it" "rc=$rc: $out"; fi
# fromImage reaches the builder as the archive's store path, and is no root of the closure.
check_eq "fromImage: the archive's path in the attrs of both functions, not in exportReferencesGraph" \
  '[true,true,false,true]' \
  "$(nix_eval 'let base = pkgs.writeText "base.tar" "x";
                   i = api.buildLayeredImage { name = "x"; fromImage = base; contents = [ pkgs.hello ]; };
                   s = api.streamLayeredImage { name = "x"; fromImage = base; };
               in [ (i.fromImage == "${base}") (s.fromImage == "${base}")
                    (builtins.elem "${base}" i.exportReferencesGraph.closure) ((api.buildLayeredImage { name = "x"; }).fromImage == null) ]' 2>&1)"
out=$(nix_eval '(api.streamLayeredImage { name = "x"; compressor = "gz"; }).drvPath' 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *"unexpected argument 'compressor'"* ]]; then pass "streamLayeredImage rejects compressor by name"
else fail "streamLayeredImage rejects compressor by name" "rc=$rc: $out"; fi

out=$(nix_eval '(api.buildLayeredImage { name = "x"; maxLayers = 1; }).drvPath' 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *"maxLayers = 1"* ]]; then pass "maxLayers = 1 fails the assertion, quoting the value"
else fail "maxLayers = 1 fails the assertion, quoting the value" "rc=$rc: $out"; fi
out=$(nix_eval '(api.buildLayeredImage { name = "x"; compressor = "xz"; }).drvPath' 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *'"xz"'* ]]; then pass "unknown compressor is an error naming it"
else fail "unknown compressor is an error naming it" "rc=$rc: $out"; fi

# layering / layeringPipeline reach the builder's attrs (both functions, and passthru.stream);
# unset, the binary's default applies. A bad value fails evaluation, naming it.
check_eq "layering passes through buildLayeredImage, its stream, streamLayeredImage; unset: absent" \
  '["popularity","popularity","reuse",false]' \
  "$(nix_eval 'let b = api.buildLayeredImage { name = "x"; layering = "popularity"; }; in [
      b.layering b.passthru.stream.layering
      (api.streamLayeredImage { name = "x"; layering = "reuse"; }).layering
      ((api.buildLayeredImage { name = "x"; }) ? layering) ]' 2>&1)"
out=$(nix_eval '(api.buildLayeredImage { name = "x"; layering = "bogus"; }).drvPath' 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *'layering "bogus"'* ]] && [[ $out == *"popularity, autolayer, reuse"* ]]; then
  pass "unknown layering is an evaluation error naming it and the allowed values"
else fail "unknown layering is an evaluation error naming it and the allowed values" "rc=$rc: $out"; fi
out=$(nix_eval '(api.streamLayeredImage { name = "x"; layering = 3; }).drvPath' 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *"layering an int"* ]]; then pass "a non-string layering is an evaluation error"
else fail "a non-string layering is an evaluation error" "rc=$rc: $out"; fi
pipeline='[["subcomponent_out",["/nix/store/00000000000000000000000000000000-x"]],["over","rest",["pipe",[["popularity_contest"],["limit_layers",5]]]]]'
echo "$pipeline" > "$E2E_TMP/pipeline.json"
check_eq "layeringPipeline: a list, a path and a path string to a JSON file all reach the builder as the list" \
  "[$pipeline,$pipeline,$pipeline,$pipeline]" \
  "$(nix_eval "let p = builtins.fromJSON ''$pipeline''; i = a: (api.buildLayeredImage ({ name = \"x\"; } // a)).layeringPipeline; in [
      (i { layeringPipeline = p; }) (i { layeringPipeline = $E2E_TMP/pipeline.json; })
      (i { layeringPipeline = \"$E2E_TMP/pipeline.json\"; })
      (api.streamLayeredImage { name = \"x\"; layeringPipeline = $E2E_TMP/pipeline.json; }).layeringPipeline ]" 2>&1)"
out=$(nix_eval '(api.buildLayeredImage { name = "x"; layeringPipeline = { steps = [ ]; }; }).drvPath' 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *"layeringPipeline must be a list"*"got a set"* ]]; then
  pass "a layeringPipeline neither a list nor a path is an evaluation error naming it"
else fail "a layeringPipeline neither a list nor a path is an evaluation error naming it" "rc=$rc: $out"; fi
echo '{"not":"a list"}' > "$E2E_TMP/not-a-pipeline.json"
out=$(nix_eval "(api.buildLayeredImage { name = \"x\"; layeringPipeline = $E2E_TMP/not-a-pipeline.json; }).drvPath" 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *"not-a-pipeline.json holds a set"* ]]; then
  pass "a layeringPipeline file without a list is an evaluation error naming the file"
else fail "a layeringPipeline file without a list is an evaluation error naming the file" "rc=$rc: $out"; fi
out=$(nix_eval '(api.buildLayeredImage { name = "x"; layering = "reuse"; layeringPipeline = [ ]; }).drvPath' 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ $out == *"layering or layeringPipeline, not both"* ]]; then pass "layering and layeringPipeline together are an evaluation error"
else fail "layering and layeringPipeline together are an evaluation error" "rc=$rc: $out"; fi

check_eq "output names: <name>.tar.gz / .tar.zst / .tar, stream-<name>" \
  '["layered-image.tar.gz","compressor-zstd.tar.zst","compressor-none.tar","stream-stream-image"]' \
  "$(nix_eval 'map (n: api.examples.${n}.name) [ "layered-image" "compressor-zstd" "compressor-none" "stream-image" ]' 2>&1)"
check_eq "passthru: imageTag = tag, imageName lowercased, stream variant, isExe" \
  '{"build":["latest","layered-image",true],"stream":["latest","stream-image",true],"untagged":"untagged"}' \
  "$(nix_eval 'let e = api.examples; in {
      build = [ e.layered-image.imageTag e.layered-image.imageName e.layered-image.passthru.stream.isExe ];
      stream = [ e.stream-image.imageTag e.stream-image.passthru.imageName e.stream-image.isExe ];
      untagged = e.untagged.imageName; }' 2>&1)"
check_eq "tag = null: imageTag is the hash part of the out path" "true" \
  "$(nix_eval 'let i = api.examples.untagged; in i.imageTag == builtins.substring 11 32 (builtins.unsafeDiscardStringContext i.outPath) && builtins.stringLength i.imageTag == 32' 2>&1)"

check_eq "image derivations: nix-layers is the builder, structured attrs, no shell" \
  '{"args":["build"],"builder":"nix-layers","sa":true,"streamArgs":["stream-script"]}' \
  "$(nix_eval 'let i = api.examples.bin-merge; in {
      builder = baseNameOf i.builder; args = i.args; sa = i.__structuredAttrs;
      streamArgs = api.examples.stream-image.args; }' 2>&1)"
check_eq "no customisation-layer derivation without extraCommands/fakeRootCommands" "null" \
  "$(nix_eval 'api.examples.bin-merge.customisationLayer' 2>&1)"
check_eq "closure roots: contents + store paths in config (+ customisation layer)" \
  '{"bin-merge":["bash-5.2-p15","coreutils-9.1","hello-2.12.1"],"layered-image":["bash-5.2-p15","coreutils-9.1","hello-2.12.1","layered-image-customisation-layer"],"non-root":["whoami-and-owner"]}' \
  "$(nix_eval 'let names = i: map (p: builtins.substring 44 99 p) i.exportReferencesGraph.closure;
      in builtins.mapAttrs (n: i: builtins.sort builtins.lessThan (names i))
        { inherit (api.examples) bin-merge layered-image non-root; }' 2>&1)"
check_eq "a store path written in config without string context is not a root" \
  '["hello-2.12.1"]' \
  "$(nix_eval 'let i = api.buildLayeredImage { name = "x"; config.Cmd = [ "${pkgs.hello}/bin/hello" ];
        config.Env = [ "X=/nix/store/00000000000000000000000000000000-not-a-dependency" ]; };
      in map (p: builtins.substring 44 99 p) i.exportReferencesGraph.closure' 2>&1)"
check_eq "no roots (no contents, nothing in config): closure = [] and no exportReferencesGraph" \
  '[[],false]' \
  "$(nix_eval 'let i = api.buildLayeredImage { name = "empty"; }; in [ i.closure (i ? exportReferencesGraph) ]' 2>&1)"
check_eq "includeStorePaths = false: no closure graph requested" '[[],false]' \
  "$(nix_eval 'let i = api.buildLayeredImage { name = "x"; includeStorePaths = false; contents = [ pkgs.hello ]; };
      in [ i.closure (i ? exportReferencesGraph) ]' 2>&1)"
check_eq "single path accepted as contents" '1' \
  "$(nix_eval 'builtins.length (api.buildLayeredImage { name = "x"; contents = pkgs.hello; }).contents' 2>&1)"
check_eq "architecture defaults to the host platform's GOARCH" '["amd64","arm64"]' \
  "$(nix-instantiate --eval --strict --json -E "map (s: (import $REPO/default.nix { pkgs = import $STANDIN { system = s; }; }).examples.layered-image.architecture) [ \"x86_64-linux\" \"aarch64-linux\" ]" 2>&1)"

# Our Nix code may only use these pkgs/lib attributes (documented in docs/nix.md; all exist
# in real nixpkgs with these names and signatures).
used_pkgs=$(grep -ohE '\bpkgs\.[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)?' "$REPO"/nix/*.nix "$REPO/flake.nix" | sort -u | tr '\n' ' ')
check_eq "pkgs attributes used by nix/ and flake.nix" \
  "pkgs.buildPackages pkgs.fakeroot pkgs.proot pkgs.runCommand pkgs.stdenv.buildPlatform pkgs.stdenv.hostPlatform " "$used_pkgs"
used_lib=$(grep -ohE '\blib\.[A-Za-z][A-Za-z0-9_.]*' "$REPO"/nix/*.nix | sort -u | tr '\n' ' ')
check_eq "lib functions used by nix/" "lib.assertMsg lib.licenses.mit lib.makeOverridable lib.toLower " "$used_lib"

# The package's source: what `cargo build` needs and nothing else (the stand-in
# rustPlatform does not compile it, so check the filter here).
src=$(nix eval --raw --impure --expr "\"\${(import $REPO/nix/package.nix {
    lib = (import $STANDIN { }).lib; rustPlatform.buildRustPackage = a: a.src; })}\"" 2>"$E2E_TMP/stderr")
check_eq "package source: Cargo.toml, Cargo.lock, build.rs, src/ only" \
  "$(cd "$REPO" && ls -d Cargo.lock Cargo.toml build.rs src 2>/dev/null | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')" \
  "$(ls "$src" 2>&1 | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')"
check_eq "package source: every file of src/" "$(cd "$REPO/src" && find . -type f | LC_ALL=C sort)" \
  "$(cd "$src/src" 2>/dev/null && find . -type f | LC_ALL=C sort)"
check_eq "package version is Cargo.toml's" \
  "\"$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)\"" \
  "$(nix_eval 'api.nix-layers.name' 2>&1 | sed 's/^"nix-layers-/"/')"
