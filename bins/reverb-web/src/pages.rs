//! The pages (docs/web.md#pages): dashboard, timeline, browse, file, history with diffs,
//! the changes between two versions, find, restore, and the downloads (`raw`, `tar`).
//!
//! Every handler reads the jobs afresh (a reloaded configuration shows at once) and does
//! its vault reading on a blocking thread ([`blocking`]). Paths inside a version are taken
//! from the raw request path, percent-decoded to bytes (any file name, UTF-8 or not) and
//! checked by [`browse::inside_version`]; entries are found by [`browse::locate`] and read by
//! [`browse::open_in`], so nothing outside a version is ever served.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};
use reverb_common::browse::{self, FoundJob, Kind, Located};
use reverb_common::index::{self, IndexRow};
use reverb_common::porcelain::{self, JobState, JobStatus};
use reverb_common::restore::{self, Existing};
use reverb_common::retire::{self, Action};
use reverb_common::tree::Lookalikes;
use serde::Deserialize;

use crate::render::{
    self, age_of, browse_href, enc_query, history_href, raw_href, restore_href, shown, size,
    tar_href, when,
};
use crate::server::{App, WebError, blocking};
use crate::textdiff;
use crate::{metrics as prom, tarball};

type AppState = State<Arc<App>>;
type Query_ = Query<HashMap<String, String>>;

/// Entries shown per page of a folder.
const PAGE: usize = 1000;
/// The most bytes of a file a preview or a diff reads.
const PREVIEW_BYTES: u64 = 512 << 10;

/// Every route of the interface.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(dashboard))
        .route("/fragment/jobs", get(dashboard_rows))
        .route("/static/live.js", get(live_js))
        .route("/metrics", get(metrics))
        .route("/job/{job}", get(timeline))
        .route("/job/{job}/diff", get(version_diff))
        .route("/job/{job}/find", get(find))
        .route("/job/{job}/restore", get(restore_form).post(restore_post))
        .route("/job/{job}/v/{version}", get(browse_root))
        .route("/job/{job}/v/{version}/", get(browse_any))
        .route("/job/{job}/v/{version}/{*path}", get(browse_any))
        .route("/job/{job}/raw/{version}/{*path}", get(raw))
        .route("/job/{job}/tar/{version}", get(tar))
        .route("/job/{job}/tar/{version}/{*path}", get(tar))
        .route("/job/{job}/history/{*path}", get(history))
}

// ---- Finding what a request names ----

fn all_jobs(app: &App) -> Result<Vec<FoundJob>, WebError> {
    Ok(browse::jobs(app.config.as_deref(), app.vault.as_deref())?)
}

fn find_job(app: &App, folder: &str) -> Result<FoundJob, WebError> {
    all_jobs(app)?
        .into_iter()
        .find(|j| j.dir.folder == folder)
        .ok_or_else(|| WebError::not_found(format!("no job `{folder}`")))
}

fn rows_of(job: &FoundJob) -> Result<Vec<IndexRow>, WebError> {
    Ok(index::read_index_or_empty(&job.dir.index())?)
}

/// The retained version `which` (its number, directory name or `latest`).
fn version_of<'r>(rows: &'r [IndexRow], which: &str) -> Result<&'r IndexRow, WebError> {
    restore::pick(rows, which).map_err(|e| WebError::not_found(e.to_string()))
}

/// The raw request path after its first `skip` segments, percent-decoded, as a path inside
/// a version.
fn tail_path(uri: &Uri, skip: usize) -> Result<PathBuf, WebError> {
    let raw = uri.path();
    let rest: Vec<&str> = raw.split('/').skip(skip + 1).collect();
    let bytes = decode(&rest.join("/"))?;
    Ok(browse::inside_version(&bytes)?)
}

/// The `n`th segment of the raw request path (`/job/NAME/…`: 1 is `job`), decoded; the
/// job and version segments are read this way because axum's path extractors refuse the
/// whole request when any segment (a file name) is not UTF-8.
fn segment(uri: &Uri, n: usize) -> Result<String, WebError> {
    let raw = uri.path().split('/').nth(n).unwrap_or("");
    String::from_utf8(decode(raw)?).map_err(|_| WebError::bad("a job or version name is not UTF-8"))
}

/// `%XX` decoding to bytes (`+` stays `+`: this is a path).
fn decode(text: &str) -> Result<Vec<u8>, WebError> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| WebError::bad("a bad %-escape in the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn crumbs(job: &FoundJob, version: Option<&IndexRow>, rel: &Path) -> Markup {
    let folder = &job.dir.folder;
    html! {
        nav.crumbs {
            a href="/" { "Dashboard" } " › "
            a href={ "/job/" (enc_query(folder)) } { (job.name) }
            @if let Some(v) = version {
                " › " a href=(browse_href(folder, &v.dir, Path::new(""))) { "V" (v.version) }
                @let mut sofar = PathBuf::new();
                @for name in rel.iter() {
                    ({ sofar.push(name); "" })
                    " › " a href=(browse_href(folder, &v.dir, &sofar)) { (name.to_string_lossy()) }
                }
            }
        }
    }
}

// ---- Dashboard ----

