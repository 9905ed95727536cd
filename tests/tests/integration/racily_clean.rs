//! Racily clean files (docs/design.md#building-a-version): a file written within a
//! timestamp tick of the version that copied it cannot be proven unchanged by its stat, so
//! its content is compared with its recorded BLAKE3. Opening and closing it (a `modify`
//! event, as reverb-watch reports inotify's `close_write`), or saving the same bytes, makes no version; other
//! bytes of the same size and mtime do.

use std::fs;
use std::path::Path;

use reverb_tests::Fixture;
use reverb_tests::ops::{event, index_dirs, snap_changes};

/// Writes `data` over `path` and puts its mtime back (an editor saving an unchanged
/// buffer within the same clock tick, or `open(O_WRONLY)` then `close`).
fn rewrite_keeping_mtime(path: &Path, data: &[u8]) {
    let mtime = fs::metadata(path).expect("stat").modified().expect("mtime");
    fs::write(path, data).expect("rewrite");
    fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(mtime)
        .expect("mtime back");
}

#[test]
fn opening_and_closing_a_file_just_versioned_makes_no_version() {
    let f = Fixture::new();
    let doc = f.src.join("doc.txt");
    fs::write(&doc, b"draft one").expect("write");
    let v1 = f.first();
    // Within the racily clean window of V1: the same bytes, the same mtime.
    fs::File::options()
        .write(true)
        .open(&doc)
        .expect("open for writing");
    rewrite_keeping_mtime(&doc, b"draft one");
    // reverb-watch reports a close after writing as `modify`.
    let lines = [event("modify", "file", Path::new("doc.txt"), None)];
    let out = snap_changes(&f, &lines, &[]).stdout();
    assert_eq!(
        out.trim(),
        "",
        "a modify event on an unchanged file makes no version"
    );
    assert_eq!(f.rescan(), "", "a rescan agrees");
    assert_eq!(index_dirs(&f), [v1]);
    // Other bytes, same size and mtime: only the content tells, and it does.
    rewrite_keeping_mtime(&doc, b"draft two");
    let v2 = snap_changes(&f, &lines, &[]).stdout().trim().to_owned();
    assert!(!v2.is_empty(), "the rewrite is a version");
    assert_eq!(
        fs::read(f.job_dir().join(&v2).join("doc.txt")).expect("V2"),
        b"draft two"
    );
    f.check_clean();
}
