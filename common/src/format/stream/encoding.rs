//! Writing records: the framing (tag, LEB128 payload length, payload) and each record's
//! payload encoding ([`RecordWriter`], [`frame`]).
//!
//! Invariant: what is written here [`super::decoding::decode`] reads back to the same record
//! (round-trip tests in `stream/tests.rs`).

use std::io::{self, Write};

use super::MAGIC;
use super::records::{Attrs, Counts, DataMode, Kind, Record, SpecialKind, Time, VersionHeader};

/// Writes records to a pipe, counting the bytes.
pub struct RecordWriter<W: Write> {
    out: W,
    written: u64,
    buf: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    pub fn new(out: W) -> Self {
        RecordWriter {
            out,
            written: 0,
            buf: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes one record (buffered by the caller's writer; see [`RecordWriter::flush`]).
    pub fn send(&mut self, record: &Record) -> io::Result<()> {
        self.buf.clear();
        encode_payload(record, &mut self.buf);
        let mut head = Vec::with_capacity(11);
        head.push(record.tag());
        put_u64(&mut head, self.buf.len() as u64);
        self.out.write_all(&head)?;
        self.out.write_all(&self.buf)?;
        self.written += (head.len() + self.buf.len()) as u64;
        Ok(())
    }

    /// Writes a [`Record::Data`] from a borrowed slice (no copy).
    pub fn send_data(&mut self, data: &[u8]) -> io::Result<()> {
        let mut head = Vec::with_capacity(11);
        head.push(b'D');
        put_u64(&mut head, data.len() as u64);
        self.out.write_all(&head)?;
        self.out.write_all(data)?;
        self.written += (head.len() + data.len()) as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The writer underneath.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

pub(super) fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_time(out: &mut Vec<u8>, t: Time) {
    put_i64(out, t.secs);
    put_u64(out, u64::from(t.nanos));
}

fn put_attrs(out: &mut Vec<u8>, a: &Attrs) {
    put_u64(out, u64::from(a.mode));
    put_u64(out, u64::from(a.uid));
    put_u64(out, u64::from(a.gid));
    put_time(out, a.mtime);
    put_time(out, a.atime);
    put_u64(out, a.xattrs.len() as u64);
    for (name, value) in &a.xattrs {
        put_bytes(out, name);
        put_bytes(out, value);
    }
}

fn put_header(out: &mut Vec<u8>, h: &VersionHeader) {
    put_u64(out, h.n);
    put_bytes(out, h.dir.as_bytes());
    put_bytes(out, h.created.as_bytes());
    put_u64(out, h.base.map_or(0, |b| b + 1));
    put_attrs(out, &h.root);
}

fn put_counts(out: &mut Vec<u8>, c: &Counts) {
    put_u64(out, c.entries);
    put_u64(out, c.data_bytes);
}

fn encode_payload(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Hello(h) => {
            put_bytes(out, MAGIC);
            put_u64(out, u64::from(h.format));
            put_bytes(out, h.job.as_bytes());
            put_bytes(out, h.vault.as_bytes());
            put_bytes(out, h.source.as_bytes());
            put_bytes(out, h.settings.as_bytes());
        }
        Record::Welcome(w) => {
            put_u64(out, u64::from(w.format));
            put_bytes(out, w.vault.as_bytes());
            match &w.newest {
                Some((n, dir)) => {
                    put_u64(out, *n);
                    put_bytes(out, dir.as_bytes());
                }
                None => put_u64(out, 0),
            }
            put_u64(out, w.held);
        }
        Record::Held(hashes) => {
            put_u64(out, hashes.len() as u64);
            for h in hashes {
                out.extend_from_slice(h);
            }
        }
        Record::Version(h) | Record::Manifest(h) => put_header(out, h),
        Record::Entry(e) => {
            put_bytes(out, &e.name);
            match &e.kind {
                Kind::Same => out.push(0),
                Kind::Dir(a) => {
                    out.push(1);
                    put_attrs(out, a);
                }
                Kind::File(f) => {
                    out.push(2);
                    put_attrs(out, &f.attrs);
                    put_u64(out, f.size);
                    out.extend_from_slice(&f.hash);
                    out.push(match f.data {
                        DataMode::Follows => 0,
                        DataMode::Held => 1,
                        DataMode::Described => 2,
                    });
                    put_u64(out, f.group.map_or(0, |g| g + 1));
                }
                Kind::Symlink { attrs, target } => {
                    out.push(3);
                    put_attrs(out, attrs);
                    put_bytes(out, target);
                }
                Kind::Special { attrs, kind, rdev } => {
                    out.push(4);
                    put_attrs(out, attrs);
                    out.push(match kind {
                        SpecialKind::Fifo => 1,
                        SpecialKind::CharDevice => 2,
                        SpecialKind::BlockDevice => 3,
                    });
                    put_u64(out, *rdev);
                }
                Kind::HardLink { group } => {
                    out.push(5);
                    put_u64(out, *group);
                }
            }
        }
        Record::Data(d) => out.extend_from_slice(d),
        Record::Zeros(n) => put_u64(out, *n),
        Record::DirEnd | Record::ManifestRequest | Record::Bye => {}
        Record::VersionEnd(c) | Record::ManifestEnd(c) => put_counts(out, c),
        Record::Ack { n, dir } => {
            put_u64(out, *n);
            put_bytes(out, dir.as_bytes());
        }
        Record::Refused(why) => put_bytes(out, why.as_bytes()),
    }
}

/// Encodes `record` as its whole frame (tag, length, payload): for tests and fuzzers.
pub fn frame(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = RecordWriter::new(&mut out);
    let _ = w.send(record);
    out
}
