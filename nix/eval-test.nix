# Evaluates nix/module.nix with `lib.evalModules` alone (no pkgs, no NixOS, no build) and
# checks its defaults, the generated TOML data and its assertions. Runs in seconds:
#
#   nix-instantiate --eval --strict -E 'import ./nix/eval-test.nix { }' -I nixpkgs=/path/to/nixpkgs
#   nix-instantiate --eval --strict -E 'import ./nix/eval-test.nix { lib = import <nixpkgs/lib>; }'
#
# It returns "ok: N cases" or fails listing every broken case. The flake runs it as
# checks.<system>.module-eval.
{
  lib ? import <nixpkgs/lib>,
}:
let
  # The few NixOS options the module defines values for, declared loosely: never read here.
  stubs =
    { lib, ... }:
    {
      options = {
        assertions = lib.mkOption {
          type = lib.types.listOf lib.types.unspecified;
          default = [ ];
        };
        environment = lib.mkOption {
          type = lib.types.anything;
          default = { };
        };
        systemd = lib.mkOption {
          type = lib.types.anything;
          default = { };
        };
        networking = lib.mkOption {
          type = lib.types.anything;
          default = { };
        };
      };
    };

  eval =
    cfg:
    (lib.evalModules {
      modules = [
        ./module.nix
        stubs
        { services.reverberator = { enable = true; } // cfg; }
      ];
    }).config;

  failedMessages = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);

  # A case passes when every expected fragment is in some failed assertion, and nothing
  # fails when none is expected.
  expectAssertions =
    name: cfg: fragments:
    let
      msgs = failedMessages (eval cfg);
      all = lib.concatStringsSep "\n" msgs;
      missing = builtins.filter (f: !lib.hasInfix f all) fragments;
    in
    if fragments == [ ] && msgs != [ ] then
      [ "${name}: unexpected assertion failures:\n${all}" ]
    else if missing != [ ] then
      [ "${name}: no assertion mentions ${builtins.toJSON missing}; got:\n${all}" ]
    else
      [ ];

  expectEq =
    name: actual: expected:
    if actual == expected then
      [ ]
    else
      [ "${name}: expected ${builtins.toJSON expected}, got ${builtins.toJSON actual}" ];

  # A type error in an option is a module-system throw, caught here.
  expectEvalError =
    name: cfg:
    let
      r = builtins.tryEval (builtins.deepSeq (eval cfg).services.reverberator.finalSettings true);
    in
    if r.success then [ "${name}: evaluated, but should have been a type error" ] else [ ];

  good = {
    defaults = {
      vault = "/mnt/backup/vault";
      keep_versions = 5;
    };
    jobs.docs = {
      source = "/home/alice/Documents";
      min_snapshot_time = "1m";
    };
    jobs.code = {
      source = "/home/alice/src";
      vault = "/srv/fast";
      keep_versions = 7;
      vault_size_limit = "2GiB";
    };
    settings.jobs.docs.exclude = [ "*.tmp" ];
  };
  goodToml = (eval good).services.reverberator.finalSettings;
  bare =
    (eval {
      jobs.a = {
        source = "/a";
        vault = "/v";
      };
    }).services.reverberator.finalSettings;

  checks = [
    (expectAssertions "good config" good [ ])
    (expectEq "docs resolved" goodToml.jobs.docs {
      source = "/home/alice/Documents";
      vault = "/mnt/backup/vault";
      min_snapshot_time = "1m";
      max_snapshot_delay = "10m";
      keep_complete = true;
      only_sync_attributes = true;
      keep_versions = 5;
      keep_within = "1h";
      keep_hourly = 24;
      keep_daily = 14;
      keep_weekly = 8;
      keep_monthly = 12;
      keep_yearly = 0;
      exclude = [ "*.tmp" ];
      max_delete_ratio = 0.5;
      checksums = true;
      stop_timeout = "60s";
      hook_timeout = "30s";
      one_file_system = true;
      replicate_to = [ ];
    })
    (expectEq "code overrides defaults" goodToml.jobs.code.keep_versions 7)
    (expectEq "replicas are written as given"
      (
        let
          j =
            (eval {
              jobs.a = {
                source = "/a";
                vault = "/v";
                replicate_to = [
                  "ssh://backup@nas/srv/vault"
                  "/mnt/offsite"
                ];
                replicate_identity = "/etc/reverberator/key";
              };
            }).services.reverberator.finalSettings.jobs.a;
        in
        {
          inherit (j) replicate_to replicate_identity;
        }
      )
      {
        replicate_to = [
          "ssh://backup@nas/srv/vault"
          "/mnt/offsite"
        ];
        replicate_identity = "/etc/reverberator/key";
      }
    )
    (expectEq "a replica over ssh opens the network, a local one is writable"
      (
        let
          sc =
            (eval {
              jobs.a = {
                source = "/a";
                vault = "/v";
                replicate_to = [
                  "ssh://nas/srv/vault"
                  "/mnt/offsite"
                ];
              };
            }).systemd.services.reverberator.serviceConfig;
        in
        {
          inherit (sc) IPAddressDeny ReadWritePaths;
        }
      )
      {
        IPAddressDeny = "";
        ReadWritePaths = [
          "-/v"
          "-/mnt/offsite"
        ];
      }
    )
    (expectAssertions "a relative replica is refused" {
      jobs.a = {
        source = "/a";
        vault = "/v";
        replicate_to = [ "nas:/srv/vault" ];
      };
    } [ "neither an absolute path nor ssh://" ])
    (expectEq "hooks are written as given"
      (eval {
        jobs.a = {
          source = "/a";
          vault = "/v";
          on_failure = [
            "notify-send"
            "backup failed"
          ];
          ping_url = "https://hc.example/x";
        };
      }).services.reverberator.finalSettings.jobs.a.on_failure
      [
        "notify-send"
        "backup failed"
      ])
    (expectEq "the web service keeps its token in its state directory"
      (
        let
          sc = (eval (good // { web.enable = true; })).systemd.services.reverberator-web.serviceConfig;
        in
        {
          inherit (sc) StateDirectory StateDirectoryMode;
        }
      )
      {
        StateDirectory = "reverberator-web";
        StateDirectoryMode = "0700";
      }
    )
    (expectEq "code vault" goodToml.jobs.code.vault "/srv/fast")
    (expectEq "size limit kept" goodToml.jobs.code.vault_size_limit "2GiB")
    (expectEq "builtin defaults" bare.jobs.a {
        source = "/a";
        vault = "/v";
        min_snapshot_time = "30s";
        max_snapshot_delay = "10m";
        keep_complete = true;
        only_sync_attributes = true;
        keep_versions = 100;
        keep_within = "1h";
        keep_hourly = 24;
        keep_daily = 14;
        keep_weekly = 8;
        keep_monthly = 12;
        keep_yearly = 0;
        exclude = [ ];
        max_delete_ratio = 0.5;
        checksums = true;
        stop_timeout = "60s";
        hook_timeout = "30s";
        one_file_system = true;
        replicate_to = [ ];
    })
    (expectEq "retention rules from defaults and the job"
      (eval {
        defaults.keep_daily = 30;
        jobs.a = {
          source = "/a";
          vault = "/v";
          keep_within = "7d";
          keep_yearly = 3;
        };
      }).services.reverberator.finalSettings.jobs.a.keep_daily
      30)
    (expectEq "the service is Type=notify with a watchdog"
      (
        let
          sc = (eval good).systemd.services.reverberator.serviceConfig;
        in
        {
          inherit (sc) Type NotifyAccess WatchdogSec RuntimeDirectory;
        }
      )
      {
        Type = "notify";
        NotifyAccess = "main";
        WatchdogSec = "5min";
        RuntimeDirectory = "reverberator";
      }
    )
    (expectAssertions "relative source" {
      jobs.a = {
        source = "data";
        vault = "/v";
      };
    } [ "jobs.\"a\".source must be an absolute path" ])
    (expectAssertions "relative vault" {
      jobs.a = {
        source = "/data";
        vault = "v";
      };
    } [ "jobs.\"a\".vault must be an absolute path" ])
    (expectAssertions "relative default vault" {
      defaults.vault = "v";
    } [ "defaults.vault must be an absolute path" ])
    (expectAssertions "no vault" { jobs.a.source = "/data"; } [ "jobs.\"a\".vault is not set" ])
    (expectAssertions "vault inside source" {
      jobs.a = {
        source = "/srv/data/";
        vault = "/srv//data/./x/../vault";
      };
    } [ "is inside the source" ])
    (expectAssertions "vault is the source" {
      jobs.a = {
        source = "/srv/data";
        vault = "/srv/data/";
      };
    } [ "is inside the source" ])
    (expectAssertions "source inside vault" {
      jobs.a = {
        source = "/mnt/vault/data";
        vault = "/mnt/vault";
      };
    } [ "source /mnt/vault/data is inside the vault" ])
    (expectAssertions "root source holds every vault" {
      jobs.a = {
        source = "/";
        vault = "/mnt/vault";
      };
    } [ "is inside the source" ])
    (expectAssertions "sibling with a common prefix is fine" {
      jobs.a = {
        source = "/srv/data";
        vault = "/srv/data-vault";
      };
    } [ ])
    (expectAssertions "names sharing a folder" {
      defaults.vault = "/v";
      jobs."my docs".source = "/a";
      jobs.my_docs.source = "/b";
    } [ "\"my docs\" and \"my_docs\" sanitize to the same folder \"my_docs\"" ])
    (expectAssertions "same folder, different vaults" {
      jobs."my docs" = {
        source = "/a";
        vault = "/v1";
      };
      jobs.my_docs = {
        source = "/b";
        vault = "/v2";
      };
    } [ ])
    (expectAssertions "name that is no folder" {
      jobs.".." = {
        source = "/a";
        vault = "/v";
      };
    } [ "sanitizes to \"..\"" ])
    (expectEvalError "negative keep_versions" {
      jobs.a = {
        source = "/a";
        vault = "/v";
        keep_versions = -1;
      };
    })
    (expectEvalError "negative keep_hourly" {
      jobs.a = {
        source = "/a";
        vault = "/v";
        keep_hourly = -1;
      };
    })
    (expectEvalError "non-integer keep_daily" {
      jobs.a = {
        source = "/a";
        vault = "/v";
        keep_daily = 1.5;
      };
    })
    (expectEvalError "keep_within must be a string" {
      jobs.a = {
        source = "/a";
        vault = "/v";
        keep_within = 3600;
      };
    })
    (expectEvalError "ratio out of range" {
      jobs.a = {
        source = "/a";
        vault = "/v";
        max_delete_ratio = 1.5;
      };
    })
    (expectEvalError "duration must be a string" {
      jobs.a = {
        source = "/a";
        vault = "/v";
        min_snapshot_time = 30;
      };
    })
  ];
  cases = lib.concatLists checks;
in
if cases == [ ] then
  "ok: ${toString (builtins.length checks)} cases"
else
  throw (lib.concatStringsSep "\n" cases)
