# NixOS module: services.reverberator (docs/configuration.md, docs/design.md#the-supervisor, docs/install.md).
#
# Owns: the options, the generated /etc/reverberator/config.toml, the hardened
# `reverberator` service and the optional `reverberator-retire` timer.
#
# Invariants:
# - Every job setting of docs/configuration.md is a typed option whose default is JobSettings::default()
#   (common/src/settings.rs), through `services.reverberator.defaults`, so a job that sets
#   nothing gets exactly what the tool would give it.
# - The options and the assertions need nothing but `lib`: `pkgs` is only used inside
#   `config`, lazily, so `lib.evalModules` can evaluate them alone (nix/eval-test.nix).
# - The assertions check what can be seen at evaluation time (absolute paths, a vault inside
#   a source or the reverse, two names sharing one folder of one vault). The tool checks the
#   rest (existing sources, symlinks, durations) when the service starts.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    types
    literalExpression
    ;
  cfg = config.services.reverberator;

  # JobSettings::default() in common/src/settings.rs.
  builtinDefaults = {
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
    vault_size_limit = null;
    exclude = [ ];
    max_delete_ratio = 0.5;
    checksums = true;
    stop_timeout = "60s";
    on_version = null;
    on_failure = null;
    on_recovery = null;
    ping_url = null;
    hook_timeout = "30s";
    one_file_system = true;
    vault_group = null;
    replicate_to = [ ];
    replicate_ssh = null;
    replicate_identity = null;
  };
  settingNames = builtins.attrNames builtinDefaults;

  # The typed options of every job setting; `dflt` gives each default and `dfltText` its
  # documentation.
  settingOptions = dflt: dfltText: {
    min_snapshot_time = mkOption {
      type = types.str;
      default = dflt.min_snapshot_time;
      defaultText = dfltText "min_snapshot_time";
      example = "1m";
      description = "Quiet period before a version is taken (humantime: `500ms`, `30s`, `10m`, `1h 30m`).";
    };
    max_snapshot_delay = mkOption {
      type = types.str;
      default = dflt.max_snapshot_delay;
      defaultText = dfltText "max_snapshot_delay";
      example = "1h";
      description = "Under constant change, a version at least this often. Not shorter than `min_snapshot_time`.";
    };
    keep_complete = mkOption {
      type = types.bool;
      default = dflt.keep_complete;
      defaultText = dfltText "keep_complete";
      description = ''
        The first version is a complete copy of the source. With `false` the first version
        holds nothing and later versions hold only what changed since the job started: a
        history of changes, not a backup.
      '';
    };
    only_sync_attributes = mkOption {
      type = types.bool;
      default = dflt.only_sync_attributes;
      defaultText = dfltText "only_sync_attributes";
      description = "An attribute-only change copies the vault's previous data with the new attributes instead of the source's data.";
    };
    keep_versions = mkOption {
      type = types.ints.unsigned;
      default = dflt.keep_versions;
      defaultText = dfltText "keep_versions";
      description = "Keep the newest N versions (0 = this rule keeps none). A version is kept when any `keep_*` rule keeps it; when every rule is 0 nothing is retired by count or time.";
    };
    keep_within = mkOption {
      type = types.str;
      default = dflt.keep_within;
      defaultText = dfltText "keep_within";
      example = "7d";
      description = "Keep every version younger than this (humantime: `90m`, `7d`; `0s` = this rule keeps none).";
    };
    keep_hourly = mkOption {
      type = types.ints.unsigned;
      default = dflt.keep_hourly;
      defaultText = dfltText "keep_hourly";
      description = "Keep the newest version of each of the last N hours that have one, in the host's local time (0 = this rule keeps none).";
    };
    keep_daily = mkOption {
      type = types.ints.unsigned;
      default = dflt.keep_daily;
      defaultText = dfltText "keep_daily";
      description = "Keep the newest version of each of the last N days that have one, in the host's local time (0 = this rule keeps none).";
    };
    keep_weekly = mkOption {
      type = types.ints.unsigned;
      default = dflt.keep_weekly;
      defaultText = dfltText "keep_weekly";
      description = "Keep the newest version of each of the last N ISO weeks that have one, in the host's local time (0 = this rule keeps none).";
    };
    keep_monthly = mkOption {
      type = types.ints.unsigned;
      default = dflt.keep_monthly;
      defaultText = dfltText "keep_monthly";
      description = "Keep the newest version of each of the last N months that have one, in the host's local time (0 = this rule keeps none).";
    };
    keep_yearly = mkOption {
      type = types.ints.unsigned;
      default = dflt.keep_yearly;
      defaultText = dfltText "keep_yearly";
      description = "Keep the newest version of each of the last N years that have one, in the host's local time (0 = this rule keeps none).";
    };
    vault_size_limit = mkOption {
      type = types.nullOr (types.either types.str types.ints.unsigned);
      default = dflt.vault_size_limit;
      defaultText = dfltText "vault_size_limit";
      example = "50GiB";
      description = "After the `keep_*` rules, retire the oldest versions while the job's folder is larger than this; never when the newest version alone is larger (the job then fails with `size limit unmeetable`). Bytes, or `K`/`KiB`…`TiB` powers of 1024, `kB`…`TB` powers of 1000; `null` = no limit.";
    };
    exclude = mkOption {
      type = types.listOf types.str;
      default = dflt.exclude;
      defaultText = dfltText "exclude";
      example = [
        "*.swp"
        ".cache/"
      ];
      description = "gitignore-style patterns, relative to the source.";
    };
    max_delete_ratio = mkOption {
      type = types.numbers.between 0 1;
      default = dflt.max_delete_ratio;
      defaultText = dfltText "max_delete_ratio";
      description = "A rescan deleting more than this share of the current version's files makes no version unless forced (an emptied source is more often an unmounted disk).";
    };
    checksums = mkOption {
      type = types.bool;
      default = dflt.checksums;
      defaultText = dfltText "checksums";
      description = "Record the BLAKE3 of every file a version copies (checked by `verify --data` and by restores).";
    };
    stop_timeout = mkOption {
      type = types.str;
      default = dflt.stop_timeout;
      defaultText = dfltText "stop_timeout";
      example = "30s";
      description = "On stop, how long the job may take its last version of the changes still pending (keep it below TimeoutStopSec).";
    };
    on_version = mkOption {
      type = types.nullOr (types.either types.str (types.listOf types.str));
      default = dflt.on_version;
      defaultText = dfltText "on_version";
      example = [
        "notify-send"
        "reverberator"
      ];
      description = ''
        A command the supervisor runs after each new version: a list (program and arguments) or one string
        split into words without a shell (write `[ "sh" "-c" "…" ]` for a shell). Its
        environment has `REVERB_JOB`, `REVERB_VERSION`, `REVERB_STATE`, `REVERB_MESSAGE`. A
        hook that fails or times out is journaled and the job goes on. It runs inside the
        supervisor's sandbox (read-only system and home).
      '';
    };
    on_failure = mkOption {
      type = types.nullOr (types.either types.str (types.listOf types.str));
      default = dflt.on_failure;
      defaultText = dfltText "on_failure";
      example = [
        "notify-send"
        "reverberator"
      ];
      description = ''
        A command the supervisor runs when the job starts failing (once per distinct failure): a list (program and arguments) or one string
        split into words without a shell (write `[ "sh" "-c" "…" ]` for a shell). Its
        environment has `REVERB_JOB`, `REVERB_VERSION`, `REVERB_STATE`, `REVERB_MESSAGE`. A
        hook that fails or times out is journaled and the job goes on. It runs inside the
        supervisor's sandbox (read-only system and home).
      '';
    };
    on_recovery = mkOption {
      type = types.nullOr (types.either types.str (types.listOf types.str));
      default = dflt.on_recovery;
      defaultText = dfltText "on_recovery";
      example = [
        "notify-send"
        "reverberator"
      ];
      description = ''
        A command the supervisor runs when a failing job works again: a list (program and arguments) or one string
        split into words without a shell (write `[ "sh" "-c" "…" ]` for a shell). Its
        environment has `REVERB_JOB`, `REVERB_VERSION`, `REVERB_STATE`, `REVERB_MESSAGE`. A
        hook that fails or times out is journaled and the job goes on. It runs inside the
        supervisor's sandbox (read-only system and home).
      '';
    };
    ping_url = mkOption {
      type = types.nullOr types.str;
      default = dflt.ping_url;
      defaultText = dfltText "ping_url";
      example = "https://hc-ping.com/your-uuid";
      description = "A healthchecks-style URL: `GET URL` after a version and a recovery, `GET URL/fail` on a failure. Setting it lets the supervisor's service reach the network.";
    };
    hook_timeout = mkOption {
      type = types.str;
      default = dflt.hook_timeout;
      defaultText = dfltText "hook_timeout";
      description = "How long a hook or a ping may take before it is stopped.";
    };
    one_file_system = mkOption {
      type = types.bool;
      default = dflt.one_file_system;
      defaultText = dfltText "one_file_system";
      description = "A filesystem mounted below the source is not backed up (as `rsync -x`); the journal and `status` name the mountpoints left out. With `false` it is, including one mounted while the job runs.";
    };
    vault_group = mkOption {
      type = types.nullOr types.str;
      default = dflt.vault_group;
      defaultText = dfltText "vault_group";
      example = "backup-readers";
      description = "Share read access to the job's history with this group (folders 0750, files 0640). `null`: the vault is private to the service's user (folders 0700, files 0600).";
    };
    replicate_to = mkOption {
      type = types.listOf types.str;
      default = dflt.replicate_to;
      defaultText = dfltText "replicate_to";
      example = [
        "ssh://backup@nas.example/srv/vault"
        "/mnt/offsite/vault"
      ];
      description = ''
        Replica vaults (docs/design.md#replication): absolute paths, or
        `ssh://[user@]host[:port]/path` reached with `ssh` running `reverb-receive` there (the
        reverberator package must be installed on that host). The supervisor sends each new
        version to each, in the background, retrying with backoff while one is away. A local
        path is made writable for the service; an ssh one lets it reach the network. The host
        key must be known beforehand (`programs.ssh.knownHosts`): the service's home is
        read-only, so `ssh` cannot record a new one.
      '';
    };
    replicate_ssh = mkOption {
      type = types.nullOr types.str;
      default = dflt.replicate_ssh;
      defaultText = dfltText "replicate_ssh";
      example = literalExpression ''"''${pkgs.openssh}/bin/ssh"'';
      description = "The ssh client for `ssh://` replicas (null: `ssh` from the service's PATH, which has openssh when a job replicates over ssh).";
    };
    replicate_identity = mkOption {
      type = types.nullOr types.str;
      default = dflt.replicate_identity;
      defaultText = dfltText "replicate_identity";
      example = "/etc/reverberator/replica_ed25519";
      description = "The private key `ssh -i` uses for `ssh://` replicas (absolute; null: ssh's own configuration and keys). Keep it readable by root only.";
    };
  };

  builtinText = name: literalExpression (builtins.toJSON builtinDefaults.${name});
  inheritText = name: literalExpression "config.services.reverberator.defaults.${name}";

  jobModule =
    { name, ... }:
    {
      options = {
        source = mkOption {
          type = types.str;
          example = "/home/alice/Documents";
          description = "The monitored directory (absolute). Job `${name}` is stored in the vault folder named after it, sanitized.";
        };
        vault = mkOption {
          type = types.nullOr types.str;
          default = cfg.defaults.vault;
          defaultText = inheritText "vault";
          example = "/mnt/backup/vault";
          description = "The vault directory (absolute).";
        };
      }
      // settingOptions cfg.defaults inheritText;
    };

  # --- pure helpers, also used by the assertions -------------------------------------------

  # Lexically normalized absolute path: no `//`, `.`, `..` or trailing `/`.
  normalize =
    path:
    let
      parts = builtins.filter (p: p != "" && p != ".") (lib.splitString "/" path);
      folded = builtins.foldl' (acc: p: if p == ".." then lib.take (builtins.length acc - 1) acc else acc ++ [ p ]) [ ] parts;
    in
    "/" + lib.concatStringsSep "/" folded;
  # `inner` is `outer` or below it (both normalized).
  within = outer: inner: outer == "/" || inner == outer || lib.hasPrefix (outer + "/") inner;
  isAbsolute = p: p != null && lib.hasPrefix "/" p;

  # docs/configuration.md: keep A-Z a-z 0-9 . _ -, every other character becomes `_`. Nix strings are bytes:
  # a non-ASCII character becomes one `_` per UTF-8 byte here, one `_` in the tool; the tool
  # re-checks at start, so this only misses clashes between non-ASCII names.
  sanitize =
    name:
    lib.concatMapStrings (c: if builtins.match "[A-Za-z0-9._-]" c != null then c else "_") (
      lib.stringToCharacters name
    );

  jobList = lib.mapAttrsToList (name: job: job // { inherit name; }) cfg.jobs;

  jobAssertions = lib.concatMap (
    job:
    let
      what = "services.reverberator.jobs.${builtins.toJSON job.name}";
      bothAbsolute = isAbsolute job.source && isAbsolute job.vault;
      src = normalize job.source;
      vault = normalize job.vault;
      folder = sanitize job.name;
    in
    [
      {
        assertion = isAbsolute job.source;
        message = "${what}.source must be an absolute path, not ${builtins.toJSON job.source}.";
      }
      {
        assertion = job.vault != null;
        message = "${what}.vault is not set (set it, or services.reverberator.defaults.vault).";
      }
      {
        assertion = job.vault == null || isAbsolute job.vault;
        message = "${what}.vault must be an absolute path, not ${builtins.toJSON job.vault}.";
      }
      {
        assertion = !(bothAbsolute && within src vault);
        message = "${what}: the vault ${job.vault} is inside the source ${job.source}.";
      }
      {
        assertion = !(bothAbsolute && within vault src && src != vault);
        message = "${what}: the source ${job.source} is inside the vault ${job.vault}.";
      }
      {
        assertion = folder != "" && folder != "." && folder != "..";
        message = "${what}: the name sanitizes to ${builtins.toJSON folder}, which cannot be a folder.";
      }
    ]
  ) jobList;

  # Jobs grouped by (vault, folder): a group of two or more is a clash.
  clashes = lib.filter (g: builtins.length g > 1) (
    builtins.attrValues (
      builtins.groupBy (job: "${normalize (toString job.vault)}/${sanitize job.name}") (
        builtins.filter (job: isAbsolute job.vault) jobList
      )
    )
  );
  clashAssertions = map (group: {
    assertion = false;
    message =
      "services.reverberator.jobs: ${lib.concatMapStringsSep " and " (j: builtins.toJSON j.name) group}"
      + " sanitize to the same folder ${builtins.toJSON (sanitize (builtins.head group).name)}"
      + " of the vault ${(builtins.head group).vault}; rename one.";
  }) clashes;

  # The TOML document, as data (every job fully resolved; TOML has no null).
  jobToml =
    job:
    lib.filterAttrs (_: v: v != null) (
      {
        inherit (job) source vault;
      }
      // lib.getAttrs settingNames job
    );
  generated = {
    jobs = lib.mapAttrs (_: jobToml) cfg.jobs;
  };

  vaults = lib.unique (
    builtins.filter (v: v != null) (lib.mapAttrsToList (_: job: job.vault) cfg.jobs)
  );
  sources = lib.unique (lib.mapAttrsToList (_: job: job.source) cfg.jobs);

  configPath = "/etc/reverberator/config.toml";

  # Some job pings a URL: the supervisor's service may use the network.
  anyPing = lib.any (job: job.ping_url != null) jobList;
  # Replicas (docs/design.md#replication): over ssh, the service needs ssh and the network;
  # on a path of this host, that path must be writable.
  isSsh = lib.hasPrefix "ssh://";
  anySsh = lib.any (job: lib.any isSsh job.replicate_to) jobList;
  localReplicas = lib.unique (
    lib.concatMap (job: builtins.filter (t: !(isSsh t)) job.replicate_to) jobList
  );
  replicaAssertions = lib.concatMap (
    job:
    map (t: {
      assertion = isSsh t || isAbsolute t;
      message = "services.reverberator.jobs.${builtins.toJSON job.name}.replicate_to: ${builtins.toJSON t} is neither an absolute path nor ssh://[user@]host[:port]/path.";
    }) job.replicate_to
  ) jobList;
  webPort =
    if lib.hasPrefix "unix:" cfg.web.listen then
      null
    else
      lib.toInt (lib.last (lib.splitString ":" cfg.web.listen));

  hardening = {
    ProtectSystem = "strict";
    ProtectHome = "read-only";
    # `-`: a vault on an unplugged disk must not keep the service from starting; the tool
    # notices the missing vault itself and waits for it (docs/identity.md).
    ReadWritePaths = map (p: "-${p}") vaults;
    ReadOnlyPaths = map (p: "-${p}") sources;
    PrivateTmp = true;
    NoNewPrivileges = true;
    # Not PrivateDevices: filesystem identity reads /dev/disk/by-* and block devices.
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictSUIDSGID = true;
    RestrictRealtime = true;
    RestrictNamespaces = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    SystemCallArchitectures = "native";
    RestrictAddressFamilies = [ "AF_UNIX" ];
    IPAddressDeny = "any";
    # Root, but only the powers a backup needs: read everything, write owners, modes and
    # times, make device nodes and fifos as they were.
    CapabilityBoundingSet = [
      "CAP_DAC_READ_SEARCH"
      "CAP_DAC_OVERRIDE"
      "CAP_CHOWN"
      "CAP_FOWNER"
      "CAP_FSETID"
      "CAP_MKNOD"
    ];
    UMask = "0077";
  };
in
{
  options.services.reverberator = {
    enable = mkEnableOption "reverberator, continuous versioned backup of folders";

    package = mkOption {
      type = types.package;
      default = pkgs.reverberator;
      defaultText = literalExpression "pkgs.reverberator";
      description = "The reverberator package (all binaries).";
    };

    initVaults = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Pass `--init` to `reverberator run`: create a vault (directory and marker) where none
        exists. Leave it off for vaults on removable disks: an unplugged disk leaves an empty
        mountpoint, and a vault started there would fill the root filesystem.
      '';
    };

    defaults = mkOption {
      default = { };
      description = "Defaults for every job: `vault` and every job setting. A job's own value wins.";
      type = types.submodule {
        options = {
          vault = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "/mnt/backup/vault";
            description = "The vault of every job that does not set its own.";
          };
        }
        // settingOptions builtinDefaults builtinText;
      };
    };

    jobs = mkOption {
      type = types.attrsOf (types.submodule jobModule);
      default = { };
      example = literalExpression ''
        {
          documents = { source = "/home/alice/Documents"; vault = "/mnt/backup/vault"; };
          etc = { source = "/etc"; vault = "/srv/vault"; keep_versions = 0; vault_size_limit = "2GiB"; };
        }
      '';
      description = "The jobs, keyed by name (the vault folder is the name sanitized).";
    };

    settings = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      example = {
        jobs.documents.exclude = [ "*.tmp" ];
      };
      description = ''
        Escape hatch: merged (recursively, winning) into the generated TOML, for keys this
        module does not know yet. The tool rejects unknown keys, so this cannot hide a typo.
      '';
    };

    finalSettings = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      internal = true;
      description = "The data written to /etc/reverberator/config.toml.";
    };

    retireTimer = {
      enable = mkEnableOption "a timer running `reverb-retire --vault` on every vault (the supervisor also retires after each version)";
      onCalendar = mkOption {
        type = types.str;
        default = "daily";
        example = "*-*-* 03:30:00";
        description = "When to run, as systemd.time(7) OnCalendar.";
      };
      randomizedDelaySec = mkOption {
        type = types.str;
        default = "30m";
        description = "RandomizedDelaySec of the timer.";
      };
    };

    web = {
      enable = mkEnableOption "`reverb-web`, the history of every job in a browser and `/metrics` (docs/web.md); the URL's token is in /var/lib/reverberator-web/web-token";
      listen = mkOption {
        type = types.str;
        default = "127.0.0.1:8417";
        example = "unix:/run/reverberator-web/web.sock";
        description = "Where `reverb-web` listens: `ADDR:PORT`, or `unix:PATH` (no token there: the socket's mode protects it).";
      };
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the TCP port of `listen` in the firewall. Off: the default listens on 127.0.0.1 only; every request needs the token either way.";
      };
    };

    verifyTimer = {
      enable = mkEnableOption "a timer running `reverb-index --check --data --vault` on every vault (reads every stored file and compares it with its checksum; fails on any problem)";
      onCalendar = mkOption {
        type = types.str;
        default = "monthly";
        description = "When to run, as systemd.time(7) OnCalendar.";
      };
      maxRate = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "50MiB";
        description = "Read at most this many bytes per second (`--max-rate`); null: as fast as the disk allows (at idle I/O priority).";
      };
    };
  };

  config = lib.mkMerge [
    { services.reverberator.finalSettings = lib.recursiveUpdate generated cfg.settings; }
    (mkIf cfg.enable {
      assertions = jobAssertions ++ clashAssertions ++ replicaAssertions ++ [
        {
          assertion = cfg.defaults.vault == null || isAbsolute cfg.defaults.vault;
          message = "services.reverberator.defaults.vault must be an absolute path, not ${builtins.toJSON cfg.defaults.vault}.";
        }
      ];

      environment.systemPackages = [ cfg.package ];
      environment.etc."reverberator/config.toml".source =
        (pkgs.formats.toml { }).generate "reverberator-config.toml" cfg.finalSettings;

      systemd.services.reverberator = {
        description = "reverberator: continuous versioned backup";
        documentation = [ "man:reverberator(1)" ];
        wantedBy = [ "multi-user.target" ];
        after = [
          "local-fs.target"
          "remote-fs.target"
        ];
        # blkid fills in filesystem labels and UUIDs the kernel does not report (docs/identity.md);
        # ssh reaches the replicas on other hosts.
        path = [ pkgs.util-linux ] ++ lib.optional anySsh pkgs.openssh;
        # A changed config is reloaded (SIGHUP), not restarted: no version in progress is cut.
        reloadTriggers = [ config.environment.etc."reverberator/config.toml".source ];
        serviceConfig = hardening // {
          # READY=1 once every job watches (or waits for its disk), STATUS= a one-line
          # summary, WATCHDOG=1 every WatchdogSec / 2 (docs/install.md).
          Type = "notify";
          NotifyAccess = "main";
          WatchdogSec = "5min";
          # A first version of a big source can take hours before READY=1.
          TimeoutStartSec = "infinity";
          # The live state `reverberator status` reads.
          RuntimeDirectory = "reverberator";
          ExecStart = "${cfg.package}/bin/reverberator run --config ${configPath}${lib.optionalString cfg.initVaults " --init"}";
          ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
          Restart = "on-failure";
          RestartSec = "10s";
          # SIGTERM goes to the supervisor alone: it finishes the version in progress, stops
          # its children (each in its own process group) and exits 0. What is left after
          # TimeoutStopSec is killed.
          KillMode = "mixed";
          TimeoutStopSec = "5min";
          Nice = 10;
          IOSchedulingClass = "idle";
        }
        // lib.optionalAttrs (localReplicas != [ ]) {
          ReadWritePaths = map (p: "-${p}") (vaults ++ localReplicas);
        }
        // lib.optionalAttrs (anyPing || anySsh) {
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          IPAddressDeny = "";
        };
      };

      systemd.services.reverberator-web = mkIf cfg.web.enable {
        description = "reverb-web: reverberator's history in a browser";
        documentation = [ "man:reverb-web(1)" ];
        wantedBy = [ "multi-user.target" ];
        after = [
          "local-fs.target"
          "network.target"
        ];
        restartTriggers = [ config.environment.etc."reverberator/config.toml".source ];
        serviceConfig = hardening // {
          Type = "exec";
          ExecStart = "${cfg.package}/bin/reverb-web --config ${configPath} --listen ${lib.escapeShellArg cfg.web.listen} --restore-to /var/lib/reverberator-web/restores";
          # The token (web-token, 0600), made on the first start.
          StateDirectory = "reverberator-web";
          StateDirectoryMode = "0700";
          RuntimeDirectory = "reverberator-web";
          Restart = "on-failure";
          RestartSec = "5s";
          # The vaults' owner is root (the supervisor's), read-only here; restores go to
          # /var/lib/reverberator-web/restores (the form's suggestion) or a path added with
          # ReadWritePaths.
          ReadWritePaths = [ ];
          ReadOnlyPaths = map (p: "-${p}") (vaults ++ sources);
          PrivateDevices = true;
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          IPAddressDeny = "";
          CapabilityBoundingSet = [
            "CAP_DAC_READ_SEARCH"
            "CAP_CHOWN"
            "CAP_FOWNER"
            "CAP_FSETID"
          ];
        };
      };
      networking.firewall.allowedTCPPorts = mkIf (
        cfg.web.enable && cfg.web.openFirewall && webPort != null
      ) [ webPort ];

      systemd.services.reverberator-retire = mkIf cfg.retireTimer.enable {
        description = "reverberator: retire old versions";
        documentation = [ "man:reverb-retire(1)" ];
        after = [ "local-fs.target" ];
        path = [ pkgs.util-linux ];
        serviceConfig = hardening // {
          Type = "oneshot";
          ExecStart = map (v: "${cfg.package}/bin/reverb-retire --vault ${lib.escapeShellArg v}") vaults;
          # 75: the vault is not available (an unplugged disk) or not the filesystem recorded
          # for it; not a failure, and the next vault is still retired. The next run retries.
          SuccessExitStatus = [ 75 ];
          Nice = 19;
          IOSchedulingClass = "idle";
        };
      };
      systemd.services.reverberator-verify = mkIf cfg.verifyTimer.enable {
        description = "reverberator: verify the stored data against its checksums";
        documentation = [ "man:reverb-index(1)" ];
        after = [ "local-fs.target" ];
        serviceConfig = hardening // {
          Type = "oneshot";
          ExecStart = map (
            v:
            "${cfg.package}/bin/reverb-index --vault ${lib.escapeShellArg v} --check --data"
            + lib.optionalString (cfg.verifyTimer.maxRate != null) " --max-rate ${lib.escapeShellArg cfg.verifyTimer.maxRate}"
          ) vaults;
          # 75: the vault is not available (an unplugged disk); the next run retries.
          SuccessExitStatus = [ 75 ];
          Nice = 19;
          IOSchedulingClass = "idle";
        };
      };
      systemd.timers.reverberator-verify = mkIf cfg.verifyTimer.enable {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.verifyTimer.onCalendar;
          RandomizedDelaySec = "1h";
          Persistent = true;
        };
      };
      systemd.timers.reverberator-retire = mkIf cfg.retireTimer.enable {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.retireTimer.onCalendar;
          RandomizedDelaySec = cfg.retireTimer.randomizedDelaySec;
          Persistent = true;
        };
      };
    })
  ];
}
