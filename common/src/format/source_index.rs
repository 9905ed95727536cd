//! The source index (`<job>/source-index/`, docs/format.md#source-index): a cache of the
//! source's facts that the current version's entries equal, so that a rescan reads the
//! source once and leaves the vault alone for every entry whose facts are unchanged (what
//! git's index is to a work tree).
//!
//! Owns the bytes: the facts of one entry ([`Facts`]), the base file (a header keyed to the
//! version it describes, then one block per directory in depth-first name order; read
//! forward only by [`BaseReader`], written by [`BaseWriter`]), and the per-version deltas
//! ([`Delta`]: the paths a build may have changed since its parent version).
//!
//! Invariants: it is a cache and never trusted for more than it proves. Every block is
//! checked against its own BLAKE3, keyed with the file's nonce, before it is used: a block
//! that fails, comes out of order or ends early ends the reader (what follows counts as
//! absent, which only costs time); a header or delta that fails its hash, carries an
//! unknown magic (format version) or names another version is not used at all. Nothing
//! here decides what to trust: [`crate::engine::rescan_index`] does.

use std::cmp::Ordering;
use std::fs::{self, File, Metadata};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::fsutil::{self, Access};

/// The folder in the job folder.
pub const DIR: &str = "source-index";
/// The base file in [`DIR`].
pub const BASE: &str = "base";
/// The base file's magic: the format's name and its version (1).
const BASE_MAGIC: &[u8; 8] = b"RVSIDX\x00\x01";
/// A delta file's magic.
const DELTA_MAGIC: &[u8; 8] = b"RVSDLT\x00\x01";
/// A block's hash, and the header's.
const HASH_LEN: usize = 32;
/// No block is larger (a directory of some 300,000 entries): a length beyond is damage.
const MAX_BLOCK: usize = 1 << 25;

/// The facts of one source entry that a rescan compares (its `lstat`). `mode` holds the
/// type bits too. The xattrs and ACLs are not kept: changing them bumps `ctime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub ino: u64,
    pub dev: u64,
}

impl Facts {
    /// The facts of an `lstat`.
    pub fn of(m: &Metadata) -> Facts {
        use std::os::unix::fs::MetadataExt;
        let nanos = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        Facts {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: (m.mtime(), nanos(m.mtime_nsec())),
            ctime: (m.ctime(), nanos(m.ctime_nsec())),
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    /// Were both its mtime and its ctime strictly before `t` (seconds, nanoseconds)? A
    /// later change of the entry then changes one of them.
    pub fn settled_before(&self, t: (i64, u32)) -> bool {
        self.mtime < t && self.ctime < t
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.mode.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.mtime.0.to_le_bytes());
        out.extend_from_slice(&self.mtime.1.to_le_bytes());
        out.extend_from_slice(&self.ctime.0.to_le_bytes());
        out.extend_from_slice(&self.ctime.1.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&self.dev.to_le_bytes());
    }

    fn decode(c: &mut Cursor<'_>) -> Option<Facts> {
        Some(Facts {
            mode: c.u32()?,
            uid: c.u32()?,
            gid: c.u32()?,
            size: c.u64()?,
            mtime: (c.i64()?, c.u32()?),
            ctime: (c.i64()?, c.u32()?),
            ino: c.u64()?,
            dev: c.u64()?,
        })
    }
}

/// What a base describes: the version its facts are of, when they were recorded, and the
/// settings under which they were (a digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The version directory (`V<n>-<stamp>`) whose entries the facts describe.
    pub version: String,
    /// A time before the first `lstat` the facts come from (seconds, nanoseconds).
    pub recorded_at: (i64, u32),
    /// A digest of what decides what a version holds (source, excludes, owners, …).
    pub settings: [u8; 32],
    /// Keys every block's hash: a block of another file never passes.
    pub nonce: [u8; 16],
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut out = BASE_MAGIC.to_vec();
        put_bytes16(&mut out, self.version.as_bytes());
        out.extend_from_slice(&self.recorded_at.0.to_le_bytes());
        out.extend_from_slice(&self.recorded_at.1.to_le_bytes());
        out.extend_from_slice(&self.settings);
        out.extend_from_slice(&self.nonce);
        let hash = blake3::hash(&out);
        out.extend_from_slice(hash.as_bytes());
        out
    }

    fn read(r: &mut impl Read) -> Option<Header> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).ok()?;
        if &magic != BASE_MAGIC {
            return None;
        }
        let mut len = [0u8; 2];
        r.read_exact(&mut len).ok()?;
        let mut rest = vec![0u8; usize::from(u16::from_le_bytes(len)) + 12 + 32 + 16];
        r.read_exact(&mut rest).ok()?;
        let mut hash = [0u8; HASH_LEN];
        r.read_exact(&mut hash).ok()?;
        let mut all = magic.to_vec();
        all.extend_from_slice(&len);
        all.extend_from_slice(&rest);
        if blake3::hash(&all).as_bytes() != &hash {
            return None;
        }
        let mut c = Cursor::new(&all[8..]);
        let version = String::from_utf8(c.bytes16()?.to_vec()).ok()?;
        let recorded_at = (c.i64()?, c.u32()?);
        let settings = c.array::<32>()?;
        let nonce = c.array::<16>()?;
        Some(Header {
            version,
            recorded_at,
            settings,
            nonce,
        })
    }
}

