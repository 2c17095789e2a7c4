//! The D-Bus contract: the rpm-ostreed double (`testbed::rpm_ostreed`) introspected and compared, member by
//! member, with a table transcribed from coreos/rpm-ostree `src/daemon/org.projectatomic.rpmostree1.xml`.
//! The backend's calls are checked against the double by `tests/os_rpm_ostree.rs`; together a wrong
//! signature on either side fails.

use std::collections::HashMap;

use anyhow::Result;
use testbed::PrivateBus;
use testbed::rpm_ostreed::{FakeDeployment, FakeImage, FakeRpmOstreed, RpmOstreedState};

const V1: &str = "quay.io/openshift/rhcos@sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// (interface, kind, member, in-signature, out-signature) transcribed from coreos/rpm-ostree
/// src/daemon/org.projectatomic.rpmostree1.xml; `used` marks what the backend calls or reads.
const CONTRACT: &[(&str, &str, &str, &str, &str, bool)] = &[
    ("Sysroot", "method", "RegisterClient", "a{sv}", "", true),
    ("Sysroot", "method", "UnregisterClient", "a{sv}", "", false),
    ("Sysroot", "method", "Reload", "", "", false),
    ("Sysroot", "method", "ReloadConfig", "", "", false),
    ("Sysroot", "method", "GetOS", "s", "o", false),
    ("Sysroot", "property", "Booted", "", "o", true),
    ("Sysroot", "property", "Path", "", "s", false),
    (
        "Sysroot",
        "property",
        "ActiveTransaction",
        "",
        "(sss)",
        false,
    ),
    (
        "Sysroot",
        "property",
        "ActiveTransactionPath",
        "",
        "s",
        true,
    ),
    (
        "Sysroot",
        "property",
        "AutomaticUpdatePolicy",
        "",
        "s",
        false,
    ),
    ("Sysroot", "property", "Deployments", "", "aa{sv}", true),
    ("OS", "method", "Rebase", "a{sv}sas", "s", true),
    ("OS", "method", "UpdateDeployment", "a{sv}a{sv}", "s", true),
    ("OS", "method", "KernelArgs", "sasasasa{sv}", "s", true),
    ("OS", "method", "Cleanup", "as", "s", true),
    ("OS", "method", "FinalizeDeployment", "a{sv}", "s", true),
    ("OS", "method", "Rollback", "a{sv}", "s", true),
    (
        "OS",
        "method",
        "GetDeploymentBootConfig",
        "sb",
        "a{sv}",
        true,
    ),
    ("OS", "property", "Name", "", "s", false),
    ("OS", "property", "BootedDeployment", "", "a{sv}", false),
    ("OS", "property", "DefaultDeployment", "", "a{sv}", false),
    ("OS", "property", "RollbackDeployment", "", "a{sv}", false),
    ("Transaction", "method", "Start", "", "b", true),
    ("Transaction", "method", "Cancel", "", "", false),
    ("Transaction", "property", "Title", "", "s", false),
    (
        "Transaction",
        "property",
        "InitiatingClientDescription",
        "",
        "s",
        false,
    ),
    ("Transaction", "signal", "Finished", "", "bs", true),
    ("Transaction", "signal", "Message", "", "s", true),
    ("Transaction", "signal", "TaskBegin", "", "s", true),
    ("Transaction", "signal", "TaskEnd", "", "s", true),
    ("Transaction", "signal", "PercentProgress", "", "su", true),
    ("Transaction", "signal", "ProgressEnd", "", "", false),
    (
        "Transaction",
        "signal",
        "DownloadProgress",
        "",
        "(tt)(uu)(uuu)(uuut)(uu)(tt)",
        false,
    ),
    (
        "Transaction",
        "signal",
        "SignatureProgress",
        "",
        "avs",
        false,
    ),
];

