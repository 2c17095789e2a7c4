//! `ostree admin status` as the guest prints it, parsed into deployments: the booted one (`*`),
//! the staged, pending and rollback ones. This is what an admin on the node would read.

/// One deployment line of `ostree admin status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub osname: String,
    pub checksum: String,
    pub serial: u32,
    pub booted: bool,
    /// The word in parentheses: `staged`, `pending`, `rollback`, or none.
    pub state: Option<String>,
    /// `origin refspec: …` or `origin: <…>` under the line, when printed.
    pub origin: Option<String>,
}

/// All deployments, in the order ostree lists them (the boot order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub deployments: Vec<Deployment>,
}

fn is_checksum(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parse the text; lines that are not deployments or origins are ignored.
pub fn parse(text: &str) -> Status {
    let mut deployments: Vec<Deployment> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(origin) = trimmed
            .strip_prefix("origin refspec:")
            .or_else(|| trimmed.strip_prefix("origin:"))
        {
            if let Some(last) = deployments.last_mut() {
                last.origin = Some(origin.trim().to_string());
            }
            continue;
        }
        let booted = trimmed.starts_with("* ");
        let body = trimmed.trim_start_matches("* ");
        let mut words = body.split_whitespace();
        let (Some(osname), Some(id)) = (words.next(), words.next()) else {
            continue;
        };
        let Some((checksum, serial)) = id.split_once('.') else {
            continue;
        };
        let Ok(serial) = serial.parse() else {
            continue;
        };
        if !is_checksum(checksum) {
            continue;
        }
        let rest: Vec<&str> = words.collect();
        let rest = rest.join(" ");
        let state = rest
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .map(|(s, _)| s.to_string());
        deployments.push(Deployment {
            osname: osname.to_string(),
            checksum: checksum.to_string(),
            serial,
            booted,
            state,
            origin: None,
        });
    }
    Status { deployments }
}

impl Status {
    pub fn booted(&self) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.booted)
    }

    fn with_state(&self, state: &str) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.state.as_deref() == Some(state))
    }

    pub fn staged(&self) -> Option<&Deployment> {
        self.with_state("staged")
    }

    pub fn pending(&self) -> Option<&Deployment> {
        self.with_state("pending")
    }

    pub fn rollback(&self) -> Option<&Deployment> {
        self.with_state("rollback")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ch: char) -> String {
        std::iter::repeat_n(ch, 64).collect()
    }

    #[test]
    fn parses_booted_staged_and_rollback() {
        let text = format!(
            "  debian {b}.0 (staged)\n    origin refspec: host:vmtest/v2\n\
             * debian {a}.0\n    origin refspec: vmtest/image\n\
             \x20 debian {d}.1 (rollback)\n    origin refspec: vmtest/image\n",
            a = c('a'),
            b = c('b'),
            d = c('d'),
        );
        let s = parse(&text);
        assert_eq!(s.deployments.len(), 3);
        let booted = s.booted().unwrap();
        assert_eq!(booted.checksum, c('a'));
        assert_eq!(booted.origin.as_deref(), Some("vmtest/image"));
        assert_eq!(s.staged().unwrap().checksum, c('b'));
        assert_eq!(
            s.staged().unwrap().origin.as_deref(),
            Some("host:vmtest/v2")
        );
        assert_eq!(s.rollback().unwrap().serial, 1);
        assert!(s.pending().is_none());
    }

    #[test]
    fn ignores_noise_and_non_checksums() {
        let s = parse("error: not booted\n* debian notachecksum.0\n  GPG: no signature\n");
        assert_eq!(s, Status::default());
    }
}