async fn dashboard(State(app): AppState) -> Result<Markup, WebError> {
    blocking(move || {
        let jobs = all_jobs(&app)?;
        let body = html! {
            @if jobs.is_empty() {
                div.box { "No jobs yet: configure one (docs/configuration.md) or start "
                    code { "reverberator run --source DIR --vault VAULT" } "." }
            }
            div.scroll {
                table {
                    thead { tr {
                        th { "Job" } th { "State" } th { "Newest version" }
                        th.num.wide { "Versions" } th { "Size" } th.num.wide { "Pending" }
                        th.wide { "Replicas" }
                    } }
                    tbody #jobs { (job_rows(&jobs)) }
                }
            }
            p.muted #updated { "Updates by itself every few seconds (with JavaScript); reload otherwise." }
        };
        Ok(render::page_with_script(
            "Dashboard",
            body,
            Some("/static/live.js"),
        ))
    })
    .await
}

async fn dashboard_rows(State(app): AppState) -> Result<Markup, WebError> {
    blocking(move || Ok(job_rows(&all_jobs(&app)?))).await
}

async fn live_js() -> Response {
    const JS: &str = "(function(){var t=document.getElementById('jobs'),u=document.getElementById('updated');if(!t)return;\
function tick(){fetch('/fragment/jobs',{credentials:'same-origin',cache:'no-store'})\
.then(function(r){if(!r.ok)throw r.status;return r.text()})\
.then(function(h){t.innerHTML=h;if(u)u.textContent='Live: updated '+new Date().toLocaleTimeString()})\
.catch(function(){if(u)u.textContent='Live updates paused (the server did not answer)'})\
.then(function(){setTimeout(tick,3000)})}setTimeout(tick,3000)})();";
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        JS,
    )
        .into_response()
}

fn job_rows(jobs: &[FoundJob]) -> Markup {
    let now = SystemTime::now();
    html! {
        @for j in jobs {
            @let st = porcelain::status(&j.dir, &j.name, j.source.as_deref(), &j.vault);
            tr {
                td { a href={ "/job/" (enc_query(&j.dir.folder)) } { (j.name) } }
                td { (state_cell(&st)) }
                td {
                    @if let Some(v) = &st.last_version {
                        a href=(browse_href(&j.dir.folder, v, Path::new(""))) { (short_version(v)) }
                        br;
                        span.muted { (st.last_age_seconds.map(|s| format!("{} ago", reverb_common::time::human_age(now - std::time::Duration::from_secs(s), now))).unwrap_or_default()) }
                    } @else {
                        span.muted { "none yet" }
                    }
                }
                td.num.wide { (st.versions) }
                td { (size_cell(st.size_bytes, j.settings().vault_size_limit.or(st.size_limit))) }
                td.num.wide { (st.pending()) }
                td.wide {
                    @for r in &st.replica_lag {
                        div {
                            (r.to) ": "
                            @if r.behind == 0 { "up to date" } @else { (r.behind) " behind" }
                            @if let Some(e) = &r.error { br; span.why.muted { (e) } }
                        }
                    }
                    @if st.replica_lag.is_empty() { span.muted { "none" } }
                }
            }
        }
    }
}

/// `V7` from `V7-20261207T…`.
fn short_version(dir: &str) -> &str {
    dir.split('-').next().unwrap_or(dir)
}

fn state_cell(st: &JobStatus) -> Markup {
    let word = st.state.word();
    html! {
        span class={ "state s-" (word) } { (word) }
        @match &st.state {
            JobState::Waiting { pending, due } => {
                div.why.muted { (pending) " changes" @if let Some(d) = due { ", version by " (when(d)) } }
            }
            JobState::Copying { progress } => { div.why.muted { (progress) } }
            JobState::Starting => { div.why.muted { "setting up the watch; a rescan follows" } }
            JobState::Stopped if st.replica_of.is_some() => { div.muted { "a replica: its source's " code { "replicate" } " adds its versions" } }
            JobState::Stopped => { div.why.muted { "no supervisor is watching it (" code { "reverberator run" } ")" } }
            JobState::Watching { fallback: Some(how) } => { div.why.muted { (how) } }
            JobState::Paused { why } => {
                div.why { (why) }
                @if let Some(s) = &st.since { div.muted { "since " (when(s)) } }
            }
            JobState::Failing { why, next_retry, resolve } => {
                div.why { (why) }
                @if let Some(s) = &st.since { div.muted { "since " (when(s)) } }
                @if let Some(t) = next_retry { div.muted { "next retry " (when(t)) } }
                @if let Some(r) = resolve { code.resolve title="the command that resolves it" { (r) } }
            }
            _ => {}
        }
        @if st.identity.needs_attention() {
            div.why { (st.identity.to_string()) }
        }
    }
}

fn size_cell(bytes: u64, limit: Option<u64>) -> Markup {
    html! {
        (size(bytes))
        @if let Some(l) = limit {
            " of " (size(l))
            @let pct = if l == 0 { 100 } else { (u128::from(bytes) * 100 / u128::from(l)).min(100) as u64 };
            div class={ "bar" @if bytes > l { " over" } } title={ (pct) "% of the limit" } {
                span style={ "width:" (pct) "%" } {}
            }
        }
    }
}

// ---- Timeline ----

