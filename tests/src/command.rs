//! [`TestCommand`]: one run of a workspace binary whose every failed assertion says what ran
//! and what it left behind — the command line, the working directory, the exit status,
//! stdout, stderr and a bounded `find`-style listing of the directory the test is about
//! (a job folder, say), so a failure can be understood from the test log alone.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// At most this many entries of [`TestCommand::show_dir`] are listed on a failure.
const LISTING_ENTRIES: usize = 80;

/// At most this many bytes of a command's stdin are shown on a failure.
const STDIN_SHOWN: usize = 4096;

/// A command for a workspace binary (or any program) and what to show when it fails.
pub struct TestCommand {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    dir: Option<PathBuf>,
}

impl TestCommand {
    /// A command for the workspace binary `name` (built fresh, see [`crate::bin`]).
    pub fn new(name: &str) -> TestCommand {
        TestCommand::program(crate::bin(name))
    }

    /// A command for any program (a shell, a system tool).
    pub fn program(program: impl AsRef<OsStr>) -> TestCommand {
        TestCommand {
            cmd: Command::new(program),
            stdin: None,
            dir: None,
        }
    }

    /// Appends an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut TestCommand {
        self.cmd.arg(arg);
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable of the command.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut TestCommand {
        self.cmd.env(key, value);
        self
    }

    /// Removes an environment variable of the command.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut TestCommand {
        self.cmd.env_remove(key);
        self
    }

    /// Clears the command's environment.
    pub fn env_clear(&mut self) -> &mut TestCommand {
        self.cmd.env_clear();
        self
    }

    /// Runs the command in `dir`.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut TestCommand {
        self.cmd.current_dir(dir);
        self
    }

    /// Feeds `input` on stdin (otherwise stdin is null). A command that exits without
    /// reading it all is not a failure of the write.
    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut TestCommand {
        self.stdin = Some(input.into());
        self
    }

    /// The directory whose listing a failure message shows (a vault's job folder, say).
    pub fn show_dir(&mut self, dir: impl AsRef<Path>) -> &mut TestCommand {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The underlying command, for what this wrapper does not offer.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Runs the command to its end and returns its output, whatever its exit status.
    pub fn output(&mut self) -> Output {
        let stdin = if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = self
            .cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not spawn {:?}: {e}", self.cmd));
        let writer = self.stdin.clone().and_then(|input| {
            let mut pipe = child.stdin.take()?;
            // A tool that rejects the input early may close its end: not our failure.
            Some(std::thread::spawn(move || drop(pipe.write_all(&input))))
        });
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("could not wait for {:?}: {e}", self.cmd));
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        output
    }

    /// Starts the command with piped stdout and stderr (a long-running program).
    pub fn spawn(&mut self) -> Child {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not spawn {:?}: {e}", self.cmd))
    }

    /// Runs the command; it must exit 0.
    #[track_caller]
    pub fn assert_success(&mut self) -> Output {
        self.assert_exit(0)
    }

    /// Runs the command; it must exit with `code` (not be killed by a signal).
    #[track_caller]
    pub fn assert_exit(&mut self, code: i32) -> Output {
        let output = self.output();
        if output.status.code() != Some(code) {
            panic!(
                "{}",
                self.failure(&output, &format!("expected exit {code}"))
            );
        }
        output
    }

    /// Runs the command; it must fail (any exit but 0, a signal included).
    #[track_caller]
    pub fn assert_failure(&mut self) -> Output {
        let output = self.output();
        if output.status.success() {
            panic!("{}", self.failure(&output, "expected a failure"));
        }
        output
    }

    /// Runs the command; it must exit 0. Returns its stdout as text.
    #[track_caller]
    pub fn stdout(&mut self) -> String {
        crate::stdout(&self.assert_success())
    }

    /// The failure message for `output` of this command: `why`, then the report.
    pub fn failure(&self, output: &Output, why: &str) -> String {
        let mut text = report(&self.cmd, self.dir.as_deref(), output, why);
        if let Some(input) = &self.stdin {
            let shown = &input[..input.len().min(STDIN_SHOWN)];
            let _ = write!(
                text,
                "--- stdin ({} bytes) ---\n{}\n",
                input.len(),
                String::from_utf8_lossy(shown)
            );
        }
        text
    }
}

/// Everything about a finished command a failure message needs.
pub fn report(cmd: &Command, dir: Option<&Path>, output: &Output, why: &str) -> String {
    let cwd = cmd
        .get_current_dir()
        .map(Path::to_path_buf)
        .or_else(|| std::env::current_dir().ok())
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "?".into());
    let status = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("{}", output.status),
    };
    let mut text = format!(
        "{why}, got {status}\ncommand: {cmd:?}\ncwd: {cwd}\n\
         --- stdout ---\n{}\n--- stderr ---\n{}\n",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    if let Some(dir) = dir {
        let _ = write!(text, "--- {} ---\n{}", dir.display(), listing(dir));
    }
    text
}

/// A `find`-style listing of `dir` (relative paths, type, size; symlinks with their
/// targets), sorted, at most `LISTING_ENTRIES` (80) lines.
pub fn listing(dir: &Path) -> String {
    let mut lines = Vec::new();
    let mut more = 0usize;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else {
            if rel.as_os_str().is_empty() {
                return format!("({} cannot be read)\n", dir.display());
            }
            continue;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names.into_iter().rev() {
            let path = rel.join(name);
            let Ok(meta) = std::fs::symlink_metadata(dir.join(&path)) else {
                continue;
            };
            if lines.len() == LISTING_ENTRIES {
                more += 1;
                continue;
            }
            let shown = path.display();
            lines.push(if meta.is_dir() {
                stack.push(path.clone());
                format!("{shown}/")
            } else if meta.is_symlink() {
                let target = std::fs::read_link(dir.join(&path)).unwrap_or_default();
                format!("{shown} -> {}", target.display())
            } else {
                format!(
                    "{shown} ({} bytes, mode {:o})",
                    meta.len(),
                    meta.mode() & 0o7777
                )
            });
        }
    }
    lines.sort();
    let mut text = lines.join("\n");
    text.push('\n');
    if more > 0 {
        let _ = writeln!(text, "… and at least {more} more");
    }
    text
}