/// One directory's block: its path (relative to the source, `""` for the root) and every
/// name the version holds in it, each with the source's facts when a rescan found it the
/// same as the version's (`None`: the version has that name, nothing is vouched for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub dir: Vec<u8>,
    /// Sorted by name, names unique.
    pub entries: Vec<(Vec<u8>, Option<Facts>)>,
}

impl Block {
    /// The facts recorded for child `name`, if it has some.
    pub fn get(&self, name: &[u8]) -> Option<&Facts> {
        self.entries
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .ok()
            .and_then(|i| self.entries[i].1.as_ref())
    }

    fn encode(&self, nonce: &[u8; 16]) -> Vec<u8> {
        let mut body = Vec::with_capacity(8 + self.dir.len() + self.entries.len() * 80);
        put_bytes32(&mut body, &self.dir);
        body.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (name, facts) in &self.entries {
            put_bytes16(&mut body, name);
            match facts {
                Some(f) => {
                    body.push(1);
                    f.encode(&mut body);
                }
                None => body.push(0),
            }
        }
        let mut out = Vec::with_capacity(body.len() + 4 + HASH_LEN);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(keyed_hash(nonce, &body).as_bytes());
        out
    }

    fn decode(body: &[u8]) -> Option<Block> {
        let mut c = Cursor::new(body);
        let dir = c.bytes32()?.to_vec();
        let count = c.u32()? as usize;
        let mut entries: Vec<(Vec<u8>, Option<Facts>)> = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let name = c.bytes16()?.to_vec();
            if entries.last().is_some_and(|(last, _)| *last >= name) {
                return None;
            }
            let facts = match c.array::<1>()? {
                [0] => None,
                [1] => Some(Facts::decode(&mut c)?),
                _ => return None,
            };
            entries.push((name, facts));
        }
        c.at_end().then_some(Block { dir, entries })
    }
}

fn keyed_hash(nonce: &[u8; 16], body: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(nonce);
    h.update(body);
    h.finalize()
}

/// Depth-first name order of relative paths (`""` first, a directory before what is in
/// it, siblings by the bytes of their names): the order of a rescan's walk and of the
/// base's blocks.
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    fn parts(p: &[u8]) -> impl Iterator<Item = &[u8]> {
        p.split(|&c| c == b'/').filter(|_| !p.is_empty())
    }
    parts(a).cmp(parts(b))
}

/// Reads a base forward, block by block.
pub struct BaseReader {
    r: BufReader<File>,
    header: Header,
    /// A block read but not asked for yet.
    ahead: Option<Block>,
    /// The directory of the last block read (blocks come strictly in walk order).
    last: Option<Vec<u8>>,
    /// Damage, the end, or blocks out of order: nothing more is read.
    ended: bool,
}

