//! Verifying a job's data against its checksums (docs/format.md#checksums, `reverb-index
//! --check --data`, `reverberator verify --data`), and backfilling the records of a vault
//! made before checksums existed (`reverb-index --recount --checksums`).
//!
//! Owns: the data problems ([`DataKind`]), the read of every regular file every retained
//! version physically holds (each stored file read once: a vault link is never followed,
//! its data is read where it lives), the comparison with the records, the rate limit
//! ([`Throttle`]) and [`backfill`].
//!
//! Invariants: [`verify`] never writes anything and never panics on a damaged vault: a
//! damaged checksums file is one problem naming its line; [`backfill`] only adds records,
//! never replaces one (a record is the content as it was stored, which a later read cannot
//! know). While a `retiring` mark exists, a record whose file is not real in its version is
//! not a problem: retirement writes the next version's records before it moves the data.

use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Result, show};
use crate::format::checksums::{self, Record, Table};
use crate::format::index::{self, IndexRow};
use crate::format::jobfile::JobFile;
use crate::format::journal::JournalEvent;
use crate::format::tsv;
use crate::vault::job::JobCtx;
use crate::vault::layout::JobDir;
use crate::vault::tree::{Links, Lookalikes, Node, Visitor, Walk};

/// What kind of data problem a [`DataProblem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// The file's content or size differs from its record.
    Mismatch,
    /// A regular file the version holds has no record.
    NoRecord,
    /// A record names a file the version does not hold.
    NoFile,
    /// The version has no checksums file while the job records checksums.
    NoChecksums,
    /// The checksums file cannot be parsed.
    DamagedChecksums,
    /// A file or directory could not be read.
    Unreadable,
}

impl DataKind {
    /// The kind's name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Mismatch => "checksum-mismatch",
            DataKind::NoRecord => "no-checksum",
            DataKind::NoFile => "checksum-without-file",
            DataKind::NoChecksums => "no-checksums-file",
            DataKind::DamagedChecksums => "damaged-checksums",
            DataKind::Unreadable => "unreadable",
        }
    }
}

/// One finding of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataProblem {
    /// The job's folder name.
    pub job: String,
    pub kind: DataKind,
    /// The version's directory name.
    pub version: String,
    /// The path in the version (empty for the version itself), or the checksums file
    /// relative to the job folder for [`DataKind::DamagedChecksums`].
    pub path: PathBuf,
    /// Why, for people.
    pub detail: String,
}

impl DataProblem {
    /// Where, relative to the job folder (`V3-…/a/b`, `checksums/V3.tsv`).
    pub fn location(&self) -> PathBuf {
        match self.kind {
            DataKind::DamagedChecksums => self.path.clone(),
            _ if self.path.as_os_str().is_empty() => PathBuf::from(&self.version),
            _ => Path::new(&self.version).join(&self.path),
        }
    }
}

impl fmt::Display for DataProblem {
    /// One TSV line: `job\tkind\tpath\tdetail`, as `reverb-index --check` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\t{}\t{}",
            tsv::escape(&self.job),
            self.kind.as_str(),
            tsv::escape_os(self.location().as_os_str()),
            tsv::escape(&self.detail)
        )
    }
}

/// Bytes verified so far, of how many (for a progress display).
pub trait DataProgress {
    /// Everything to read is known: `total` bytes.
    fn start(&self, _total: u64) {}
    /// `bytes` more were read.
    fn read(&self, _bytes: u64) {}
}

/// No progress display.
pub struct Quiet;
impl DataProgress for Quiet {}

/// Keeps reading under `max_rate` bytes per second (none: as fast as the disk goes).
pub struct Throttle {
    max_rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    pub fn new(max_rate: Option<u64>) -> Throttle {
        Throttle {
            max_rate: max_rate.filter(|r| *r > 0),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// `n` more bytes were read: sleeps until the average rate is back under the limit.
    pub fn account(&mut self, n: u64) {
        self.bytes += n;
        let Some(rate) = self.max_rate else { return };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// One version's real regular files (for [`backfill`]).
fn held_files(job: &Path, vdir: &str, lookalikes: &Lookalikes) -> Result<Vec<PathBuf>> {
    struct Collect(Vec<PathBuf>);
    impl Visitor for Collect {
        fn entry(&mut self, node: &mut Node) -> Result<()> {
            if node.file_type.is_file() {
                self.0.push(node.rel.clone());
            }
            Ok(())
        }
    }
    let mut found = Collect(Vec::new());
    Walk::new(job, lookalikes, Links::Report)
        .sorted()
        .run(vdir, Path::new(""), &mut found)?;
    Ok(found.0)
}

/// The bytes of one version's real regular files (a walk that keeps only the sum).
fn real_file_bytes(job: &Path, vdir: &str, lookalikes: &Lookalikes) -> Result<u64> {
    struct Sum(u64);
    impl Visitor for Sum {
        fn entry(&mut self, node: &mut Node) -> Result<()> {
            if node.file_type.is_file() {
                self.0 += node.metadata()?.len();
            }
            Ok(())
        }
    }
    let mut sum = Sum(0);
    Walk::new(job, lookalikes, Links::Report).run(vdir, Path::new(""), &mut sum)?;
    Ok(sum.0)
}

/// Reads a whole file (not following a symlink), throttled, and returns its record.
pub fn read_record(
    path: &Path,
    throttle: &mut Throttle,
    progress: &dyn DataProgress,
) -> std::io::Result<Record> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)?;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 1 << 20]);
    }
    BUF.with(|b| hash_reader(&mut f, &mut b.borrow_mut(), throttle, progress))
}

