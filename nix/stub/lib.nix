# A small stand-in for nixpkgs' `lib`, for checking this repository's Nix files on a machine that
# has Nix but no nixpkgs (tests/flake_test.ts). It is NOT nixpkgs and proves less:
#
# - the functions below exist with nixpkgs' names and arguments, and do what nixpkgs' do for the
#   values used here (escapeShellArg quotes like nixpkgs >= 24.05; getExe reads meta.mainProgram);
# - `evalModules` is a toy module system: it collects `imports`, calls modules with
#   { config, lib, pkgs, ... }, checks each definition against its option's type (the check
#   functions below), applies mkIf / mkDefault / mkForce and option defaults, concatenates lists,
#   and merges undeclared attribute sets ("free-form", as NixOS's systemd.* options behave for the
#   values used here). It does not reproduce nixpkgs' merge rules, submodules, assertions,
#   warnings, or anything NixOS generates from the config (unit files, /etc).
#
# Anything used here that nixpkgs' lib lacks would be a real bug; anything nixpkgs does that this
# stub does not is left unverified (see runbook/install.md, "What was verified where").
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elemAt
    filter
    foldl'
    genList
    head
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    match
    replaceStrings
    stringLength
    substring
    tail
    ;

  isDerivation = x: isAttrs x && (x.type or null) == "derivation";
  isStringLike = x: isString x || isPath x || (isAttrs x && (x ? outPath || x ? __toString));
  take = n: list: genList (i: elemAt list i) (if n < length list then n else length list);
  unique = foldl' (acc: x: if any (y: y == x) acc then acc else acc ++ [ x ]) [ ];
  showPath = path: concatStringsSep "." path;
  genAttrs =
    names: f:
    listToAttrs (
      map (n: {
        name = n;
        value = f n;
      }) names
    );

  mkType =
    name: check: extra:
    {
      _type = "stubType";
      inherit name check;
    }
    // extra;

  types = {
    bool = mkType "bool" isBool { };
    int = mkType "int" isInt { };
    str = mkType "str" isString { };
    lines = mkType "lines" isString { merge = "lines"; };
    path = mkType "path" (x: isStringLike x && substring 0 1 "${x}" == "/") { };
    package = mkType "package" isDerivation { };
    listOf = t: mkType "list of ${t.name}" (x: isList x && all t.check x) { merge = "concat"; };
    attrsOf = t: mkType "attribute set of ${t.name}" (x: isAttrs x && all (n: t.check x.${n}) (attrNames x)) { };
    nullOr = t: mkType "null or ${t.name}" (x: x == null || t.check x) { };
    either = a: b: mkType "${a.name} or ${b.name}" (x: a.check x || b.check x) { };
    enum = values: mkType "one of ${concatStringsSep ", " (map toString values)}" (x: any (v: v == x) values) { };
  };

  mkOption = attrs: attrs // { _type = "option"; };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };

  # nixpkgs >= 24.05: a string of safe characters is left as it is, anything else single-quoted.
  escapeShellArg =
    arg:
    let
      s = toString arg;
    in
    if match "[[:alnum:],._+:@%/-]+" s != null then s else "'${replaceStrings [ "'" ] [ "'\\''" ] s}'";

  # ---- the toy module system --------------------------------------------------------------

  evalModules =
    {
      modules,
      specialArgs ? { },
      # Paths where undeclared definitions are fine (NixOS's many other options); anywhere else
      # beside a declared option, an undeclared name is an error, as in nixpkgs.
      freeform ? [ [ ] ],
    }:
    let
      load = m: if isPath m || isString m then import m else m;
      call =
        m:
        let
          v = load m;
        in
        if isFunction v then v ({ inherit config lib; } // specialArgs) else v;
      collect = ms: concatMap (m: let r = call m; in [ r ] ++ collect (r.imports or [ ])) ms;
      loaded = collect modules;

      # What a module defines: its `config`, or everything but imports/options when it has neither.
      definitionsOf =
        m:
        if m ? config || m ? options then
          m.config or { }
        else
          removeAttrs m [
            "imports"
            "options"
            "_file"
            "key"
          ];

      declarationsIn =
        prefix: attrs:
        concatMap (
          n:
          let
            v = attrs.${n};
          in
          if (v._type or null) == "option" then
            [
              {
                path = prefix ++ [ n ];
                option = v;
              }
            ]
          else if isAttrs v then
            declarationsIn (prefix ++ [ n ]) v
          else
            throw "stub evalModules: options.${showPath (prefix ++ [ n ])} is not an option"
        ) (attrNames attrs);
      declarations = concatMap (m: declarationsIn [ ] (m.options or { })) loaded;
      optionAt =
        path:
        let
          found = filter (d: d.path == path) declarations;
        in
        if found == [ ] then null else (head found).option;

      # The definitions at `path` inside one definition, with mkIf/mkOverride pushed down to them
      # (their conditions are evaluated only when a value or the names of an attribute set are
      # needed, as in nixpkgs).
      at =
        path: def:
        let
          kind = def._type or null;
        in
        if kind == "if" then
          map (d: {
            _type = "if";
            condition = def.condition;
            content = d;
          }) (at path def.content)
        else if kind == "override" then
          map (mkOverride def.priority) (at path def.content)
        else if path == [ ] then
          [ def ]
        else if isAttrs def && !isDerivation def && def ? ${head path} then
          at (tail path) def.${head path}
        else
          [ ];

      # Evaluates conditions: [] when a condition is false, else [{ priority, value }].
      resolve =
        priority: def:
        let
          kind = def._type or null;
        in
        if kind == "if" then
          (if def.condition then resolve priority def.content else [ ])
        else if kind == "override" then
          resolve def.priority def.content
        else
          [
            {
              inherit priority;
              value = def;
            }
          ];

      definitionsAt = path: concatMap (resolve 100) (concatMap (m: at path (definitionsOf m)) loaded);

      winners =
        defs:
        let
          best = foldl' (p: d: if d.priority < p then d.priority else p) 9999 defs;
        in
        map (d: d.value) (filter (d: d.priority == best) defs);

      optionValue =
        path: option:
        let
          values = winners (definitionsAt path);
          merge = option.type.merge or "unique";
          bad = filter (v: !(option.type.check v)) values;
          value =
            if bad != [ ] then
              throw "stub evalModules: option ${showPath path} is not of type ${option.type.name}"
            else if values == [ ] then
              option.default or (throw "stub evalModules: option ${showPath path} is used but not defined")
            else if merge == "concat" then
              concatLists values
            else if merge == "lines" then
              concatStringsSep "\n" values
            else if all (v: v == head values) values then
              head values
            else
              throw "stub evalModules: option ${showPath path} has conflicting definitions";
        in
        if option.type.check value then
          value
        else
          throw "stub evalModules: option ${showPath path} is not of type ${option.type.name}";

      # Strips mkIf/mkOverride without evaluating conditions (for the names of a namespace).
      strip =
        def:
        if (def._type or null) == "if" || (def._type or null) == "override" then
          strip def.content
        else
          def;
      isPlainAttrs = v: isAttrs v && !isDerivation v;

      build =
        path:
        let
          option = optionAt path;
          pushed = concatMap (m: at path (definitionsOf m)) loaded;
          below = filter (
            d: length d.path > length path && take (length path) d.path == path
          ) declarations;
          values = winners (definitionsAt path);
          namesOf = vs: concatMap (v: if isPlainAttrs v then attrNames v else [ ]) vs;
        in
        if option != null then
          optionValue path option
        # A namespace of options (the root, services, systemd): its names are known without
        # evaluating any condition, as in nixpkgs, so modules may read config to decide.
        else if below != [ ] then
          let
            declared = unique (map (d: elemAt d.path (length path)) below);
            names = unique (namesOf (map strip pushed) ++ declared);
            # As in nixpkgs, a name nothing declares is an error at any depth (thresholds.fre.warning
            # as much as thresholds.load.warnin), except where `freeform` allows it.
            strict = !(any (f: f == path) freeform);
            unknown = filter (n: !(any (d: d == n) declared)) names;
          in
          if strict && unknown != [ ] then
            throw "stub evalModules: the option `${showPath (path ++ [ (head unknown) ])}' does not exist"
          else
            genAttrs names (n: build (path ++ [ n ]))
        # An undeclared value (like systemd.services): conditions decide what is in it.
        else if values == [ ] then
          (
            if pushed == [ ] then
              throw "stub evalModules: ${showPath path} is neither declared nor defined"
            else if all (d: isList (strip d)) pushed then
              [ ]
            else
              { }
          )
        else if all isList values then
          concatLists values
        else if all isPlainAttrs values then
          # A name whose every definition sits under a false mkIf is not there (nixpkgs' attrsOf).
          genAttrs (filter (n: definitionsAt (path ++ [ n ]) != [ ]) (unique (namesOf values))) (
            n: build (path ++ [ n ])
          )
        else if all (v: v == head values) values then
          head values
        else
          throw "stub evalModules: ${showPath path} has conflicting definitions";

      config = build [ ];
    in
    {
      inherit config;
      options = declarations;
    };

  lib = {
    inherit
      types
      mkOption
      mkOverride
      escapeShellArg
      evalModules
      genAttrs
      isDerivation
      ;
    mkEnableOption =
      name:
      mkOption {
        type = types.bool;
        default = false;
        description = "Whether to enable ${name}.";
      };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalAttrs = cond: attrs: if cond then attrs else { };
    escapeShellArgs = args: concatStringsSep " " (map escapeShellArg args);
    concatStringsSep = concatStringsSep;
    replaceStrings = replaceStrings;
    hasInfix =
      infix: s:
      stringLength infix <= stringLength s
      && any (i: substring i (stringLength infix) s == infix) (
        genList (i: i) (stringLength s - stringLength infix + 1)
      );
    getExe = drv: "${drv}/bin/${drv.meta.mainProgram or drv.pname or drv.name}";
    assertMsg = pred: msg: pred || throw msg;
    trivial.release = "stub";
    fileset = {
      unions = list: {
        _type = "fileset";
        members = list;
      };
      toSource =
        { root, fileset }:
        # nixpkgs refuses members that do not exist or lie outside root; so does the stub.
        assert (fileset._type or null) == "fileset";
        assert all (
          p:
          isPath p
          && builtins.pathExists p
          && substring 0 (stringLength "${toString root}/") "${toString p}" == "${toString root}/"
        ) fileset.members
          || throw "stub lib.fileset.toSource: a member is missing or outside ${toString root}";
        "/nix/store/00000000000000000000000000000000-source";
    };
  };
in
lib