async fn timeline(
    State(app): AppState,
    axum::extract::Path(job): axum::extract::Path<String>,
) -> Result<Markup, WebError> {
    blocking(move || {
        let j = find_job(&app, &job)?;
        let rows = rows_of(&j)?;
        let st = porcelain::status(&j.dir, &j.name, j.source.as_deref(), &j.vault);
        let settings = j.settings();
        let plan = retire::Limits::now(settings.rules(), settings.vault_size_limit).plan(&rows);
        let summary = browse::journal_summary(&j.dir);
        let decisions: HashMap<u64, &retire::Decision> = match &plan {
            Ok(p) => p.decisions.iter().map(|d| (d.version, d)).collect(),
            Err(_) => HashMap::new(),
        };
        let cdc = |r: &IndexRow| summary.changed_during_copy.get(&r.dir).map_or(0, Vec::len);
        let points: Vec<render::Point<'_>> = rows
            .iter()
            .map(|r| render::Point {
                row: r,
                decision: decisions.get(&r.version).copied(),
                changed_during_copy: cdc(r),
            })
            .collect();
        let folder = &j.dir.folder;
        let now = SystemTime::now();
        let body = html! {
            (crumbs(&j, None, Path::new("")))
            div.box {
                (state_cell(&st))
                div { (rows.len()) " versions · " (size_cell(st.size_bytes, settings.vault_size_limit.or(st.size_limit))) }
            }
            @if rows.is_empty() {
                div.box { "No version yet." }
            } @else {
                (render::timeline_svg(folder, &points))
                p.legend.muted {
                    span { span.dot style="background:#1b7a3d" {} "kept by the retention rules" }
                    span { span.dot style="background:#9aa5b1" {} "retired at the next retirement" }
                    span { span.dot style="border:2px solid #e08a00" {} "changed during copy" }
                    span { "stem height: bytes the version holds itself (log scale)" }
                }
                @if let Err(e) = &plan { div.box.err { "Retention plan: " (e.to_string()) } }
                @if let Ok(p) = &plan { @if let Some(u) = &p.unmeetable { div.box.err { (u.to_string()) } } }
                h2 { "Compare, find, restore" }
                form.row method="get" action={ "/job/" (enc_query(folder)) "/diff" } {
                    label { "From" (version_select("a", &rows, rows.len().checked_sub(2).map(|i| rows[i].version))) }
                    label { "to" (version_select("b", &rows, rows.last().map(|r| r.version))) }
                    button type="submit" { "Show changes" }
                }
                form.row method="get" action={ "/job/" (enc_query(folder)) "/find" } {
                    label { "Find a name (glob, deleted files too)" input type="text" name="pattern" placeholder="*.txt"; }
                    button type="submit" { "Find" }
                }
                p { a href={ "/job/" (enc_query(folder)) "/restore" } { "Restore a version or a path into a new directory…" } }
                h2 { "Versions" }
                div.scroll { table {
                    thead { tr {
                        th { "Version" } th { "Taken" } th.num { "Changed" } th.num { "Held" }
                        th.num.wide { "Files" } th { "Retention" } th { "" }
                    } }
                    tbody {
                        @for (i, r) in rows.iter().enumerate().rev() {
                            tr {
                                td { a href=(browse_href(folder, &r.dir, Path::new(""))) { "V" (r.version) } }
                                td { (when(&r.created)) br; span.muted { (age_of(&r.created, now)) } }
                                td.num { (r.changed) }
                                td.num { (size(r.held_bytes)) }
                                td.num.wide { (r.files) }
                                td {
                                    @match decisions.get(&r.version) {
                                        Some(d) if d.action == Action::Keep => span.tag.keep title="the rules that keep it" { "kept: " (d.decided_by()) },
                                        Some(d) => span.tag.retire { "retire: " (d.decided_by()) },
                                        None => span.muted { "-" },
                                    }
                                    @if cdc(r) > 0 {
                                        " " span.tag.warn title="files that changed while they were copied: this version may hold a mix of old and new data" {
                                            (cdc(r)) " changed during copy" }
                                    }
                                }
                                td {
                                    @if i > 0 {
                                        a href={ "/job/" (enc_query(folder)) "/diff?a=" (rows[i - 1].version) "&b=" (r.version) } { "changes" } " · "
                                    }
                                    a href=(tar_href(folder, &r.dir, Path::new(""))) { ".tar" } " · "
                                    a href=(restore_href(folder, &r.dir, Path::new(""))) { "restore" }
                                }
                            }
                        }
                    }
                } }
            }
        };
        Ok(render::page(&format!("Timeline of {}", j.name), body))
    })
    .await
}

fn version_select(name: &str, rows: &[IndexRow], selected: Option<u64>) -> Markup {
    html! {
        select name=(name) {
            @for r in rows.iter().rev() {
                option value=(r.version) selected[selected == Some(r.version)] {
                    "V" (r.version) " · " (when(&r.created))
                }
            }
        }
    }
}

// ---- The changes between two versions ----

async fn version_diff(
    State(app): AppState,
    axum::extract::Path(job): axum::extract::Path<String>,
    Query(q): Query_,
) -> Result<Markup, WebError> {
    blocking(move || {
        let j = find_job(&app, &job)?;
        let rows = rows_of(&j)?;
        let a = version_of(&rows, q.get("a").map_or("latest", String::as_str))?;
        let b = version_of(&rows, q.get("b").map_or("latest", String::as_str))?;
        let changes = porcelain::diff(&j.dir, &a.dir, &b.dir)?;
        let folder = &j.dir.folder;
        let body = html! {
            (crumbs(&j, None, Path::new("")))
            p { "From " a href=(browse_href(folder, &a.dir, Path::new(""))) { "V" (a.version) }
                " (" (when(&a.created)) ") to " a href=(browse_href(folder, &b.dir, Path::new(""))) { "V" (b.version) }
                " (" (when(&b.created)) "): " (changes.len()) " changes." }
            @if !changes.is_empty() {
                div.scroll { table {
                    thead { tr { th { "Change" } th { "Path" } } }
                    tbody {
                        @for c in changes.iter().take(5000) {
                            @let rel = reverb_common::tsv::unescape_os(&c.path).map(PathBuf::from).unwrap_or_default();
                            tr {
                                td { span.tag { (c.change) } }
                                td {
                                    @if c.change == "removed" {
                                        a href=(browse_href(folder, &a.dir, &rel)) { (c.path) }
                                    } @else {
                                        a href=(browse_href(folder, &b.dir, &rel)) { (c.path) }
                                    }
                                    " · " a.muted href=(history_href(folder, &rel)) { "history" }
                                }
                            }
                        }
                    }
                } }
                @if changes.len() > 5000 { p.muted { "The first 5000 are shown." } }
            }
        };
        Ok(render::page(
            &format!("Changes V{} → V{}", a.version, b.version),
            body,
        ))
    })
    .await
}

