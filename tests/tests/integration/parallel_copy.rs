//! The first copy in parallel (docs/design.md#the-parallel-first-copy): a pool of copying
//! threads (`REVERB_COPY_WORKERS`, here more threads than cores to provoke interleavings)
//! must write what the serial copier (`REVERB_COPY_WORKERS=0`) and `cp -a` write: the same
//! tree, hard-link groups spread across directories kept one inode each (I5), directory
//! times set after their last child, checksum records that agree with BLAKE3 of each stored
//! file (the `blake3` crate as the oracle) in the same file as the serial copy's; a full
//! disk met by the pool fails cleanly; a file changing while the pool copies it is stored as
//! one consistent state with its record and journal line.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reverb_tests::model::{CaptureOpts, capture};
use reverb_tests::ops::{index_dirs, no_partial};
use reverb_tests::{Fixture, LoopMount, TestCommand, inodes, stderr, stdout};

/// More copying threads than this machine's cores: the results arrive out of order.
const MANY: &str = "8";

fn opts() -> CaptureOpts {
    CaptureOpts {
        owners: reverb_tests::is_root(),
        dir_mtimes: true,
    }
}

/// A tree of `dirs` directories (some nested) with files of every size class, hard-link
/// groups whose names are spread over distant directories, symlinks, a FIFO, odd modes and
/// old times.
fn make_tree(src: &Path, dirs: usize) {
    let mut paths = Vec::new();
    for d in 0..dirs {
        let dir = if d % 3 == 0 {
            src.join(format!("d{d}"))
        } else {
            src.join(format!("d{}/s{d}", d - d % 3))
        };
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..12 {
            let p = dir.join(format!("f{i}"));
            let len = match (d + i) % 7 {
                0 => 0,
                1 => 10,
                2 => 4096,
                3 => 70_000,
                4 => 300_000,
                5 => 1 << 20 | 17,
                _ => 1500,
            };
            fs::write(&p, reverb_tests::ops::pattern((d * 31 + i) as u32, len)).expect("write");
            paths.push(p);
        }
        // A sparse file: a hole, then data.
        let f = fs::File::create(dir.join("sparse")).expect("create");
        f.set_len(2 << 20).expect("len");
        std::os::unix::fs::FileExt::write_all_at(&f, b"tail", 2 << 20).expect("write");
        std::os::unix::fs::symlink(format!("f{}", d % 12), dir.join("link")).expect("symlink");
        fs::set_permissions(dir.join("f1"), fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    // Hard-link groups: each joins a file in one directory with names in far ones.
    let groups = dirs;
    for g in 0..groups {
        let first = &paths[(g * 7) % paths.len()];
        for k in 1..=(1 + g % 3) {
            let other = src.join(format!("d{}", (g + k * 5) % dirs / 3 * 3));
            let name = other.join(format!("hl{g}_{k}"));
            fs::hard_link(first, &name).expect("link");
        }
    }
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    // Old times on every directory, deepest first (children would bump them otherwise).
    let mut all_dirs: Vec<PathBuf> = Vec::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in fs::read_dir(&d).expect("list") {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_dir() {
                pending.push(e.path());
            }
        }
        all_dirs.push(d);
    }
    for d in all_dirs.iter().rev() {
        let t = nix::sys::time::TimeSpec::new(1_600_000_000 + d.as_os_str().len() as i64, 5);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            d.as_path(),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .expect("utimes");
    }
}

/// The first version of `src` into `vault` with `workers` copying threads; its directory.
fn first_with(f: &Fixture, vault: &Path, workers: &str) -> PathBuf {
    let o = TestCommand::new("reverb-snap")
        .arg("--vault")
        .arg(vault)
        .args(["--job", &f.job, "--init", "--source"])
        .arg(&f.src)
        .env("REVERB_COPY_WORKERS", workers)
        .assert_success();
    let v = stdout(&o).trim().to_owned();
    assert!(!v.is_empty(), "no version printed");
    vault.join(&f.job).join(v)
}

/// BLAKE3 of every regular file below `root` (relative path → hex).
fn blake3_of_files(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        for e in fs::read_dir(root.join(&rel)).expect("list") {
            let e = e.expect("entry");
            let child = rel.join(e.file_name());
            let ft = e.file_type().expect("type");
            if ft.is_dir() {
                pending.push(child);
            } else if ft.is_file() {
                let data = fs::read(root.join(&child)).expect("read");
                out.insert(child, blake3::hash(&data).to_hex().to_string());
            }
        }
    }
    out
}

