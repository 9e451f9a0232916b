use super::{account_name, Outcome};
use crate::kernel::ps::{self, Account, ProcessSpec, SID_NAME_USE_USER};
use crate::kernel::status::nt_success;
use std::collections::{HashMap, HashSet};

/// A host process as `/proc` shows it.
#[derive(Clone, Debug)]
struct Seen {
    pid: u32,
    /// Clock ticks after boot.
    start: u64,
    ppid: u32,
    uid: u32,
    comm: String,
    exe: Option<String>,
    cmdline: Option<String>,
}

#[derive(Clone, Debug)]
struct Mirrored {
    pid: usize,
    tid: usize,
    label: String,
    /// Host task id -> simulated thread id (the main task is `tid`).
    threads: HashMap<u32, usize>,
    /// Paths of the images raised for this process.
    images: HashSet<String>,
}

/// Threads mirrored per process at most.
pub const MAX_THREADS: usize = 64;
/// Images mirrored per process at most.
pub const MAX_IMAGES: usize = 256;
/// Polls between two scans of the processes' mappings.
pub const MAPS_EVERY: u64 = 5;

/// The host tasks of process `pid`, sorted.
fn tasks(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut t: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    t.sort_unstable();
    t
}

/// The executable files mapped by process `pid`: (path, lowest start,
/// span), in order of address.
fn executable_mappings(pid: u32) -> Vec<(String, usize, usize)> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    // path -> (lowest start, highest end, any executable mapping)
    let mut files: HashMap<String, (usize, usize, bool)> = HashMap::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let Some(path) = f.nth(3).filter(|p| p.starts_with('/')) else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        let e = files.entry(path.to_string()).or_insert((a, b, false));
        e.0 = e.0.min(a);
        e.1 = e.1.max(b);
        e.2 |= perms.as_bytes().get(2) == Some(&b'x');
    }
    let mut out: Vec<(String, usize, usize)> = files
        .into_iter()
        .filter(|(_, (_, _, x))| *x)
        .map(|(p, (a, b, _))| (p, a, b - a))
        .collect();
    out.sort_by_key(|(_, a, _)| *a);
    out
}

/// Host processes mirrored into the simulated kernel.
#[derive(Debug)]
pub struct Host {
    known: HashMap<(u32, u64), Mirrored>,
    polls: u64,
    /// Processes whose creation a program denied (not raised again).
    denied: HashSet<(u32, u64)>,
    /// New processes that still run their parent's executable: a fork that
    /// has not exec'd yet, perhaps. Linux creates a process and its image in
    /// two steps where Windows raises one creation with its image, so such
    /// a process is raised one poll later, with what it runs by then.
    forked: HashSet<(u32, u64)>,
    uids: HashSet<u32>,
    accounts: Vec<Account>,
    passwd: HashMap<u32, String>,
    boot_filetime: i64,
    ticks_per_second: u64,
}

fn read(pid: u32) -> Option<Seen> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Field 4 is the ppid and field 22 the start time (1-based, as in
    // proc(5)); `fields` starts at field 3.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| fit_unicode_string(p.display().to_string()));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
        .map(fit_unicode_string);
    Some(Seen {
        pid,
        start,
        ppid,
        uid,
        comm,
        exe,
        cmdline,
    })
}

/// Shortens a host string to what a UNICODE_STRING holds (32767 UTF-16
/// units; Linux command lines can be longer).
fn fit_unicode_string(mut s: String) -> String {
    let mut units = 0;
    if let Some((cut, _)) = s.char_indices().find(|(_, c)| {
        units += c.len_utf16();
        units > ps::MAX_UNICODE_STRING_UNITS
    }) {
        s.truncate(cut);
    }
    s
}

/// Every process in `/proc`, oldest first (parents before children).
fn scan() -> Result<Vec<Seen>, String> {
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot read /proc: {e}"))?;
    let mut seen: Vec<Seen> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read)
        .collect();
    seen.sort_by_key(|s| (s.start, s.pid));
    Ok(seen)
}

fn boot_filetime() -> Result<i64, String> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    let btime: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("/proc/stat has no btime line")?;
    Ok(crate::kernel::time::UNIX_EPOCH_AS_FILETIME + btime * 10_000_000)
}

