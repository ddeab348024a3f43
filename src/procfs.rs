//! The few facts the runner needs from /proc about an engine's processes: who is in its
//! group, who descends from it (setsid'd grandchildren included), when each started, what
//! ports they listen on, and how much resident memory they hold. Read directly rather than through the `procfs`
//! crate: two small files per process are all that is needed, and this keeps the sampler's
//! hot loop free of the crate's full parsing.

use std::fs;

/// One process, as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    /// The session id.
    pub sid: i32,
    /// The state letter: R, S, D, Z (zombie), T, ...
    pub state: char,
    pub comm: String,
    /// When it started, in clock ticks after boot (field 22 of /proc/<pid>/stat): with the pid,
    /// it names one process for the life of the machine, so a reused pid is never mistaken
    /// for it.
    pub start_ticks: u64,
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
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    let sid = rest.next()?.parse().ok()?;
    // tty_nr .. itrealvalue: 15 fields between the session and the start time.
    let start_ticks = rest.nth(15)?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        pgid,
        sid,
        state,
        comm,
        start_ticks,
    })
}

impl ProcInfo {
    /// Neither a zombie nor dead.
    pub fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// One process, if it exists.
pub fn process(pid: i32) -> Option<ProcInfo> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process /proc lists, zombies included.
pub fn all_processes() -> Vec<ProcInfo> {
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
        .collect()
}

/// Every live (non-zombie) process whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<ProcInfo> {
    all_processes()
        .into_iter()
        .filter(|p| p.pgid == pgid && p.is_live())
        .collect()
}

/// Every live process below `root` in the parent tree (not `root` itself). A process that
/// left its group and session with setsid is still found here while its parent lives, and
/// after, when this process is their subreaper (orphans are reparented to it).
pub fn descendants(root: i32) -> Vec<ProcInfo> {
    descendants_in(&all_processes(), root)
}

/// `descendants` over a given process table (pure, for tests).
pub fn descendants_in(table: &[ProcInfo], root: i32) -> Vec<ProcInfo> {
    let mut found: Vec<ProcInfo> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in table.iter().filter(|p| p.ppid == parent) {
            if p.pid != root && !found.iter().any(|f| f.pid == p.pid) {
                frontier.push(p.pid);
                found.push(p.clone());
            }
        }
    }
    found.retain(ProcInfo::is_live);
    found
}

/// The command line of a process, its arguments joined by spaces (empty for a kernel thread
/// or a process that is gone).
pub fn cmdline(pid: i32) -> String {
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return String::new();
    };
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The TCP ports `pid` listens on (through its open sockets).
pub fn listening_ports(pid: i32) -> Vec<u16> {
    let listening = listening_socket_table();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut ports: Vec<u16> = fds
        .filter_map(Result::ok)
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            listening
                .iter()
                .find(|(inode, _)| t == format!("socket:[{inode}]"))
                .map(|(_, port)| *port)
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// A process as a survivor or a leftover is named: pid, command line and listening ports.
pub fn describe(p: &ProcInfo) -> String {
    let cmd = cmdline(p.pid);
    let cmd = if cmd.is_empty() { p.comm.clone() } else { cmd };
    let ports = listening_ports(p.pid);
    let mut out = format!("pid {} `{cmd}` (state {})", p.pid, p.state);
    if !ports.is_empty() {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        out.push_str(&format!(", listening on port {}", ports.join(", ")));
    }
    out
}

/// Socket inodes in the LISTEN state, with their local port, from /proc/net/tcp and tcp6.
fn listening_socket_table() -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; inode is field 9.
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some("0A"), Some(port), Some(inode)) = (f.get(3).copied(), local_port, f.get(9))
            {
                out.push(((*inode).to_string(), port));
            }
        }
    }
    out
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
        let p = parse_stat(
            "4242 (vllm (worker) 1) S 1 4200 4100 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 3 0 987654 1000 50",
        )
        .expect("parses");
        assert_eq!(
            (p.pid, p.ppid, p.pgid, p.sid, p.state),
            (4242, 1, 4200, 4100, 'S')
        );
        assert_eq!(p.comm, "vllm (worker) 1");
        assert_eq!(p.start_ticks, 987_654);
    }

    fn proc(pid: i32, ppid: i32, state: char) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgid: pid,
            sid: pid,
            state,
            comm: "x".into(),
            start_ticks: 0,
        }
    }

    #[test]
    fn descendants_follow_the_parent_tree_across_sessions_and_skip_zombies() {
        // 10 -> 11 -> 12 (setsid'd, its own group and session) -> 13; 14 is a zombie; 20 unrelated.
        let table = [
            proc(10, 1, 'S'),
            proc(11, 10, 'S'),
            proc(12, 11, 'S'),
            proc(13, 12, 'R'),
            proc(14, 10, 'Z'),
            proc(20, 1, 'S'),
        ];
        let mut pids: Vec<i32> = descendants_in(&table, 10).iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, vec![11, 12, 13]);
    }

    #[test]
    fn reads_this_process_start_time_and_session() {
        let me = process(std::process::id() as i32).expect("self");
        assert!(me.start_ticks > 0);
        assert_eq!(me.sid, nix::unistd::getsid(None).expect("sid").as_raw());
    }

    #[test]
    fn finds_this_process_group_and_its_memory() {
        let me = std::process::id() as i32;
        let pgid = nix::unistd::getpgid(None).expect("pgid").as_raw();
        assert!(group_members(pgid).iter().any(|p| p.pid == me));
        assert!(rss_bytes(me).unwrap_or(0) > 0);
    }
}

/// Who listens on a local TCP port, when /proc can tell: `pid (comm)`.
pub fn port_holder(port: u16) -> Option<String> {
    port_holder_pid(port).map(|p| format!("pid {} ({})", p.pid, p.comm))
}

/// The socket inodes (`socket:[N]`) listening on a local TCP port, IPv4 or IPv6.
fn listening_sockets(port: u16) -> Vec<String> {
    listening_socket_table()
        .into_iter()
        .filter(|(_, p)| *p == port)
        .map(|(inode, _)| format!("socket:[{inode}]"))
        .collect()
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

/// The process that listens on a local TCP port, when /proc can tell.
pub fn port_holder_pid(port: u16) -> Option<ProcInfo> {
    let sockets = listening_sockets(port);
    if sockets.is_empty() {
        return None;
    }
    for e in fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if holds_socket(pid, &sockets) {
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            return parse_stat(&stat);
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

/// Nanoseconds the runner's own threads have waited on a run queue (runnable, not running),
/// summed over its live threads: the second field of /proc/self/task/*/schedstat. `None` where
/// the kernel has no schedstat.
pub fn self_run_queue_wait_ns() -> Option<u64> {
    let tasks = fs::read_dir("/proc/self/task").ok()?;
    let mut total = 0u64;
    let mut any = false;
    for t in tasks.flatten() {
        let Ok(text) = fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        if let Some(wait) = parse_schedstat_wait(&text) {
            total += wait;
            any = true;
        }
    }
    any.then_some(total)
}

/// The run-queue wait (second field) of a schedstat line: `run_ns wait_ns timeslices`.
pub fn parse_schedstat_wait(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}
