//! Replication (docs/design.md#replication, docs/format.md#replication-stream): a job's
//! versions sent to a second vault, locally and over a real `sshd` on 127.0.0.1, compared
//! three ways with the source vault's (restored and compared by `stat` facts and `b3sum`,
//! browsed with `diff -r`, and their `reverb-index` stats) after versions, after
//! retirements on either side, and after interruptions (the receiver killed at every write
//! step, the sender killed mid-stream, the connection cut); hostile and random streams fed
//! to `reverb-receive` are refused, naming the entry, and write nothing outside the replica's
//! job folder.

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reverb_common::stream::{
    Attrs, Counts, DataMode, Entry, FORMAT, FileEntry, Hello, Kind, Record, RecordWriter, Time,
    VersionHeader,
};
use reverb_tests::model::raw;
use reverb_tests::ops::pattern;
use reverb_tests::replica::{
    assert_replica_clean, assert_replica_consistent, assert_replica_exact, assert_same_version,
    assert_versions_same, parse, replicate, replicate_ok, versions,
};
use reverb_tests::sshd::Sshd;
use reverb_tests::{Fixture, TestCommand, cmd, have, skip, stderr, stdout, wait_until};

/// A source of every kind of entry a version keeps: nested directories, an empty file and
/// directory, a sparse file, odd names, relative (one climbing out of its directory),
/// absolute links, hard links, a FIFO, setuid and private modes, an xattr where the
/// filesystem takes one.
fn varied(src: &Path) {
    fs::create_dir_all(src.join("docs/deep/er")).expect("mkdir");
    fs::write(src.join("docs/a.txt"), pattern(1, 5000)).expect("write");
    fs::write(src.join("docs/deep/er/b.bin"), pattern(2, 300_000)).expect("write");
    fs::write(src.join("empty"), b"").expect("write");
    fs::create_dir(src.join("empty-dir")).expect("mkdir");
    let sparse = fs::File::create(src.join("sparse")).expect("create");
    sparse.set_len(8 << 20).expect("len");
    sparse.write_at(b"tail", (8 << 20) - 4).expect("write");
    fs::write(src.join(raw(b"new\nline")), b"x").expect("write");
    fs::write(src.join(raw(b"bad\xff name")), b"y").expect("write");
    std::os::unix::fs::symlink("a.txt", src.join("docs/rel")).expect("symlink");
    std::os::unix::fs::symlink("../a.txt", src.join("docs/deep/climb")).expect("symlink");
    std::os::unix::fs::symlink(src.join("docs/a.txt"), src.join("abs")).expect("symlink");
    fs::write(src.join("h1"), b"linked").expect("write");
    fs::hard_link(src.join("h1"), src.join("h2")).expect("link");
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    fs::set_permissions(src.join("docs/a.txt"), fs::Permissions::from_mode(0o4750)).expect("chmod");
    fs::set_permissions(src.join("docs/deep"), fs::Permissions::from_mode(0o700)).expect("chmod");
    if have("setfattr") {
        let _ = TestCommand::program("setfattr")
            .args(["-n", "user.k", "-v", "v"])
            .arg(src.join("docs/deep/er/b.bin"))
            .output();
    }
}

/// A round of changes: a file rewritten, one added, one removed, a directory renamed, a
/// mode changed.
fn change(src: &Path, round: u32) {
    fs::write(src.join("docs/a.txt"), pattern(100 + round, 6000)).expect("write");
    fs::write(src.join(format!("new-{round}")), pattern(200 + round, 1000)).expect("write");
    let _ = fs::remove_file(src.join("h2"));
    let from = if round == 1 {
        "empty-dir".to_owned()
    } else {
        format!("moved-{}", round - 1)
    };
    fs::rename(src.join(&from), src.join(format!("moved-{round}"))).expect("rename");
    fs::set_permissions(
        src.join("empty"),
        fs::Permissions::from_mode(0o600 + round % 2),
    )
    .expect("chmod");
}

/// A new source vault with the varied tree's first version.
fn source() -> Fixture {
    let f = Fixture::new();
    varied(&f.src);
    f.first();
    f
}

fn replica_path(f: &Fixture, name: &str) -> PathBuf {
    f._tmp.path().join(name)
}

