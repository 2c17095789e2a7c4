//! `start` and `firstboot-complete-machineconfig`: the service commands.

use super::{CliError, FirstbootArgs, StartArgs, exit};
use crate::host;

/// Longest valid Node name (a DNS-1123 subdomain).
const MAX_NODE_NAME: usize = 253;

/// A Node's name is a lowercase DNS-1123 subdomain, as the API server checks it
/// (kubernetes `pkg/apis/core/validation`: `ValidateNodeName = NameIsDNSSubdomain`, i.e. apimachinery's
/// `IsDNS1123Subdomain`: at most 253 characters of dot-separated labels made of `[a-z0-9-]`, each
/// starting and ending with a letter or digit). Errors say what is wrong with `name`.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    let rule = "a node name is a lowercase DNS-1123 subdomain: letters a-z, digits, '-' and '.', \
                starting and ending with a letter or digit";
    if name.is_empty() {
        return Err(format!("it is empty ({rule})"));
    }
    if name.len() > MAX_NODE_NAME {
        return Err(format!(
            "it has {} characters, at most {MAX_NODE_NAME} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        let hint = if c.is_ascii_uppercase() {
            " (upper case)"
        } else {
            ""
        };
        return Err(format!("it contains {c:?}{hint}; {rule}"));
    }
    for label in name.split('.') {
        let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok_end(label.chars().next()) || !ok_end(label.chars().last()) {
            return Err(format!(
                "the part {label:?} does not start and end with a letter or digit; {rule}"
            ));
        }
    }
    Ok(())
}

/// `--node-name`/`NODE_NAME`, else the lowercased host name; either must be a valid Node name.
fn node_name(given: Option<String>) -> Result<String, CliError> {
    match given.filter(|n| !n.is_empty()) {
        Some(n) => {
            validate_node_name(&n).map_err(|why| {
                CliError::Invalid(format!(
                    "--node-name (or NODE_NAME): {n:?} is not a valid node name: {why}"
                ))
            })?;
            Ok(n)
        }
        None => {
            let host = nix::unistd::gethostname()
                .map_err(|e| {
                    CliError::Failed(anyhow::anyhow!(
                        "cannot read the host name for --node-name: {e}"
                    ))
                })?
                .to_string_lossy()
                .to_lowercase();
            validate_node_name(&host).map_err(|why| {
                CliError::Invalid(format!(
                    "the host name {host:?} is not a valid node name ({why}); set NODE_NAME or \
                     --node-name to the name of this node's Node object"
                ))
            })?;
            Ok(host)
        }
    }
}

pub(super) fn run_start(args: StartArgs) -> Result<u8, CliError> {
    if let Some(warning) = host::failpoints::configure_from_env().map_err(CliError::Invalid)? {
        eprintln!("warning: {warning}");
    }
    let node_name = node_name(args.node_name)?;
    if let Some(k) = &args.kubeconfig {
        if !k.is_file() {
            return Err(CliError::Invalid(format!(
                "--kubeconfig: {}: {}",
                k.display(),
                if k.exists() {
                    "not a file"
                } else {
                    "does not exist"
                }
            )));
        }
    }
    let opts = crate::daemon::service::StartOptions {
        node_name,
        kubeconfig: args.kubeconfig,
        root: args.root,
        sysroot: args.sysroot,
        drain_mode: args.drain_mode,
        drain_timeout: args.drain_timeout,
        metrics_listen: args.metrics_listen,
        backend: args.backend,
        pull_concurrency: args.pull_concurrency.into(),
        test_only_simulated_boot: args.test_only_simulated_boot,
        gate: crate::daemon::gate::GateOptions {
            check_timeout: args.health_check_timeout,
            ready_timeout: args.health_ready_timeout,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.into()))?;
    runtime
        .block_on(crate::daemon::service::run(opts))
        .map_err(CliError::Failed)?;
    Ok(exit::OK)
}

pub(super) fn run_firstboot(args: FirstbootArgs) -> Result<u8, CliError> {
    if let Some(warning) = host::failpoints::configure_from_env().map_err(CliError::Invalid)? {
        eprintln!("warning: {warning}");
    }
    use crate::daemon::firstboot::{FirstbootOptions, FirstbootOutcome, run};
    let opts = FirstbootOptions {
        machineconfig_file: args.machineconfig_file,
        root: args.root,
        sysroot: args.sysroot,
        backend: args.backend,
        test_only_simulated_boot: args.test_only_simulated_boot,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(e.into()))?;
    match runtime.block_on(run(opts)).map_err(CliError::Failed)? {
        FirstbootOutcome::NothingToDo(why) => {
            println!("first boot: nothing to do: {why}");
            Ok(exit::OK)
        }
        FirstbootOutcome::Rebooting => {
            println!("first boot: config applied, rebooting");
            Ok(exit::OK)
        }
        FirstbootOutcome::Invalid(msg) => Err(CliError::Invalid(msg)),
        FirstbootOutcome::Unreconcilable(msg) => {
            eprintln!("{msg}");
            Ok(exit::UNRECONCILABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_follow_the_api_servers_rule() {
        for ok in [
            "worker-0",
            "ip-10-0-1-2.ec2.internal",
            "a",
            "0node",
            &"a".repeat(253),
        ] {
            assert_eq!(validate_node_name(ok), Ok(()), "{ok}");
        }
        let err = |n: &str| validate_node_name(n).unwrap_err();
        assert!(err("Foo_Bar").starts_with("it contains 'F' (upper case);"));
        assert!(err("foo_bar").starts_with("it contains '_';"));
        assert!(err("-node").starts_with("the part \"-node\" does not start and end"));
        assert!(err("node.").starts_with("the part \"\" does not start"));
        assert!(err("a..b").starts_with("the part \"\""));
        assert!(err("").starts_with("it is empty"));
        assert_eq!(
            err(&"a".repeat(254)),
            "it has 254 characters, at most 253 are allowed"
        );
    }
}
