complete -c reverb-receive -l vault -d 'The replica vault (holding reverberator-vault.toml)' -r -F
complete -c reverb-receive -l job -d 'Accept this job only (pin it in an authorized_keys forced command)' -r
complete -c reverb-receive -l init -d 'Create the vault (directory and marker) if it has no marker yet'
complete -c reverb-receive -s h -l help -d 'Print help'
complete -c reverb-receive -s V -l version -d 'Print version'
