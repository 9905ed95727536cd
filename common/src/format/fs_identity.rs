//! A filesystem's identity as job.toml records it (docs/identity.md): the fields
//! `findmnt --output-all` reports for the filesystem holding a path.
//!
//! Owns only the record and its serialized form (the `[identity.source]` and
//! `[identity.vault]` tables of job.toml). Gathering it, matching it against the filesystem
//! found now, and describing it are the capture layer's ([`crate::capture::identity`]).
//!
//! Invariants: an absent field is `None` and is not written (an empty string is never
//! stored); unknown keys are an error, as everywhere in job.toml.

use serde::{Deserialize, Serialize};

/// What identifies the filesystem holding a path, as `findmnt --output-all` reports it.
/// Absent fields are unknown (a tmpfs has no UUID; a container may lack blkid).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsIdentity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partlabel: Option<String>,
    /// The SOURCE column: a device path such as `/dev/sdb1`, or `tmpfs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
}
