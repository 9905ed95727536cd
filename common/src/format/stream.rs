//! The replication stream (docs/format.md#replication-stream): the records a sender and a
//! receiver exchange over a pipe (or `ssh`), their byte encoding, and the limits every
//! decoded record is held to.
//!
//! Owns: the framing (one tag byte, the payload length as a LEB128 varint, the payload),
//! every record type ([`Record`]) and its fields, encoding ([`RecordWriter`]) and decoding
//! ([`RecordReader`]) with a byte count on each side, and the checks that need nothing but
//! the record itself: a name is one path component ([`check_name`]), a link text, an xattr
//! name, a mode, a time, a version directory name and a stamp are well formed, and nothing
//! exceeds its limit ([`limits`]). What a record means in its place (order, sizes that must
//! add up, hashes, a version number after the replica's newest) is the receiver's
//! (`engine::receive`).
//!
//! Invariants: decoding never panics and never allocates more than [`limits::MAX_RECORD`]
//! bytes for one record, whatever the input; a record decodes to exactly what was encoded
//! (tested by round trips); a payload with bytes left over, a truncated frame or an unknown
//! tag is an error ([`StreamError`]), never skipped.

use std::io::{self, Read, Write};

use crate::escape;
use crate::format::version::VersionName;

/// The first bytes of a sender's [`Hello`]: what a receiver checks before anything else.
pub const MAGIC: &[u8] = b"reverberator replication";

/// The stream format this code speaks (docs/format.md#replication-stream).
pub const FORMAT: u32 = 1;

/// The limits a decoded record is held to.
pub mod limits {
    /// The largest payload of one record.
    pub const MAX_RECORD: usize = 1 << 20;
    /// The largest payload of one [`super::Record::Data`] a sender writes.
    pub const MAX_DATA: usize = 256 << 10;
    /// The longest name (one path component), as Linux allows.
    pub const MAX_NAME: usize = 255;
    /// The longest symlink text (Linux's `PATH_MAX` less its NUL).
    pub const MAX_LINK_TEXT: usize = 4095;
    /// The most xattrs of one entry.
    pub const MAX_XATTRS: usize = 1024;
    /// The longest xattr value (Linux's `XATTR_SIZE_MAX`).
    pub const MAX_XATTR_VALUE: usize = 64 << 10;
    /// The deepest directory nesting a version or manifest may have.
    pub const MAX_DEPTH: usize = 8192;
    /// The most entries one version (or manifest) may have.
    pub const MAX_ENTRIES: u64 = 100_000_000;
    /// The most hashes a receiver may announce it holds.
    pub const MAX_HELD: u64 = 10_000_000;
    /// The most hashes in one [`super::Record::Held`].
    pub const HELD_PER_RECORD: usize = 16_384;
    /// The longest free text (a job name, a message, a settings document).
    pub const MAX_TEXT: usize = 64 << 10;
}

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// A time to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time {
    /// Seconds since the epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds, below 1,000,000,000.
    pub nanos: u32,
}

/// The attributes every entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attrs {
    /// Permission bits with setuid, setgid and sticky (at most 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Time,
    pub atime: Time,
    /// Xattr names and values (ACLs included), in name order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What kind of special file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    Fifo,
    CharDevice,
    BlockDevice,
}

/// Whether a file entry's data follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// [`Record::Data`] and [`Record::Zeros`] follow, adding up to the size.
    Follows,
    /// No data: the receiver said it holds a file with this hash ([`Record::Held`]).
    Held,
    /// No data: a manifest only describes.
    Described,
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub attrs: Attrs,
    /// Its size in bytes.
    pub size: u64,
    /// The BLAKE3 of its content.
    pub hash: Hash,
    pub data: DataMode,
    /// When it has several names in the version: the group the later names link to.
    pub group: Option<u64>,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Exactly as the entry of the same path in the version the receiver builds on.
    Same,
    /// A directory: its children follow, then [`Record::DirEnd`].
    Dir(Attrs),
    File(FileEntry),
    Symlink {
        attrs: Attrs,
        target: Vec<u8>,
    },
    Special {
        attrs: Attrs,
        kind: SpecialKind,
        rdev: u64,
    },
    /// Another name of the file of this group, sent earlier in this version.
    HardLink {
        group: u64,
    },
}

/// One entry of the directory being described: a name and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// One path component (checked by [`check_name`]).
    pub name: Vec<u8>,
    pub kind: Kind,
}

