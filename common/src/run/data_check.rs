//! The edge of `--data` checks shared by `reverb-index --check --data` and `reverberator
//! verify --data`: the `--max-rate` value, the progress bar (stderr, only on a terminal:
//! bytes of total) and the problem lines (TSV or `--json`).
//!
//! Invariant: stdout gets exactly one line per problem, so the output is the same whether
//! or not a terminal shows the bar.

use std::io::IsTerminal;

use crate::error::Result;
use crate::format::settings::parse_size;
use crate::format::tsv;
use crate::vault::layout::JobDir;
use crate::vault::verify::{self, DataProblem, DataProgress};

/// Parses `--max-rate`: a size per second (`50MiB`, `50MiB/s`, `1000000`).
pub fn parse_rate(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    match parse_size(t)? {
        0 => Err(format!(
            "bad rate `{text}`: must be more than 0 bytes per second"
        )),
        n => Ok(n),
    }
}

/// A progress bar of bytes read of the total, on stderr.
struct Bar(indicatif::ProgressBar);

impl DataProgress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        // Shown once the total is known, not as an empty bar while the versions are listed.
        self.0
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    fn read(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// A problem as one output line: TSV (`job, kind, path, detail`) or a JSON object.
pub fn render(p: &DataProblem, json: bool) -> String {
    if !json {
        return p.to_string();
    }
    serde_json::json!({
        "type": "problem",
        "job": p.job,
        "kind": p.kind.as_str(),
        "version": p.version,
        "path": tsv::escape_os(p.location().as_os_str()),
        "detail": p.detail,
    })
    .to_string()
}

/// Verifies the data of one job, printing each problem on stdout and a progress bar on a
/// terminal's stderr; returns how many problems were found.
pub fn verify_and_print(dir: &JobDir, max_rate: Option<u64>, json: bool) -> Result<usize> {
    let found = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::hidden(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(format!("verifying {}", dir.folder));
        let found = verify::verify(dir, max_rate, &Bar(bar.clone()));
        bar.finish_and_clear();
        found?
    } else {
        verify::verify(dir, max_rate, &verify::Quiet)?
    };
    for p in &found {
        if !crate::run::cli::print_line(&render(p, json)).map_err(|e| crate::error::Error::Io {
            what: "cannot write",
            path: "stdout".into(),
            source: e,
        })? {
            break;
        }
    }
    Ok(found.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates() {
        assert_eq!(super::parse_rate("50MiB"), Ok(50 << 20));
        assert_eq!(super::parse_rate("1K/s"), Ok(1024));
        assert!(super::parse_rate("0").is_err());
        assert!(super::parse_rate("fast").is_err());
    }
}
