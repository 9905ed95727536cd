//! The formats layer: every byte the project writes or reads as text, defined once, and
//! the small vocabularies the other layers share.
//!
//! Owns the TSV dialect ([`tsv`]) and each file or stream built on it — index.tsv
//! ([`index`]), journal.tsv ([`journal`]), event lines ([`events`]), the baseline manifest
//! ([`baseline`]), the records of climbing links and of hard-linked files ([`climbing_tsv`],
//! [`hardlinks_tsv`]), the directory record of a retirement in progress, retiring.tsv
//! ([`retiring_tsv`]) — plus job.toml ([`jobfile`], with the filesystem identities it
//! records: [`fs_identity`]), the job settings and their human-written values
//! ([`settings`]), exclude patterns ([`exclude`]), version directory names
//! ([`version`]), the vault's time formats ([`time`]), an entry's type tag and the one "has
//! it changed" comparator ([`entry`]), paths relative to a root ([`relpath`]), and the
//! vault marker's record of what its filesystem can do ([`capabilities`]).
//! `docs/format.md` gives the byte-exact rules. Nothing here decides policy; the only tree
//! walk is the one that records a baseline.

pub(crate) mod baseline;
pub(crate) mod capabilities;
pub(crate) mod checksums;
pub(crate) mod climbing_tsv;
pub(crate) mod destination;
pub(crate) mod entry;
pub(crate) mod events;
pub(crate) mod exclude;
pub(crate) mod fs_identity;
pub(crate) mod hardlinks_tsv;
pub(crate) mod index;
pub(crate) mod jobfile;
pub(crate) mod journal;
pub(crate) mod journal_compact;
pub(crate) mod relpath;
pub(crate) mod replicas_tsv;
pub(crate) mod retiring_tsv;
pub(crate) mod settings;
pub(crate) mod source_index;
pub(crate) mod stream;
pub(crate) mod time;
pub(crate) mod tsv;
pub(crate) mod version;
