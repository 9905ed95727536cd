//! Measures of `reverb-web` (docs/web.md), run once the job holds its many versions: the
//! page of the largest folder of the newest version (target: under 100 ms for a 100,000-file
//! version) against `ls -l` of the same folder, and the history page of a file over every
//! retained version (target: under a second for 100 versions) against `reverberator
//! history`. Rows only: no test asserts a time.
//!
//! The server is started once (`--listen 127.0.0.1:0 --print-url`, its token in a scratch
//! state directory) and asked over plain HTTP/1.1 with the bearer token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{Bench, JOB, secs};
use crate::report::{Row, Unit};

/// A running `reverb-web`, killed on drop.
struct Server {
    child: Child,
    addr: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(b: &Bench) -> Result<Server> {
        let mut child = b
            .tools
            .ours("reverb-web")
            .arg("--vault")
            .arg(&b.vault)
            .args(["--listen", "127.0.0.1:0", "--print-url"])
            .env("STATE_DIRECTORY", b.scratch.join("web-state"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start reverb-web")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let Some((base, token)) = line.trim().split_once("/?token=") else {
            bail!("reverb-web printed no URL: {line:?}");
        };
        Ok(Server {
            addr: base.trim_start_matches("http://").to_owned(),
            token: token.to_owned(),
            child,
        })
    }

    /// `GET path`; the seconds until the whole reply was read. Fails unless it is a 200.
    fn get(&self, path: &str) -> Result<f64> {
        let t = Instant::now();
        let mut s = TcpStream::connect(&self.addr)?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.addr, self.token
        )?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        let took = t.elapsed().as_secs_f64();
        if !reply.starts_with(b"HTTP/1.1 200") {
            bail!(
                "GET {path}: {}",
                String::from_utf8_lossy(&reply[..reply.len().min(200)])
            );
        }
        Ok(took)
    }
}

/// The source folder with the most entries, relative to the root.
fn largest_folder(root: &Path) -> Result<PathBuf> {
    let (mut best, mut most) = (PathBuf::new(), 0usize);
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let mut n = 0;
        for e in std::fs::read_dir(root.join(&rel))? {
            let e = e?;
            n += 1;
            if e.file_type()?.is_dir() {
                todo.push(rel.join(e.file_name()));
            }
        }
        if n > most {
            (best, most) = (rel, n);
        }
    }
    Ok(best)
}

/// A path as URL segments (the bench's names are plain ASCII; others are encoded).
fn url_path(rel: &Path) -> String {
    let mut out = String::new();
    for b in rel.as_os_str().as_encoded_bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(*b as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Both rows.
pub fn pages(b: &mut Bench) -> Result<()> {
    if !b.tools.bin_dir.join("reverb-web").is_file() {
        // Not one of the programs the bench requires: build it to measure its pages.
        eprintln!(
            "reverb-web pages: skipped (no reverb-web in {})",
            b.tools.bin_dir.display()
        );
        return Ok(());
    }
    let versions = b.versions_on_disk()?;
    let Some(newest) = versions
        .last()
        .and_then(|v| v.file_name())
        .map(|n| n.to_string_lossy().into_owned())
    else {
        bail!("no version to browse");
    };
    let server = Server::start(b)?;
    let folder = largest_folder(&b.tree.root)?;
    let entries = std::fs::read_dir(b.tree.root.join(&folder))?.count();
    let page = format!("/job/{JOB}/v/{newest}/{}", url_path(&folder));
    let listed = b.job_dir().join(&newest).join(&folder);
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..b.reps {
        b.cache.prepare()?;
        ours.push(server.get(&page)?);
        b.cache.prepare()?;
        let t = Instant::now();
        let ok = Command::new("ls")
            .args(["-l", "--color=never"])
            .arg(&listed)
            .stdout(Stdio::null())
            .status()?;
        peer.push(secs(t.elapsed()));
        if !ok.success() {
            bail!("ls -l {} failed", listed.display());
        }
    }
    b.push(
        Row::new(
            "web: folder page of the newest version",
            Unit::Seconds,
            ours,
            "ls -l",
            Ok(peer),
            None,
        )
        .note(format!(
            "{entries} entries in the folder; target under 0.1 s for a 100,000-file version"
        )),
    );
    let Some(file) = b.tree.small.first().cloned() else {
        bail!("no file for the history");
    };
    let page = format!("/job/{JOB}/history/{}", url_path(&file));
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..b.reps {
        b.cache.prepare()?;
        ours.push(server.get(&page)?);
        b.cache.prepare()?;
        let t = Instant::now();
        let ok = b
            .tools
            .ours("reverberator")
            .args(["history", JOB])
            .arg(&file)
            .arg("--vault")
            .arg(&b.vault)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        peer.push(secs(t.elapsed()));
        if !ok.success() {
            bail!("reverberator history {} failed", file.display());
        }
    }
    b.push(
        Row::new(
            "web: history page of a file",
            Unit::Seconds,
            ours,
            "reverberator history",
            Ok(peer),
            None,
        )
        .note(format!(
            "over {} versions; target under 1 s for 100",
            versions.len()
        )),
    );
    Ok(())
}
