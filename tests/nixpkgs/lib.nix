# The subset of nixpkgs' `lib` that nix-layers' Nix code (and this stand-in) uses.
# Every function here exists in real nixpkgs with this name and behaviour, and has
# for years; keep it that way (the e2e suite checks we use nothing else).
let
  lib = {
    # lib/asserts.nix
    assertMsg = pred: msg: pred || builtins.throw msg;

    # lib/strings.nix
    toLower = builtins.replaceStrings
      [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
      [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
    makeBinPath = paths: builtins.concatStringsSep ":" (map (p: "${p}/bin") paths);

    # lib/fixed-points.nix
    fix = f: let x = f x; in x;
    extends = overlay: f: final: let prev = f final; in prev // overlay final prev;

    # lib/licenses.nix (only what we use)
    licenses.mit = { spdxId = "MIT"; shortName = "mit"; fullName = "MIT License"; free = true; };
  };
in lib
