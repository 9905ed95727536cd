//! The differential test of real use (docs/reliability.md, "Differential test of real use"):
//! seeded random histories of real-world operations, every version compared three ways
//! (restored, browsed through its links, its own stats) with a `cp -a` copy of the source
//! taken at that moment, as root, as the user nobody, and as root into a vault on sshfs.
//! The machinery is
//! `reverb_tests::differential`; the knobs are `REVERB_DIFF_CASES`, `REVERB_DIFF_SEED`,
//! `REVERB_DIFF_SOAK`, `REVERB_DIFF_XATTRS`, `REVERB_DIFF_CLIMBING_LINKS`.

use std::time::Instant;

use reverb_tests::differential::{Knobs, Tally, VaultKeeps, Who, history};
use reverb_tests::sshd::{Sshd, Sshfs};
use reverb_tests::{require_programs, require_root, skip};

fn run(who: Who, default_cases: u64) {
    run_with(who, Knobs::from_env(default_cases));
}

fn run_with(who: Who, knobs: Knobs) {
    let started = Instant::now();
    let mut tally = Tally::default();
    for i in 0..knobs.cases {
        history(knobs.seed.wrapping_add(i), &knobs, who, &mut tally);
    }
    eprintln!(
        "differential ({who:?}): {} histories, {} versions, {} version checks (3 views each), \
         {} event lines, seeds {:#x}..+{}, {:.1} s",
        tally.histories,
        tally.versions,
        tally.checks,
        tally.events,
        knobs.seed,
        knobs.cases,
        started.elapsed().as_secs_f64()
    );
}

/// Root: owners compared, chown among the operations.
#[test]
fn every_version_is_the_source_as_root() {
    run(Who::Root, 100);
}

/// Root, every version also replicated to a second vault (`reverberator replicate`, some
/// steps skipped so several versions go at once, retirements on both sides) and the
/// replica's copy compared three ways too.
#[test]
fn every_version_is_the_source_in_a_replica_too() {
    require_root!("owners compared in the replica");
    let mut knobs = Knobs::from_env(20);
    knobs.replica = true;
    run_with(Who::Root, knobs);
}

/// The user nobody on a source nobody owns (the tools run under `setpriv`).
#[test]
fn every_version_is_the_source_as_nobody() {
    require_root!("setpriv to the user nobody");
    require_programs!(["setpriv"], "the run as nobody");
    run(Who::Nobody, 50);
}

/// Root, with every vault on sshfs (docs/filesystems.md): a network filesystem where the
/// tool never sets a link's owner or times (they would reach the file it points to) and
/// mtimes are kept to the second. Fewer histories (each step crosses the network); link
/// owners and mtimes are left out of the comparison, and mtimes compared to the second,
/// in this variant only; xattrs are not compared (sshfs has none), nor FIFOs (sshfs cannot
/// make them: versions leave them out, journaled as skipped), nor which names share an
/// inode (sshfs shows every path with an inode number of its own; the data of every name is
/// compared as anywhere).
#[test]
fn every_version_is_the_source_with_the_vault_on_sshfs() {
    require_root!("sshd and sshfs as root");
    let sshd = match Sshd::start() {
        Ok(s) => s,
        Err(why) => skip!("{why}: the differential test on sshfs"),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote = tmp.path().join("remote");
    std::fs::create_dir(&remote).expect("mkdir");
    let mount = match Sshfs::mount(&sshd, &remote, &tmp.path().join("mnt")) {
        Ok(m) => m,
        Err(why) => skip!("{why}: the differential test on sshfs"),
    };
    let mut knobs = Knobs::from_env(10);
    knobs.vault_in = Some(mount.mountpoint.clone());
    knobs.xattrs = false;
    knobs.keeps = VaultKeeps {
        link_attributes: false,
        mtime_step_ns: 1_000_000_000,
        specials: false,
        hard_links: false,
    };
    run_with(Who::Root, knobs);
    drop(mount);
}