impl BaseReader {
    /// Opens the base at `path`; `None` when it is missing, unreadable or its header fails.
    pub fn open(path: &Path) -> Option<BaseReader> {
        let mut r = BufReader::with_capacity(1 << 16, File::open(path).ok()?);
        let header = Header::read(&mut r)?;
        Some(BaseReader {
            r,
            header,
            ahead: None,
            last: None,
            ended: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The block of directory `dir`, if the base has one; blocks before it are passed over.
    /// Asked for in [`walk_order`], every block is found; asked for out of order, a block
    /// already passed is not.
    pub fn block(&mut self, dir: &[u8]) -> Option<Block> {
        loop {
            if self.ahead.is_none() {
                self.ahead = self.next_block();
            }
            let ahead = self.ahead.as_ref()?;
            match walk_order(&ahead.dir, dir) {
                Ordering::Less => self.ahead = None,
                Ordering::Equal => return self.ahead.take(),
                Ordering::Greater => return None,
            }
        }
    }

    fn next_block(&mut self) -> Option<Block> {
        if self.ended {
            return None;
        }
        let block = self.read_block();
        if block.is_none() {
            self.ended = true;
        }
        block
    }

    fn read_block(&mut self) -> Option<Block> {
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len).ok()?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_BLOCK {
            return None;
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).ok()?;
        let mut hash = [0u8; HASH_LEN];
        self.r.read_exact(&mut hash).ok()?;
        if keyed_hash(&self.header.nonce, &body).as_bytes() != &hash {
            return None;
        }
        let block = Block::decode(&body)?;
        // Blocks come strictly in walk order: one that does not is damage.
        if let Some(prev) = &self.last
            && walk_order(prev, &block.dir) != Ordering::Less
        {
            return None;
        }
        self.last = Some(block.dir.clone());
        Some(block)
    }
}

/// Writes a base under the job's `.tmp/`, then renames it into place.
pub struct BaseWriter {
    w: BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    nonce: [u8; 16],
    last: Option<Vec<u8>>,
}

impl BaseWriter {
    /// Starts the base that will replace `dest`, built in `tmp_dir`, with `access`.
    pub fn create(tmp_dir: &Path, dest: &Path, header: &Header, access: Access) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = fsutil::temp_in(tmp_dir, dest);
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .ctx("cannot create", &tmp)?;
        access.apply_to_open(&f, &tmp, false)?;
        let mut w = BufWriter::with_capacity(1 << 16, f);
        w.write_all(&header.encode()).ctx("cannot write", &tmp)?;
        Ok(BaseWriter {
            w,
            tmp,
            dest: dest.to_path_buf(),
            nonce: header.nonce,
            last: None,
        })
    }

    /// Appends `block`; blocks must come in [`walk_order`] (one that does not is left out).
    pub fn push(&mut self, block: &Block) -> Result<()> {
        if let Some(last) = &self.last
            && walk_order(last, &block.dir) != Ordering::Less
        {
            return Ok(());
        }
        self.w
            .write_all(&block.encode(&self.nonce))
            .ctx("cannot write", &self.tmp)?;
        self.last = Some(block.dir.clone());
        Ok(())
    }

    /// Makes it durable and renames it into place (the folder fsynced).
    pub fn finish(self) -> Result<()> {
        let BaseWriter { w, tmp, dest, .. } = self;
        let result = (|| {
            let f = w
                .into_inner()
                .map_err(|e| e.into_error())
                .ctx("cannot write", &tmp)?;
            f.sync_all().ctx("cannot fsync", &tmp)?;
            fs::rename(&tmp, &dest).ctx("cannot rename into place", &dest)?;
            fsutil::fsync_dir(dest.parent().unwrap_or(Path::new(".")))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Gives up: the temporary file is removed.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// What one build may have changed: the version it made, the one it was built on, and the
/// paths (relative to the source) whose facts the base no longer vouches for. A path in
/// `subtrees` counts with everything below it; one in `entries` only itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    pub parent: String,
    pub version: String,
    pub subtrees: Vec<Vec<u8>>,
    pub entries: Vec<Vec<u8>>,
}

impl Delta {
    /// The file name of the delta of `version`.
    pub fn file_name(version: &str) -> String {
        format!("{version}.delta")
    }

    /// The version a delta file name is of.
    pub fn version_of(file_name: &str) -> Option<&str> {
        file_name.strip_suffix(".delta")
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = DELTA_MAGIC.to_vec();
        put_bytes16(&mut out, self.parent.as_bytes());
        put_bytes16(&mut out, self.version.as_bytes());
        for list in [&self.subtrees, &self.entries] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for p in list {
                put_bytes32(&mut out, p);
            }
        }
        let hash = blake3::hash(&out);
        out.extend_from_slice(hash.as_bytes());
        out
    }

    /// The delta in `bytes`; `None` for anything damaged or of another format version.
    pub fn decode(bytes: &[u8]) -> Option<Delta> {
        let (body, hash) = bytes.split_at_checked(bytes.len().checked_sub(HASH_LEN)?)?;
        if blake3::hash(body).as_bytes() != hash {
            return None;
        }
        let mut c = Cursor::new(body.strip_prefix(DELTA_MAGIC)?);
        let parent = String::from_utf8(c.bytes16()?.to_vec()).ok()?;
        let version = String::from_utf8(c.bytes16()?.to_vec()).ok()?;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = c.u32()? as usize;
            for _ in 0..n {
                list.push(c.bytes32()?.to_vec());
            }
        }
        let [subtrees, entries] = lists;
        c.at_end().then_some(Delta {
            parent,
            version,
            subtrees,
            entries,
        })
    }
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&b[..usize::from(len)]);
}

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads little-endian fields from a byte slice; `None` past its end.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8]) -> Self {
        Cursor { b }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.b.split_at_checked(n)?;
        self.b = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn bytes16(&mut self) -> Option<&'a [u8]> {
        let n = u16::from_le_bytes(self.array()?);
        self.take(usize::from(n))
    }

    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn at_end(&self) -> bool {
        self.b.is_empty()
    }
}

#[cfg(test)]
mod tests;