/// Hashes everything `f` reads, in `buf`-sized reads (one buffer for every file: a fresh
/// megabyte per small file costs more than reading it).
fn hash_reader(
    f: &mut fs::File,
    buf: &mut [u8],
    throttle: &mut Throttle,
    progress: &dyn DataProgress,
) -> std::io::Result<Record> {
    let mut h = blake3::Hasher::new();
    let mut size = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        size += n as u64;
        progress.read(n as u64);
        throttle.account(n as u64);
    }
    Ok(Record {
        size,
        hash: *h.finalize().as_bytes(),
    })
}

/// Reads every regular file every retained version of the job holds and compares it with
/// its record. `max_rate` limits the read rate (bytes per second). One version at a time:
/// its records (a compact [`Table`]) and one flag per record are held while its files are
/// read in the walk's order, never a list of its files or every version's records at once.
pub fn verify(
    dir: &JobDir,
    max_rate: Option<u64>,
    progress: &dyn DataProgress,
) -> Result<Vec<DataProblem>> {
    let file = JobFile::read(&dir.job_toml())?;
    let rows = index::read(&dir.index())?;
    let lookalikes = Lookalikes::load(&dir.path)?;
    let retiring = file.state.retiring.is_some();
    let mut problems = Vec::new();
    // What there is to read, first (for the progress display); a version whose tree
    // cannot be read is a problem here, once.
    let mut readable = Vec::new();
    let mut total = 0;
    for row in &rows {
        if !dir.path.join(&row.dir).is_dir() {
            continue; // reverb-index --check reports a missing version
        }
        match real_file_bytes(&dir.path, &row.dir, &lookalikes) {
            Ok(bytes) => {
                let counted = checksums::file_of(&dir.path, row.version).is_file();
                if counted {
                    total += bytes;
                }
                readable.push((row, counted.then_some(bytes)));
            }
            Err(e) => {
                problems.push(problem(dir, row, DataKind::Unreadable, PathBuf::new(), e));
                // Its checksums file's own problems (missing, damaged) all the same.
                records_of(dir, row, &file, &mut problems);
            }
        }
    }
    progress.start(total);
    let mut throttle = Throttle::new(max_rate);
    for (row, counted) in readable {
        let Some(records) = records_of(dir, row, &file, &mut problems) else {
            // A damaged checksums file: its version's bytes are not read after all.
            progress.read(counted.unwrap_or(0));
            continue;
        };
        let mut compare = Compare {
            dir,
            row,
            seen: vec![false; records.len()],
            records,
            throttle: &mut throttle,
            progress,
            problems: &mut problems,
        };
        let walked = Walk::new(&dir.path, &lookalikes, Links::Report)
            .sorted()
            .run(&row.dir, Path::new(""), &mut compare);
        if let Err(e) = walked {
            problems.push(problem(dir, row, DataKind::Unreadable, PathBuf::new(), e));
            continue;
        }
        if !retiring {
            compare.records_without_files();
        }
    }
    Ok(problems)
}

/// A problem of version `row`.
fn problem(
    dir: &JobDir,
    row: &IndexRow,
    kind: DataKind,
    path: PathBuf,
    detail: impl fmt::Display,
) -> DataProblem {
    DataProblem {
        job: dir.folder.clone(),
        kind,
        version: row.dir.clone(),
        path,
        detail: detail.to_string(),
    }
}