/// The records of a job's first version, as its checksums file says (path → hex).
fn records(job: &Path) -> BTreeMap<PathBuf, String> {
    let text = fs::read_to_string(job.join("checksums/V1.tsv")).expect("checksums file");
    text.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (PathBuf::from(c[0]), c[2].to_owned())
        })
        .collect()
}

#[test]
fn a_parallel_first_copy_is_the_serial_one_and_cp_a_with_every_hard_link_group() {
    let f = Fixture::new();
    make_tree(&f.src, 60);
    let reference = f._tmp.path().join("cp");
    TestCommand::program("cp")
        .arg("-a")
        .arg(&f.src)
        .arg(&reference)
        .assert_success();
    let serial_vault = f._tmp.path().join("serial");
    let parallel_vault = f._tmp.path().join("parallel");
    let serial = first_with(&f, &serial_vault, "0");
    let parallel = first_with(&f, &parallel_vault, MANY);
    let want = capture(&reference, opts());
    assert_eq!(
        capture(&parallel, opts()),
        want,
        "parallel copy against cp -a"
    );
    assert_eq!(capture(&serial, opts()), want, "serial copy against cp -a");
    // Every hard-link group, spread over directories, is one inode in the version (I5).
    let groups = inodes::groups(&reference);
    assert!(
        groups.len() >= 60,
        "the tree has its groups: {}",
        groups.len()
    );
    assert_eq!(inodes::groups(&parallel), groups, "hard-link groups");
    assert!(inodes::version_keeps_groups(&reference, &parallel).is_empty());
    // Records: one per stored file, each the file's BLAKE3, in the very file the serial
    // copy writes.
    let job = parallel_vault.join(&f.job);
    assert_eq!(
        records(&job),
        blake3_of_files(&parallel),
        "records against BLAKE3"
    );
    assert_eq!(
        fs::read(job.join("checksums/V1.tsv")).expect("parallel"),
        fs::read(serial_vault.join(&f.job).join("checksums/V1.tsv")).expect("serial"),
        "the checksums file is the serial copy's"
    );
    // hardlinks.tsv, but for the version's name (its time), is the serial copy's.
    let groups_file = |vault: &Path| -> Vec<String> {
        let text = fs::read_to_string(vault.join(&f.job).join("hardlinks.tsv")).expect("read");
        text.lines()
            .map(|l| l.split_once('\t').map_or(l, |(_, rest)| rest).to_owned())
            .collect()
    };
    assert_eq!(
        groups_file(&parallel_vault),
        groups_file(&serial_vault),
        "hardlinks.tsv is the serial copy's"
    );
}