/// The sender's first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The stream format the sender speaks.
    pub format: u32,
    /// The job's name.
    pub job: String,
    /// The source vault's id (its marker's).
    pub vault: String,
    /// The job's source folder (recorded in the replica's job.toml, never read there).
    pub source: String,
    /// The job's settings as TOML (the replica's job starts with them).
    pub settings: String,
}

/// The receiver's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The stream format the receiver speaks.
    pub format: u32,
    /// The replica vault's id.
    pub vault: String,
    /// The replica job's newest version (`n`, directory), if any.
    pub newest: Option<(u64, String)>,
    /// How many hashes follow in [`Record::Held`] records.
    pub held: u64,
}

/// The start of one version (or of a manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionHeader {
    pub n: u64,
    /// `V{n}-{stamp}`.
    pub dir: String,
    /// index.tsv's `created` of the version in the source vault.
    pub created: String,
    /// The version it is described against (its `Same` entries); `None`: no `Same` entry.
    pub base: Option<u64>,
    /// The version root's own attributes.
    pub root: Attrs,
}

/// What one version (or manifest) held, to check against what arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// [`Record::Entry`] records.
    pub entries: u64,
    /// Bytes of file data ([`Record::Data`] payloads and [`Record::Zeros`] lengths).
    pub data_bytes: u64,
}

/// Every record, in both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Sender: who it is and which job.
    Hello(Hello),
    /// Receiver: what the replica holds.
    Welcome(Welcome),
    /// Receiver: hashes of file data it holds from an interrupted run.
    Held(Vec<Hash>),
    /// Sender: a version starts.
    Version(VersionHeader),
    /// An entry of the open directory.
    Entry(Entry),
    /// Bytes of the file being sent.
    Data(Vec<u8>),
    /// This many zero bytes of the file being sent (a hole).
    Zeros(u64),
    /// The open directory is complete.
    DirEnd,
    /// Sender: the version is complete.
    VersionEnd(Counts),
    /// Receiver: the version is durable under its final name.
    Ack { n: u64, dir: String },
    /// Sender: send the manifest of your newest version.
    ManifestRequest,
    /// Receiver: a manifest starts (its entries follow, data [`DataMode::Described`]).
    Manifest(VersionHeader),
    /// Receiver: the manifest is complete.
    ManifestEnd(Counts),
    /// Sender: nothing more.
    Bye,
    /// Either side: refused, why (the other side stops).
    Refused(String),
}

impl Record {
    /// The record's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Record::Hello(_) => b'H',
            Record::Welcome(_) => b'W',
            Record::Held(_) => b'h',
            Record::Version(_) => b'V',
            Record::Entry(_) => b'E',
            Record::Data(_) => b'D',
            Record::Zeros(_) => b'0',
            Record::DirEnd => b')',
            Record::VersionEnd(_) => b'Z',
            Record::Ack { .. } => b'A',
            Record::ManifestRequest => b'?',
            Record::Manifest(_) => b'M',
            Record::ManifestEnd(_) => b'z',
            Record::Bye => b'Q',
            Record::Refused(_) => b'X',
        }
    }

    /// A short name for messages (`entry`, `data`, …).
    pub fn what(&self) -> &'static str {
        match self {
            Record::Hello(_) => "hello",
            Record::Welcome(_) => "welcome",
            Record::Held(_) => "held hashes",
            Record::Version(_) => "version start",
            Record::Entry(_) => "entry",
            Record::Data(_) => "data",
            Record::Zeros(_) => "zeros",
            Record::DirEnd => "end of directory",
            Record::VersionEnd(_) => "end of version",
            Record::Ack { .. } => "acknowledgement",
            Record::ManifestRequest => "manifest request",
            Record::Manifest(_) => "manifest start",
            Record::ManifestEnd(_) => "end of manifest",
            Record::Bye => "bye",
            Record::Refused(_) => "refusal",
        }
    }
}

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The pipe or connection failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The stream ended inside a record.
    #[error("the stream ended inside a record (connection lost?)")]
    Truncated,
    /// A frame announces more than [`limits::MAX_RECORD`].
    #[error("a record of {len} bytes (tag {}) exceeds the limit of {} bytes", show_tag(*.tag), limits::MAX_RECORD)]
    TooLarge { tag: u8, len: u64 },
    /// A tag no record has.
    #[error("unknown record tag {}", show_tag(*.0))]
    UnknownTag(u8),
    /// A record that does not decode, or breaks a rule of its own.
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
}