fn to(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn a_local_replica_is_exact_after_each_version_and_a_second_run_sends_nothing() {
    let f = source();
    let rep = replica_path(&f, "replica");
    let first = replicate_ok(&f, &to(&rep), &["--init"]);
    assert_eq!(first.versions.len(), 1);
    assert_eq!(assert_replica_exact(&f, &rep), 1);
    for round in 1..=3 {
        change(&f.src, round);
        let v = f.rescan();
        assert!(!v.is_empty(), "round {round} made a version");
        let r = replicate_ok(&f, &to(&rep), &[]);
        assert_eq!(
            r.versions.iter().map(|v| v.0.as_str()).collect::<Vec<_>>(),
            [v.as_str()]
        );
        assert_eq!(r.newest().as_deref(), Some(v.as_str()));
    }
    assert_eq!(assert_replica_exact(&f, &rep), 4);
    // The replica's versions keep the source's numbers and stamps.
    assert_eq!(versions(&rep, &f.job), versions(&f.vault, &f.job));
    let again = replicate_ok(&f, &to(&rep), &[]);
    assert!(again.versions.is_empty());
    assert!(
        again.bytes_sent() < 1024,
        "nothing to send cost {} bytes",
        again.bytes_sent()
    );
    // The replica is a replica: no version is ever taken of its recorded source.
    let o = cmd("reverb-snap")
        .arg("--vault")
        .arg(&rep)
        .args(["--job", &f.job])
        .assert_failure();
    assert!(
        stderr(&o).contains("is a replica of vault"),
        "{}",
        stderr(&o)
    );
    // `status` knows how far behind it is.
    let st = cmd("reverberator")
        .args(["status", "--json", "--vault"])
        .arg(&f.vault)
        .stdout();
    assert!(st.contains("\"replica_lag\""), "{st}");
    // On the replica's side, `status` says what the job is, not that it is stopped or
    // that its (remote) source is unrecorded.
    let marker = fs::read_to_string(f.vault.join("reverberator-vault.toml")).expect("marker");
    let text = cmd("reverberator")
        .args(["status", "--vault"])
        .arg(&rep)
        .stdout();
    assert!(text.contains("replica of vault "), "{text}");
    assert!(
        !text.contains("stopped") && !text.contains("source unrecorded"),
        "{text}"
    );
    let json = cmd("reverberator")
        .args(["status", "--json", "--vault"])
        .arg(&rep)
        .stdout();
    let st: serde_json::Value = serde_json::from_str(json.trim()).expect("status JSON");
    let id = st["replica_of"].as_str().expect("replica_of");
    assert!(
        marker.contains(id),
        "replica_of {id} is the source vault's id: {marker}"
    );
}

#[test]
fn several_versions_at_once_are_sent_in_order() {
    let f = source();
    for round in 1..=3 {
        change(&f.src, round);
        f.rescan();
    }
    let rep = replica_path(&f, "replica");
    let r = replicate_ok(&f, &to(&rep), &["--init"]);
    assert_eq!(r.versions.len(), 4);
    assert_eq!(assert_replica_exact(&f, &rep), 4);
}

/// Ten changed files of 64 KiB in a tree of 2,000: what is sent is their data and a few
/// kilobytes of records (T8: at most 1.1 times the new data plus 64 KiB).
#[test]
fn a_version_of_ten_changed_files_sends_their_data_and_little_more() {
    let f = Fixture::new();
    for d in 0..20 {
        let dir = f.src.join(format!("d{d:02}"));
        for s in 0..10 {
            let sub = dir.join(format!("s{s}"));
            fs::create_dir_all(&sub).expect("mkdir");
            for i in 0..10 {
                fs::write(
                    sub.join(format!("f{i}")),
                    pattern(d * 100 + s * 10 + i, 200),
                )
                .expect("write");
            }
        }
    }
    f.first();
    let rep = replica_path(&f, "replica");
    replicate_ok(&f, &to(&rep), &["--init"]);
    let mut new_data = 0u64;
    for i in 0..10u32 {
        let data = pattern(9000 + i, 64 << 10);
        new_data += data.len() as u64;
        fs::write(
            f.src.join(format!("d{:02}/s{}/f{}", i * 2, i % 10, i)),
            data,
        )
        .expect("write");
    }
    let v = f.rescan();
    let r = replicate_ok(&f, &to(&rep), &[]);
    assert_eq!(r.versions.len(), 1);
    let limit = new_data + new_data / 10 + (64 << 10);
    assert!(
        r.bytes_sent() <= limit,
        "sent {} bytes for {new_data} bytes of new data (limit {limit})",
        r.bytes_sent()
    );
    assert!(r.bytes_sent() >= new_data);
    assert_same_version(&f, &rep, &v);
    assert_replica_clean(&rep, &f.job);
}

fn retire(vault: &Path, job: &str, keep: u32) {
    cmd("reverb-retire")
        .arg("--vault")
        .arg(vault)
        .args(["--job", job, "--keep", &keep.to_string()])
        .assert_success();
}

#[test]
fn retiring_here_sends_no_data_and_each_side_retires_by_its_own_rules() {
    let f = source();
    for round in 1..=2 {
        change(&f.src, round);
        f.rescan();
    }
    let rep = replica_path(&f, "replica");
    replicate_ok(&f, &to(&rep), &["--init"]);
    let replicated = versions(&rep, &f.job);
    assert_eq!(replicated.len(), 3);
    // The source retires its oldest: its data moves forward there, and nothing is sent.
    let oldest_source_tree = reverb_tests::model::capture(
        &reverb_tests::replica::restore(&f.vault, &f.job, &replicated[0], f._tmp.path()),
        reverb_tests::replica::opts(),
    );
    retire(&f.vault, &f.job, 2);
    assert_eq!(versions(&f.vault, &f.job).len(), 2);
    let r = replicate_ok(&f, &to(&rep), &[]);
    assert!(r.versions.is_empty());
    assert!(
        r.bytes_sent() < 1024,
        "a retirement sent {} bytes",
        r.bytes_sent()
    );
    // The replica keeps what its own rules keep: the source's oldest is still there, exact.
    assert_eq!(versions(&rep, &f.job), replicated);
    let kept = reverb_tests::model::capture(
        &reverb_tests::replica::restore(&rep, &f.job, &replicated[0], f._tmp.path()),
        reverb_tests::replica::opts(),
    );
    reverb_tests::model::assert_same(&oldest_source_tree, &kept, "the replica's own oldest");
    assert_eq!(assert_replica_exact(&f, &rep), 2);
    // A new version after the retirement: only its change travels.
    change(&f.src, 3);
    let v = f.rescan();
    let r = replicate_ok(&f, &to(&rep), &[]);
    assert_eq!(r.versions.len(), 1);
    assert!(r.bytes_sent() < 64 << 10, "sent {}", r.bytes_sent());
    assert_same_version(&f, &rep, &v);
    // The replica retires by its rules, down to one version: still exact, still extends.
    retire(&rep, &f.job, 1);
    assert_eq!(versions(&rep, &f.job), std::slice::from_ref(&v));
    change(&f.src, 4);
    let v = f.rescan();
    let r = replicate_ok(&f, &to(&rep), &[]);
    assert_eq!(r.versions.len(), 1);
    assert_eq!(assert_replica_exact(&f, &rep), 2);
    assert_eq!(versions(&rep, &f.job).last(), Some(&v));
}

/// The replica was away while the source retired the replica's newest version: the
/// manifests are compared and only what differs travels.
#[test]
fn a_replica_whose_newest_is_gone_here_gets_only_what_differs() {
    let f = source();
    fs::write(f.src.join("big"), pattern(7, 2 << 20)).expect("write");
    f.rescan();
    let rep = replica_path(&f, "replica");
    replicate_ok(&f, &to(&rep), &["--init"]);
    for round in 1..=2 {
        change(&f.src, round);
        f.rescan();
    }
    retire(&f.vault, &f.job, 1);
    let newest = versions(&f.vault, &f.job);
    assert_eq!(newest.len(), 1);
    let r = replicate_ok(&f, &to(&rep), &[]);
    assert_eq!(r.summary["compared_manifests"], true);
    assert_eq!(r.versions.len(), 1);
    assert!(
        r.bytes_sent() < 256 << 10,
        "the 2 MiB file that did not change was sent again: {} bytes",
        r.bytes_sent()
    );
    assert_eq!(assert_replica_exact(&f, &rep), 1);
}

/// `reverb-receive` killed (`SIGKILL`) after each of its write steps in turn, from the first
/// file to the last publishing step: the next run resumes and every version is exact.
#[test]
fn a_receiver_killed_at_any_step_resumes_and_the_replica_is_exact() {
    let f = source();
    change(&f.src, 1);
    f.rescan();
    let mut step = 1;
    loop {
        let rep = replica_path(&f, &format!("replica-{step}"));
        let o = replicate(&f, &to(&rep), &["--init"])
            .env("REVERB_FAULT_AFTER", step.to_string())
            .output();
        let finished = o.status.success();
        if !finished {
            assert_eq!(
                o.status.code(),
                Some(75),
                "step {step}: a receiver killed is 'try again later': {}",
                stderr(&o)
            );
            // Every version indexed is exact (what else the kill left, an unfinished
            // version, one renamed but not indexed, `current` not moved yet, is for the next
            // run to resume or finish).
            if rep.join(&f.job).join("index.tsv").exists() {
                assert_versions_same(&f, &rep);
            }
            replicate_ok(&f, &to(&rep), &[]);
        }
        assert_eq!(assert_replica_exact(&f, &rep), 2, "step {step}");
        assert!(
            fs::read_dir(rep.join(&f.job).join(".partial"))
                .map(|mut d| d.next().is_none())
                .unwrap_or(true),
            "step {step}: a partial version left"
        );
        assert!(!rep.join(&f.job).join(".tmp/held").exists(), "step {step}");
        let _ = fs::remove_dir_all(&rep);
        if finished {
            assert!(step > 10, "the sweep covered only {step} steps");
            break;
        }
        step += 1;
    }
}

/// The pid of the `reverb-receive` child of `parent`, once it is stopped (`SIGSTOP`).
fn stopped_receiver(parent: u32) -> Option<i32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').map_or(0, |i| i + 1)..close];
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if comm == "reverb-receive"
            && rest.first() == Some(&"T")
            && rest.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent)
        {
            return Some(pid);
        }
    }
    None
}

