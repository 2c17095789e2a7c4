//! Users and groups of the node root, read from the root's own `/etc/passwd` and `/etc/group` (plus
//! `/usr/lib/passwd` and `/usr/lib/group`, which nss-altfiles adds on CoreOS), never from this machine's
//! NSS. And the one edit the daemon makes to `/etc/shadow`: core's password hash.

use anyhow::Context;

use super::root::Root;
use crate::config::Owner;

/// One passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// The users and groups of a root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    users: Vec<Account>,
    groups: Vec<(String, u32)>,
}

/// Where user and group databases live in a root, in lookup order.
pub const PASSWD_FILES: &[&str] = &["/etc/passwd", "/usr/lib/passwd"];
pub const GROUP_FILES: &[&str] = &["/etc/group", "/usr/lib/group"];
pub const SHADOW: &str = "/etc/shadow";

impl Accounts {
    /// Read the root's databases. Missing files are empty; malformed lines are skipped, as glibc does.
    pub fn load(root: &Root) -> anyhow::Result<Accounts> {
        let mut accounts = Accounts::default();
        for path in PASSWD_FILES {
            if let Some(bytes) = root.read_optional(path)? {
                let text = String::from_utf8_lossy(&bytes);
                accounts.users.extend(parse_passwd(&text));
            }
        }
        for path in GROUP_FILES {
            if let Some(bytes) = root.read_optional(path)? {
                let text = String::from_utf8_lossy(&bytes);
                accounts.groups.extend(parse_group(&text));
            }
        }
        Ok(accounts)
    }

    /// Build from file contents (tests).
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        Accounts {
            users: parse_passwd(passwd),
            groups: parse_group(group),
        }
    }

    /// The first entry for `name` (earlier files win, as in NSS).
    pub fn user(&self, name: &str) -> Option<&Account> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn group(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|(n, _)| n == name).map(|(_, g)| *g)
    }

    /// The uid for a file owner. `root` is uid 0 even in a root without a passwd file.
    pub fn uid_for(&self, owner: &Owner) -> Result<u32, String> {
        match owner {
            Owner::Root => Ok(0),
            Owner::Id(id) => Ok(*id),
            Owner::Name(name) => match self.user(name) {
                Some(u) => Ok(u.uid),
                None if name == "root" => Ok(0),
                None => Err(format!(
                    "user {name:?} does not exist in the node's /etc/passwd"
                )),
            },
        }
    }

    /// The gid for a file group. `root` is gid 0 even in a root without a group file.
    pub fn gid_for(&self, owner: &Owner) -> Result<u32, String> {
        match owner {
            Owner::Root => Ok(0),
            Owner::Id(id) => Ok(*id),
            Owner::Name(name) => match self.group(name) {
                Some(g) => Ok(g),
                None if name == "root" => Ok(0),
                None => Err(format!(
                    "group {name:?} does not exist in the node's /etc/group"
                )),
            },
        }
    }
}

fn parse_passwd(text: &str) -> Vec<Account> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(Account {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some((f[0].to_string(), f[2].parse().ok()?))
        })
        .collect()
}

/// The password field of `user` in a shadow file.
pub fn shadow_password<'a>(shadow: &'a str, user: &str) -> Option<&'a str> {
    shadow.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        (f.next() == Some(user)).then(|| f.next().unwrap_or(""))
    })
}

/// `shadow` with `user`'s password field set to `hash` (an entry is appended when there is none).
/// Every other byte is kept.
pub fn shadow_with_password(shadow: &str, user: &str, hash: &str) -> String {
    let mut out = String::with_capacity(shadow.len() + hash.len());
    let mut found = false;
    for line in shadow.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let mut f = body.splitn(3, ':');
        if !found && f.next() == Some(user) {
            found = true;
            f.next();
            let rest = f.next();
            out.push_str(user);
            out.push(':');
            out.push_str(hash);
            if let Some(rest) = rest {
                out.push(':');
                out.push_str(rest);
            }
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    if !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{user}:{hash}::0:99999:7:::\n"));
    }
    out
}

/// Read the root's shadow file as text.
pub fn read_shadow(root: &Root) -> anyhow::Result<Option<String>> {
    root.read_optional(SHADOW)?
        .map(|b| String::from_utf8(b).context("the node's /etc/shadow is not valid UTF-8"))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken line\ncore:x:1000:1000:CoreOS Admin:/var/home/core:/bin/bash\n+nis\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:core\ncore:x:1000:\nbad\n";

    #[test]
    fn owners_resolve_from_the_root_databases() {
        let a = Accounts::parse(PASSWD, GROUP);
        assert_eq!(a.uid_for(&Owner::Name("core".into())), Ok(1000));
        assert_eq!(a.gid_for(&Owner::Name("wheel".into())), Ok(10));
        assert_eq!(a.uid_for(&Owner::Id(4242)), Ok(4242));
        assert_eq!(a.uid_for(&Owner::Root), Ok(0));
        assert_eq!(a.user("core").unwrap().home, "/var/home/core");
        assert_eq!(
            a.uid_for(&Owner::Name("ghost".into())).unwrap_err(),
            "user \"ghost\" does not exist in the node's /etc/passwd"
        );
        assert_eq!(
            a.gid_for(&Owner::Name("ghosts".into())).unwrap_err(),
            "group \"ghosts\" does not exist in the node's /etc/group"
        );
        // root is root even without databases.
        let empty = Accounts::default();
        assert_eq!(empty.uid_for(&Owner::Name("root".into())), Ok(0));
        assert_eq!(empty.gid_for(&Owner::Name("root".into())), Ok(0));
    }

    #[test]
    fn shadow_edit_keeps_everything_else() {
        let shadow = "root:*:19000:0:99999:7:::\ncore:!!:19000:0:99999:7:::\nbin:*:19000::::::";
        let out = shadow_with_password(shadow, "core", "$6$salt$hash");
        assert_eq!(
            out,
            "root:*:19000:0:99999:7:::\ncore:$6$salt$hash:19000:0:99999:7:::\nbin:*:19000::::::"
        );
        assert_eq!(shadow_password(&out, "core"), Some("$6$salt$hash"));
        assert_eq!(shadow_with_password(&out, "core", "$6$salt$hash"), out);
        let added = shadow_with_password("root:*:1:::::\n", "core", "*");
        assert_eq!(added, "root:*:1:::::\ncore:*::0:99999:7:::\n");
        assert_eq!(shadow_password(&added, "nobody"), None);
    }
}
