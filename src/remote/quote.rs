//! Shell quoting for values put into remote commands.

/// Quotes a value for a POSIX shell: safe characters pass as they are, anything else is put in
/// single quotes, with embedded single quotes written as `'\''`.
pub fn quote(value: &str) -> String {
    let safe = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if safe {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn safe_values_pass_unchanged() {
        assert_eq!(quote("metpx-sr3==3.3.1"), "metpx-sr3==3.3.1");
        assert_eq!(quote("/home/rl-px1/.config"), "/home/rl-px1/.config");
    }

    #[test]
    fn unsafe_values_are_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("a;b"), "'a;b'");
    }
}
