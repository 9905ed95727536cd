//! kill -9 in the middle of `reverb-snap`: the vault stays consistent (no partial version is
//! ever visible under its final name) and the next run repairs and succeeds.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reverb_tests::Fixture;
use reverb_tests::model::{CaptureOpts, assert_same, capture};

fn fill(src: &Path, round: u32) {
    for d in 0..30 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..60 {
            fs::write(
                dir.join(format!("f{i}")),
                format!("{round}-{d}-{i}").repeat(40),
            )
            .expect("write");
        }
    }
    fs::write(src.join("big"), vec![round as u8 + 1; 8 << 20]).expect("write big");
}

#[test]
fn kill_9_during_snapshots_never_leaves_a_broken_version() {
    let f = Fixture::new();
    let opts = CaptureOpts {
        owners: false,
        dir_mtimes: true,
    };
    fill(&f.src, 0);
    f.first();
    let mut states = vec![capture(&f.src, opts)];
    let mut killed = 0;
    for (round, delay_ms) in [1u64, 3, 8, 15, 30, 60, 120].into_iter().enumerate() {
        fill(&f.src, round as u32 + 1);
        states.push(capture(&f.src, opts));
        let mut child = f
            .snap(&[])
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().expect("wait");
        if status.signal() == Some(9) {
            killed += 1;
        }
        // Every version visible now is complete and exact to one recorded state.
        for entry in fs::read_dir(f.job_dir()).expect("job dir") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if !name.starts_with('V') {
                continue;
            }
            let got = capture(&f.restore(&name), opts);
            assert!(
                states.contains(&got),
                "version {name} visible after kill -9 matches no state the source was in"
            );
        }
        // The next run repairs and succeeds.
        f.rescan();
        assert!(
            fs::read_dir(f.job_dir().join(".partial"))
                .map(|mut d| d.next().is_none())
                .unwrap_or(true),
            "a partial version was left behind"
        );
        assert_same(
            states.last().expect("state"),
            &capture(&f.restore("latest"), opts),
            "latest after repair",
        );
        f.check_clean();
    }
    eprintln!("killed {killed} of 7 runs mid-way");
}

/// A `.partial/` being built is no problem: `verify` and `reverb-index --check` say nothing
/// of it while its writer holds the job's lock (taken here the way `reverb-snap` takes it,
/// `flock` on the job's `lock`), and report it once nothing holds it: a build that died.
#[test]
fn verify_reports_a_partial_version_only_when_no_writer_is_building_it() {
    let f = Fixture::new();
    fs::write(f.src.join("a"), b"a").expect("write");
    f.first();
    let partial = f.job_dir().join(".partial/V2-20260101T000000Z");
    fs::create_dir_all(partial.join("sub")).expect("mkdir partial");
    let verify = |code: i32| {
        reverb_tests::cmd("reverberator")
            .args(["verify", "--json", "--vault"])
            .arg(&f.vault)
            .show_dir(f.job_dir())
            .assert_exit(code)
    };
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.job_dir().join("lock"))
        .expect("open lock");
    lock.lock().expect("lock");
    let o = verify(0);
    assert_eq!(reverb_tests::stdout(&o), "", "no problem while it is built");
    f.tool("reverb-index").arg("--check").assert_success();

    drop(lock);
    let o = verify(1);
    let said = reverb_tests::stdout(&o);
    assert!(
        said.contains("\"kind\":\"partial\"") && said.contains(".partial/V2-20260101T000000Z"),
        "a leftover with no builder is reported: {said}"
    );
    f.tool("reverb-index").arg("--check").assert_exit(1);
}
