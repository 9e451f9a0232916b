//! The hot-path benchmark's workload (`cargo xtask bench`, the
//! `ntsim-hotpath` binary): loads the driver, attaches N clients of one
//! kind, raises events of each kind the driver hooks, and records where
//! each measured run of events starts and ends.
//!
//! What is measured, per event kind ([`EVENTS`]), client kind
//! ([`ClientKind`]) and client count:
//!
//! - one *segment* of [`Plan::events`] events, raised inside
//!   [`ntsim_bench_measured`] (after [`WARMUP`] unmeasured ones). Run
//!   under callgrind with `--toggle-collect` and `--dump-after` on that
//!   function, each segment becomes one dump, in the order of
//!   [`Report::segments`]; `cargo xtask bench` attributes its
//!   instructions to the driver image by address
//!   ([`Report::image_base`], [`Report::image_size`]) and classifies the
//!   image's calls by callee name ([`Report::exports`]);
//! - wall-clock time ([`Report::timings`]): the same events raised by one
//!   host thread, then by two at once (each with its own processes), the
//!   median of [`Plan::runs`] runs. Meaningless under valgrind; noisy
//!   natively (other processes share the machine).
//!
//! Adding an event kind is one entry of [`EVENTS`].

use crate::ebpf::core::{Link, LoadedProgram};
use crate::ebpf::program::Program;
use crate::ebpf::vm::Insn;
use crate::hook::host_client::{Config, HostClient};
use crate::kernel::status::STATUS_SUCCESS;
use crate::kernel::types::GUID;
use crate::kernel::{exports, io, ps};
use crate::sim::{Options, Sim};
use std::cell::Cell;
use std::ffi::c_void;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// Events raised, unmeasured, before each measured segment (first-event
/// effects: lazily built kernel state, cold caches).
pub const WARMUP: usize = 4;

/// A kind of event the benchmark raises.
pub struct EventKind {
    /// Its name in the report (`process_create`, ...).
    pub name: &'static str,
    /// Program type and attach type of an eBPF link that sees it.
    pub program_type: GUID,
    pub attach_type: GUID,
    /// Whether the loaded driver has registered the notify routine that
    /// produces it (with a client attached); kinds it does not hook are
    /// left out of the report.
    pub hooked: fn() -> bool,
    /// Raises one event in `world`.
    pub raise: fn(&mut World),
}

/// What a host thread's events work on: the processes and threads it
/// created and has not ended yet, and a process of its own for thread and
/// image events.
pub struct World {
    pub pids: Vec<usize>,
    pub tids: Vec<usize>,
    pub host_pid: usize,
    /// The user SID of the processes it creates (made once: the workload's
    /// own work between events is not what is measured).
    pub user_sid: Vec<u8>,
}

impl World {
    fn new() -> World {
        let user_sid = ps::test_user_sid();
        let host_pid = ps::create_process(&ps::ProcessSpec {
            image_file_name: "\\??\\C:\\bench\\host.exe".into(),
            user_sid: Some(user_sid.clone()),
            ..Default::default()
        })
        .pid;
        World {
            pids: Vec::new(),
            tids: Vec::new(),
            host_pid,
            user_sid,
        }
    }

    /// Ends what is left (unmeasured).
    fn end(mut self) {
        for tid in self.tids.drain(..) {
            ps::exit_thread(tid);
        }
        for pid in self.pids.drain(..) {
            ps::exit_process(pid, 0, None);
        }
        ps::exit_process(self.host_pid, 0, None);
    }
}

fn raise_process_create(w: &mut World) {
    let p = ps::create_process(&ps::ProcessSpec {
        image_file_name: "\\??\\C:\\Windows\\System32\\bench.exe".into(),
        command_line: Some("bench.exe --quiet".into()),
        parent: Some(w.host_pid),
        user_sid: Some(w.user_sid.clone()),
        ..Default::default()
    });
    assert_eq!(p.creation_status, 0, "a no-op client denied a process");
    w.pids.push(p.pid);
}

