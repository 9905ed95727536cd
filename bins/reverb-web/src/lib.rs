//! `reverb-web`: history in a browser and `/metrics` (docs/web.md). A thin edge: every
//! vault read comes from `reverb_common` (`browse`, `porcelain`, `restore`, `retire`);
//! this crate holds only the web stack (axum on tokio, maud templates).
//!
//! Modules: [`token`] (the secret and where it lives), [`server`] (listeners, the token and
//! cross-site checks, errors), [`pages`] (the HTML pages), [`render`] (layout, CSS, the
//! timeline's SVG), [`textdiff`] (a line diff), [`tarball`] (a folder as a streamed tar),
//! [`metrics`] (`/metrics`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use reverb_common::cli;

pub mod metrics;
pub mod pages;
pub mod render;
pub mod server;
pub mod tarball;
pub mod textdiff;
pub mod token;

/// History in a browser: a dashboard of every job, each job's timeline, browsing and
/// downloading versions, a path's history with diffs, find, and restore into a new
/// directory; and Prometheus `/metrics`. Read-only on the vault; every request needs the
/// token of the printed URL (docs/web.md).
#[derive(Debug, Parser)]
#[command(name = "reverb-web", version, about, long_about = None)]
pub struct Args {
    /// Take the jobs from this configuration file (else `$REVERBERATOR_CONFIG`, the XDG
    /// file, `/etc/reverberator/config.toml`).
    #[arg(long, value_name = "FILE", conflicts_with = "vault")]
    pub config: Option<PathBuf>,
    /// Show the jobs of this vault instead of a configuration's.
    #[arg(long, value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// Where to listen: `ADDR:PORT`, or `unix:PATH` for a Unix socket (mode 0600, no token:
    /// the socket's mode protects it).
    #[arg(
        long,
        value_name = "ADDR:PORT|unix:PATH",
        default_value = "127.0.0.1:8417"
    )]
    pub listen: String,
    /// Print the URL to open (with the token) on stdout once listening.
    #[arg(long)]
    pub print_url: bool,
    /// Also serve `/metrics`, without the token, on this address (`ADDR:PORT`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
    /// Where the restore form suggests a new directory (default:
    /// `~/reverberator-restores`); any absolute path outside the vaults may be typed there.
    #[arg(long, value_name = "DIR")]
    pub restore_to: Option<PathBuf>,
}

/// The clap command (for man pages and completions).
pub fn cli() -> clap::Command {
    Args::command()
}

/// Runs the tool with these arguments; returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args = Args::parse_from(args);
    cli::finish("reverb-web", server::run(&args))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        super::cli().debug_assert();
    }
}
