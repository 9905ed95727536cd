//! The run layer: what the programs share at their edge, and the long-running supervisor.
//!
//! Owns the user's configuration file ([`config`]), which job a program acts on
//! ([`selection`]), what `reverb-snap` does around a build (new jobs, journaling event
//! batches: [`batch`]), the supervisor ([`supervisor`]) with its hooks ([`hooks`]), its live state ([`live`]) and what it tells systemd ([`notify`]), the read-only porcelain queries
//! ([`porcelain`], [`find`]) and what the web interface reads ([`browse`]), the flags the vault programs share ([`args`]) and the exit-code/stdout
//! helpers every binary's thin `main` uses ([`cli`]).

pub(crate) mod args;
pub(crate) mod batch;
pub(crate) mod browse;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod data_check;
pub(crate) mod find;
pub(crate) mod hooks;
pub(crate) mod live;
pub(crate) mod notify;
pub(crate) mod porcelain;
pub(crate) mod receive;
pub(crate) mod receiver_stderr;
pub(crate) mod replica_live;
pub(crate) mod replicate;
pub(crate) mod selection;
pub(crate) mod supervisor;
