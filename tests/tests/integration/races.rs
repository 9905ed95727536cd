//! Hostile neighbours racing the tool (docs/security.md): an unprivileged user (uid 65534)
//! who owns a restore's destination, or a build's source, swaps one of its directories for
//! a symlink to a directory outside, with one `renameat2(RENAME_EXCHANGE)`, and back, again
//! and again while root restores or builds (the helper `reverb-swapper`, tests/swapper/).
//! Nothing may be written outside DEST or the vault, nothing read through the link may reach
//! a version, and a restore either comes out exact or fails naming the path.
//!
//! The oracles are independent of the tool: `find -printf` listings of the outside
//! directory before and after, `b3sum` of the outside files against every file of the
//! vault, and a restore into a private directory nobody else can touch.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use reverb_tests::model::{CaptureOpts, assert_same, capture};
use reverb_tests::{Fixture, bin, require_root, stderr, stdout};

/// The unprivileged neighbour.
const NOBODY: u32 = 65534;

/// The helper's bounds: it stops by itself after this long or this many rounds.
const SWAP_SECONDS: &str = "120";
const SWAP_ROUNDS: &str = "100000000";

/// `reverb-swapper` running as [`NOBODY`], swapping pairs of names until told to stop.
struct Swapper {
    child: Option<Child>,
    out: Option<BufReader<ChildStdout>>,
    stop: PathBuf,
}

impl Swapper {
    /// Starts swapping each pair (A, B); returns once the helper runs.
    fn start(stop: &Path, pairs: &[(PathBuf, PathBuf)]) -> Swapper {
        let mut c = Command::new("setpriv");
        c.args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_owned(),
        ])
        .arg(bin("reverb-swapper"))
        .args([SWAP_SECONDS, SWAP_ROUNDS])
        .arg(stop);
        for (a, b) in pairs {
            c.arg(a).arg(b);
        }
        let mut child = c
            .stdout(Stdio::piped())
            .spawn()
            .expect("start reverb-swapper");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line)
            .expect("read the helper's first line");
        assert_eq!(line.trim(), "ready", "reverb-swapper did not start");
        Swapper {
            child: Some(child),
            out: Some(out),
            stop: stop.to_path_buf(),
        }
    }

    /// Stops the helper and returns (exchanges made, pairs left swapped).
    fn finish(mut self) -> (u64, u64) {
        fs::write(&self.stop, b"").expect("stop file");
        let mut child = self.child.take().expect("running");
        let mut rest = String::new();
        if let Some(mut out) = self.out.take() {
            std::io::Read::read_to_string(&mut out, &mut rest).expect("helper output");
        }
        let status = child.wait().expect("wait for reverb-swapper");
        assert!(status.success(), "reverb-swapper: {status}\n{rest}");
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["exchanges", n, "unbalanced", m] => (
                n.parse().expect("exchanges"),
                m.parse().expect("unbalanced"),
            ),
            _ => panic!("reverb-swapper said {rest:?}"),
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Everything observable of the tree at `dir` (names, types, sizes, modes, owners, mtimes,
/// the directory's own included), listed by `find` — the oracle of "nothing was written".
fn find_listing(dir: &Path) -> String {
    let o = Command::new("find")
        .arg(dir)
        .args(["-printf", "%P %y %s %m %U:%G %T@\\n"])
        .output()
        .expect("find");
    assert!(o.status.success(), "find {}: {}", dir.display(), stderr(&o));
    let mut lines: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    lines.sort();
    lines.join("\n")
}

/// Asserts the listing of `dir` is still `before`, showing what differs.
fn assert_untouched(dir: &Path, before: &str, what: &str) {
    let after = find_listing(dir);
    if after == before {
        return;
    }
    let (b, a): (BTreeSet<&str>, BTreeSet<&str>) =
        (before.lines().collect(), after.lines().collect());
    let gone: Vec<_> = b.difference(&a).take(20).collect();
    let new: Vec<_> = a.difference(&b).take(20).collect();
    panic!(
        "{what}: {} changed (`%P %y %s %m %U:%G %T@`)\nbefore, not after: {gone:#?}\nafter, not before: {new:#?}",
        dir.display()
    );
}

/// The BLAKE3 of every regular file below `dir` (`find -type f` and `b3sum`; links are not
/// followed).
fn b3sums(dir: &Path) -> BTreeSet<String> {
    let o = Command::new("sh")
        .arg("-c")
        .arg("find \"$1\" -type f -exec b3sum --no-names {} +")
        .arg("sh")
        .arg(dir)
        .output()
        .expect("find | b3sum");
    assert!(
        o.status.success(),
        "b3sum {}: {}",
        dir.display(),
        stderr(&o)
    );
    stdout(&o).lines().map(str::to_owned).collect()
}

/// The contents of every regular file below `dir`, links not followed.
fn file_contents(dir: &Path) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("type");
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.insert(fs::read(e.path()).expect("read"));
            }
        }
    }
    out
}

