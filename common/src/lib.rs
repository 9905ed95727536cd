//! reverberator's library: every piece of logic the binaries use lives here.
//!
//! Map: [`tsv`] (the one text format), [`time`], [`error`] (exit codes), [`fsutil`]
//! (atomic writes), [`lock`], [`journal`], [`index`], [`jobfile`], [`settings`],
//! [`exclude`], [`vault`] (layout), [`identity`] (which filesystem), [`copy`] (the copy
//! engine), [`tree`] (reading versions through vault links), [`snapshot`] (building a
//! version), [`scan`] (rescan diff), [`restore`], [`retire`], [`check`], [`events`] (event
//! lines and batch rules), [`watch`] (inotify), [`mountwatch`], [`config`], [`supervisor`].

pub mod baseline;
pub mod check;
pub mod cli;
pub mod config;
pub mod copy;
pub mod error;
pub mod events;
pub mod exclude;
pub mod fault;
pub mod fsutil;
pub mod identity;
pub mod index;
pub mod job;
pub mod jobfile;
pub mod journal;
pub mod lock;
pub mod mountwatch;
pub mod porcelain;
pub mod restore;
pub mod retire;
pub mod settings;
pub mod snapshot;
pub mod supervisor;
pub mod time;
pub mod tree;
pub mod tsv;
pub mod vault;
pub mod watch;

pub use error::{Error, Result};
