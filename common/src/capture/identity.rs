//! Filesystem identity (docs/identity.md): which filesystem holds a path, and whether it is still
//! the one recorded for a job.
//!
//! This module owns three things about the record [`FsIdentity`] (whose type and job.toml
//! form are the format layer's, [`crate::format::fs_identity`]):
//!
//! - **Gathering** ([`FsIdentity::of`]): the mount holding a path is found in
//!   `/proc/self/mountinfo` (longest mountpoint that is a prefix of the canonical path; among
//!   equals the *last* entry wins, because a later mount stacks over an earlier one). Device,
//!   mountpoint and fstype come from that entry. UUID and LABEL come natively from the
//!   `FS_IOC_GETFSUUID` / `FS_IOC_GETFSLABEL` ioctls; whatever is still missing (and PARTUUID,
//!   PARTLABEL) is filled from `blkid -o export DEVICE` and from the `/dev/disk/by-*`
//!   symlinks, when they exist. Neither is required: in a minimal container the identity
//!   simply has fewer fields.
//! - **Matching** ([`matches()`]): a pure function, the one place the matching order (docs/identity.md) lives.
//! - **Verifying** ([`verify`]): gathering plus matching, turned into
//!   [`Error::IdentityMismatch`] (exit 75) when the filesystem is not the recorded one; and
//!   [`verify_job`], the one place that decides whether a job may run: vault first, then
//!   source. Every writer and the supervisor call it.
//!
//! Invariants: native UUIDs are lowercase and hyphenated as `findmnt` prints them (values
//! from blkid or udev are kept exactly as those print them, e.g. vfat's `ABCD-1234`); an empty
//! string is never stored (absent is `None`); a memory filesystem (tmpfs, overlay: no device)
//! never gets the random per-mount UUID some kernels invent for it, so its identity is its
//! device name only, as `findmnt` reports it ([`only_device`] tells callers it is weak).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::error::{Error, IoContext, Result, show};
use crate::format::fs_identity::FsIdentity;
use crate::format::jobfile::Identities;

/// Which field of the recorded identity matched (journaled by callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    Uuid,
    Partuuid,
    Label,
    Partlabel,
    Device,
}

impl MatchedBy {
    /// The lowercase name: `uuid`, `partuuid`, `label`, `partlabel`, `device`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchedBy::Uuid => "uuid",
            MatchedBy::Partuuid => "partuuid",
            MatchedBy::Label => "label",
            MatchedBy::Partlabel => "partlabel",
            MatchedBy::Device => "device",
        }
    }

    /// Reads [`MatchedBy::as_str`]'s text back; `None` for anything else.
    pub fn parse(text: &str) -> Option<MatchedBy> {
        [
            MatchedBy::Uuid,
            MatchedBy::Partuuid,
            MatchedBy::Label,
            MatchedBy::Partlabel,
            MatchedBy::Device,
        ]
        .into_iter()
        .find(|m| m.as_str() == text)
    }
}

impl fmt::Display for MatchedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Does `current` match `recorded`? Tries UUID, PARTUUID, LABEL, PARTLABEL, device path in
/// that order; the first field that is known (non-empty) on *both* sides decides only if it
/// is equal — a field known on both sides but different does not stop the search (a
/// reformatted disk keeps its label, a relabelled one keeps its UUID).
pub fn matches(recorded: &FsIdentity, current: &FsIdentity) -> Option<MatchedBy> {
    fn known(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
    let pairs = [
        (MatchedBy::Uuid, &recorded.uuid, &current.uuid),
        (MatchedBy::Partuuid, &recorded.partuuid, &current.partuuid),
        (MatchedBy::Label, &recorded.label, &current.label),
        (
            MatchedBy::Partlabel,
            &recorded.partlabel,
            &current.partlabel,
        ),
        (MatchedBy::Device, &recorded.device, &current.device),
    ];
    pairs
        .into_iter()
        .find_map(|(by, r, c)| match (known(r), known(c)) {
            (Some(r), Some(c)) if r == c => Some(by),
            _ => None,
        })
}

/// True when the identity has nothing but a device name (tmpfs, overlay, a container's
/// root): matching it is weak, callers journal that.
pub fn only_device(id: &FsIdentity) -> bool {
    [&id.uuid, &id.partuuid, &id.label, &id.partlabel]
        .iter()
        .all(|v| v.as_deref().is_none_or(str::is_empty))
}

/// A one-line human rendering for messages and the journal:
/// `UUID=…, LABEL=…, device /dev/sdb1 (ext4) at /mnt/usb`; `nothing` when empty.
pub fn describe(id: &FsIdentity) -> String {
    let mut parts = Vec::new();
    for (key, v) in [
        ("UUID", &id.uuid),
        ("PARTUUID", &id.partuuid),
        ("LABEL", &id.label),
        ("PARTLABEL", &id.partlabel),
    ] {
        if let Some(v) = v.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("{key}={}", crate::format::tsv::escape(v)));
        }
    }
    if let Some(d) = id.device.as_deref().filter(|s| !s.is_empty()) {
        let mut s = format!("device {}", crate::format::tsv::escape(d));
        if let Some(t) = id.fstype.as_deref().filter(|s| !s.is_empty()) {
            s.push_str(&format!(" ({})", crate::format::tsv::escape(t)));
        }
        parts.push(s);
    }
    let mut out = if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join(", ")
    };
    if let Some(m) = id.mountpoint.as_deref().filter(|s| !s.is_empty()) {
        out.push_str(&format!(" at {}", crate::format::tsv::escape(m)));
    }
    out
}

