//! `reverb-receive`: the receiving end of `reverberator replicate` (docs/cli.md#reverb-receive,
//! docs/design.md#replication). Reads the replication stream on stdin, answers on stdout,
//! messages on stderr. A thin edge over `reverb_common::replicate::serve`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use reverb_common::cli;
use reverb_common::exit::EXIT_OK;
use reverb_common::replicate::{ReceiveOptions, serve};

/// Receive versions of a job from `reverberator replicate` into a replica vault: the
/// stream on stdin, the answers on stdout. Started by the sender (locally, or on this host
/// through ssh); not meant to be run by hand.
#[derive(Debug, Parser)]
#[command(name = "reverb-receive", version, about, long_about = None)]
pub struct Args {
    /// The replica vault (holding reverberator-vault.toml).
    #[arg(long, value_name = "DIR")]
    pub vault: PathBuf,
    /// Accept this job only (pin it in an authorized_keys forced command).
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Create the vault (directory and marker) if it has no marker yet.
    #[arg(long)]
    pub init: bool,
}

/// The clap command (for man pages and completions).
pub fn cli() -> clap::Command {
    Args::command()
}

/// Runs the tool with these arguments; returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args = Args::parse_from(args);
    cli::finish("reverb-receive", run(&args))
}

/// The tool's body.
pub fn run(args: &Args) -> anyhow::Result<i32> {
    let opts = ReceiveOptions {
        vault: std::path::absolute(&args.vault)?,
        job: args.job.clone(),
        init: args.init,
        // Set by sshd when a forced command replaced the sender's: what it asked for.
        requested: std::env::var("SSH_ORIGINAL_COMMAND").ok(),
    };
    serve(&opts, std::io::stdin().lock(), std::io::stdout().lock())?;
    Ok(EXIT_OK)
}
