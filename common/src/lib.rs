//! reverberator's library: every piece of logic the binaries use lives here.
//!
//! Map: [`tsv`] (the one text format), [`time`], [`error`] (exit codes), [`fsutil`]
//! (atomic writes), [`lock`], [`journal`], [`index`], [`jobfile`], [`settings`],
//! [`exclude`], [`vault`] (layout), [`identity`] (which filesystem), [`copy`] (the copy
//! engine), [`tree`] (reading versions through vault links), [`snapshot`] (building a
//! version), [`scan`] (rescan diff), [`restore`], [`retire`], [`check`], [`events`] (event
//! lines and batch rules), [`watch`] (inotify), [`mountwatch`], [`config`], [`supervisor`].

pub mod cli;
pub mod error;
pub mod events;
pub mod exclude;
pub mod fsutil;
pub mod identity;
pub mod index;
pub mod jobfile;
pub mod journal;
pub mod lock;
pub mod settings;
pub mod time;
pub mod tsv;
pub mod vault;
pub mod watch;

pub use error::{Error, Result};
