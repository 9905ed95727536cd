//! The marks of a build as a tree ([`MarkTree`]): one node per marked path and per ancestor
//! of one, so that the build walks only the directories that lead to a change.
//!
//! Invariants: a node's mark is only ever combined with [`Mark::merge`] (the one rule of
//! docs/design.md#the-supervisor); an ancestor created on the way to a marked path has no
//! mark of its own. Every walk here is iterative, so any depth fits the stack.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use crate::format::events::Mark;
use crate::format::relpath::RelPath;

/// A marked path and the marked paths below it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MarkTree {
    pub mark: Option<Mark>,
    pub children: BTreeMap<OsString, MarkTree>,
}

impl MarkTree {
    /// A tree holding only its root, marked `mark`.
    pub fn marked(mark: Option<Mark>) -> MarkTree {
        MarkTree {
            mark,
            children: BTreeMap::new(),
        }
    }

    /// The tree of these paths (`""` is the root).
    pub fn of_paths<'a>(paths: impl IntoIterator<Item = (&'a RelPath, &'a Mark)>) -> MarkTree {
        let mut root = MarkTree::default();
        for (path, mark) in paths {
            root.insert(path, *mark);
        }
        root
    }

    /// Marks `rel` with `later`, merged with its mark so far.
    pub fn insert(&mut self, rel: &RelPath, later: Mark) {
        let mut node = self;
        for name in rel.names() {
            node = node.children.entry(name.to_owned()).or_default();
        }
        node.add(later);
    }

    /// Merges `later` into this node's own mark.
    pub fn add(&mut self, later: Mark) {
        self.mark = Some(match self.mark {
            Some(earlier) => Mark::merge(earlier, later),
            None => later,
        });
    }

    /// The marks of `later` added below this node's, `later` seen after them.
    pub fn merge_below(&mut self, later: MarkTree) {
        let mut pending: Vec<(RelPath, MarkTree)> = Vec::new();
        let root = RelPath::root();
        pending.extend(later.children.into_iter().map(|(n, c)| (root.join(&n), c)));
        while let Some((rel, node)) = pending.pop() {
            let slot = self.node_mut(&rel);
            if let Some(mark) = node.mark {
                slot.add(mark);
            }
            pending.extend(node.children.into_iter().map(|(n, c)| (rel.join(&n), c)));
        }
    }

    /// The child `name`, created (unmarked) when missing.
    pub fn child_mut(&mut self, name: &OsStr) -> &mut MarkTree {
        self.children.entry(name.to_owned()).or_default()
    }

    /// Drops every node below the root that has no mark and nothing marked below it.
    pub fn prune(&mut self) {
        // Post-order without recursion: list the nodes (parents first), then empty them
        // from the deepest up.
        let mut order: Vec<RelPath> = Vec::new();
        let mut pending = vec![(RelPath::root(), &*self)];
        while let Some((rel, node)) = pending.pop() {
            for (name, child) in &node.children {
                pending.push((rel.join(name), child));
            }
            order.push(rel);
        }
        for rel in order.iter().rev() {
            let node = self.node_mut(rel);
            node.children
                .retain(|_, c| c.mark.is_some() || !c.children.is_empty());
        }
    }

    /// The node of `rel`, created (unmarked) when missing.
    pub fn node_mut(&mut self, rel: &RelPath) -> &mut MarkTree {
        let mut node = self;
        for name in rel.names() {
            node = node.children.entry(name.to_owned()).or_default();
        }
        node
    }

    /// The mark of `rel`, if it has one.
    pub fn mark_of(&self, rel: &RelPath) -> Option<Mark> {
        let mut node = self;
        for name in rel.names() {
            node = node.children.get(name)?;
        }
        node.mark
    }

    /// Every marked path with its mark, parents before children, names in order.
    pub fn marked_paths(&self) -> Vec<(RelPath, Mark)> {
        let mut out = Vec::new();
        let mut pending = vec![(RelPath::root(), self)];
        while let Some((rel, node)) = pending.pop() {
            for (name, child) in node.children.iter().rev() {
                pending.push((rel.join(name), child));
            }
            if let Some(mark) = node.mark {
                out.push((rel, mark));
            }
        }
        out
    }

    /// The marked leaves, parents before children, names in order.
    pub fn leaves(&self) -> Vec<RelPath> {
        let mut out = Vec::new();
        let mut pending = vec![(RelPath::root(), self)];
        while let Some((rel, node)) = pending.pop() {
            for (name, child) in node.children.iter().rev() {
                pending.push((rel.join(name), child));
            }
            if node.mark.is_some() && node.children.is_empty() {
                out.push(rel);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rel(p: &str) -> RelPath {
        RelPath::from_internal(Path::new(p))
    }

    #[test]
    fn insert_merges_with_the_one_rule() {
        let mut t = MarkTree::default();
        t.insert(&rel("a/b"), Mark::Delete);
        t.insert(&rel("a/b"), Mark::Attrib);
        let b = &t.children[OsStr::new("a")].children[OsStr::new("b")];
        assert_eq!(
            b.mark,
            Some(Mark::Content),
            "attrib after delete is content"
        );
        assert_eq!(
            t.children[OsStr::new("a")].mark,
            None,
            "ancestors are unmarked"
        );
    }

    #[test]
    fn leaves_are_in_order() {
        let mut t = MarkTree::default();
        for p in ["b", "a/y", "a/x", "c/d"] {
            t.insert(&rel(p), Mark::Content);
        }
        let got: Vec<_> = t.leaves().iter().map(|p| p.as_bytes().to_vec()).collect();
        assert_eq!(got, [&b"a/x"[..], b"a/y", b"b", b"c/d"]);
        assert_eq!(
            MarkTree::marked(Some(Mark::Attrib)).leaves(),
            [RelPath::root()]
        );
    }

    #[test]
    fn merge_below_and_prune() {
        let mut t = MarkTree::marked(Some(Mark::Content));
        t.insert(&rel("a"), Mark::Delete);
        t.children.entry("empty".into()).or_default();
        let mut later = MarkTree::default();
        later.insert(&rel("a"), Mark::Attrib);
        later.insert(&rel("b/c"), Mark::Attrib);
        t.merge_below(later);
        t.prune();
        assert_eq!(t.mark, Some(Mark::Content));
        assert_eq!(t.children[OsStr::new("a")].mark, Some(Mark::Content));
        assert!(!t.children.contains_key(OsStr::new("empty")));
        assert_eq!(t.leaves(), [rel("a"), rel("b/c")]);
        assert_eq!(t.mark_of(&rel("b/c")), Some(Mark::Attrib));
        assert_eq!(t.mark_of(&rel("b")), None);
        assert_eq!(t.mark_of(&rel("x/y")), None);
        assert_eq!(
            t.marked_paths(),
            [
                (RelPath::root(), Mark::Content),
                (rel("a"), Mark::Content),
                (rel("b/c"), Mark::Attrib)
            ]
        );
    }
}
