# The nix-layers Nix API: one line per public function (this list *is* the API).
#
#   import ./nix { inherit pkgs; }
#   -> { nix-layers, buildLayeredImage, buildLayeredImageWithNixDb, streamLayeredImage,
#        referencesByPopularity, examples }
#
# `nix-layers` is the package for pkgs' host platform. The image functions run the binary
# built for the build platform (pkgs.buildPackages), or the one passed as `nix-layers`
# (the overlay passes final.buildPackages.nix-layers, so overriding the package works).
{ pkgs, nix-layers ? null }:
let
  inherit (pkgs) lib;
  package = p: import ./package.nix { inherit (p) lib rustPlatform; };
  builder = if nix-layers != null then nix-layers else package pkgs.buildPackages;
  system = pkgs.stdenv.buildPlatform.system;
  defaultArchitecture = import ./internal-goarch.nix pkgs.stdenv.hostPlatform;
  defaultVariant = import ./internal-variant.nix pkgs.stdenv.hostPlatform;
  internalImage = import ./internal-image.nix { inherit lib pkgs system; nix-layers = builder; };
in
rec {
  nix-layers = package pkgs;
  # Both wrapped in lib.makeOverridable, as in nixpkgs: results have `.override`.
  streamLayeredImage = lib.makeOverridable
    (import ./streamLayeredImage.nix { inherit internalImage defaultArchitecture defaultVariant; });
  buildLayeredImage = lib.makeOverridable
    (import ./buildLayeredImage.nix { inherit internalImage streamLayeredImage defaultArchitecture defaultVariant; });
  # As nixpkgs: the same image with a Nix database of the closure of contents.
  buildLayeredImageWithNixDb = args: buildLayeredImage (args // { includeNixDB = true; });
  referencesByPopularity = import ./referencesByPopularity.nix { inherit system; nix-layers = builder; };
  examples = import ./examples.nix { inherit pkgs buildLayeredImage streamLayeredImage; };
}
