//! A folder of a version (or a file) as a streamed `.tar`: the version read as it promises
//! (vault links followed by the library's walker), written to the response as it is read,
//! in chunks, so a large folder needs no memory or temporary file.
//!
//! Invariants: every entry's name is its path below the folder, under one top directory
//! named after the folder (the job and version for a whole version); a source link is a
//! symlink entry with its text, never followed; a file's data is read through
//! [`browse::open_in`] (nothing on its path may be a symlink); FIFOs, sockets and devices
//! are left out (`reverb-restore` recreates them; a download cannot). A client that goes
//! away stops the walk at its next write.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use reverb_common::JobDir;
use reverb_common::browse;
use reverb_common::tree::{Links, Lookalikes, Node, Visitor, Walk};
use tokio::sync::mpsc;

/// The chunk size sent to the client.
const CHUNK: usize = 64 << 10;

/// A writer that hands full chunks to the response body.
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A response body fed by `produce` on a blocking thread through a [`ChannelWriter`]; an
/// error after the first bytes cuts the stream short (the client sees a truncated
/// download, never a wrong one).
pub fn streamed(
    produce: impl FnOnce(&mut ChannelWriter) -> io::Result<()> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        match produce(&mut w).and_then(|()| w.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => eprintln!("reverb-web: a download stopped: {e}"),
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, io::Error>(b), rx))
    });
    Body::from_stream(stream)
}

/// Writes `rel` (physically in version `phys`, as [`browse::locate`] found it) as a tar
/// under the top directory `top`.
pub fn write_tar(
    dir: &JobDir,
    phys: &str,
    rel: &Path,
    top: &Path,
    out: &mut ChannelWriter,
) -> io::Result<()> {
    let lookalikes = Lookalikes::load(&dir.path).map_err(io::Error::other)?;
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut v = TarVisitor {
        dir,
        from: rel.to_path_buf(),
        top: top.to_path_buf(),
        tar: &mut b,
    };
    Walk::new(&dir.path, &lookalikes, Links::Follow)
        .sorted()
        .run(phys, rel, &mut v)
        .map_err(io::Error::other)?;
    b.finish()
}

struct TarVisitor<'a, 'w> {
    dir: &'a JobDir,
    from: PathBuf,
    top: PathBuf,
    tar: &'a mut tar::Builder<&'w mut ChannelWriter>,
}

impl TarVisitor<'_, '_> {
    fn name(&self, rel: &Path) -> PathBuf {
        match rel.strip_prefix(&self.from) {
            Ok(below) if !below.as_os_str().is_empty() => self.top.join(below),
            _ => self.top.clone(),
        }
    }

    fn entry(&mut self, node: &mut Node) -> io::Result<()> {
        let meta = node.metadata().map_err(io::Error::other)?.clone();
        let name = self.name(&node.rel);
        let mut h = tar::Header::new_gnu();
        h.set_mode(meta.mode() & 0o7777);
        h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        let ft = meta.file_type();
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            self.tar.append_data(&mut h, &name, io::empty())
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&node.abs)?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            self.tar.append_link(&mut h, &name, &target)
        } else if ft.is_file() {
            let file =
                browse::open_in(self.dir, &node.phys, &node.rel).map_err(io::Error::other)?;
            let len = file.metadata()?.len();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(len);
            // Exactly `len` bytes: a file that changed size under us cannot shift the stream.
            self.tar
                .append_data(&mut h, &name, io::Read::take(file, len))
        } else {
            Ok(())
        }
    }
}

impl Visitor for TarVisitor<'_, '_> {
    fn entry(&mut self, node: &mut Node) -> reverb_common::Result<()> {
        TarVisitor::entry(self, node).map_err(|e| reverb_common::Error::Io {
            what: "cannot send",
            path: node.abs.clone(),
            source: e,
        })
    }
}
