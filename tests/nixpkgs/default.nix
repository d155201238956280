# A stand-in for nixpkgs, for the offline tests of nix-layers' Nix code.
#
# It exposes ONLY what nix/*.nix, default.nix, flake.nix and nix/examples.nix use, each
# with the name and call signature it has in real nixpkgs, so code that evaluates here
# also evaluates against nixpkgs. Everything is built with a static busybox (the Nix
# sandbox on the test machine has no /bin/sh), so the packages are small look-alikes:
# see ./pkgs.nix for what each one really is.
#
# Like nixpkgs: `import ./. { overlays = [ (final: prev: { ... }) ]; }`.
{ system ? builtins.currentSystem
, overlays ? [ ]
, config ? { }
, ...
}:
let
  lib = import ./lib.nix;
  base = final: import ./pkgs.nix { inherit lib system; pkgs = final; };
in
lib.fix (builtins.foldl' (f: overlay: lib.extends overlay f) base overlays)