impl StreamError {
    /// The stream ended or broke (the other side went away), as opposed to a record that
    /// is wrong.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, StreamError::Io(_) | StreamError::Truncated)
    }
}

fn show_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}'", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}

/// Checks that `name` is one path component: not empty, not `.` or `..`, no `/` and no
/// NUL, at most [`limits::MAX_NAME`] bytes.
pub fn check_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty name".into());
    }
    if name == b"." || name == b".." {
        return Err(format!("`{}` is not a name", escape::escape_bytes(name)));
    }
    if name.contains(&b'/') {
        return Err(format!(
            "`{}` is not a single path component",
            escape::escape_bytes(name)
        ));
    }
    if name.contains(&0) {
        return Err(format!(
            "`{}` contains a NUL byte",
            escape::escape_bytes(name)
        ));
    }
    if name.len() > limits::MAX_NAME {
        return Err(format!(
            "a name of {} bytes (at most {})",
            name.len(),
            limits::MAX_NAME
        ));
    }
    Ok(())
}

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

/// Reads records from a pipe, counting the bytes.
pub struct RecordReader<R: Read> {
    input: R,
    read: u64,
}

impl<R: Read> RecordReader<R> {
    pub fn new(input: R) -> Self {
        RecordReader { input, read: 0 }
    }

    /// Bytes read so far.
    pub fn read_bytes(&self) -> u64 {
        self.read
    }

    /// The next record; `None` when the stream ends cleanly between records.
    pub fn next_record(&mut self) -> Result<Option<Record>, StreamError> {
        let mut tag = [0u8; 1];
        loop {
            match self.input.read(&mut tag) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StreamError::Io(e)),
            }
        }
        self.read += 1;
        let tag = tag[0];
        let len = self.read_varint()?;
        if len > limits::MAX_RECORD as u64 {
            return Err(StreamError::TooLarge { tag, len });
        }
        let mut payload = vec![0u8; len as usize];
        self.input.read_exact(&mut payload).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StreamError::Truncated
            } else {
                StreamError::Io(e)
            }
        })?;
        self.read += len;
        decode(tag, &payload).map(Some)
    }

    fn read_varint(&mut self) -> Result<u64, StreamError> {
        let mut value = 0u64;
        for i in 0..10 {
            let mut b = [0u8; 1];
            match self.input.read_exact(&mut b) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(StreamError::Truncated);
                }
                Err(e) => return Err(StreamError::Io(e)),
            }
            self.read += 1;
            let low = u64::from(b[0] & 0x7f);
            if i == 9 && b[0] > 1 {
                return Err(StreamError::Malformed {
                    what: "frame",
                    why: "a length longer than 64 bits".into(),
                });
            }
            value |= low << (7 * i);
            if b[0] & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(StreamError::Malformed {
            what: "frame",
            why: "a length longer than 64 bits".into(),
        })
    }
}

// ---- encoding ----

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
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

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
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

// ---- decoding ----

