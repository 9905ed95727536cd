//! Reading versions out as replication records (docs/design.md#replication): a version of
//! the source vault against the version the replica builds on ([`send_version`], the
//! sender), and a version's whole manifest ([`describe_version`], the receiver, for a sender
//! that no longer holds the replica's newest version), read back by [`Manifest::read`].
//!
//! Theory of operation. Both versions are walked side by side from the root, directory by
//! directory. Where both resolve a name to the same physical entry (the same holder: a
//! vault link on one side to the version the other side's entry is in), the entry is
//! `same` and its subtree is never read: this is what makes a version cost what it changed.
//! Otherwise the entry is compared by what a version keeps (type, size, mode, owner, times,
//! xattrs, link text, device number, and for a file its BLAKE3 from the checksums, read
//! only when missing there): equal is `same`, different is sent whole, a directory is
//! walked. Against a manifest no holder is shared, so every directory is walked and every
//! leaf compared: O(tree) once, data only for what differs.
//!
//! Invariants: a file's data is sent only when the base has no equal file at its path, or
//! when the file has several names (sent once, its other names as links to it); the data
//! sent is the file's content as it is stored (holes as zero runs) and must match the
//! BLAKE3 its entry names, or the send fails naming it (a damaged source vault is never
//! copied on); the walks keep their own stacks (any depth).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::Whence;

use crate::engine::listing::{Detail, VersionEntry, list_version};
use crate::engine::receive::Incoming;
use crate::engine::stream_attrs;
use crate::error::{Error, IoContext, Result, show};
use crate::escape;
use crate::format::checksums::{self, Records};
use crate::format::relpath::RelPath;
use crate::format::stream::{
    Counts, DataMode, Entry, FileEntry, Hash, Kind, Record, RecordWriter, SpecialKind,
    VersionHeader, limits,
};
use crate::vault::layout::VersionName;
use crate::vault::tree::{self, Links, Lookalikes, Node, Visitor};

/// The most entries a manifest may have (a sender keeps it in memory).
pub(crate) const MAX_MANIFEST_ENTRIES: u64 = 20_000_000;

/// What a version is described against.
pub(crate) enum Base<'m> {
    /// Nothing: every entry is sent whole.
    None,
    /// A version of the same job in this vault (the replica's newest).
    Version { n: u64, dir: String },
    /// The replica's newest version, as its manifest.
    Manifest(&'m Manifest),
}

/// A version's manifest: every directory's entries, by the directory's path.
#[derive(Debug, Default)]
pub(crate) struct Manifest {
    pub n: u64,
    dirs: HashMap<Vec<u8>, BTreeMap<Vec<u8>, Kind>>,
}

impl Manifest {
    /// Reads a manifest from `input` after its [`Record::Manifest`] header.
    pub fn read(header: VersionHeader, input: &mut dyn Incoming) -> Result<Manifest> {
        let mut m = Manifest {
            n: header.n,
            dirs: HashMap::new(),
        };
        let bad = |why: String| Error::Stream(format!("the replica's manifest: {why}"));
        let mut open: Vec<Vec<u8>> = vec![Vec::new()];
        m.dirs.insert(Vec::new(), BTreeMap::new());
        let mut entries = 0u64;
        loop {
            match input.next_record()? {
                Record::Entry(e) => {
                    entries += 1;
                    if entries > MAX_MANIFEST_ENTRIES {
                        return Err(bad(format!("more than {MAX_MANIFEST_ENTRIES} entries")));
                    }
                    let Some(parent) = open.last().cloned() else {
                        return Err(bad("an entry after its root was closed".into()));
                    };
                    let path = join(&parent, &e.name);
                    if let Kind::Dir(_) = e.kind {
                        if open.len() >= limits::MAX_DEPTH {
                            return Err(bad("directories nested too deep".into()));
                        }
                        open.push(path.clone());
                        m.dirs.insert(path.clone(), BTreeMap::new());
                    }
                    let dir = m.dirs.entry(parent).or_default();
                    if dir.insert(e.name, e.kind).is_some() {
                        return Err(bad(format!(
                            "entry `{}` twice",
                            escape::escape_bytes(&path)
                        )));
                    }
                }
                Record::DirEnd => {
                    if open.pop().is_none() {
                        return Err(bad("an end of directory with none open".into()));
                    }
                }
                Record::ManifestEnd(_) if open.is_empty() => return Ok(m),
                other => return Err(bad(format!("unexpected {}", other.what()))),
            }
        }
    }

