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
