//! A line diff of two texts: the common head and tail taken off, then a longest common
//! subsequence of the lines between (dynamic programming), shown with a few lines of
//! context. Small and ours: the texts shown are bounded ([`MAX_CELLS`]), so no crate's
//! faster algorithm is needed.
//!
//! Invariant: applying the ops to the old lines gives the new lines exactly (tested).

/// The largest LCS table (old lines × new lines between the common head and tail); beyond
/// it the middle is shown as removed then added.
pub const MAX_CELLS: usize = 4_000_000;

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// In both.
    Same(&'a str),
    /// Only in the old text.
    Removed(&'a str),
    /// Only in the new text.
    Added(&'a str),
}

/// The line diff from `old` to `new`.
pub fn diff<'a>(old: &'a str, new: &'a str) -> Vec<Op<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut out: Vec<Op<'a>> = a[..head].iter().map(|l| Op::Same(l)).collect();
    if ma.len().saturating_mul(mb.len()) > MAX_CELLS {
        out.extend(ma.iter().map(|l| Op::Removed(l)));
        out.extend(mb.iter().map(|l| Op::Added(l)));
    } else {
        // lcs[i][j]: the LCS length of ma[i..] and mb[j..].
        let (n, m) = (ma.len(), mb.len());
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * (m + 1) + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && ma[i] == mb[j] {
                out.push(Op::Same(ma[i]));
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1]) {
                // Removed lines come before the lines that replace them, as `diff -u` shows.
                out.push(Op::Removed(ma[i]));
                i += 1;
            } else {
                out.push(Op::Added(mb[j]));
                j += 1;
            }
        }
    }
    out.extend(a[a.len() - tail..].iter().map(|l| Op::Same(l)));
    out
}

/// What to show of a diff: runs of changes with `context` lines around them; `None` marks
/// a gap of unchanged lines left out.
pub fn hunks<'a>(ops: &[Op<'a>], context: usize) -> Vec<Option<Op<'a>>> {
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| !matches!(o, Op::Same(_)))
        .map(|(i, _)| i)
        .collect();
    let near = |i: usize| changed.iter().any(|&c| c.abs_diff(i) <= context);
    let mut out = Vec::new();
    let mut gap = false;
    for (i, op) in ops.iter().enumerate() {
        if near(i) {
            if gap {
                out.push(None);
                gap = false;
            }
            out.push(Some(op.clone()));
        } else {
            gap = true;
        }
    }
    if gap && !out.is_empty() {
        out.push(None);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(ops: &[Op<'_>]) -> (String, String) {
        let (mut old, mut new) = (String::new(), String::new());
        for op in ops {
            match op {
                Op::Same(l) => {
                    old.push_str(l);
                    old.push('\n');
                    new.push_str(l);
                    new.push('\n');
                }
                Op::Removed(l) => {
                    old.push_str(l);
                    old.push('\n');
                }
                Op::Added(l) => {
                    new.push_str(l);
                    new.push('\n');
                }
            }
        }
        (old, new)
    }

    #[test]
    fn diff_rebuilds_both_sides_and_is_minimal() {
        let old = "a\nb\nc\nd\ne\n";
        let new = "a\nc\nd\nX\ne\nf\n";
        let ops = diff(old, new);
        assert_eq!(apply(&ops), (old.to_owned(), new.to_owned()));
        let changes = ops.iter().filter(|o| !matches!(o, Op::Same(_))).count();
        assert_eq!(changes, 3, "{ops:?}");
        assert_eq!(diff("", "x\n"), vec![Op::Added("x")]);
        assert_eq!(
            diff("old\nsame\n", "new\nsame\n"),
            vec![Op::Removed("old"), Op::Added("new"), Op::Same("same")]
        );
        assert!(
            diff("same\n", "same\n")
                .iter()
                .all(|o| matches!(o, Op::Same(_)))
        );
    }

    #[test]
    fn hunks_leave_out_far_unchanged_lines() {
        let old: String = (0..50).map(|i| format!("{i}\n")).collect();
        let new = old.replace("25\n", "twenty-five\n");
        let h = hunks(&diff(&old, &new), 2);
        assert_eq!(h.iter().filter(|o| o.is_none()).count(), 2);
        // Two lines of context each side of the two changed ones, and the two gaps.
        assert_eq!(h.len(), 2 + 2 + 2 + 2);
    }
}
