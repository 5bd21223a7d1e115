//! `xenstored --socket PATH`: the host daemon. Debian's `xenstore-*` tools
//! and Xen's `test-xenstore` reach it with `XENSTORED_PATH=PATH`.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: xenstored --socket PATH\n\
serves a xenstore on the Unix socket PATH (clients: XENSTORED_PATH=PATH)\n";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut socket: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => socket = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprint!("xenstored: unknown argument `{other}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = socket else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    match xenstored::socket::bind_and_serve(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenstored: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
