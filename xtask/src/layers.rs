//! The layer check of `common/src` (docs/design.md#module-map): every `crate::…` path a module
//! writes (in a `use` or inline) must point to its own layer or one below it, and the modules
//! must not import each other in a cycle.
//!
//! The layer order, lowest first: foundations ([`FOUNDATIONS`]) < `format` < `capture` <
//! `vault` < `engine` < `run`. `lib.rs`, the facade that re-exports the public API, is exempt.
//! A new top-level module must be added to [`FOUNDATIONS`] or [`LAYERS`], or the check fails.
//!
//! What is read: the code of each file, without comments, string and character literals, and
//! without its `#[cfg(test)] mod tests` tail (tests may build fixtures from any layer). Paths
//! are followed through `use crate::a::{b, c::d}` groups. A module is a file; for the cycle
//! check, the files below a module's folder (`run/supervisor/*.rs`) count as that module,
//! whose split is its own business. Each upward import is one problem; cycles are looked for
//! among the other imports, so an upward import is not reported again as the cycles it
//! closes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::{fs, io};

/// The foundations: top-level modules every layer may use, which use no layer.
pub const FOUNDATIONS: [&str; 6] = ["error", "escape", "sys", "fsutil", "beneath", "fault"];

/// The layers above the foundations, lowest first.
pub const LAYERS: [&str; 5] = ["format", "capture", "vault", "engine", "run"];

/// A module's rank in the layer order (0 = foundations), or `None` when it is in no layer.
fn rank(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or(module);
    if FOUNDATIONS.contains(&top) {
        return Some(0);
    }
    LAYERS.iter().position(|l| *l == top).map(|i| i + 1)
}

fn layer_name(module: &str) -> &str {
    match rank(module) {
        Some(0) => "foundations",
        _ => module.split("::").next().unwrap_or(module),
    }
}

/// Checks the files of `common/src` below `root` (the workspace root). Returns one line per
/// problem, empty when the layering holds.
pub fn check_dir(root: &Path) -> io::Result<Vec<String>> {
    let src = root.join("common/src");
    let mut files = Vec::new();
    for path in rust_files(&src)? {
        let text = fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let rel = path.strip_prefix(root).unwrap_or(&path);
        files.push((rel.to_string_lossy().into_owned(), text));
    }
    Ok(check(&files))
}

fn rust_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The module a file of `common/src` defines: `common/src/engine/build.rs` → `engine::build`,
/// `engine/mod.rs` → `engine`, `lib.rs` → `` (the crate root).
fn module_of(file: &str) -> String {
    let rel = file.split_once("src/").map_or(file, |(_, r)| r);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    if rel == "lib" || rel == "mod" {
        return String::new();
    }
    rel.replace('/', "::")
}

/// One `crate::` path a file writes: its line (1-based) and its segments.
#[derive(Debug, PartialEq)]
struct Ref {
    line: usize,
    path: Vec<String>,
}

/// Checks `(file path, text)` pairs, the paths ending in `src/<module path>.rs`.
pub fn check(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<String> = files.iter().map(|(f, _)| module_of(f)).collect();
    let mut problems = Vec::new();
    // Cycle check graph: unit (layer::module) → unit → the first line that imports it.
    let mut graph: BTreeMap<String, BTreeMap<String, (String, usize)>> = BTreeMap::new();
    for (file, text) in files {
        let from = module_of(file);
        if from.is_empty() {
            continue;
        }
        let Some(from_rank) = rank(&from) else {
            problems.push(format!(
                "{file}: module `{from}` is in no layer (add it to xtask/src/layers.rs)"
            ));
            continue;
        };
        for r in crate_refs(text) {
            let Some(to) = resolve(&r.path, &modules) else {
                continue;
            };
            let to_rank = rank(&to).unwrap_or(usize::MAX);
            if to_rank > from_rank {
                problems.push(format!(
                    "{file}:{}: {from} ({}) imports {to} ({}), a higher layer",
                    r.line,
                    layer_name(&from),
                    layer_name(&to),
                ));
            }
            // An upward import is reported above; the cycles are looked for among the others
            // (so within a layer), each reported once.
            let (a, b) = (unit(&from), unit(&to));
            if to_rank <= from_rank && a != b && !is_ancestor(&b, &a) && !is_ancestor(&a, &b) {
                graph
                    .entry(a)
                    .or_default()
                    .entry(b)
                    .or_insert((file.clone(), r.line));
            }
        }
    }
    for cycle in cycles(&graph) {
        let mut shown = Vec::new();
        for pair in cycle.windows(2) {
            let (file, line) = &graph[&pair[0]][&pair[1]];
            shown.push(format!("{} -> {} ({file}:{line})", pair[0], pair[1]));
        }
        problems.push(format!("module cycle: {}", shown.join(", ")));
    }
    problems
}