// ---- Browse ----

async fn browse_root(
    axum::extract::Path((job, version)): axum::extract::Path<(String, String)>,
) -> Redirect {
    Redirect::to(&browse_href(&job, &version, Path::new("")))
}

async fn browse_any(State(app): AppState, Query(q): Query_, uri: Uri) -> Result<Markup, WebError> {
    let (job, version) = (segment(&uri, 2)?, segment(&uri, 4)?);
    let rel = tail_path(&uri, 4)?;
    blocking(move || {
        let j = find_job(&app, &job)?;
        let rows = rows_of(&j)?;
        let row = version_of(&rows, &version)?.clone();
        if row.dir != version {
            return Err(WebError::not_found(format!("no version `{version}`")));
        }
        let lookalikes = Lookalikes::load(&j.dir.path)?;
        let Some(at) = browse::locate(&j.dir, &lookalikes, &row.dir, &rel)? else {
            return Err(WebError::not_found(format!(
                "{} is not in V{}",
                shown(&rel),
                row.version
            )));
        };
        let from: usize = q.get("from").and_then(|f| f.parse().ok()).unwrap_or(0);
        match at.kind {
            Kind::Dir => folder_page(&j, &rows, &row, &lookalikes, &at, from),
            _ => Ok(entry_page(&j, &rows, &row, &at)),
        }
    })
    .await
}

/// The neighbours of `row` in `rows`.
fn neighbours<'r>(
    rows: &'r [IndexRow],
    row: &IndexRow,
) -> (Option<&'r IndexRow>, Option<&'r IndexRow>) {
    let i = rows.iter().position(|r| r.version == row.version);
    (
        i.and_then(|i| i.checked_sub(1)).map(|i| &rows[i]),
        i.and_then(|i| rows.get(i + 1)),
    )
}

fn folder_page(
    j: &FoundJob,
    rows: &[IndexRow],
    row: &IndexRow,
    lookalikes: &Lookalikes,
    at: &Located,
    from: usize,
) -> Result<Markup, WebError> {
    let mut entries = browse::list(&j.dir, lookalikes, &row.dir, at)?;
    let (prev, next) = neighbours(rows, row);
    // Source links are made anew in every version (never vault links): one is changed here
    // only when the previous version had none there, or another text.
    for e in entries.iter_mut().filter(|e| e.own) {
        if let (Kind::Link(text), Some(p)) = (&e.entry.kind, prev) {
            let before = browse::locate(&j.dir, lookalikes, &p.dir, &e.entry.rel)
                .ok()
                .flatten();
            if before.is_some_and(|b| b.kind == Kind::Link(text.clone())) {
                e.own = false;
            }
        }
    }
    let folder = &j.dir.folder;
    let rel = &at.rel;
    let title = if rel.as_os_str().is_empty() {
        format!("{} · V{}", j.name, row.version)
    } else {
        format!("{}/ · V{}", shown(rel), row.version)
    };
    let body = html! {
        (crumbs(j, Some(row), rel))
        div.box {
            "Taken " (when(&row.created)) " · " (entries.len()) " entries here · "
            a href=(tar_href(folder, &row.dir, rel)) { "download this folder (.tar)" } " · "
            a href=(restore_href(folder, &row.dir, rel)) { "restore it" }
            @if !rel.as_os_str().is_empty() { " · " a href=(history_href(folder, rel)) { "history" } }
            br;
            @if let Some(p) = prev {
                a href=(browse_href(folder, &p.dir, rel)) { "← V" (p.version) } " · "
                a href={ "/job/" (enc_query(folder)) "/diff?a=" (p.version) "&b=" (row.version) } { "what changed in V" (row.version) }
            }
            @if let Some(n) = next { " · " a href=(browse_href(folder, &n.dir, rel)) { "V" (n.version) " →" } }
        }
        div.scroll { table {
            thead { tr { th { "Name" } th.num { "Size" } th.wide { "Modified" } th { "" } } }
            tbody {
                @if !rel.as_os_str().is_empty() {
                    tr { td { a href=(browse_href(folder, &row.dir, rel.parent().unwrap_or(Path::new("")))) { "../" } } td {} td.wide {} td {} }
                }
                @for e in entries.iter().skip(from).take(PAGE) {
                    @let name = e.name.to_string_lossy();
                    @let href = browse_href(folder, &row.dir, &e.entry.rel);
                    tr {
                        td class=[e.own.then_some("own")] {
                            @match &e.entry.kind {
                                Kind::Dir => { a href=(href) { (name) "/" } }
                                Kind::Link(target) => {
                                    a href=(href) { (name) } " "
                                    span.muted title="a link in the source: shown, never followed" { "→ " (target.to_string_lossy()) }
                                }
                                _ => { a href=(href) { (name) } }
                            }
                        }
                        td.num { @if e.entry.kind == Kind::File { (size(e.entry.meta.len())) } }
                        td.wide { (render::mtime(e.entry.mtime())) }
                        td {
                            @if e.own {
                                span.tag.new title={ "held by V" (row.version) " itself: added or changed in it" } {
                                    @if e.entry.kind == Kind::Dir { "changes inside" } @else { "changed here" }
                                }
                            }
                        }
                    }
                }
            }
        } }
        @if entries.len() > from + PAGE {
            p { a href={ (browse_href(folder, &row.dir, rel)) "?from=" (from + PAGE) } { "Next " (PAGE) " entries →" } }
        }
    };
    Ok(render::page(&title, body))
}

