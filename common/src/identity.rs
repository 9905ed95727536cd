//! Filesystem identity (SPEC §8): which filesystem holds a path, and whether it is still
//! the one recorded for a job.
//!
//! (Skeleton: the record type is fixed here so job.toml can hold it; gathering and
//! matching are filled in by the identity work.)

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
