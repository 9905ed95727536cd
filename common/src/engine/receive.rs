//! Receiving one version of a replicated job (docs/design.md#replication): the records of
//! the replication stream ([`crate::format::stream`]) turned into a new version of the
//! replica, built like a local one.
//!
//! Owns the receiver's walk ([`receive`]): a stack of open directories fed entry by entry;
//! an entry `same` as the base becomes the base's entry kept ([`Builder::keep_old`]: a vault
//! link to the replica's own holder, a shared link inode, a source link recreated, a deep
//! entry materialised), every other entry is made from the stream, and a directory whose
//! children all turned out `same` (and whose attributes are the base's) collapses back
//! into one link. The version is then finished and published by the engine's own steps:
//! [`Builder::keep_links_inside`] (I8) and [`publish::publish`] (durable, checksums,
//! completion record, rename, index.tsv, `current`, journal: I6, I9).
//!
//! Invariants:
//! - Nothing is written outside `.partial/<version>/` until the version is published; every
//!   name written there is one component checked by the codec, the names of a directory
//!   come strictly in order (so never twice), and every directory written into is one this
//!   walk created: no entry can reach outside the version through `..`, a `/`, or a link.
//! - Every received file's content matches the BLAKE3 its entry names, and its size the
//!   data that arrived, or the whole version is refused (the partial version removed); the
//!   refusal names the entry ([`Error::Stream`]).
//! - A version is only built on the replica's newest version (the base the stream names),
//!   and only when its number is after the newest.
//! - A stream that ends mid-version ([`Error::Unreachable`]) leaves the partial version in
//!   `.partial/` for the next run to take its data from (`run::receive`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::beneath::Tree;
use crate::engine::build_report::NoProgress;
use crate::engine::build_state::Builder;
use crate::engine::copy;
use crate::engine::listing::{Detail, VersionEntry};
use crate::engine::publish::{self, NewVersion};
use crate::engine::stream_attrs;
use crate::error::{Error, IoContext, Result};
use crate::escape;
use crate::format::capabilities::fidelity_of;
use crate::format::checksums;
use crate::format::exclude::Excludes;
use crate::format::index::{IndexRow, read_index_or_empty};
use crate::format::journal::JournalEvent;
use crate::format::relpath::RelPath;
use crate::format::stream::{
    Attrs, Counts, DataMode, Entry, FileEntry, Hash, Kind, Record, SpecialKind, VersionHeader,
    check_name, limits,
};
use crate::vault::job::JobCtx;
use crate::vault::layout::VersionName;
use crate::vault::tree::{Entry as TreeEntry, Lookalikes};

/// Where the receiver takes the next record from. The end of the stream, or a broken one,
/// is [`Error::Unreachable`]; a record that does not decode is [`Error::Stream`].
pub(crate) trait Incoming {
    fn next_record(&mut self) -> Result<Record>;
}

/// File data kept from an interrupted run, by the hash of its content.
#[derive(Debug, Default)]
pub(crate) struct HeldData {
    pub by_hash: HashMap<Hash, PathBuf>,
}

/// A version received and published.
#[derive(Debug)]
pub(crate) struct Received {
    pub name: VersionName,
}

/// A refusal of the stream.
fn refused(why: String) -> Error {
    Error::Stream(why)
}

fn shown(rel: &RelPath) -> String {
    escape::escape_bytes(rel.as_bytes())
}

