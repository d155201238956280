# The nix-layers binary, built from this repository with nixpkgs' Rust tooling.
# The version is Cargo.toml's, so the two never drift.
{ lib, rustPlatform }:
let
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);
  root = toString ../.;
  # Only what `cargo build` needs: a change to docs/, nix/ or tests/ does not rebuild it.
  keep = [ "Cargo.toml" "Cargo.lock" "build.rs" "src" ];
  skip = [ ];
  relative = path: builtins.substring (builtins.stringLength root + 1) 4096 (toString path);
  topLevel = rel: builtins.head (builtins.split "/" rel);
  isUnder = dir: rel: rel == dir || builtins.substring 0 (builtins.stringLength dir + 1) rel == "${dir}/";
in
rustPlatform.buildRustPackage {
  pname = cargoToml.package.name;
  version = cargoToml.package.version;
  src = builtins.path {
    path = ../.;
    name = "nix-layers-source";
    filter = path: type:
      let rel = relative path; in
      builtins.elem (topLevel rel) keep && !(builtins.any (d: isUnder d rel) skip);
  };
  cargoLock.lockFile = ../Cargo.lock;
  # The test suite reads vectors from outside the repository (../shared/data) and runs
  # docker/podman; it runs in tests/run.sh, not in this build.
  doCheck = false;
  meta = {
    description = cargoToml.package.description;
    license = lib.licenses.mit;
    mainProgram = "nix-layers";
  };
}
