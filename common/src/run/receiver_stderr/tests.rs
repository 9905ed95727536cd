//! Unit tests of [`super`] (receiver_stderr.rs).

use super::*;

#[test]
fn keeps_the_last_lines_cut_to_their_limit() {
    let long = "x".repeat(LINE_CHARS + 50);
    let text = format!("one\n\ntwo\nthree\n{long}\nfour");
    let tail = StderrTail::start(std::io::Cursor::new(text.into_bytes()));
    let last = tail.last().expect("lines");
    assert_eq!(last, format!("three / {} / four", "x".repeat(LINE_CHARS)));
}

#[test]
fn nothing_printed_is_none() {
    let tail = StderrTail::start(std::io::empty());
    assert_eq!(tail.last(), None);
}