#[test]
fn a_full_disk_during_a_parallel_first_copy_fails_cleanly() {
    let mut f = Fixture::new();
    // Declared after the fixture: unmounted before its directory goes.
    let lm = match LoopMount::new(f._tmp.path(), "ext4", 24, &["-m", "0"]) {
        Ok(m) => m,
        Err(why) => {
            reverb_tests::skip(&format!("{why}: the vault on a small ext4"));
            return;
        }
    };
    f.vault = lm.mountpoint.join("vault");
    // About 40 MiB in 400 files over 40 directories: more than the disk holds.
    for d in 0..40 {
        let dir = f.src.join(format!("d{d}"));
        fs::create_dir(&dir).expect("mkdir");
        for i in 0..10 {
            fs::write(
                dir.join(format!("f{i}")),
                reverb_tests::ops::pattern(d * 10 + i, 100 << 10),
            )
            .expect("write");
        }
    }
    let o = f
        .snap(&["--init", "--source"])
        .arg(&f.src)
        .env("REVERB_COPY_WORKERS", MANY)
        .output();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("disk is full"), "unclear message: {e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(stdout(&o).trim().is_empty(), "printed a version");
    assert!(no_partial(&f), "a .partial version was left");
    assert!(index_dirs(&f).is_empty(), "a version was indexed");
    // Nothing half-visible: no version directory at all in the job folder.
    let versions: Vec<_> = fs::read_dir(f.job_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with('V'))
                .collect()
        })
        .unwrap_or_default();
    assert!(versions.is_empty(), "a version directory: {versions:?}");
    // With room again (half the data gone), the first version is made and exact.
    for d in 20..40 {
        fs::remove_dir_all(f.src.join(format!("d{d}"))).expect("rm");
    }
    let o = f
        .snap(&[])
        .env("REVERB_COPY_WORKERS", MANY)
        .assert_success();
    let v = stdout(&o).trim().to_owned();
    assert!(
        !v.is_empty(),
        "no version after freeing space: {}",
        stderr(&o)
    );
    assert_eq!(
        capture(&f.job_dir().join(&v), opts()),
        capture(&f.src, opts()),
        "the version after freeing space"
    );
}

#[test]
fn files_changing_while_the_pool_copies_them_are_stored_consistently() {
    let f = Fixture::new();
    make_tree(&f.src, 30);
    // Hot files: replaced whole (written aside, renamed over), over and over, each state
    // one repeated byte.
    let hot: Vec<PathBuf> = (0..8)
        .map(|i| f.src.join(format!("d{}/hot{i}", i % 4 * 3)))
        .collect();
    for p in &hot {
        fs::write(p, vec![0u8; 256 << 10]).expect("write");
    }
    let aside = f._tmp.path().join("aside");
    fs::create_dir(&aside).expect("mkdir");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, hot) = (stop.clone(), hot.clone());
        std::thread::spawn(move || {
            let mut round = 1u8;
            while !stop.load(Ordering::SeqCst) {
                for (i, p) in hot.iter().enumerate() {
                    let tmp = aside.join(format!("t{i}"));
                    fs::write(&tmp, vec![round; 256 << 10]).expect("write aside");
                    fs::rename(&tmp, p).expect("rename over");
                }
                round = round.wrapping_add(1).max(1);
            }
        })
    };
    let vault = f._tmp.path().join("vault");
    let version = first_with(&f, &vault, MANY);
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let job = vault.join(&f.job);
    // Every record is the BLAKE3 of what was stored, hot files included.
    assert_eq!(
        records(&job),
        blake3_of_files(&version),
        "records against BLAKE3"
    );
    // A hot file is one state the writer wrote, whole: one byte repeated, never a mix.
    for p in &hot {
        let rel = p.strip_prefix(&f.src).expect("rel");
        let stored = fs::read(version.join(rel)).expect("stored");
        assert_eq!(stored.len(), 256 << 10, "{}", rel.display());
        assert!(
            stored.windows(2).all(|w| w[0] == w[1]),
            "{}: a mix of states",
            rel.display()
        );
    }
    // Journaled as changed during the copy: only hot files, each once.
    let journal = fs::read_to_string(job.join("journal.tsv")).expect("journal");
    let changed: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("changed-during-copy"))
        .collect();
    for line in &changed {
        assert!(
            hot.iter().any(|p| {
                let rel = p.strip_prefix(&f.src).expect("rel");
                line.contains(&*rel.to_string_lossy())
            }),
            "a cold file journaled as changing: {line}"
        );
    }
    assert!(changed.len() <= hot.len(), "{changed:#?}");
    // The cold files are exact.
    let cold_src = blake3_of_files(&f.src);
    let stored = blake3_of_files(&version);
    for (rel, hash) in &cold_src {
        if !rel
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("hot"))
        {
            assert_eq!(stored.get(rel), Some(hash), "{}", rel.display());
        }
    }
    let m = fs::metadata(version.join("d0/f1")).expect("stat");
    assert_eq!(m.mode() & 0o7777, 0o640);
}
