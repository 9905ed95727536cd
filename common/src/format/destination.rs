//! Where a job is replicated to (docs/configuration.md#replicate_to, docs/cli.md#replicate):
//! a local path, or `ssh://[user@]host[:port]/path`.
//!
//! Owns the one parser of that text ([`Destination::parse`]) and its display, so the
//! configuration, the command line and `status` agree on what a destination is and how it is
//! written.

use std::path::PathBuf;

/// A replica vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A vault on a path of this host (another disk, a NAS mount).
    Local(PathBuf),
    /// A vault on another host, reached with the system `ssh` client.
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        /// The vault's absolute path on that host.
        path: String,
    },
}

impl Destination {
    /// Reads a destination: an absolute path, or `ssh://[user@]host[:port]/absolute/path`
    /// (an IPv6 host in brackets).
    pub fn parse(text: &str) -> Result<Destination, String> {
        let Some(rest) = text.strip_prefix("ssh://") else {
            if text.starts_with('/') {
                return Ok(Destination::Local(PathBuf::from(text)));
            }
            return Err(format!(
                "`{}` is neither an absolute path nor ssh://[user@]host[:port]/path",
                text.escape_debug()
            ));
        };
        let bad = |why: &str| format!("`{}`: {why}", text.escape_debug());
        let Some(slash) = rest.find('/') else {
            return Err(bad("no path after the host (ssh://host/path)"));
        };
        let (authority, path) = rest.split_at(slash);
        if path.len() < 2 {
            return Err(bad("the vault's path is missing (ssh://host/path)"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
            Some(_) => return Err(bad("an empty user name")),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(bad("an unclosed `[` in the host"));
            };
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(bad("text after the host's `]`")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.starts_with('-') || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("not a host name"));
        }
        if user.as_deref().is_some_and(|u| {
            u.starts_with('-') || u.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(bad("not a user name"));
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
            ),
        };
        if path.chars().any(|c| c.is_control()) {
            return Err(bad("a control character in the path"));
        }
        Ok(Destination::Ssh {
            user,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// The vault's path on its host.
    pub fn vault_path(&self) -> PathBuf {
        match self {
            Destination::Local(p) => p.clone(),
            Destination::Ssh { path, .. } => PathBuf::from(path),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Local(p) => write!(f, "{}", crate::escape::escape_os(p.as_os_str())),
            Destination::Ssh {
                user,
                host,
                port,
                path,
            } => {
                f.write_str("ssh://")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    f.write_str(host)?;
                }
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                f.write_str(path)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_print_back() {
        for text in [
            "/mnt/nas/vault",
            "ssh://nas/srv/vault",
            "ssh://backup@nas.example:2222/srv/vault",
            "ssh://[::1]:22/v",
            "ssh://u@[fe80::1]/v",
        ] {
            let d = Destination::parse(text).expect(text);
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(
            Destination::parse("ssh://a@b:7/x").expect("ok"),
            Destination::Ssh {
                user: Some("a".into()),
                host: "b".into(),
                port: Some(7),
                path: "/x".into()
            }
        );
        for bad in [
            "relative/vault",
            "ssh://host",
            "ssh://host/",
            "ssh:///path",
            "ssh://h:0/x",
            "ssh://h:99999/x",
            "ssh://-oProxyCommand=x/v",
            "ssh://@h/v",
            "ssh://[::1/v",
            "",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }
}
