//! The thread, thread-exit, image and driver steps of a scenario: their
//! types, their parsing, and how the [`Runner`] raises them (with a created
//! process's first thread and main image).

use super::{parse_status, Outcome, Runner, Step};
use crate::kernel::netevent;
use crate::kernel::ps::{self, ProcessSpec, SYSTEM_PID};
use crate::kernel::status::NTSTATUS;
use std::collections::HashMap;

/// The start address of a created process's first thread.
pub const FIRST_THREAD_START: usize = 0x7ff6_0000_1000;
/// Where a created process's main image is mapped.
pub const MAIN_IMAGE_BASE: usize = 0x7ff6_0000_0000;
/// The size of a created process's main image.
pub const MAIN_IMAGE_SIZE: usize = 0x2_0000;

/// A process a thread step names: a scenario process, or a pid (System).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessRef {
    Named(String),
    Pid(usize),
}

/// One `thread` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadStep {
    pub line: usize,
    pub name: String,
    /// The owning process.
    pub process: ProcessRef,
    /// The creating process.
    pub by: ProcessRef,
    pub start: usize,
    /// The exact thread id (None: the next free id).
    pub tid: Option<usize>,
}

/// One `thread-exit` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadExitStep {
    pub line: usize,
    pub name: String,
    pub code: NTSTATUS,
}

/// One `image` (process Some) or `driver` (process None) line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageStep {
    pub line: usize,
    pub process: Option<String>,
    pub path: String,
    pub base: usize,
    pub size: usize,
}

/// `0x` hex or decimal, 64-bit.
fn parse_number(key: &str, value: &str) -> Result<usize, String> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse::<u64>().ok(),
    };
    parsed
        .map(|v| v as usize)
        .ok_or_else(|| format!("{key}={value}: not a number (decimal or 0x hex)"))
}

fn process_ref(
    key: &str,
    value: &str,
    names: &HashMap<String, bool>,
) -> Result<ProcessRef, String> {
    if let Ok(pid) = value.parse::<usize>() {
        return if pid == SYSTEM_PID {
            Ok(ProcessRef::Pid(pid))
        } else {
            Err(format!(
                "{key}={value}: a pid names only System (4); name a scenario process"
            ))
        };
    }
    match names.get(value) {
        Some(true) => Ok(ProcessRef::Named(value.to_string())),
        _ => Err(format!("{key}={value}: no running process of that name")),
    }
}

/// The thread, thread-exit, image and driver steps; None for other
/// keywords.
pub(super) fn parse_hook_step(
    keyword: &str,
    name: &str,
    fields: &HashMap<&str, &str>,
    line: usize,
    names: &HashMap<String, bool>,
    threads: &mut HashMap<String, bool>,
) -> Result<Option<Step>, String> {
    match keyword {
        "thread" => {
            if threads.get(name) == Some(&true) {
                return Err(format!("thread: a thread named {name:?} is running"));
            }
            let process = process_ref(
                "in",
                fields.get("in").ok_or("thread: in= is required")?,
                names,
            )?;
            let by = match fields.get("by") {
                Some(b) => process_ref("by", b, names)?,
                None => process.clone(),
            };
            let start = match fields.get("start") {
                Some(v) => parse_number("start", v)?,
                None => 0,
            };
            let tid = match fields.get("tid") {
                Some(v) => match parse_number("tid", v)? {
                    t if t != 0 && t.is_multiple_of(4) => Some(t),
                    _ => {
                        return Err(format!(
                            "thread: tid={v}: not a thread id (a non-zero multiple of 4)"
                        ))
                    }
                },
                None => None,
            };
            threads.insert(name.to_string(), true);
            Ok(Some(Step::Thread(ThreadStep {
                line,
                name: name.to_string(),
                process,
                by,
                start,
                tid,
            })))
        }
        "thread-exit" => {
            match threads.get(name) {
                Some(true) => {}
                Some(false) => return Err(format!("thread-exit: {name:?} already exited")),
                None => return Err(format!("thread-exit: no thread named {name:?} was created")),
            }
            let code = match fields.get("code") {
                Some(c) => parse_status(c)?,
                None => 0,
            };
            threads.insert(name.to_string(), false);
            Ok(Some(Step::ThreadExit(ThreadExitStep {
                line,
                name: name.to_string(),
                code,
            })))
        }
        "image" | "driver" => {
            let process = if keyword == "image" {
                if names.get(name) != Some(&true) {
                    return Err(format!("image: no running process named {name:?}"));
                }
                Some(name.to_string())
            } else {
                None
            };
            let field = |k: &str| {
                fields
                    .get(k)
                    .copied()
                    .ok_or_else(|| format!("{keyword}: {k}= is required"))
            };
            let path = field("path")?.to_string();
            if path.is_empty() {
                return Err(format!("{keyword}: path= is empty"));
            }
            let base = parse_number("base", field("base")?)?;
            let size = parse_number("size", field("size")?)?;
            Ok(Some(Step::Image(ImageStep {
                line,
                process,
                path,
                base,
                size,
            })))
        }
        _ => Ok(None),
    }
}

