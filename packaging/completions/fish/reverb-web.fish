complete -c reverb-web -l config -d 'Take the jobs from this configuration file (else `$REVERBERATOR_CONFIG`, the XDG file, `/etc/reverberator/config.toml`)' -r -F
complete -c reverb-web -l vault -d 'Show the jobs of this vault instead of a configuration\'s' -r -F
complete -c reverb-web -l listen -d 'Where to listen: `ADDR:PORT`, or `unix:PATH` for a Unix socket (mode 0600, no token: the socket\'s mode protects it)' -r
complete -c reverb-web -l metrics-listen -d 'Also serve `/metrics`, without the token, on this address (`ADDR:PORT`)' -r
complete -c reverb-web -l restore-to -d 'Where the restore form suggests a new directory (default: `~/reverberator-restores`); any absolute path outside the vaults may be typed there' -r -F
complete -c reverb-web -l print-url -d 'Print the URL to open (with the token) on stdout once listening'
complete -c reverb-web -s h -l help -d 'Print help'
complete -c reverb-web -s V -l version -d 'Print version'
