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

  # Debian's dynamically linked tools (host/debian, copied by tests/e2e/lib.sh from the
  # Debian packages bash, coreutils, findutils, sed, grep, tar, gzip, util-linux, fakeroot,
  # proot, patchelf), made to run from the store: every ELF file gets this output's
  # ld-linux as interpreter and its lib/ as RPATH (Debian's patchelf, run through the
  # copied loader). Not a nixpkgs attribute; `stdenv` tools, `fakeroot` and `proot` below
  # are made from it.
  debian = shellDerivation "debian-bookworm-tools" { src = builtins.path { path = ./host/debian; name = "debian-bookworm-host-files"; }; } ''
    cp -r "$src" "$out"
    chmod -R u+w "$out"
    patchelf() { "$src/lib/ld-linux-x86-64.so.2" --library-path "$src/lib" "$src/libexec/patchelf" "$@"; }
    for f in "$out"/bin/* "$out"/libexec/* "$out"/lib/*.so* "$out"/lib/libfakeroot/*; do
      [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
      case "$f" in
        */ld-linux-x86-64.so.2) ;;
        */lib/*) patchelf --set-rpath "$out/lib" "$f" ;;
        *) patchelf --set-interpreter "$out/lib/ld-linux-x86-64.so.2" --set-rpath "$out/lib" "$f" ;;
      esac
    done
  '';
in
{
  inherit lib;

  stdenv = { hostPlatform = platform; buildPlatform = platform; };
  # Not a cross set: the build platform is the host platform.
  buildPackages = pkgs;

  # nixpkgs: "${bash}/bin/bash".
  runtimeShell = "${pkgs.busybox}/bin/sh";

  # nixpkgs: runCommand :: String -> AttrSet -> String -> Derivation (stdenv-based). Here the
  # command runs in busybox sh -e with PATH = the inputs' bin dirs, then Debian's bash,
  # coreutils, findutils, sed, grep, tar, gzip (a stdenv's tools, dynamically linked, so
  # that fakeroot's LD_PRELOAD works on them), then busybox's applets.
  # Supported env keys: nativeBuildInputs, buildInputs, passthru, meta, plain env vars.
  runCommand = name: env: buildCommand:
    let
      inputs = (env.nativeBuildInputs or [ ]) ++ (env.buildInputs or [ ]);
      drv = shellDerivation name
        (builtins.removeAttrs env [ "nativeBuildInputs" "buildInputs" "passthru" "meta" ])
        ''
          export PATH=${lib.makeBinPath (inputs ++ [ debian pkgs.busybox ])}
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

  # Debian's fakeroot 1.31 (SysV IPC flavour), as nixpkgs' fakeroot: bin/fakeroot runs its
  # command with libfakeroot preloaded and faked as the daemon. Debian's script, with its
  # install paths pointed at the store and its helpers (getopt, sed, cut) taken from
  # Debian's tools; the command itself runs with the caller's PATH. The Nix sandbox maps
  # only the build user, so a real chown to another id fails with EINVAL, which Debian's
  # libfakeroot passes on (it ignores only EPERM); nixpkgs patches fakeroot to ignore
  # EINVAL, and FAKEROOTDONTTRYCHOWN=1 (libfakeroot's own switch: record the owner, skip
  # the real chown) has the same effect here.
  fakeroot = shellDerivation "fakeroot-1.31" { } ''
    mkdir -p $out/bin $out/lib/libfakeroot
    ln -s ${debian}/libexec/faked-sysv $out/bin/faked-sysv
    ln -s ${debian}/lib/libfakeroot/libfakeroot-sysv.so $out/lib/libfakeroot/
    sed -e '1s|^#!.*|#!${debian}/bin/bash\nFAKEROOT_CALLER_PATH=$PATH; PATH=${debian}/bin|' \
        -e "s|^FAKEROOT_PREFIX=.*|FAKEROOT_PREFIX=$out|" \
        -e "s|^FAKEROOT_BINDIR=.*|FAKEROOT_BINDIR=$out/bin|" \
        -e "s|^PATHS=.*|PATHS=$out/lib/libfakeroot|" \
        -e 's|^export FAKEROOT_FD_BASE|PATH=$FAKEROOT_CALLER_PATH; export FAKEROOTDONTTRYCHOWN=1\n&|' \
        ${debian}/libexec/fakeroot-sysv > $out/bin/fakeroot
    chmod 555 $out/bin/fakeroot
  '';

  # Debian's proot 5.1.0 (ptrace-based chroot/bind emulation), as nixpkgs' proot.
  proot = shellDerivation "proot-5.1.0" { } ''
    mkdir -p $out/bin
    ln -s ${debian}/libexec/proot $out/bin/proot
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
