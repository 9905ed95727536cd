//! One entry as the project sees it: its type ([`EntryType`], the one file-type tag), the
//! facts of its `lstat` that a version keeps ([`EntryFacts`]), and the one answer to "has it
//! changed" ([`compare`]), shared by the baseline and the build.
//!
//! Owns the two text forms of a type: the event line's `type` field (`file`, `dir`,
//! `symlink`, `other`; docs/format.md#text-files) and the baseline's one-letter column
//! (`f d l p c b s`). Both are byte-exact and never change.
//!
//! Invariants:
//! - [`compare`] looks at type, size, mtime (to the nanosecond), permission bits, owner and
//!   group (only when privileged: an unprivileged copy cannot keep them), device number,
//!   link target and xattrs (ACLs are xattrs); never at access times or inode numbers. A
//!   directory's size is not compared (it depends on the filesystem), nor a symlink's mode
//!   (Linux has none). Xattrs are compared only when both sides' were read
//!   ([`EntryFacts::xattrs`] is `Some` on both): reading them costs a syscall or two per
//!   name, so the caller reads them only when every other fact is equal
//!   ([`needs_xattrs`]) and only the names a copy can carry (the engine's choice).
//! - A difference in type, size, mtime, device number or link target is a content
//!   difference, except that a directory's mtime is an attribute; for files and
//!   directories, mode and owner are attributes; for links and special files every
//!   difference is content (they are recreated, never patched). A difference of xattrs
//!   alone is an attribute of a file or directory, content of anything else.
//! - [`compare_with`] compares an entry with its copy on a vault that keeps less
//!   ([`Fidelity`], from the capability probe): mtimes at the vault's granularity, owners
//!   only where they are kept, a symlink's owner and mtime only where they can be set on
//!   the link itself. A file equal only at a coarse granularity is the caller's to prove
//!   unchanged (the engine compares its content with its recorded BLAKE3).

use std::collections::BTreeMap;
use std::fs::{self, FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The kind of a special file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Special {
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    /// FIFO, socket or device node; `None` when only "other" is known (an event line's
    /// `type` field does not say which).
    Other(Option<Special>),
}

impl EntryType {
    /// Every type an event line can name, in the documented order.
    pub const EVENT_TYPES: [EntryType; 4] = [
        EntryType::File,
        EntryType::Dir,
        EntryType::Symlink,
        EntryType::Other(None),
    ];

    /// The type of a `std::fs::FileType` (from an lstat or a directory entry).
    pub fn of(ft: FileType) -> EntryType {
        if ft.is_symlink() {
            EntryType::Symlink
        } else if ft.is_dir() {
            EntryType::Dir
        } else if ft.is_file() {
            EntryType::File
        } else if ft.is_fifo() {
            EntryType::Other(Some(Special::Fifo))
        } else if ft.is_char_device() {
            EntryType::Other(Some(Special::CharDevice))
        } else if ft.is_block_device() {
            EntryType::Other(Some(Special::BlockDevice))
        } else if ft.is_socket() {
            EntryType::Other(Some(Special::Socket))
        } else {
            EntryType::Other(None)
        }
    }

    /// What an event line can say of this type (specials are just "other").
    pub fn for_event(self) -> EntryType {
        match self {
            EntryType::Other(_) => EntryType::Other(None),
            t => t,
        }
    }

    /// The event line's `type` field (lowercase).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::File => "file",
            EntryType::Dir => "dir",
            EntryType::Symlink => "symlink",
            EntryType::Other(_) => "other",
        }
    }

    /// Reads an event line's `type` field; `None` for anything else (including empty).
    pub fn parse(text: &str) -> Option<EntryType> {
        EntryType::EVENT_TYPES
            .into_iter()
            .find(|t| t.as_str() == text)
    }

    /// The baseline's type letter (`Other(None)`, which no lstat gives, is written `s`).
    pub fn letter(self) -> char {
        match self {
            EntryType::File => 'f',
            EntryType::Dir => 'd',
            EntryType::Symlink => 'l',
            EntryType::Other(Some(Special::Fifo)) => 'p',
            EntryType::Other(Some(Special::CharDevice)) => 'c',
            EntryType::Other(Some(Special::BlockDevice)) => 'b',
            EntryType::Other(Some(Special::Socket) | None) => 's',
        }
    }

    /// Reads a baseline type letter; `None` for anything else.
    pub fn from_letter(letter: char) -> Option<EntryType> {
        Some(match letter {
            'f' => EntryType::File,
            'd' => EntryType::Dir,
            'l' => EntryType::Symlink,
            'p' => EntryType::Other(Some(Special::Fifo)),
            'c' => EntryType::Other(Some(Special::CharDevice)),
            'b' => EntryType::Other(Some(Special::BlockDevice)),
            's' => EntryType::Other(Some(Special::Socket)),
            _ => return None,
        })
    }
}