impl Runner {
    fn pid_of(&self, p: &ProcessRef) -> Option<(usize, Option<usize>)> {
        match p {
            ProcessRef::Pid(pid) => Some((*pid, None)),
            ProcessRef::Named(n) => self.running.get(n).map(|&(pid, tid)| (pid, Some(tid))),
        }
    }

    pub(super) fn thread(&mut self, t: &ThreadStep) -> Outcome {
        let (Some((pid, _)), Some((creator, creating_thread))) =
            (self.pid_of(&t.process), self.pid_of(&t.by))
        else {
            return Outcome::Skipped {
                what: format!("thread {}", t.name),
                line: t.line,
            };
        };
        // The creating thread: the named process's first thread, else the
        // creator's most recent thread (as create_thread picks it).
        let creating_thread = creating_thread
            .or_else(|| ps::process(creator).and_then(|p| p.threads.last().copied()));
        if let Some(tid) = t.tid {
            if ps::id_in_use(tid) {
                return Outcome::Skipped {
                    what: format!("thread {} (tid={tid} is in use)", t.name),
                    line: t.line,
                };
            }
        }
        let tid = ps::thread::create_thread_with_id(
            &ps::thread::ThreadSpec {
                process: pid,
                creator: Some(creator),
                creating_thread,
                start_address: t.start,
            },
            t.tid,
        );
        self.threads.insert(t.name.clone(), tid);
        Outcome::ThreadCreated {
            name: t.name.clone(),
            pid,
            tid,
            creator_pid: creator,
            creator_tid: creating_thread.unwrap_or(0),
            start: t.start,
        }
    }

    pub(super) fn image(&mut self, i: &ImageStep) -> Outcome {
        let spec = ps::image::ImageSpec {
            path: i.path.clone(),
            base: i.base,
            size: i.size,
            ..Default::default()
        };
        let pid = match &i.process {
            None => {
                ps::image::load_driver(&spec);
                0
            }
            Some(name) => match self.running.get(name) {
                Some(&(pid, _)) => {
                    ps::image::load_user_image(pid, &spec);
                    pid
                }
                None => {
                    return Outcome::Skipped {
                        what: format!("image {name}"),
                        line: i.line,
                    }
                }
            },
        };
        Outcome::ImageLoaded {
            process: i.process.clone(),
            pid,
            path: i.path.clone(),
            base: i.base,
            size: i.size,
        }
    }
}

