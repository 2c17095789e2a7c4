//! `docgen OUTDIR`: write the man pages and shell completions of machine-config-daemon to OUTDIR.
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: docgen OUTDIR\n\n\
Writes the man pages (OUTDIR/man8/*.8) and shell completions (OUTDIR/completions/*) of\n\
machine-config-daemon, generated from its command line definition. OUTDIR is created if missing.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        // An option is never an output directory (`docgen --version` must not create one).
        [out_dir] if !out_dir.starts_with('-') => match docgen::generate(&PathBuf::from(out_dir)) {
            Ok(written) => {
                for path in written {
                    println!("{}", path.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("docgen: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
