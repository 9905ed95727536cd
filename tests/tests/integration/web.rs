//! `reverb-web` (docs/web.md) against a real vault made by the real binaries: plain HTTP
//! (the token, cross-site POSTs, nothing served outside a version, `/metrics`), and a real
//! browser (Debian's headless `chromium` over WebDriver) walking the pages a person uses,
//! a screenshot of each under `target/web-screenshots/`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reverb_tests::model::{CaptureOpts, assert_same, capture};
use reverb_tests::web::{Browser, WebServer, chromium};
use reverb_tests::{Fixture, missing_programs, wait_until};

/// A 1×1 PNG (the image preview).
const PNG: [u8; 69] = [
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xDE, 0x00, 0x00, 0x00, 0x0C, 0x49, 0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0xF8, 0xCF, 0xC0, 0x00,
    0x00, 0x03, 0x01, 0x01, 0x00, 0x18, 0xDD, 0x8D, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E,
    0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// What a secret outside the vault holds: never in any reply.
const SECRET: &str = "the secret outside every version";

/// A job with three versions: V1 (a first draft, a photo, a file deleted later, a source
/// link pointing out of the source at a secret), V2 (the draft edited), V3 (edited again,
/// one file deleted, one added).
struct Site {
    f: Fixture,
    /// The versions' directories, oldest first.
    versions: Vec<String>,
    /// A file outside the source and the vault.
    secret: PathBuf,
    state: PathBuf,
}

fn site() -> Site {
    let f = Fixture::new();
    let outside = f._tmp.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    let secret = outside.join("secret.txt");
    fs::write(&secret, SECRET).expect("write");
    fs::create_dir_all(f.src.join("notes/deep")).expect("mkdir");
    fs::write(f.src.join("notes/today.txt"), "first draft\nof the day\n").expect("write");
    fs::write(f.src.join("notes/deep/list.txt"), "milk\neggs\n").expect("write");
    fs::write(f.src.join("photo.png"), PNG).expect("write");
    fs::write(f.src.join("old.txt"), "to be deleted\n").expect("write");
    std::os::unix::fs::symlink(&outside, f.src.join("escape")).expect("symlink");
    fs::write(f.src.join("notes/a b&ü.txt"), "odd name\n").expect("write");
    fs::write(
        f.src
            .join(std::ffi::OsStr::from_bytes(b"notes/not-utf8-\xff.bin")),
        "bytes\n",
    )
    .expect("write");
    std::os::unix::fs::symlink("../../outside/secret.txt", f.src.join("notes/up"))
        .expect("symlink");
    let v1 = f.first();
    fs::write(
        f.src.join("notes/today.txt"),
        "first draft\nof the day\nwith a second thought\n",
    )
    .expect("write");
    let v2 = f.rescan();
    fs::write(
        f.src.join("notes/today.txt"),
        "final text\nof the day\nwith a second thought\n",
    )
    .expect("write");
    fs::remove_file(f.src.join("old.txt")).expect("rm");
    fs::write(f.src.join("notes/new.txt"), "new\n").expect("write");
    let v3 = f.rescan();
    for v in [&v1, &v2, &v3] {
        assert!(!v.is_empty(), "a version was made");
    }
    let state = f._tmp.path().join("state");
    Site {
        versions: vec![v1, v2, v3],
        secret,
        state,
        f,
    }
}

impl Site {
    fn serve(&self, extra: &[&OsStr]) -> WebServer {
        let mut args: Vec<&OsStr> = vec![OsStr::new("--vault"), self.f.vault.as_os_str()];
        args.extend_from_slice(extra);
        WebServer::start(&args, &self.state)
    }

    fn v(&self, n: usize) -> &str {
        &self.versions[n - 1]
    }
}

// ---- Plain HTTP ----

#[test]
fn every_request_needs_the_token() {
    let s = site();
    let web = s.serve(&[]);
    let token_file = s.state.join("web-token");
    assert_eq!(
        fs::metadata(&token_file)
            .expect("token file")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        fs::read_to_string(&token_file).expect("read").trim(),
        web.token
    );
    let anon = web.anonymous();
    let v = s.v(3);
    for path in [
        "/".to_owned(),
        "/job/job".into(),
        format!("/job/job/v/{v}/"),
        format!("/job/job/raw/{v}/notes/today.txt"),
        format!("/job/job/tar/{v}"),
        "/metrics".into(),
        "/fragment/jobs".into(),
    ] {
        let r = anon.get(&path);
        assert_eq!(r.status, 401, "{path} without the token: {}", r.text());
        assert!(!r.text().contains("first draft"), "{path} leaked data");
    }
    let r = anon.get("/?token=not-the-token");
    assert_eq!(r.status, 401, "a wrong token");
    // The printed URL sets the cookie (HttpOnly, SameSite=Strict) and drops the token from
    // the address.
    let r = anon.get(&format!("/?token={}", web.token));
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/"));
    let cookie = r.header("set-cookie").expect("a cookie");
    assert!(
        cookie.contains(&web.token)
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(r.header("referrer-policy"), Some("same-origin"));
    let r = web.http().get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("job"), "{}", r.text());
    // The bearer header works too (Prometheus' `authorization`).
    let bearer = format!("Bearer {}", web.token);
    let r = anon.request("GET", "/metrics", &[("Authorization", &bearer)], b"");
    assert_eq!(r.status, 200);
    // A second start keeps the token.
    drop(web);
    let again = s.serve(&[]);
    assert_eq!(
        fs::read_to_string(&token_file).expect("read").trim(),
        again.token
    );
}

#[test]
fn nothing_outside_a_version_is_served() {
    let s = site();
    let web = s.serve(&[]);
    let http = web.http();
    let v = s.v(3);
    let secret_name = s.secret.display().to_string();
    let refused = |path: &str| {
        let r = http.get(path);
        assert!(
            (400..500).contains(&r.status),
            "{path} answered {}: {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains(SECRET), "{path} served the secret");
        r
    };
    // `..`, raw and encoded; encoded slashes; absolute paths; NUL.
    refused(&format!("/job/job/raw/{v}/../../../outside/secret.txt"));
    refused(&format!(
        "/job/job/raw/{v}/notes/../../../../outside/secret.txt"
    ));
    refused(&format!(
        "/job/job/raw/{v}/%2E%2E/%2E%2E/outside/secret.txt"
    ));
    refused(&format!("/job/job/raw/{v}/notes%2F..%2F..%2Fsecret"));
    refused(&format!("/job/job/raw/{v}/notes%2ftoday.txt"));
    refused(&format!("/job/job/raw/{v}/%2Fetc%2Fpasswd"));
    refused(&format!("/job/job/raw/{v}//etc/passwd"));
    refused(&format!("/job/job/v/{v}//etc/"));
    refused(&format!("/job/job/raw/{v}/notes/today.txt%00"));
    refused(&format!("/job/job/tar/{v}/../.."));
    refused("/job/job/raw/..%2F..%2Foutside/secret.txt");
    refused("/job/../../outside/secret.txt");
    refused(&format!(
        "/job/job/history/..%2F{}",
        secret_name.trim_start_matches('/')
    ));
    // Not a version: the job folder's own files, `.partial`, a made-up name.
    refused("/job/job/raw/index.tsv/x");
    refused("/job/job/v/.partial/");
    refused("/job/job/raw/V9-20261207T000000Z/notes/today.txt");
    // A source link pointing out of the version: shown as a link, never followed.
    refused(&format!("/job/job/raw/{v}/escape/secret.txt"));
    refused(&format!("/job/job/v/{v}/escape/secret.txt"));
    refused(&format!("/job/job/raw/{v}/escape"));
    refused(&format!("/job/job/raw/{v}/notes/up"));
    let r = http.get(&format!("/job/job/v/{v}/escape"));
    assert_eq!(r.status, 200);
    assert!(r.text().contains("never followed"), "{}", r.text());
    assert!(!r.text().contains(SECRET));
    // As a tar, the link is a link entry, nothing below it.
    let r = http.get(&format!("/job/job/tar/{v}/escape"));
    assert_eq!(r.status, 200);
    let listed = tar_list(&r.body);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].starts_with('l') && !r.text().contains(SECRET),
        "{listed:?}"
    );
    // The whole version as a tar holds the link as a link, not what it points to.
    let r = http.get(&format!("/job/job/tar/{v}"));
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(SECRET), "the tar followed a source link");
    let listed = tar_list(&r.body);
    assert!(listed.iter().any(|l| l.contains("escape ->")), "{listed:?}");
    // What is in the version is served.
    let r = http.get(&format!("/job/job/raw/{v}/notes/today.txt"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "final text\nof the day\nwith a second thought\n");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(
        r.header("content-security-policy")
            .is_some_and(|c| c.contains("sandbox")),
        "{:?}",
        r.headers
    );
    // Any name, encoded: spaces, `&`, UTF-8, bytes that are not UTF-8; the folder's page
    // links to them that way.
    let r = http.get(&format!("/job/job/raw/{v}/notes/a%20b%26%C3%BC.txt"));
    assert_eq!((r.status, r.text().as_str()), (200, "odd name\n"));
    let r = http.get(&format!("/job/job/raw/{v}/notes/not-utf8-%FF.bin"));
    assert_eq!((r.status, r.text().as_str()), (200, "bytes\n"));
    let page = http.get(&format!("/job/job/v/{v}/notes/")).text();
    assert!(
        page.contains("/notes/a%20b%26%C3%BC.txt\"") && page.contains("/notes/not-utf8-%FF.bin\""),
        "{page}"
    );
    // A source link is made anew in every version: unchanged, it is not "changed here".
    let root = http.get(&format!("/job/job/v/{v}/")).text();
    let row = root
        .split("<tr>")
        .find(|r| r.contains(">escape<"))
        .expect("the link's row");
    assert!(!row.contains("changed here"), "{row}");
    // Through a vault link (notes/deep is unchanged since V1).
    let r = http.get(&format!("/job/job/raw/{v}/notes/deep/list.txt"));
    assert_eq!((r.status, r.text().as_str()), (200, "milk\neggs\n"));
}

