{
  description = "reverberator: continuous, versioned backup of folders into plain browsable directories";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: _prev: {
        reverberator = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (
        pkgs:
        let
          reverberator = pkgs.callPackage ./nix/package.nix { };
        in
        {
          default = reverberator;
          inherit reverberator;
          oci = pkgs.callPackage ./nix/oci.nix { inherit reverberator; };
        }
      );

      # The module, with its package defaulting to this flake's build for the host's pkgs.
      nixosModules.default =
        { pkgs, lib, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.reverberator.package = lib.mkDefault (self.overlays.default pkgs pkgs).reverberator;
        };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [
            cargo
            rustc
            rustfmt
            clippy
            rust-analyzer
            rsync
            inotify-tools
            btrfs-progs
            xfsprogs
            e2fsprogs
            acl
            attr
            util-linux
            nixfmt-rfc-style
          ];
        };
      });

      checks.x86_64-linux =
        let
          pkgs = nixpkgs.legacyPackages.x86_64-linux;
        in
        {
          package = self.packages.x86_64-linux.default;
          # The module's options and assertions, evaluated with lib alone.
          module-eval = pkgs.runCommand "reverberator-module-eval" { } ''
            echo ${lib.escapeShellArg (import ./nix/eval-test.nix { inherit lib; })} > $out
          '';
          vm = import ./nix/vm-test.nix {
            inherit pkgs;
            module = self.nixosModules.default;
          };
        };

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
