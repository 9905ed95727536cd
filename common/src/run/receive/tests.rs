//! Unit tests of [`super`] (receive.rs): the forced command's vault check.

use super::*;

#[test]
fn the_senders_quoted_words_split_as_a_shell_does() {
    assert_eq!(
        shell_words(r#"reverb-receive '--vault' '/srv/it'\''s vault' --job "a \"b\"" c\ d"#),
        Some(
            [
                "reverb-receive",
                "--vault",
                "/srv/it's vault",
                "--job",
                r#"a "b""#,
                "c d"
            ]
            .map(String::from)
            .to_vec()
        )
    );
    assert_eq!(shell_words("a 'unclosed"), None);
    assert_eq!(shell_words("  "), Some(Vec::new()));
}

#[test]
fn the_requested_vault_must_be_this_one() {
    let ours = Path::new("/srv/vault");
    for same in [
        "reverb-receive '--vault' '/srv/vault' '--job' 'documents'",
        "reverb-receive --vault=/srv/vault/",
        "/usr/local/bin/reverb-receive --vault /srv//vault --init",
        "reverb-receive --job documents",
        "",
    ] {
        assert!(check_requested_vault(same, ours).is_ok(), "{same}");
    }
    for other in [
        "reverb-receive '--vault' '/srv/vaul' '--job' 'documents'",
        "reverb-receive --vault /srv/vault/documents",
    ] {
        let e = check_requested_vault(other, ours).expect_err(other);
        assert!(matches!(e, Error::Refused(_)), "{e:?}");
        assert!(e.to_string().contains("/srv/vault only"), "{e}");
    }
}
