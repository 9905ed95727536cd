//! Live capture end to end: `reverb-watch --quiet-period … SRC | reverb-snap --changes -
//! --follow`, driven by real tools in the watched tree. After every burst the version made
//! from events must restore to the source exactly, and a rescan must find nothing left to
//! version (the event path equals the rescan path).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use reverb_tests::model::{CaptureOpts, assert_same, capture};
use reverb_tests::{Fixture, bin, have, is_root, sh, stdout};

struct Pipeline {
    f: Fixture,
    watch: Child,
    snap: Child,
    versions: Receiver<String>,
    /// How many times [`Pipeline::settle`] wrote its marker file (it names the next one).
    settled: std::cell::Cell<u32>,
}

impl Pipeline {
    fn start(setup: impl FnOnce(&Path), max_delay: Option<&str>) -> Pipeline {
        let f = Fixture::new();
        setup(&f.src);
        f.first();
        let mut w = Command::new(bin("reverb-watch"));
        w.args(["--quiet-period", "300ms"]);
        if let Some(d) = max_delay {
            w.args(["--max-delay", d]);
        }
        let mut watch = w
            .arg(&f.src)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn watch");
        let mut watch_out = BufReader::new(watch.stdout.take().expect("stdout"));
        // The header means every watch is in place.
        let mut header = String::new();
        watch_out.read_line(&mut header).expect("header");
        assert!(header.starts_with("time\tevent"), "{header:?}");
        let (pr, pw) = std::io::pipe().expect("pipe");
        let mut snap = Command::new(bin("reverb-snap"))
            .arg("--vault")
            .arg(&f.vault)
            .arg("--job")
            .arg(&f.job)
            .args(["--changes", "-", "--follow"])
            .stdin(pr)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn snap");
        std::thread::spawn(move || {
            use std::io::Write;
            let mut pw = pw;
            let _ = pw.write_all(header.as_bytes());
            let mut line = String::new();
            while watch_out
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                if pw.write_all(line.as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let (tx, versions) = mpsc::channel();
        let out = snap.stdout.take().expect("snap stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Pipeline {
            f,
            watch,
            snap,
            versions,
            settled: std::cell::Cell::new(0),
        }
    }

    /// Waits for at least one version, then until the pipeline has versioned every change
    /// made so far: a marker file written now reaches a version only after every event
    /// before it did (reverb-watch reports events in order, reverb-snap builds its batches
    /// in order). The marker stays in the source, so the checks see it on both sides.
    fn settle(&self, what: &str) -> Vec<String> {
        let first = self
            .versions
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{what}: no version within 20 s"));
        let mut got = vec![first];
        got.extend(self.settle_marker(what));
        got
    }

    /// [`Pipeline::settle`] without waiting for a first version: for a change the last
    /// version may already hold (the events of the last appends can come after the version
    /// that copied them; their batch then finds nothing new, and makes no version).
    fn settle_marker(&self, what: &str) -> Vec<String> {
        let mut got = Vec::new();
        let n = self.settled.get() + 1;
        self.settled.set(n);
        let marker = format!("settled-{n}");
        fs::write(self.f.src.join(&marker), what).expect("write the marker");
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let v = self.versions.recv_timeout(left).unwrap_or_else(|_| {
                panic!("{what}: {marker}, written after it, in no version within 20 s: {got:?}")
            });
            let has_marker = fs::symlink_metadata(self.f.job_dir().join(&v).join(&marker)).is_ok();
            got.push(v);
            if has_marker {
                return got;
            }
        }
    }

    /// The source, the latest version's restore and a rescan all agree.
    fn verify(&self, what: &str) {
        let opts = CaptureOpts {
            owners: is_root(),
            dir_mtimes: false,
        };
        assert_same(
            &capture(&self.f.src, opts),
            &capture(&self.f.restore("latest"), opts),
            what,
        );
        let o = self.f.snap(&["--dry-run"]).assert_success();
        let leftover: Vec<String> = stdout(&o)
            .lines()
            .filter(|l| !l.ends_with("\t."))
            .map(str::to_owned)
            .collect();
        assert!(
            leftover.is_empty(),
            "{what}: a rescan would still version {leftover:?}"
        );
        self.f.check_clean();
    }

    fn step(&self, what: &str, action: impl FnOnce(&Path)) {
        action(&self.f.src);
        self.settle(what);
        self.verify(what);
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.watch.kill();
        let _ = self.watch.wait();
        let _ = self.snap.wait();
    }
}

fn tree(src: &Path) {
    fs::create_dir_all(src.join("docs/deep/er")).expect("mkdir");
    fs::write(src.join("docs/a.txt"), b"alpha\n").expect("write");
    fs::write(src.join("docs/deep/er/b.txt"), b"beta\n").expect("write");
    fs::create_dir_all(src.join("other")).expect("mkdir");
    fs::write(src.join("other/c"), b"c").expect("write");
}

#[test]
fn editors_and_shell_tools() {
    let p = Pipeline::start(tree, None);
    let s = p.f.src.display().to_string();
    p.step("write to temp + rename", |s| {
        fs::write(s.join("docs/.a.txt.tmp"), b"alpha v2\n").expect("write");
        fs::rename(s.join("docs/.a.txt.tmp"), s.join("docs/a.txt")).expect("rename");
    });
    p.step("sed -i", |_| {
        sh(&format!("sed -i s/beta/BETA/ {s}/docs/deep/er/b.txt"))
    });
    p.step("backup and rename", |_| {
        sh(&format!(
            "cd {s}/docs && mv a.txt a.txt~ && printf 'alpha v3\\n' > a.txt"
        ))
    });
    p.step("mkdir -p and touch", |_| {
        sh(&format!("mkdir -p {s}/n/e/s/t && touch {s}/n/e/s/t/f"))
    });
    p.step("cp -r", |_| sh(&format!("cp -r {s}/docs {s}/docs-copy")));
    p.step("mv dir within", |_| {
        sh(&format!("mv {s}/docs-copy {s}/other/moved"))
    });
    p.step("chmod -R", |_| sh(&format!("chmod -R go-rwx {s}/other")));
    p.step("touch", |_| sh(&format!("touch {s}/docs/a.txt")));
    p.step("ln -s", |_| {
        sh(&format!("ln -s ../docs/a.txt {s}/other/link"))
    });
    p.step("rm -rf", |_| sh(&format!("rm -rf {s}/n")));
    p.step("file replaced by a directory", |_| {
        sh(&format!(
            "rm {s}/other/c && mkdir {s}/other/c && echo x > {s}/other/c/x"
        ))
    });
}

#[test]
fn moves_into_and_out_of_the_tree_and_archives() {
    let p = Pipeline::start(tree, None);
    let outside = p.f._tmp.path().join("outside");
    fs::create_dir_all(outside.join("in/side")).expect("mkdir");
    fs::write(outside.join("in/side/x"), b"x").expect("write");
    let s = p.f.src.display().to_string();
    let o = outside.display().to_string();
    p.step("mv into the tree", |_| {
        sh(&format!("mv {o}/in {s}/arrived"))
    });
    p.step("mv out of the tree", |_| {
        sh(&format!("mv {s}/other {o}/left"))
    });
    p.step("tar x", |_| {
        sh(&format!("tar -C {o} -cf {o}/a.tar left"));
        sh(&format!("tar -C {s} -xf {o}/a.tar"));
    });
    if have("rsync") {
        p.step("rsync -a into it", |_| {
            sh(&format!("rsync -a {o}/left/ {s}/synced/"))
        });
    } else {
        reverb_tests::skip("rsync is not installed: rsync -a into the tree");
    }
}

#[test]
fn git_checkout_between_branches() {
    reverb_tests::require_programs!(["git"], "git checkout");
    let p = Pipeline::start(
        |src| {
            let repo = src.join("repo");
            fs::create_dir(&repo).expect("mkdir");
            let r = repo.display();
            sh(&format!(
                "cd {r} && git init -q -b main && git config user.email t@t && git config user.name t && \
                 mkdir -p lib && echo one > lib/one && echo readme > README && git add -A && git commit -qm one && \
                 git checkout -q -b topic && git rm -q lib/one && mkdir -p src/deep && echo two > src/deep/two && \
                 echo changed > README && git add -A && git commit -qm two && git checkout -q main"
            ));
        },
        None,
    );
    let r = p.f.src.join("repo").display().to_string();
    p.step("git checkout topic", |_| {
        sh(&format!("cd {r} && git checkout -q topic"))
    });
    p.step("git checkout main", |_| {
        sh(&format!("cd {r} && git checkout -q main"))
    });
}

#[test]
fn a_burst_of_two_thousand_files() {
    let p = Pipeline::start(tree, None);
    p.step("2000 files", |s| {
        let d = s.join("burst");
        fs::create_dir(&d).expect("mkdir");
        for i in 0..2000 {
            fs::write(d.join(format!("f{i:04}")), format!("{i}")).expect("write");
        }
    });
}

#[test]
fn a_file_appended_forever_still_gets_versions() {
    let p = Pipeline::start(tree, Some("1s"));
    let log = p.f.src.join("growing.log");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("open");
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                f.write_all(b"line\n").expect("append");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // The quiet period never comes; --max-delay still makes versions.
    let mut seen = 0;
    let end = Instant::now() + Duration::from_secs(20);
    while seen < 2 && Instant::now() < end {
        if p.versions.recv_timeout(Duration::from_millis(200)).is_ok() {
            seen += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    assert!(
        seen >= 2,
        "only {seen} versions while the file kept growing"
    );
    // Its last appends may be in the last version already (their events batched after it:
    // a racily clean file is compared by content, and the same bytes make no version).
    p.settle_marker("after the writer stopped");
    p.verify("growing file");
}