/// What a file looks like, for the preview and the download's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Looks {
    Text,
    Image(&'static str),
    Binary,
}

fn image_type(rel: &Path) -> Option<&'static str> {
    let ext = rel.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        // SVG may carry scripts: never shown inline.
        _ => return None,
    })
}

fn looks(rel: &Path, head: &[u8]) -> Looks {
    if let Some(t) = image_type(rel) {
        return Looks::Image(t);
    }
    let text = !head.contains(&0)
        && match std::str::from_utf8(head) {
            Ok(_) => true,
            // A multi-byte character cut at the end of the sample is still text.
            Err(e) => e.error_len().is_none(),
        };
    if text { Looks::Text } else { Looks::Binary }
}

fn read_head(j: &FoundJob, at: &Located, limit: u64) -> Result<Vec<u8>, WebError> {
    let f = browse::open_in(&j.dir, &at.phys, &at.rel)?;
    let mut buf = Vec::new();
    f.take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| WebError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(buf)
}

fn entry_page(j: &FoundJob, rows: &[IndexRow], row: &IndexRow, at: &Located) -> Markup {
    let folder = &j.dir.folder;
    let rel = &at.rel;
    let holder = rows.iter().find(|r| r.dir == at.phys);
    let (prev, next) = neighbours(rows, row);
    let preview: Option<(Looks, Vec<u8>)> = match at.kind {
        Kind::File => read_head(j, at, PREVIEW_BYTES)
            .ok()
            .map(|h| (looks(rel, &h), h)),
        _ => None,
    };
    let body = html! {
        (crumbs(j, Some(row), rel))
        div.box {
            @match &at.kind {
                Kind::File => { (size(at.meta.len())) " · " }
                Kind::Link(t) => {
                    "A link in the source, pointing to " code { (t.to_string_lossy()) }
                    ": it is kept as a link and never followed. · "
                }
                Kind::Other => { "A special file (FIFO, socket or device) · " }
                Kind::Dir => {}
            }
            "modified " (render::mtime(at.mtime())) " · mode " (format!("{:o}", at.meta.mode() & 0o7777)) " · "
            @if at.own(&row.dir) && !matches!(at.kind, Kind::Link(_)) {
                span.tag.new { "changed in V" (row.version) }
            } @else if let Some(h) = holder {
                "unchanged since " a href=(browse_href(folder, &h.dir, rel)) { "V" (h.version) }
            }
            br;
            @if at.kind == Kind::File {
                a href=(raw_href(folder, &row.dir, rel, true)) { "download" } " · "
            }
            a href=(history_href(folder, rel)) { "history" } " · "
            a href=(restore_href(folder, &row.dir, rel)) { "restore it" }
            @if let Some(p) = prev { " · " a href=(browse_href(folder, &p.dir, rel)) { "← V" (p.version) } }
            @if let Some(n) = next { " · " a href=(browse_href(folder, &n.dir, rel)) { "V" (n.version) " →" } }
        }
        @match &preview {
            Some((Looks::Image(_), _)) => {
                div.preview { img src=(raw_href(folder, &row.dir, rel, false)) alt=(shown(rel)); }
            }
            Some((Looks::Text, head)) => {
                pre.preview { (String::from_utf8_lossy(head)) }
                @if at.meta.len() > PREVIEW_BYTES { p.muted { "The first " (size(PREVIEW_BYTES)) " are shown." } }
            }
            Some((Looks::Binary, _)) => { p.muted { "No preview: not text." } }
            None => {}
        }
    };
    render::page(&format!("{} · V{}", shown(rel), row.version), body)
}

// ---- Downloads ----

async fn raw(State(app): AppState, Query(q): Query_, uri: Uri) -> Result<Response, WebError> {
    let (job, version) = (segment(&uri, 2)?, segment(&uri, 4)?);
    let rel = tail_path(&uri, 4)?;
    let download = q.contains_key("download");
    let (j, at, head) = blocking(move || {
        let j = find_job(&app, &job)?;
        let rows = rows_of(&j)?;
        let row = version_of(&rows, &version)?.clone();
        let lookalikes = Lookalikes::load(&j.dir.path)?;
        let at = browse::locate(&j.dir, &lookalikes, &row.dir, &rel)?.ok_or_else(|| {
            WebError::not_found(format!("{} is not in V{}", shown(&rel), row.version))
        })?;
        if at.kind != Kind::File {
            return Err(WebError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} is not a regular file: only files are served (a link is never followed)",
                    shown(&rel)
                ),
            ));
        }
        let head = read_head(&j, &at, 8 << 10)?;
        Ok((j, at, head))
    })
    .await?;
    let kind = match looks(&at.rel, &head) {
        Looks::Image(t) if !download => t,
        Looks::Text if !download => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    let name = at
        .rel
        .file_name()
        .unwrap_or(OsStr::new("file"))
        .as_bytes()
        .to_vec();
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if kind == "application/octet-stream" {
            "attachment"
        } else {
            "inline"
        },
        render::enc(&name)
    );
    let len = at.meta.len();
    let body = tarball::streamed(move |out| {
        let f = browse::open_in(&j.dir, &at.phys, &at.rel).map_err(std::io::Error::other)?;
        std::io::copy(&mut f.take(len), out).map(|_| ())
    });
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // A file of the vault is never a page of ours: no script, no form, no plugin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
        ),
    );
    Ok(resp)
}