/// Members of introspection XML: (interface suffix, kind, name) → (in, out) signatures. Signal and
/// property types count as "out".
fn parse_introspection(xml: &str) -> HashMap<(String, String, String), (String, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let start = tag.find(&key)? + key.len();
        let end = tag[start..].find('"')? + start;
        Some(
            tag[start..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    let mut out = HashMap::new();
    let mut iface = String::new();
    let mut member: Option<(String, String)> = None;
    let mut sigs = (String::new(), String::new());
    for raw in xml.split('<').skip(1) {
        let tag = raw.split('>').next().unwrap_or_default();
        let name = tag.split_whitespace().next().unwrap_or_default();
        match name {
            "interface" => {
                iface = attr(tag, "name")
                    .unwrap_or_default()
                    .trim_start_matches("org.projectatomic.rpmostree1.")
                    .to_string();
            }
            "method" | "signal" => {
                member = Some((name.to_string(), attr(tag, "name").unwrap_or_default()));
                sigs = Default::default();
                if tag.ends_with('/') {
                    let (k, n) = member.take().unwrap();
                    out.insert((iface.clone(), k, n), Default::default());
                }
            }
            "arg" => {
                let ty = attr(tag, "type").unwrap_or_default();
                let is_in = member.as_ref().is_some_and(|(k, _)| k == "method")
                    && attr(tag, "direction").as_deref() != Some("out");
                if is_in {
                    sigs.0.push_str(&ty);
                } else {
                    sigs.1.push_str(&ty);
                }
            }
            "/method" | "/signal" => {
                if let Some((k, n)) = member.take() {
                    out.insert((iface.clone(), k, n), std::mem::take(&mut sigs));
                }
            }
            "property" => {
                out.insert(
                    (
                        iface.clone(),
                        "property".into(),
                        attr(tag, "name").unwrap_or_default(),
                    ),
                    (String::new(), attr(tag, "type").unwrap_or_default()),
                );
            }
            _ => {}
        }
    }
    out
}

async fn introspect(conn: &zbus::Connection, dest: Option<&str>, path: &str) -> Result<String> {
    let reply = conn
        .call_method(
            dest,
            path,
            Some("org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .await?;
    Ok(reply.body().deserialize::<String>()?)
}

#[tokio::test]
async fn the_double_speaks_rpm_ostreeds_interface_xml() -> Result<()> {
    let bus = PrivateBus::start()?;
    let mut st = RpmOstreedState::default();
    let image = FakeImage::rhcos(
        "sha256:1111111111111111111111111111111111111111111111111111111111111111",
        "416.94.1",
    );
    st.deployments
        .push(FakeDeployment::booted(V1, &image, &["rw"]));
    let _service = FakeRpmOstreed::start(bus.address(), st).await?;
    let conn = zbus::connection::Builder::address(bus.address())
        .build()
        .await?;
    let bus_name = Some(testbed::rpm_ostreed::BUS_NAME);
    let mut members = parse_introspection(
        &introspect(&conn, bus_name, testbed::rpm_ostreed::SYSROOT_PATH).await?,
    );
    members.extend(parse_introspection(
        &introspect(&conn, bus_name, testbed::rpm_ostreed::OS_PATH).await?,
    ));
    // The Transaction interface lives on a transaction's peer-to-peer server.
    let address: String = conn
        .call_method(
            bus_name,
            testbed::rpm_ostreed::OS_PATH,
            Some("org.projectatomic.rpmostree1.OS"),
            "Cleanup",
            &(vec!["base"],),
        )
        .await?
        .body()
        .deserialize()?;
    let peer = zbus::connection::Builder::address(address.as_str())
        .p2p()
        .build()
        .await?;
    members.extend(parse_introspection(&introspect(&peer, None, "/").await?));
    let mut wrong = Vec::new();
    for (iface, kind, name, ins, outs, _used) in CONTRACT {
        let key = (iface.to_string(), kind.to_string(), name.to_string());
        match members.get(&key) {
            Some((i, o)) if i == ins && o == outs => {}
            Some((i, o)) => wrong.push(format!(
                "{iface}.{name}: ({i}) -> ({o}), the XML says ({ins}) -> ({outs})"
            )),
            None => wrong.push(format!("{iface}.{name} ({kind}) is missing")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(
        CONTRACT.iter().filter(|c| c.5).count(),
        17,
        "every member the backend uses is in the table"
    );
    Ok(())
}