fn raise_process_delete(w: &mut World) {
    let pid = w.pids.pop().expect("process_delete follows process_create");
    assert!(ps::exit_process(pid, 0, None));
}

fn raise_thread_create(w: &mut World) {
    let tid = ps::thread::create_thread(&ps::thread::ThreadSpec {
        process: w.host_pid,
        creator: Some(w.host_pid),
        creating_thread: None,
        start_address: 0x7ff6_1234_5678,
    });
    w.tids.push(tid);
}

fn raise_thread_exit(w: &mut World) {
    let tid = w.tids.pop().expect("thread_exit follows thread_create");
    assert!(ps::thread::exit_thread(tid, 0));
}

fn bench_image(path: &str, base: usize) -> ps::image::ImageSpec {
    ps::image::ImageSpec {
        path: path.into(),
        base,
        size: 0x2_0000,
        signature_level: 8,
        signature_type: 1,
        mapped_to_all_pids: false,
        partial_map: false,
    }
}

fn raise_image_load_user(w: &mut World) {
    ps::image::load_user_image(
        w.host_pid,
        &bench_image(
            "\\Device\\HarddiskVolume3\\Windows\\System32\\bench.dll",
            0x7ffa_0000_0000,
        ),
    );
}

fn raise_image_load_driver(_: &mut World) {
    ps::image::load_driver(&bench_image(
        "\\SystemRoot\\System32\\drivers\\bench.sys",
        0xffff_f800_1000_0000,
    ));
}

/// Every event kind, in the order they are raised (a delete follows the
/// create that made its process). Add a kind here when the driver hooks
/// it; kinds whose notify routine the driver does not register are
/// skipped (see [`EventKind::hooked`]).
pub const EVENTS: &[EventKind] = &[
    EventKind {
        name: "process_create",
        program_type: crate::hook::process::PROGRAM_TYPE,
        attach_type: crate::hook::process::ATTACH_TYPE,
        hooked: || ps::notify_routine_counts().process > 0,
        raise: raise_process_create,
    },
    EventKind {
        name: "process_delete",
        program_type: crate::hook::process::PROGRAM_TYPE,
        attach_type: crate::hook::process::ATTACH_TYPE,
        hooked: || ps::notify_routine_counts().process > 0,
        raise: raise_process_delete,
    },
    EventKind {
        name: "thread_create",
        program_type: crate::hook::thread::PROGRAM_TYPE,
        attach_type: crate::hook::thread::ATTACH_TYPE,
        hooked: || ps::notify_routine_counts().thread > 0,
        raise: raise_thread_create,
    },
    EventKind {
        name: "thread_exit",
        program_type: crate::hook::thread::PROGRAM_TYPE,
        attach_type: crate::hook::thread::ATTACH_TYPE,
        hooked: || ps::notify_routine_counts().thread > 0,
        raise: raise_thread_exit,
    },
    EventKind {
        name: "image_load_user",
        program_type: crate::hook::image_load::PROGRAM_TYPE,
        attach_type: crate::hook::image_load::ATTACH_TYPE,
        hooked: || ps::notify_routine_counts().image > 0,
        raise: raise_image_load_user,
    },
    EventKind {
        name: "image_load_driver",
        program_type: crate::hook::image_load::PROGRAM_TYPE,
        attach_type: crate::hook::image_load::ATTACH_TYPE,
        hooked: || ps::notify_routine_counts().image > 0,
        raise: raise_image_load_driver,
    },
];

/// A kind of hook client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// A host NMR client whose dispatch table has only `invoke`.
    HostPlain,
    /// A host NMR client with batch begin/invoke/end.
    HostBatch,
    /// An eBPF link (ntsim's core) of a program that returns 0.
    EbpfLink,
}

