//! reverb-index end to end: rows, --recount, and --check on hand-damaged vaults.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use reverb_common::tree::link_text;
use reverb_tests::{Fixture, TestCommand, cmd, ops, stderr, stdout};

fn index(f: &Fixture, args: &[&str]) -> TestCommand {
    let mut c = f.tool("reverb-index");
    c.args(args);
    c
}

/// Three versions: V2 and V3 link into V1 (`keep/`, a directory) and V3 into V2 (`b`).
fn three_versions(f: &Fixture) -> Vec<String> {
    fs::create_dir_all(f.src.join("keep/sub")).expect("mkdir");
    fs::write(f.src.join("keep/sub/f"), b"kept").expect("write");
    fs::write(f.src.join("a"), b"a1").expect("write");
    let v1 = f.first();
    fs::write(f.src.join("b"), b"b2").expect("write");
    let v2 = f.rescan();
    fs::write(f.src.join("a"), b"a3").expect("write");
    let v3 = f.rescan();
    vec![v1, v2, v3]
}

/// The problems `--check` prints, as (kind, path) pairs; asserts exit 1.
fn problems(f: &Fixture) -> Vec<(String, String)> {
    let o = index(f, &["--check"]).assert_exit(1);
    stdout(&o)
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            assert_eq!(fields.len(), 4, "job, kind, path, detail: {l:?}");
            assert_eq!(fields[0], f.job);
            (fields[1].to_owned(), fields[2].to_owned())
        })
        .collect()
}

fn has(p: &[(String, String)], kind: &str, path: &str) -> bool {
    p.iter().any(|(k, at)| k == kind && at == path)
}

#[test]
fn rows_and_recount() {
    let f = Fixture::new();
    let v = three_versions(&f);
    let o = index(&f, &[]).assert_success();
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "version\tdir\tcreated\tfiles\tchanged\theld_bytes\tlogical_bytes"
    );
    assert_eq!(lines.len(), 4);
    assert!(lines[3].starts_with(&format!("3\t{}\t", v[2])));
    // Without --job: a job column first.
    let o = cmd("reverb-index").arg("--vault").arg(&f.vault).output();
    assert!(stdout(&o).starts_with("job\tversion\t"), "{}", stdout(&o));
    assert!(
        stdout(&o)
            .lines()
            .nth(1)
            .expect("row")
            .starts_with("job\t1\t")
    );

    // A wrong size is found by --check and fixed by --recount.
    let idx = f.job_dir().join("index.tsv");
    let text = fs::read_to_string(&idx).expect("index");
    let mut rows = reverb_common::index::parse(&text).expect("parse");
    rows[1].held_bytes += 1;
    rows[2].files = 99;
    reverb_common::index::write(&idx, &rows).expect("write");
    let p = problems(&f);
    assert!(has(&p, "size-mismatch", &v[1]), "{p:?}");
    assert!(has(&p, "size-mismatch", &v[2]), "{p:?}");
    index(&f, &["--recount"]).assert_success();
    f.check_clean();
    let journal = fs::read_to_string(f.job_dir().join("journal.tsv")).expect("journal");
    assert!(journal.lines().any(|l| l.contains("\tindex\trecount\t")));
}

/// The detail `--check` prints for `kind` at `path`.
fn detail(f: &Fixture, kind: &str, path: &str) -> String {
    let o = index(f, &["--check"]).assert_exit(1);
    stdout(&o)
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|fields| fields[1] == kind && fields[2] == path)
        .map(|fields| fields[3].to_owned())
        .unwrap_or_else(|| panic!("no {kind} at {path}: {}", stdout(&o)))
}

#[test]
fn lost_data_is_damage_not_a_count_to_accept() {
    let f = Fixture::new();
    let v = three_versions(&f);
    let job = f.job_dir();
    // A count that drifted (the disk holds what was written): --recount is the fix.
    let idx = job.join("index.tsv");
    let mut rows =
        reverb_common::index::parse(&fs::read_to_string(&idx).expect("index")).expect("parse");
    rows[0].held_bytes += 4096;
    reverb_common::index::write(&idx, &rows).expect("write");
    let d = detail(&f, "size-mismatch", &v[0]);
    assert!(d.contains("--recount fixes it"), "{d}");
    index(&f, &["--recount"]).assert_success();
    f.check_clean();

    // A file shrunk on the disk (V1's, seen through V2's and V3's links too), and one
    // missing: data lost, which no recount fixes.
    fs::write(job.join(&v[0]).join("keep/sub/f"), b"").expect("truncate");
    fs::remove_file(job.join(&v[1]).join("b")).expect("rm");
    for version in &v {
        let d = detail(&f, "size-mismatch", version);
        assert!(!d.contains("--recount"), "{version}: offers --recount: {d}");
        assert!(d.contains("lost"), "{version}: {d}");
    }
}

