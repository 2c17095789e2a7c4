//! Splitting MachineConfig `spec.kernelArguments` entries into kernel command line tokens.
//!
//! One entry may hold several arguments (`"nosmt mitigations=auto"`). Splitting is shell-like on spaces
//! and honours double quotes, which stay in the token as the kernel expects them (`foo="a b"`).

/// Why an entry cannot be split into kernel arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KargError {
    #[error("unterminated double quote in kernel argument {0:?}")]
    UnterminatedQuote(String),
    #[error("kernel argument {0:?} contains a control character (newline, tab, …)")]
    ControlCharacter(String),
    #[error("kernel argument {0:?} starts with '=' (a key is required)")]
    EmptyKey(String),
}

/// Split one `kernelArguments` entry into tokens.
pub fn split(entry: &str) -> Result<Vec<String>, KargError> {
    if entry.chars().any(|c| c.is_control()) {
        return Err(KargError::ControlCharacter(entry.to_string()));
    }
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    for c in entry.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            ' ' if !in_quotes => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if in_quotes {
        return Err(KargError::UnterminatedQuote(entry.to_string()));
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    if let Some(bad) = tokens.iter().find(|t| t.starts_with('=')) {
        return Err(KargError::EmptyKey(bad.clone()));
    }
    Ok(tokens)
}

/// Split every entry; the error carries the index of the offending entry.
pub fn split_all(entries: &[String]) -> Result<Vec<String>, (usize, KargError)> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        out.extend(split(e).map_err(|err| (i, err))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splitting_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            ("nosmt", &["nosmt"]),
            ("nosmt  mitigations=auto", &["nosmt", "mitigations=auto"]),
            (" a b ", &["a", "b"]),
            (r#"foo="a b" bar"#, &[r#"foo="a b""#, "bar"]),
            (
                r#"dyndbg="file drivers/x.c +p""#,
                &[r#"dyndbg="file drivers/x.c +p""#],
            ),
            (r#""quoted whole""#, &[r#""quoted whole""#]),
            (
                "console=tty0 console=ttyS0,115200n8",
                &["console=tty0", "console=ttyS0,115200n8"],
            ),
        ];
        for (input, want) in cases {
            let got = split(input).unwrap();
            assert_eq!(
                got,
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn invalid_entries() {
        assert!(matches!(
            split(r#"foo="a b"#),
            Err(KargError::UnterminatedQuote(_))
        ));
        assert!(matches!(split("a\nb"), Err(KargError::ControlCharacter(_))));
        assert!(matches!(split("a\tb"), Err(KargError::ControlCharacter(_))));
        assert!(matches!(split("=value"), Err(KargError::EmptyKey(_))));
        assert_eq!(split_all(&["ok".into(), "\"bad".into()]).unwrap_err().0, 1);
    }

    proptest! {
        #[test]
        fn never_panics_and_tokens_have_no_bare_spaces(s in ".*") {
            if let Ok(tokens) = split(&s) {
                for t in tokens {
                    prop_assert!(!t.is_empty());
                    // a space may only appear inside quotes
                    let mut inq = false;
                    for c in t.chars() {
                        if c == '"' { inq = !inq; }
                        prop_assert!(c != ' ' || inq);
                    }
                }
            }
        }

        #[test]
        fn join_then_split_is_identity(tokens in proptest::collection::vec("[a-z0-9_.,=-]{1,12}", 0..8)) {
            let tokens: Vec<String> = tokens.into_iter().filter(|t| !t.starts_with('=')).collect();
            prop_assert_eq!(split(&tokens.join(" ")).unwrap(), tokens);
        }
    }
}