impl ClientKind {
    pub const ALL: [ClientKind; 3] = [
        ClientKind::HostPlain,
        ClientKind::HostBatch,
        ClientKind::EbpfLink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClientKind::HostPlain => "host_plain",
            ClientKind::HostBatch => "host_batch",
            ClientKind::EbpfLink => "ebpf_link",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kinds: Vec<ClientKind>,
    pub counts: Vec<usize>,
    /// Events per measured segment.
    pub events: usize,
    /// Events each thread raises per timed run (0: no timing).
    pub timed_events: usize,
    /// Timed runs (the median is reported).
    pub runs: usize,
    /// Client counts that get wall-clock timings.
    pub timed_counts: Vec<usize>,
}

impl Plan {
    /// Everything `cargo xtask bench` reports.
    pub fn full() -> Plan {
        Plan {
            kinds: ClientKind::ALL.to_vec(),
            counts: vec![0, 1, 2, 4, 8],
            events: 32,
            timed_events: 4000,
            runs: 7,
            timed_counts: vec![0, 1, 8],
        }
    }

    /// `cargo xtask bench --quick`.
    pub fn quick() -> Plan {
        Plan {
            kinds: ClientKind::ALL.to_vec(),
            counts: vec![0, 1, 8],
            events: 8,
            timed_events: 1000,
            runs: 3,
            timed_counts: vec![8],
        }
    }
}

/// One measured segment: `events` events of one kind with `clients`
/// clients of one kind attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub event: String,
    pub client_kind: String,
    pub clients: usize,
    pub events: usize,
    /// Client invocations the segment made (host clients count theirs on
    /// the raising thread, the core counts its programs' runs).
    pub invocations: u64,
}

/// Wall-clock time of one event kind with `clients` clients.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub event: String,
    pub client_kind: String,
    pub clients: usize,
    /// Median ns per event, one thread.
    pub ns_1: f64,
    /// Median ns per event of the two threads together (elapsed time over
    /// both threads' events).
    pub ns_2: f64,
    /// The machine's own scaling, measured in the same runs (interleaved
    /// with the events): median ns per unit of a loop that shares nothing
    /// ([`control_unit`]), one thread, then two. `control_1 / control_2`
    /// is the most two threads of anything got from the machine at the
    /// time; on two idle cores it is about 2.
    pub control_1: f64,
    pub control_2: f64,
    /// Median CPU ns per event, one thread and two (both threads' CPU
    /// time over all events): contention that costs work (cache lines
    /// moving between cores, spinning) raises `cpu_2` over `cpu_1`
    /// whatever else the machine runs.
    pub cpu_1: f64,
    pub cpu_2: f64,
    /// Median waits for a lock (voluntary context switches) per 1000
    /// events, one thread and two: serialisation that blocks.
    pub waits_1: f64,
    pub waits_2: f64,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub image_base: usize,
    pub image_size: usize,
    /// Names of every kernel export (a call from the image to one of these
    /// is a kernel call).
    pub exports: Vec<String>,
    /// In the order of callgrind's dumps.
    pub segments: Vec<Segment>,
    pub timings: Vec<Timing>,
    /// Event kinds the driver does not hook (left out).
    pub unhooked: Vec<String>,
}

/// The function callgrind collects in (`--toggle-collect`) and dumps after
/// (`--dump-after`): runs `f`, which raises one segment's events.
#[inline(never)]
#[no_mangle]
pub fn ntsim_bench_measured(f: &mut dyn FnMut()) {
    f();
    // Keeps the call a call (a tail call would leave the function before
    // the events' code runs as far as callgrind's call tracking goes).
    std::hint::black_box(());
}

