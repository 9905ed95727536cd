//! How the pages look: the layout every page shares (a small inline style sheet, usable at
//! a phone's width, no script needed to read), links into the interface with every path
//! name percent-encoded, sizes, times and ages for people, and the timeline's SVG.
//!
//! Invariant: every text that comes from the vault or the request goes through maud's
//! escaping (`(value)` in `html!`); nothing is inserted with `PreEscaped` except the fixed
//! style sheet and the SVG built here from numbers and escaped texts.

use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use reverb_common::index::IndexRow;
use reverb_common::retire::{Action, Decision};
use reverb_common::settings::format_size;

/// The style sheet (inline, small; the CSP allows inline styles only).
const STYLE: &str = r#"
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#243b53;color:#fff;padding:.55em 1em;display:flex;gap:1.2em;flex-wrap:wrap;align-items:baseline}
header a{color:#fff;text-decoration:none}
header .brand{font-weight:700;letter-spacing:.02em}
main{padding:1em;max-width:72em;margin:0 auto}
h1{font-size:1.35em;margin:.2em 0 .6em}
h2{font-size:1.1em;margin:1.4em 0 .5em}
a{color:#0b5cad}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e1e4e8}
th,td{text-align:left;padding:.35em .55em;border-bottom:1px solid #e8eaed;vertical-align:top}
th{background:#eef1f5;font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;white-space:nowrap}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
pre{background:#fff;border:1px solid #e1e4e8;padding:.6em;overflow-x:auto;white-space:pre}
.muted{color:#66707c}
.crumbs{margin:.2em 0 .8em;word-break:break-all}
.state{font-weight:600}
.s-watching{color:#1b7a3d}.s-starting,.s-waiting,.s-copying,.s-retiring{color:#8a5a00}
.s-failing,.s-paused{color:#b00020}.s-stopped,.s-new{color:#66707c}
.why{margin-top:.25em;font-size:.92em}
.resolve{display:block;margin-top:.25em;background:#fff4e5;border:1px solid #f0c36d;padding:.3em .45em;word-break:break-all}
.own{font-weight:600}
.tag{display:inline-block;padding:0 .45em;border-radius:.3em;background:#e6eef7;font-size:.82em;white-space:nowrap}
.tag.keep{background:#e3f4e8;color:#135c2c}.tag.retire{background:#f1f1f1;color:#66707c}
.tag.warn{background:#fff1db;color:#8a5a00}.tag.new{background:#e3f4e8;color:#135c2c}
.bar{height:.55em;background:#dde3ea;border-radius:.3em;overflow:hidden;min-width:6em}
.bar>span{display:block;height:100%;background:#3c78b5}
.bar.over>span{background:#b00020}
.diff{background:#fff;border:1px solid #e1e4e8;overflow-x:auto}
.diff div{white-space:pre;font-family:ui-monospace,monospace;font-size:.88em;padding:0 .5em}
.diff .a{background:#e6ffec}.diff .d{background:#ffebe9}.diff .h{background:#eef1f5;color:#66707c}
form.row{display:flex;gap:.6em;flex-wrap:wrap;align-items:flex-end;margin:.6em 0}
form.row label{display:flex;flex-direction:column;font-size:.9em;gap:.15em}
input,select,button{font:inherit;padding:.35em .5em;border:1px solid #b8c0ca;border-radius:.3em;background:#fff}
button{background:#0b5cad;color:#fff;border-color:#0b5cad;cursor:pointer}
input[type=text]{min-width:min(26em,80vw)}
.box{background:#fff;border:1px solid #e1e4e8;padding:.7em 1em;margin:.6em 0}
.ok{border-color:#7cc293;background:#eefaf1}.err{border-color:#e39a9a;background:#fdf0f0}
.preview img{max-width:100%;height:auto;border:1px solid #e1e4e8;background:#fff}
svg.timeline{width:100%;height:auto;background:#fff;border:1px solid #e1e4e8}
.legend span{margin-right:1em;white-space:nowrap}
.dot{display:inline-block;width:.7em;height:.7em;border-radius:50%;vertical-align:middle;margin-right:.25em}
@media (max-width:44em){.wide{display:none}main{padding:.6em}th,td{padding:.3em .35em}}
"#;

/// A whole page: `title` in the tab and as the heading, `body` below it.
pub fn page(title: &str, body: Markup) -> Markup {
    page_with_script(title, body, None)
}

/// [`page`], with one script of ours (`/static/…`), for pages that update themselves.
pub fn page_with_script(title: &str, body: Markup, script: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · reverberator" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/" { "reverberator" }
                    a href="/" { "Dashboard" }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                @if let Some(src) = script {
                    script src=(src) {}
                }
            }
        }
    }
}

/// Percent-encodes one path name (everything but RFC 3986's unreserved characters).
pub fn enc(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A relative path as URL segments (`a/b%20c`), each name encoded.
pub fn enc_path(rel: &Path) -> String {
    rel.iter()
        .map(|n| enc(n.as_bytes()))
        .collect::<Vec<_>>()
        .join("/")
}

/// A query value, encoded.
pub fn enc_query(text: &str) -> String {
    enc(text.as_bytes())
}

/// A path for people (lossy where it is not UTF-8).
pub fn shown(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// The link to browse `rel` of `version` of the job in folder `job`.
pub fn browse_href(job: &str, version: &str, rel: &Path) -> String {
    format!(
        "/job/{}/v/{}/{}",
        enc_query(job),
        enc_query(version),
        enc_path(rel)
    )
}

/// The link to a path's history.
pub fn history_href(job: &str, rel: &Path) -> String {
    format!("/job/{}/history/{}", enc_query(job), enc_path(rel))
}

/// The link to a file's data.
pub fn raw_href(job: &str, version: &str, rel: &Path, download: bool) -> String {
    format!(
        "/job/{}/raw/{}/{}{}",
        enc_query(job),
        enc_query(version),
        enc_path(rel),
        if download { "?download=1" } else { "" }
    )
}

/// The link to a folder as a tar.
pub fn tar_href(job: &str, version: &str, rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        format!("/job/{}/tar/{}", enc_query(job), enc_query(version))
    } else {
        format!(
            "/job/{}/tar/{}/{}",
            enc_query(job),
            enc_query(version),
            enc_path(rel)
        )
    }
}

/// The restore form, filled in.
pub fn restore_href(job: &str, version: &str, rel: &Path) -> String {
    format!(
        "/job/{}/restore?version={}&path={}",
        enc_query(job),
        enc_query(version),
        enc(rel.as_os_str().as_bytes())
    )
}

/// Bytes for people.
pub fn size(bytes: u64) -> String {
    format_size(bytes)
}

/// An RFC 3339 time from the vault's files, shorter: `2026-12-07 06:57:36 UTC`.
pub fn when(rfc3339: &str) -> String {
    let t = rfc3339.trim_end_matches('Z');
    let t = t.split('.').next().unwrap_or(t);
    format!("{} UTC", t.replacen('T', " ", 1))
}

/// A file time for people (UTC, to the second).
pub fn mtime(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => when(&reverb_common::time::rfc3339_millis(t)),
        None => "-".into(),
    }
}

/// How long ago an RFC 3339 time was (`3 h`); `-` when it does not parse.
pub fn age_of(rfc3339: &str, now: SystemTime) -> String {
    match reverb_common::time::parse_rfc3339(rfc3339) {
        Some(t) => format!("{} ago", reverb_common::time::human_age(t, now)),
        None => "-".into(),
    }
}

/// One version on the timeline: its row, the plan's decision on it, and how many paths
/// changed while it was copied.
pub struct Point<'a> {
    pub row: &'a IndexRow,
    pub decision: Option<&'a Decision>,
    pub changed_during_copy: usize,
}

/// The timeline: versions on a time axis, each a stem as high as what it holds itself
/// (log scale) and a dot coloured by what retention will do (kept: green; retired: grey;
/// changed during copy: an orange ring), each a link to the version.
pub fn timeline_svg(job: &str, points: &[Point<'_>]) -> Markup {
    const W: f64 = 960.0;
    const H: f64 = 200.0;
    const LEFT: f64 = 24.0;
    const RIGHT: f64 = 24.0;
    const BASE: f64 = 150.0;
    const TOP: f64 = 16.0;
    let times: Vec<f64> = points
        .iter()
        .map(|p| {
            reverb_common::time::parse_rfc3339(&p.row.created)
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64())
        })
        .collect();
    let (lo, hi) = times
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), t| (l.min(*t), h.max(*t)));
    // Versions all taken within a minute are spread evenly (a time axis would stack them).
    let even = hi - lo < 60.0;
    let x_of = |i: usize, t: f64| {
        if points.len() <= 1 {
            W / 2.0
        } else if even {
            LEFT + i as f64 / (points.len() - 1) as f64 * (W - LEFT - RIGHT)
        } else {
            LEFT + (t - lo) / (hi - lo) * (W - LEFT - RIGHT)
        }
    };
    let max_log = points
        .iter()
        .map(|p| ((p.row.held_bytes + 1) as f64).log2())
        .fold(1.0f64, f64::max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="timeline" viewBox="0 0 {W} {H}" role="img" aria-label="versions on a time axis" xmlns="http://www.w3.org/2000/svg">"##
    );
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{BASE}" x2="{}" y2="{BASE}" stroke="#9aa5b1" stroke-width="1"/>"##,
        W - RIGHT
    );
    let label_every = points.len().div_ceil(24).max(1);
    for (i, (p, t)) in points.iter().zip(&times).enumerate() {
        let x = x_of(i, *t);
        let h = ((p.row.held_bytes + 1) as f64).log2() / max_log * (BASE - TOP - 10.0);
        let kept = p.decision.is_none_or(|d| d.action == Action::Keep);
        let colour = if kept { "#1b7a3d" } else { "#9aa5b1" };
        let why = match p.decision {
            Some(d) if d.action == Action::Keep => format!("kept by {}", d.decided_by()),
            Some(d) => format!("to be retired ({})", d.decided_by()),
            None => "kept".into(),
        };
        let mut title = format!(
            "V{} {}: {} changed, {} held, {why}",
            p.row.version,
            when(&p.row.created),
            p.row.changed,
            size(p.row.held_bytes)
        );
        if p.changed_during_copy > 0 {
            let _ = write!(title, "; {} changed during copy", p.changed_during_copy);
        }
        let href = browse_href(job, &p.row.dir, Path::new(""));
        let _ = write!(
            svg,
            r##"<a href="{}"><title>{}</title><line x1="{x:.1}" y1="{BASE}" x2="{x:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3" stroke-linecap="round"/>"##,
            escape_attr(&href),
            escape_attr(&title),
            BASE - h.max(2.0)
        );
        if p.changed_during_copy > 0 {
            let _ = write!(
                svg,
                r##"<circle cx="{x:.1}" cy="{BASE}" r="9" fill="none" stroke="#e08a00" stroke-width="2.5"/>"##
            );
        }
        let _ = write!(
            svg,
            r##"<circle cx="{x:.1}" cy="{BASE}" r="5.5" fill="{colour}" stroke="#fff" stroke-width="1.5"/>"##
        );
        if i % label_every == 0 || i + 1 == points.len() {
            let _ = write!(
                svg,
                r##"<text x="{x:.1}" y="{}" font-size="11" fill="#243b53" text-anchor="middle" font-family="sans-serif">V{}</text>"##,
                BASE + 17.0,
                p.row.version
            );
        }
        svg.push_str("</a>");
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = write!(
            svg,
            r##"<text x="{LEFT}" y="{}" font-size="12" fill="#4a5562" font-family="sans-serif">{}</text>"##,
            BASE + 34.0,
            escape_attr(&when(&first.row.created))
        );
        if points.len() > 1 {
            let _ = write!(
                svg,
                r##"<text x="{}" y="{}" font-size="12" fill="#4a5562" text-anchor="end" font-family="sans-serif">{}</text>"##,
                W - RIGHT,
                BASE + 34.0,
                escape_attr(&when(&last.row.created))
            );
        }
    }
    svg.push_str("</svg>");
    PreEscaped(svg)
}

/// Escapes text for an XML attribute or text node.
fn escape_attr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_whole() {
        assert_eq!(enc(b"a b/c%"), "a%20b%2Fc%25");
        assert_eq!(enc_path(Path::new("x y/z")), "x%20y/z");
        assert_eq!(
            escape_attr("<a href=\"x\">"),
            "&lt;a href=&quot;x&quot;&gt;"
        );
    }
}
