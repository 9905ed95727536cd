complete -c reverb-watch -l quiet-period -d 'Print a `flush` line once no event has come for this long after a burst (e.g. `30s`, `500ms`)' -r
complete -c reverb-watch -l max-delay -d 'Under constant change, print a `flush` at most this long after a burst\'s first event (e.g. `10m`)' -r
complete -c reverb-watch -l exclude -d 'Ignore paths matching this gitignore-style pattern (relative to SRC); repeatable. Excluded directories are not watched' -r
complete -c reverb-watch -s x -l one-file-system -d 'Stay on SRC\'s filesystem (as `rsync -x`): a filesystem mounted below SRC is neither watched nor scanned; its mountpoint is reported as an entry of its parent'
complete -c reverb-watch -s h -l help -d 'Print help (see more with \'--help\')'
complete -c reverb-watch -s V -l version -d 'Print version'
