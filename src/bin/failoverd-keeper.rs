//! `failoverd-keeper`: the keeper alone (`failoverd keeper`, see `failover::keeper`), built
//! without the daemon's runtime, TLS, RPC or chain code, so that each keeper a member runs — one
//! per validator it is active for — carries about 0.15 MB of private memory instead of the
//! daemon binary's 0.8 MB. A daemon uses it only when one of its own build lies beside it
//! (`--version` says which; `failover::keeper::program`).
//!
//! It takes exactly what the daemon passes to `failoverd keeper` — `keeper --spec JSON` — and
//! nothing else: it is started by a daemon, not by hand.

use std::io::Write;
use std::process::ExitCode;

use failover::keeper::program::KEEPER_VERSION_LINE;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.as_slice() {
        [version] if version == "--version" => {
            let _ = writeln!(std::io::stdout(), "{KEEPER_VERSION_LINE}");
            ExitCode::SUCCESS
        }
        [keeper, flag, spec] if keeper == "keeper" && flag == "--spec" => {
            let parsed = spec
                .to_str()
                .ok_or("it is not UTF-8".to_string())
                .and_then(|s| serde_json::from_str::<failover::keeper::KeeperSpec>(s).map_err(|e| e.to_string()));
            match parsed {
                Ok(spec) => ExitCode::from(failover::keeper::process::run(spec)),
                Err(e) => refuse(&format!("--spec is not a keeper spec: {e}")),
            }
        }
        _ => refuse("expected `keeper --spec JSON` (as a failoverd daemon starts it) or `--version`"),
    }
}

fn refuse(why: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "failoverd-keeper: {why}; nothing was started");
    ExitCode::from(2)
}