/// Receives the version `header` starts from `input` into the job `ctx` (whose lock the
/// caller holds, after recovery), and publishes it.
pub(crate) fn receive(
    ctx: &mut JobCtx,
    header: VersionHeader,
    input: &mut dyn Incoming,
    held: &HeldData,
) -> Result<Received> {
    // The codec checks these as it decodes; the walk does not rely on it.
    if VersionName::parse(&header.dir).is_none_or(|v| v.n != header.n)
        || crate::format::time::parse_rfc3339(&header.created).is_none()
        || header.created.bytes().any(|b| b.is_ascii_control())
    {
        return Err(refused(format!(
            "`{}` created `{}` is not a version {} of this format",
            escape::escape(&header.dir),
            escape::escape(&header.created),
            header.n
        )));
    }
    let dir = ctx.dir.clone();
    let rows = read_index_or_empty(&dir.index())?;
    let newest_on_disk = dir.versions_on_disk()?.last().map(|v| v.n).unwrap_or(0);
    let newest = rows
        .last()
        .map(|r| r.version)
        .unwrap_or(0)
        .max(newest_on_disk);
    if header.n <= newest {
        return Err(refused(format!(
            "version {} is not after the replica's newest, V{newest}",
            header.dir
        )));
    }
    let base = match (header.base, rows.last()) {
        (None, _) => None,
        (Some(b), Some(last)) if b == last.version => Some(last.clone()),
        (Some(b), last) => {
            return Err(refused(format!(
                "version {} is described against V{b}, but the replica's newest version is {}",
                header.dir,
                last.map_or("none", |l| l.dir.as_str())
            )));
        }
    };
    let name = VersionName {
        n: header.n,
        dir: header.dir.clone(),
    };
    let partial = dir.partial().join(&name.dir);
    fs::create_dir_all(dir.partial()).ctx("cannot create", &dir.partial())?;
    copy::make_dir(&partial).ctx("cannot create version directory", &partial)?;
    let fidelity = fidelity_of(ctx.capabilities.as_ref(), copy::privileged());
    let mut b = Builder {
        job: dir.path.clone(),
        // Never read: a received version has no source, only the stream.
        source: Tree::later(dir.path.clone()),
        new: Tree::later(partial.clone()),
        new_root: partial.clone(),
        new_name: name.dir.clone(),
        excludes: Excludes::default(),
        lookalikes: Lookalikes::load(&dir.path)?,
        only_sync_attributes: false,
        privileged: copy::privileged(),
        fidelity,
        baseline: None,
        // A received version has no source: no mountpoints below it, no source inodes.
        one_file_system: false,
        src_dev: 0,
        vault_dirs: Vec::new(),
        link_groups: Default::default(),
        skipped_paths: Default::default(),
        climbing: Default::default(),
        out: Default::default(),
        keep_changed_paths: false,
        delta_files: 0,
        delta_logical: 0,
        journal: &mut ctx.journal,
        progress: &NoProgress,
        checksums: Some(Default::default()),
    };
    let walked = (|| -> Result<()> {
        if let Some(base) = &base {
            let job = b.job.clone();
            b.climbing.load(&job, &base.dir, &b.lookalikes)?;
        }
        Walk::new(&mut b, base.as_ref(), held, &header).run(input)?;
        b.keep_links_inside()
    })();
    if let Err(e) = walked {
        if !matches!(e, Error::Unreachable(_)) {
            // Refused or failed here: nothing of it is kept. Cut off mid-stream, the
            // partial version stays for the next run to take its data from.
            let _ = crate::fsutil::remove_tree(&partial);
        }
        return Err(e);
    }
    let row = match index_row(&b, &header, base.as_ref(), &dir.path) {
        Ok(row) => row,
        Err(e) => {
            let _ = crate::fsutil::remove_tree(&partial);
            return Err(e);
        }
    };
    publish::publish(
        &mut b,
        NewVersion {
            dir: dir.clone(),
            rows,
            name: name.clone(),
        },
        &partial,
        row,
    )?;
    Ok(Received { name })
}

/// The new version's index row: the base's counts moved by what arrived, the source's
/// `created`.
fn index_row(
    b: &Builder<'_>,
    header: &VersionHeader,
    base: Option<&IndexRow>,
    job: &Path,
) -> Result<IndexRow> {
    let (files, logical) = base.map_or((0, 0), |r| (r.files, r.logical_bytes));
    let moved = |what: &str, old: u64, delta: i64| {
        old.checked_add_signed(delta).ok_or_else(|| {
            Error::Damaged(format!(
                "{}: the {what} of {} is out of range ({old} moved by {delta}); index.tsv \
                 disagrees with the versions on disk (run reverb-index --check, then --recount)",
                crate::error::show(job),
                header.dir
            ))
        })
    };
    Ok(IndexRow {
        version: header.n,
        dir: header.dir.clone(),
        created: header.created.clone(),
        files: moved("file count", files, b.delta_files)?,
        changed: b.out.changed,
        held_bytes: 0,
        logical_bytes: moved("logical size", logical, b.delta_logical)?,
    })
}

