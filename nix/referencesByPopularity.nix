# referencesByPopularity :: path -> drv
#
# The closure of `path`, most popular store path first, one per line (the file nixpkgs'
# referencesByPopularity writes, byte for byte). Built by `nix-layers popularity` alone:
# no python, no shell.
{ nix-layers, system }:
path:
derivation {
  name = "closure-paths";
  inherit system;
  builder = "${nix-layers}/bin/nix-layers";
  args = [ "popularity" ];
  __structuredAttrs = true;
  exportReferencesGraph.graph = path;
  preferLocalBuild = true;
}
