//! `/metrics` (docs/web.md#metrics): the jobs' state in the Prometheus/OpenMetrics text
//! format, written by the `prometheus-client` crate from what the vault and the live state
//! say at the time of the scrape (nothing is kept between scrapes).
//!
//! Names, per job (label `job`): `reverberator_job_state{state}` (1 for the state the job
//! is in, 0 for the others), `reverberator_last_version_timestamp_seconds`,
//! `reverberator_versions`, `reverberator_job_bytes`, `reverberator_size_limit_bytes`
//! (jobs with a limit), `reverberator_pending_changes`,
//! `reverberator_version_duration_seconds` (histogram over the journal's versions),
//! `reverberator_failures_total` (the journal's `error` lines),
//! `reverberator_replica_lag_versions{replica}` (one sample per replica of the job).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use reverb_common::browse::{self, FoundJob};
use reverb_common::index;
use reverb_common::porcelain;

/// Every state word a job can be in.
pub const STATES: [&str; 9] = porcelain::JobState::WORDS;

/// The histogram's buckets (seconds).
const BUCKETS: [f64; 11] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The exposition for these jobs.
pub fn render(jobs: &[FoundJob]) -> Result<String, std::fmt::Error> {
    let state = Family::<Labels, Gauge>::default();
    let last = Family::<Labels, FloatGauge>::default();
    let versions = Family::<Labels, Gauge>::default();
    let bytes = Family::<Labels, Gauge>::default();
    let limit = Family::<Labels, Gauge>::default();
    let pending = Family::<Labels, Gauge>::default();
    let failures = Family::<Labels, Counter>::default();
    let lag = Family::<Labels, Gauge>::default();
    let duration = Family::<Labels, Histogram>::new_with_constructor(|| {
        Histogram::new(BUCKETS.iter().copied())
    });
    for j in jobs {
        let job = || vec![("job".to_owned(), j.name.clone())];
        let st = porcelain::status(&j.dir, &j.name, j.source.as_deref(), &j.vault);
        for word in STATES {
            let mut l = job();
            l.push(("state".to_owned(), word.to_owned()));
            state
                .get_or_create(&l)
                .set(i64::from(st.state.word() == word));
        }
        let rows = index::read_index_or_empty(&j.dir.index()).unwrap_or_default();
        if let Some(t) = rows
            .last()
            .and_then(|r| reverb_common::time::parse_rfc3339(&r.created))
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        {
            last.get_or_create(&job()).set(t.as_secs_f64());
        }
        versions
            .get_or_create(&job())
            .set(clamp(st.versions as u64));
        bytes.get_or_create(&job()).set(clamp(st.size_bytes));
        if let Some(l) = j.settings().vault_size_limit.or(st.size_limit) {
            limit.get_or_create(&job()).set(clamp(l));
        }
        pending.get_or_create(&job()).set(clamp(st.pending()));
        for r in &st.replica_lag {
            let mut l = job();
            l.push(("replica".to_owned(), r.to.clone()));
            lag.get_or_create(&l).set(clamp(r.behind));
        }
        let summary = browse::journal_summary(&j.dir);
        failures.get_or_create(&job()).inc_by(summary.errors);
        let h = duration.get_or_create(&job());
        for (_, secs) in &summary.durations {
            h.observe(*secs);
        }
    }
    let mut reg = Registry::default();
    reg.register(
        "reverberator_job_state",
        "The job's state: 1 for the state it is in",
        state,
    );
    reg.register(
        "reverberator_last_version_timestamp_seconds",
        "When the newest version was taken (Unix time)",
        last,
    );
    reg.register("reverberator_versions", "Retained versions", versions);
    reg.register(
        "reverberator_job_bytes",
        "The job folder's size as index.tsv counts it (held bytes)",
        bytes,
    );
    reg.register(
        "reverberator_size_limit_bytes",
        "The job's vault_size_limit",
        limit,
    );
    reg.register(
        "reverberator_pending_changes",
        "Raw changes waiting for the next version",
        pending,
    );
    reg.register(
        "reverberator_version_duration_seconds",
        "How long versions took, from their start to their publication",
        duration,
    );
    reg.register(
        "reverberator_failures",
        "Failures the journal records (error lines)",
        failures,
    );
    reg.register(
        "reverberator_replica_lag_versions",
        "Versions this vault holds that the replica does not have yet",
        lag,
    );
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