thread_local! {
    /// Host client invocations on this thread (no shared cache line).
    static INVOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn invocations() -> u64 {
    INVOCATIONS.with(Cell::get)
}

unsafe extern "win64" fn host_invoke(
    _context: *const c_void,
    _program_context: *mut c_void,
    result: *mut u32,
) -> u32 {
    INVOCATIONS.with(|n| n.set(n.get() + 1));
    // SAFETY: the driver passes a valid result pointer.
    unsafe { *result = 0 };
    0
}

unsafe extern "win64" fn host_batch_begin(_size: usize, _state: *mut c_void) -> u32 {
    0
}

unsafe extern "win64" fn host_batch_invoke(
    context: *const c_void,
    program_context: *mut c_void,
    result: *mut u32,
    _state: *const c_void,
) -> u32 {
    // SAFETY: the same contract as a plain invoke.
    unsafe { host_invoke(context, program_context, result) }
}

unsafe extern "win64" fn host_batch_end(_state: *mut c_void) -> u32 {
    0
}

/// Registers a host hook client (see [`crate::hook::host_client`]) bound
/// to every hook provider, counting its invocations per thread; with
/// `batch`, its dispatch table has the batch functions too.
fn register_client(batch: bool) -> Result<HostClient, String> {
    let mut config = Config::numbered(0x62656e63);
    config.dispatch.ebpf_program_invoke_function = Some(host_invoke);
    if batch {
        config.dispatch.count = 4;
        config.dispatch.ebpf_program_batch_begin_invoke_function = Some(host_batch_begin);
        config.dispatch.ebpf_program_batch_invoke_function = Some(host_batch_invoke);
        config.dispatch.ebpf_program_batch_end_invoke_function = Some(host_batch_end);
    }
    // SAFETY: the dispatch functions ignore the binding context; the
    // client data is the client's own.
    let client = unsafe { HostClient::register(config) }
        .map_err(|status| format!("NmrRegisterClient: {status:#x}"))?;
    match client.attach_status() {
        Some(STATUS_SUCCESS) => Ok(client),
        attached => Err(format!(
            "the driver's hook provider did not attach a host client ({:#x})",
            attached.map_or(usize::MAX, |s| s as u32 as usize)
        )),
    }
}

/// The clients of one configuration (detached when dropped: links first,
/// then their programs). Held, never read: dropping detaches.
#[allow(dead_code)]
enum Clients {
    Host(Vec<HostClient>),
    /// Per attach type: its links, then their program.
    Ebpf(Vec<(Vec<Link>, LoadedProgram)>),
    None,
}

/// `mov64 r0, 0; exit`.
fn return_zero(event: &EventKind) -> Arc<Program> {
    Arc::new(Program {
        name: "return_zero".into(),
        section: "bench".into(),
        program_type: Some(event.program_type),
        attach_type: Some(event.attach_type),
        insns: vec![
            Insn {
                op: 0xb7,
                dst: 0,
                src: 0,
                off: 0,
                imm: 0,
            },
            Insn {
                op: 0x95,
                dst: 0,
                src: 0,
                off: 0,
                imm: 0,
            },
        ],
        maps: Vec::new(),
    })
}

/// Attaches `n` clients of `kind`: host clients attach to every hook
/// provider; eBPF links, `n` per attach type of `events`.
fn attach(kind: ClientKind, n: usize, events: &[&EventKind]) -> Result<Clients, String> {
    if n == 0 {
        return Ok(Clients::None);
    }
    let clients = match kind {
        ClientKind::HostPlain | ClientKind::HostBatch => Clients::Host(
            (0..n)
                .map(|_| register_client(kind == ClientKind::HostBatch))
                .collect::<Result<_, _>>()?,
        ),
        ClientKind::EbpfLink => {
            let mut per_type = Vec::new();
            let mut seen: Vec<GUID> = Vec::new();
            for event in events {
                if seen.contains(&event.attach_type) {
                    continue;
                }
                seen.push(event.attach_type);
                let program = LoadedProgram::load(return_zero(event)).map_err(|e| e.to_string())?;
                let links = (0..n)
                    .map(|_| program.attach(event.attach_type, &[], 0))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                per_type.push((links, program));
            }
            Clients::Ebpf(per_type)
        }
    };
    // The notify routine is registered at the first attach; its removal
    // after a previous configuration runs on a work item.
    io::wait_idle();
    Ok(clients)
}

impl Clients {
    /// Runs of the eBPF links' programs so far (the core counts them).
    fn program_runs(&self) -> u64 {
        match self {
            Clients::Ebpf(per_type) => per_type.iter().map(|(_, p)| p.invocations()).sum(),
            _ => 0,
        }
    }

    /// Detaches every client (links before their programs: a tuple drops
    /// in field order) and waits for the notify routine's removal.
    fn detach(self) {
        drop(self);
        io::wait_idle();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Raises `count` events of `event` on `threads` threads at once (each
/// with its own world, after `WARMUP` unmeasured ones); returns the
/// elapsed ns per event over all threads' events, from the first thread's
/// start to the last thread's end. Each thread reads the clock itself: on
/// a busy machine the thread that waits for them may be scheduled only
/// after they are done.
/// The calling thread's CPU time (ns) and voluntary context switches so
/// far. The workload never sleeps between events, so a voluntary switch
/// during the events is a wait for a lock another thread holds.
fn thread_usage() -> (u64, u64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    // SAFETY: an all-zero rusage is a valid value (plain integers).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid rusage to write.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD) failed");
    (
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
        ru.ru_nvcsw as u64,
    )
}

/// What one timed run measured.
struct Run {
    /// Elapsed ns per event over all threads' events.
    ns: f64,
    /// CPU ns per event (all threads' CPU time over all their events).
    cpu_ns: f64,
    /// Waits (voluntary context switches) per 1000 events.
    waits: f64,
}

fn timed(event_index: usize, threads: usize, count: usize) -> Run {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut world = World::new();
                // The kinds before this one prepare what it consumes (a
                // delete needs its processes), unmeasured.
                for prior in &EVENTS[..event_index] {
                    for _ in 0..count + WARMUP {
                        (prior.raise)(&mut world);
                    }
                }
                for _ in 0..WARMUP {
                    (EVENTS[event_index].raise)(&mut world);
                }
                barrier.wait();
                let usage = thread_usage();
                let start = Instant::now();
                for _ in 0..count {
                    (EVENTS[event_index].raise)(&mut world);
                }
                let end = Instant::now();
                let after = thread_usage();
                // Nothing is torn down while another thread still measures.
                barrier.wait();
                world.end();
                (start, end, after.0 - usage.0, after.1 - usage.1)
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant, u64, u64)> = handles
        .into_iter()
        .map(|h| h.join().expect("a timed thread panicked"))
        .collect();
    let start = spans.iter().map(|s| s.0).min().expect("one thread or more");
    let end = spans.iter().map(|s| s.1).max().expect("one thread or more");
    let events = (threads * count) as f64;
    Run {
        ns: (end - start).as_nanos() as f64 / events,
        cpu_ns: spans.iter().map(|s| s.2).sum::<u64>() as f64 / events,
        waits: spans.iter().map(|s| s.3).sum::<u64>() as f64 * 1000.0 / events,
    }
}

/// One unit of the control workload: arithmetic on a small per-thread
/// array, about a microsecond; nothing shared between threads, nothing
/// allocated.
fn control_unit(state: &mut [u64; 512], seed: u64) -> u64 {
    let mut x = seed;
    for i in 0..1500u64 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        state[(x >> 55) as usize] ^= x;
    }
    x ^ state[(x & 511) as usize]
}

/// [`timed`] for the control workload: `count` units per thread.
fn timed_control(threads: usize, count: usize) -> f64 {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut state = [0u64; 512];
                barrier.wait();
                let start = Instant::now();
                let mut x = t as u64;
                for _ in 0..count {
                    x = control_unit(&mut state, x);
                }
                let end = Instant::now();
                std::hint::black_box(x);
                (start, end)
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = handles
        .into_iter()
        .map(|h| h.join().expect("a control thread panicked"))
        .collect();
    let start = spans.iter().map(|s| s.0).min().expect("one thread or more");
    let end = spans.iter().map(|s| s.1).max().expect("one thread or more");
    (end - start).as_nanos() as f64 / (threads * count) as f64
}

/// Runs `plan` against the driver image at `driver`. The driver is
/// loaded once (so the image's address is the same for every segment);
/// the machine must be left clean, else this fails with the findings.
pub fn run(driver: &Path, plan: &Plan) -> Result<Report, String> {
    // Special pool puts every block on its own pages: slower, and it
    // changes nothing the driver executes.
    let mut sim = Sim::with_options(Options {
        special_pool: false,
    });
    let status = sim.load_driver(driver).map_err(|e| e.to_string())?;
    if status != 0 {
        return Err(format!("DriverEntry failed: {status:#x}"));
    }
    let image = sim.driver().expect("loaded").image();
    let (image_base, image_size) = (image.base(), image.size());
    let mut report = Report {
        image_base,
        image_size,
        exports: exports::table()
            .iter()
            .map(|e| e.name.to_string())
            .collect(),
        segments: Vec::new(),
        timings: Vec::new(),
        unhooked: Vec::new(),
    };
    // Which kinds the driver hooks: seen with one client attached.
    let hooked: Vec<bool> = {
        let probe = attach(ClientKind::HostPlain, 1, &[])?;
        let hooked = EVENTS.iter().map(|e| (e.hooked)()).collect();
        probe.detach();
        hooked
    };
    for (e, _) in EVENTS.iter().zip(&hooked).filter(|(_, h)| !**h) {
        report.unhooked.push(e.name.to_string());
    }
    let hooked_events: Vec<&EventKind> = EVENTS
        .iter()
        .zip(&hooked)
        .filter_map(|(e, h)| h.then_some(e))
        .collect();
    for &kind in &plan.kinds {
        for &n in &plan.counts {
            let clients = attach(kind, n, &hooked_events)?;
            let mut world = World::new();
            for (i, event) in EVENTS.iter().enumerate() {
                if !hooked[i] {
                    continue;
                }
                for _ in 0..WARMUP {
                    (event.raise)(&mut world);
                }
                let before = invocations() + clients.program_runs();
                ntsim_bench_measured(&mut || {
                    for _ in 0..plan.events {
                        (event.raise)(&mut world);
                    }
                });
                report.segments.push(Segment {
                    event: event.name.to_string(),
                    client_kind: kind.name().to_string(),
                    clients: n,
                    events: plan.events,
                    invocations: invocations() + clients.program_runs() - before,
                });
            }
            world.end();
            if plan.timed_events > 0 && plan.timed_counts.contains(&n) {
                for (i, event) in EVENTS.iter().enumerate() {
                    if !hooked[i] {
                        continue;
                    }
                    let (mut one, mut two) = (Vec::new(), Vec::new());
                    let (mut control_1, mut control_2) = (Vec::new(), Vec::new());
                    for _ in 0..plan.runs {
                        one.push(timed(i, 1, plan.timed_events));
                        two.push(timed(i, 2, plan.timed_events));
                        control_1.push(timed_control(1, plan.timed_events));
                        control_2.push(timed_control(2, plan.timed_events));
                    }
                    let of =
                        |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
                    report.timings.push(Timing {
                        event: event.name.to_string(),
                        client_kind: kind.name().to_string(),
                        clients: n,
                        ns_1: of(&one, |r| r.ns),
                        ns_2: of(&two, |r| r.ns),
                        control_1: median(control_1),
                        control_2: median(control_2),
                        cpu_1: of(&one, |r| r.cpu_ns),
                        cpu_2: of(&two, |r| r.cpu_ns),
                        waits_1: of(&one, |r| r.waits),
                        waits_2: of(&two, |r| r.waits),
                    });
                }
            }
            clients.detach();
        }
    }
    sim.finish()?;
    Ok(report)
}

impl Report {
    /// The report in the line format [`Report::parse`] reads (what
    /// `ntsim-hotpath` writes for `cargo xtask bench`): one record a line,
    /// fields separated by spaces (no field contains one).
    pub fn to_lines(&self) -> String {
        let mut out = format!("image {} {}\n", self.image_base, self.image_size);
        for e in &self.exports {
            out += &format!("export {e}\n");
        }
        for e in &self.unhooked {
            out += &format!("unhooked {e}\n");
        }
        for s in &self.segments {
            out += &format!(
                "segment {} {} {} {} {}\n",
                s.event, s.client_kind, s.clients, s.events, s.invocations
            );
        }
        for t in &self.timings {
            out += &format!(
                "timing {} {} {} {:.1} {:.1} {:.1} {:.1} {:.1} {:.1} {:.2} {:.2}\n",
                t.event,
                t.client_kind,
                t.clients,
                t.ns_1,
                t.ns_2,
                t.control_1,
                t.control_2,
                t.cpu_1,
                t.cpu_2,
                t.waits_1,
                t.waits_2
            );
        }
        out
    }

    /// Reads what [`to_lines`](Self::to_lines) wrote.
    ///
    /// # Errors
    /// The first line that is not a record of that format.
    pub fn parse(text: &str) -> Result<Report, String> {
        let mut r = Report {
            image_base: 0,
            image_size: 0,
            exports: Vec::new(),
            segments: Vec::new(),
            timings: Vec::new(),
            unhooked: Vec::new(),
        };
        for (i, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split(' ').collect();
            let bad = || format!("line {}: not a report record: {line:?}", i + 1);
            let num = |s: &str| s.parse::<usize>().map_err(|_| bad());
            let float = |s: &str| s.parse::<f64>().map_err(|_| bad());
            match f.as_slice() {
                ["image", base, size] => (r.image_base, r.image_size) = (num(base)?, num(size)?),
                ["export", name] => r.exports.push(name.to_string()),
                ["unhooked", name] => r.unhooked.push(name.to_string()),
                ["segment", event, kind, clients, events, invocations] => {
                    r.segments.push(Segment {
                        event: event.to_string(),
                        client_kind: kind.to_string(),
                        clients: num(clients)?,
                        events: num(events)?,
                        invocations: num(invocations)? as u64,
                    })
                }
                ["timing", event, kind, clients, ns_1, ns_2, control_1, control_2, cpu_1, cpu_2, waits_1, waits_2] => {
                    r.timings.push(Timing {
                        event: event.to_string(),
                        client_kind: kind.to_string(),
                        clients: num(clients)?,
                        ns_1: float(ns_1)?,
                        ns_2: float(ns_2)?,
                        control_1: float(control_1)?,
                        control_2: float(control_2)?,
                        cpu_1: float(cpu_1)?,
                        cpu_2: float(cpu_2)?,
                        waits_1: float(waits_1)?,
                        waits_2: float(waits_2)?,
                    })
                }
                _ => return Err(bad()),
            }
        }
        if r.image_size == 0 {
            return Err("the report has no image record".into());
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_as_written() {
        let r = Report {
            image_base: 0x7000_0000,
            image_size: 65536,
            exports: vec!["ExAllocatePool2".into(), "KeGetCurrentIrql".into()],
            segments: vec![Segment {
                event: "process_create".into(),
                client_kind: "host_plain".into(),
                clients: 8,
                events: 32,
                invocations: 256,
            }],
            timings: vec![Timing {
                event: "process_delete".into(),
                client_kind: "ebpf_link".into(),
                clients: 1,
                ns_1: 1234.5,
                ns_2: 700.0,
                control_1: 1000.0,
                control_2: 520.5,
                cpu_1: 1200.0,
                cpu_2: 1300.0,
                waits_1: 0.0,
                waits_2: 12.25,
            }],
            unhooked: vec!["thread_create".into()],
        };
        let back = Report::parse(&r.to_lines()).unwrap();
        assert_eq!(back.to_lines(), r.to_lines());
        assert_eq!(back.segments, r.segments);
        assert!(Report::parse("image 1 2\nsegment x y z 1 1\n").is_err());
        assert!(Report::parse("export A\n").is_err(), "no image record");
        assert!(
            Report::parse("image 1 2\ntiming e k 1 2.0 3.0\n").is_err(),
            "a timing without the control"
        );
    }
}
