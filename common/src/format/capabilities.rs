//! What a vault's filesystem can do, as the capability probe found it
//! (docs/filesystems.md): the `[capabilities]` table of `reverberator-vault.toml`
//! (docs/format.md#the-vault-marker), what a vault must have to be used at all
//! ([`Capabilities::refusals`]), and what the tools do differently on a weaker one
//! ([`Capabilities::adaptations`], [`Capabilities::fidelity`]).
//!
//! Owns only the record and what it means. Probing is the vault layer's
//! (`crate::vault::probe`); acting on it is the engine's.
//!
//! Invariants: a vault without the record (made before the probe existed) is treated as
//! one that keeps everything, as the tools always did; a record is only ever replaced by a
//! newer probe's. Unknown keys in the table are ignored (a later probe may learn more), a
//! missing one is an error naming the marker.

use serde::{Deserialize, Serialize};

use crate::format::entry::Fidelity;

/// What `lchown`/`utimensat(AT_SYMLINK_NOFOLLOW)` on a symlink do here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkAttributes {
    /// They change the link itself, never its target (local filesystems).
    Own,
    /// They reach the file the link points to (sshfs: the server's SETSTAT follows
    /// links): the tools never call them on a link there.
    FollowTarget,
    /// They fail (and leave the target alone): the tools never call them either.
    Unsupported,
}

impl LinkAttributes {
    /// The record's word.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkAttributes::Own => "own",
            LinkAttributes::FollowTarget => "follow-target",
            LinkAttributes::Unsupported => "unsupported",
        }
    }
}

/// The `[capabilities]` table: one probe's findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// When the probe ran (RFC 3339).
    pub probed: String,
    /// The filesystem type as the mount table names it (`ext4`, `fuse.sshfs`, `fuseblk`),
    /// with the type `blkid` finds on a FUSE block device in parentheses (`fuseblk (exfat)`).
    pub fstype: String,
    /// The mount's source (`/dev/sdb1`, `user@host:/dir`), when the mount table names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Symlinks can be made and read back byte-exact.
    pub symlinks: bool,
    /// What setting a symlink's owner and times does.
    pub link_attributes: LinkAttributes,
    /// Permission bits round-trip, setuid, setgid and sticky included.
    pub modes: bool,
    /// FIFOs can be made (`mkfifo`; device nodes need the same support, and root).
    #[serde(default = "yes")]
    pub specials: bool,
    /// Owners round-trip (`chown` by root); absent when the probe did not run as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<bool>,
    /// The finest mtime step kept, in nanoseconds (1 on ext4, XFS, btrfs, tmpfs; 10⁹ on
    /// sshfs; 2·10⁹ on FAT).
    pub mtime_granularity_ns: u64,
    /// `user.*` extended attributes can be set and read back.
    pub user_xattrs: bool,
    /// POSIX ACLs (`system.posix_acl_access`) can be set and read back.
    pub acls: bool,
    /// `FICLONE` shares extents between two files of the vault.
    pub reflink: bool,
    /// `renameat2(RENAME_EXCHANGE)` swaps two entries (retirement moves directories with it).
    pub rename_exchange: bool,
    /// `renameat2(RENAME_NOREPLACE)` refuses to replace an existing name.
    pub rename_noreplace: bool,
    /// `flock` locks a file (the job locks).
    pub flock: bool,
    /// `fsync` of a file succeeds.
    pub fsync: bool,
    /// `syncfs` of the filesystem succeeds.
    pub syncfs: bool,
}

/// Nanoseconds in a second.
const NS: u64 = 1_000_000_000;

/// The default of a capability a record written before it was probed does not name.
fn yes() -> bool {
    true
}

impl Capabilities {
    /// What the vault lacks that the tools cannot do without (empty: usable). A version
    /// must hold the source's symlinks and modes exactly; without them it would silently
    /// be something else (docs/filesystems.md).
    pub fn refusals(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.symlinks {
            out.push("symbolic links (a version holds the source's links, and vault links share unchanged data)");
        }
        if !self.modes {
            out.push("file modes (permission bits with setuid, setgid and sticky)");
        }
        out
    }

    /// What the tools do differently on this vault, one sentence each, for the journal's
    /// `vault-capability` line, `status` and `check-config` (empty: nothing).
    pub fn adaptations(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.link_attributes {
            LinkAttributes::Own => {}
            LinkAttributes::FollowTarget => out.push(
                "setting a symlink's owner or times here changes the file it points to: \
                 they are never set, so link owners and times are not kept"
                    .to_owned(),
            ),
            LinkAttributes::Unsupported => out.push(
                "a symlink's owner and times cannot be set here: link owners and times are not kept"
                    .to_owned(),
            ),
        }
        if !self.specials {
            out.push(
                "FIFOs and device nodes cannot be made here: versions leave them out \
                 (journaled as skipped)"
                    .to_owned(),
            );
        }
        if self.owners == Some(false) {
            out.push(
                "owners cannot be set here: files keep the vault's owner, owners are not kept"
                    .to_owned(),
            );
        }
        if self.mtime_granularity_ns > 1 {
            out.push(format!(
                "timestamps are kept to {}: a file whose stat cannot prove it unchanged is \
                 compared by content (its recorded BLAKE3)",
                granularity_words(self.mtime_granularity_ns)
            ));
        }
        match (self.user_xattrs, self.acls) {
            (true, true) => {}
            (false, false) => out.push(
                "extended attributes (user.*) and POSIX ACLs are not kept (not supported here)"
                    .to_owned(),
            ),
            (false, true) => out
                .push("extended attributes (user.*) are not kept (not supported here)".to_owned()),
            (true, false) => out.push("POSIX ACLs are not kept (not supported here)".to_owned()),
        }
        out
    }