/// Checks that `path` (the job's source or vault, named by `role`) is on the filesystem
/// recorded for it. A missing path, or an identity that matches on nothing, is
/// [`Error::IdentityMismatch`] (exit 75: retry when the disk is back).
pub fn verify(role: &str, recorded: &FsIdentity, path: &Path) -> Result<MatchedBy> {
    let mismatch = |found: String| {
        Error::IdentityMismatch(format!(
            "{role} {} is not on the filesystem recorded for this job (recorded: {}; found: {found}): is the disk mounted?",
            show(path),
            describe(recorded),
        ))
    };
    // Fast path, taken before every version: what the kernel and /dev/disk say, without
    // starting blkid; only a non-match asks blkid for the remaining fields.
    if let Ok(quick) = gather_with(path, false)
        && let Some(m) = matches(recorded, &quick.identity)
    {
        return Ok(m);
    }
    let current = match FsIdentity::of(path) {
        Ok(c) => c,
        Err(Error::Usage(_)) => return Err(mismatch("the path does not exist".to_owned())),
        Err(e) => return Err(e),
    };
    matches(recorded, &current).ok_or_else(|| mismatch(describe(&current)))
}

/// Which of a job's recorded filesystems is not the one found (both errors are
/// [`Error::IdentityMismatch`], exit 75, or the I/O error that stopped the check).
#[derive(Debug)]
pub enum JobMismatch {
    /// The vault: nothing in it, not even the journal, can be trusted.
    Vault(Error),
    /// The source (the vault matched, so its journal may record this).
    Source(Error),
}

/// Checks that a job's vault and source are on the filesystems `recorded` for it
/// (docs/identity.md): the vault first, since until it matches nothing in it is trusted,
/// then the source. An identity that was never recorded is not checked.
pub fn verify_job(
    recorded: &Identities,
    source: &Path,
    vault_root: &Path,
) -> std::result::Result<(), JobMismatch> {
    if let Some(rec) = &recorded.vault {
        verify("vault", rec, vault_root).map_err(JobMismatch::Vault)?;
    }
    if let Some(rec) = &recorded.source {
        verify("source", rec, source).map_err(JobMismatch::Source)?;
    }
    Ok(())
}

impl FsIdentity {
    /// Gathers the identity of the filesystem holding `path` (see the module docs for how).
    /// A path that does not exist is [`Error::Usage`] naming it; other failures are
    /// [`Error::Io`].
    pub fn of(path: &Path) -> Result<FsIdentity> {
        Ok(gather(path)?.identity)
    }
}

/// One line of `/proc/self/mountinfo`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u64,
    pub parent_id: u64,
    /// `major:minor` of the filesystem (anonymous `0:N` for tmpfs, btrfs, overlay).
    pub devno: (u32, u32),
    /// The root of the mount within its filesystem (`/` unless a bind mount of a subtree).
    pub root: OsString,
    pub mountpoint: OsString,
    pub fstype: String,
    /// The mount source (`/dev/sdb1`, `tmpfs`).
    pub source: OsString,
}

/// Decodes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` LF, `\134` `\`).
pub fn unescape_mountinfo(field: impl AsRef<[u8]>) -> OsString {
    let b = field.as_ref();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// Parses the bytes of `/proc/self/mountinfo` (paths need not be UTF-8); malformed lines
/// are skipped.
pub fn parse_mountinfo(text: impl AsRef<[u8]>) -> Vec<MountEntry> {
    text.as_ref()
        .split(|b| *b == b'\n')
        .filter_map(parse_mountinfo_line)
        .collect()
}

fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 3 {
        return None;
    }
    let num = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u64>().ok();
    let devno = std::str::from_utf8(fields[2]).ok()?;
    let (major, minor) = devno.split_once(':')?;
    Some(MountEntry {
        mount_id: num(fields[0])?,
        parent_id: num(fields[1])?,
        devno: (major.parse().ok()?, minor.parse().ok()?),
        root: unescape_mountinfo(fields[3]),
        mountpoint: unescape_mountinfo(fields[4]),
        fstype: unescape_mountinfo(fields[sep + 1])
            .to_string_lossy()
            .into_owned(),
        source: unescape_mountinfo(fields[sep + 2]),
    })
}

