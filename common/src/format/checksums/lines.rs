//! Reading a checksums file a line at a time ([`RecordLines`]): the header first (it names
//! the columns, in any order, as [`tsv::Table`] reads them), then one record a line, every
//! damage an error naming the line. It knows each line's byte offset, so a reader can come
//! back to a line later ([`RecordLines::resume`]).

use std::path::{Path, PathBuf};

use super::Record;
use crate::error::{Error, show};
use crate::format::tsv;

/// Why reading a checksums file stopped.
#[derive(Debug)]
pub(super) enum LineError {
    Io(std::io::Error),
    Bad(String),
}

impl LineError {
    /// The error of reading the file at `path`.
    pub(super) fn at(self, path: &Path) -> Error {
        match self {
            LineError::Io(e) => Error::Io {
                what: "cannot read checksums",
                path: path.to_path_buf(),
                source: e,
            },
            LineError::Bad(msg) => Error::Damaged(format!("{}: {msg}", show(path))),
        }
    }
}

/// A checksums file's records, read a line at a time: the header names the columns (in
/// any order, as [`tsv::Table`] reads them), every line has as many fields.
pub(super) struct RecordLines<R> {
    input: R,
    buf: Vec<u8>,
    /// The number of the line in `buf` (1: the header).
    line: usize,
    /// The byte offset of the line in `buf`, and of the next one.
    line_start: u64,
    offset: u64,
    /// Where the columns are: see [`Columns`].
    columns: Columns,
}

/// Where a file's `path`, `size` and `blake3` fields are, and how many fields a line has
/// (from its header).
#[derive(Debug, Clone, Copy)]
pub(super) struct Columns {
    at: [usize; 3],
    width: usize,
}

fn bad(line: usize, e: &dyn std::fmt::Display) -> LineError {
    LineError::Bad(format!("line {line}: {e}"))
}

impl<R: std::io::BufRead> RecordLines<R> {
    /// Reads the header.
    pub(super) fn new(input: R) -> Result<RecordLines<R>, LineError> {
        let mut lines = RecordLines::resume(
            input,
            Columns {
                at: [0; 3],
                width: 0,
            },
            0,
            0,
        );
        if !lines.next_line()? || lines.buf.is_empty() {
            return Err(bad(1, &tsv::TsvError::MissingHeader));
        }
        let header = std::str::from_utf8(&lines.buf).map_err(|_| bad(1, &"not UTF-8 text"))?;
        let columns = tsv::split(header);
        let index = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .ok_or_else(|| bad(1, &tsv::TsvError::MissingColumn(name.to_owned())))
        };
        lines.columns = Columns {
            at: [index("path")?, index("size")?, index("blake3")?],
            width: columns.len(),
        };
        Ok(lines)
    }

    /// Reads on from the line at byte `offset` of a file whose header gave `columns`, that
    /// line being number `line` (`input` starts there).
    pub(super) fn resume(input: R, columns: Columns, offset: u64, line: usize) -> Self {
        RecordLines {
            input,
            buf: Vec::new(),
            line: line.saturating_sub(1),
            line_start: offset,
            offset,
            columns,
        }
    }

    /// The columns the header gave.
    pub(super) fn columns(&self) -> Columns {
        self.columns
    }

    /// The byte offset and number of the line of the record [`Iterator::next`] returned last.
    pub(super) fn position(&self) -> (u64, usize) {
        (self.line_start, self.line)
    }

    /// The next line into `buf` (without its newline); false at the end.
    fn next_line(&mut self) -> Result<bool, LineError> {
        self.buf.clear();
        let n = self
            .input
            .read_until(b'\n', &mut self.buf)
            .map_err(LineError::Io)?;
        self.line_start = self.offset;
        self.offset += n as u64;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        self.line += 1;
        Ok(n > 0)
    }

    /// The record on the line in `buf`.
    fn record(&self) -> Result<(PathBuf, Record), LineError> {
        let line = self.line;
        let text = std::str::from_utf8(&self.buf).map_err(|_| bad(line, &"not UTF-8 text"))?;
        let fields = tsv::split(text);
        let Columns { at, width } = self.columns;
        if fields.len() != width {
            return Err(bad(
                line,
                &tsv::TsvError::FieldCount {
                    expected: width,
                    found: fields.len(),
                },
            ));
        }
        let [path_at, size_at, hash_at] = at;
        let at = |col: &str, e: &dyn std::fmt::Display| {
            LineError::Bad(format!("line {line}: {col}: {e}"))
        };
        let path = PathBuf::from(tsv::unescape_os(fields[path_at]).map_err(|e| at("path", &e))?);
        if path.as_os_str().is_empty() || path.is_absolute() {
            return Err(at("path", &"not a relative path"));
        }
        let size_text = fields[size_at];
        let size = size_text
            .parse::<u64>()
            .map_err(|_| at("size", &format!("`{size_text}` is not a whole number")))?;
        let hex = fields[hash_at];
        let hash = blake3::Hash::from_hex(hex)
            .map_err(|_| at("blake3", &format!("`{hex}` is not 64 hex digits")))?;
        Ok((
            path,
            Record {
                size,
                hash: *hash.as_bytes(),
            },
        ))
    }
}

impl<R: std::io::BufRead> Iterator for RecordLines<R> {
    type Item = Result<(PathBuf, Record), LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_line() {
                Err(e) => return Some(Err(e)),
                Ok(false) => return None,
                Ok(true) if self.buf.is_empty() => continue,
                Ok(true) => return Some(self.record()),
            }
        }
    }
}
