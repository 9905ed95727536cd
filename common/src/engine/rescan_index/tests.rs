use super::*;
use crate::engine::snapshot::{Options, Trigger, take};
use crate::format::jobfile::Identities;
use crate::format::settings::JobSettings;
use crate::vault::job::{self, JobCtx};
use crate::vault::layout::Vault;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

struct Fixture {
    _tmp: tempfile::TempDir,
    src: PathBuf,
    ctx: JobCtx,
}

/// A job over `src/{a, d/b, d/c}`, its first version taken, and the clock past the racily
/// clean window of every entry.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    for (f, data) in [("a", "one"), ("d/b", "two"), ("d/c", "three")] {
        fs::write(src.join(f), data).expect("write");
        let then = SystemTime::now() - Duration::from_secs(3600);
        let file = fs::File::options()
            .write(true)
            .open(src.join(f))
            .expect("open");
        file.set_modified(then).expect("mtime");
    }
    let vault = Vault::init(&tmp.path().join("vault")).expect("vault");
    job::create(
        &vault,
        "t",
        &src,
        JobSettings::default(),
        Identities::default(),
    )
    .expect("create");
    let mut ctx = job::open(&vault, "t", "snap").expect("open");
    take(&mut ctx, Trigger::Rescan, Options::default()).expect("first");
    // Time that must pass (not an event): the entries' ctimes leave the window.
    let settled = SystemTime::now() + WINDOW + Duration::from_millis(100);
    while SystemTime::now() < settled {
        std::thread::sleep(Duration::from_millis(50));
    }
    Fixture {
        _tmp: tmp,
        src,
        ctx,
    }
}

impl Fixture {
    fn rescan(&mut self) -> Option<String> {
        let out = take(&mut self.ctx, Trigger::Rescan, Options::default()).expect("rescan");
        out.version.map(|v| v.dir)
    }

    fn events(&mut self, path: &str) -> String {
        let marked = BTreeMap::from([(RelPath::from_internal(Path::new(path)), Mark::Content)]);
        let out = take(&mut self.ctx, Trigger::Paths(marked), Options::default()).expect("events");
        out.version.expect("a version").dir
    }

    fn current(&self) -> PathBuf {
        self.ctx
            .dir
            .path
            .join(self.ctx.dir.read_current().expect("current"))
    }

    fn index(&self) -> PathBuf {
        self.ctx.dir.path.join(source_index::DIR)
    }

    /// Makes the vault's copy of `a` differ from the source behind the tools' back (its
    /// mode): only a rescan that looks at the vault notices.
    fn tamper_with_the_vault(&self) {
        let a = fs::canonicalize(self.current().join("a")).expect("holder of a");
        let mode = fs::metadata(&a).expect("stat").permissions().mode() & 0o777;
        let other = if mode == 0o600 { 0o640 } else { 0o600 };
        fs::set_permissions(&a, fs::Permissions::from_mode(other)).expect("chmod");
    }
}

#[test]
fn an_unchanged_rescan_trusts_the_index_and_leaves_the_vault_alone() {
    let mut f = fixture();
    assert_eq!(f.rescan(), None, "nothing changed: the index is written");
    assert!(f.index().join(source_index::BASE).is_file());
    f.tamper_with_the_vault();
    assert_eq!(f.rescan(), None, "the vault is not looked at for `a`");
    // Without the index, the vault is compared again and the difference found.
    fs::remove_dir_all(f.index()).expect("rm index");
    assert!(
        f.rescan().is_some(),
        "a full comparison sees the vault's `a` differ"
    );
}

#[test]
fn a_damaged_or_stale_index_is_ignored() {
    let mut f = fixture();
    f.rescan();
    let base = f.index().join(source_index::BASE);
    let good = fs::read(&base).expect("read");
    f.tamper_with_the_vault();
    // The header damaged: the base is not used, the vault is compared.
    let mut bad = good.clone();
    bad[12] ^= 1;
    fs::write(&base, &bad).expect("write");
    assert!(f.rescan().is_some(), "a damaged base is ignored");
    assert_eq!(f.rescan(), None);
    // Keyed to the version before the current one: not used either.
    let stale = fs::read(&base).expect("read");
    fs::write(f.src.join("new"), b"x").expect("write");
    assert!(f.rescan().is_some());
    fs::write(&base, &stale).expect("put the stale base back");
    for (name, _) in deltas_in(&f.index()) {
        fs::remove_file(f.index().join(name)).expect("rm delta");
    }
    f.tamper_with_the_vault();
    assert!(f.rescan().is_some(), "a base of another version is ignored");
}

#[test]
fn an_event_build_leaves_a_delta_naming_what_it_marked() {
    let mut f = fixture();
    f.rescan();
    fs::write(f.src.join("d/b"), b"TWO").expect("write");
    let v2 = f.events("d/b");
    let delta = fs::read(f.index().join(Delta::file_name(&v2))).expect("delta");
    let delta = Delta::decode(&delta).expect("decodes");
    assert_eq!(delta.subtrees, [b"d/b".to_vec()]);
    assert!(delta.entries.contains(&b"d".to_vec()), "{delta:?}");
    // The chain from the base reaches the current version: the index is still used.
    f.tamper_with_the_vault();
    assert_eq!(f.rescan(), None, "the chain holds");
    // A missing delta breaks the chain: nothing is trusted.
    fs::write(f.src.join("d/c"), b"THREE").expect("write");
    let v3 = f.events("d/c");
    fs::remove_file(f.index().join(Delta::file_name(&v3))).expect("rm");
    let base = BaseReader::open(&f.index().join(source_index::BASE)).expect("base");
    assert!(chain(&f.index(), &base.header().version, &v3).is_none());
    assert!(
        f.rescan().is_some(),
        "the tampered `a` is found: the vault is compared"
    );
}

#[test]
fn many_deltas_are_merged_into_one() {
    let mut f = fixture();
    f.rescan();
    let mut last = String::new();
    for i in 0..(MERGE_AFTER + 2) {
        fs::write(f.src.join("a"), format!("v{i}")).expect("write");
        last = f.events("a");
    }
    assert!(deltas_in(&f.index()).len() <= MERGE_AFTER + 1);
    let base = BaseReader::open(&f.index().join(source_index::BASE)).expect("base");
    let chain = chain(&f.index(), &base.header().version, &last).expect("a chain");
    assert!(chain.len() <= 2, "{}", chain.len());
}
