//! reverberator's library: every piece of logic the binaries use lives here.
//!
//! The modules are grouped by layer, each a folder whose `mod.rs` says what it owns, over a
//! few foundation modules. A module uses only its own layer and the layers above it in this
//! table, and no module cycle exists; `cargo run -p xtask -- check` enforces both. The full
//! module map, one line per module, is docs/design.md#module-map.
//!
//! | layer | owns |
//! | --- | --- |
//! | foundations: `error`, `escape`, `sys`, `fsutil`, `beneath`, `fault` | the error type and exit codes; TSV field escaping; the only `unsafe` (FFI); atomic writes; reaching entries beneath a directory descriptor, never through a symlink; the crash-test hook |
//! | `format/` | every text format, byte-exact, and the shared vocabulary |
//! | `capture/` | noticing changes and filesystem identity |
//! | `vault/` | the vault on disk and its invariants |
//! | `engine/` | building, retiring and restoring versions |
//! | `run/` | the programs' shared edge and the supervisor |
//!
//! Every module is private to the crate. The public API is the curated set of namespaces
//! below (`reverb_common::index::read`, `reverb_common::snapshot::take`, …): each re-exports
//! exactly what the binaries and the integration tests use, so the compiler reports
//! anything else that nothing calls. The formats and invariants are documented in
//! `docs/format.md`, the programs in `docs/cli.md`.

// The library's documentation is read with private items (`cargo doc --document-private-items`,
// as CI builds it): the facade is thin, and its docs link to the modules that do the work.
#![allow(rustdoc::private_intra_doc_links)]

mod beneath;
mod capture;
mod engine;
pub(crate) mod error;
mod escape;
pub(crate) mod fault;
mod format;
mod fsutil;
mod run;
mod sys;
mod vault;

pub use error::{Error, Result};
/// The vault layout: a vault and one job folder in it.
pub use vault::layout::{JobDir, MARKER, Vault};

// ---- The public API, one namespace per area a binary talks to. ----

/// Exit codes (docs/cli.md).
pub mod exit {
    pub use crate::error::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
}

/// The TSV dialect (docs/format.md#text-files).
pub mod tsv {
    pub use crate::format::tsv::{escape, escape_os, join, split, unescape_os};
}

/// Times as the vault writes them.
pub mod time {
    pub use crate::format::time::{human_age, parse_rfc3339, rfc3339_millis};
}

/// index.tsv.
pub mod index {
    pub use crate::format::index::{
        COLUMNS, IndexRow, parse, read, read_index_or_empty, render, write,
    };
}

/// job.toml.
pub mod jobfile {
    pub use crate::format::jobfile::JobFile;
}

/// journal.tsv's event names.
pub mod journal {
    pub use crate::format::journal::JournalEvent;
}

/// Human-written sizes and durations.
pub mod settings {
    pub use crate::format::settings::{
        JobSettings, Rules, format_size, parse_duration, parse_size,
    };
}

/// The baseline manifest of a `keep_complete = false` job.
pub mod baseline {
    pub use crate::format::baseline::kind_of;
}

/// Event lines and the batch rules.
pub mod events {
    pub use crate::format::events::{EntryType, EventKind, EventLine, HEADER, fold, read_batches};
}

/// Opening and creating jobs.
pub mod job {
    pub use crate::run::selection::target;
    pub use crate::vault::job::{
        JobCtx, anchored, canonical_or_nearest, create, find, job_dir, job_of_source,
        note_capabilities, open, open_dir, secure, update_settings, validate_source,
        verify_identities,
    };
}

/// What a vault's filesystem can do (the capability probe's record, docs/filesystems.md).
pub mod capabilities {
    pub use crate::format::capabilities::{Capabilities, LinkAttributes};
    pub use crate::vault::layout::recorded_capabilities;
    pub use crate::vault::probe::{PROBE_DIR, probe};
}

/// Checksums (docs/format.md#checksums): the records, `--data` verification and backfill.
pub mod checksums {
    pub use crate::format::checksums::{
        COLUMNS, Record, Records, carry, file_of, parse, read, render, write,
    };
    pub use crate::run::data_check::{parse_rate, render as render_problem, verify_and_print};
    pub use crate::vault::verify::{DataKind, DataProblem, backfill, verify};
}

/// Job locks.
pub mod lock {
    pub use crate::vault::lock::{JobLock, Wait};
}