/// A directory owned by [`NOBODY`], mode 0755.
fn nobody_dir(p: &Path) {
    fs::create_dir(p).expect("mkdir");
    lchown(p, Some(NOBODY), Some(NOBODY)).expect("chown");
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A symlink owned by [`NOBODY`] at `at`, to `target`.
fn nobody_link(target: &Path, at: &Path) {
    symlink(target, at).expect("symlink");
    lchown(at, Some(NOBODY), Some(NOBODY)).expect("chown");
}

/// The directory outside that the neighbour's links name: root's, holding the directories
/// (`dNN/sK`, empty) the version holds, so that a write through a link lands in it instead
/// of failing on a missing directory.
fn outside_skeleton(f: &Fixture, dirs: usize) -> PathBuf {
    let outside = f._tmp.path().join("outside");
    for d in 0..dirs {
        for s in 0..3 {
            fs::create_dir_all(outside.join(format!("d{d:02}/s{s}"))).expect("mkdir");
        }
    }
    outside
}

/// A fixture whose temp folder the neighbour can enter, its source filled with `dirs`
/// directories of 3 subdirectories of `files` files each, every content unique.
fn fixture(dirs: usize, files: usize) -> Fixture {
    let f = Fixture::new();
    fs::set_permissions(f._tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    for d in 0..dirs {
        for s in 0..3 {
            let sub = f.src.join(format!("d{d:02}/s{s}"));
            fs::create_dir_all(&sub).expect("mkdir");
            for i in 0..files {
                fs::write(
                    sub.join(format!("f{i:02}")),
                    format!("d{d:02}/s{s}/f{i:02}\n"),
                )
                .expect("write");
            }
        }
    }
    f
}

fn assert_no_panic(o: &Output, what: &str) {
    assert!(
        !stderr(o).contains("panicked"),
        "{what} panicked: {}",
        stderr(o)
    );
}

/// A restore that failed must name where (a path below DEST).
fn assert_fails_naming(o: &Output, dest: &Path, what: &str) {
    let shown = dest.display().to_string();
    assert!(
        stderr(o).contains(&shown),
        "{what} failed without naming a path below {shown}: {}",
        stderr(o)
    );
}

/// Root restores into `~nobody/dest` (created by the restore) while nobody swaps `dest`
/// itself for a link to a directory outside. Old code wrote through the link.
#[test]
fn a_restore_into_a_home_whose_owner_swaps_dest_for_a_link_writes_only_beneath_dest() {
    require_root!("root restores into another user's directory");
    let f = fixture(24, 20);
    f.first();
    let oracle = f.restore("latest");
    let tmp = f._tmp.path();
    let home = tmp.join("home");
    nobody_dir(&home);
    let outside = outside_skeleton(&f, 24);
    let before = find_listing(&outside);
    nobody_link(&outside, &home.join("lnk"));
    let dest = home.join("dest");
    let swapper = Swapper::start(&tmp.join("stop"), &[(dest.clone(), home.join("lnk"))]);
    let o = f.tool("reverb-restore").arg("--to").arg(&dest).output();
    let (exchanges, unbalanced) = swapper.finish();
    assert_no_panic(&o, "the restore");
    assert_untouched(
        &outside,
        &before,
        &format!(
            "root wrote outside DEST through the swapped link ({exchanges} exchanges; restore: {})",
            stderr(&o).trim()
        ),
    );
    assert!(exchanges > 0, "the neighbour never swapped: nothing tested");
    if o.status.success() {
        assert_eq!(unbalanced, 0, "the helper left names swapped");
        let opts = CaptureOpts {
            owners: true,
            dir_mtimes: true,
        };
        assert_same(
            &capture(&oracle, opts),
            &capture(&dest, opts),
            "raced restore",
        );
    } else {
        assert_fails_naming(&o, &dest, "the raced restore");
    }
}

/// Root restores `--overwrite` into nobody's existing `dest`, whose directories nobody
/// swaps for links to a directory outside. Old code wrote through the links.
#[test]
fn an_overwrite_restore_into_directories_their_owner_swaps_for_links_writes_only_beneath_dest() {
    require_root!("root restores into another user's directory");
    let f = fixture(24, 20);
    f.first();
    let oracle = f.restore("latest");
    let tmp = f._tmp.path();
    let outside = outside_skeleton(&f, 24);
    let before = find_listing(&outside);
    let dest = tmp.join("dest");
    nobody_dir(&dest);
    let mut pairs = Vec::new();
    for d in 0..24 {
        let dir = dest.join(format!("d{d:02}"));
        nobody_dir(&dir);
        let link = dest.join(format!(".l{d:02}"));
        nobody_link(&outside.join(format!("d{d:02}")), &link);
        pairs.push((dir, link));
    }
    let swapper = Swapper::start(&tmp.join("stop"), &pairs);
    // Five restores in a row, each racing the neighbour.
    let outputs: Vec<Output> = (0..5)
        .map(|_| {
            f.tool("reverb-restore")
                .arg("--overwrite")
                .arg("--to")
                .arg(&dest)
                .output()
        })
        .collect();
    let (exchanges, _) = swapper.finish();
    let said: Vec<String> = outputs
        .iter()
        .map(|o| stderr(o).trim().to_owned())
        .collect();
    assert_untouched(
        &outside,
        &before,
        &format!(
            "root wrote outside DEST through a swapped link ({exchanges} exchanges; restores: {said:?})"
        ),
    );
    assert!(exchanges > 0, "the neighbour never swapped: nothing tested");
    for o in &outputs {
        assert_no_panic(o, "the restore");
        if !o.status.success() {
            assert_fails_naming(o, &dest, "the raced restore");
        }
    }
    if let Some(o) = outputs.iter().rev().find(|o| o.status.success()) {
        // The neighbour may have moved restored directories around inside DEST (they are
        // its to move), but every file the version holds is there.
        let got = file_contents(&dest);
        let missing: Vec<_> = file_contents(&oracle)
            .into_iter()
            .filter(|c| !got.contains(c))
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .collect();
        assert!(
            missing.is_empty(),
            "restored ({}), but missing {missing:?}",
            stderr(o)
        );
    }
}

/// Root builds versions (the first, then rescans) of a source nobody owns while nobody
/// swaps its directories for links to a root-only directory holding files of the same
/// names. Old code copied the root-only files into the version.
#[test]
fn a_root_build_never_reads_through_a_source_directory_swapped_for_a_link() {
    require_root!("root backs up another user's source");
    let f = fixture(12, 30);
    let tmp = f._tmp.path();
    // The root-only directory, with the names the source's directories hold.
    let secret = tmp.join("secret");
    fs::create_dir(&secret).expect("mkdir");
    for s in 0..3 {
        fs::create_dir(secret.join(format!("s{s}"))).expect("mkdir");
        for i in 0..30 {
            fs::write(
                secret.join(format!("s{s}/f{i:02}")),
                format!("SECRET s{s}/f{i:02}\n"),
            )
            .expect("write");
        }
    }
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).expect("chmod");
    let secret_sums = b3sums(&secret);
    let before = find_listing(&secret);
    Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(&f.src)
        .status()
        .expect("chown -R");
    let mut pairs = Vec::new();
    for d in 0..12 {
        let link = f.src.join(format!(".l{d:02}"));
        nobody_link(&secret, &link);
        pairs.push((f.src.join(format!("d{d:02}")), link));
    }
    let swapper = Swapper::start(&tmp.join("stop"), &pairs);
    let mut outputs = vec![f.snap(&["--init", "--source"]).arg(&f.src).output()];
    for _ in 0..4 {
        outputs.push(f.snap(&["--force"]).output());
    }
    let (exchanges, _) = swapper.finish();
    for o in &outputs {
        assert_no_panic(o, "a raced build");
    }
    assert!(exchanges > 0, "the neighbour never swapped: nothing tested");
    assert!(
        outputs[0].status.success(),
        "the first version failed: {}",
        stderr(&outputs[0])
    );
    assert_untouched(
        &secret,
        &before,
        "a build wrote into the directory behind the link",
    );
    let leaked: Vec<_> = b3sums(&f.vault)
        .intersection(&secret_sums)
        .cloned()
        .collect();
    assert!(
        leaked.is_empty(),
        "the vault holds {} root-only files read through a swapped link ({exchanges} exchanges)",
        leaked.len()
    );
}

/// Links planted before a root restore, by the owner of DEST's directory: DEST itself a
/// link (refused, or with `--overwrite` replaced), directories in DEST links (replaced by
/// what the version holds): none is followed.
#[test]
fn links_planted_in_dest_before_a_restore_are_replaced_never_followed() {
    require_root!("root restores into another user's directory");
    let f = fixture(2, 3);
    f.first();
    let oracle = f.restore("latest");
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    let tmp = f._tmp.path();
    let outside = outside_skeleton(&f, 2);
    let before = find_listing(&outside);
    let home = tmp.join("home");
    nobody_dir(&home);
    let dest = home.join("dest");
    nobody_link(&outside, &dest);
    let o = f
        .tool("reverb-restore")
        .arg("--to")
        .arg(&dest)
        .assert_exit(2);
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    f.tool("reverb-restore")
        .arg("--overwrite")
        .arg("--to")
        .arg(&dest)
        .assert_success();
    assert_same(
        &capture(&oracle, opts),
        &capture(&dest, opts),
        "DEST was a link",
    );
    for flag in ["--overwrite", "--delete"] {
        let dest = home.join(format!("dest{flag}"));
        nobody_dir(&dest);
        nobody_link(&outside.join("d00"), &dest.join("d00"));
        nobody_dir(&dest.join("d01"));
        nobody_link(&outside.join("d01/s0"), &dest.join("d01/s0"));
        f.tool("reverb-restore")
            .arg(flag)
            .arg("--to")
            .arg(&dest)
            .assert_success();
        assert_same(
            &capture(&oracle, opts),
            &capture(&dest, opts),
            &format!("{flag} over planted links"),
        );
    }
    assert_untouched(&outside, &before, "a restore followed a planted link");
}
