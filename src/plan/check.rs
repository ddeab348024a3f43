//! Checks of a resolved plan against this machine, without launching anything: programs on
//! PATH, working directories, fixed ports free. `runner validate` prints them; `runner exec`
//! runs them before the first engine starts.

use std::net::TcpListener;
use std::path::Path;

use super::diagnostic::Diagnostic;
use super::model::{EngineTarget, Plan, PortSpec};

/// Findings about the machine the plan would run on. A program missing from PATH is a
/// warning (the plan may be meant for another machine); a taken port or a missing working
/// directory is an error.
pub fn environment(plan: &Plan) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for e in &plan.engines {
        let EngineTarget::Launch(l) = &e.target else {
            continue;
        };
        if !l.cwd.is_dir() {
            out.push(
                Diagnostic::error(format!(
                    "engine `{}`: working directory {} does not exist",
                    e.name,
                    l.cwd.display()
                ))
                .hint("`cwd` is relative to the plan's directory"),
            );
        }
        let program = &l.argv[0];
        if !program_exists(program, &l.cwd) {
            out.push(
                Diagnostic::warning(format!(
                    "engine `{}`: program `{program}` is not on PATH here",
                    e.name
                ))
                .hint("install it before `runner exec`, or fix `launch`; the rest of the plan is sound"),
            );
        }
        if let PortSpec::Fixed(port) = l.port {
            if let Some(why) = port_taken(port) {
                out.push(
                    Diagnostic::error(format!(
                        "engine `{}`: port {port} is already in use ({why})",
                        e.name
                    ))
                    .hint("stop whatever holds it (a server from an earlier run?), or use `port = \"auto\"`"),
                );
            }
        }
    }
    for q in &plan.quality {
        let super::quality::QualityKind::Command(c) = &q.kind else {
            continue;
        };
        let program = &c.argv[0];
        if !program_exists(program, &c.cwd) {
            out.push(
                Diagnostic::warning(format!(
                    "quality step `{}`: program `{program}` is not on PATH here",
                    q.name
                ))
                .hint("install it before `runner exec` (its step would fail), or fix `command`"),
            );
        }
    }
    out
}

/// Whether `program` can be run from `cwd`: a path that exists, or a name found on PATH.
pub fn program_exists(program: &str, cwd: &Path) -> bool {
    if program.contains('/') {
        let p = Path::new(program);
        if p.is_absolute() {
            p.is_file()
        } else {
            cwd.join(p).is_file()
        }
    } else {
        which::which(program).is_ok()
    }
}

/// `Some(reason)` when a listener cannot bind 127.0.0.1:`port`; the reason names the process
/// that holds it when /proc can tell (a server left over from an earlier run, say).
pub fn port_taken(port: u16) -> Option<String> {
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => None,
        Err(e) => Some(match crate::procfs::port_holder(port) {
            Some(holder) => format!("{e}; held by {holder}"),
            None => e.to_string(),
        }),
    }
}