/// A real directory of the new version whose entries are arriving.
struct Frame {
    rel: RelPath,
    /// The base's entries of this directory not named yet; `None`: no directory here in
    /// the base.
    base: Option<BTreeMap<OsString, VersionEntry>>,
    /// The base's entry of this directory itself (to collapse back into).
    base_self: Option<VersionEntry>,
    attrs: Attrs,
    /// The last name, so that names come strictly in order.
    last: Option<Vec<u8>>,
    /// Every entry so far was `same`.
    all_same: bool,
}

/// The first name of a hard-linked file, for its later names.
struct GroupFirst {
    rel: RelPath,
    size: u64,
    hash: Hash,
}

struct Walk<'w, 'a> {
    b: &'w mut Builder<'a>,
    base: Option<&'w IndexRow>,
    held: &'w HeldData,
    version: String,
    frames: Vec<Frame>,
    groups: HashMap<u64, GroupFirst>,
    counts: Counts,
    /// The path of the last entry, for a message about what follows it.
    last_path: Option<RelPath>,
}

impl<'w, 'a> Walk<'w, 'a> {
    fn new(
        b: &'w mut Builder<'a>,
        base: Option<&'w IndexRow>,
        held: &'w HeldData,
        header: &VersionHeader,
    ) -> Self {
        Walk {
            b,
            base,
            held,
            version: header.dir.clone(),
            frames: vec![Frame {
                rel: RelPath::root(),
                base: None,
                base_self: None,
                attrs: header.root.clone(),
                last: None,
                all_same: true,
            }],
            groups: HashMap::new(),
            counts: Counts::default(),
            last_path: None,
        }
    }

    /// Reads the version's records up to its end; returns what arrived.
    fn run(mut self, input: &mut dyn Incoming) -> Result<Counts> {
        if let Some(base) = self.base {
            let listed = self
                .b
                .list_version(Some(&base.dir), &RelPath::root(), Detail::Names)?;
            self.frames[0].base = Some(listed);
        }
        loop {
            match input.next_record()? {
                Record::Entry(e) => {
                    self.counts.entries += 1;
                    if self.counts.entries > limits::MAX_ENTRIES {
                        return Err(refused(format!(
                            "version {} holds more than {} entries",
                            self.version,
                            limits::MAX_ENTRIES
                        )));
                    }
                    self.entry(e, input)?;
                }
                Record::DirEnd => {
                    let Some(frame) = self.frames.pop() else {
                        return Err(refused(format!(
                            "version {}: an end of directory with no directory open",
                            self.version
                        )));
                    };
                    self.close(frame)?;
                }
                Record::VersionEnd(sent) => {
                    if let Some(open) = self.frames.last() {
                        return Err(refused(format!(
                            "version {} ended with {} directories open (the innermost `{}`)",
                            self.version,
                            self.frames.len(),
                            shown(&open.rel)
                        )));
                    }
                    if sent != self.counts {
                        return Err(refused(format!(
                            "version {}: its end counts {} entries and {} bytes of data, but {} entries and {} bytes arrived",
                            self.version,
                            sent.entries,
                            sent.data_bytes,
                            self.counts.entries,
                            self.counts.data_bytes
                        )));
                    }
                    return Ok(self.counts);
                }
                Record::Refused(why) => {
                    return Err(Error::Unreachable(format!(
                        "the sender stopped in the middle of version {}: {why}",
                        self.version
                    )));
                }
                other => {
                    let after = self
                        .last_path
                        .as_ref()
                        .map(|p| format!(" (after entry `{}`)", shown(p)))
                        .unwrap_or_default();
                    return Err(refused(format!(
                        "version {}: unexpected {}{after}",
                        self.version,
                        other.what()
                    )));
                }
            }
        }
    }

