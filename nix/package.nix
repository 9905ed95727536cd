# The reverberator package: every binary of the workspace, plus the man pages and shell
# completions kept under packaging/ (generated from the clap definitions).
{
  lib,
  rustPlatform,
  installShellFiles,
}:
let
  cargoToml = lib.importTOML ../Cargo.toml;
  # The programs of SPEC §7; the build fails if one is missing.
  binaries = [
    "reverberator"
    "reverb-watch"
    "reverb-mountwatch"
    "reverb-snap"
    "reverb-retire"
    "reverb-index"
    "reverb-restore"
  ];
in
rustPlatform.buildRustPackage {
  pname = "reverberator";
  inherit (cargoToml.workspace.package) version;

  src = lib.cleanSourceWith {
    src = ../.;
    filter =
      path: type:
      let
        base = baseNameOf path;
      in
      !(builtins.elem base [
        "target"
        "result"
        ".git"
      ])
      && lib.cleanSourceFilter path type;
  };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--workspace" ];
  # Unit tests only: the cross-binary tests want root, loop devices and several filesystems,
  # which the build sandbox does not have (CI and the NixOS VM test cover them).
  cargoTestFlags = [
    "--workspace"
    "--lib"
  ];

  nativeBuildInputs = [ installShellFiles ];

  postInstall = ''
    for b in ${lib.concatStringsSep " " binaries}; do
      if [ ! -x "$out/bin/$b" ]; then
        echo "reverberator: binary $b was not built" >&2
        exit 1
      fi
    done
    if [ -d packaging/man ]; then
      installManPage packaging/man/*.[1-8]
    fi
    if [ -d packaging/completions ]; then
      for f in packaging/completions/*.bash; do
        [ -e "$f" ] && installShellCompletion --bash "$f"
      done
      for f in packaging/completions/*.fish; do
        [ -e "$f" ] && installShellCompletion --fish "$f"
      done
      for f in packaging/completions/_*; do
        [ -e "$f" ] && installShellCompletion --zsh "$f"
      done
    fi
  '';

  passthru = { inherit binaries; };

  meta = {
    description = "Continuous, versioned backup of folders into plain browsable directories";
    homepage = cargoToml.workspace.package.repository;
    license = with lib.licenses; [
      mit
      asl20
    ];
    platforms = lib.platforms.linux;
    mainProgram = "reverberator";
  };
}
