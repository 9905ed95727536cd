# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_reverberator_global_optspecs
    string join \n h/help V/version
end

function __fish_reverberator_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_reverberator_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_reverberator_using_subcommand
    set -l cmd (__fish_reverberator_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c reverberator -n "__fish_reverberator_needs_command" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_needs_command" -s V -l version -d 'Print version'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "run" -d 'Watch every configured job (or one folder given with --source and --vault) and take versions'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "status" -d 'Per job: state, last version and its age, pending changes, size against the limit, identity'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "versions" -d 'The versions of a job'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "history" -d 'The versions in which PATH changed (exit 1 when it is in no retained version)'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "find" -d 'Which paths match PATTERN in which retained versions, deleted ones included (exit 1 when none)'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "diff" -d 'Paths added, removed or changed between two versions (numbers, names or `latest`)'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "snap" -d 'Take a version of JOB now (reverb-snap): --force accepts an emptied source, --source NEW --force changes the recorded source'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "replicate" -d 'Send the versions of JOB that a replica lacks, oldest first: to DEST (a vault path, or `ssh://[user@]host[:port]/path` running reverb-receive there), or to every replicate_to of the job'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "verify" -d 'Check every job\'s vault invariants (reverb-index --check on each), and that no folder or record of the vault is readable by more users than configured (vault_group)'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "restore" -d 'Copy a version of JOB, or a path in it, out of the vault to DEST (reverb-restore)'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "check-config" -d 'Load the configuration and print the resolved jobs'
complete -c reverberator -n "__fish_reverberator_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c reverberator -n "__fish_reverberator_using_subcommand run" -l config -d 'The configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand run" -l source -d 'Back up this folder without a configuration file (needs --vault)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand run" -l vault -d 'The vault for --source' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand run" -l job -d 'The job name for --source (default: the folder\'s name; `--name` is an alias)' -r
complete -c reverberator -n "__fish_reverberator_using_subcommand run" -l init -d 'Create missing vaults (directory and marker)'
complete -c reverberator -n "__fish_reverberator_using_subcommand run" -l wait -d 'When another supervisor watches a job, wait for it to stop instead of exiting 75'
complete -c reverberator -n "__fish_reverberator_using_subcommand run" -s v -l verbose -d 'Log every event, not only actions'
complete -c reverberator -n "__fish_reverberator_using_subcommand run" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand status" -l config -d 'The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand status" -l vault -d 'Read the jobs of this vault instead of a configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand status" -l json -d 'Print JSON lines instead of text'
complete -c reverberator -n "__fish_reverberator_using_subcommand status" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand versions" -l config -d 'The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand versions" -l vault -d 'Read the jobs of this vault instead of a configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand versions" -l json -d 'Print JSON lines instead of text'
complete -c reverberator -n "__fish_reverberator_using_subcommand versions" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand history" -l config -d 'The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand history" -l vault -d 'Read the jobs of this vault instead of a configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand history" -l json -d 'Print JSON lines instead of text'
complete -c reverberator -n "__fish_reverberator_using_subcommand history" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand find" -l config -d 'The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand find" -l vault -d 'Read the jobs of this vault instead of a configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand find" -l json -d 'Print JSON lines instead of text'
complete -c reverberator -n "__fish_reverberator_using_subcommand find" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand diff" -l config -d 'The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand diff" -l vault -d 'Read the jobs of this vault instead of a configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand diff" -l json -d 'Print JSON lines instead of text'
complete -c reverberator -n "__fish_reverberator_using_subcommand diff" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand snap" -l source -d 'With --force: the job\'s new source (the configuration must name it too)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand snap" -l config -d 'The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand snap" -l vault -d 'Read the jobs of this vault instead of a configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand snap" -l force -d 'Make the version even when the deletion guard (max_delete_ratio) refuses it'
complete -c reverberator -n "__fish_reverberator_using_subcommand snap" -l json -d 'Print JSON lines instead of text'
complete -c reverberator -n "__fish_reverberator_using_subcommand snap" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand replicate" -l to -d 'The replica vault: a path, or `ssh://[user@]host[:port]/path` (repeatable; default: the job\'s replicate_to)' -r
complete -c reverberator -n "__fish_reverberator_using_subcommand replicate" -l ssh -d 'The ssh program (default: replicate_ssh, else `ssh`)' -r
complete -c reverberator -n "__fish_reverberator_using_subcommand replicate" -l identity -d 'The private key ssh uses (`ssh -i`; default: replicate_identity, else ssh\'s own configuration)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand replicate" -l receive-command -d 'The receiver: its path for a local DEST, the command run on the remote host for an ssh one (default: reverb-receive)' -r
complete -c reverberator -n "__fish_reverberator_using_subcommand replicate" -l config -d 'The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand replicate" -l vault -d 'Read the jobs of this vault instead of a configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand replicate" -l init -d 'Create the replica vault (directory and marker) when it has none yet'
complete -c reverberator -n "__fish_reverberator_using_subcommand replicate" -l json -d 'Print JSON lines instead of text'
complete -c reverberator -n "__fish_reverberator_using_subcommand replicate" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand verify" -l max-rate -d 'With --data: read at most this many bytes per second (`50MiB`)' -r
complete -c reverberator -n "__fish_reverberator_using_subcommand verify" -l config -d 'The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand verify" -l vault -d 'Read the jobs of this vault instead of a configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand verify" -l data -d 'Also read every stored file and compare it with its checksum'
complete -c reverberator -n "__fish_reverberator_using_subcommand verify" -l json -d 'Print JSON lines instead of text'
complete -c reverberator -n "__fish_reverberator_using_subcommand verify" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand restore" -l config -d 'The configuration file (default: $REVERBERATOR_CONFIG, ~/.config/reverberator/config.toml, /etc/reverberator/config.toml)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand restore" -l vault -d 'The vault (instead of a configuration file)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand restore" -l from -d 'Which version: its number, its directory name, `latest`, or a time (`2026-11-24T21:00` in UTC, `"2 hours ago"`): the newest version taken at or before it' -r
complete -c reverberator -n "__fish_reverberator_using_subcommand restore" -l path -d 'A path inside the version (relative to the source) to restore instead of all of it' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand restore" -l to -d 'Where to restore to (created; must not exist or be an empty directory, and not be in the vault)' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand restore" -l overwrite -d 'Accept a non-empty destination: restored entries replace what is at their place, everything else in DEST is left alone'
complete -c reverberator -n "__fish_reverberator_using_subcommand restore" -l no-verify -d 'Do not check restored files against their checksums'
complete -c reverberator -n "__fish_reverberator_using_subcommand restore" -l delete -d 'Make DEST exactly the version: also remove what the version does not hold (says how many entries)'
complete -c reverberator -n "__fish_reverberator_using_subcommand restore" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand check-config" -l config -d 'The configuration file' -r -F
complete -c reverberator -n "__fish_reverberator_using_subcommand check-config" -l json -d 'Print one JSON line per job instead of TOML'
complete -c reverberator -n "__fish_reverberator_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "run" -d 'Watch every configured job (or one folder given with --source and --vault) and take versions'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "status" -d 'Per job: state, last version and its age, pending changes, size against the limit, identity'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "versions" -d 'The versions of a job'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "history" -d 'The versions in which PATH changed (exit 1 when it is in no retained version)'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "find" -d 'Which paths match PATTERN in which retained versions, deleted ones included (exit 1 when none)'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "diff" -d 'Paths added, removed or changed between two versions (numbers, names or `latest`)'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "snap" -d 'Take a version of JOB now (reverb-snap): --force accepts an emptied source, --source NEW --force changes the recorded source'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "replicate" -d 'Send the versions of JOB that a replica lacks, oldest first: to DEST (a vault path, or `ssh://[user@]host[:port]/path` running reverb-receive there), or to every replicate_to of the job'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "verify" -d 'Check every job\'s vault invariants (reverb-index --check on each), and that no folder or record of the vault is readable by more users than configured (vault_group)'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "restore" -d 'Copy a version of JOB, or a path in it, out of the vault to DEST (reverb-restore)'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "check-config" -d 'Load the configuration and print the resolved jobs'
complete -c reverberator -n "__fish_reverberator_using_subcommand help; and not __fish_seen_subcommand_from run status versions history find diff snap replicate verify restore check-config help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