    fn entry(&mut self, e: Entry, input: &mut dyn Incoming) -> Result<()> {
        let depth = self.frames.len();
        let Some(frame) = self.frames.last_mut() else {
            return Err(refused(format!(
                "version {}: entry `{}` after the version's root was closed",
                self.version,
                escape::escape_bytes(&e.name)
            )));
        };
        // The codec checks names as it decodes; the walk does not rely on it.
        if let Err(why) = check_name(&e.name) {
            return Err(refused(format!(
                "an entry in `{}`: {why}",
                shown(&frame.rel)
            )));
        }
        let rel = frame.rel.join(&OsString::from_vec(e.name.clone()));
        if frame.last.as_ref().is_some_and(|last| e.name <= *last) {
            return Err(refused(format!(
                "entry `{}`: names out of order or repeated",
                shown(&rel)
            )));
        }
        frame.last = Some(e.name.clone());
        let name = OsString::from_vec(e.name);
        let old = frame.base.as_mut().and_then(|m| m.remove(&name));
        if !matches!(e.kind, Kind::Same) {
            frame.all_same = false;
        }
        self.last_path = Some(rel.clone());
        match e.kind {
            Kind::Same => {
                let Some(old) = old else {
                    return Err(refused(format!(
                        "entry `{}`: the same as in {}, which has no such entry",
                        shown(&rel),
                        self.base.map_or("no base version", |b| b.dir.as_str())
                    )));
                };
                self.b.keep_old(&rel, &old)
            }
            Kind::Dir(attrs) => {
                if depth >= limits::MAX_DEPTH {
                    return Err(refused(format!(
                        "entry `{}`: directories nested deeper than {}",
                        shown(&rel),
                        limits::MAX_DEPTH
                    )));
                }
                let (base, base_self) = match old {
                    Some(old) if self.is_dir_in_base(&rel, &old) => {
                        let listed = self
                            .b
                            .list_version(Some(&old.holder), &rel, Detail::Names)?;
                        (Some(listed), Some(old))
                    }
                    Some(old) => {
                        self.b.forget_old(&rel, &old.holder)?;
                        (None, None)
                    }
                    None => (None, None),
                };
                let (np, na) = (self.b.new_path(&rel), self.b.new_at(&rel)?);
                copy::make_dir(&na).ctx("cannot create directory", &np)?;
                self.frames.push(Frame {
                    rel,
                    base,
                    base_self,
                    attrs,
                    last: None,
                    all_same: true,
                });
                Ok(())
            }
            other => {
                if let Some(old) = old {
                    self.b.forget_old(&rel, &old.holder)?;
                }
                self.leaf(&rel, other, input)
            }
        }
    }

    /// Is the base's entry `old` at `rel` a directory?
    fn is_dir_in_base(&self, rel: &RelPath, old: &VersionEntry) -> bool {
        match &old.entry {
            TreeEntry::Real(ft) => ft.is_dir(),
            TreeEntry::VaultLink { holder } => {
                fs::symlink_metadata(self.b.vault_path(holder, rel)).is_ok_and(|m| m.is_dir())
            }
        }
    }

