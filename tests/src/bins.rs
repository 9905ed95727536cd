//! The workspace's binaries as the tests run them: built fresh once per test process, all in
//! one directory, and shared with the tests that change kernel-wide state.
//!
//! Invariants:
//! - No test spawns a binary before `cargo build --workspace --bins` has finished in this
//!   process (a [`OnceLock`] runs it on the first [`bin`]), with the profile and target
//!   directory of the test binary itself, so `cargo test` alone never tests stale binaries.
//! - Every binary comes from one directory (`target/<profile>/`): the supervisor finds its
//!   sibling programs next to its own executable.
//! - While a test holds [`exclusive_kernel`], no other test of this process spawns a binary.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// The path of a workspace binary, current with the sources (built on first use).
///
/// The calling thread (one test) also starts sharing the kernel with the other tests until
/// it ends; see [`exclusive_kernel`].
pub fn bin(name: &str) -> PathBuf {
    share_kernel();
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing after `cargo build --workspace --bins`: is `{name}` a workspace binary?",
        path.display()
    );
    path
}

/// The directory of the workspace's binaries, after building them (once per process).
pub fn bin_dir() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build_workspace_bins) {
        Ok(dir) => dir,
        Err(why) => panic!("{why}"),
    }
}

/// Where the test binary runs from, as the `cargo build` arguments that put the workspace
/// binaries beside it: `target/[<triple>/]<profile>/deps/<test>`.
struct Layout {
    /// `target/[<triple>/]<profile>`: where the binaries land.
    profile_dir: PathBuf,
    target_dir: PathBuf,
    triple: Option<String>,
    /// The cargo profile (`dev` builds into `debug/`).
    profile: String,
}

fn layout() -> Result<Layout, String> {
    let exe = std::env::current_exe().map_err(|e| format!("test executable path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in target/<profile>/deps", exe.display()))?;
    let dir_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let profile = match dir_name(profile_dir).as_deref() {
        Some("debug") => "dev".to_owned(),
        Some(other) => other.to_owned(),
        None => return Err(format!("no profile directory above {}", exe.display())),
    };
    let above = profile_dir
        .parent()
        .ok_or_else(|| format!("no target directory above {}", profile_dir.display()))?;
    // Cargo tags only the target directory's root; `target/<triple>/` is a cross build.
    // (It writes the tag only when it creates the directory, so a `target/` made before the
    // first build has none: its `.rustc_info.json` marks it too.)
    let is_root =
        |d: &Path| d.join("CACHEDIR.TAG").is_file() || d.join(".rustc_info.json").is_file();
    let (target_dir, triple) = if is_root(above) {
        (above.to_path_buf(), None)
    } else {
        let root = above
            .parent()
            .ok_or_else(|| format!("no target directory above {}", above.display()))?;
        (root.to_path_buf(), dir_name(above))
    };
    Ok(Layout {
        profile_dir: profile_dir.to_path_buf(),
        target_dir,
        triple,
        profile,
    })
}

/// Runs `cargo build --workspace --bins` into the test binary's own target directory.
///
/// Cargo releases its build-directory lock before it runs the test binaries, so this inner
/// build neither blocks nor races the outer `cargo test`; it is a no-op when the binaries
/// are current.
fn build_workspace_bins() -> Result<PathBuf, String> {
    let layout = layout()?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the tests package has no parent directory")?;
    // Set by cargo for every test it runs; a test binary run by hand uses the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["--workspace", "--bins", "--profile", &layout.profile])
        .arg("--target-dir")
        .arg(&layout.target_dir);
    if let Some(triple) = &layout.triple {
        build.args(["--target", triple]);
    }
    let shown = format!("{build:?}");
    let out = build
        .output()
        .map_err(|e| format!("could not run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the binaries under test failed ({}): {shown}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(layout.profile_dir)
}

// ---- Tests that change kernel-wide state (inotify sysctls) run alone. ----

/// Who uses the kernel: how many test threads share it, and whether one has it alone.
/// Sharing never waits for a test that only waits to be exclusive (readers first), so a
/// test whose helper threads spawn binaries cannot deadlock against it.
struct Kernel {
    users: Mutex<Users>,
    changed: Condvar,
}

struct Users {
    sharing: usize,
    exclusive: bool,
}

static KERNEL: Kernel = Kernel {
    users: Mutex::new(Users {
        sharing: 0,
        exclusive: false,
    }),
    changed: Condvar::new(),
};

impl Kernel {
    fn users(&self) -> MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `ready`, then applies `take`; wakes the other waiters afterwards.
    fn when(&self, ready: impl Fn(&Users) -> bool, take: impl FnOnce(&mut Users)) {
        let mut users = self.users();
        while !ready(&users) {
            users = self
                .changed
                .wait(users)
                .unwrap_or_else(PoisonError::into_inner);
        }
        take(&mut users);
        self.changed.notify_all();
    }
}

/// One thread's share of the kernel, given back when the thread ends.
struct Share;

impl Drop for Share {
    fn drop(&mut self) {
        KERNEL.when(|_| true, |u| u.sharing -= 1);
    }
}

thread_local! {
    /// This thread's share, taken by its first [`bin`] (libtest runs every test on a thread
    /// of its own, so a test shares from its first binary to its end).
    static SHARE: RefCell<Option<Share>> = const { RefCell::new(None) };
    /// Does this thread hold [`exclusive_kernel`]?
    static EXCLUSIVE: Cell<bool> = const { Cell::new(false) };
}

fn share_kernel() {
    if EXCLUSIVE.with(Cell::get) {
        return;
    }
    SHARE.with(|share| {
        let mut share = share.borrow_mut();
        if share.is_none() {
            KERNEL.when(|u| !u.exclusive, |u| u.sharing += 1);
            *share = Some(Share);
        }
    });
}

/// Waits until no other test of this process is running after spawning a binary, then
/// keeps every other test from spawning one until the guard drops. For a test that changes
/// state all processes share, such as the inotify limits.
pub fn exclusive_kernel() -> ExclusiveKernel {
    // Give up this thread's own share first, or it would wait for itself.
    SHARE.with(|share| share.borrow_mut().take());
    KERNEL.when(|u| !u.exclusive && u.sharing == 0, |u| u.exclusive = true);
    EXCLUSIVE.with(|e| e.set(true));
    ExclusiveKernel { _private: () }
}

/// The guard of [`exclusive_kernel`].
pub struct ExclusiveKernel {
    _private: (),
}

impl Drop for ExclusiveKernel {
    fn drop(&mut self) {
        EXCLUSIVE.with(|e| e.set(false));
        KERNEL.when(|_| true, |u| u.exclusive = false);
    }
}