/// `tar tvf -` of a body.
fn tar_list(body: &[u8]) -> Vec<String> {
    let mut c = Command::new("tar")
        .arg("tvf")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tar");
    std::io::Write::write_all(&mut c.stdin.take().expect("stdin"), body).expect("feed tar");
    let o = c.wait_with_output().expect("tar");
    assert!(o.status.success(), "tar tvf failed");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_cross_site_post_is_refused_and_a_same_site_one_restores() {
    let s = site();
    let web = s.serve(&[]);
    let http = web.http();
    let dest = s.f._tmp.path().join("restored");
    let form = format!("version=2&path=notes&dest={}", enc(&dest));
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    for headers in [
        vec![form_type, ("Origin", "http://evil.example")],
        vec![form_type, ("Sec-Fetch-Site", "cross-site")],
        vec![form_type, ("Sec-Fetch-Site", "same-site")],
        vec![form_type, ("Origin", "null")],
    ] {
        let r = http.request("POST", "/job/job/restore", &headers, form.as_bytes());
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
        assert!(!dest.exists(), "{headers:?} restored");
    }
    // Without the token, even from our own origin.
    let origin = web.base.clone();
    let r = web.anonymous().request(
        "POST",
        "/job/job/restore",
        &[form_type, ("Origin", &origin)],
        form.as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert!(!dest.exists());
    // From our own page: restored exactly as reverb-restore restores it.
    let r = http.request(
        "POST",
        "/job/job/restore",
        &[
            form_type,
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        form.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let cli = s.f._tmp.path().join("cli");
    s.f.tool("reverb-restore")
        .args(["--from", "2", "--path", "notes", "--to"])
        .arg(&cli)
        .assert_success();
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    assert_same(
        &capture(&cli, opts),
        &capture(&dest, opts),
        "web restore vs reverb-restore",
    );
    // Never over existing files, never into the vault.
    let before = capture(&dest, opts);
    let r = http.request("POST", "/job/job/restore", &[form_type], form.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    // Said in the form's terms: it has no --overwrite to offer.
    assert!(
        r.text().contains("not empty") && r.text().contains("new or empty directory"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains("--overwrite"), "{}", r.text());
    assert_same(
        &before,
        &capture(&dest, opts),
        "a refused restore changed nothing",
    );
    let into_vault = format!("version=2&path=&dest={}", enc(&s.f.vault.join("job/V99")));
    let r = http.request(
        "POST",
        "/job/job/restore",
        &[form_type],
        into_vault.as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!s.f.vault.join("job/V99").exists());
}

/// Form encoding of a path.
fn enc(p: &Path) -> String {
    p.display()
        .to_string()
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The metric names of docs/web.md (the SPEC's list).
const METRICS: [&str; 9] = [
    "reverberator_job_state",
    "reverberator_last_version_timestamp_seconds",
    "reverberator_versions",
    "reverberator_job_bytes",
    "reverberator_size_limit_bytes",
    "reverberator_pending_changes",
    "reverberator_version_duration_seconds",
    "reverberator_failures_total",
    "reverberator_replica_lag_versions",
];

#[test]
fn metrics_parse_and_have_every_name() {
    let s = site();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let config = s.f._tmp.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "[jobs.job]\nsource = \"{}\"\nvault = \"{}\"\nvault_size_limit = \"1GiB\"\n",
            s.f.src.display(),
            s.f.vault.display()
        ),
    )
    .expect("config");
    let web = WebServer::start(
        &[
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--metrics-listen"),
            OsStr::new(&listen),
        ],
        &s.state,
    );
    let r = web.http().get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.contains("openmetrics-text")),
        "{:?}",
        r.headers
    );
    let text = r.text();
    let samples = parse_exposition(&text);
    // The replica lag appears once replication exists (docs/web.md#metrics).
    for name in METRICS.iter().filter(|n| !n.contains("replica")) {
        assert!(
            text.contains(&format!("# TYPE {}", name.trim_end_matches("_total"))),
            "{name} missing:\n{text}"
        );
    }
    let get = |name: &str, labels: &str| {
        samples
            .get(&format!("{name}{{{labels}}}"))
            .copied()
            .unwrap_or_else(|| panic!("no sample {name}{{{labels}}}:\n{text}"))
    };
    assert_eq!(get("reverberator_versions", "job=\"job\""), 3.0);
    assert_eq!(
        get("reverberator_job_state", "job=\"job\",state=\"stopped\""),
        1.0
    );
    assert_eq!(
        get("reverberator_job_state", "job=\"job\",state=\"failing\""),
        0.0
    );
    assert_eq!(
        get("reverberator_version_duration_seconds_count", "job=\"job\""),
        3.0
    );
    assert_eq!(get("reverberator_failures_total", "job=\"job\""), 0.0);
    let newest = get("reverberator_last_version_timestamp_seconds", "job=\"job\"");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        newest > now - 3600.0 && newest <= now + 1.0,
        "{newest} vs {now}"
    );
    assert!(get("reverberator_job_bytes", "job=\"job\"") > 0.0);
    assert_eq!(
        get("reverberator_size_limit_bytes", "job=\"job\""),
        f64::from(1u32 << 30)
    );
    // On its own address, /metrics needs no token (and serves nothing else).
    let open = reverb_tests::web::Http::at(&format!("http://{listen}"));
    wait_until(Duration::from_secs(30), "the metrics listener", || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    let r = open.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("reverberator_versions"));
    assert_eq!(open.get("/").status, 404);
    assert_eq!(open.get("/job/job").status, 404);
}

/// The dashboard's row of job `job` (its `<tr>`), from the page or the live fragment.
fn job_row<'a>(html: &'a str, job: &str) -> &'a str {
    let start = html
        .find(&format!("<a href=\"/job/{job}\">{job}</a>"))
        .unwrap_or_else(|| panic!("no row for {job}:\n{html}"));
    let end = html[start..]
        .find("</tr>")
        .map_or(html.len(), |e| start + e);
    &html[start..end]
}

/// The dashboard's "Replicas" cell and `/metrics`' `reverberator_replica_lag_versions`
/// against real replications to a real local replica: up to date after replicating, one
/// behind after one more version, up to date again after the next replication; a
/// destination that failed shows how far behind it is and why. The oracle is the replica
/// vault itself: the version directories in its job folder.
#[test]
fn the_dashboard_and_metrics_show_each_replicas_lag() {
    let s = site();
    let replica = s.f._tmp.path().join("replica");
    let to = replica.to_str().expect("utf-8").to_owned();
    // A destination that is not a vault (no `--init`): every replication to it fails.
    let away = s.f._tmp.path().join("away");
    let away_to = away.to_str().expect("utf-8").to_owned();
    reverb_tests::replica::replicate_ok(&s.f, &to, &["--init"]);
    let failed = reverb_tests::replica::replicate(&s.f, &away_to, &[]).output();
    assert!(
        !failed.status.success(),
        "replicating to a non-vault failed"
    );
    let on_replica = |vault: &Path| {
        let mut dirs: Vec<String> = fs::read_dir(vault.join(&s.f.job))
            .expect("the replica's job folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('V') && n.contains('-'))
            .collect();
        dirs.sort_by_key(|d| d[1..d.find('-').unwrap_or(1)].parse::<u64>().unwrap_or(0));
        dirs
    };
    assert_eq!(
        on_replica(&replica),
        s.versions,
        "the replica holds every version"
    );
    let web = s.serve(&[]);
    let lag = |dest: &str| {
        let text = web.http().get("/metrics").text();
        parse_exposition(&text)
            .get(&format!(
                "reverberator_replica_lag_versions{{job=\"job\",replica=\"{dest}\"}}"
            ))
            .copied()
            .unwrap_or_else(|| panic!("no lag sample for {dest}:\n{text}"))
    };
    let cell = |path: &str| {
        let r = web.http().get(path);
        assert_eq!(r.status, 200, "{}", r.text());
        job_row(&r.text(), "job").to_owned()
    };
    let up_to_date = format!("<div>{to}: up to date");
    let one_behind = format!("<div>{to}: 1 behind");
    let away_behind = |n: usize| format!("<div>{away_to}: {n} behind");
    // Replicated: lag 0 on both the page and its live fragment.
    assert_eq!(lag(&to), 0.0);
    assert_eq!(lag(&away_to), 3.0);
    for path in ["/", "/fragment/jobs"] {
        let row = cell(path);
        assert!(row.contains(&up_to_date), "{path}: {row}");
        // With the reason of its last failure, naming the destination.
        let why = format!("{}<br><span class=\"why muted\">", away_behind(3));
        assert!(row.contains(&why), "{path}: {row}");
        assert!(row.contains("reverberator-vault.toml"), "{path}: {row}");
    }
    // One more version, not yet replicated: 1 behind.
    fs::write(s.f.src.join("notes/later.txt"), "written after\n").expect("write");
    let v4 = s.f.rescan();
    assert!(!v4.is_empty(), "a fourth version");
    assert_eq!(
        on_replica(&replica),
        s.versions,
        "the replica has not got it"
    );
    assert_eq!(lag(&to), 1.0);
    assert_eq!(lag(&away_to), 4.0);
    for path in ["/", "/fragment/jobs"] {
        let row = cell(path);
        assert!(row.contains(&one_behind), "{path}: {row}");
        assert!(!row.contains(&up_to_date), "{path}: {row}");
        assert!(row.contains(&away_behind(4)), "{path}: {row}");
    }
    // Replicated again: up to date, and the replica holds it.
    reverb_tests::replica::replicate_ok(&s.f, &to, &[]);
    assert_eq!(on_replica(&replica).last(), Some(&v4));
    assert_eq!(lag(&to), 0.0);
    assert!(cell("/").contains(&up_to_date));
    drop(web);
    // Served on the replica's side, the job says it is a replica, not that nobody watches it.
    let state = s.f._tmp.path().join("replica-web-state");
    fs::create_dir_all(&state).expect("state dir");
    let on_replica_web = WebServer::start(&[OsStr::new("--vault"), replica.as_os_str()], &state);
    let r = on_replica_web.http().get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    let row = job_row(&r.text(), "job").to_owned();
    assert!(row.contains("a replica: its source"), "{row}");
    assert!(!row.contains("no supervisor is watching it"), "{row}");
}

/// `name{labels} value` lines of a text exposition, checked line by line.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            assert!(
                line.is_empty()
                    || line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line == "# EOF",
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
        // Buckets carry `le` first; key them by their other labels after it.
        out.insert(series.to_owned(), value);
    }
    assert!(text.trim_end().ends_with("# EOF"), "no EOF marker");
    out
}