/// The sender killed (`SIGKILL`) while the receiver, frozen after its sixth file, has part
/// of a large first version: the receiver keeps what arrived, and the next run sends only
/// the rest; the replica is exact.
#[test]
fn a_killed_sender_resumes_without_sending_again_what_arrived() {
    let f = Fixture::new();
    for i in 0..16u32 {
        fs::write(f.src.join(format!("f{i:02}")), pattern(i, 1 << 20)).expect("write");
    }
    f.first();
    let rep = replica_path(&f, "replica");
    let mut sender = replicate(&f, &to(&rep), &["--init"])
        .env("REVERB_FAULT_STOP_AFTER", "6")
        .spawn();
    let mut receiver = None;
    wait_until(
        Duration::from_secs(60),
        "the receiver to stop after 6 files",
        || {
            receiver = stopped_receiver(sender.id());
            receiver.is_some()
        },
    );
    let receiver = nix::unistd::Pid::from_raw(receiver.expect("stopped"));
    let _ = sender.kill();
    let _ = sender.wait();
    nix::sys::signal::kill(receiver, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    wait_until(
        Duration::from_secs(30),
        "the receiver to see its sender gone",
        || {
            nix::sys::signal::kill(receiver, None).is_err()
                || fs::read_to_string(format!("/proc/{receiver}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        },
    );
    assert!(
        versions(&rep, &f.job).is_empty(),
        "a version half sent is not published"
    );
    let r = replicate_ok(&f, &to(&rep), &[]);
    assert!(
        r.bytes_sent() < (10 << 20) + (64 << 10),
        "6 of 16 files had arrived, yet {} bytes were sent",
        r.bytes_sent()
    );
    assert_eq!(assert_replica_exact(&f, &rep), 1);
}

// ---- hostile streams ----

/// A stream of records as bytes.
fn stream(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = RecordWriter::new(&mut out);
    for r in records {
        w.send(r).expect("encode");
    }
    out
}

fn hello() -> Record {
    Record::Hello(Hello {
        format: FORMAT,
        job: "job".into(),
        vault: "0123456789abcdef".into(),
        source: "/src".into(),
        settings: String::new(),
    })
}

fn attrs() -> Attrs {
    Attrs {
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: Time {
            secs: 1_700_000_000,
            nanos: 0,
        },
        atime: Time::default(),
        xattrs: Vec::new(),
    }
}

fn header(n: u64, base: Option<u64>) -> Record {
    Record::Version(VersionHeader {
        n,
        dir: format!("V{n}-20261124T2149{n:02}Z"),
        created: "2026-11-24T21:49:00.123Z".into(),
        base,
        root: Attrs {
            mode: 0o755,
            ..attrs()
        },
    })
}

fn file(name: &[u8], data: &[u8]) -> Vec<Record> {
    vec![
        Record::Entry(Entry {
            name: name.to_vec(),
            kind: Kind::File(FileEntry {
                attrs: attrs(),
                size: data.len() as u64,
                hash: *blake3::hash(data).as_bytes(),
                data: DataMode::Follows,
                group: None,
            }),
        }),
        Record::Data(data.to_vec()),
    ]
}

fn end(entries: u64, data_bytes: u64) -> Record {
    Record::VersionEnd(Counts {
        entries,
        data_bytes,
    })
}

/// A well-formed first version: `a` (3 bytes) and `d/b` (2 bytes).
fn good_version(n: u64) -> Vec<Record> {
    let mut r = vec![header(n, None)];
    r.extend(file(b"a", b"one"));
    r.push(Record::Entry(Entry {
        name: b"d".to_vec(),
        kind: Kind::Dir(Attrs {
            mode: 0o755,
            ..attrs()
        }),
    }));
    r.extend(file(b"b", b"xy"));
    r.push(Record::DirEnd);
    r.push(Record::DirEnd);
    r.push(end(3, 5));
    r
}

/// A vault for hostile streams, with a canary beside it that nothing may touch.
struct Target {
    _tmp: tempfile::TempDir,
    vault: PathBuf,
    canary: PathBuf,
}

fn target() -> Target {
    let tmp = tempfile::tempdir().expect("tmp");
    let vault = tmp.path().join("vault");
    let canary = tmp.path().join("canary");
    fs::create_dir(&canary).expect("mkdir");
    fs::write(canary.join("keep"), b"keep").expect("write");
    Target {
        _tmp: tmp,
        vault,
        canary,
    }
}

impl Target {
    fn receive(&self, bytes: Vec<u8>) -> std::process::Output {
        cmd("reverb-receive")
            .arg("--vault")
            .arg(&self.vault)
            .arg("--init")
            .stdin(bytes)
            .output()
    }

    /// Nothing outside the vault's job folder changed, and the job is consistent.
    fn assert_untouched_outside(&self) {
        let names: Vec<_> = fs::read_dir(self._tmp.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(
            names.len() <= 2,
            "something was written beside the vault: {names:?}"
        );
        assert_eq!(
            fs::read_dir(&self.canary).expect("ls").count(),
            1,
            "the canary folder changed"
        );
        assert_eq!(fs::read(self.canary.join("keep")).expect("read"), b"keep");
        if self.vault.exists() {
            let vault_names: Vec<_> = fs::read_dir(&self.vault)
                .expect("ls")
                .map(|e| e.expect("entry").file_name())
                .collect();
            for n in &vault_names {
                // The marker, and job folders (a mutated stream may name another job).
                let p = self.vault.join(n);
                assert!(
                    n == "reverberator-vault.toml" || p.join("job.toml").is_file(),
                    "{} written in the vault root",
                    n.to_string_lossy()
                );
            }
        }
    }

    fn versions(&self) -> Vec<String> {
        if self.vault.join("job/index.tsv").exists() {
            versions(&self.vault, "job")
        } else {
            Vec::new()
        }
    }
}

#[test]
fn a_well_formed_stream_makes_an_exact_version() {
    let t = target();
    let mut records = vec![hello()];
    records.extend(good_version(1));
    records.push(Record::Bye);
    let o = t.receive(stream(&records));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(t.versions(), ["V1-20261124T214901Z"]);
    let v = t.vault.join("job/V1-20261124T214901Z");
    assert_eq!(fs::read(v.join("a")).expect("a"), b"one");
    assert_eq!(fs::read(v.join("d/b")).expect("b"), b"xy");
    assert_replica_clean(&t.vault, "job");
    t.assert_untouched_outside();
}

#[test]
fn hostile_streams_are_refused_naming_the_entry_and_write_nothing_outside() {
    let entry = |name: &[u8], kind: Kind| {
        Record::Entry(Entry {
            name: name.to_vec(),
            kind,
        })
    };
    let hash = |d: &[u8]| *blake3::hash(d).as_bytes();
    let lying_file = |size: u64, data: &[u8], h: [u8; 32]| {
        vec![
            entry(
                b"liar",
                Kind::File(FileEntry {
                    attrs: attrs(),
                    size,
                    hash: h,
                    data: DataMode::Follows,
                    group: None,
                }),
            ),
            Record::Data(data.to_vec()),
        ]
    };
    let mut cases: Vec<(&str, Vec<Record>, &str)> = Vec::new();
    let raw_entry_name = |name: &[u8]| -> Vec<u8> {
        // An entry record whose name the codec would never write: built by hand.
        let mut payload = Vec::new();
        payload.push(name.len() as u8);
        payload.extend_from_slice(name);
        payload.push(0); // kind: same
        let mut frame = vec![b'E', payload.len() as u8];
        frame.extend(payload);
        frame
    };
    for (what, name, says) in [
        ("dotdot", &b".."[..], "`..` is not a name"),
        ("slash", b"../../etc/passwd", "not a single path component"),
        ("absolute", b"/etc/passwd", "not a single path component"),
        ("nul", b"a\0b", "NUL"),
        ("empty", b"", "empty name"),
    ] {
        let mut bytes = stream(&[hello(), header(1, None)]);
        bytes.extend(raw_entry_name(name));
        let t = target();
        let o = t.receive(bytes);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{what}: {}", stderr(&o));
        assert!(t.versions().is_empty(), "{what}");
        t.assert_untouched_outside();
    }
    let v1 = |rest: Vec<Record>| {
        let mut r = vec![hello(), header(1, None)];
        r.extend(rest);
        r
    };
    cases.push((
        "more data than its size",
        v1(lying_file(2, b"three", hash(b"three"))),
        "entry `liar`: more data than its size",
    ));
    let mut short = lying_file(10, b"abc", hash(b"abc"));
    short.push(Record::DirEnd);
    cases.push((
        "less data than its size",
        v1(short),
        "entry `liar`: 3 of its 10 bytes arrived",
    ));
    let mut wrong = lying_file(3, b"abc", hash(b"abd"));
    wrong.extend([Record::DirEnd, end(1, 3)]);
    cases.push((
        "a wrong hash",
        v1(wrong),
        "entry `liar`: its data does not match its BLAKE3",
    ));
    let mut dup = file(b"x", b"1");
    dup.extend(file(b"x", b"2"));
    cases.push((
        "a name twice",
        v1(dup),
        "entry `x`: names out of order or repeated",
    ));
    let mut link_then_dir = vec![entry(
        b"l",
        Kind::Symlink {
            attrs: attrs(),
            target: b"/etc".to_vec(),
        },
    )];
    link_then_dir.push(entry(b"l", Kind::Dir(attrs())));
    cases.push((
        "a directory over a symlink",
        v1(link_then_dir),
        "entry `l`: names out of order or repeated",
    ));
    cases.push((
        "same without a base",
        v1(vec![entry(b"s", Kind::Same)]),
        "entry `s`: the same as in no base version",
    ));
    cases.push((
        "a hard link to nothing",
        v1(vec![entry(b"h", Kind::HardLink { group: 7 })]),
        "entry `h`: another name of file group 7",
    ));
    let mut after_root = file(b"a", b"1");
    after_root.push(Record::DirEnd);
    after_root.extend(file(b"b", b"2"));
    cases.push((
        "an entry after the root closed",
        v1(after_root),
        "entry `b` after the version's root was closed",
    ));
    let mut counts = file(b"a", b"1");
    counts.extend([Record::DirEnd, end(5, 1)]);
    cases.push((
        "counts that do not add up",
        v1(counts),
        "its end counts 5 entries",
    ));
    cases.push((
        "a version 0",
        vec![
            hello(),
            Record::Version(VersionHeader {
                n: 0,
                dir: "V0-20261124T214900Z".into(),
                created: "2026-11-24T21:49:00.123Z".into(),
                base: None,
                root: attrs(),
            }),
        ],
        "is not the directory name of version 0",
    ));
    cases.push((
        "a hostile version directory",
        vec![
            hello(),
            Record::Version(VersionHeader {
                n: 1,
                dir: "../../../tmp/x".into(),
                created: "2026-11-24T21:49:00.123Z".into(),
                base: None,
                root: attrs(),
            }),
        ],
        "is not the directory name of version 1",
    ));
    for (what, records, says) in cases {
        let t = target();
        let o = t.receive(stream(&records));
        assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{what}: {}", stderr(&o));
        assert!(t.versions().is_empty(), "{what}: a version was published");
        assert!(
            !t.vault.join("job/.partial").exists()
                || fs::read_dir(t.vault.join("job/.partial"))
                    .expect("ls")
                    .next()
                    .is_none(),
            "{what}: the refused version was left in .partial"
        );
        t.assert_untouched_outside();
    }
    // A huge record is refused before anything is allocated for it.
    let t = target();
    let mut bytes = stream(&[hello(), header(1, None)]);
    bytes.extend([b'D', 0xff, 0xff, 0xff, 0xff, 0x0f]);
    let o = t.receive(bytes);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("exceeds the limit"), "{}", stderr(&o));
    t.assert_untouched_outside();
    // A version not after the replica's newest.
    let t = target();
    let mut records = vec![hello()];
    records.extend(good_version(2));
    records.push(Record::Bye);
    assert!(t.receive(stream(&records)).status.success());
    let mut again = vec![hello()];
    again.extend(good_version(1));
    let o = t.receive(stream(&again));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not after the replica's newest, V2"),
        "{}",
        stderr(&o)
    );
    assert_eq!(t.versions().len(), 1);
    t.assert_untouched_outside();
}

/// A job of the vault's own, or a replica of another vault, is never written.
#[test]
fn only_a_replica_of_the_senders_vault_is_written() {
    let f = source();
    let other = Fixture::new();
    fs::write(other.src.join("mine"), b"mine").expect("write");
    // A job of its own named like ours, in the vault we would replicate to.
    let o = cmd("reverb-snap")
        .arg("--init")
        .arg("--vault")
        .arg(&other.vault)
        .args(["--job", &f.job, "--source"])
        .arg(&other.src)
        .assert_success();
    drop(o);
    let before = versions(&other.vault, &f.job);
    let o = replicate(&f, &to(&other.vault), &[]).output();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a job of its own, not a replica"),
        "{}",
        stderr(&o)
    );
    assert_eq!(versions(&other.vault, &f.job), before);
    // A vault path without a marker is 'not available' (an unplugged disk): exit 75.
    let o = replicate(&f, &to(&f._tmp.path().join("nothing-here")), &[]).output();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(!f._tmp.path().join("nothing-here").exists());
}

/// Random streams, and a valid stream with bytes flipped, inserted or cut, fed to
/// `reverb-receive`: it never panics, writes nothing outside the replica's job folder, and
/// the replica stays consistent.
#[test]
fn random_and_mutated_streams_never_panic_nor_write_outside() {
    let mut good = vec![hello()];
    good.extend(good_version(1));
    good.push(Record::Bye);
    let good = stream(&good);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let cases: u64 = std::env::var("REVERB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    for case in 0..cases {
        let mut bytes = good.clone();
        match case % 4 {
            0 => {
                let at = (next() as usize) % bytes.len();
                bytes[at] ^= (next() as u8) | 1;
            }
            1 => {
                let at = (next() as usize) % bytes.len();
                bytes.insert(at, next() as u8);
            }
            2 => {
                let at = (next() as usize) % bytes.len();
                bytes.truncate(at);
            }
            _ => {
                let keep = 8 + (next() as usize) % 40;
                bytes.truncate(keep.min(bytes.len()));
                for _ in 0..(next() % 64) {
                    bytes.push(next() as u8);
                }
            }
        }
        let t = target();
        let o = t.receive(bytes);
        assert_ne!(
            o.status.code(),
            Some(101),
            "case {case} panicked: {}",
            stderr(&o)
        );
        assert!(o.status.code().is_some(), "case {case} died of a signal");
        t.assert_untouched_outside();
        for job in fs::read_dir(&t.vault).into_iter().flatten().flatten() {
            if job.path().join("job.toml").is_file() {
                assert_replica_consistent(&t.vault, &job.file_name().to_string_lossy());
            }
        }
    }
}

// ---- over ssh ----

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The sender's flags for the test server: its wrapper, its key, the receiver's path.
fn ssh_flags(sshd: &Sshd, wrapper: &Path) -> Vec<String> {
    vec![
        "--ssh".into(),
        to(wrapper),
        "--identity".into(),
        to(&sshd.key),
        "--receive-command".into(),
        to(&reverb_tests::bin("reverb-receive")),
    ]
}

#[test]
fn over_ssh_versions_retirements_and_a_cut_connection() {
    let sshd = match Sshd::start() {
        Ok(s) => s,
        Err(why) => {
            skip(&format!("no sshd for the replication tests: {why}"));
            return;
        }
    };
    let f = source();
    let rep = replica_path(&f, "remote-vault");
    let dest = format!("ssh://root@127.0.0.1:{}{}", sshd.port, rep.display());
    let client = sshd.client("ssh", "");
    let flags = ssh_flags(&sshd, &client);
    let with = |extra: &[&str]| -> Vec<String> {
        flags
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let init = with(&["--init"]);
    let r = parse(&replicate(&f, &dest, &args(&init)).assert_success());
    assert_eq!(r.versions.len(), 1);
    for round in 1..=2 {
        change(&f.src, round);
        f.rescan();
        let plain = with(&[]);
        replicate(&f, &dest, &args(&plain)).assert_success();
    }
    assert_eq!(assert_replica_exact(&f, &rep), 3);
    retire(&f.vault, &f.job, 1);
    let plain = with(&[]);
    let r = parse(&replicate(&f, &dest, &args(&plain)).assert_success());
    assert!(
        r.bytes_sent() < 1024,
        "a retirement sent {}",
        r.bytes_sent()
    );
    // A big version and a connection cut after 1 MiB: the next run resumes.
    for i in 0..8u32 {
        fs::write(f.src.join(format!("big{i}")), pattern(500 + i, 512 << 10)).expect("write");
    }
    let v = f.rescan();
    let cut = sshd.client(
        "ssh-cut",
        "dd iflag=count_bytes count=2200000 bs=65536 status=none |",
    );
    let cut_flags = ssh_flags(&sshd, &cut);
    let o = replicate(&f, &dest, &args(&cut_flags)).output();
    assert_eq!(
        o.status.code(),
        Some(75),
        "a cut connection: {}",
        stderr(&o)
    );
    assert!(
        !versions(&rep, &f.job).contains(&v),
        "a version that did not fully arrive"
    );
    let r = parse(&replicate(&f, &dest, &args(&plain)).assert_success());
    assert_eq!(r.versions.len(), 1);
    assert!(
        r.bytes_sent() < 3 << 20,
        "what arrived before the cut was sent again: {} bytes",
        r.bytes_sent()
    );
    assert_eq!(assert_replica_exact(&f, &rep), 2);
}

// ---- under the supervisor ----

/// `reverberator status --json --config CONFIG`'s one job, with its live state in `runtime`.
fn status_of(config: &Path, runtime: &Path) -> serde_json::Value {
    let o = cmd("reverberator")
        .env("RUNTIME_DIRECTORY", runtime)
        .args(["status", "--json", "--config"])
        .arg(config)
        .output();
    serde_json::from_str(stdout(&o).lines().next().unwrap_or("null")).expect("status JSON")
}

/// `replicate_to` under `reverberator run`: a replica that is not there yet is tried again
/// with backoff (status: `waiting`, behind) while versions go on being taken; once it is
/// there it catches up, and each new version follows it, exact.
#[test]
fn the_supervisor_replicates_each_new_version_and_waits_out_an_absent_replica() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("seed"), b"seed").expect("write");
    let vault = tmp.path().join("vault");
    let rep = tmp.path().join("replica");
    let runtime = tmp.path().join("runtime");
    let config = tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[jobs.docs]\nsource = \"{}\"\nvault = \"{}\"\nmin_snapshot_time = \"300ms\"\n\
             max_snapshot_delay = \"2s\"\nreplicate_to = [\"{}\"]\n",
            src.display(),
            vault.display(),
            rep.display()
        ),
    )
    .expect("config");
    let mut sup = std::process::Command::new(reverb_tests::bin("reverberator"))
        .env("RUNTIME_DIRECTORY", &runtime)
        .args(["run", "--init", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn the supervisor");
    let f = Fixture {
        _tmp: tmp,
        src: src.clone(),
        vault: vault.clone(),
        job: "docs".into(),
    };
    // No vault at the replica's path (an unplugged disk): waiting, behind, retried.
    reverb_tests::wait_until(
        Duration::from_secs(60),
        "the replica to be waited for",
        || {
            let st = status_of(&config, &runtime);
            st["replica_lag"][0]["state"] == "waiting" && st["replica_lag"][0]["behind"] == 1
        },
    );
    // The text says it waits to retry, and why (not "unreachable": a replica that refuses
    // waits the same way).
    let text = stdout(
        &cmd("reverberator")
            .env("RUNTIME_DIRECTORY", &runtime)
            .args(["status", "--config"])
            .arg(&config)
            .output(),
    );
    assert!(
        text.contains("waiting to retry (next try ")
            && text.contains("behind by 1 version")
            && text.contains("last attempt failed: "),
        "{text}"
    );
    // Versions are not held up meanwhile.
    fs::write(src.join("more"), b"more").expect("write");
    reverb_tests::wait_until(Duration::from_secs(60), "a second version", || {
        vault.join("docs/index.tsv").exists() && versions(&vault, "docs").len() == 2
    });
    assert!(!rep.exists(), "nothing was made at the replica's path");
    // The disk is back (a vault is there): the next try catches up.
    cmd("reverberator")
        .args(["replicate", "docs", "--init", "--to"])
        .arg(&rep)
        .arg("--vault")
        .arg(&vault)
        .assert_success();
    fs::write(src.join("third"), b"third").expect("write");
    reverb_tests::wait_until(
        Duration::from_secs(120),
        "the replica to hold the third version",
        || {
            rep.join("docs/index.tsv").exists()
                && versions(&rep, "docs").len() == 3
                && versions(&vault, "docs").len() == 3
        },
    );
    reverb_tests::wait_until(Duration::from_secs(60), "status to say up to date", || {
        let st = status_of(&config, &runtime);
        st["replica_lag"][0]["behind"] == 0 && st["replica_lag"][0]["state"] == "idle"
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = sup.wait();
    assert_eq!(assert_replica_exact(&f, &rep), 3);
    // The replica's job keeps the retention, not where the source replicates to.
    let replica_job = fs::read_to_string(rep.join("docs/job.toml")).expect("job.toml");
    assert!(!replica_job.contains("replicate_to"), "{replica_job}");
    assert!(replica_job.contains("replica_of"), "{replica_job}");
}

/// A replica is private like any vault (docs/security.md#who-may-read-the-vault): its job
/// folder and folders of records 0700, its records 0600, whatever the umask; the source's
/// `vault_group` (a group of this host) is not carried over.
#[test]
fn a_replica_is_private() {
    use std::os::unix::fs::MetadataExt;
    let f = source();
    let rep = replica_path(&f, "replica");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000 && exec '{}' replicate {} --vault '{}' --to '{}' --init",
            reverb_tests::bin("reverberator").display(),
            f.job,
            f.vault.display(),
            rep.display()
        ))
        .output()
        .expect("run replicate");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let job = rep.join(&f.job);
    let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o777;
    assert_eq!(mode(&job), 0o700, "the replica's job folder");
    for dir in ["checksums", ".tmp"] {
        assert_eq!(mode(&job.join(dir)), 0o700, "{dir}");
    }
    for file in ["job.toml", "index.tsv", "journal.tsv", "lock"] {
        assert_eq!(mode(&job.join(file)), 0o600, "{file}");
    }
    for e in fs::read_dir(job.join("checksums")).expect("ls") {
        assert_eq!(mode(&e.expect("entry").path()), 0o600, "a checksums file");
    }
}

/// The source retires the very version being sent (the sender takes no lock, so that it
/// never delays a version): the replica never publishes it half-read; the next run sends
/// what the source holds then, exact.
#[test]
fn a_version_retired_here_while_it_is_sent_is_never_published_half_read() {
    let f = Fixture::new();
    for i in 0..16u32 {
        fs::write(f.src.join(format!("f{i:02}")), pattern(i, 1 << 20)).expect("write");
    }
    f.first();
    fs::write(f.src.join("f00"), b"changed").expect("write");
    f.rescan();
    fs::write(f.src.join("f01"), b"changed too").expect("write");
    f.rescan();
    let rep = replica_path(&f, "replica");
    let mut sender = replicate(&f, &to(&rep), &["--init"])
        .env("REVERB_FAULT_STOP_AFTER", "3")
        .spawn();
    let mut receiver = None;
    wait_until(
        Duration::from_secs(60),
        "the receiver to stop after 3 files",
        || {
            receiver = stopped_receiver(sender.id());
            receiver.is_some()
        },
    );
    let receiver = nix::unistd::Pid::from_raw(receiver.expect("stopped"));
    // The first version, half sent, is retired here (its data moves into the second).
    retire(&f.vault, &f.job, 2);
    nix::sys::signal::kill(receiver, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    let status = sender.wait().expect("wait");
    assert!(
        !status.success(),
        "the session that read a retired version failed"
    );
    assert!(
        !rep.join(&f.job).join("index.tsv").exists() || versions(&rep, &f.job).is_empty(),
        "a version read while it was retired was published"
    );
    let r = replicate_ok(&f, &to(&rep), &[]);
    assert_eq!(r.versions.len(), 2);
    assert_eq!(assert_replica_exact(&f, &rep), 2);
}
