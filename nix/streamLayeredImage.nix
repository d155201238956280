# streamLayeredImage :: set -> drv
#
# An executable that writes the image, an uncompressed docker-archive, to stdout
# (`./result | docker load`); the image itself never enters the store. The output is a
# `#!<nix-layers> stream` script whose body is the image attrs (closure included), made by
# `nix-layers stream-script`. Same arguments as buildLayeredImage minus `compressor`.
{ internalImage, defaultArchitecture, defaultVariant }:

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
, includeStorePaths ? true
, includeNixDB ? false
, extraCommands ? ""
, fakeRootCommands ? ""
, enableFakechroot ? false
, debug ? false
, passthru ? { }
, meta ? { }
}:

internalImage {
  command = "stream-script";
  drvName = "stream-${baseNameOf name}";
  compressor = null;
  inherit name tag fromImage contents config created mtime maxLayers layering layeringPipeline
    uid gid uname gname
    architecture includeStorePaths extraCommands fakeRootCommands meta
    variant enableFakechroot debug;
  inherit includeNixDB;
  passthru = passthru // { isExe = true; };
}