/// A payload being decoded; every read is bounds-checked.
struct Fields<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn bad(&self, why: impl Into<String>) -> StreamError {
        StreamError::Malformed {
            what: self.what,
            why: why.into(),
        }
    }

    fn u64(&mut self) -> Result<u64, StreamError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.rest.split_first() else {
                return Err(self.bad("it ends inside a number"));
            };
            self.rest = rest;
            if i == 9 && b > 1 {
                return Err(self.bad("a number longer than 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.bad("a number longer than 64 bits"))
    }

    fn u32(&mut self, field: &str) -> Result<u32, StreamError> {
        let v = self.u64()?;
        u32::try_from(v).map_err(|_| self.bad(format!("{field} {v} does not fit 32 bits")))
    }

    fn i64(&mut self) -> Result<i64, StreamError> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn byte(&mut self) -> Result<u8, StreamError> {
        let Some((&b, rest)) = self.rest.split_first() else {
            return Err(self.bad("it ends early"));
        };
        self.rest = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StreamError> {
        if self.rest.len() < n {
            return Err(self.bad("it ends early"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn bytes(&mut self, field: &str, max: usize) -> Result<Vec<u8>, StreamError> {
        let len = self.u64()?;
        if len > max as u64 {
            return Err(self.bad(format!("{field} of {len} bytes (at most {max})")));
        }
        Ok(self.take(len as usize)?.to_vec())
    }

    fn text(&mut self, field: &str, max: usize) -> Result<String, StreamError> {
        let b = self.bytes(field, max)?;
        String::from_utf8(b).map_err(|_| self.bad(format!("{field} is not UTF-8")))
    }

    fn hash(&mut self) -> Result<Hash, StreamError> {
        let mut h = [0u8; 32];
        h.copy_from_slice(self.take(32)?);
        Ok(h)
    }

    fn time(&mut self, field: &str) -> Result<Time, StreamError> {
        let secs = self.i64()?;
        let nanos = self.u32(field)?;
        if nanos >= 1_000_000_000 {
            return Err(self.bad(format!("{field} has {nanos} nanoseconds")));
        }
        Ok(Time { secs, nanos })
    }

    fn attrs(&mut self) -> Result<Attrs, StreamError> {
        let mode = self.u32("mode")?;
        if mode > 0o7777 {
            return Err(self.bad(format!("mode {mode:o} has bits above 7777")));
        }
        let uid = self.u32("uid")?;
        let gid = self.u32("gid")?;
        let mtime = self.time("mtime")?;
        let atime = self.time("atime")?;
        let count = self.u64()?;
        if count > limits::MAX_XATTRS as u64 {
            return Err(self.bad(format!("{count} xattrs (at most {})", limits::MAX_XATTRS)));
        }
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for _ in 0..count {
            let name = self.bytes("an xattr name", limits::MAX_NAME)?;
            if name.is_empty() || name.contains(&0) {
                return Err(self.bad(format!(
                    "xattr name `{}` is empty or holds a NUL",
                    escape::escape_bytes(&name)
                )));
            }
            if xattrs.last().is_some_and(|(last, _)| *last >= name) {
                return Err(self.bad("xattr names out of order or repeated"));
            }
            let value = self.bytes("an xattr value", limits::MAX_XATTR_VALUE)?;
            xattrs.push((name, value));
        }
        Ok(Attrs {
            mode,
            uid,
            gid,
            mtime,
            atime,
            xattrs,
        })
    }

    fn header(&mut self) -> Result<VersionHeader, StreamError> {
        let n = self.u64()?;
        let dir = self.text("the version directory", limits::MAX_NAME)?;
        match VersionName::parse(&dir) {
            Some(v) if v.n == n && n > 0 => {}
            _ => {
                return Err(self.bad(format!(
                    "`{}` is not the directory name of version {n}",
                    escape::escape(&dir)
                )));
            }
        }
        let created = self.text("created", 64)?;
        if crate::format::time::parse_rfc3339(&created).is_none()
            || created.bytes().any(|b| b.is_ascii_control())
        {
            return Err(self.bad(format!(
                "created `{}` is not an RFC 3339 time",
                escape::escape(&created)
            )));
        }
        let base = match self.u64()? {
            0 => None,
            b => Some(b - 1),
        };
        let root = self.attrs()?;
        Ok(VersionHeader {
            n,
            dir,
            created,
            base,
            root,
        })
    }

    fn counts(&mut self) -> Result<Counts, StreamError> {
        Ok(Counts {
            entries: self.u64()?,
            data_bytes: self.u64()?,
        })
    }

    fn entry(&mut self) -> Result<Entry, StreamError> {
        let name = self.bytes("a name", limits::MAX_NAME)?;
        check_name(&name).map_err(|why| self.bad(why))?;
        let shown = || escape::escape_bytes(&name);
        let kind = match self.byte()? {
            0 => Kind::Same,
            1 => Kind::Dir(self.attrs()?),
            2 => {
                let attrs = self.attrs()?;
                let size = self.u64()?;
                let hash = self.hash()?;
                let data = match self.byte()? {
                    0 => DataMode::Follows,
                    1 => DataMode::Held,
                    2 => DataMode::Described,
                    other => {
                        return Err(self.bad(format!("{}: data mode {other}", shown())));
                    }
                };
                let group = match self.u64()? {
                    0 => None,
                    g => Some(g - 1),
                };
                Kind::File(FileEntry {
                    attrs,
                    size,
                    hash,
                    data,
                    group,
                })
            }
            3 => {
                let attrs = self.attrs()?;
                let target = self.bytes("a link text", limits::MAX_LINK_TEXT)?;
                if target.is_empty() || target.contains(&0) {
                    return Err(self.bad(format!(
                        "{}: a link text that is empty or holds a NUL",
                        shown()
                    )));
                }
                Kind::Symlink { attrs, target }
            }
            4 => {
                let attrs = self.attrs()?;
                let kind = match self.byte()? {
                    1 => SpecialKind::Fifo,
                    2 => SpecialKind::CharDevice,
                    3 => SpecialKind::BlockDevice,
                    other => {
                        return Err(self.bad(format!("{}: special kind {other}", shown())));
                    }
                };
                let rdev = self.u64()?;
                Kind::Special { attrs, kind, rdev }
            }
            5 => Kind::HardLink { group: self.u64()? },
            other => return Err(self.bad(format!("{}: entry kind {other}", shown()))),
        };
        Ok(Entry { name, kind })
    }
}

/// Decodes one record's payload.
pub fn decode(tag: u8, payload: &[u8]) -> Result<Record, StreamError> {
    let what = match tag {
        b'H' => "hello",
        b'W' => "welcome",
        b'h' => "held hashes",
        b'V' => "version start",
        b'E' => "entry",
        b'D' => "data",
        b'0' => "zeros",
        b')' => "end of directory",
        b'Z' => "end of version",
        b'A' => "acknowledgement",
        b'?' => "manifest request",
        b'M' => "manifest start",
        b'z' => "end of manifest",
        b'Q' => "bye",
        b'X' => "refusal",
        other => return Err(StreamError::UnknownTag(other)),
    };
    let mut f = Fields {
        rest: payload,
        what,
    };
    let record = match tag {
        b'H' => {
            let magic = f.bytes("the magic", 64)?;
            if magic != MAGIC {
                return Err(f.bad("this is not a reverberator replication stream"));
            }
            Record::Hello(Hello {
                format: f.u32("format")?,
                job: f.text("the job name", limits::MAX_NAME)?,
                vault: f.text("the vault id", 128)?,
                source: f.text("the source", limits::MAX_LINK_TEXT)?,
                settings: f.text("the settings", limits::MAX_TEXT)?,
            })
        }
        b'W' => {
            let format = f.u32("format")?;
            let vault = f.text("the vault id", 128)?;
            let newest = match f.u64()? {
                0 => None,
                n => {
                    let dir = f.text("the newest version", limits::MAX_NAME)?;
                    if VersionName::parse(&dir).is_none_or(|v| v.n != n) {
                        return Err(f.bad(format!(
                            "`{}` is not the directory name of version {n}",
                            escape::escape(&dir)
                        )));
                    }
                    Some((n, dir))
                }
            };
            let held = f.u64()?;
            if held > limits::MAX_HELD {
                return Err(f.bad(format!("{held} held hashes (at most {})", limits::MAX_HELD)));
            }
            Record::Welcome(Welcome {
                format,
                vault,
                newest,
                held,
            })
        }
        b'h' => {
            let count = f.u64()?;
            if count > limits::HELD_PER_RECORD as u64 {
                return Err(f.bad(format!("{count} hashes in one record")));
            }
            let mut hashes = Vec::with_capacity(count as usize);
            for _ in 0..count {
                hashes.push(f.hash()?);
            }
            Record::Held(hashes)
        }
        b'V' => Record::Version(f.header()?),
        b'M' => Record::Manifest(f.header()?),
        b'E' => Record::Entry(f.entry()?),
        b'D' => {
            let d = f.rest.to_vec();
            f.rest = &[];
            Record::Data(d)
        }
        b'0' => Record::Zeros(f.u64()?),
        b')' => Record::DirEnd,
        b'Z' => Record::VersionEnd(f.counts()?),
        b'z' => Record::ManifestEnd(f.counts()?),
        b'A' => {
            let n = f.u64()?;
            let dir = f.text("the version directory", limits::MAX_NAME)?;
            Record::Ack { n, dir }
        }
        b'?' => Record::ManifestRequest,
        b'Q' => Record::Bye,
        _ => Record::Refused(f.text("the message", limits::MAX_TEXT)?),
    };
    if !f.rest.is_empty() {
        return Err(f.bad(format!("{} bytes left over", f.rest.len())));
    }
    Ok(record)
}

/// Encodes `record` as its whole frame (tag, length, payload): for tests and fuzzers.
pub fn frame(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = RecordWriter::new(&mut out);
    let _ = w.send(record);
    out
}

#[cfg(test)]
mod tests;
