//! The QEMU command line, built as pure data so the rules are tested without starting a VM:
//! always software emulation (`-accel tcg`: KVM here only runs PVM kernels), `-no-reboot` (the harness
//! plays bootloader between boots), a restricted user network whose only way out is `guestfwd` to
//! ports on the host's 127.0.0.1, the serial console into a file, and a 9p share for commands.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The address the guest uses to reach the host's forwarded ports.
pub const HOST_ADDR_IN_GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

/// The 9p mount tag the guest's readiness script mounts.
pub const SHARE_TAG: &str = "vmtest";

/// A guest connection to `10.0.2.100:guest_port` is carried to `127.0.0.1:host_port` on the host
/// (one `socat` per connection). The host side is always loopback: nothing else is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestForward {
    pub guest_port: u16,
    pub host_port: u16,
}

impl GuestForward {
    /// The same port number on both sides, so `10.0.2.100:P` in the guest is `127.0.0.1:P` here.
    pub fn same_port(port: u16) -> Self {
        Self {
            guest_port: port,
            host_port: port,
        }
    }

    /// The URL authority the guest uses (`10.0.2.100:P`).
    pub fn guest_authority(&self) -> String {
        format!("{HOST_ADDR_IN_GUEST}:{}", self.guest_port)
    }

    fn netdev_option(&self) -> String {
        format!(
            "guestfwd=tcp:{HOST_ADDR_IN_GUEST}:{}-cmd:socat - TCP:127.0.0.1:{}",
            self.guest_port, self.host_port
        )
    }
}

/// Everything one QEMU launch needs.
#[derive(Debug, Clone)]
pub struct QemuSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub disk: PathBuf,
    pub serial_log: PathBuf,
    pub share_dir: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub forwards: Vec<GuestForward>,
}

/// QEMU option values double their commas.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

fn path(p: &std::path::Path) -> String {
    escape(&p.to_string_lossy())
}

/// The argument list for `qemu-system-x86_64`.
pub fn args(spec: &QemuSpec) -> Vec<OsString> {
    let mut netdev = String::from("user,id=n0,restrict=on");
    for fwd in &spec.forwards {
        netdev.push(',');
        netdev.push_str(&fwd.netdev_option());
    }
    let args: Vec<String> = vec![
        "-accel".into(),
        "tcg".into(),
        "-smp".into(),
        spec.cpus.to_string(),
        "-m".into(),
        spec.memory_mib.to_string(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        spec.kernel.to_string_lossy().into_owned(),
        "-initrd".into(),
        spec.initrd.to_string_lossy().into_owned(),
        "-append".into(),
        spec.append.clone(),
        // cache=unsafe: guest flushes are not forced to the host disk. A killed QEMU still leaves
        // every write the guest issued in the image (like a disk without a volatile cache).
        "-drive".into(),
        format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            path(&spec.disk)
        ),
        "-serial".into(),
        format!("file:{}", spec.serial_log.to_string_lossy()),
        "-netdev".into(),
        netdev,
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
        "-virtfs".into(),
        format!(
            "local,path={},mount_tag={SHARE_TAG},security_model=none,id={SHARE_TAG}",
            path(&spec.share_dir)
        ),
        "-device".into(),
        "virtio-rng-pci".into(),
    ];
    args.into_iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(forwards: Vec<GuestForward>) -> QemuSpec {
        QemuSpec {
            kernel: "/w/vmlinuz".into(),
            initrd: "/w/initrd".into(),
            append: "root=/dev/vda rw vmtest.boot=1".into(),
            disk: "/w/a,b/disk.img".into(),
            serial_log: "/w/boot-01.log".into(),
            share_dir: "/w/share".into(),
            memory_mib: 2048,
            cpus: 2,
            forwards,
        }
    }

    fn strings(spec: &QemuSpec) -> Vec<String> {
        args(spec)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn always_tcg_no_reboot_and_restricted_network() {
        let a = strings(&spec(vec![]));
        assert_eq!(value_after(&a, "-accel"), ["tcg"]);
        assert!(a.contains(&"-no-reboot".to_string()));
        assert_eq!(value_after(&a, "-netdev"), ["user,id=n0,restrict=on"]);
        assert!(!a.iter().any(|x| x.contains("kvm")));
        assert!(!a.iter().any(|x| x.contains("hostfwd")));
    }

    #[test]
    fn forwards_go_only_to_loopback_through_socat() {
        let a = strings(&spec(vec![
            GuestForward::same_port(5000),
            GuestForward {
                guest_port: 80,
                host_port: 41234,
            },
        ]));
        let netdev = value_after(&a, "-netdev")[0];
        assert_eq!(
            netdev,
            "user,id=n0,restrict=on,\
             guestfwd=tcp:10.0.2.100:5000-cmd:socat - TCP:127.0.0.1:5000,\
             guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:41234"
        );
        assert_eq!(
            GuestForward::same_port(5000).guest_authority(),
            "10.0.2.100:5000"
        );
    }

    #[test]
    fn paths_with_commas_are_escaped() {
        let a = strings(&spec(vec![]));
        assert_eq!(
            value_after(&a, "-drive"),
            ["file=/w/a,,b/disk.img,format=raw,if=virtio,cache=unsafe"]
        );
        assert_eq!(value_after(&a, "-serial"), ["file:/w/boot-01.log"]);
    }
}
