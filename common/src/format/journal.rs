//! journal.tsv (docs/format.md#text-files): the append-only log of a job.
//!
//! Owns: the journal's columns and the append. Invariants: the file is opened with
//! `O_APPEND` and each record is written with one `write(2)`, so concurrent writers
//! (supervisor, snap, retire) never interleave within a line; it is never rewritten.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::format::time::now_rfc3339;
use crate::format::tsv;

/// The journal's header line.
pub const HEADER: &str = "time\ttool\tevent\tpath\tdetail";

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    tool: &'static str,
}

impl Journal {
    /// Opens (creating with its header if missing) the journal at `path` for `tool`.
    pub fn open(path: &Path, tool: &'static str) -> Result<Journal> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .ctx("cannot open journal", path)?;
        let len = file.metadata().ctx("cannot stat journal", path)?.len();
        if len == 0 {
            file.write_all(format!("{HEADER}\n").as_bytes())
                .ctx("cannot write journal", path)?;
        }
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            tool,
        })
    }

    /// Appends one record; `path` is raw bytes relative to the source (may be empty).
    pub fn log(&mut self, event: &str, path: &[u8], detail: &str) -> Result<()> {
        let tool = self.tool;
        self.log_as(tool, event, path, detail)
    }

    /// Another handle on the same journal (the fd is duplicated; `O_APPEND` is kept).
    pub fn try_clone(&self) -> Result<Journal> {
        Ok(Journal {
            file: self
                .file
                .try_clone()
                .ctx("cannot duplicate journal handle", &self.path)?,
            path: self.path.clone(),
            tool: self.tool,
        })
    }

    /// Appends a record on behalf of another tool (the supervisor journals the watcher's
    /// raw events as `watch`).
    pub fn log_as(&mut self, tool: &str, event: &str, path: &[u8], detail: &str) -> Result<()> {
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\n",
            now_rfc3339(),
            tsv::escape(tool),
            tsv::escape(event),
            tsv::escape_bytes(path),
            tsv::escape(detail)
        );
        self.file
            .write_all(line.as_bytes())
            .ctx("cannot append to journal", &self.path)
    }

    /// Appends a record, reporting a failure as a warning ([`crate::error::warn`], printed
    /// by the binary) instead of failing the caller: for logging that must never abort the
    /// work it describes.
    pub fn note(&mut self, event: &str, path: &[u8], detail: &str) {
        if let Err(e) = self.log(event, path, detail) {
            crate::error::warn(&e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_escaped_records_after_one_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("journal.tsv");
        Journal::open(&p, "snap")
            .expect("open")
            .log("skipped", b"a\tb", "why")
            .expect("log");
        Journal::open(&p, "retire")
            .expect("reopen")
            .log("retire", b"", "V1")
            .expect("log");
        let text = std::fs::read_to_string(&p).expect("read");
        let table =
            tsv::Table::parse(&text, &["time", "tool", "event", "path", "detail"]).expect("parses");
        let rows: Vec<_> = table.rows().collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].os("path").expect("path"), "a\tb");
        assert_eq!(rows[1].text("tool").expect("tool"), "retire");
    }
}
