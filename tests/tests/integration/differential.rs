//! The differential test of real use (docs/reliability.md, "Differential test of real use"):
//! seeded random histories of real-world operations, every version compared three ways
//! (restored, browsed through its links, its own stats) with a `cp -a` copy of the source
//! taken at that moment, as root and as the user nobody. The machinery is
//! `reverb_tests::differential`; the knobs are `REVERB_DIFF_CASES`, `REVERB_DIFF_SEED`,
//! `REVERB_DIFF_SOAK`, `REVERB_DIFF_XATTRS`, `REVERB_DIFF_CLIMBING_LINKS`.

use std::time::Instant;

use reverb_tests::differential::{Knobs, Tally, Who, history};
use reverb_tests::{require_programs, require_root};

fn run(who: Who, default_cases: u64) {
    let knobs = Knobs::from_env(default_cases);
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

/// The user nobody on a source nobody owns (the tools run under `setpriv`).
#[test]
fn every_version_is_the_source_as_nobody() {
    require_root!("setpriv to the user nobody");
    require_programs!(["setpriv"], "the run as nobody");
    run(Who::Nobody, 50);
}
