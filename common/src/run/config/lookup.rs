//! Where the configuration file is: `--config`, else `$REVERBERATOR_CONFIG`, else
//! `$XDG_CONFIG_HOME/reverberator/config.toml` (or `~/.config/…`), else
//! [`super::SYSTEM_CONFIG`]. The environment is read only by
//! [`LookupEnv::from_process`], so tests inject their own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, show};

use super::*;

/// The environment the lookup reads, made explicit so tests can inject it.
#[derive(Debug, Clone)]
pub struct LookupEnv {
    /// `$REVERBERATOR_CONFIG`.
    pub reverberator_config: Option<OsString>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<OsString>,
    /// `$HOME`.
    pub home: Option<OsString>,
    /// The system-wide file, normally [`SYSTEM_CONFIG`].
    pub system_config: PathBuf,
}

impl LookupEnv {
    /// Reads the process environment.
    pub fn from_process() -> LookupEnv {
        LookupEnv {
            reverberator_config: std::env::var_os(CONFIG_VAR),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
            home: std::env::var_os("HOME"),
            system_config: PathBuf::from(SYSTEM_CONFIG),
        }
    }
}

/// Finds the config file (docs/configuration.md): `explicit` (`--config FILE`), else
/// `$REVERBERATOR_CONFIG`, else `$XDG_CONFIG_HOME/reverberator/config.toml` (or
/// `~/.config/reverberator/config.toml`), else `/etc/reverberator/config.toml`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    locate_in(explicit, &LookupEnv::from_process())
}

/// [`locate`] with an injected environment.
///
/// A file named explicitly (by the flag or the variable) must exist: it is never silently
/// replaced by another. The per-user and system files are tried in order; the error lists
/// every place tried.
pub fn locate_in(explicit: Option<&Path>, env: &LookupEnv) -> Result<PathBuf> {
    if let Some(file) = explicit {
        return named_file(file, "--config");
    }
    if let Some(var) = env.reverberator_config.as_ref().filter(|v| !v.is_empty()) {
        return named_file(Path::new(var), "$REVERBERATOR_CONFIG");
    }
    let mut tried = Vec::new();
    let xdg = env
        .xdg_config_home
        .as_ref()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute()); // the XDG spec ignores a relative value
    let user_dir = match xdg {
        Some(dir) => Some(dir),
        None => env
            .home
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(h).join(".config")),
    };
    if let Some(dir) = user_dir {
        tried.push(dir.join("reverberator").join("config.toml"));
    }
    tried.push(env.system_config.clone());
    for candidate in &tried {
        if candidate.is_file() {
            return Ok(candidate.clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|p| show(p)).collect();
    Err(Error::Usage(format!(
        "no configuration file: tried {} (use --config FILE or set ${CONFIG_VAR})",
        list.join(", ")
    )))
}

pub(super) fn named_file(file: &Path, by: &str) -> Result<PathBuf> {
    if file.is_file() {
        Ok(file.to_path_buf())
    } else if file.exists() {
        Err(Error::Usage(format!(
            "configuration file {} (from {by}) is not a regular file",
            show(file)
        )))
    } else {
        Err(Error::Usage(format!(
            "configuration file {} (from {by}) does not exist",
            show(file)
        )))
    }
}
