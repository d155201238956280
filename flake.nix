{
  description = "nix-layers: layered Docker images from Nix closures (drop-in buildLayeredImage, streamLayeredImage, referencesByPopularity)";

  # No flake.lock is committed: consumers bring their own nixpkgs with
  #   inputs.nix-layers.inputs.nixpkgs.follows = "nixpkgs";
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: builtins.listToAttrs
        (map (system: { name = system; value = f system; }) systems);
      apiFor = system: import ./nix { pkgs = nixpkgs.legacyPackages.${system}; };
    in
    {
      # final: prev: adds nix-layers and referencesByPopularity, and replaces
      # dockerTools.buildLayeredImage / buildLayeredImageWithNixDb / streamLayeredImage.
      overlays.default = final: prev:
        let
          api = import ./nix { pkgs = final; nix-layers = final.buildPackages.nix-layers; };
        in
        {
          nix-layers = (import ./nix { pkgs = final; }).nix-layers;
          inherit (api) referencesByPopularity;
          dockerTools = prev.dockerTools // { inherit (api) buildLayeredImage buildLayeredImageWithNixDb streamLayeredImage; };
        };

      packages = forAllSystems (system:
        let api = apiFor system; in
        { default = api.nix-layers; inherit (api) nix-layers; });

      # nix build .#examples.layered-image
      legacyPackages = forAllSystems (system: { inherit (apiFor system) examples; });

      checks = forAllSystems (system:
        let api = apiFor system; in
        { inherit (api) nix-layers; }
        // builtins.listToAttrs (map
          (n: { name = "example-${n}"; value = api.examples.${n}; })
          (builtins.attrNames api.examples)));
    };
}