    /// What comparisons with, and copies into, this vault can rely on, for a process that
    /// is root (`privileged`) or not.
    pub fn fidelity(&self, privileged: bool) -> Fidelity {
        Fidelity {
            owners: privileged && self.owners != Some(false),
            link_attributes: self.link_attributes == LinkAttributes::Own,
            mtime_granularity_ns: self.mtime_granularity_ns.max(1),
        }
    }

    /// The findings that matter for how the tools behave (everything but the probe's
    /// time): two probes that agree here need no new record.
    pub fn same_findings(&self, other: &Capabilities) -> bool {
        let strip = |c: &Capabilities| Capabilities {
            probed: String::new(),
            ..c.clone()
        };
        strip(self) == strip(other)
    }

    /// One line for `status`: the filesystem and what is adapted.
    pub fn summary(&self) -> String {
        let adapted = self.adaptations();
        if adapted.is_empty() {
            format!("{}: keeps everything a version holds", self.fstype)
        } else {
            format!("{}: {}", self.fstype, adapted.join("; "))
        }
    }
}

/// `1 ns`, `1 µs`, `1 s`, `2 s`, …
pub fn granularity_words(ns: u64) -> String {
    match ns {
        n if n >= NS && n % NS == 0 => format!("{} s", n / NS),
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{} ms", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{} µs", n / 1_000),
        n => format!("{n} ns"),
    }
}

/// What comparisons with a vault can rely on when its marker has no record: everything,
/// as before the probe existed.
pub fn fidelity_of(caps: Option<&Capabilities>, privileged: bool) -> Fidelity {
    match caps {
        Some(c) => c.fidelity(privileged),
        None => Fidelity::exact(privileged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn local() -> Capabilities {
        Capabilities {
            probed: "2026-12-07T00:00:00Z".into(),
            fstype: "ext4".into(),
            device: Some("/dev/sdb1".into()),
            symlinks: true,
            link_attributes: LinkAttributes::Own,
            modes: true,
            specials: true,
            owners: Some(true),
            mtime_granularity_ns: 1,
            user_xattrs: true,
            acls: true,
            reflink: false,
            rename_exchange: true,
            rename_noreplace: true,
            flock: true,
            fsync: true,
            syncfs: true,
        }
    }

    #[test]
    fn a_local_filesystem_needs_nothing() {
        let c = local();
        assert!(c.refusals().is_empty());
        assert!(c.adaptations().is_empty());
        assert_eq!(c.fidelity(true), Fidelity::exact(true));
    }

    #[test]
    fn fat_is_refused_and_sshfs_adapted() {
        let fat = Capabilities {
            symlinks: false,
            modes: false,
            ..local()
        };
        assert_eq!(fat.refusals().len(), 2);
        let sshfs = Capabilities {
            fstype: "fuse.sshfs".into(),
            link_attributes: LinkAttributes::FollowTarget,
            mtime_granularity_ns: NS,
            user_xattrs: false,
            acls: false,
            ..local()
        };
        assert!(sshfs.refusals().is_empty());
        let said = sshfs.adaptations().join("\n");
        assert!(
            said.contains("link owners and times are not kept"),
            "{said}"
        );
        assert!(said.contains("kept to 1 s"), "{said}");
        assert!(said.contains("ACLs are not kept"), "{said}");
        let f = sshfs.fidelity(true);
        assert!(!f.link_attributes && f.owners);
        assert_eq!(f.mtime_granularity_ns, NS);
    }

    #[test]
    fn the_record_round_trips_and_tolerates_new_keys() {
        let c = local();
        let text = toml::to_string(&c).expect("serialize");
        assert!(text.contains("link_attributes = \"own\""), "{text}");
        let back: Capabilities = toml::from_str(&text).expect("parse");
        assert_eq!(back, c);
        let later: Capabilities =
            toml::from_str(&format!("{text}\nsome_later_probe = true\n")).expect("parse");
        assert_eq!(later, c);
        assert!(c.same_findings(&Capabilities {
            probed: "later".into(),
            ..c.clone()
        }));
        assert_eq!(granularity_words(2 * NS), "2 s");
        assert_eq!(granularity_words(1000), "1 µs");
    }
}