/// The unit of the cycle check: the first two segments (`run::supervisor::state` →
/// `run::supervisor`).
fn unit(module: &str) -> String {
    module
        .splitn(3, "::")
        .take(2)
        .collect::<Vec<_>>()
        .join("::")
}

fn is_ancestor(a: &str, b: &str) -> bool {
    b.strip_prefix(a).is_some_and(|rest| rest.starts_with("::"))
}

/// The longest known module that `path` starts with; `None` for the crate root.
fn resolve(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// One cycle per strongly connected component of more than one unit, each as the list of
/// units from one unit back to itself.
fn cycles(graph: &BTreeMap<String, BTreeMap<String, (String, usize)>>) -> Vec<Vec<String>> {
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for start in graph.keys() {
        if reported.contains(start) {
            continue;
        }
        // Breadth-first from `start`, remembering each unit's predecessor: the first path
        // back to `start` is a shortest cycle through it.
        let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        while let Some(node) = queue.pop_front() {
            for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
                if next == start {
                    closing = Some(node);
                    break;
                }
                if !prev.contains_key(next) {
                    prev.insert(next, node);
                    queue.push_back(next);
                }
            }
            if closing.is_some() {
                break;
            }
        }
        let Some(mut node) = closing else { continue };
        let mut cycle = vec![start.clone()];
        while node != start {
            cycle.push(node.clone());
            node = prev[node];
        }
        cycle.push(start.clone());
        cycle.reverse();
        reported.extend(cycle.iter().cloned());
        out.push(cycle);
    }
    out
}