    fn children(&self, dir: &[u8]) -> Option<&BTreeMap<Vec<u8>, Kind>> {
        self.dirs.get(dir)
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A version to send: its number, directory and `created`.
pub(crate) struct Outgoing<'a> {
    pub n: u64,
    pub dir: &'a str,
    pub created: &'a str,
}

/// The base's side of one directory being walked.
enum BaseDir {
    /// No directory at this path in the base.
    None,
    /// The directory physically in a version of the job (its entries listed).
    Phys,
    /// The manifest's directory at this path.
    Manifest,
}

/// The base's entry for one name.
enum BaseChild<'m> {
    None,
    Phys(Box<VersionEntry>),
    Manifest(&'m Kind),
}

/// A directory of the version being sent, whose entries are being sent.
struct Open {
    rel: RelPath,
    base: BaseDir,
    base_children: BTreeMap<OsString, VersionEntry>,
    children: std::collections::btree_map::IntoIter<OsString, VersionEntry>,
}

/// Sends the version `v` of job folder `job` against `base`, data of files whose hash the
/// receiver holds (`held`) left out; returns what was sent. Writes every record of it
/// (header to end) to `out`, flushing at the end.
///
/// `unchanged` is asked, once every entry is sent and before the end of the version is, whether
/// what was read can be trusted (no retirement ran in the source meanwhile): when it says
/// no, the receiver is told to drop the version ([`Record::Refused`]) and its error is
/// returned.
pub(crate) fn send_version<W: Write>(
    job: &Path,
    v: &Outgoing<'_>,
    base: &Base<'_>,
    held: &HashSet<Hash>,
    out: &mut RecordWriter<W>,
    unchanged: &dyn Fn() -> Result<()>,
) -> Result<Counts> {
    let mut s = Sender {
        job,
        lookalikes: Lookalikes::load(job)?,
        records: HashMap::new(),
        groups: HashMap::new(),
        counts: Counts::default(),
        held,
        out,
    };
    let root = job.join(v.dir);
    let root_meta = fs::symlink_metadata(&root).ctx("cannot inspect", &root)?;
    let base_n = match base {
        Base::None => None,
        Base::Version { n, .. } => Some(*n),
        Base::Manifest(m) => Some(m.n),
    };
    s.send(&Record::Version(VersionHeader {
        n: v.n,
        dir: v.dir.to_owned(),
        created: v.created.to_owned(),
        base: base_n,
        root: stream_attrs::read(&root, &root_meta),
    }))?;
    let root_rel = RelPath::root();
    let (base_dir, base_children) = match base {
        Base::None => (BaseDir::None, BTreeMap::new()),
        Base::Version { dir, .. } => (
            BaseDir::Phys,
            list_version(job, dir, &root_rel, &s.lookalikes, Detail::Names)?,
        ),
        Base::Manifest(_) => (BaseDir::Manifest, BTreeMap::new()),
    };
    let children = list_version(job, v.dir, &root_rel, &s.lookalikes, Detail::Names)?;
    let mut open = vec![Open {
        rel: root_rel,
        base: base_dir,
        base_children,
        children: children.into_iter(),
    }];
    let manifest = match base {
        Base::Manifest(m) => Some(*m),
        _ => None,
    };
    while let Some(dir) = open.last_mut() {
        let Some((name, entry)) = dir.children.next() else {
            open.pop();
            s.send(&Record::DirEnd)?;
            continue;
        };
        let rel = dir.rel.join(&name);
        let base_child = match &dir.base {
            BaseDir::None => BaseChild::None,
            BaseDir::Phys => match dir.base_children.remove(&name) {
                Some(e) => BaseChild::Phys(Box::new(e)),
                None => BaseChild::None,
            },
            BaseDir::Manifest => match manifest
                .and_then(|m| m.children(dir.rel.as_bytes()))
                .and_then(|c| c.get(name.as_bytes()))
            {
                Some(k) => BaseChild::Manifest(k),
                None => BaseChild::None,
            },
        };
        if let BaseChild::Phys(b) = &base_child
            && b.holder == entry.holder
        {
            // The same physical entry on both sides: nothing below it is read.
            s.entry(&name, Kind::Same)?;
            continue;
        }
        let phys = entry.holder.clone();
        let path = tree::in_version(job, &phys, rel.as_path());
        let meta = fs::symlink_metadata(&path).ctx("cannot inspect", &path)?;
        if meta.is_dir() {
            let (base, base_children) = match base_child {
                BaseChild::Phys(b) => {
                    let bp = tree::in_version(job, &b.holder, rel.as_path());
                    if fs::symlink_metadata(&bp).is_ok_and(|m| m.is_dir()) {
                        let listed =
                            list_version(job, &b.holder, &rel, &s.lookalikes, Detail::Names)?;
                        (BaseDir::Phys, listed)
                    } else {
                        (BaseDir::None, BTreeMap::new())
                    }
                }
                BaseChild::Manifest(Kind::Dir(_)) => (BaseDir::Manifest, BTreeMap::new()),
                _ => (BaseDir::None, BTreeMap::new()),
            };
            s.entry(&name, Kind::Dir(stream_attrs::read(&path, &meta)))?;
            let children = list_version(job, &phys, &rel, &s.lookalikes, Detail::Names)?;
            open.push(Open {
                rel,
                base,
                base_children,
                children: children.into_iter(),
            });
            continue;
        }
        s.leaf(&name, &rel, &phys, &path, &meta, &base_child)?;
    }
    if let Err(e) = unchanged() {
        let _ = s.send(&Record::Refused(e.to_string()));
        let _ = s.out.flush();
        return Err(e);
    }
    let counts = s.counts;
    s.send(&Record::VersionEnd(counts))?;
    s.out.flush().map_err(disconnected)?;
    Ok(counts)
}

/// A write to the receiver that failed: it went away.
fn disconnected(e: std::io::Error) -> Error {
    Error::Unreachable(format!("the receiver went away: {e}"))
}

struct Sender<'s, W: Write> {
    job: &'s Path,
    lookalikes: Lookalikes,
    /// Checksums files read so far, by version directory.
    records: HashMap<String, Option<Records>>,
    /// Files with several names sent so far: (dev, ino) → group.
    groups: HashMap<(u64, u64), u64>,
    counts: Counts,
    held: &'s HashSet<Hash>,
    out: &'s mut RecordWriter<W>,
}