/// What Windows raises after a process's creation: its first thread,
/// created by the creating thread (or the calling thread), then its main
/// image. `tid` is the first thread's exact id (None: the next free id).
/// Returns the first thread's id.
pub fn first_thread_and_main_image(pid: usize, spec: &ProcessSpec, tid: Option<usize>) -> usize {
    let (creator, creating_thread) = match spec.creating_thread {
        Some((p, t)) => (Some(p), Some(t)),
        None => (None, None),
    };
    let tid = ps::thread::create_thread_with_id(
        &ps::thread::ThreadSpec {
            process: pid,
            creator,
            creating_thread,
            start_address: FIRST_THREAD_START,
        },
        tid,
    );
    ps::image::load_user_image(
        pid,
        &ps::image::ImageSpec {
            path: spec.image_file_name.clone(),
            base: MAIN_IMAGE_BASE,
            size: MAIN_IMAGE_SIZE,
            ..Default::default()
        },
    );
    tid
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn thread_image_and_driver_steps_parse_and_refuse_mistakes() {
        let s = parse(
            "create p image=C:\\p.exe\n\
             create q image=C:\\q.exe\n\
             thread t in=p by=q start=0x1000 at=5\n\
             thread s in=4\n\
             image p path=C:\\x.dll base=0x10000 size=4096\n\
             driver path=\\SystemRoot\\d.sys base=0xfffff80000000000 size=0x2000\n\
             thread-exit t code=0xc0000005\n",
        )
        .unwrap();
        assert_eq!(
            s.steps[2],
            Step::Thread(ThreadStep {
                line: 3,
                name: "t".into(),
                process: ProcessRef::Named("p".into()),
                by: ProcessRef::Named("q".into()),
                start: 0x1000,
                tid: None,
            })
        );
        let Step::Thread(system) = &s.steps[3] else {
            panic!()
        };
        assert_eq!(
            (system.process.clone(), system.by.clone(), system.start),
            (ProcessRef::Pid(4), ProcessRef::Pid(4), 0),
            "by defaults to the owner"
        );
        assert_eq!(
            s.steps[5],
            Step::Image(ImageStep {
                line: 6,
                process: None,
                path: "\\SystemRoot\\d.sys".into(),
                base: 0xffff_f800_0000_0000,
                size: 0x2000,
            })
        );
        assert_eq!(
            s.steps[6],
            Step::ThreadExit(ThreadExitStep {
                line: 7,
                name: "t".into(),
                code: 0xC000_0005u32 as i32
            })
        );
        for (text, needle) in [
            ("thread t in=nobody", "in=nobody: no running process"),
            ("thread t in=8", "a pid names only System"),
            ("thread t", "in= is required"),
            ("thread t in=4 start=zz", "start=zz: not a number"),
            ("thread t in=4 tid=6", "tid=6: not a thread id"),
            ("thread t in=4 tid=0", "tid=0: not a thread id"),
            ("thread-exit t", "no thread named \"t\""),
            (
                "thread t in=4\nthread t in=4",
                "a thread named \"t\" is running",
            ),
            (
                "thread t in=4\nthread-exit t\nthread-exit t",
                "already exited",
            ),
            (
                "image nobody path=x base=1 size=1",
                "no running process named",
            ),
            ("driver path=x base=1", "size= is required"),
            ("driver path=x base=1 size=1 in=4", "unknown field in="),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn runner_raises_first_threads_images_and_thread_exits() {
        let _sim = crate::Sim::new();
        let s = parse(
            "create p image=C:\\p.exe\n\
             create q image=C:\\q.exe parent=p\n\
             thread t in=q by=p start=0x42\n\
             image q path=C:\\x.dll base=0x10000 size=4096\n\
             thread-exit t code=3\n\
             exit q code=9\n",
        )
        .unwrap();
        let mut runner = Runner::new(&s);
        let outcomes: Vec<_> = s.steps.iter().map(|st| runner.step(st)).collect();
        let Outcome::Created { pid: p, .. } = outcomes[0] else {
            panic!()
        };
        let Outcome::Created { pid: q, .. } = outcomes[1] else {
            panic!()
        };
        let Outcome::ThreadCreated {
            pid,
            tid,
            creator_pid,
            start,
            ..
        } = outcomes[2]
        else {
            panic!("{:?}", outcomes[2])
        };
        assert_eq!((pid, creator_pid, start), (q, p, 0x42));
        assert_eq!(ps::thread::start_address(tid), 0x42);
        assert!(matches!(outcomes[3], Outcome::ImageLoaded { pid, .. } if pid == q));
        assert_eq!(
            outcomes[4],
            Outcome::ThreadExited {
                name: "t".into(),
                tid,
                code: 3
            }
        );
        assert!(ps::thread_process(tid).is_none(), "the thread ended");
        assert!(ps::process(q).is_none());
    }
}

/// One `netevent` line: an event a netevent provider delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeteventStep {
    pub line: usize,
    /// `drop`, `flow`, the type's number, or `raw`: how the line named it.
    pub name: String,
    pub event: netevent::Event,
    /// None: the only registered provider.
    pub provider: Option<u32>,
    pub irql: netevent::DeliveryIrql,
}

/// One `netevent-provider register|deregister [id=N]` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeteventProviderStep {
    pub line: usize,
    pub register: bool,
    pub id: u32,
}

impl NeteventProviderStep {
    /// `register` or `deregister`.
    pub fn action(&self) -> &'static str {
        if self.register {
            "register"
        } else {
            "deregister"
        }
    }
}

/// Even-length hex (spaces not allowed; `0x` prefix optional).
pub fn parse_hex(key: &str, value: &str) -> Result<Vec<u8>, String> {
    let v = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .unwrap_or(value);
    if !v.len().is_multiple_of(2) || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{key}={value}: not hex bytes (an even number of hex digits)"
        ));
    }
    Ok((0..v.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v[i..i + 2], 16).expect("hex digits"))
        .collect())
}

fn parse_provider_id(key: &str, value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("{key}={value}: not a provider number (1 or more)"))
}