fn passwd() -> HashMap<u32, String> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// The "Unix User" SID of a uid (S-1-22-1-UID).
pub fn uid_sid(uid: u32) -> Vec<u8> {
    ps::parse_sid(&format!("S-1-22-1-{uid}")).expect("a valid SID")
}

impl Host {
    /// Creates every running host process in the simulated kernel.
    /// Call it before attaching programs (no routine is registered
    /// yet, so nothing reports these creations).
    pub fn mirror() -> Result<Host, String> {
        // SAFETY: sysconf reads a configuration value; no pointers.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut host = Host {
            known: HashMap::new(),
            polls: 0,
            denied: HashSet::new(),
            forked: HashSet::new(),
            uids: HashSet::new(),
            accounts: ps::default_accounts(),
            passwd: passwd(),
            boot_filetime: boot_filetime()?,
            ticks_per_second: if tick > 0 { tick as u64 } else { 100 },
        };
        for seen in scan()? {
            host.create(&seen);
        }
        let mut keys: Vec<(u32, u64)> = host.known.keys().copied().collect();
        keys.sort();
        for key in keys {
            host.threads_of(key);
            host.images_of(key);
        }
        Ok(host)
    }

    /// How many host processes are mirrored.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether no host process is mirrored.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    fn user(&mut self, uid: u32) -> Vec<u8> {
        let sid = uid_sid(uid);
        if self.uids.insert(uid) {
            let name = self
                .passwd
                .get(&uid)
                .cloned()
                .unwrap_or_else(|| format!("uid{uid}"));
            self.accounts.push(Account {
                sid: sid.clone(),
                name,
                domain: "Unix User".into(),
                use_: SID_NAME_USE_USER,
            });
            ps::set_accounts(self.accounts.clone());
        }
        sid
    }

    fn create(&mut self, seen: &Seen) -> Outcome {
        let parent = self
            .known
            .iter()
            .find(|((pid, _), _)| *pid == seen.ppid)
            .map(|(_, m)| (m.pid, m.tid));
        let spec = ProcessSpec {
            image_file_name: seen
                .exe
                .clone()
                .unwrap_or_else(|| format!("[{}]", seen.comm)),
            command_line: seen.cmdline.clone(),
            parent: Some(parent.map_or(0, |p| p.0)),
            creating_thread: Some(parent.unwrap_or_else(ps::current_ids)),
            user_sid: Some(self.user(seen.uid)),
            creation_time: Some(
                self.boot_filetime + (seen.start * 10_000_000 / self.ticks_per_second) as i64,
            ),
            ..Default::default()
        };
        let created = ps::create_process(&spec);
        let label = format!("{}/{}", seen.comm, seen.pid);
        let key = (seen.pid, seen.start);
        let mut initial = None;
        if nt_success(created.creation_status) {
            let tid = super::first_thread_and_main_image(created.pid, &spec, None);
            initial = Some(tid);
            self.known.insert(
                key,
                Mirrored {
                    pid: created.pid,
                    tid,
                    label: label.clone(),
                    threads: HashMap::from([(seen.pid, tid)]),
                    images: HashSet::from([spec.image_file_name.clone()]),
                },
            );
        } else {
            self.denied.insert(key);
        }
        Outcome::Created {
            name: label,
            pid: created.pid,
            tid: initial,
            logon_id: ps::SYSTEM_LUID,
            parent_pid: spec.parent.unwrap_or(0),
            status: created.creation_status,
            account: account_name(&self.accounts, spec.user_sid.as_deref()),
            spec: Box::new(spec),
        }
    }

    /// Creates the host tasks of `key` that are new, exits those that
    /// ended (at most [`live::MAX_THREADS`] mirrored).
    fn threads_of(&mut self, key: (u32, u64)) -> Vec<Outcome> {
        let Some(m) = self.known.get_mut(&key) else {
            return Vec::new();
        };
        let now = tasks(key.0);
        let mut out = Vec::new();
        let mut ended: Vec<u32> = m
            .threads
            .keys()
            .filter(|t| **t != key.0 && now.binary_search(t).is_err())
            .copied()
            .collect();
        ended.sort_unstable();
        for host_tid in ended {
            let tid = m.threads.remove(&host_tid).expect("a known task");
            if ps::thread::exit_thread(tid, 0) {
                out.push(Outcome::ThreadExited {
                    name: format!("{}/task {host_tid}", m.label),
                    tid,
                    code: 0,
                });
            }
        }
        for host_tid in now {
            if m.threads.len() >= MAX_THREADS {
                break;
            }
            if m.threads.contains_key(&host_tid) {
                continue;
            }
            let tid = ps::thread::create_thread(&ps::thread::ThreadSpec {
                process: m.pid,
                creator: Some(m.pid),
                creating_thread: Some(m.tid),
                start_address: 0,
            });
            m.threads.insert(host_tid, tid);
            out.push(Outcome::ThreadCreated {
                name: format!("{}/task {host_tid}", m.label),
                pid: m.pid,
                tid,
                creator_pid: m.pid,
                creator_tid: m.tid,
                start: 0,
            });
        }
        out
    }

    /// Loads the executable files `key` mapped since the last scan (at
    /// most [`MAX_IMAGES`] per process).
    fn images_of(&mut self, key: (u32, u64)) -> Vec<Outcome> {
        let Some(m) = self.known.get_mut(&key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (path, base, size) in executable_mappings(key.0) {
            if m.images.len() >= MAX_IMAGES {
                break;
            }
            if !m.images.insert(path.clone()) {
                continue;
            }
            ps::image::load_user_image(
                m.pid,
                &ps::image::ImageSpec {
                    path: path.clone(),
                    base,
                    size,
                    ..Default::default()
                },
            );
            out.push(Outcome::ImageLoaded {
                process: Some(m.label.clone()),
                pid: m.pid,
                path,
                base,
                size,
            });
        }
        out
    }

    /// Raises what changed on the host since the last call: creations
    /// (oldest first), then threads and images of every mirrored
    /// process, then exits.
    pub fn poll(&mut self) -> Vec<Outcome> {
        let Ok(now) = scan() else {
            return Vec::new();
        };
        self.polls += 1;
        let mut outcomes = Vec::new();
        let current: HashSet<(u32, u64)> = now.iter().map(|s| (s.pid, s.start)).collect();
        let exes: HashMap<u32, Option<&String>> =
            now.iter().map(|s| (s.pid, s.exe.as_ref())).collect();
        for seen in &now {
            let key = (seen.pid, seen.start);
            if self.known.contains_key(&key) || self.denied.contains(&key) {
                continue;
            }
            let parents_image =
                seen.exe.is_some() && exes.get(&seen.ppid) == Some(&seen.exe.as_ref());
            if parents_image && self.forked.insert(key) {
                continue;
            }
            self.forked.remove(&key);
            outcomes.push(self.create(seen));
        }
        self.forked.retain(|k| current.contains(k));
        let mut keys: Vec<(u32, u64)> = self
            .known
            .keys()
            .filter(|k| current.contains(k))
            .copied()
            .collect();
        keys.sort();
        for key in keys {
            outcomes.extend(self.threads_of(key));
            if self.polls.is_multiple_of(MAPS_EVERY) {
                outcomes.extend(self.images_of(key));
            }
        }
        let mut gone: Vec<(u32, u64)> = self
            .known
            .keys()
            .filter(|k| !current.contains(k))
            .copied()
            .collect();
        gone.sort();
        for key in gone {
            let m = self.known.remove(&key).expect("a known process");
            // Its other threads end first, each with its own event, as
            // when they end between two polls.
            let mut threads: Vec<(u32, usize)> = m
                .threads
                .iter()
                .filter(|(host_tid, _)| **host_tid != key.0)
                .map(|(host_tid, tid)| (*host_tid, *tid))
                .collect();
            threads.sort_unstable();
            for (host_tid, tid) in threads {
                if ps::thread::exit_thread(tid, 0) {
                    outcomes.push(Outcome::ThreadExited {
                        name: format!("{}/task {host_tid}", m.label),
                        tid,
                        code: 0,
                    });
                }
            }
            let time = ps::filetime_now();
            if ps::thread::exit_process(m.pid, 0, Some(time)) {
                outcomes.push(Outcome::Exited {
                    name: m.label,
                    pid: m.pid,
                    code: 0,
                    time,
                });
            }
        }
        self.denied.retain(|k| current.contains(k));
        outcomes
    }
}
