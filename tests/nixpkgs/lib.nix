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

    # lib/trivial.nix: functions and functors (`{ __functor; __functionArgs; }`) alike
    isFunction = f: builtins.isFunction f || (f ? __functor && lib.isFunction (f.__functor f));
    functionArgs = f:
      if f ? __functor then f.__functionArgs or (lib.functionArgs (f.__functor f))
      else builtins.functionArgs f;
    setFunctionArgs = f: args: { __functor = self: f; __functionArgs = args; };
    mirrorFunctionArgs = f: g: lib.setFunctionArgs g (lib.functionArgs f);

    # lib/customisation.nix: `f args` with `.override newArgs` (a set, or a function of the
    # old arguments) re-calling f with the arguments updated. The real one also adds
    # overrideDerivation/overrideAttrs; nothing here uses them.
    makeOverridable = f:
      lib.mirrorFunctionArgs f (origArgs:
        let
          result = f origArgs;
          override = lib.mirrorFunctionArgs f (newArgs: lib.makeOverridable f
            (origArgs // (if lib.isFunction newArgs then newArgs origArgs else newArgs)));
        in
        if builtins.isAttrs result then result // { inherit override; }
        else if lib.isFunction result then lib.setFunctionArgs result (lib.functionArgs result) // { inherit override; }
        else result);

    # lib/licenses.nix (only what we use)
    licenses.mit = { spdxId = "MIT"; shortName = "mit"; fullName = "MIT License"; free = true; };
  };
in lib
