//! Kernel arguments as ostree records them in boot entries.

/// Split a boot entry's `options` line into the user's kernel arguments: whitespace separated,
/// without the `ostree=` argument that ostree itself writes for every deployment.
pub fn user_kargs(options: &str) -> Vec<String> {
    options
        .split_whitespace()
        .filter(|t| !t.starts_with("ostree="))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_kargs_drop_ostree_argument() {
        assert_eq!(
            user_kargs("root=UUID=1 rw  ostree=/ostree/boot.1/os/abc/0 quiet"),
            vec!["root=UUID=1", "rw", "quiet"]
        );
    }
}
