//! Shared helpers of the host integration tests: a realistic node root in a temp dir, full tree
//! snapshots, and the real binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_machine-config-daemon");
pub const CORE_UID: u32 = 1000;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A node root shaped like an ostree-booted CoreOS: `/home -> var/home`, `/usr/etc` with the image's
/// defaults, vendor units in `/usr/lib/systemd/system`, users in the root's own passwd/group/shadow.
pub struct TestRoot {
    pub dir: tempfile::TempDir,
}

pub const CHRONY_IMAGE: &str = "pool 2.rhel.pool.ntp.org iburst\ndriftfile /var/lib/chrony/drift\n";
pub const REGISTRIES_ADMIN: &str =
    "# admin's own\nunqualified-search-registries = [\"docker.io\"]\n";
pub const SHADOW: &str = "root:*:19000:0:99999:7:::\ncore:!!:19000:0:99999:7:::\n";

impl TestRoot {
    pub fn new() -> TestRoot {
        let t = TestRoot {
            dir: tempfile::tempdir().unwrap(),
        };
        t.write(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\ncore:x:1000:1000:CoreOS Admin:/var/home/core:/bin/bash\n",
            0o644,
        );
        t.write(
            "etc/group",
            "root:x:0:\nwheel:x:10:core\ncore:x:1000:\n",
            0o644,
        );
        t.write("etc/shadow", SHADOW, 0o000);
        t.write("usr/etc/chrony.conf", CHRONY_IMAGE, 0o644);
        t.write("etc/chrony.conf", CHRONY_IMAGE, 0o644);
        t.write("etc/containers/registries.conf", REGISTRIES_ADMIN, 0o644);
        t.write(
            "usr/lib/systemd/system/vendor-tool.service",
            "[Service]\nExecStart=/usr/bin/true\n[Install]\nWantedBy=multi-user.target\n",
            0o644,
        );
        t.write(
            "usr/lib/systemd/system/nm-cloud-setup.service",
            "[Service]\nExecStart=/usr/bin/true\n[Install]\nWantedBy=NetworkManager.service\n",
            0o644,
        );
        t.write(
            "usr/lib/systemd/system/zincati.service",
            "[Service]\nExecStart=/usr/bin/zincati\n[Install]\nWantedBy=multi-user.target\n",
            0o644,
        );
        t.mkdir("etc/systemd/system/multi-user.target.wants", 0o755);
        t.symlink(
            "/usr/lib/systemd/system/zincati.service",
            "etc/systemd/system/multi-user.target.wants/zincati.service",
        );
        t.mkdir("var/home/core", 0o700);
        t.chown("var/home/core", CORE_UID, CORE_UID);
        t.symlink("var/home", "home");
        t
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }

    pub fn write(&self, rel: &str, contents: &str, mode: u32) {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn mkdir(&self, rel: &str, mode: u32) {
        let p = self.p(rel);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn symlink(&self, target: &str, rel: &str) {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    pub fn chown(&self, rel: &str, uid: u32, gid: u32) {
        std::os::unix::fs::lchown(self.p(rel), Some(uid), Some(gid)).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.p(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.p(rel).symlink_metadata().is_ok()
    }

    pub fn mode(&self, rel: &str) -> u32 {
        self.p(rel).symlink_metadata().unwrap().mode() & 0o7777
    }

    pub fn owner(&self, rel: &str) -> (u32, u32) {
        let m = self.p(rel).symlink_metadata().unwrap();
        (m.uid(), m.gid())
    }

    pub fn link(&self, rel: &str) -> Option<String> {
        std::fs::read_link(self.p(rel))
            .ok()
            .map(|t| t.display().to_string())
    }

    pub fn snapshot(&self) -> Tree {
        snapshot(self.path())
    }

    /// Run the binary with `args`, `--root` appended for apply/validate.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--root").arg(self.path());
        cmd.env_remove("FAILPOINTS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

/// One entry of a tree snapshot: everything an admin could notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        contents: Vec<u8>,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink(PathBuf),
}

pub type Tree = BTreeMap<PathBuf, Node>;

/// Every entry under `root` (relative paths), symlinks not followed.
pub fn snapshot(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = path.symlink_metadata().unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let node = if m.file_type().is_symlink() {
                Node::Symlink(std::fs::read_link(&path).unwrap())
            } else if m.is_dir() {
                stack.push(path.clone());
                Node::Dir {
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                }
            } else {
                Node::File {
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    contents: std::fs::read(&path).unwrap(),
                }
            };
            out.insert(rel, node);
        }
    }
    out
}

/// The paths whose entries differ between two snapshots (for readable assertion messages).
pub fn diff(a: &Tree, b: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, n) in a {
        match b.get(p) {
            None => out.push(format!("-{}", p.display())),
            Some(m) if m != n => out.push(format!("~{}", p.display())),
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            out.push(format!("+{}", p.display()));
        }
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the exit code, printing the output when it is not the expected one.
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}