    /// A file, symlink, special file or hard link made from the stream.
    fn leaf(&mut self, rel: &RelPath, kind: Kind, input: &mut dyn Incoming) -> Result<()> {
        let (np, na) = (self.b.new_path(rel), self.b.new_at(rel)?);
        let keep = self.b.fidelity;
        match kind {
            Kind::File(f) => return self.file(rel, f, input),
            Kind::Symlink { attrs, target } => {
                std::os::unix::fs::symlink(OsString::from_vec(target), &*na)
                    .ctx("cannot create symlink", &np)?;
                stream_attrs::apply_to_path(&na, &attrs, true, keep)
                    .ctx("cannot set attributes of", &np)?;
                self.b.note_lookalike(rel, &na)?;
            }
            Kind::Special { attrs, kind, rdev } => {
                use nix::sys::stat::{Mode, SFlag};
                let flag = match kind {
                    SpecialKind::Fifo => SFlag::S_IFIFO,
                    SpecialKind::CharDevice => SFlag::S_IFCHR,
                    SpecialKind::BlockDevice => SFlag::S_IFBLK,
                };
                let made = nix::sys::stat::mknod(&*na, flag, Mode::S_IRUSR | Mode::S_IWUSR, rdev);
                match made {
                    Ok(()) => {}
                    Err(nix::errno::Errno::EPERM) => {
                        // A device node needs privilege, here as in a local build.
                        self.b.journal.note(
                            JournalEvent::Skipped,
                            rel.as_bytes(),
                            "a device node needs privilege to be made",
                        );
                        self.b.out.skipped += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(std::io::Error::from(e)).ctx("cannot create", &np),
                }
                stream_attrs::apply_to_path(&na, &attrs, false, keep)
                    .ctx("cannot set attributes of", &np)?;
            }
            Kind::HardLink { group } => {
                let Some(first) = self.groups.get(&group) else {
                    return Err(refused(format!(
                        "entry `{}`: another name of file group {group}, which no earlier file of this version started",
                        shown(rel)
                    )));
                };
                let first_at = self
                    .b
                    .new
                    .at(first.rel.as_path())
                    .ctx("cannot create hard link", &np)?;
                fs::hard_link(&*first_at, &*na).ctx("cannot create hard link", &np)?;
                let (size, hash) = (first.size, first.hash);
                self.b.record(rel, Some(checksums::Record { size, hash }));
                self.b.delta_files += 1;
                self.b.delta_logical += size as i64;
            }
            Kind::Same | Kind::Dir(_) => unreachable_kind()?,
        }
        self.b.out.changed += 1;
        self.b.note_changed(rel);
        crate::fault::step();
        Ok(())
    }

    /// A regular file: its data from the stream (or held from an interrupted run), checked
    /// against its size and hash.
    fn file(&mut self, rel: &RelPath, f: FileEntry, input: &mut dyn Incoming) -> Result<()> {
        let (np, na) = (self.b.new_path(rel), self.b.new_at(rel)?);
        if let Some(g) = f.group
            && self.groups.contains_key(&g)
        {
            return Err(refused(format!(
                "entry `{}`: file group {g} started twice",
                shown(rel)
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&*na)
            .ctx("cannot create", &np)?;
        let hash = match f.data {
            DataMode::Follows => self.data(&file, &np, rel, f.size, input)?,
            DataMode::Held => self.held_data(&file, &np, rel, &f)?,
            DataMode::Described => {
                return Err(refused(format!(
                    "entry `{}`: a file without its data",
                    shown(rel)
                )));
            }
        };
        if hash != f.hash {
            return Err(refused(format!(
                "entry `{}`: its data does not match its BLAKE3 (arrived {}, the entry says {})",
                shown(rel),
                blake3::Hash::from_bytes(hash).to_hex(),
                blake3::Hash::from_bytes(f.hash).to_hex()
            )));
        }
        stream_attrs::apply_to_file(&file, &na, &f.attrs, self.b.fidelity)
            .ctx("cannot set attributes of", &np)?;
        drop(file);
        self.b
            .record(rel, Some(checksums::Record { size: f.size, hash }));
        self.b.delta_files += 1;
        self.b.delta_logical += f.size as i64;
        self.b.out.changed += 1;
        self.b.note_changed(rel);
        crate::fault::step();
        if let Some(g) = f.group {
            self.groups.insert(
                g,
                GroupFirst {
                    rel: rel.clone(),
                    size: f.size,
                    hash,
                },
            );
        }
        Ok(())
    }

    /// Writes the data records of a file of `size` bytes (holes kept); returns its hash.
    fn data(
        &mut self,
        file: &File,
        np: &Path,
        rel: &RelPath,
        size: u64,
        input: &mut dyn Incoming,
    ) -> Result<Hash> {
        let mut hasher = blake3::Hasher::new();
        let mut at = 0u64;
        let mut written_to = 0u64;
        while at < size {
            let left = size - at;
            match input.next_record()? {
                Record::Data(d) if d.is_empty() => {
                    return Err(refused(format!(
                        "entry `{}`: an empty data record",
                        shown(rel)
                    )));
                }
                Record::Data(d) if d.len() as u64 > left => {
                    return Err(refused(format!(
                        "entry `{}`: more data than its size of {size} bytes",
                        shown(rel)
                    )));
                }
                Record::Data(d) => {
                    hasher.update(&d);
                    if let Some(end) = copy::write_nonzero(file, &d, at).ctx("cannot write", np)? {
                        written_to = end;
                    }
                    at += d.len() as u64;
                    self.counts.data_bytes += d.len() as u64;
                }
                Record::Zeros(n) if n == 0 || n > left => {
                    return Err(refused(format!(
                        "entry `{}`: a hole of {n} bytes where {left} bytes remain of its size",
                        shown(rel)
                    )));
                }
                Record::Zeros(n) => {
                    hash_zeros(&mut hasher, n);
                    at += n;
                    self.counts.data_bytes += n;
                }
                Record::Refused(why) => {
                    return Err(Error::Unreachable(format!(
                        "the sender stopped in the middle of entry `{}`: {why}",
                        shown(rel)
                    )));
                }
                other => {
                    return Err(refused(format!(
                        "entry `{}`: {at} of its {size} bytes arrived, then {} (a size that lies?)",
                        shown(rel),
                        other.what()
                    )));
                }
            }
        }
        if written_to != size {
            file.set_len(size).ctx("cannot write", np)?;
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// Copies a file's data from what an interrupted run left; returns its hash.
    fn held_data(&mut self, file: &File, np: &Path, rel: &RelPath, f: &FileEntry) -> Result<Hash> {
        let Some(from) = self.held.by_hash.get(&f.hash) else {
            return Err(refused(format!(
                "entry `{}`: its data is said to be held here, but nothing held has BLAKE3 {}",
                shown(rel),
                blake3::Hash::from_bytes(f.hash).to_hex()
            )));
        };
        let input = File::open(from).ctx("cannot open", from)?;
        let (_, record) =
            copy::copy_data_hashed(&input, file, f.size, true).ctx("cannot copy to", np)?;
        match record {
            Some(r) if r.size == f.size => Ok(r.hash),
            _ => Err(refused(format!(
                "entry `{}`: the held data is not {} bytes long",
                shown(rel),
                f.size
            ))),
        }
    }

    /// A directory whose entries have all arrived: the base's entries it did not name are
    /// dropped; it collapses back into the base's link when nothing in it differs;
    /// otherwise it gets its attributes.
    fn close(&mut self, frame: Frame) -> Result<()> {
        let mut dropped = false;
        if let Some(rest) = frame.base {
            for (name, old) in rest {
                self.b.forget_old(&frame.rel.join(&name), &old.holder)?;
                dropped = true;
            }
        }
        let np = self.b.new_path(&frame.rel);
        if let Some(old) = &frame.base_self
            && frame.all_same
            && !dropped
            && self.same_attrs(&frame.rel, old, &frame.attrs)?
        {
            self.b.drop_new(&frame.rel)?;
            return self.b.keep_old(&frame.rel, old);
        }
        let here = self.b.new_dir(&frame.rel)?;
        stream_attrs::apply_to_path(&here, &frame.attrs, false, self.b.fidelity)
            .ctx("cannot set attributes of", &np)?;
        if frame.rel.is_root() {
            if self.base.is_none() {
                // A first version counts its root, as a local one does.
                self.b.out.changed += 1;
            }
        } else {
            self.b.out.changed += 1;
            self.b.note_changed(&frame.rel);
            if let Some(parent) = self.frames.last_mut() {
                parent.all_same = false;
            }
        }
        Ok(())
    }

    /// Are `attrs` those of the base's directory `old` at `rel`?
    fn same_attrs(&self, rel: &RelPath, old: &VersionEntry, attrs: &Attrs) -> Result<bool> {
        let path = self.b.vault_path(&old.holder, rel);
        let meta = fs::symlink_metadata(&path).ctx("cannot inspect", &path)?;
        let base = stream_attrs::read(&path, &meta);
        Ok(stream_attrs::same(&base, attrs, self.b.privileged, false))
    }
}

fn unreachable_kind() -> Result<()> {
    Err(Error::Invalid(
        "a directory or `same` entry reached the leaf step".into(),
    ))
}

/// Feeds `n` zero bytes to `hasher`.
fn hash_zeros(hasher: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

#[cfg(test)]
mod tests;
