# The package set of the stand-in nixpkgs. Names and call signatures are nixpkgs'; the
# packages themselves are busybox look-alikes (real Debian busybox-static, copied into
# ./host/ by tests/e2e/lib.sh). Nothing here may be used by nix-layers that real nixpkgs
# does not have under the same name.
{ lib, system, pkgs }:
let
  # host/busybox/bin/{busybox, sh -> busybox}. Debian's busybox-static is a standalone
  # shell: every applet works inside the sandbox without PATH. Used to build everything.
  bootstrap = builtins.path { path = ./host/busybox; name = "busybox-static-bootstrap"; };
  bootShell = "${bootstrap}/bin/sh";

  # A stdenv-free derivation run by the bootstrap busybox.
  shellDerivation = name: env: script: derivation (env // {
    inherit name system;
    builder = bootShell;
    args = [ "-e" "-c" script ];
  });

  platform = { inherit system; };
in
{
  inherit lib;

  stdenv = { hostPlatform = platform; buildPlatform = platform; };
  # Not a cross set: the build platform is the host platform.
  buildPackages = pkgs;

  # nixpkgs: "${bash}/bin/bash".
  runtimeShell = "${pkgs.busybox}/bin/sh";

  # nixpkgs: runCommand :: String -> AttrSet -> String -> Derivation (stdenv-based). Here the
  # command runs in busybox sh -e with PATH = the inputs' bin dirs + busybox's applets.
  # Supported env keys: nativeBuildInputs, buildInputs, passthru, meta, plain env vars.
  runCommand = name: env: buildCommand:
    let
      inputs = (env.nativeBuildInputs or [ ]) ++ (env.buildInputs or [ ]);
      drv = shellDerivation name
        (builtins.removeAttrs env [ "nativeBuildInputs" "buildInputs" "passthru" "meta" ])
        ''
          export PATH=${lib.makeBinPath (inputs ++ [ pkgs.busybox ])}
          ${buildCommand}
        '';
    in
    drv // (env.passthru or { }) // { meta = env.meta or { }; };

  writeText = name: text: pkgs.runCommand name { inherit text; } ''printf '%s' "$text" > "$out"'';
  writeScript = name: text: pkgs.runCommand name { inherit text; } ''
    printf '%s' "$text" > "$out"
    chmod +x "$out"
  '';
  writeShellScript = name: text: pkgs.writeScript name ''
    #!${pkgs.runtimeShell}
    ${text}
  '';

  # busybox with one symlink per applet, self-contained (a copy of the binary).
  busybox = shellDerivation "busybox-1.35.0" { } ''
    mkdir -p $out/bin
    cp ${bootstrap}/bin/busybox $out/bin/busybox
    for a in $($out/bin/busybox --list); do
      [ "$a" = busybox ] || ln -s busybox "$out/bin/$a"
    done
  '';

  # bash look-alike: busybox ash behind bin/bash and bin/sh.
  bash = pkgs.runCommand "bash-5.2-p15" { } ''
    mkdir -p $out/bin
    printf '#!%s\nexec %s "$@"\n' ${pkgs.busybox}/bin/sh ${pkgs.busybox}/bin/sh > $out/bin/bash
    chmod +x $out/bin/bash
    ln -s bash $out/bin/sh
  '';

  # coreutils look-alike: busybox applets under coreutils' names.
  coreutils = pkgs.runCommand "coreutils-9.1" { } ''
    mkdir -p $out/bin
    for a in basename cat chmod chown cp cut date dd df dirname du echo env false head id \
             ln ls md5sum mkdir mktemp mv nproc printf pwd readlink realpath rm rmdir seq \
             sha256sum sleep sort stat tail tee test touch tr true uname uniq wc whoami yes; do
      ln -s ${pkgs.busybox}/bin/busybox $out/bin/$a
    done
  '';

  # GNU hello look-alike: prints what GNU hello prints.
  hello = pkgs.runCommand "hello-2.12.1" { } ''
    mkdir -p $out/bin
    printf '#!%s\necho "Hello, world!"\n' ${pkgs.runtimeShell} > $out/bin/hello
    chmod +x $out/bin/hello
  '';

  # NOT a real fakeroot: busybox is static, so LD_PRELOAD-based fakeroot cannot work with
  # it. This one just runs its command, so ownership changes (chown) inside
  # fakeRootCommands are not faked in the tests. Same calling convention as fakeroot(1).
  fakeroot = pkgs.runCommand "fakeroot-1.31" { } ''
    mkdir -p $out/bin
    printf '#!%s\n[ "$1" = "--" ] && shift\nexec "$@"\n' ${pkgs.runtimeShell} > $out/bin/fakeroot
    chmod +x $out/bin/fakeroot
  '';

  # nixpkgs' rustPlatform.buildRustPackage builds with cargo; here the binary cargo built
  # outside Nix (static, copied to ./host/<pname> by the harness) is installed as is.
  rustPlatform.buildRustPackage =
    { pname, version, src, cargoLock ? null, meta ? { }, ... }:
    assert cargoLock != null -> builtins.pathExists cargoLock.lockFile;
    pkgs.runCommand "${pname}-${version}" { inherit meta; } ''
      mkdir -p $out/bin
      cp ${builtins.path { path = ./host + "/${pname}"; name = pname; }} $out/bin/${pname}
      chmod 555 $out/bin/${pname}
    '';

  # Overlaid by nix-layers' overlay (buildLayeredImage, streamLayeredImage).
  dockerTools = { };
}
