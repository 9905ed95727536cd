complete -c reverb-index -l vault -d 'The vault directory (holding reverberator-vault.toml)' -r -F
complete -c reverb-index -l config -d 'Take the jobs and their vaults from this configuration file' -r -F
complete -c reverb-index -l job -d 'Only this job (default: every job of the vault)' -r
complete -c reverb-index -l max-rate -d 'With --data: read at most this many bytes per second (`50MiB`), so a scheduled run does not starve the machine' -r
complete -c reverb-index -l recount -d 'Recompute files and sizes of every version from the disk and rewrite index.tsv (takes the job lock), then print the rows'
complete -c reverb-index -l check -d 'Verify links, versions, sizes and bookkeeping; print one line per problem (`job, kind, path, detail`) and exit 1 when there is any. Read-only'
complete -c reverb-index -l data -d 'With --check: also read every file every retained version holds and compare it with its checksum (a mismatch, a file without a checksum, a checksum without a file)'
complete -c reverb-index -l checksums -d 'With --recount: also record checksums for every stored file that has none (a vault made before checksums), from the data as it is now'
complete -c reverb-index -l no-wait -d 'Exit 75 at once when another writer holds the job lock, instead of waiting'
complete -c reverb-index -l json -d 'Print records as JSON lines'
complete -c reverb-index -s h -l help -d 'Print help'
complete -c reverb-index -s V -l version -d 'Print version'
