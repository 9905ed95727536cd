complete -c reverb-retire -l vault -d 'The vault directory (holding reverberator-vault.toml)' -r -F
complete -c reverb-retire -l config -d 'Take the jobs and their vaults from this configuration file' -r -F
complete -c reverb-retire -l job -d 'Only this job (default: every job of the vault)' -r
complete -c reverb-retire -l keep -d 'Keep the newest N versions (keep_versions)' -r
complete -c reverb-retire -l keep-within -d 'Keep every version younger than DUR (keep_within; e.g. 1h, 7days)' -r
complete -c reverb-retire -l keep-hourly -d 'Keep the newest version of each of the last N hours (local time)' -r
complete -c reverb-retire -l keep-daily -d 'Keep the newest version of each of the last N days' -r
complete -c reverb-retire -l keep-weekly -d 'Keep the newest version of each of the last N ISO weeks' -r
complete -c reverb-retire -l keep-monthly -d 'Keep the newest version of each of the last N months' -r
complete -c reverb-retire -l keep-yearly -d 'Keep the newest version of each of the last N years' -r
complete -c reverb-retire -l max-size -d 'Retire while the job folder is larger than SIZE (e.g. 50GiB, 10MB, 4096); overrides job.toml\'s vault_size_limit' -r
complete -c reverb-retire -l dry-run -d 'Print what would be kept and retired, one line per version; write nothing'
complete -c reverb-retire -l no-wait -d 'Exit 75 at once when another writer holds the job lock, instead of waiting'
complete -c reverb-retire -l json -d 'Print records as JSON lines'
complete -c reverb-retire -s h -l help -d 'Print help'
complete -c reverb-retire -s V -l version -d 'Print version'