/// Is `mountpoint` a path-prefix of `path` (both absolute, canonical)?
fn is_under(path: &[u8], mountpoint: &[u8]) -> bool {
    if mountpoint == b"/" {
        return path.starts_with(b"/");
    }
    path.starts_with(mountpoint)
        && (path.len() == mountpoint.len() || path[mountpoint.len()] == b'/')
}

/// Picks the mount holding `path`: the longest mountpoint prefix, the last entry among
/// equals (stacked mounts). When some candidate's device number equals `dev` (a
/// directory's own `st_dev`), only such candidates are considered, which skips a mount
/// hidden under a later mount of a parent directory.
pub fn find_mount<'a>(
    entries: &'a [MountEntry],
    path: &Path,
    dev: Option<(u32, u32)>,
) -> Option<&'a MountEntry> {
    let p = path.as_os_str().as_bytes();
    let pick = |same_dev: bool| {
        let mut best: Option<&MountEntry> = None;
        for e in entries {
            if !is_under(p, e.mountpoint.as_bytes()) || (same_dev && Some(e.devno) != dev) {
                continue;
            }
            if best.is_none_or(|b| e.mountpoint.len() >= b.mountpoint.len()) {
                best = Some(e);
            }
        }
        best
    };
    pick(true).or_else(|| pick(false))
}

/// What [`gather`] finds: the identity plus what only a live observer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gathered {
    pub identity: FsIdentity,
    /// `major:minor` of the mount (from mountinfo).
    pub devno: (u32, u32),
    /// The path's own `st_dev` (differs from `devno` inside a btrfs subvolume).
    pub st_dev: (u32, u32),
    /// The kernel's UUID of the superblock, even where it is not part of the identity
    /// (tmpfs makes up a random one per mount): tells two tmpfs mounts apart while both
    /// are alive, which device numbers (reused at once) cannot.
    pub kernel_uuid: Option<String>,
    /// The mountpoint, byte-exact (the identity holds it as lossy UTF-8).
    pub mountpoint: OsString,
    pub mount_id: u64,
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Gathers everything about the mount holding `path`. A missing path is [`Error::Usage`].
pub fn gather(path: &Path) -> Result<Gathered> {
    gather_with(path, true)
}

/// [`gather`], optionally without running `blkid` (kernel and /dev/disk sources only).
fn gather_with(path: &Path, use_blkid: bool) -> Result<Gathered> {
    let canonical = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!("{} does not exist", show(path))));
        }
        Err(e) => return Err(e).ctx("cannot resolve", path),
    };
    let meta = std::fs::metadata(&canonical).ctx("cannot stat", &canonical)?;
    let st_dev = split_dev(meta.dev());
    let text = std::fs::read(MOUNTINFO).ctx("cannot read", Path::new(MOUNTINFO))?;
    let entries = parse_mountinfo(&text);
    // Only a directory's st_dev is the mount's: overlayfs reports a non-directory's
    // underlying filesystem, so files use the plain prefix rule.
    let dev_hint = meta.is_dir().then_some(st_dev);
    let entry = find_mount(&entries, &canonical, dev_hint).ok_or_else(|| {
        Error::Invalid(format!(
            "no mount holds {} in {MOUNTINFO}",
            show(&canonical)
        ))
    })?;
    let mut id = FsIdentity {
        device: non_empty(entry.source.to_string_lossy().into_owned()),
        mountpoint: non_empty(entry.mountpoint.to_string_lossy().into_owned()),
        fstype: non_empty(entry.fstype.clone()),
        ..FsIdentity::default()
    };
    let on_device = entry.source.as_bytes().starts_with(b"/") || entry.devno.0 != 0;
    let kernel_uuid = native(&canonical, meta.is_dir(), &mut id);
    if on_device && id.uuid.is_none() {
        id.uuid.clone_from(&kernel_uuid);
    }
    let block = block_device(&entry.source);
    if let Some(dev) = &block
        && use_blkid
    {
        from_blkid(dev, &mut id);
    }
    let rdev = block
        .as_deref()
        .and_then(|d| std::fs::metadata(d).ok())
        .map(|m| split_dev(m.rdev()))
        .unwrap_or(entry.devno);
    if rdev.0 != 0 {
        from_by_links(Path::new("/dev/disk"), rdev, &mut id);
    }
    Ok(Gathered {
        identity: id,
        devno: entry.devno,
        st_dev,
        kernel_uuid,
        mountpoint: entry.mountpoint.clone(),
        mount_id: entry.mount_id,
    })
}