/// Version `row`'s records; `None` when there is nothing to compare with (no file while
/// checksums are off; no file while they are on, or a damaged one: both problems).
fn records_of(
    dir: &JobDir,
    row: &IndexRow,
    file: &JobFile,
    problems: &mut Vec<DataProblem>,
) -> Option<Table> {
    let at = checksums::file_of(Path::new(""), row.version);
    match checksums::read_table(&dir.path, row.version) {
        Ok(Some(mut r)) => {
            r.normalize();
            Some(r)
        }
        Ok(None) if !file.settings.checksums => None,
        Ok(None) => {
            let detail = format!(
                "no {} (a version made before checksums: reverb-index --recount --checksums records them)",
                show(&at)
            );
            problems.push(problem(
                dir,
                row,
                DataKind::NoChecksums,
                PathBuf::new(),
                detail,
            ));
            None
        }
        Err(e) => {
            problems.push(problem(dir, row, DataKind::DamagedChecksums, at, e));
            None
        }
    }
}

/// The walk of one version comparing each regular file with its record as it is met.
struct Compare<'a> {
    dir: &'a JobDir,
    row: &'a IndexRow,
    /// The version's records, in path order.
    records: Table,
    /// Which records a file was met for, by position.
    seen: Vec<bool>,
    throttle: &'a mut Throttle,
    progress: &'a dyn DataProgress,
    problems: &'a mut Vec<DataProblem>,
}

impl Compare<'_> {
    fn push(&mut self, kind: DataKind, path: &Path, detail: String) {
        let p = problem(self.dir, self.row, kind, path.to_path_buf(), detail);
        self.problems.push(p);
    }

    /// The records no file was met for.
    fn records_without_files(&mut self) {
        let missing: Vec<PathBuf> = self
            .records
            .iter()
            .zip(&self.seen)
            .filter(|(_, seen)| !**seen)
            .map(|((path, _), _)| path.to_path_buf())
            .collect();
        for rel in missing {
            self.push(
                DataKind::NoFile,
                &rel,
                "a checksum whose file the version does not hold".into(),
            );
        }
    }
}

impl Visitor for Compare<'_> {
    fn entry(&mut self, node: &mut Node) -> Result<()> {
        if !node.file_type.is_file() {
            return Ok(());
        }
        let Some(at) = self.records.position(&node.rel) else {
            self.push(
                DataKind::NoRecord,
                &node.rel,
                "a stored file without a checksum".into(),
            );
            return Ok(());
        };
        self.seen[at] = true;
        let want = self.records.at(at);
        match read_record(&node.abs, self.throttle, self.progress) {
            Err(e) => self.push(DataKind::Unreadable, &node.rel, format!("cannot read: {e}")),
            Ok(got) if got.size != want.size => self.push(
                DataKind::Mismatch,
                &node.rel,
                format!("size {} but its record says {}", got.size, want.size),
            ),
            Ok(got) if got.hash != want.hash => self.push(
                DataKind::Mismatch,
                &node.rel,
                format!("blake3 {} but its record says {}", got.hex(), want.hex()),
            ),
            Ok(_) => {}
        }
        Ok(())
    }
}

/// `reverb-index --recount --checksums`: every version without a checksums file gets one
/// from its data as it is now, and a version's file gains the records it lacks; journaled
/// as `recount`. Returns how many records were added. The caller holds the job lock.
pub fn backfill(ctx: &mut JobCtx) -> Result<u64> {
    let added = backfill_records(&ctx.dir)?;
    ctx.journal.append(
        JournalEvent::Recount,
        b"",
        &format!("checksums: {added} record(s) backfilled from the data as it is now"),
    )?;
    Ok(added)
}

fn backfill_records(dir: &JobDir) -> Result<u64> {
    let rows = index::read(&dir.index())?;
    let lookalikes = Lookalikes::load(&dir.path)?;
    let mut added = 0u64;
    let mut throttle = Throttle::new(None);
    for row in &rows {
        if !dir.path.join(&row.dir).is_dir() {
            continue;
        }
        let mut records = checksums::read(&dir.path, row.version)?.unwrap_or_default();
        let before = records.len();
        for rel in held_files(&dir.path, &row.dir, &lookalikes)? {
            if records.contains_key(&rel) {
                continue;
            }
            let abs = dir.path.join(&row.dir).join(&rel);
            let rec =
                read_record(&abs, &mut throttle, &Quiet).map_err(|e| crate::error::Error::Io {
                    what: "cannot read",
                    path: abs.clone(),
                    source: e,
                })?;
            records.insert(rel, rec);
        }
        let new = (records.len() - before) as u64;
        if new > 0 || !checksums::file_of(&dir.path, row.version).exists() {
            checksums::write(&dir.path, row.version, &records)?;
        }
        added += new;
    }
    Ok(added)
}
