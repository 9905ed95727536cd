complete -c reverb-snap -l vault -d 'The vault directory (holding reverberator-vault.toml)' -r -F
complete -c reverb-snap -l config -d 'Take the vault and the job\'s settings from this configuration file' -r -F
complete -c reverb-snap -l job -d 'The job\'s name (its folder is the sanitized name)' -r
complete -c reverb-snap -l source -d 'The source folder; required the first time, checked against job.toml afterwards (with --force, a different source is recorded as the job\'s new source)' -r -F
complete -c reverb-snap -l changes -d 'Build the version from event lines (reverb-watch\'s output) read from FILE or `-` (stdin) instead of rescanning; an `overflow` line makes it a rescan' -r -F
complete -c reverb-snap -l init -d 'Create the vault (directory and marker) if it does not exist yet'
complete -c reverb-snap -l force -d 'Make a version even when a rescan would leave fewer than 1 - max_delete_ratio of the files'
complete -c reverb-snap -l dry-run -d 'Show what would be versioned; write nothing'
complete -c reverb-snap -l no-wait -d 'Exit 75 at once when another writer holds the job lock, instead of waiting'
complete -c reverb-snap -l json -d 'Print records as JSON lines'
complete -c reverb-snap -l follow -d 'With --changes: one version per `flush`-terminated batch, until end of input (and retirement after each version), so `reverb-watch … | reverb-snap --changes - --follow` is a complete continuous backup'
complete -c reverb-snap -l events-journaled -d 'The events were already journaled by the caller (the supervisor): do not journal them again'
complete -c reverb-snap -l vault-probed -d 'The caller (the supervisor) probed the vault\'s filesystem when the job started: do not probe it again for this version'
complete -c reverb-snap -l vault-secured -d 'The caller (the supervisor) had who may read the vault put right since the job started (by its first version): do not walk the job\'s records again for this one, unless the job\'s settings changed'
complete -c reverb-snap -s h -l help -d 'Print help'
complete -c reverb-snap -s V -l version -d 'Print version'
