complete -c reverb-restore -l vault -d 'The vault directory' -r -F
complete -c reverb-restore -l job -d 'The job\'s name' -r
complete -c reverb-restore -l version -d 'Which version: its number, its directory name, or `latest`' -r
complete -c reverb-restore -l path -d 'A path inside the version (relative to the source) to restore instead of all of it' -r -F
complete -c reverb-restore -l to -d 'Where to restore to (created; must not exist or be an empty directory)' -r -F
complete -c reverb-restore -l overwrite -d 'Replace a non-empty destination'
complete -c reverb-restore -l no-verify -d 'Do not check restored files against their checksums'
complete -c reverb-restore -s h -l help -d 'Print help'