impl<W: Write> Sender<'_, W> {
    fn send(&mut self, r: &Record) -> Result<()> {
        self.out.send(r).map_err(disconnected)
    }

    fn entry(&mut self, name: &OsString, kind: Kind) -> Result<()> {
        self.counts.entries += 1;
        self.send(&Record::Entry(Entry {
            name: name.as_bytes().to_vec(),
            kind,
        }))
    }

    /// The BLAKE3 of file `rel` physically in version `phys` at `path`: its record, else
    /// read.
    fn hash_of(&mut self, phys: &str, rel: &RelPath, path: &Path) -> Result<Hash> {
        if !self.records.contains_key(phys) {
            let loaded = match VersionName::parse(phys) {
                Some(v) => checksums::read(self.job, v.n)?,
                None => None,
            };
            self.records.insert(phys.to_owned(), loaded);
        }
        if let Some(Some(records)) = self.records.get(phys)
            && let Some(r) = records.get(rel.as_path())
        {
            return Ok(r.hash);
        }
        let f = File::open(path).ctx("cannot open", path)?;
        Ok(checksums::hash_file(&f).ctx("cannot read", path)?.hash)
    }

    /// A file, source link or special file of the version: `same` when the base has it
    /// equal, else sent.
    fn leaf(
        &mut self,
        name: &OsString,
        rel: &RelPath,
        phys: &str,
        path: &Path,
        meta: &Metadata,
        base: &BaseChild<'_>,
    ) -> Result<()> {
        let ft = meta.file_type();
        let attrs = stream_attrs::read(path, meta);
        let base_kind = self.base_kind(rel, base)?;
        if ft.is_file() {
            let hash = self.hash_of(phys, rel, path)?;
            let linked = meta.nlink() > 1;
            if linked && let Some(&group) = self.groups.get(&(meta.dev(), meta.ino())) {
                return self.entry(name, Kind::HardLink { group });
            }
            if !linked
                && let Some(Kind::File(b)) = &base_kind
                && b.size == meta.len()
                && b.hash == hash
                && stream_attrs::same(&b.attrs, &attrs, true, false)
            {
                return self.entry(name, Kind::Same);
            }
            let group = linked.then(|| {
                let g = self.groups.len() as u64;
                self.groups.insert((meta.dev(), meta.ino()), g);
                g
            });
            let data = if self.held.contains(&hash) {
                DataMode::Held
            } else {
                DataMode::Follows
            };
            self.entry(
                name,
                Kind::File(FileEntry {
                    attrs,
                    size: meta.len(),
                    hash,
                    data,
                    group,
                }),
            )?;
            if data == DataMode::Follows {
                self.data(path, meta.len(), &hash, phys, rel)?;
            }
            return Ok(());
        }
        let kind = if ft.is_symlink() {
            let target = fs::read_link(path).ctx("cannot read link", path)?;
            Kind::Symlink {
                attrs,
                target: target.into_os_string().into_vec(),
            }
        } else {
            let kind = if ft.is_fifo() {
                SpecialKind::Fifo
            } else if ft.is_char_device() {
                SpecialKind::CharDevice
            } else if ft.is_block_device() {
                SpecialKind::BlockDevice
            } else {
                // A socket is never in a version; anything else cannot be sent.
                return Ok(());
            };
            Kind::Special {
                attrs,
                kind,
                rdev: meta.rdev(),
            }
        };
        if base_kind.as_ref().is_some_and(|b| same_leaf(b, &kind)) {
            return self.entry(name, Kind::Same);
        }
        self.entry(name, kind)
    }

    /// What the base holds at `rel`, as a stream entry (files with their hash), when it is
    /// not a directory.
    fn base_kind(&mut self, rel: &RelPath, base: &BaseChild<'_>) -> Result<Option<Kind>> {
        match base {
            BaseChild::None => Ok(None),
            BaseChild::Manifest(k) => Ok(Some((*k).clone())),
            BaseChild::Phys(b) => {
                let path = tree::in_version(self.job, &b.holder, rel.as_path());
                let meta = fs::symlink_metadata(&path).ctx("cannot inspect", &path)?;
                let attrs = stream_attrs::read(&path, &meta);
                let ft = meta.file_type();
                Ok(Some(if ft.is_file() {
                    let hash = self.hash_of(&b.holder.clone(), rel, &path)?;
                    Kind::File(FileEntry {
                        attrs,
                        size: meta.len(),
                        hash,
                        data: DataMode::Described,
                        group: None,
                    })
                } else if ft.is_symlink() {
                    Kind::Symlink {
                        attrs,
                        target: fs::read_link(&path)
                            .ctx("cannot read link", &path)?
                            .into_os_string()
                            .into_vec(),
                    }
                } else if ft.is_dir() {
                    Kind::Dir(attrs)
                } else {
                    Kind::Special {
                        attrs,
                        kind: if ft.is_fifo() {
                            SpecialKind::Fifo
                        } else if ft.is_char_device() {
                            SpecialKind::CharDevice
                        } else {
                            SpecialKind::BlockDevice
                        },
                        rdev: meta.rdev(),
                    }
                }))
            }
        }
    }

    /// Sends the data of the file at `path` (`size` bytes): data runs as data records,
    /// holes as zero runs, checked against `hash` as it goes.
    fn data(
        &mut self,
        path: &Path,
        size: u64,
        hash: &Hash,
        phys: &str,
        rel: &RelPath,
    ) -> Result<()> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
            .ctx("cannot open", path)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; limits::MAX_DATA];
        let mut pos = 0u64;
        while pos < size {
            let start = match nix::unistd::lseek(&f, pos as libc::off_t, Whence::SeekData) {
                Ok(s) => (s as u64).min(size),
                // ENXIO: only a hole remains; anything else (no SEEK_DATA here): all data.
                Err(nix::errno::Errno::ENXIO) => size,
                Err(_) => pos,
            };
            if start > pos {
                self.zeros(&mut hasher, start - pos)?;
                pos = start;
                continue;
            }
            let end = match nix::unistd::lseek(&f, pos as libc::off_t, Whence::SeekHole) {
                Ok(e) => (e as u64).clamp(pos + 1, size),
                Err(_) => size,
            };
            while pos < end {
                let want = ((end - pos) as usize).min(buf.len());
                let n = f.read_at(&mut buf[..want], pos).ctx("cannot read", path)?;
                if n == 0 {
                    return Err(Error::Damaged(format!(
                        "{} ended at {pos} of its {size} bytes while it was sent",
                        show(path)
                    )));
                }
                hasher.update(&buf[..n]);
                self.out.send_data(&buf[..n]).map_err(disconnected)?;
                self.counts.data_bytes += n as u64;
                pos += n as u64;
            }
        }
        if hasher.finalize().as_bytes() != hash {
            return Err(Error::Damaged(format!(
                "{}/{} does not match its checksum: not sent (run reverberator verify --data)",
                phys,
                escape::escape_bytes(rel.as_bytes())
            )));
        }
        Ok(())
    }

    fn zeros(&mut self, hasher: &mut blake3::Hasher, mut n: u64) -> Result<()> {
        self.send(&Record::Zeros(n))?;
        self.counts.data_bytes += n;
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            hasher.update(&ZEROS[..k]);
            n -= k as u64;
        }
        Ok(())
    }
}

