//! What every binary's thin `main` shares: turning a result into an exit code and a
//! one-line message on stderr (docs/cli.md), writing records to stdout without panicking
//! on a closed pipe, and running the tool's body on a big stack.

use std::io::{self, Write};

use crate::error::{EXIT_FAILURE, Error};

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
            eprintln!("{tool}: {}", one_line(&err));
            exit_code(&err)
        }
    }
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