/// What a version keeps of an entry's `lstat` (and link target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFacts {
    pub etype: EntryType,
    /// Apparent size; 0 for a directory.
    pub size: u64,
    /// mtime as (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A device node's number; `None` when not recorded (the baseline has no such column).
    pub rdev: Option<u64>,
    /// A symlink's target (`None` when unreadable or not a symlink).
    pub target: Option<PathBuf>,
    /// The xattrs (name → value) that count; `None` when not read (an lstat alone, a
    /// baseline record) or not supported where the entry lives.
    pub xattrs: Option<Xattrs>,
}

/// Xattr names and values, in name order.
pub type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

impl EntryFacts {
    /// The facts of the entry at `path`, whose lstat is `meta`.
    pub fn of(path: &Path, meta: &Metadata) -> EntryFacts {
        let etype = EntryType::of(meta.file_type());
        EntryFacts {
            etype,
            size: if etype == EntryType::Dir {
                0
            } else {
                meta.len()
            },
            mtime: (meta.mtime(), meta.mtime_nsec()),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: Some(meta.rdev()),
            target: if etype == EntryType::Symlink {
                fs::read_link(path).ok()
            } else {
                None
            },
            xattrs: None,
        }
    }
}

/// How an entry differs from an earlier record of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// Nothing a version keeps changed.
    Same,
    /// Only attributes changed: a file's data (a directory's children) is as it was.
    Attributes,
    /// The type, data or link target changed.
    Content,
}

/// What a comparison of an entry with its copy can rely on, and what a copy sets: the
/// destination's [fidelity](crate::format::capabilities::Capabilities::fidelity). A local
/// filesystem written by root keeps everything ([`Fidelity::exact`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fidelity {
    /// Owners are set by a copy and compared (root, on a filesystem that keeps them).
    pub owners: bool,
    /// A symlink's owner and times are set by a copy and compared (the filesystem sets
    /// them on the link itself, never on its target).
    pub link_attributes: bool,
    /// mtimes are kept to this many nanoseconds (1: exactly); compared at that step.
    pub mtime_granularity_ns: u64,
}

impl Fidelity {
    /// Everything kept; owners only when `privileged`.
    pub fn exact(privileged: bool) -> Fidelity {
        Fidelity {
            owners: privileged,
            link_attributes: true,
            mtime_granularity_ns: 1,
        }
    }

    /// Are two mtimes the same at this granularity (both taken down to its step)?
    pub fn same_mtime(&self, a: (i64, i64), b: (i64, i64)) -> bool {
        let g = i128::from(self.mtime_granularity_ns.max(1));
        let ns = |(s, n): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(n);
        a == b || (g > 1 && ns(a).div_euclid(g) == ns(b).div_euclid(g))
    }
}

/// Has the entry changed from `old` to `new`? Owners count only when `privileged`.
pub fn compare(old: &EntryFacts, new: &EntryFacts, privileged: bool) -> Difference {
    compare_with(old, new, &Fidelity::exact(privileged))
}

/// [`compare`] of an entry with its copy on a filesystem that keeps what `keep` says:
/// mtimes are compared at its granularity, owners only when it keeps them, and a
/// symlink's owner and mtime only when it can set them.
pub fn compare_with(old: &EntryFacts, new: &EntryFacts, keep: &Fidelity) -> Difference {
    if old.etype != new.etype {
        return Difference::Content;
    }
    let is_dir = new.etype == EntryType::Dir;
    let link_attrs_kept = new.etype != EntryType::Symlink || keep.link_attributes;
    let mtime_differs = link_attrs_kept && !keep.same_mtime(old.mtime, new.mtime);
    let rdev_differs = matches!((old.rdev, new.rdev), (Some(a), Some(b)) if a != b);
    let content_differs = (!is_dir && (old.size != new.size || mtime_differs))
        || rdev_differs
        || old.target != new.target;
    let owner_differs =
        keep.owners && link_attrs_kept && (old.uid != new.uid || old.gid != new.gid);
    let mode_differs = new.etype != EntryType::Symlink && old.mode != new.mode;
    let xattrs_differ = matches!((&old.xattrs, &new.xattrs), (Some(a), Some(b)) if a != b);
    let attr_differs = owner_differs || mode_differs || xattrs_differ || (is_dir && mtime_differs);
    match new.etype {
        _ if content_differs => Difference::Content,
        _ if !attr_differs => Difference::Same,
        EntryType::File | EntryType::Dir => Difference::Attributes,
        EntryType::Symlink | EntryType::Other(_) => Difference::Content,
    }
}

