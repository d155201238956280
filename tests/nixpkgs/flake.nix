{
  description = "stand-in nixpkgs for nix-layers' offline tests (see default.nix)";
  outputs = { self }: {
    legacyPackages = builtins.listToAttrs (map
      (system: { name = system; value = import ./default.nix { inherit system; }; })
      [ "x86_64-linux" "aarch64-linux" ]);
    lib = import ./lib.nix;
  };
}