#[test]
fn check_finds_hand_made_damage() {
    let f = Fixture::new();
    let v = three_versions(&f);
    f.check_clean();
    let job = f.job_dir();

    // A dangling link.
    symlink(
        link_text(Path::new("ghost"), &v[0]),
        job.join(&v[1]).join("ghost"),
    )
    .expect("ln");
    // A non-canonical link: V3/keep pointed at V1/keep; make it point at V2's link.
    let v3_keep = job.join(&v[2]).join("keep");
    assert!(fs::symlink_metadata(&v3_keep).expect("lstat").is_symlink());
    fs::remove_file(&v3_keep).expect("rm");
    symlink(link_text(Path::new("keep"), &v[1]), &v3_keep).expect("ln");
    // A leftover partial version and a wrong `current`.
    fs::create_dir_all(job.join(".partial/V9-20261124T214900Z")).expect("mkdir");
    fs::remove_file(job.join("current")).expect("rm");
    symlink(&v[0], job.join("current")).expect("ln");

    let p = problems(&f);
    assert!(
        has(&p, "dangling-link", &format!("{}/ghost", v[1])),
        "{p:?}"
    );
    assert!(
        has(&p, "non-canonical-link", &format!("{}/keep", v[2])),
        "{p:?}"
    );
    assert!(has(&p, "partial", ".partial/V9-20261124T214900Z"), "{p:?}");
    assert!(has(&p, "current", "current"), "{p:?}");

    // A deleted version directory: reported, and the links into it are dangling.
    fs::remove_dir_all(job.join(&v[0])).expect("rm");
    let p = problems(&f);
    assert!(has(&p, "missing-version", &v[0]), "{p:?}");
    assert!(has(&p, "dangling-link", &format!("{}/keep", v[1])), "{p:?}");
    // A version on disk but not in the index, and a link into it.
    fs::create_dir(job.join("V7-20261124T214900Z")).expect("mkdir");
    let p = problems(&f);
    assert!(has(&p, "unindexed-version", "V7-20261124T214900Z"), "{p:?}");

    // JSON lines carry the same.
    let o = index(&f, &["--check", "--json"]).assert_exit(1);
    assert!(
        stdout(&o).contains("\"type\":\"problem\""),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_damaged_job_gives_clear_errors_never_a_panic() {
    let f = Fixture::new();
    let v = three_versions(&f);
    let job = f.job_dir();

    // A missing index.tsv.
    fs::rename(job.join("index.tsv"), job.join("index.bak")).expect("mv");
    let o = index(&f, &[]).assert_exit(1);
    assert!(stderr(&o).contains("index.tsv"), "{}", stderr(&o));
    let p = problems(&f);
    assert!(has(&p, "index", "index.tsv"), "{p:?}");
    let o = cmd("reverb-retire")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "job", "--keep", "1"])
        .assert_exit(1);
    assert!(stderr(&o).contains("index.tsv"), "{}", stderr(&o));
    for d in &v {
        assert!(job.join(d).is_dir(), "{d} was deleted without an index");
    }
    fs::rename(job.join("index.bak"), job.join("index.tsv")).expect("mv");
    f.check_clean();

    // A truncated job.toml.
    let text = fs::read_to_string(job.join("job.toml")).expect("read");
    fs::write(job.join("job.toml"), &text[..text.len() / 2]).expect("truncate");
    let p = problems(&f);
    assert!(has(&p, "job-toml", "job.toml"), "{p:?}");
    let o = cmd("reverb-retire")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "job", "--keep", "1"])
        .assert_exit(1);
    assert!(stderr(&o).contains("job.toml"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    index(&f, &[]).assert_success();

    // Unknown job, missing vault marker.
    cmd("reverb-index")
        .arg("--vault")
        .arg(&f.vault)
        .args(["--job", "nope"])
        .assert_exit(2);
    cmd("reverb-index")
        .arg("--vault")
        .arg(f._tmp.path().join("unplugged"))
        .arg("--check")
        .assert_exit(75);
}

/// Fills the filesystem at `mnt` with one preallocated file, then punches a hole in every
/// other 8 KiB of its first 32 MiB: the free space left is small scattered pieces, so
/// every file copied there later takes many extents (and extent-tree blocks that are only
/// allocated when its data reaches the disk).
fn fragment(mnt: &Path) {
    use nix::fcntl::{FallocateFlags, fallocate};
    let f = fs::File::create(mnt.join("filler")).expect("create filler");
    let st = nix::sys::statvfs::statvfs(mnt).expect("statvfs");
    let free = st.blocks_available() as i64 * st.fragment_size() as i64;
    let filled = (0..64i64)
        .map(|k| free - (k << 18))
        .find(|len| *len > 0 && fallocate(&f, FallocateFlags::empty(), 0, *len).is_ok())
        .expect("fallocate filler");
    assert!(filled > 40 << 20, "filler of {filled} bytes");
    let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    for at in (0..(32i64 << 20)).step_by(16 << 10) {
        fallocate(&f, punch, at, 8 << 10).expect("punch");
    }
    f.sync_all().expect("fsync filler");
}

/// Each indexed version's `held_bytes` is what `du` (links not followed, a hard-linked
/// inode once) says its directory holds.
fn held_is_what_du_says(f: &Fixture, what: &str) {
    let idx = fs::read_to_string(f.job_dir().join("index.tsv")).expect("index");
    for row in reverb_common::index::parse(&idx).expect("parse") {
        let o = std::process::Command::new("du")
            .args(["-s", "-B1"])
            .arg(f.job_dir().join(&row.dir))
            .output()
            .expect("du");
        assert!(o.status.success(), "du: {}", stderr(&o));
        let du: u64 = stdout(&o)
            .split('\t')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .expect("du output");
        assert_eq!(row.held_bytes, du, "{what}: {} held_bytes vs du", row.dir);
    }
}

/// `--check` is clean and `held_bytes` agrees with `du`.
fn exact(f: &Fixture, what: &str) {
    let o = index(f, &["--check"]).output();
    assert!(
        o.status.success(),
        "{what}: --check on a healthy vault: {}{}",
        stdout(&o),
        stderr(&o)
    );
    held_is_what_du_says(f, what);
}

/// I7 on a real, fragmented disk: versions holding new multi-extent files and a directory
/// of many small files, then retirements; after every step `--check` is clean.
fn sizes_stay_exact_on(fstype: &str, mib: u64, mkfs: &[&str]) {
    let mut f = Fixture::new();
    let lm = match reverb_tests::LoopMount::new(f._tmp.path(), fstype, mib, mkfs) {
        Ok(m) => m,
        Err(why) => reverb_tests::skip!("{why}: sizes on {fstype}"),
    };
    f.vault = lm.mountpoint.join("vault");
    fragment(&lm.mountpoint);
    fs::create_dir(f.src.join("small")).expect("mkdir");
    for i in 0..300 {
        fs::write(f.src.join(format!("small/f{i}")), format!("small {i}\n")).expect("write");
    }
    fs::write(f.src.join("big1"), ops::pattern(1, 2 << 20)).expect("write");
    f.first();
    exact(&f, "first version");
    fs::write(f.src.join("big2"), ops::pattern(2, 2 << 20)).expect("write");
    fs::write(f.src.join("small/f1"), b"changed").expect("write");
    f.rescan();
    exact(&f, "second version");
    fs::write(f.src.join("big3"), ops::pattern(3, 3 << 20)).expect("write");
    fs::remove_file(f.src.join("big1")).expect("rm");
    fs::write(f.src.join("small/f2"), b"changed").expect("write");
    f.rescan();
    exact(&f, "third version");
    for keep in ["2", "1"] {
        f.tool("reverb-retire")
            .args(["--keep", keep])
            .assert_success();
        exact(&f, &format!("retire --keep {keep}"));
    }
    drop(lm);
}

#[test]
fn check_is_clean_on_a_fragmented_ext4() {
    // 1 KiB blocks: extents are short, so a few MiB need extent-tree blocks.
    sizes_stay_exact_on("ext4", 64, &["-b", "1024", "-m", "0"]);
}

#[test]
fn check_is_clean_on_a_fragmented_xfs() {
    sizes_stay_exact_on("xfs", 300, &[]);
}
