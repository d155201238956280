# Non-flake entry point: nix-build -A examples.layered-image
#   -> { nix-layers, buildLayeredImage, buildLayeredImageWithNixDb, streamLayeredImage,
#        referencesByPopularity, examples }
{ pkgs ? import <nixpkgs> { } }:
import ./nix { inherit pkgs; }
