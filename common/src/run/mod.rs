//! The run layer: what the programs share at their edge and the long-running supervisor.
//!
//! Owns the user's configuration file ([`config`]), the supervisor ([`supervisor`]), the
//! read-only porcelain queries ([`porcelain`]), the flags the vault programs share
//! ([`args`]) and the exit-code/stdout helpers every binary's thin `main` uses ([`cli`]).

pub(crate) mod args;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod porcelain;
pub(crate) mod supervisor;
