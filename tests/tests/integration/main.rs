//! The cross-binary integration tests, one test binary (like ripgrep's `tests/`): each module
//! is one area, so `cargo test -p reverb-tests snap::` runs one area's tests. One binary
//! links once and lets libtest run every test in parallel; tests that change kernel-wide
//! state take `reverb_tests::exclusive_kernel()` (see `watch_limits`).

mod baseline;
mod changes;
mod checksums;
mod crash;
mod differential;
mod faults;
mod fullness;
mod guards;
mod hardlinks;
mod hooks;
mod hostile;
mod identity;
mod index;
mod journal_compaction;
mod links;
mod live;
mod messages;
mod model;
mod nesting;
mod parallel_copy;
mod porcelain;
mod powerloss;
mod privacy;
mod races;
mod racily_clean;
mod reflink;
mod replicate;
mod replicate_mistakes;
mod rescan_index;
mod restore_dest;
mod retire;
mod shared_links;
mod snap;
mod submounts;
mod supervisor;
mod unreadable;
mod vault_fs;
mod watch;
mod watch_limits;
mod watch_support;
mod web;
mod xattrs;
