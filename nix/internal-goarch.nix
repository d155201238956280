# Go's GOARCH for a nixpkgs platform (what nixpkgs' dockerTools puts in `architecture`):
# stdenv.hostPlatform.system -> "amd64", "arm64", ...
platform:
let
  cpu = builtins.head (builtins.split "-" platform.system);
  goarch = {
    x86_64 = "amd64";
    i686 = "386";
    aarch64 = "arm64";
    armv5tel = "arm";
    armv6l = "arm";
    armv7l = "arm";
    powerpc64le = "ppc64le";
    riscv64 = "riscv64";
    s390x = "s390x";
    mips64el = "mips64le";
    loongarch64 = "loong64";
  };
in
goarch.${cpu} or (throw "nix-layers: no Docker architecture known for system ${platform.system}; pass `architecture` explicitly")
