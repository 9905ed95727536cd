//! Running the real `reverb-watch` on a temp dir and waiting for the lines it prints.
//!
//! Every line the process prints is parsed with `reverb_common::events::EventLine::parse`, so
//! the tests also check the output format. Waits have generous timeouts and are the only
//! synchronisation: no test asserts on timing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reverb_common::events::{EventKind, EventLine, HEADER};

/// How long any expected line may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A running `reverb-watch`.
pub struct Watch {
    pub child: Child,
    rx: Receiver<String>,
    stderr: Option<ChildStderr>,
    /// Every event line read so far (the header excluded).
    pub seen: Vec<EventLine>,
    /// How many of `seen` the waits have looked at.
    cursor: usize,
    eof: bool,
}

impl Watch {
    /// Starts `reverb-watch ARGS... SRC` and waits for its header (all watches are in place).
    pub fn start(src: &Path, args: &[&str]) -> Watch {
        let mut child = Command::new(reverb_tests::bin("reverb-watch"))
            .args(args)
            .arg(src)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn reverb-watch");
        let out = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8(buf).expect("event lines are UTF-8");
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut w = Watch {
            child,
            rx,
            stderr,
            seen: Vec::new(),
            cursor: 0,
            eof: false,
        };
        match w.rx.recv_timeout(TIMEOUT) {
            Ok(h) => assert_eq!(h, format!("{HEADER}\n"), "the header comes first"),
            Err(e) => panic!("no header from reverb-watch ({e}): {}", w.stderr_text()),
        }
        w
    }

    /// Reads one more line (parsed) into `seen`; false at EOF or after `until`.
    fn pull(&mut self, until: Instant) -> bool {
        if self.eof {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(line) => {
                let text = line.strip_suffix('\n').expect("a whole line");
                let n = self.seen.len() + 2;
                let ev = EventLine::parse(text, n)
                    .unwrap_or_else(|e| panic!("reverb-watch printed a bad line: {e}"));
                self.seen.push(ev);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                false
            }
        }
    }

    /// Waits for a line (after the ones earlier waits consumed) matching `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&EventLine) -> bool) -> EventLine {
        let until = Instant::now() + TIMEOUT;
        loop {
            while self.cursor < self.seen.len() {
                let i = self.cursor;
                self.cursor += 1;
                if pred(&self.seen[i]) {
                    return self.seen[i].clone();
                }
            }
            if !self.pull(until) {
                panic!("{what} never came; lines so far:\n{}", self.dump());
            }
        }
    }

    /// Waits for `kind` on `path`.
    pub fn wait_event(&mut self, kind: EventKind, path: &str) -> EventLine {
        self.wait_for(&format!("`{} {path}`", kind.as_str()), |e| {
            e.kind == kind && e.path == Path::new(path)
        })
    }

    /// Waits until every path in `paths` had an event satisfying `pred` (in any order), or
    /// until a line satisfying `stop_early` comes. Returns false when `stop_early` fired.
    pub fn wait_all(
        &mut self,
        paths: &[PathBuf],
        pred: impl Fn(&EventLine) -> bool,
        stop_early: impl Fn(&EventLine) -> bool,
    ) -> bool {
        let mut missing: std::collections::HashSet<PathBuf> = paths.iter().cloned().collect();
        let until = Instant::now() + TIMEOUT;
        loop {
            while self.cursor < self.seen.len() {
                let e = &self.seen[self.cursor];
                self.cursor += 1;
                if stop_early(e) {
                    return false;
                }
                if pred(e) {
                    missing.remove(&e.path);
                }
            }
            if missing.is_empty() {
                return true;
            }
            if !self.pull(until) {
                let mut m: Vec<_> = missing.iter().take(10).collect();
                m.sort();
                panic!(
                    "{} paths never reported, e.g. {m:?}; lines so far:\n{}",
                    missing.len(),
                    self.dump()
                );
            }
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("kill");
    }

    /// Waits for the process to exit (after reading what is left of its output).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let until = Instant::now() + TIMEOUT;
        while self.pull(until) {}
        assert!(
            self.eof,
            "reverb-watch did not close stdout:\n{}",
            self.dump()
        );
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < until, "reverb-watch did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit()
    }

    /// What the process wrote to stderr (only once it has exited or closed stderr).
    pub fn stderr_text(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = self.child.try_wait();
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// The lines so far, one per line, for failure messages.
    pub fn dump(&self) -> String {
        let mut s: String = self
            .seen
            .iter()
            .rev()
            .take(60)
            .rev()
            .map(|e| format!("  {}\n", e.render()))
            .collect();
        if self.seen.len() > 60 {
            s.insert_str(0, &format!("  … ({} lines before)\n", self.seen.len() - 60));
        }
        s
    }

    /// Lines of `kind` seen so far.
    pub fn count(&self, kind: EventKind) -> usize {
        self.seen.iter().filter(|e| e.kind == kind).count()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `n_dirs` × `n_files` files under `base`; returns their paths relative to `rel`.
pub fn make_tree(base: &Path, n_dirs: usize, n_files: usize) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for d in 0..n_dirs {
        let dir = base.join(format!("d{d}")).join("inner");
        std::fs::create_dir_all(&dir).expect("mkdir");
        all.push(PathBuf::from(format!("d{d}")));
        all.push(PathBuf::from(format!("d{d}/inner")));
        for f in 0..n_files {
            std::fs::write(dir.join(format!("f{f}")), b"data").expect("write");
            all.push(PathBuf::from(format!("d{d}/inner/f{f}")));
        }
    }
    all
}

/// Prefixes relative paths.
pub fn under(prefix: &str, paths: &[PathBuf]) -> Vec<PathBuf> {
    paths.iter().map(|p| Path::new(prefix).join(p)).collect()
}