/// Would reading the xattrs of both sides change what [`compare`] says? Only when it says
/// [`Difference::Same`] without them: any other difference already makes the entry copied
/// (with the source's xattrs).
pub fn needs_xattrs(old: &EntryFacts, new: &EntryFacts, privileged: bool) -> bool {
    needs_xattrs_with(old, new, &Fidelity::exact(privileged))
}

/// [`needs_xattrs`] for [`compare_with`].
pub fn needs_xattrs_with(old: &EntryFacts, new: &EntryFacts, keep: &Fidelity) -> bool {
    (old.xattrs.is_none() || new.xattrs.is_none())
        && compare_with(old, new, keep) == Difference::Same
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> EntryFacts {
        EntryFacts {
            etype: EntryType::File,
            size: 3,
            mtime: (100, 5),
            mode: 0o644,
            uid: 1,
            gid: 2,
            rdev: Some(0),
            target: None,
            xattrs: Some(Xattrs::from([(b"user.a".to_vec(), b"1".to_vec())])),
        }
    }

    fn set_xattr(facts: &mut EntryFacts, name: &[u8], value: &[u8]) {
        facts
            .xattrs
            .get_or_insert_default()
            .insert(name.to_vec(), value.to_vec());
    }

    fn with(etype: EntryType, f: impl FnOnce(&mut EntryFacts)) -> (EntryFacts, EntryFacts) {
        let old = EntryFacts { etype, ..file() };
        let mut new = old.clone();
        f(&mut new);
        (old, new)
    }

    #[test]
    fn compare_table() {
        use Difference::*;
        use EntryType as T;
        let dev = T::Other(Some(Special::CharDevice));
        type Case = (&'static str, EntryType, fn(&mut EntryFacts), Difference);
        let cases: Vec<Case> = vec![
            ("same file", T::File, |_| {}, Same),
            ("file size", T::File, |n| n.size = 4, Content),
            ("file mtime ns", T::File, |n| n.mtime.1 = 6, Content),
            ("file mode", T::File, |n| n.mode = 0o600, Attributes),
            ("file uid", T::File, |n| n.uid = 9, Attributes),
            ("file gid", T::File, |n| n.gid = 9, Attributes),
            ("file to dir", T::File, |n| n.etype = T::Dir, Content),
            (
                "file xattr value",
                T::File,
                |n| set_xattr(n, b"user.a", b"2"),
                Attributes,
            ),
            (
                "file xattr added",
                T::File,
                |n| set_xattr(n, b"user.b", b""),
                Attributes,
            ),
            (
                "file xattr removed",
                T::File,
                |n| n.xattrs = Some(Xattrs::new()),
                Attributes,
            ),
            ("file xattrs unread", T::File, |n| n.xattrs = None, Same),
            (
                "file size and xattr",
                T::File,
                |n| {
                    n.size = 4;
                    set_xattr(n, b"user.a", b"2");
                },
                Content,
            ),
            (
                "dir xattr (an ACL)",
                T::Dir,
                |n| set_xattr(n, b"system.posix_acl_default", b"x"),
                Attributes,
            ),
            (
                "link xattr",
                T::Symlink,
                |n| set_xattr(n, b"trusted.a", b"2"),
                Content,
            ),
            (
                "device xattr",
                dev,
                |n| set_xattr(n, b"user.a", b"2"),
                Content,
            ),
            ("dir size", T::Dir, |n| n.size = 4096, Same),
            ("dir mtime", T::Dir, |n| n.mtime.0 = 1, Attributes),
            ("dir mode", T::Dir, |n| n.mode = 0o700, Attributes),
            (
                "link target",
                T::Symlink,
                |n| n.target = Some("x".into()),
                Content,
            ),
            ("link mode", T::Symlink, |n| n.mode = 0o777, Same),
            ("link mtime", T::Symlink, |n| n.mtime.0 = 1, Content),
            ("link owner", T::Symlink, |n| n.uid = 9, Content),
            ("device rdev", dev, |n| n.rdev = Some(7), Content),
            ("device rdev unknown", dev, |n| n.rdev = None, Same),
            ("device mode", dev, |n| n.mode = 0o600, Content),
            (
                "char to block",
                dev,
                |n| n.etype = T::Other(Some(Special::BlockDevice)),
                Content,
            ),
        ];
        for (what, etype, change, want) in cases {
            let (old, new) = with(etype, change);
            assert_eq!(compare(&old, &new, true), want, "{what}");
        }
        let (old, new) = with(T::File, |n| n.uid = 9);
        assert_eq!(compare(&old, &new, false), Same, "owner unprivileged");
    }

    #[test]
    fn a_coarse_vault_compares_at_its_granularity() {
        use Difference::*;
        let sshfs = Fidelity {
            owners: true,
            link_attributes: false,
            mtime_granularity_ns: 1_000_000_000,
        };
        // The copy's mtime is the source's, down to the second.
        let (old, new) = with(EntryType::File, |n| n.mtime = (100, 999_999_999));
        let old = EntryFacts {
            mtime: (100, 0),
            ..old
        };
        assert_eq!(compare(&old, &new, true), Content, "exact: differs");
        assert_eq!(compare_with(&old, &new, &sshfs), Same, "same second");
        let later = EntryFacts {
            mtime: (101, 0),
            ..new.clone()
        };
        assert_eq!(compare_with(&old, &later, &sshfs), Content, "next second");
        // Before the epoch, too: -0.5 s is in the second that starts at -1.
        assert!(sshfs.same_mtime((-1, 0), (-1, 500_000_000)));
        assert!(!sshfs.same_mtime((-1, 0), (0, 0)));
        // Link owners and times are not kept: not compared.
        let (old, new) = with(EntryType::Symlink, |n| {
            n.mtime = (5, 0);
            n.uid = 7;
        });
        assert_eq!(compare(&old, &new, true), Content);
        assert_eq!(compare_with(&old, &new, &sshfs), Same);
        let (old, new) = with(EntryType::Symlink, |n| n.target = Some("y".into()));
        assert_eq!(compare_with(&old, &new, &sshfs), Content, "the text is");
    }

    #[test]
    fn xattrs_are_needed_only_when_all_else_is_equal() {
        let unread = |mut f: EntryFacts| {
            f.xattrs = None;
            f
        };
        let (old, new) = with(EntryType::File, |_| {});
        assert!(needs_xattrs(
            &unread(old.clone()),
            &unread(new.clone()),
            true
        ));
        assert!(!needs_xattrs(&old, &new, true), "already read");
        let (old, new) = with(EntryType::File, |n| n.mode = 0o600);
        assert!(
            !needs_xattrs(&unread(old), &unread(new), true),
            "mode differs"
        );
        let (old, new) = with(EntryType::File, |n| n.size = 9);
        assert!(
            !needs_xattrs(&unread(old), &unread(new), true),
            "size differs"
        );
    }

    #[test]
    fn text_forms_round_trip() {
        for t in EntryType::EVENT_TYPES {
            assert_eq!(EntryType::parse(t.as_str()), Some(t));
        }
        for letter in "fdlpcbs".chars() {
            let t = EntryType::from_letter(letter).expect("letter");
            assert_eq!(t.letter(), letter);
            assert_eq!(EntryType::parse(t.as_str()), Some(t.for_event()));
        }
        assert_eq!(EntryType::from_letter('x'), None);
        assert_eq!(EntryType::parse(""), None);
    }

    #[test]
    fn facts_of_disk_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        fs::write(&f, b"abc").expect("write");
        let l = dir.path().join("l");
        std::os::unix::fs::symlink("f", &l).expect("symlink");
        let facts = |p: &Path| EntryFacts::of(p, &fs::symlink_metadata(p).expect("lstat"));
        assert_eq!(facts(&f).etype, EntryType::File);
        assert_eq!(facts(&f).size, 3);
        assert_eq!(facts(&l).target.as_deref(), Some(Path::new("f")));
        assert_eq!(facts(dir.path()).size, 0);
        assert_eq!(compare(&facts(&f), &facts(&f), true), Difference::Same);
    }
}
