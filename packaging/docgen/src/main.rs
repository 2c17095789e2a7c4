//! `docgen OUTDIR`: write the man pages and shell completions of machine-config-daemon to OUTDIR.
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out_dir] = args.as_slice() else {
        eprintln!(
            "usage: docgen OUTDIR (writes man8/*.8 and completions/* for machine-config-daemon)"
        );
        return ExitCode::from(2);
    };
    match docgen::generate(&PathBuf::from(out_dir)) {
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
    }
}
