//! The secret every request needs (docs/web.md#the-token): where it lives, making it on
//! first start, comparing it.
//!
//! Invariants: the token file is created with `O_EXCL` and mode 0600 (its directory 0700
//! when made here) and never rewritten; a token file that others may read is refused with
//! the `chmod` that fixes it; comparing takes the same time wherever the inputs differ.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The token file's name in its directory.
pub const FILE_NAME: &str = "web-token";

/// The directory of the token file: `$STATE_DIRECTORY` (systemd's `StateDirectory=`, the
/// first when it lists several), else `$XDG_STATE_HOME/reverberator`, else
/// `~/.local/state/reverberator`.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var("STATE_DIRECTORY") {
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        return Ok(PathBuf::from(first));
    }
    if let Some(d) = var("XDG_STATE_HOME") {
        return Ok(PathBuf::from(d).join("reverberator"));
    }
    match var("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".local/state/reverberator")),
        None => bail!(
            "no place for the token: set STATE_DIRECTORY, XDG_STATE_HOME or HOME (docs/web.md)"
        ),
    }
}

/// The token of `dir`'s token file, made (32 random bytes, hex) when there is none.
pub fn load_or_create(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(FILE_NAME);
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            let token = random_hex(32)?;
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Reads an existing token file; one that others may read is refused.
fn read(path: &Path) -> anyhow::Result<String> {
    let meta =
        fs::symlink_metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} may be read by others (mode {:o}): run `chmod 600 {}`",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        );
    }
    let mut text = String::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let token = text.trim().to_owned();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!(
            "{} does not hold a token (remove it: a new one is made at the next start)",
            path.display()
        );
    }
    Ok(token)
}

/// `n` random bytes from the kernel, as hex.
fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `a == b`, in a time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let t = load_or_create(&state).expect("make");
        assert_eq!(t.len(), 64);
        let meta = fs::metadata(state.join(FILE_NAME)).expect("stat");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&state).expect("dir").mode() & 0o777, 0o700);
        assert_eq!(load_or_create(&state).expect("again"), t);
        fs::set_permissions(
            state.join(FILE_NAME),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .expect("chmod");
        let err = load_or_create(&state).expect_err("readable by others");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(same(&t, &t.clone()));
        assert!(!same(&t, "x"));
    }
}
