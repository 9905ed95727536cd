//! What the receiver's side prints on stderr while `reverberator replicate` talks to it:
//! `reverb-receive`'s own messages, or the `ssh` client's and the remote shell's
//! (`Host key verification failed.`, `Permission denied (publickey).`,
//! `sh: 1: reverb-receive: not found`). Passed on to the sender's stderr line by line as
//! it comes (as when the pipe was inherited), and the last lines kept, so that the error
//! of a conversation that ended early names its culprit in what `status` shows, not only
//! on a terminal nobody watches.
//!
//! Invariants: at most [`KEPT_LINES`] lines of at most [`LINE_CHARS`] characters are kept
//! (a chatty or hostile remote cannot grow the sender's memory or replicas.tsv); reading
//! the tail never blocks longer than [`WAIT_FOR_END`] (a process that inherited the pipe,
//! as an ssh `ControlMaster`, may keep it open).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How many of the last lines are kept.
pub const KEPT_LINES: usize = 3;
/// How long a kept line may be (characters; longer ones are cut).
pub const LINE_CHARS: usize = 300;
/// How long [`StderrTail::last`] waits for the stream to end.
pub const WAIT_FOR_END: Duration = Duration::from_secs(2);

/// A child's stderr being passed on, its last lines kept.
pub struct StderrTail {
    kept: Arc<Mutex<VecDeque<String>>>,
    ended: mpsc::Receiver<()>,
}

impl StderrTail {
    /// Starts passing `stderr` on (a thread of its own, ending with the stream).
    pub fn start(stderr: impl Read + Send + 'static) -> StderrTail {
        let kept = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT_LINES)));
        let (tell_ended, ended) = mpsc::channel();
        let keep = Arc::clone(&kept);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                {
                    let mut out = std::io::stderr().lock();
                    let _ = out.write_all(&line);
                    if !line.ends_with(b"\n") {
                        let _ = out.write_all(b"\n");
                    }
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                let mut kept = keep.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.len() == KEPT_LINES {
                    kept.pop_front();
                }
                kept.push_back(text.chars().take(LINE_CHARS).collect());
            }
            let _ = tell_ended.send(());
        });
        StderrTail { kept, ended }
    }

    /// The last lines, joined with ` / ` (`None`: nothing was printed), once the stream
    /// ended or [`WAIT_FOR_END`] passed.
    pub fn last(&self) -> Option<String> {
        let _ = self.ended.recv_timeout(WAIT_FOR_END);
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        (!kept.is_empty()).then(|| kept.iter().cloned().collect::<Vec<_>>().join(" / "))
    }
}

#[cfg(test)]
mod tests;
