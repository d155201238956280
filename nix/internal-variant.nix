# nixpkgs' default `variant` for a platform: "v<GOARM>" on 32-bit ARM (v5, v6, v7), else
# "" (no variant written into the image config).
platform:
let cpu = builtins.head (builtins.split "-" platform.system); in
{ armv5tel = "v5"; armv6l = "v6"; armv7l = "v7"; }.${cpu} or ""
