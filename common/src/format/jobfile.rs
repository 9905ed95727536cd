//! job.toml (docs/format.md#text-files): the tool-written record of a job, so every program can work from the
//! vault alone: name, source, settings, the recorded filesystem identities, and bookkeeping
//! (the one-time size recount, a retirement in progress).
//!
//! Invariant: rewritten atomically, never edited in place; unknown keys are an error (a
//! hand-edited job.toml is read strictly rather than half-understood).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::format::fs_identity::FsIdentity;
use crate::format::settings::JobSettings;
use crate::fsutil;

/// The whole job.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The job's name as configured (the folder is its sanitized form).
    pub name: String,
    /// The monitored path (absolute).
    pub source: PathBuf,
    /// When the job was created.
    pub created: String,
    /// The job's settings. Required, like `state`, so that a job.toml cut short (a damaged
    /// disk, a bad hand edit) is refused rather than read with defaults: every writer writes
    /// both tables, and `[state]` last.
    pub settings: JobSettings,
    /// Recorded filesystem identities.
    #[serde(default)]
    pub identity: Identities,
    /// Bookkeeping.
    pub state: JobState,
}

/// The identities recorded when the job was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Identities {
    /// The filesystem holding the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<FsIdentity>,
    /// The filesystem holding the vault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<FsIdentity>,
}

/// Bookkeeping kept across runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobState {
    /// The one-time recount of docs/retirement.md has been done.
    pub size_recounted: bool,
    /// A retirement in progress: the directory of the version being retired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring: Option<String>,
    /// What the job's journal last said of the vault's filesystem (a `vault-capability`
    /// line): the filesystem type and what the tools adapt to, so it is said once, and
    /// again only when it changes (docs/filesystems.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault_capabilities_noted: Option<String>,
    /// The mountpoints below the source that `one_file_system` left out when a build last
    /// looked (paths relative to the source, escaped as in TSV), each journaled once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts_left_out: Vec<String>,
    /// A replica (docs/design.md#replication): the id of the vault whose job this one
    /// replicates. Its versions come only from that vault's `reverberator replicate`; no
    /// version is ever taken of its `source`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
}

impl JobFile {
    /// Reads and validates a job.toml.
    pub fn read(path: &Path) -> Result<JobFile> {
        let text = std::fs::read_to_string(path).ctx("cannot read job file", path)?;
        let job: JobFile = toml::from_str(&text).map_err(|e| {
            Error::Damaged(format!(
                "{}: {}",
                crate::error::show(path),
                e.message().trim()
            ))
        })?;
        if !job.source.is_absolute() {
            return Err(Error::Damaged(format!(
                "{}: source {} is not absolute",
                crate::error::show(path),
                crate::error::show(&job.source)
            )));
        }
        job.settings
            .validate()
            .map_err(|m| Error::Damaged(format!("{}: {m}", crate::error::show(path))))?;
        Ok(job)
    }

    /// Rewrites job.toml atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        if self.source.to_str().is_none() {
            return Err(Error::Usage(format!(
                "source path {} is not valid UTF-8, which job.toml cannot record",
                crate::error::show(&self.source)
            )));
        }
        let text = toml::to_string(self).map_err(|e| Error::Invalid(e.to_string()))?;
        let text =
            format!("# Written by reverberator; edit the configuration, not this file.\n{text}");
        fsutil::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(identity: Identities, state: JobState) -> JobFile {
        JobFile {
            name: "docs".into(),
            source: "/home/a/Documents".into(),
            created: "2026-11-24T21:49:00.123Z".into(),
            settings: JobSettings::default(),
            identity,
            state,
        }
    }

    #[test]
    fn round_trip_and_strictness() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("job.toml");
        let job = sample(
            Identities {
                source: Some(FsIdentity {
                    uuid: Some("u".into()),
                    ..Default::default()
                }),
                vault: None,
            },
            JobState {
                size_recounted: true,
                retiring: Some("V1-20261124T214900Z".into()),
                vault_capabilities_noted: Some("fuse.sshfs: timestamps kept to 1 s".into()),
                mounts_left_out: vec!["mnt".into(), "odd\\tname".into()],
                replica_of: Some("0123".into()),
            },
        );
        job.write(&p).expect("write");
        assert_eq!(JobFile::read(&p).expect("read"), job);
        std::fs::write(
            &p,
            "name = \"x\"\nsource = \"rel\"\ncreated = \"t\"\n[settings]\n[state]\n",
        )
        .expect("write");
        assert!(
            JobFile::read(&p)
                .expect_err("relative")
                .to_string()
                .contains("not absolute")
        );
        std::fs::write(&p, "name = \"x\"\nsourc = \"/a\"\n").expect("write");
        assert!(JobFile::read(&p).is_err());
    }

    #[test]
    fn a_file_cut_short_at_any_line_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("job.toml");
        let job = sample(Identities::default(), JobState::default());
        job.write(&p).expect("write");
        let text = std::fs::read_to_string(&p).expect("read");
        let ends: Vec<usize> = text.match_indices('\n').map(|(i, _)| i + 1).collect();
        // Every cut before the last table's first line is refused.
        let state_at = text.find("[state]").expect("[state] is written");
        for &end in ends.iter().filter(|&&e| e <= state_at) {
            std::fs::write(&p, &text[..end]).expect("write");
            assert!(JobFile::read(&p).is_err(), "accepted a file cut at {end}");
        }
    }
}
