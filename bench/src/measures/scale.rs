//! The scale run (T7, docs/benchmarks.md#the-scale-run-t7): on the 1,000,000-file tree, only
//! the measures T7 names, each with its peer, in an order that keeps the disk within
//! bounds: the first copy (against `cp -a` and `rsync -a`, whose copies other than the
//! vault and the first snapshot are removed at once), the watch set-up (time and memory),
//! a version after 10 changed files (event-driven and by rescan, against `rsync
//! --link-dest`), an unchanged rescan and retiring the oldest version; then
//! [`peak_rows`] for every measure.
//!
//! Also owns [`peak_rows`], which every run ends with: the peak memory of each timed
//! program beside its peer's, from the figures [`crate::peers::timed_input`] collects.

use anyhow::Result;

use super::{Bench, copy, versions, watch};
use crate::report::{Row, Unit};

/// The T7 measures, in order.
pub fn scale(b: &mut Bench) -> Result<()> {
    copy::first_copy(b)?;
    watch::setup(b)?;
    versions::incremental(b, &[10])?;
    versions::rescan_unchanged(b)?;
    versions::retire(b)?;
    Ok(())
}

/// Prefix of the rows [`peak_rows`] adds.
pub const PEAK_PREFIX: &str = "peak memory: ";

/// For every timed row whose runs all have a peak memory figure on our side: a row of our
/// peak memory against the peer's (or alone, `info`, when the peer has none). The watch
/// set-up measures its peak itself and is left as it is.
pub fn peak_rows(b: &mut Bench) {
    let mut add: Vec<Row> = Vec::new();
    for row in &b.rows {
        if row.unit != Unit::Seconds || row.measure.starts_with("watch set-up") {
            continue;
        }
        let Some(ours) = row.samples_ours.peaks() else {
            continue;
        };
        let peer = row
            .samples_peer
            .peaks()
            .ok_or_else(|| format!("no peak memory for {}", row.peer_name));
        let measure = format!(
            "{PEAK_PREFIX}{}",
            row.measure.strip_suffix(": time").unwrap_or(&row.measure)
        );
        // One measure against two forms of the same peer (`cp -a`, `cp -a + syncfs`) is
        // one row of memory.
        if add
            .iter()
            .any(|r| r.measure == measure && Ok(&r.samples_peer) == peer.as_ref())
        {
            continue;
        }
        add.push(
            Row::new(
                measure,
                Unit::Bytes,
                ours,
                row.peer_name.clone(),
                peer,
                None,
            )
            .note("largest resident set of the program and the children it waited for"),
        );
    }
    for row in add {
        b.push(row);
    }
}
