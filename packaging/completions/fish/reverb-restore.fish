complete -c reverb-restore -l vault -d 'The vault directory' -r -F
complete -c reverb-restore -l config -d 'Take the vault from this configuration file' -r -F
complete -c reverb-restore -l job -d 'The job\'s name' -r
complete -c reverb-restore -l from -d 'Which version: its number, its directory name, `latest`, or a time (`2026-11-24T21:00` in UTC, `"2 hours ago"`): the newest version taken at or before it' -r
complete -c reverb-restore -l path -d 'A path inside the version (relative to the source) to restore instead of all of it' -r -F
complete -c reverb-restore -l to -d 'Where to restore to (created; must not exist or be an empty directory, and not be in the vault)' -r -F
complete -c reverb-restore -l overwrite -d 'Accept a non-empty destination: restored entries replace what is at their place, everything else in DEST is left alone'
complete -c reverb-restore -l no-verify -d 'Do not check restored files against their checksums'
complete -c reverb-restore -l delete -d 'Make DEST exactly the version: also remove what the version does not hold (says how many entries)'
complete -c reverb-restore -s h -l help -d 'Print help'
complete -c reverb-restore -s V -l version -d 'Print version'
