//! The hand-written parts of the man pages (docs/cli.md, docs/configuration.md): SIGNALS,
//! FILES and EXAMPLES per program, and the whole `reverberator.toml(5)` page. Plain roff,
//! so the output stays a pure function of the sources.

/// SIGNALS, FILES and EXAMPLES of a program's main page (empty where none applies).
pub fn sections(program: &str) -> String {
    let (signals, files, examples) = match program {
        "reverberator" => (
            "SIGTERM, SIGINT: every job finishes the version in progress, takes a last version of the changes still pending (within \\fBstop_timeout\\fR), and the supervisor exits 0.\n.br\nSIGHUP: reload the configuration file (added jobs start, removed jobs stop, changed jobs restart with a rescan).",
            "\\fI/etc/reverberator/config.toml\\fR, \\fI~/.config/reverberator/config.toml\\fR: the configuration, see \\fBreverberator.toml\\fR(5).\n.br\n\\fI$RUNTIME_DIRECTORY\\fR, else \\fI$XDG_RUNTIME_DIR/reverberator\\fR, else \\fI/run/reverberator\\fR: the supervisor's live state, one JSON file per job, read by \\fBreverberator status\\fR.\n.br\n\\fIVAULT/JOB/\\fR: the versions, \\fIindex.tsv\\fR, \\fIjournal.tsv\\fR, \\fIjob.toml\\fR, \\fIrun.lock\\fR.",
            "reverberator run \\-\\-init \\-\\-source ~/Documents \\-\\-vault /mnt/backup/vault\n.br\nreverberator status \\-\\-vault /mnt/backup/vault\n.br\nreverberator history documents notes.txt\n.br\nreverberator find documents \\(aq*.odt\\(aq\n.br\nreverberator restore documents \\-\\-from \\(dq2 hours ago\\(dq \\-\\-to /tmp/docs",
        ),
        "reverb-watch" => (
            "SIGTERM, SIGINT: print the pending \\fBflush\\fR and exit 0. Started by \\fBreverberator run\\fR, it also gets SIGTERM when the supervisor dies.",
            "",
            "reverb\\-watch \\-\\-quiet\\-period 2s ~/Documents | reverb\\-snap \\-\\-vault /mnt/v \\-\\-job docs \\-\\-changes \\- \\-\\-follow",
        ),
        "reverb-mountwatch" => (
            "SIGTERM, SIGINT: exit 0. Started by \\fBreverberator run\\fR, it also gets SIGTERM when the supervisor dies.",
            "\\fI/proc/self/mountinfo\\fR: the mount table it watches.",
            "reverb\\-mountwatch /home /mnt/backup",
        ),
        "reverb-snap" => (
            "A version in progress is built under \\fI.partial/\\fR and published by a rename: a signal or crash leaves no half version.",
            "\\fIVAULT/JOB/lock\\fR: the job lock, held while it writes.",
            "reverb\\-snap \\-\\-init \\-\\-vault /mnt/v \\-\\-job docs \\-\\-source ~/Documents\n.br\nreverb\\-snap \\-\\-vault /mnt/v \\-\\-job docs \\-\\-force",
        ),
        "reverb-retire" => (
            "",
            "\\fIVAULT/JOB/lock\\fR: the job lock; it waits for it unless \\fB\\-\\-no\\-wait\\fR.",
            "reverb\\-retire \\-\\-vault /mnt/v \\-\\-job docs \\-\\-keep 10 \\-\\-dry\\-run",
        ),
        "reverb-index" => (
            "",
            "\\fIVAULT/JOB/index.tsv\\fR: the rows it shows, recounts or checks.",
            "reverb\\-index \\-\\-vault /mnt/v \\-\\-check",
        ),
        "reverb-restore" => (
            "",
            "",
            "reverb\\-restore \\-\\-vault /mnt/v \\-\\-job docs \\-\\-from 7 \\-\\-to /tmp/docs\n.br\nreverb\\-restore \\-\\-config /etc/reverberator/config.toml \\-\\-job docs \\-\\-from 2026\\-11\\-24T21:00 \\-\\-path report.odt \\-\\-to /tmp/r \\-\\-overwrite",
        ),
        "reverb-web" => (
            "SIGTERM, SIGINT: stop serving and exit 0.",
            "\\fI$STATE_DIRECTORY/web-token\\fR, else \\fI$XDG_STATE_HOME/reverberator/web-token\\fR, else \\fI~/.local/state/reverberator/web-token\\fR: the token every request needs (made on first start, mode 0600).",
            "reverb\\-web \\-\\-print\\-url\n.br\nreverb\\-web \\-\\-vault /mnt/v \\-\\-listen 127.0.0.1:8417 \\-\\-metrics\\-listen 127.0.0.1:9417\n.br\nreverb\\-web \\-\\-config /etc/reverberator/config.toml \\-\\-listen unix:/run/reverberator\\-web/web.sock",
        ),
        "reverb-receive" => (
            "",
            "\\fIVAULT/JOB/lock\\fR: the job lock, held while it writes.\n.br\n\\fIVAULT/JOB/.tmp/held/\\fR: what an interrupted version had received, offered to the next run.",
            "reverberator replicate docs \\-\\-to ssh://backup@nas/srv/vault   # runs: reverb\\-receive \\-\\-vault /srv/vault \\-\\-job docs\n.br\ncommand=\"reverb\\-receive \\-\\-vault /srv/vault \\-\\-job docs\" ssh\\-ed25519 AAAA... (a forced command in ~/.ssh/authorized_keys)",
        ),
        _ => ("", "", ""),
    };
    let mut out = String::new();
    for (title, text) in [
        ("SIGNALS", signals),
        ("FILES", files),
        ("EXAMPLES", examples),
    ] {
        if !text.is_empty() {
            out.push_str(&format!(".SH {title}\n{text}\n"));
        }
    }
    out
}

