//! The server: its listeners (TCP or a Unix socket, and `/metrics` alone on its own
//! address), the guard every request passes, and how errors become pages.
//!
//! Invariants (docs/web.md#threat-model):
//! - On TCP, every request carries the token: in the cookie (`HttpOnly; SameSite=Strict`)
//!   set when the printed URL (`/?token=…`) is opened, or as `Authorization: Bearer`.
//!   Without it: 401, and nothing of the vault is read.
//! - A request that changes something (any method but GET and HEAD) must come from our own
//!   pages: a `Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin` other than
//!   our own, is refused (403) before the handler runs.
//! - A raw path holding an encoded `/`, `\` or NUL (`%2F`, `%5C`, `%00`) is refused: a
//!   path name never hides a separator.
//! - Every response says `no-store`, `nosniff`, no framing, no referrer to other sites
//!   (the token of the first URL must not leak), and a CSP that allows only our own script.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use maud::html;
use reverb_common::exit::EXIT_OK;

use crate::{Args, pages, render, token};

/// The cookie that keeps the token.
pub const COOKIE: &str = "reverb_web_token";

/// What every handler reads: where the jobs come from.
#[derive(Debug)]
pub struct App {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--vault`.
    pub vault: Option<PathBuf>,
    /// `--restore-to`: where the restore form suggests new directories.
    pub restore_to: PathBuf,
}

/// What the guard checks.
#[derive(Debug, Clone)]
struct Guard {
    /// The token; None: no token needed (a Unix socket, protected by its mode).
    token: Option<Arc<str>>,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket.
    Unix(PathBuf),
}

impl Listen {
    /// `ADDR:PORT` or `unix:PATH`.
    pub fn parse(text: &str) -> anyhow::Result<Listen> {
        if let Some(p) = text.strip_prefix("unix:") {
            let path = PathBuf::from(p);
            anyhow::ensure!(
                path.is_absolute(),
                "--listen {text}: the socket path must be absolute"
            );
            return Ok(Listen::Unix(path));
        }
        text.parse().map(Listen::Tcp).map_err(|_| {
            anyhow::Error::new(reverb_common::Error::Usage(format!(
                "--listen {text}: expected ADDR:PORT (like 127.0.0.1:8417) or unix:PATH"
            )))
        })
    }
}

/// The program: reads the jobs once (a bad configuration stops it at once), then serves
/// until SIGTERM or SIGINT.
pub fn run(args: &Args) -> anyhow::Result<i32> {
    let listen = Listen::parse(&args.listen)?;
    let metrics_listen = match &args.metrics_listen {
        Some(m) => match Listen::parse(m)? {
            Listen::Tcp(a) => Some(a),
            Listen::Unix(_) => anyhow::bail!("--metrics-listen takes ADDR:PORT"),
        },
        None => None,
    };
    let restore_to = match &args.restore_to {
        Some(d) => d.clone(),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join("reverberator-restores"),
    };
    let app = Arc::new(App {
        config: args.config.clone(),
        vault: args.vault.clone(),
        restore_to,
    });
    let jobs = reverb_common::browse::jobs(app.config.as_deref(), app.vault.as_deref())?;
    let token: Option<Arc<str>> = match &listen {
        Listen::Tcp(_) => {
            let dir = token::state_dir()?;
            Some(token::load_or_create(&dir)?.into())
        }
        Listen::Unix(_) => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(serve(
        app,
        listen,
        metrics_listen,
        token,
        args.print_url,
        jobs.len(),
    ))?;
    Ok(EXIT_OK)
}

async fn serve(
    app: Arc<App>,
    listen: Listen,
    metrics_listen: Option<SocketAddr>,
    token: Option<Arc<str>>,
    print_url: bool,
    jobs: usize,
) -> anyhow::Result<()> {
    let guard = Guard { token };
    let router = pages::router()
        .layer(middleware::from_fn_with_state(guard.clone(), guarded))
        .with_state(Arc::clone(&app));
    if let Some(addr) = metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?;
        let open = Router::new()
            .route("/metrics", axum::routing::get(pages::metrics))
            .layer(middleware::from_fn(headers_only))
            .with_state(Arc::clone(&app));
        eprintln!(
            "reverb-web: /metrics without the token on http://{}/metrics",
            l.local_addr()?
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, open)
                .with_graceful_shutdown(shutdown())
                .await
            {
                eprintln!("reverb-web: the metrics listener stopped: {e}");
            }
        });
    }
    match listen {
        Listen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let local = l.local_addr()?;
            let host = match local {
                SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
                SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
                other => other.to_string(),
            };
            let token = guard.token.as_deref().unwrap_or_default();
            eprintln!(
                "reverb-web: {jobs} job{} on http://{host}/ (open the URL with the token: reverb-web --print-url prints it)",
                if jobs == 1 { "" } else { "s" }
            );
            if print_url {
                println!("http://{host}/?token={token}");
            }
            axum::serve(l, router)
                .with_graceful_shutdown(shutdown())
                .await
                .context("the server stopped")?;
        }
        Listen::Unix(path) => {
            if std::fs::symlink_metadata(&path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot replace {}", path.display()))?;
            }
            // Created 0600: only our user may connect (the token is not asked for there).
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            let bound = tokio::net::UnixListener::bind(&path);
            nix::sys::stat::umask(old);
            let l = bound.with_context(|| format!("cannot listen on {}", path.display()))?;
            eprintln!("reverb-web: {jobs} jobs on unix:{}", path.display());
            if print_url {
                println!("unix:{}", path.display());
            }
            axum::serve(l, router)
                .with_graceful_shutdown(shutdown())
                .await
                .context("the server stopped")?;
        }
    }
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The guard of docs/web.md: raw path, token, cross-site requests; then the headers.
async fn guarded(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let raw = req.uri().path().to_ascii_lowercase();
    if ["%2f", "%5c", "%00"].iter().any(|bad| raw.contains(bad)) {
        return with_headers(
            WebError::new(
                StatusCode::BAD_REQUEST,
                "an encoded `/`, `\\` or NUL in a path is refused",
            )
            .into_response(),
        );
    }
    if let Some(token) = &g.token {
        if let Some(given) = query_token(req.uri().query()) {
            if !token::same(&given, token) {
                return with_headers(unauthorized());
            }
            // Keep the token in the cookie and take it out of the address bar.
            let rest = other_query(req.uri().query());
            let to = format!("{}{rest}", req.uri().path());
            let mut resp =
                (StatusCode::SEE_OTHER, [(header::LOCATION, to)], "signed in").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
            )) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            return with_headers(resp);
        }
        if !has_token(req.headers(), token) {
            return with_headers(unauthorized());
        }
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) && cross_site(req.headers()) {
        return with_headers(
            WebError::new(
                StatusCode::FORBIDDEN,
                "a request from another site is refused: use the form of this interface",
            )
            .into_response(),
        );
    }
    with_headers(next.run(req).await)
}

/// The headers alone (the metrics listener, which needs no token).
async fn headers_only(req: Request, next: Next) -> Response {
    with_headers(next.run(req).await)
}

fn with_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        if !h.contains_key(&k) {
            h.insert(k, HeaderValue::from_static(v));
        }
    };
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    resp
}

fn unauthorized() -> Response {
    WebError::new(
        StatusCode::UNAUTHORIZED,
        "this page needs the token: open the URL that `reverb-web --print-url` prints (it sets a cookie), or send `Authorization: Bearer TOKEN`",
    )
    .into_response()
}

/// The `token` query parameter.
fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

/// The query without its `token` parameter, with its `?` (or empty).
fn other_query(query: Option<&str>) -> String {
    let rest: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("token="))
        .collect();
    if rest.is_empty() {
        String::new()
    } else {
        format!("?{}", rest.join("&"))
    }
}

/// The token in the cookie or the bearer header.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|v| token::same(v, token));
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|v| token::same(v.trim(), token));
    cookie || bearer
}

/// A request that comes from another site (or cannot say where it comes from while a
/// browser would have said).
fn cross_site(headers: &HeaderMap) -> bool {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    // A browser that says where a request comes from is believed (it also sends
    // `Origin: null` for its own forms under some referrer policies); otherwise the
    // origin, when there is one, must be ours.
    if let Some(site) = get("sec-fetch-site") {
        return site != "same-origin" && site != "none";
    }
    if let Some(origin) = get("origin") {
        let host = get("host").unwrap_or("");
        return !(origin == format!("http://{host}") || origin == format!("https://{host}"));
    }
    false
}

/// An error page with its status.
#[derive(Debug)]
pub struct WebError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
}

impl WebError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> WebError {
        WebError {
            status,
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> WebError {
        WebError::new(StatusCode::NOT_FOUND, what)
    }

    /// 400.
    pub fn bad(what: impl Into<String>) -> WebError {
        WebError::new(StatusCode::BAD_REQUEST, what)
    }
}

impl From<reverb_common::Error> for WebError {
    fn from(e: reverb_common::Error) -> WebError {
        use reverb_common::Error as E;
        let status = match &e {
            E::Refused(_) => StatusCode::FORBIDDEN,
            E::Usage(_) | E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                StatusCode::NOT_FOUND
            }
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        WebError::new(status, e.to_string())
    }
}

impl From<anyhow::Error> for WebError {
    fn from(e: anyhow::Error) -> WebError {
        match e.downcast::<reverb_common::Error>() {
            Ok(e) => e.into(),
            Err(e) => WebError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let title = match self.status.canonical_reason() {
            Some(r) => format!("{} {r}", self.status.as_u16()),
            None => self.status.as_u16().to_string(),
        };
        let body = render::page(
            &title,
            html! { div.box.err { (self.message) } p { a href="/" { "Back to the dashboard" } } },
        );
        (self.status, body).into_response()
    }
}

/// Runs blocking vault work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WebError> + Send + 'static,
) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WebError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            Listen::parse("127.0.0.1:8417").expect("tcp"),
            Listen::Tcp("127.0.0.1:8417".parse().expect("addr"))
        );
        assert_eq!(
            Listen::parse("unix:/run/r.sock").expect("unix"),
            Listen::Unix("/run/r.sock".into())
        );
        assert!(Listen::parse("unix:rel.sock").is_err());
        assert!(Listen::parse("localhost").is_err());
    }

    #[test]
    fn cross_site_requests() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(!cross_site(&h(&[("host", "127.0.0.1:1")])));
        assert!(!cross_site(&h(&[
            ("host", "127.0.0.1:1"),
            ("origin", "http://127.0.0.1:1"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(cross_site(&h(&[
            ("host", "127.0.0.1:1"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(cross_site(&h(&[
            ("host", "127.0.0.1:1"),
            ("origin", "http://evil.example")
        ])));
        assert!(cross_site(&h(&[
            ("host", "127.0.0.1:1"),
            ("origin", "null")
        ])));
    }

    #[test]
    fn token_out_of_the_query() {
        assert_eq!(query_token(Some("a=1&token=xyz")).as_deref(), Some("xyz"));
        assert_eq!(other_query(Some("a=1&token=xyz&b=2")), "?a=1&b=2");
        assert_eq!(other_query(Some("token=xyz")), "");
    }
}
