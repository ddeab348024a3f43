//! Quoting values for the POSIX shell and for YAML, so a rendered script or manifest means
//! exactly the value it was given, whatever characters the value holds.

/// `value` as one POSIX shell word: left bare when it holds only characters no shell treats
/// specially, otherwise in single quotes, each `'` written as `'\''` (close, escaped quote,
/// reopen). Inside single quotes nothing is special, newlines included.
pub fn shell_word(value: &str) -> String {
    let safe = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    // `=` at the start of a word is fine in sh; `~` and `#` are not (tilde, comment), so they
    // are not in the safe set.
    if safe {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A command line as one shell line: each word quoted by [`shell_word`], joined by spaces.
pub fn shell_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| shell_word(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `value` as a YAML double-quoted scalar. A JSON string is one (YAML 1.2 reads JSON), and
/// serde_json escapes `"`, `\` and every control character, so no value can end the scalar,
/// start a comment or change the document's structure.
pub fn yaml_str(value: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: [&str; 14] = [
        "",
        "plain",
        "two words",
        "it's",
        "'",
        "''",
        "\"double\"",
        "$HOME",
        "${IFS}x",
        "`id`",
        "$(echo pwned)",
        "line one\nline two",
        "tab\there; rm -rf / # &| <>",
        "~root *.rs ?x [a] \\back",
    ];

    /// The shell itself reads each quoted value back as exactly that value, as one word.
    #[test]
    fn sh_reads_every_quoted_value_back_unchanged() {
        for value in HOSTILE {
            let script = format!("printf '%s' {}", shell_word(value));
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .expect("run sh");
            assert!(out.status.success(), "sh failed on {script:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), value, "{script:?}");
        }
    }

    /// A quoted line is one word per value: sh sees as many arguments as were given.
    #[test]
    fn sh_splits_a_quoted_line_into_the_same_words() {
        let argv: Vec<&str> = HOSTILE.to_vec();
        let script = format!(
            "for a in {}; do printf '[%s]' \"$a\"; done",
            shell_line(&argv)
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("run sh");
        let want: String = argv.iter().map(|a| format!("[{a}]")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }

    #[test]
    fn safe_words_stay_bare_and_others_are_quoted() {
        assert_eq!(
            shell_word("/opt/runner/bin/runner"),
            "/opt/runner/bin/runner"
        );
        assert_eq!(shell_word("--time=01:00:00"), "--time=01:00:00");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("~"), "'~'");
    }

    #[test]
    fn yaml_strings_escape_what_would_end_or_break_them() {
        assert_eq!(yaml_str("plain"), "\"plain\"");
        assert_eq!(yaml_str("a\"b"), "\"a\\\"b\"");
        assert_eq!(yaml_str("back\\slash"), "\"back\\\\slash\"");
        assert_eq!(yaml_str("two\nlines"), "\"two\\nlines\"");
        assert_eq!(yaml_str("# not a comment: {x}"), "\"# not a comment: {x}\"");
        assert_eq!(yaml_str("\u{1b}[0m"), "\"\\u001b[0m\"");
    }
}
