//! The few facts the runner needs from /proc about an engine's process group: who is in it
//! and how much resident memory it holds. Read directly rather than through the `procfs`
//! crate: two small files per process are all that is needed, and this keeps the sampler's
//! hot loop free of the crate's full parsing.

use std::fs;

/// One process, as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub pgid: i32,
    /// The state letter: R, S, D, Z (zombie), T, ...
    pub state: char,
    pub comm: String,
}

impl std::fmt::Display for ProcInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({}, state {})", self.pid, self.comm, self.state)
    }
}

/// Parses /proc/<pid>/stat. The command name may contain spaces and parentheses, so the
/// fields after it are found from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcInfo> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_string();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    let pgid = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        pgid,
        state,
        comm,
    })
}

/// Every live (non-zombie) process whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<ProcInfo> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|t| parse_stat(&t))
        .filter(|p| p.pgid == pgid && p.state != 'Z' && p.state != 'X')
        .collect()
}

/// Resident memory of one process, from the `VmRSS` line of /proc/<pid>/status.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory of every live process of a group, summed (shared pages count once per
/// process, as `ps` would show them).
pub fn group_rss_bytes(pgid: i32) -> u64 {
    group_members(pgid)
        .iter()
        .filter_map(|p| rss_bytes(p.pid))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let p = parse_stat("4242 (vllm (worker) 1) S 1 4200 4200 0 -1 4194560").expect("parses");
        assert_eq!((p.pid, p.pgid, p.state), (4242, 4200, 'S'));
        assert_eq!(p.comm, "vllm (worker) 1");
    }

    #[test]
    fn finds_this_process_group_and_its_memory() {
        let me = std::process::id() as i32;
        let pgid = nix::unistd::getpgid(None).expect("pgid").as_raw();
        assert!(group_members(pgid).iter().any(|p| p.pid == me));
        assert!(rss_bytes(me).unwrap_or(0) > 0);
    }
}

/// The socket inodes (`socket:[N]`) listening on a local TCP port, IPv4 or IPv6.
fn listening_sockets(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; inode is field 9.
            let listening = f.get(3) == Some(&"0A");
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if listening && local_port == Some(port) {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    inodes
}

/// Whether process `pid` has one of `sockets` open.
fn holds_socket(pid: i32, sockets: &[String]) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|t| sockets.iter().any(|i| t.as_os_str() == i.as_str()))
    })
}

/// Whether a process of group `pgid` holds a socket listening on `port`: the engine the
/// runner launched, not a stranger on the same port, answers there.
pub fn group_listens_on(pgid: i32, port: u16) -> bool {
    let sockets = listening_sockets(port);
    !sockets.is_empty()
        && group_members(pgid)
            .iter()
            .any(|p| holds_socket(p.pid, &sockets))
}

/// Who listens on a local TCP port, when /proc can tell: `pid (comm)`.
pub fn port_holder(port: u16) -> Option<String> {
    let sockets = listening_sockets(port);
    if sockets.is_empty() {
        return None;
    }
    for e in fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if holds_socket(pid, &sockets) {
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let p = parse_stat(&stat)?;
            return Some(format!("pid {} ({})", p.pid, p.comm));
        }
    }
    None
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn names_the_process_holding_a_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let holder = port_holder(port).expect("found");
        assert!(
            holder.starts_with(&format!("pid {} ", std::process::id())),
            "{holder}"
        );
        let me = nix::unistd::getpgid(None).expect("pgid").as_raw();
        assert!(group_listens_on(me, port));
        drop(l);
        assert!(!group_listens_on(me, port));
    }
}
