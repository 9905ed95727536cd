//! `reverb-blocklog BACKING MOUNTDIR LOG`: a FUSE file system of one file, `MOUNTDIR/image`,
//! that serves the block image BACKING and logs every write to it and every fsync of it.
//!
//! The power-loss test (`tests/tests/integration/powerloss.rs`) attaches `image` to a loop
//! device and puts the vault's file system on it. The loop device turns the file system's
//! cache flushes (and FUA writes, which it does not support natively) into fsyncs of
//! `image`, so the log is the device's write stream with its barriers: replaying it up to a
//! barrier gives exactly what a disk that honours flushes holds after a power cut there.
//!
//! Invariants: requests are served one at a time in arrival order (one session thread), so
//! the log's order is the order in which the kernel saw each write done; no write-back cache
//! is asked for, so every write reaches this process before the loop device completes it.
//!
//! Log records, little-endian: `W` offset:u64 len:u32 data[len] — a write; `F` — a barrier
//! (fsync or fdatasync). The log is flushed at every barrier and on exit.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyWrite, Request,
};

const ROOT: u64 = 1;
const IMAGE: u64 = 2;
const TTL: Duration = Duration::from_secs(3600);

struct BlockLog {
    backing: File,
    size: u64,
    log: BufWriter<File>,
    failed: bool,
}

impl BlockLog {
    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size, nlink) = if ino == ROOT {
            (FileType::Directory, 0o755, 0, 2)
        } else {
            (FileType::RegularFile, 0o600, self.size, 1)
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn record(&mut self, bytes: &[&[u8]]) {
        for b in bytes {
            if self.log.write_all(b).is_err() {
                self.failed = true;
            }
        }
    }
}

impl Filesystem for BlockLog {
    fn destroy(&mut self) {
        if self.log.flush().is_err() || self.failed {
            FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == "image" {
            reply.entry(&TTL, &self.attr(IMAGE), 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match ino {
            ROOT | IMAGE => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(libc::ENOENT),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (IMAGE, FileType::RegularFile, "image"),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, i as i64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        let offset = offset as u64;
        let len = (size as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        match self.backing.read_exact_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(e) => reply.error(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        let offset = offset as u64;
        if offset + data.len() as u64 > self.size {
            return reply.error(libc::ENOSPC);
        }
        if let Err(e) = self.backing.write_all_at(data, offset) {
            return reply.error(e.raw_os_error().unwrap_or(libc::EIO));
        }
        let len = data.len() as u32;
        self.record(&[b"W", &offset.to_le_bytes(), &len.to_le_bytes(), data]);
        reply.written(len);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        // close(2), not a cache flush.
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _data: bool, reply: ReplyEmpty) {
        self.record(&[b"F"]);
        if self.log.flush().is_err() || self.failed {
            return reply.error(libc::EIO);
        }
        reply.ok();
    }
}

/// Set when a log record could not be written: the log is then worthless.
static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [backing, mountdir, log] = &args[..] else {
        eprintln!("usage: reverb-blocklog BACKING MOUNTDIR LOG");
        std::process::exit(2);
    };
    let run = || -> std::io::Result<()> {
        let backing = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(backing)?;
        let size = backing.metadata()?.len();
        let log = BufWriter::with_capacity(1 << 20, File::create(log)?);
        let fs = BlockLog {
            backing,
            size,
            log,
            failed: false,
        };
        let options = [MountOption::FSName("reverb-blocklog".into())];
        fuser::Session::new(fs, mountdir, &options)?.run()
    };
    if let Err(e) = run() {
        eprintln!("reverb-blocklog: {e}");
        std::process::exit(1);
    }
    if FAILED.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("reverb-blocklog: the log could not be written");
        std::process::exit(1);
    }
}