async fn tar(State(app): AppState, uri: Uri) -> Result<Response, WebError> {
    let (job, version) = (segment(&uri, 2)?, segment(&uri, 4)?);
    let rel = tail_path(&uri, 4)?;
    let (j, row, at) = blocking(move || {
        let j = find_job(&app, &job)?;
        let rows = rows_of(&j)?;
        let row = version_of(&rows, &version)?.clone();
        let lookalikes = Lookalikes::load(&j.dir.path)?;
        let at = browse::locate(&j.dir, &lookalikes, &row.dir, &rel)?.ok_or_else(|| {
            WebError::not_found(format!("{} is not in V{}", shown(&rel), row.version))
        })?;
        Ok((j, row, at))
    })
    .await?;
    let top: PathBuf = match at.rel.file_name() {
        Some(n) => PathBuf::from(n),
        None => PathBuf::from(format!("{}-V{}", j.dir.folder, row.version)),
    };
    let name = format!("{}.tar", top.to_string_lossy());
    let body =
        tarball::streamed(move |out| tarball::write_tar(&j.dir, &at.phys, &at.rel, &top, out));
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename*=UTF-8''{}",
        render::enc(name.as_bytes())
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

// ---- History of a path ----

async fn history(State(app): AppState, Query(q): Query_, uri: Uri) -> Result<Markup, WebError> {
    let job = segment(&uri, 2)?;
    let rel = tail_path(&uri, 3)?;
    blocking(move || {
        let j = find_job(&app, &job)?;
        let rows = rows_of(&j)?;
        let found = porcelain::history(&j.dir, &rows, &rel)?;
        if found.is_empty() {
            return Err(WebError::not_found(format!(
                "{} is not in any retained version",
                shown(&rel)
            )));
        }
        let folder = &j.dir.folder;
        let present: Vec<&porcelain::HistoryRow> =
            found.iter().filter(|h| h.change != "deleted").collect();
        let pick = |key: &str, default: Option<u64>| {
            q.get(key)
                .and_then(|v| v.trim_start_matches('V').parse::<u64>().ok())
                .or(default)
        };
        let a = pick("a", present.iter().rev().nth(1).map(|h| h.version));
        let b = pick("b", present.last().map(|h| h.version));
        let shown_diff = if q.contains_key("a") && q.contains_key("b") {
            Some(file_diff(&j, &rows, &rel, a, b)?)
        } else {
            None
        };
        let now = SystemTime::now();
        let body = html! {
            (crumbs(&j, None, Path::new("")))
            p { "The versions in which " code { (shown(&rel)) } " changed." }
            div.scroll { table {
                thead { tr { th { "Version" } th { "Taken" } th { "Change" } th.num { "Size" } th { "" } } }
                tbody {
                    @for h in &found {
                        tr {
                            td { a href=(browse_href(folder, &h.dir, &rel)) { "V" (h.version) } }
                            td { (when(&h.created)) br; span.muted { (age_of(&h.created, now)) } }
                            td { span.tag { (h.change) } }
                            td.num { @if h.change != "deleted" { (size(h.size)) } }
                            td {
                                @if h.change != "deleted" {
                                    a href=(raw_href(folder, &h.dir, &rel, true)) { "download" } " · "
                                    a href=(restore_href(folder, &h.dir, &rel)) { "restore" }
                                }
                            }
                        }
                    }
                }
            } }
            @if present.len() >= 2 {
                h2 { "Compare two versions" }
                form.row method="get" action=(history_href(folder, &rel)) {
                    label { "From" (history_select("a", &present, a)) }
                    label { "to" (history_select("b", &present, b)) }
                    button type="submit" { "Show the difference" }
                }
            }
            @if let Some(d) = shown_diff { (d) }
        };
        Ok(render::page(&format!("History of {}", shown(&rel)), body))
    })
    .await
}

fn history_select(name: &str, present: &[&porcelain::HistoryRow], selected: Option<u64>) -> Markup {
    html! {
        select name=(name) {
            @for h in present.iter().rev() {
                option value=(h.version) selected[selected == Some(h.version)] { "V" (h.version) " · " (when(&h.created)) }
            }
        }
    }
}

/// The text diff of `rel` between versions `a` and `b`.
fn file_diff(
    j: &FoundJob,
    rows: &[IndexRow],
    rel: &Path,
    a: Option<u64>,
    b: Option<u64>,
) -> Result<Markup, WebError> {
    let lookalikes = Lookalikes::load(&j.dir.path)?;
    let side = |v: Option<u64>| -> Result<(IndexRow, Option<Vec<u8>>), WebError> {
        let v = v.ok_or_else(|| WebError::bad("choose two versions"))?;
        let row = version_of(rows, &v.to_string())?.clone();
        let data = match browse::locate(&j.dir, &lookalikes, &row.dir, rel)? {
            Some(at) if at.kind == Kind::File => Some(read_head(j, &at, PREVIEW_BYTES * 2)?),
            Some(at) => Some(format!("({})\n", at.kind.word()).into_bytes()),
            None => None,
        };
        Ok((row, data))
    };
    let (ra, da) = side(a)?;
    let (rb, db) = side(b)?;
    let (ta, tb) = (
        da.as_deref().map(std::str::from_utf8),
        db.as_deref().map(std::str::from_utf8),
    );
    Ok(html! {
        h2 { "V" (ra.version) " → V" (rb.version) }
        @match (ta, tb) {
            (Some(Ok(ta)), Some(Ok(tb))) => {
                @let ops = textdiff::diff(ta, tb);
                @let hunks = textdiff::hunks(&ops, 3);
                @if hunks.is_empty() {
                    p.muted { "The same text in both." }
                } @else {
                    div.diff {
                        @for h in &hunks {
                            @match h {
                                None => div.h { "⋯" },
                                Some(textdiff::Op::Same(l)) => div { "  " (l) },
                                Some(textdiff::Op::Removed(l)) => div.d { "- " (l) },
                                Some(textdiff::Op::Added(l)) => div.a { "+ " (l) },
                            }
                        }
                    }
                }
            }
            (None, _) | (_, None) => { p.muted { "Not in one of the two versions." } }
            _ => {
                p.muted { "Not text: " (da.as_ref().map_or(0, Vec::len)) " and " (db.as_ref().map_or(0, Vec::len)) " bytes read"
                    @if da == db { ", the same" } @else { ", different" } "." }
            }
        }
    })
}

// ---- Find ----

async fn find(
    State(app): AppState,
    axum::extract::Path(job): axum::extract::Path<String>,
    Query(q): Query_,
) -> Result<Markup, WebError> {
    blocking(move || {
        let j = find_job(&app, &job)?;
        let rows = rows_of(&j)?;
        let pattern = q.get("pattern").cloned().unwrap_or_default();
        let found = if pattern.is_empty() {
            None
        } else {
            let p = porcelain::Pattern::new(&pattern)?;
            Some(porcelain::find(&j.dir, &rows, &p)?)
        };
        let dir_of: HashMap<u64, &str> = rows.iter().map(|r| (r.version, r.dir.as_str())).collect();
        let folder = &j.dir.folder;
        let body = html! {
            (crumbs(&j, None, Path::new("")))
            form.row method="get" {
                label { "Name or path pattern (glob: * ? [..] **)" input type="text" name="pattern" value=(pattern) placeholder="*.txt"; }
                button type="submit" { "Find" }
            }
            @if let Some(found) = &found {
                p { (found.len()) " paths match in " (rows.len()) " retained versions (deleted ones included)." }
                div.scroll { table {
                    thead { tr { th { "Path" } th { "In versions" } th { "" } } }
                    tbody {
                        @for f in found.iter().take(5000) {
                            @let rel = reverb_common::tsv::unescape_os(&f.path).map(PathBuf::from).unwrap_or_default();
                            @let last = f.versions.last().and_then(|v| dir_of.get(v));
                            tr {
                                td {
                                    @if let Some(d) = last { a href=(browse_href(folder, d, &rel)) { (f.path) } } @else { (f.path) }
                                    @if f.deleted { " " span.tag.warn { "deleted" } }
                                }
                                td { (ranges(&f.versions)) }
                                td { a href=(history_href(folder, &rel)) { "history" } }
                            }
                        }
                    }
                } }
            }
        };
        Ok(render::page(&format!("Find in {}", j.name), body))
    })
    .await
}

/// `V1–V3, V5` from `[1, 2, 3, 5]`.
fn ranges(v: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut k = i;
        while k + 1 < v.len() && v[k + 1] == v[k] + 1 {
            k += 1;
        }
        out.push(if k == i {
            format!("V{}", v[i])
        } else {
            format!("V{}–V{}", v[i], v[k])
        });
        i = k + 1;
    }
    out.join(", ")
}