/// `reverberator.toml(5)`: the configuration file.
pub const CONFIG_PAGE: &str = r#".TH reverberator.toml 5 "reverberator VERSION" reverberator
.SH NAME
reverberator.toml \- the configuration file of reverberator
.SH SYNOPSIS
\fI/etc/reverberator/config.toml\fR, \fI~/.config/reverberator/config.toml\fR, or the file named by \fB\-\-config\fR or \fBREVERBERATOR_CONFIG\fR
.SH DESCRIPTION
One TOML file. Jobs are a table keyed by name, \fB[jobs.NAME]\fR; every job setting may also
appear in \fB[defaults]\fR, and a job's key overrides the default key by key. A bad file is
one error (exit 2) naming the file, the job, the key and the line; nothing is written. A
source or vault that does not exist is no error: the job waits, paused, until it appears.
.SH KEYS
.TP
\fBsource\fR (path, required, jobs only)
The monitored directory, absolute.
.TP
\fBvault\fR (path, required in the job or in [defaults])
The vault directory, absolute; not inside any job's source.
.TP
\fBmin_snapshot_time\fR (duration, default "30s")
Quiet period before a version is taken.
.TP
\fBmax_snapshot_delay\fR (duration, default "10m")
Under constant change, a version at least this often. Not both zero.
.TP
\fBkeep_complete\fR (boolean, default true)
The first version is a complete copy.
.TP
\fBonly_sync_attributes\fR (boolean, default true)
An attribute-only change copies the vault's data with the new attributes.
.TP
\fBkeep_versions\fR (integer, default 100)
Keep the newest N versions.
.TP
\fBkeep_within\fR (duration, default "1h")
Keep every version younger than this.
.TP
\fBkeep_hourly\fR, \fBkeep_daily\fR, \fBkeep_weekly\fR, \fBkeep_monthly\fR, \fBkeep_yearly\fR (integers, defaults 24, 14, 8, 12, 0)
Keep the newest version of each of the last N hours, days, ISO weeks, months or years
that have one (local time). A version is kept when any rule keeps it; the newest always
is. When every rule is 0, nothing is retired by count or time.
.TP
\fBvault_size_limit\fR (size, default none)
After the keep rules, retire the oldest versions while the job's folder is larger
("50GiB"); never when the newest version alone is larger.
.TP
\fBexclude\fR (list of strings, default [])
gitignore-style patterns, relative to the source.
.TP
\fBchecksums\fR (boolean, default true)
Record the BLAKE3 of every file a version copies, checked by \fBverify \-\-data\fR and by
restores.
.TP
\fBmax_delete_ratio\fR (number 0..1, default 0.5)
A rescan leaving fewer than 1 \- this share of the files needs \fB\-\-force\fR.
.TP
\fBstop_timeout\fR (duration, default "60s")
On SIGTERM, how long the job may take its last version.
.TP
\fBon_version\fR, \fBon_failure\fR, \fBon_recovery\fR (command, default none)
A command the supervisor runs after each new version, when the job starts failing (once per
distinct failure), and when it works again: a list of strings (\fB["notify\-send", "backup"]\fR)
or one string split into words like a shell splits them, without a shell (no variables, globs
or pipes: write \fB["sh", "\-c", "..."]\fR for those). Its environment has \fBREVERB_JOB\fR,
\fBREVERB_VERSION\fR, \fBREVERB_STATE\fR and \fBREVERB_MESSAGE\fR. A hook that fails or times
out is journaled (\fBhook\fR) and the job goes on.
.TP
\fBping_url\fR (URL, default none)
A healthchecks\-style URL: \fBGET URL\fR after a version and a recovery, \fBGET URL/fail\fR on a failure.
.TP
\fBhook_timeout\fR (duration, default "30s")
How long a hook or a ping may take before it is stopped.
.TP
\fBone_file_system\fR (boolean, default true)
A filesystem mounted below the source is not backed up (as \fBrsync \-x\fR); the
journal and \fBstatus\fR name the mountpoints left out. With false it is, including one
mounted while the job runs.
.TP
\fBvault_group\fR (string, default none)
Share read access to the job's history with this group: folders 0750, files 0640.
Without it the vault is private: folders 0700, files 0600, whatever the umask.
.TP
\fBreplicate_to\fR (list of destinations, default none)
Replica vaults: absolute paths, or \fBssh://[user@]host[:port]/path\fR (reached with
\fBssh\fR, running \fBreverb\-receive\fR there). The supervisor sends each new version to
each, in the background, retrying with backoff while one is away; \fBreverberator
replicate\fR sends them by hand.
.TP
\fBreplicate_ssh\fR (program, default "ssh")
The ssh client for \fBssh://\fR replicas.
.TP
\fBreplicate_identity\fR (path, default none)
The private key \fBssh \-i\fR uses for them (default: ssh's own configuration).
.SH EXAMPLES
.nf
[defaults]
vault = "/mnt/backup/vault"

[jobs.documents]
source = "/home/alice/Documents"
exclude = ["*.swp", ".cache/"]

[jobs.photos]
source = "/home/alice/Pictures"
min_snapshot_time = "5m"
vault_size_limit = "500GiB"
replicate_to = ["ssh://backup@nas/srv/vault"]
.fi
.SH "SEE ALSO"
\fBreverberator\fR(1), \fBreverberator\-check\-config\fR(1)
"#;
