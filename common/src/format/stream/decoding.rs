//! Reading records: the framing ([`RecordReader`]) and each record's payload ([`decode()`]),
//! with every field held to its limit ([`super::limits`]) and checked for form.
//!
//! Invariants: decoding never panics and never allocates more than
//! [`limits::MAX_RECORD`] bytes for one record, whatever the input; a payload with bytes
//! left over, a truncated frame or an unknown tag is an error, never skipped.

use std::io::{self, Read};

use super::check::{StreamError, check_name};
use super::records::{
    Attrs, Counts, DataMode, Entry, FileEntry, Hash, Hello, Kind, Record, SpecialKind, Time,
    VersionHeader, Welcome,
};
use super::{MAGIC, limits};
use crate::escape;
use crate::format::version::VersionName;

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