// ---- Restore ----

async fn restore_form(
    State(app): AppState,
    axum::extract::Path(job): axum::extract::Path<String>,
    Query(q): Query_,
) -> Result<Markup, WebError> {
    blocking(move || {
        let j = find_job(&app, &job)?;
        let rows = rows_of(&j)?;
        let chosen = q
            .get("version")
            .and_then(|v| version_of(&rows, v).ok())
            .or(rows.last())
            .map(|r| r.version);
        let path = q.get("path").cloned().unwrap_or_default();
        Ok(render::page(
            &format!("Restore from {}", j.name),
            restore_body(
                &j,
                &rows,
                chosen,
                &path,
                &suggest_dest(&app, &j, chosen, &path),
                None,
            ),
        ))
    })
    .await
}

/// The restore form's fields.
#[derive(Debug, Deserialize)]
pub struct RestoreForm {
    /// The version (number or directory).
    pub version: String,
    /// The path inside it (empty: all of it).
    #[serde(default)]
    pub path: String,
    /// The new directory on the server.
    pub dest: String,
}

async fn restore_post(
    State(app): AppState,
    axum::extract::Path(job): axum::extract::Path<String>,
    Form(f): Form<RestoreForm>,
) -> Result<Response, WebError> {
    blocking(move || {
        let j = find_job(&app, &job)?;
        let rows = rows_of(&j)?;
        let row = version_of(&rows, &f.version)?.clone();
        // After a restore the form offers the next new directory; after a refusal, what was
        // typed, to correct.
        let (status, done, dest) = match restore_into(&app, &j, &row, &f) {
            Ok(msg) => (
                StatusCode::OK,
                html! { div.box.ok #restored { (msg) } },
                suggest_dest(&app, &j, Some(row.version), &f.path),
            ),
            Err(e) => (
                e.status,
                html! { div.box.err #refused { (e.message) } },
                f.dest.clone(),
            ),
        };
        let page = render::page(
            &format!("Restore from {}", j.name),
            restore_body(&j, &rows, Some(row.version), &f.path, &dest, Some(done)),
        );
        Ok((status, page).into_response())
    })
    .await
}

/// Restores as `reverb-restore` does (the same library call), into a new or empty
/// directory outside every vault; returns what to tell.
fn restore_into(
    app: &App,
    j: &FoundJob,
    row: &IndexRow,
    f: &RestoreForm,
) -> Result<String, WebError> {
    let dest = PathBuf::from(f.dest.trim());
    if !dest.is_absolute() {
        return Err(WebError::bad(
            "the destination must be an absolute path on the server (a new directory)",
        ));
    }
    // Every vault served, not only the job's (which the library refuses itself).
    for other in all_jobs(app)? {
        match restore::refuse_inside(&dest, &other.vault) {
            Ok(()) => {}
            Err(e @ (restore::InsideVault::Inside(..) | restore::InsideVault::Contains(..))) => {
                return Err(WebError::new(StatusCode::FORBIDDEN, e.to_string()));
            }
            Err(e) => return Err(reverb_common::Error::from(e).into()),
        }
    }
    let rel = browse::inside_version(f.path.trim().trim_start_matches('/').as_bytes())?;
    let done = match restore::restore_into(&j.dir, &row.dir, &rel, &dest, Existing::Refuse, true) {
        Ok(done) => done,
        // The form writes only into a new or empty directory: no flags to offer.
        Err(reverb_common::Error::DestinationOccupied { dest, not_empty }) => {
            return Err(WebError::bad(format!(
                "{} {}: restore into a new or empty directory",
                dest.display(),
                if not_empty { "is not empty" } else { "exists" }
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let mut msg = format!(
        "Restored {} entries of V{}{} into {}.",
        done.entries,
        row.version,
        if rel.as_os_str().is_empty() {
            String::new()
        } else {
            format!(" ({})", shown(&rel))
        },
        dest.display()
    );
    if !done.skipped_devices.is_empty() {
        msg.push_str(&format!(
            " {} device nodes were skipped (they need root).",
            done.skipped_devices.len()
        ));
    }
    Ok(msg)
}

/// A new directory for a restore, below `--restore-to`: `JOB-VN[-NAME]`, numbered on when
/// it exists already.
fn suggest_dest(app: &App, j: &FoundJob, version: Option<u64>, path: &str) -> String {
    let Some(v) = version else {
        return String::new();
    };
    let name = Path::new(path.trim_matches('/'))
        .file_name()
        .map(|n| format!("-{}", n.to_string_lossy()))
        .unwrap_or_default();
    let base = format!("{}-V{v}{name}", j.dir.folder);
    (1..1000)
        .map(|i| {
            let n = if i == 1 {
                base.clone()
            } else {
                format!("{base}-{i}")
            };
            app.restore_to.join(n)
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn restore_body(
    j: &FoundJob,
    rows: &[IndexRow],
    chosen: Option<u64>,
    path: &str,
    dest: &str,
    outcome: Option<Markup>,
) -> Markup {
    let folder = &j.dir.folder;
    html! {
        (crumbs(j, None, Path::new("")))
        @if let Some(o) = outcome { (o) }
        p { "Copies a version, or one path in it, into a " strong { "new" } " directory on the server, exactly as "
            code { "reverb-restore" } " does (contents, modes, times, links; every file checked against its checksum). "
            "An existing non-empty directory is refused: nothing is ever overwritten." }
        form.row method="post" action={ "/job/" (enc_query(folder)) "/restore" } {
            label { "Version" (version_select("version", rows, chosen)) }
            label { "Path in the version (empty: all of it)" input type="text" name="path" value=(path) placeholder="Documents/report.odt"; }
            label { "New directory on the server" input type="text" name="dest" value=(dest) placeholder="/home/me/restored" required; }
            button type="submit" #restore { "Restore" }
        }
        @if let Some(v) = chosen.and_then(|c| rows.iter().find(|r| r.version == c)) {
            p.muted { "The same from a shell: " code { "reverb-restore --vault " (j.vault.display()) " --job " (j.name) " --from " (v.version)
                @if !path.is_empty() { " --path " (path) } " --to DEST" } }
        }
    }
}

// ---- /metrics ----

/// The Prometheus exposition of every job.
pub async fn metrics(State(app): AppState) -> Result<Response, WebError> {
    let text = blocking(move || {
        let jobs = all_jobs(&app)?;
        prom::render(&jobs)
            .map_err(|e| WebError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ranges_read_short() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "V1–V3, V5, V7–V8");
        assert_eq!(ranges(&[4]), "V4");
    }

    #[test]
    fn paths_decode_to_bytes() {
        assert_eq!(decode("a%20b/%C3%A9").expect("decode"), "a b/é".as_bytes());
        assert_eq!(decode("%ff").expect("byte"), vec![0xff]);
        assert!(decode("%zz").is_err());
    }
}
