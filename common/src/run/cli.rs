//! What every binary's thin `main` shares: turning a result into an exit code and a
//! one-line message on stderr (docs/cli.md), writing records to stdout without panicking
//! on a closed pipe, and leaving a failure's [`Blocker`] for the supervisor.

use std::io::{self, Write};

use crate::error::{BLOCKER_FILE_VAR, Blocker, EXIT_FAILURE, Error};

/// Maps an edge error to its exit code: the first [`Error`] in the chain decides, anything
/// else is a plain failure (1).
pub fn exit_code(err: &anyhow::Error) -> i32 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map(Error::exit_code)
        .unwrap_or(EXIT_FAILURE)
}

/// Ends a tool's body: its exit code on success; on failure prints `tool: error` (the
/// whole cause chain on one line) to stderr and returns the error's exit code.
pub fn finish(tool: &str, result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(err) => {
            // The record first: the error's line stays the last one a reader sees.
            leave_blocker(&err);
            eprintln!("{tool}: {}", one_line(&err));
            exit_code(&err)
        }
    }
}

/// Writes the error's [`Blocker`] to the file the supervisor named in [`BLOCKER_FILE_VAR`]
/// (when it did, and when the error is one): the typed half of the failure, which the
/// supervisor reads to choose the command that resolves it. A file that cannot be written
/// only costs the remedy's hint.
fn leave_blocker(err: &anyhow::Error) {
    let Some(path) = std::env::var_os(BLOCKER_FILE_VAR).filter(|p| !p.is_empty()) else {
        return;
    };
    let Some(blocker) = err
        .chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .and_then(Error::blocker)
    else {
        return;
    };
    let path = std::path::Path::new(&path);
    let written = serde_json::to_vec(&blocker)
        .map_err(std::io::Error::other)
        .and_then(|text| {
            // The supervisor's runtime directory may not exist yet (a watch that fails at
            // once fails before the first live state is written).
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::fsutil::write_atomic(path, &text).map_err(std::io::Error::other)
        });
    if let Err(e) = written {
        crate::error::warn(&format!("cannot leave the failure record: {e}"));
    }
}

/// Reads the [`Blocker`] a child left in `path` (and removes the file); None when it left
/// none or the file is not one.
pub fn take_blocker(path: &std::path::Path) -> Option<Blocker> {
    let text = std::fs::read(path).ok()?;
    let _ = std::fs::remove_file(path);
    serde_json::from_slice(&text).ok()
}

/// The error and its causes joined by `: `, each cause dropped whose text an earlier part
/// already contains, newlines turned into spaces.
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// Writes one line to stdout and flushes it. A closed pipe is `Ok(false)`: the reader is
/// gone, so the caller should stop quietly (exit 0), as `ripgrep` and coreutils do.
pub fn print_line(line: &str) -> io::Result<bool> {
    let mut out = io::stdout().lock();
    match out
        .write_all(line.as_bytes())
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}
