# Example images. Each one runs in docker/podman and prints something the e2e suite checks
# (tests/e2e/examples.sh). Build one with
#   nix-build -A examples.layered-image        or   nix build .#examples.layered-image
# They use only long-standing nixpkgs packages and trivial builders (hello, bash,
# coreutils, writeText, writeShellScript).
{ pkgs, buildLayeredImage, streamLayeredImage }:
let
  inherit (pkgs) hello bash coreutils writeText writeShellScript;
  helloCmd = { Cmd = [ "${hello}/bin/hello" ]; };

  # 120 tiny store paths: 12 chains of 10 text files (each names the one before it) and a
  # root naming the 12 chain ends.
  chain = c: builtins.foldl'
    (prev: i: writeText "tiny-${toString c}-${toString i}" "after ${prev}\n")
    (writeText "tiny-${toString c}-0" "start\n")
    (builtins.genList (i: i + 1) 9);
  manyRoot = writeText "many-paths-root"
    (builtins.concatStringsSep "\n" (builtins.genList chain 12));
in
{
  # nixpkgs' own example (pkgs/build-support/docker/examples.nix), unchanged.
  layered-image = buildLayeredImage {
    name = "layered-image";
    tag = "latest";
    extraCommands = ''echo "(extraCommand)" > extraCommands'';
    config.Cmd = [ "${hello}/bin/hello" ];
    contents = [ hello bash coreutils ];
  };

  # Several contents merged into /bin by nix-layers itself (no extraCommands).
  bin-merge = buildLayeredImage {
    name = "bin-merge";
    tag = "latest";
    contents = [ hello bash coreutils ];
    config.Cmd = [ "/bin/sh" "-c" "/bin/hello && echo bin: $(/bin/ls /bin)" ];
  };

  # Small layer budgets: 4 store paths into 1 (resp. 2) store layers + the customisation layer.
  max-layers-2 = buildLayeredImage {
    name = "max-layers-2";
    tag = "latest";
    maxLayers = 2;
    contents = [ hello bash coreutils ];
    config = helloCmd;
  };
  max-layers-3 = buildLayeredImage {
    name = "max-layers-3";
    tag = "latest";
    maxLayers = 3;
    contents = [ hello bash coreutils ];
    config = helloCmd;
  };

  # Not reproducible on purpose: `created` is the build time.
  created-now = buildLayeredImage {
    name = "created-now";
    tag = "latest";
    created = "now";
    config = helloCmd;
  };

  compressor-zstd = buildLayeredImage {
    name = "compressor-zstd";
    tag = "latest";
    compressor = "zstd";
    config = helloCmd;
  };
  compressor-none = buildLayeredImage {
    name = "compressor-none";
    tag = "latest";
    compressor = "none";
    config = helloCmd;
  };

  # tag = null: the tag is the hash part of the output path (passthru.imageTag).
  untagged = buildLayeredImage {
    name = "Untagged";
    config = helloCmd;
  };

  # ./result | docker load
  stream-image = streamLayeredImage {
    name = "stream-image";
    tag = "latest";
    contents = [ hello bash coreutils ];
    config = helloCmd;
  };

  # Store files owned by 1000:1000, and the container runs as that user.
  non-root = buildLayeredImage {
    name = "non-root";
    tag = "latest";
    uid = 1000;
    gid = 1000;
    uname = "user";
    gname = "user";
    config = {
      User = "1000:1000";
      Cmd = [
        (writeShellScript "whoami-and-owner" ''
          echo "uid=$(${coreutils}/bin/id -u) gid=$(${coreutils}/bin/id -g) owner=$(${coreutils}/bin/stat -c %u:%g ${hello}/bin/hello)"
        '')
      ];
    };
  };

  # fakeRootCommands (and the customisation-layer derivation) without extraCommands.
  fake-root-commands = buildLayeredImage {
    name = "fake-root-commands";
    tag = "latest";
    contents = [ coreutils ];
    fakeRootCommands = ''
      mkdir -p tmp
      chmod 1777 tmp
      echo "(fakeRootCommand)" > fake-root-file
    '';
    config.Cmd = [ "/bin/cat" "/fake-root-file" ];
  };

  # chown under fakeroot persists into the layer: /home/user belongs to user:user (1000:1000)
  # in the container, though the build never ran as root.
  fake-root-chown = buildLayeredImage {
    name = "fake-root-chown";
    tag = "latest";
    contents = [ coreutils ];
    extraCommands = ''
      mkdir etc
      printf 'root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' > etc/passwd
      printf 'root:x:0:\nuser:x:1000:\n' > etc/group
    '';
    fakeRootCommands = ''
      mkdir -p home/user
      echo hello > home/user/file
      chown -R 1000:1000 home/user
    '';
    config.Cmd = [ "/bin/stat" "-c" "%U:%G %u:%g" "/home/user" "/home/user/file" ];
  };

  # enableFakechroot: fakeRootCommands run under proot with the layer as `/`: absolute
  # paths, `mkdir /bin`, a useradd-style edit of /etc/passwd and /etc/group, a chown to the
  # new user. coreutils is only named in the commands (symlinks in /bin): it is in the image.
  fakechroot = buildLayeredImage {
    name = "fakechroot";
    tag = "latest";
    enableFakechroot = true;
    extraCommands = ''
      mkdir etc
      echo 'root:x:0:0::/root:/bin/sh' > etc/passwd
      echo 'root:x:0:' > etc/group
    '';
    fakeRootCommands = ''
      mkdir /bin
      for f in ${coreutils}/bin/*; do ln -s "$f" /bin/; done
      echo 'app:x:12345:12345::/home/app:/bin/sh' >> /etc/passwd
      echo 'app:x:12345:' >> /etc/group
      mkdir -p /home/app
      chown 12345:12345 /home/app
    '';
    config.Cmd = [
      (writeShellScript "fakechroot-check" ''
        echo "passwd: $(/bin/tail -1 /etc/passwd)"
        echo "home: $(/bin/stat -c %U:%G:%u:%g /home/app)"
        echo "bin: $(/bin/readlink /bin/cat)"
      '')
    ];
  };

  # More than 100 store paths: the default maxLayers = 100 is reached (99 store layers, and
  # no customisation layer since there are no contents).
  many-paths = buildLayeredImage {
    name = "many-paths";
    tag = "latest";
    config.Cmd = [
      (writeShellScript "count-store-paths" ''
        # ${manyRoot}
        echo "store paths: $(${coreutils}/bin/ls /nix/store | ${coreutils}/bin/wc -l)"
      '')
    ];
  };
}