// ---- A real browser ----

/// Where the screenshots go: `target/web-screenshots/`.
fn screenshots() -> PathBuf {
    let dir = reverb_tests::bin_dir()
        .parent()
        .expect("target/")
        .join("web-screenshots");
    fs::create_dir_all(&dir).expect("mkdir screenshots");
    dir
}

/// Sorted `type path [target|b3sum]` lines of a tree, b3sum computed by the `b3sum` program.
fn tree_sums(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let abs = root.join(&rel);
        let meta = fs::symlink_metadata(&abs).expect("lstat");
        let line = if meta.is_dir() {
            for e in fs::read_dir(&abs).expect("list") {
                todo.push(rel.join(e.expect("entry").file_name()));
            }
            format!("dir {}", rel.display())
        } else if meta.file_type().is_symlink() {
            format!(
                "link {} {}",
                rel.display(),
                fs::read_link(&abs).expect("readlink").display()
            )
        } else {
            let o = Command::new("b3sum")
                .arg("--no-names")
                .arg(&abs)
                .output()
                .expect("b3sum");
            format!(
                "file {} {}",
                rel.display(),
                String::from_utf8_lossy(&o.stdout).trim()
            )
        };
        out.push(line);
    }
    out.sort();
    out
}

#[test]
fn a_person_finds_and_restores_yesterdays_file_in_a_real_browser() {
    if chromium().is_none() {
        reverb_tests::skip!(
            "chromium is not installed (Debian: apt-get install chromium chromium-driver)"
        );
    }
    if let Some(missing) = missing_programs(&["chromedriver", "b3sum", "tar"]) {
        reverb_tests::skip!("{missing} not installed: the browser test needs them");
    }
    let s = site();
    let restores = s.f._tmp.path().join("restores");
    let web = s.serve(&[OsStr::new("--restore-to"), restores.as_os_str()]);
    let shots = screenshots();
    let downloads = s.f._tmp.path().join("downloads");
    fs::create_dir(&downloads).expect("mkdir");
    let b = Browser::start(&downloads);
    let shot = |name: &str| b.screenshot(&shots.join(name));

    // 1. The printed URL opens the dashboard (the token moves into the cookie).
    b.goto(&web.url);
    let row = b.find("#jobs tr");
    assert!(b.text(&row).contains("job"), "{}", b.text(&row));
    assert!(
        !b.url().contains("token="),
        "the token stays in the address: {}",
        b.url()
    );
    assert!(b.source().contains("stopped"), "the job's state");
    shot("01-dashboard.png");
    // The live update replaces the rows without a reload.
    b.script("document.getElementById('jobs').setAttribute('data-probe','1'); document.getElementById('jobs').innerHTML='';");
    wait_until(
        Duration::from_secs(30),
        "the dashboard's live update",
        || !b.find_all("#jobs tr").is_empty(),
    );
    assert!(
        b.source().contains("data-probe"),
        "updated in place, not reloaded"
    );

    // 2. Follow the job to its timeline.
    b.click(&b.find("#jobs a[href='/job/job']"));
    b.find("svg.timeline");
    assert!(b.find_all("svg.timeline circle").len() >= 3);
    assert!(b.source().contains("kept: "), "retention shown");
    shot("02-timeline.png");

    // 3. Open V2 (yesterday's, say) from the versions table.
    let v2 = s.v(2).to_owned();
    b.click(&b.find(&format!("table a[href='/job/job/v/{v2}/']")));
    b.find("a[href$='/notes']");
    shot("03-browse-version.png");
    b.click(&b.find("a[href$='/notes']"));
    b.click(&b.find("a[href$='/notes/today.txt']"));
    let pre = b.find("pre.preview");
    assert!(
        b.text(&pre).contains("with a second thought"),
        "{}",
        b.text(&pre)
    );
    shot("04-file-preview.png");

    // 4. The file's history, and the diff between two versions.
    b.click(&b.find("a[href='/job/job/history/notes/today.txt']"));
    b.find("form.row select[name=a]");
    assert_eq!(b.find_all("table tbody tr").len(), 3, "three changes");
    shot("05-history.png");
    b.click(&b.find("form.row button[type=submit]"));
    let diff = b.find("div.diff");
    let shown = b.text(&diff);
    assert!(
        shown.contains("- first draft") && shown.contains("+ final text"),
        "{shown}"
    );
    shot("06-diff.png");

    // 5. Find a deleted file.
    b.goto(&format!("{}/job/job/find?pattern=old.txt", web.base));
    let found = b.find("table tbody tr");
    assert!(b.text(&found).contains("deleted"), "{}", b.text(&found));
    shot("07-find.png");

    // 6. Download a folder as .tar and compare it with reverb-restore's copy.
    b.goto(&format!("{}/job/job/v/{v2}/notes", web.base));
    b.click(&b.find(&format!("a[href$='/tar/{v2}/notes']")));
    let tar = downloads.join("notes.tar");
    wait_until(Duration::from_secs(60), "the .tar download", || {
        tar.is_file()
    });
    let unpacked = s.f._tmp.path().join("unpacked");
    fs::create_dir(&unpacked).expect("mkdir");
    reverb_tests::TestCommand::program("tar")
        .arg("xf")
        .arg(&tar)
        .arg("-C")
        .arg(&unpacked)
        .assert_success();
    let cli = s.f._tmp.path().join("cli-notes");
    s.f.tool("reverb-restore")
        .args(["--from", "2", "--path", "notes", "--to"])
        .arg(&cli)
        .assert_success();
    assert_eq!(
        tree_sums(&unpacked.join("notes")),
        tree_sums(&cli),
        "the .tar vs reverb-restore"
    );

    // 7. Restore V1 through the form, into the directory it suggests (one click), and
    //    compare with reverb-restore.
    b.goto(&format!("{}/job/job/v/{}/", web.base, s.v(1)));
    b.click(&b.find("a[href^='/job/job/restore?version=']"));
    let dest = restores.join("job-V1");
    let suggested = b.script("return document.querySelector('input[name=dest]').value;");
    assert_eq!(
        suggested,
        serde_json::Value::String(dest.display().to_string())
    );
    shot("08-restore-form.png");
    b.click(&b.find("button#restore"));
    let done = b.find("#restored");
    assert!(b.text(&done).contains("Restored"), "{}", b.text(&done));
    shot("09-restored.png");
    let cli = s.f.restore("1");
    let opts = CaptureOpts {
        owners: true,
        dir_mtimes: true,
    };
    assert_same(
        &capture(&cli, opts),
        &capture(&dest, opts),
        "browser restore vs reverb-restore",
    );
    assert_eq!(tree_sums(&cli), tree_sums(&dest));

    // 8. Restoring again into the same (now non-empty) directory is refused.
    b.goto(&format!("{}/job/job/restore?version=1", web.base));
    b.type_into(&b.find("input[name=dest]"), &dest.display().to_string());
    b.click(&b.find("button#restore"));
    let refused = b.find("#refused");
    assert!(
        b.text(&refused).contains("not empty"),
        "{}",
        b.text(&refused)
    );

    // 9. At a phone's width the dashboard still shows the job and its state.
    b.resize(390, 844);
    b.goto(&format!("{}/", web.base));
    let row = b.find("#jobs tr");
    assert!(b.text(&row).contains("stopped"));
    let overflow =
        b.script("return document.documentElement.scrollWidth <= window.innerWidth + 1;");
    assert_eq!(
        overflow,
        serde_json::Value::Bool(true),
        "no sideways scrolling at 390 px"
    );
    shot("10-dashboard-phone.png");
}

#[test]
fn the_cli_refuses_a_bad_listen_address() {
    let o = reverb_tests::cmd("reverb-web")
        .args(["--vault", "/nonexistent-vault", "--listen", "localhost"])
        .assert_exit(2);
    let err = reverb_tests::stderr(&o);
    assert!(err.contains("--listen localhost"), "{err}");
}

#[test]
fn a_unix_socket_is_private_and_needs_no_token() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::fs::FileTypeExt;
    let s = site();
    let sock = s.f._tmp.path().join("web.sock");
    let listen = format!("unix:{}", sock.display());
    let mut child = Command::new(reverb_tests::bin("reverb-web"))
        .args(["--vault"])
        .arg(&s.f.vault)
        .args(["--listen", &listen, "--print-url"])
        .env("STATE_DIRECTORY", &s.state)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("reverb-web");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the socket's address");
    assert_eq!(line.trim(), listen);
    let meta = fs::symlink_metadata(&sock).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "only its user connects"
    );
    assert!(
        !s.state.join("web-token").exists(),
        "no token made for a socket"
    );
    let mut c = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut reply = String::new();
    c.read_to_string(&mut reply).expect("read");
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("href=\"/job/job\""), "{reply}");
}