/// The `netevent` and `netevent-provider` lines; `providers` tracks which
/// providers are registered at this point, so that an event without a
/// provider to deliver it is an error of its line.
pub(super) fn parse_netevent_step(
    keyword: &str,
    name: &str,
    fields: &HashMap<&str, &str>,
    line: usize,
    providers: &mut std::collections::BTreeSet<u32>,
) -> Result<Option<Step>, String> {
    match keyword {
        "netevent-provider" => {
            let register = match name {
                "register" => true,
                "deregister" => false,
                other => {
                    return Err(format!(
                        "netevent-provider {other}: write register or deregister"
                    ))
                }
            };
            let id = match fields.get("id") {
                Some(v) => parse_provider_id("id", v)?,
                None => 1,
            };
            if register && !providers.insert(id) {
                return Err(format!(
                    "netevent-provider register: provider {id} is already registered"
                ));
            }
            if !register && !providers.remove(&id) {
                return Err(format!(
                    "netevent-provider deregister: provider {id} is not registered"
                ));
            }
            Ok(Some(Step::NeteventProvider(NeteventProviderStep {
                line,
                register,
                id,
            })))
        }
        "netevent" => {
            let provider = match fields.get("provider") {
                Some(v) => {
                    let id = parse_provider_id("provider", v)?;
                    if !providers.contains(&id) {
                        return Err(format!(
                            "netevent: provider {id} is not registered at this point (add \
                             `netevent-provider register id={id}` before)"
                        ));
                    }
                    Some(id)
                }
                None => match providers.len() {
                    0 => {
                        return Err("netevent: no netevent provider is registered at this \
                                    point (add `netevent-provider register` before)"
                            .into())
                    }
                    1 => None,
                    _ => {
                        return Err(format!(
                            "netevent: several providers are registered ({}): give provider=N",
                            providers
                                .iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }
                },
            };
            let irql = match fields.get("irql").copied() {
                None => netevent::DeliveryIrql::Alternate,
                Some("passive") => netevent::DeliveryIrql::Passive,
                Some("dispatch") => netevent::DeliveryIrql::Dispatch,
                Some(other) => {
                    return Err(format!("netevent: irql={other}: write passive or dispatch"))
                }
            };
            let (name, event) = match (fields.get("raw"), fields.get("type")) {
                (Some(_), Some(_)) => {
                    return Err("netevent: give type= (with data=) or raw=, not both".into())
                }
                (Some(r), None) => {
                    if fields.contains_key("data") || fields.contains_key("header") {
                        return Err("netevent: raw= is the whole event; no data= or header=".into());
                    }
                    (
                        "raw".to_string(),
                        netevent::Event::raw(&parse_hex("raw", r)?),
                    )
                }
                (None, None) => {
                    return Err("netevent: type=drop|flow|NUMBER (or raw=HEX) is required".into())
                }
                (None, Some(t)) => {
                    let event_type = match *t {
                        "drop" => netevent::EVENT_TYPE_DROP,
                        "flow" => netevent::EVENT_TYPE_FLOW,
                        n => n.parse::<u32>().map_err(|_| {
                            format!("netevent: type={n}: write drop, flow or a number (32 bits)")
                        })?,
                    };
                    let data = match fields.get("data") {
                        Some(d) => parse_hex("data", d)?,
                        None => Vec::new(),
                    };
                    let header = match fields.get("header") {
                        Some(h) => parse_hex("header", h)?,
                        None => Vec::new(),
                    };
                    let event = netevent::Event::with_header(event_type, &header, &data)
                        .map_err(|e| format!("netevent: header=: {e}"))?;
                    (t.to_string(), event)
                }
            };
            Ok(Some(Step::Netevent(NeteventStep {
                line,
                name,
                event,
                provider,
                irql,
            })))
        }
        _ => Ok(None),
    }
}

/// Raises a `netevent` line.
pub(super) fn raise_netevent(n: &NeteventStep) -> Result<Outcome, String> {
    netevent::deliver(n.provider, &n.event, n.irql)
        .map(Outcome::Netevent)
        .map_err(|e| format!("netevent: {e}"))
}

/// Raises a `netevent-provider` line.
pub(super) fn raise_netevent_provider(p: &NeteventProviderStep) -> Result<Outcome, String> {
    if p.register {
        netevent::register_provider(p.id)
    } else {
        netevent::deregister_provider(p.id)
    }
    .map_err(|e| format!("netevent-provider {}: {e}", p.action()))?;
    Ok(Outcome::NeteventProvider {
        id: p.id,
        registered: p.register,
        clients: netevent::clients(p.id),
    })
}
