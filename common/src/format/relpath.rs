//! [`RelPath`]: a path relative to a source or version root, the one vocabulary the event
//! lines and the build share for "which entry".
//!
//! Owns the two spellings of the root: an event line's `path` field says `.`
//! (docs/format.md#text-files), everything inside the library says `""` (so that
//! `root.join(rel)` is the entry itself). A `RelPath` always holds the internal form;
//! [`RelPath::from_event_field`] and [`RelPath::event_field`] convert at the edge.
//!
//! Invariants: a `RelPath` is either the root (empty) or a sequence of components none of
//! which is empty, `.` or `..`, with no leading `/` (checked when parsed from an event
//! field, kept by [`RelPath::join`] for a plain file name).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The event field's name for the root.
const ROOT_FIELD: &str = ".";

/// A clean path relative to a root; empty for the root itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(PathBuf);

impl RelPath {
    /// The root itself.
    pub fn root() -> RelPath {
        RelPath::default()
    }

    /// Is this the root?
    pub fn is_root(&self) -> bool {
        self.0.as_os_str().is_empty()
    }

    /// Reads an event line's path field: `.` alone (the root), or components that are
    /// neither empty, `.` nor `..`, and no leading `/`.
    pub fn from_event_field(field: &Path) -> Result<RelPath, &'static str> {
        let bytes = field.as_os_str().as_bytes();
        if bytes.is_empty() {
            return Err("empty");
        }
        if bytes == ROOT_FIELD.as_bytes() {
            return Ok(RelPath::root());
        }
        if bytes[0] == b'/' {
            return Err("absolute");
        }
        for component in bytes.split(|&c| c == b'/') {
            match component {
                b"" => return Err("empty component"),
                b"." => return Err("`.` component"),
                b".." => return Err("`..` component"),
                _ => {}
            }
        }
        Ok(RelPath(field.to_path_buf()))
    }

    /// A path already known to be clean and relative (the library's own form, `""` for the
    /// root; a lone `.` is read as the root too).
    pub fn from_internal(path: &Path) -> RelPath {
        if path.as_os_str() == ROOT_FIELD {
            RelPath::root()
        } else {
            RelPath(path.to_path_buf())
        }
    }

    /// The event field form: `.` for the root.
    pub fn event_field(&self) -> &Path {
        if self.is_root() {
            Path::new(ROOT_FIELD)
        } else {
            &self.0
        }
    }

    /// The internal form: `""` for the root.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The child `name` of this directory.
    pub fn join(&self, name: &OsStr) -> RelPath {
        RelPath(self.0.join(name))
    }

    /// This entry under `root` (the root itself for [`RelPath::root`]).
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.is_root() {
            root.to_path_buf()
        } else {
            root.join(&self.0)
        }
    }

    /// The path's bytes (empty for the root), as the journal records them.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_os_str().as_bytes()
    }

    /// The names from the root down to this entry.
    pub fn names(&self) -> impl Iterator<Item = &OsStr> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_has_two_spellings() {
        let root = RelPath::from_event_field(Path::new(".")).expect("root");
        assert!(root.is_root());
        assert_eq!(root.as_path(), Path::new(""));
        assert_eq!(root.event_field(), Path::new("."));
        assert_eq!(root.under(Path::new("/src")), Path::new("/src"));
        assert_eq!(RelPath::from_internal(Path::new(".")), root);
        assert_eq!(RelPath::from_internal(Path::new("")), root);
    }

    #[test]
    fn join_and_under() {
        let a = RelPath::root().join(OsStr::new("a"));
        assert_eq!(a.event_field(), Path::new("a"));
        let ab = a.join(OsStr::new("b"));
        assert_eq!(ab.under(Path::new("/src")), Path::new("/src/a/b"));
        assert_eq!(ab.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(ab.as_bytes(), b"a/b");
    }

    #[test]
    fn event_fields_are_checked() {
        for (field, why) in [
            ("", "empty"),
            ("/etc", "absolute"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("./a", "`.` component"),
            ("a/..", "`..` component"),
        ] {
            assert_eq!(
                RelPath::from_event_field(Path::new(field)),
                Err(why),
                "{field}"
            );
        }
        let p = RelPath::from_event_field(Path::new("a/b c")).expect("clean");
        assert_eq!(p.event_field(), Path::new("a/b c"));
    }
}
