complete -c reverb-mountwatch -l below -d 'Also report every filesystem mounted (`mounted`) or unmounted (`unmounted`) below DIR (a job\'s source); repeatable' -r -F
complete -c reverb-mountwatch -l json -d 'Print JSON lines (one object per record, with a `type` field) instead of TSV'
complete -c reverb-mountwatch -l once -d 'Print the start lines and exit instead of watching'
complete -c reverb-mountwatch -s h -l help -d 'Print help (see more with \'--help\')'
complete -c reverb-mountwatch -s V -l version -d 'Print version'