/// Are two non-directory entries the same by what a version keeps (content: link text,
/// device; and attributes)?
fn same_leaf(base: &Kind, new: &Kind) -> bool {
    match (base, new) {
        (
            Kind::Symlink {
                attrs: a,
                target: t,
            },
            Kind::Symlink {
                attrs: b,
                target: u,
            },
        ) => t == u && stream_attrs::same(a, b, true, true),
        (
            Kind::Special {
                attrs: a,
                kind: k,
                rdev: r,
            },
            Kind::Special {
                attrs: b,
                kind: l,
                rdev: s,
            },
        ) => k == l && r == s && stream_attrs::same(a, b, true, false),
        _ => false,
    }
}

/// Writes the whole manifest of version `dir` (number `n`) of job folder `job` to `out`:
/// every entry through the vault links, files with their BLAKE3 and no data.
pub(crate) fn describe_version<W: Write>(
    job: &Path,
    n: u64,
    dir: &str,
    created: &str,
    out: &mut RecordWriter<W>,
) -> Result<Counts> {
    let lookalikes = Lookalikes::load(job)?;
    let root = job.join(dir);
    let meta = fs::symlink_metadata(&root).ctx("cannot inspect", &root)?;
    out.send(&Record::Manifest(VersionHeader {
        n,
        dir: dir.to_owned(),
        created: created.to_owned(),
        base: None,
        root: stream_attrs::read(&root, &meta),
    }))
    .map_err(disconnected)?;
    struct Describe<'a, W: Write> {
        job: &'a Path,
        out: &'a mut RecordWriter<W>,
        records: HashMap<String, Option<Records>>,
        counts: Counts,
    }
    impl<W: Write> Describe<'_, W> {
        fn send(&mut self, r: &Record) -> Result<()> {
            self.out.send(r).map_err(disconnected)
        }
    }
    impl<W: Write> Visitor for Describe<'_, W> {
        fn entry(&mut self, node: &mut Node) -> Result<()> {
            let Some(name) = node.rel.file_name().map(|n| n.as_bytes().to_vec()) else {
                return Ok(()); // the root: its attributes are in the header
            };
            let meta = node.metadata()?.clone();
            let attrs = stream_attrs::read(&node.abs, &meta);
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir(attrs)
            } else if ft.is_file() {
                if !self.records.contains_key(&node.phys) {
                    let loaded = match VersionName::parse(&node.phys) {
                        Some(v) => checksums::read(self.job, v.n)?,
                        None => None,
                    };
                    self.records.insert(node.phys.clone(), loaded);
                }
                let recorded = self
                    .records
                    .get(&node.phys)
                    .and_then(|r| r.as_ref())
                    .and_then(|r| r.get(&node.rel))
                    .map(|r| r.hash);
                let hash = match recorded {
                    Some(h) => h,
                    None => {
                        let f = File::open(&node.abs).ctx("cannot open", &node.abs)?;
                        checksums::hash_file(&f).ctx("cannot read", &node.abs)?.hash
                    }
                };
                Kind::File(FileEntry {
                    attrs,
                    size: meta.len(),
                    hash,
                    data: DataMode::Described,
                    group: None,
                })
            } else if ft.is_symlink() {
                Kind::Symlink {
                    attrs,
                    target: fs::read_link(&node.abs)
                        .ctx("cannot read link", &node.abs)?
                        .into_os_string()
                        .into_vec(),
                }
            } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
                Kind::Special {
                    attrs,
                    kind: if ft.is_fifo() {
                        SpecialKind::Fifo
                    } else if ft.is_char_device() {
                        SpecialKind::CharDevice
                    } else {
                        SpecialKind::BlockDevice
                    },
                    rdev: meta.rdev(),
                }
            } else {
                return Ok(());
            };
            self.counts.entries += 1;
            self.send(&Record::Entry(Entry { name, kind }))
        }

        fn dir_done(&mut self, _node: &mut Node) -> Result<()> {
            self.send(&Record::DirEnd)
        }
    }
    let mut d = Describe {
        job,
        out,
        records: HashMap::new(),
        counts: Counts::default(),
    };
    tree::Walk::new(job, &lookalikes, Links::Follow)
        .sorted()
        .run(dir, Path::new(""), &mut d)?;
    let counts = d.counts;
    d.send(&Record::ManifestEnd(counts))?;
    out.flush().map_err(disconnected)?;
    Ok(counts)
}

/// The paths of the regular files under `root` (not following links) with their hashes,
/// for a receiver's held data; unreadable ones are left out.
pub(crate) fn hash_files_under(root: &Path) -> HashMap<Hash, PathBuf> {
    let mut out = HashMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file()
                && let Ok(f) = File::open(e.path())
                && let Ok(r) = checksums::hash_file(&f)
            {
                out.insert(r.hash, e.path());
            }
        }
    }
    out
}
