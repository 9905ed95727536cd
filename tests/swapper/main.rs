//! `reverb-swapper SECONDS ROUNDS STOP_FILE A B [A B …]`: a hostile neighbour for the race
//! tests (`tests/tests/integration/races.rs`). Run as the unprivileged owner of the
//! directories that hold each `A` and `B` (the tests start it through `setpriv`), it swaps
//! every pair with one `renameat2(RENAME_EXCHANGE)` and swaps it back, round after round,
//! so that while a root restore or build runs each `A` is, half of the time, whatever `B`
//! was (a symlink to a directory outside, say).
//!
//! Bounded: it stops by itself after `ROUNDS` rounds or `SECONDS` seconds, or as soon as
//! `STOP_FILE` exists (checked every few rounds). It prints `ready` once it has started,
//! and at the end `exchanges N unbalanced M`: `M` pairs it could not swap back (a writer
//! removed one of the names meanwhile), so a test that sees `M = 0` knows every name is
//! where it was when the helper started.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

/// How many times a swap back is tried before the pair is left as it is.
const SWAP_BACK_TRIES: u32 = 1000;

/// How often (in rounds) the stop file is looked for.
const STOP_CHECK_EVERY: u64 = 64;

fn exchange(a: &PathBuf, b: &PathBuf) -> bool {
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE).is_ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: reverb-swapper SECONDS ROUNDS STOP_FILE A B [A B …]";
    if args.len() < 5 || !(args.len() - 3).is_multiple_of(2) {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let (Ok(seconds), Ok(rounds)) = (args[0].parse::<u64>(), args[1].parse::<u64>()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let stop = PathBuf::from(&args[2]);
    let pairs: Vec<(PathBuf, PathBuf)> = args[3..]
        .chunks(2)
        .map(|p| (PathBuf::from(&p[0]), PathBuf::from(&p[1])))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    println!("ready");
    let mut exchanges = 0u64;
    let mut unbalanced = 0u64;
    for round in 0..rounds {
        if round.is_multiple_of(STOP_CHECK_EVERY) && (stop.exists() || Instant::now() >= deadline) {
            break;
        }
        for (a, b) in &pairs {
            if !exchange(a, b) {
                continue;
            }
            exchanges += 1;
            // Swap back (a writer may have removed one of the names meanwhile: then the
            // pair stays as it is, counted).
            match (0..SWAP_BACK_TRIES).find(|_| exchange(a, b)) {
                Some(_) => exchanges += 1,
                None => unbalanced += 1,
            }
        }
    }
    println!("exchanges {exchanges} unbalanced {unbalanced}");
}