/// Every `crate::` path in the code of `text` (see the module doc for what is skipped).
fn crate_refs(text: &str) -> Vec<Ref> {
    let code = code_only(text);
    let bytes = code.as_bytes();
    let mut refs = Vec::new();
    let mut at = 0;
    while let Some(found) = code[at..].find("crate::") {
        let start = at + found;
        at = start + "crate::".len();
        if start > 0 && is_ident(bytes[start - 1]) {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        let mut paths = Vec::new();
        parse_tree(bytes, &mut at, Vec::new(), &mut paths);
        refs.extend(paths.into_iter().map(|path| Ref { line, path }));
    }
    refs
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn skip_space(bytes: &[u8], at: &mut usize) {
    while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
        *at += 1;
    }
}

/// Parses a use tree after `prefix::` (`a::b`, `a::{b, c::d}`, `*`), adding each path.
fn parse_tree(bytes: &[u8], at: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    loop {
        skip_space(bytes, at);
        if bytes.get(*at) == Some(&b'{') {
            *at += 1;
            loop {
                skip_space(bytes, at);
                match bytes.get(*at) {
                    None => return,
                    Some(b'}') => {
                        *at += 1;
                        return;
                    }
                    Some(b',') => *at += 1,
                    Some(_) => {
                        let before = *at;
                        parse_tree(bytes, at, prefix.clone(), out);
                        if *at == before {
                            *at += 1;
                        }
                    }
                }
            }
        }
        let begin = *at;
        while *at < bytes.len() && is_ident(bytes[*at]) {
            *at += 1;
        }
        if *at > begin {
            let ident = String::from_utf8_lossy(&bytes[begin..*at]).into_owned();
            if ident != "self" {
                prefix.push(ident);
            }
        }
        skip_space(bytes, at);
        if bytes[*at..].starts_with(b"::") {
            *at += 2;
            continue;
        }
        if !prefix.is_empty() {
            out.push(prefix);
        }
        return;
    }
}

/// `text` with comments, string and character literals and the `#[cfg(test)] mod tests` tail
/// blanked out (newlines kept, so line numbers still hold).
fn code_only(text: &str) -> String {
    let text = match test_tail(text) {
        Some(at) => &text[..at],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
    };
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            i + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = i;
            while j < b.len() {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if let Some(hashes) = raw_string_start(b, i) {
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let body = i + 2 + hashes;
            b[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| body + p + close.len())
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(b.len())
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // An escaped character: `'\''`, `'\n'`, `'\u{1F}'`.
            let mut j = i + 3;
            while j < b.len() && b[j] != b'\'' {
                j += 1;
            }
            (j + 1).min(b.len())
        } else if b[i] == b'\'' && b.get(i + 1 + utf8_len(b.get(i + 1))) == Some(&b'\'') {
            i + 2 + utf8_len(b.get(i + 1))
        } else {
            out.push(b[i]);
            i += 1;
            continue;
        };
        blank(&mut out, &b[i..end]);
        i = end;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The length of the UTF-8 character whose first byte is `first` (1 past the end).
fn utf8_len(first: Option<&u8>) -> usize {
    match first {
        Some(0xF0..) => 4,
        Some(0xE0..) => 3,
        Some(0xC0..) => 2,
        _ => 1,
    }
}

/// The number of `#` of a raw string literal (`r"`, `r#"`, `br"`) starting at `i`.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if b[i] != b'r' || (i > 0 && is_ident(b[i - 1]) && b[i - 1] != b'b') {
        return None;
    }
    if i > 1 && b[i - 1] == b'b' && is_ident(b[i - 2]) {
        return None;
    }
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    (b.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// Where the file's `#[cfg(test)]` + `mod tests` item starts, if it has one.
fn test_tail(text: &str) -> Option<usize> {
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(f, t)| (format!("common/src/{f}"), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn downward_and_same_layer_imports_pass() {
        let f = files(&[
            ("lib.rs", "pub use crate::run::cli::finish;\n"),
            ("error.rs", "use crate::escape::escape;\n"),
            ("escape.rs", ""),
            ("format/tsv.rs", "pub use crate::escape::escape;\n"),
            ("format/index.rs", "use crate::format::tsv;\n"),
            ("run/cli.rs", "fn f() { crate::format::tsv::escape(x); }\n"),
        ]);
        assert_eq!(check(&f), Vec::<String>::new());
    }

    #[test]
    fn an_upward_import_is_named_with_file_line_and_edge() {
        let f = files(&[
            ("error.rs", "//! doc\n\nuse crate::format::tsv::escape;\n"),
            ("format/tsv.rs", ""),
            (
                "format/jobfile.rs",
                "use crate::{\n    capture::identity::X,\n};\n",
            ),
            // Closes a cycle with the upward import: reported once, as that import.
            (
                "capture/identity.rs",
                "use crate::format::jobfile::Identities;\n",
            ),
        ]);
        assert_eq!(
            check(&f),
            [
                "common/src/error.rs:3: error (foundations) imports format::tsv (format), a higher layer",
                "common/src/format/jobfile.rs:1: format::jobfile (format) imports capture::identity (capture), a higher layer",
            ]
        );
    }

    #[test]
    fn inline_paths_count_but_comments_strings_and_tests_do_not() {
        let text = r##"// crate::engine::a
/// [`crate::engine::b`]
fn f() -> &'static str { let _c = ('x', '\'', 'é'); "crate::engine::c" }
fn g() -> &'static str { r#"crate::engine::d"# }
fn h() { crate::engine::e::run(); }

#[cfg(test)]
mod tests {
    use crate::engine::f;
}
"##;
        let f = files(&[
            ("vault/tree.rs", text),
            ("engine/e.rs", ""),
            ("engine/f.rs", ""),
        ]);
        assert_eq!(
            check(&f),
            [
                "common/src/vault/tree.rs:5: vault::tree (vault) imports engine::e (engine), a higher layer"
            ]
        );
    }

    #[test]
    fn a_cycle_is_reported_once_with_its_edges() {
        let f = files(&[
            ("engine/a.rs", "use crate::engine::b::X;\n"),
            ("engine/b.rs", "\nuse crate::engine::{c::Y, d};\n"),
            ("engine/c.rs", "fn f() { crate::engine::a::z(); }\n"),
            ("engine/d.rs", ""),
            // A module and its own submodules are one unit.
            ("run/sup/mod.rs", "use crate::run::sup::state::S;\n"),
            ("run/sup/state.rs", "use crate::run::sup::T;\n"),
        ]);
        assert_eq!(
            check(&f),
            [
                "module cycle: engine::a -> engine::b (common/src/engine/a.rs:1), \
                 engine::b -> engine::c (common/src/engine/b.rs:2), \
                 engine::c -> engine::a (common/src/engine/c.rs:1)"
            ]
        );
    }

    #[test]
    fn a_module_in_no_layer_fails() {
        let f = files(&[("misc.rs", "")]);
        assert_eq!(
            check(&f),
            ["common/src/misc.rs: module `misc` is in no layer (add it to xtask/src/layers.rs)"]
        );
    }

    #[test]
    fn the_repository_passes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        assert_eq!(
            check_dir(root).expect("read common/src"),
            Vec::<String>::new()
        );
    }
}