/// The mount table's entry for the filesystem holding `path` (an existing directory), as
/// [`gather`] picks it, without asking blkid or udev anything.
pub fn mount_of(path: &Path) -> Result<MountEntry> {
    let canonical = std::fs::canonicalize(path).ctx("cannot resolve", path)?;
    let meta = std::fs::metadata(&canonical).ctx("cannot stat", &canonical)?;
    let text = std::fs::read(MOUNTINFO).ctx("cannot read", Path::new(MOUNTINFO))?;
    let entries = parse_mountinfo(&text);
    let dev_hint = meta.is_dir().then_some(split_dev(meta.dev()));
    find_mount(&entries, &canonical, dev_hint)
        .cloned()
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no mount holds {} in {MOUNTINFO}",
                show(&canonical)
            ))
        })
}

/// The filesystem type `blkid` finds on a block device (`exfat` under a `fuseblk` mount),
/// when blkid is installed and says.
pub fn blkid_type(device: &Path) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-o", "value", "-s", "TYPE"])
        .arg(device)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    non_empty(text.trim().to_owned())
}

fn split_dev(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The mount source when it is an existing block device.
fn block_device(source: &OsStr) -> Option<PathBuf> {
    let p = Path::new(source);
    let m = std::fs::metadata(p).ok()?;
    m.file_type().is_block_device().then(|| p.to_path_buf())
}

/// LABEL from its ioctl into `id`, and the kernel's UUID returned (the caller decides
/// whether it identifies: it does only for a filesystem on a device, as tmpfs invents a
/// random one per mount). Unsupported ioctls (older kernels, filesystems without them)
/// leave the fields empty for the fallbacks.
fn native(path: &Path, is_dir: bool, id: &mut FsIdentity) -> Option<String> {
    let flags = if is_dir {
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
    } else {
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC
    };
    let Ok(fd) = open(path, flags, Mode::empty()) else {
        return None;
    };
    if let Some(label) = crate::sys::fs_label(&fd) {
        id.label = Some(label);
    }
    crate::sys::fs_uuid(&fd).map(|u| format_uuid(&u))
}

/// Formats UUID bytes as `findmnt` does: 16 bytes → lowercase `8-4-4-4-12`; other lengths
/// → plain lowercase hex.
pub fn format_uuid(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    if b.len() == 16 {
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    } else {
        hex
    }
}

fn fill(slot: &mut Option<String>, value: String) {
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value);
    }
}

/// Fills missing fields from `blkid -o export DEVICE` (no cache: an unreadable device gives
/// nothing rather than a stale answer). Missing blkid is not an error.
fn from_blkid(device: &Path, id: &mut FsIdentity) {
    let out = Command::new("blkid")
        .args(["-c", "/dev/null", "-o", "export"])
        .arg(device)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return };
    if !out.status.success() {
        return;
    }
    apply_blkid_export(&String::from_utf8_lossy(&out.stdout), id);
}

/// Applies `KEY=value` lines of `blkid -o export` (values shell-escaped with `\`).
pub fn apply_blkid_export(text: &str, id: &mut FsIdentity) {
    for line in text.lines() {
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    value.push(n);
                }
            } else {
                value.push(c);
            }
        }
        match key {
            "UUID" => fill(&mut id.uuid, value),
            "PARTUUID" => fill(&mut id.partuuid, value),
            "LABEL" => fill(&mut id.label, value),
            "PARTLABEL" => fill(&mut id.partlabel, value),
            _ => {}
        }
    }
}

/// Decodes udev's `\xHH` escapes in `/dev/disk/by-*` link names.
pub fn unescape_udev(name: &str) -> String {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && let Some(v) = b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fills missing fields from the `by-uuid`, `by-partuuid`, `by-label`, `by-partlabel`
/// symlinks under `dir` whose target is the block device `rdev`.
pub fn from_by_links(dir: &Path, rdev: (u32, u32), id: &mut FsIdentity) {
    type Slot = fn(&mut FsIdentity) -> &mut Option<String>;
    let kinds: [(&str, Slot); 4] = [
        ("by-uuid", |i| &mut i.uuid),
        ("by-partuuid", |i| &mut i.partuuid),
        ("by-label", |i| &mut i.label),
        ("by-partlabel", |i| &mut i.partlabel),
    ];
    for (sub, slot) in kinds {
        if slot(id).is_some() {
            continue;
        }
        let Ok(read) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in read.flatten() {
            let Ok(m) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if m.file_type().is_block_device() && split_dev(m.rdev()) == rdev {
                fill(
                    slot(id),
                    unescape_udev(&entry.file_name().to_string_lossy()),
                );
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