/// Reading version trees through vault links.
pub mod tree {
    pub use crate::vault::tree::{Links, Lookalikes, Node, Visitor, Walk, link_text, vault_links};
}

/// What the web interface reads: jobs, a directory of a version, one entry opened without
/// leaving its version, the journal's summary.
pub mod browse {
    pub use crate::run::browse::{
        FoundJob, JournalSummary, Kind, Listed, Located, inside_version, jobs, journal_summary,
        list, locate, open_in,
    };
}

/// Checking and recounting a job.
pub mod check {
    pub use crate::vault::check::{access_problems, check, recount};
}

/// The copy engine's attribute helpers.
pub mod copy {
    pub use crate::engine::copy::{get_xattr, list_xattrs};
}

/// Building a version.
pub mod snapshot {
    pub use crate::engine::snapshot::{Options, Progress, Trigger, take};
}

/// From a job name and event batches to builds (what `reverb-snap` does around `take`).
pub mod batch {
    pub use crate::run::batch::{
        Prepared, change_source, check_source, compact_journal, journal_batch,
        note_mounts_left_out, prepare_job, reject_batch, trigger_of,
    };
}

/// Retiring versions.
pub mod retire {
    pub use crate::engine::retire::plan::{
        Action, Decision, Limits, Plan, Reason, Unmeetable, plan,
    };
    pub use crate::engine::retire::policy::{Bucket, Rule};
    pub use crate::engine::retire::{Retired, enforce, enforce_with};
    pub use crate::format::settings::Rules;
}

/// Restoring a version.
pub mod restore {
    pub use crate::engine::restore::{Existing, pick, restore, restore_into};
    pub use crate::run::selection::pick_from;
    pub use crate::vault::inside::{InsideVault, refuse_inside};
}

/// The inotify watcher.
pub mod watch {
    pub use crate::capture::lifeline::tie_to_supervisor;
    pub use crate::capture::watch::{WatchOptions, Watcher};
}

/// Exclude patterns.
pub mod exclude {
    pub use crate::format::exclude::{Excludes, check_pattern};
}

/// Filesystem identity.
pub mod identity {
    pub use crate::capture::identity::{MatchedBy, matches, only_device, verify};
    pub use crate::format::fs_identity::FsIdentity;
}

/// Watching the mount table.
pub mod mountwatch {
    pub use crate::capture::mountwatch::{
        HEADER, MountTable, PathWatch, Record, State, Submounts, Wake,
    };
}

/// The configuration file.
pub mod config {
    pub use crate::run::config::{
        Config, JobConfig, ad_hoc, load, locate, render_resolved, warnings,
    };
}

/// The supervisor.
pub mod supervisor {
    pub use crate::run::supervisor::{JobSource, Options, run};
}

/// The porcelain's read-only queries.
pub mod porcelain {
    pub use crate::run::find::{FoundPath, Pattern, find, path_candidates};
    pub use crate::run::live::JobState;
    pub use crate::run::porcelain::{
        HistoryRow, IdentityReport, JobStatus, ReplicaLag, RoleIdentity, changed_during_copy, diff,
        history, rel_arg, status, supervised_elsewhere,
    };
    pub use crate::run::replica_live::ReplicaActivity;
}

/// Replication to a second vault (docs/design.md#replication): the sender
/// (`reverberator replicate`), the receiver (`reverb-receive`), where a replica is.
pub mod replicate {
    pub use crate::format::destination::Destination;
    pub use crate::format::replicas_tsv::ReplicaRow;
    pub use crate::run::receive::{ReceiveOptions, serve};
    pub use crate::run::replicate::{
        ReplicateOptions, Report, SentVersion, receiver_command, record_outcome, replicas,
        replicate,
    };
}

/// The replication stream's records and codec (docs/format.md#replication-stream), for
/// tests that write streams of their own.
pub mod stream {
    pub use crate::format::stream::{
        Attrs, Counts, DataMode, Entry, FORMAT, FileEntry, Hello, Kind, MAGIC, Record,
        RecordReader, RecordWriter, SpecialKind, StreamError, Time, VersionHeader, Welcome,
        check_name, frame, limits,
    };
}

/// What every binary's `main` shares.
pub mod cli {
    pub use crate::error::set_warning_sink;
    pub use crate::run::args::{JobArgs, JobsArgs, JsonArgs, LockArgs};
    pub use crate::run::cli::{exit_code, finish, print_line};
}
