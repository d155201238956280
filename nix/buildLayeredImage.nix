# buildLayeredImage :: set -> drv
#
# A layered Docker image as a (compressed) docker-archive in the store: the drop-in for
# nixpkgs' dockerTools.buildLayeredImage, built in one step by `nix-layers build`.
# Arguments and defaults are nixpkgs'; there is no `...`, so a misspelt or unsupported
# argument is an evaluation error that names it. See docs/nix.md.
{ internalImage, streamLayeredImage, defaultArchitecture, defaultVariant }:

{ name
, tag ? null
, fromImage ? null
, contents ? [ ]
, config ? { }
, created ? "1970-01-01T00:00:01Z"
, mtime ? "1970-01-01T00:00:01Z"
, maxLayers ? 100
, layering ? null
, layeringPipeline ? null
, uid ? 0
, gid ? 0
, uname ? "root"
, gname ? "root"
, architecture ? defaultArchitecture
, variant ? defaultVariant
, compressor ? "gz"
, includeStorePaths ? true
, includeNixDB ? false
, extraCommands ? ""
, fakeRootCommands ? ""
, enableFakechroot ? false
, debug ? false
, passthru ? { }
, meta ? { }
}@args:

let
  extensions = { none = ""; gz = ".gz"; zstd = ".zst"; };
  ext = extensions.${compressor} or (throw
    "buildLayeredImage: unknown compressor \"${toString compressor}\" (use one of: none, gz, zstd)");
in
internalImage {
  command = "build";
  drvName = "${baseNameOf name}.tar${ext}";
  inherit compressor name tag fromImage contents config created mtime maxLayers layering layeringPipeline
    uid gid uname gname
    architecture includeStorePaths extraCommands fakeRootCommands meta
    variant enableFakechroot debug;
  inherit includeNixDB;
  # nixpkgs exposes the stream variant of the same image as passthru.stream.
  passthru = passthru // { stream = streamLayeredImage (builtins.removeAttrs args [ "compressor" ]); };
}
