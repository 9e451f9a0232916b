//! The general helpers (ids 1..=0xFFFF) with eBPF for Windows ids and
//! semantics. Each pointer argument is checked against the run's memory
//! before use, as the verifier would have proved it; a bad one stops the
//! program with an error naming the helper.

use super::maps::{map_type, EbpfResult};
use super::program::{Run, MAX_TAIL_CALL_COUNT};
use super::vm::HelperOutcome;

const EINVAL: u64 = (-22i64) as u64;
const ERANGE: i64 = 34;
/// NTSTATUS values RtlStringCbCopyNExA returns (as an int).
const STATUS_BUFFER_OVERFLOW: i32 = 0x8000_0005u32 as i32;
const STATUS_INVALID_PARAMETER: i32 = 0xC000_000Du32 as i32;
const MAX_PRINTK_STRING_SIZE: u64 = 512;

/// Names of the general helpers by id, for messages.
pub fn name(id: u32) -> &'static str {
    match id {
        1 => "bpf_map_lookup_elem",
        2 => "bpf_map_update_elem",
        3 => "bpf_map_delete_elem",
        4 => "bpf_map_lookup_and_delete_elem",
        5 => "bpf_tail_call",
        6 => "bpf_get_prandom_u32",
        7 => "bpf_ktime_get_boot_ns",
        8 => "bpf_get_smp_processor_id",
        9 => "bpf_ktime_get_ns",
        10 => "bpf_csum_diff",
        11 => "bpf_ringbuf_output",
        12..=15 => "bpf_trace_printk",
        16 => "bpf_map_push_elem",
        17 => "bpf_map_pop_elem",
        18 => "bpf_map_peek_elem",
        19 => "bpf_get_current_pid_tgid",
        20 => "bpf_get_current_logon_id",
        21 => "bpf_is_current_admin",
        22 => "bpf_memcpy_s",
        23 => "bpf_memcmp_s",
        24 => "bpf_memset",
        25 => "bpf_memmove_s",
        27 => "bpf_strncpy_s",
        28 => "bpf_strncat_s",
        29 => "bpf_strnlen_s",
        30 => "bpf_ktime_get_boot_ms",
        31 => "bpf_ktime_get_ms",
        32 => "bpf_perf_event_output",
        33 => "bpf_get_current_process_start_key",
        34 => "bpf_get_current_thread_create_time",
        _ => "(unknown helper)",
    }
}

struct Args<'r, 'a> {
    run: &'r Run<'a>,
    id: u32,
}

impl Args<'_, '_> {
    fn mem(&self, addr: u64, len: u64, write: bool, what: &str) -> Result<(), String> {
        if len == 0 || self.run.region_ok(addr, len, write) || self.on_stack(addr, len) {
            Ok(())
        } else {
            Err(format!(
                "{} ({}): {what} [{addr:#x}, +{len}) is outside the program's memory",
                name(self.id),
                self.id
            ))
        }
    }

    /// Stack frames belong to the interpreter, which lists the live ones
    /// for the duration of the call.
    fn on_stack(&self, addr: u64, len: u64) -> bool {
        self.run
            .stack
            .iter()
            .any(|&(s, l)| addr >= s && addr.checked_add(len).is_some_and(|e| e <= s + l))
    }

    fn read(&self, addr: u64, len: u64, what: &str) -> Result<Vec<u8>, String> {
        self.mem(addr, len, false, what)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: `mem` proved the range readable for this run.
        Ok(
            unsafe { std::slice::from_raw_parts(addr as usize as *const u8, len as usize) }
                .to_vec(),
        )
    }

    fn write(&self, addr: u64, bytes: &[u8], what: &str) -> Result<(), String> {
        self.mem(addr, bytes.len() as u64, true, what)?;
        if !bytes.is_empty() {
            // SAFETY: `mem` proved the range writable for this run.
            unsafe { std::ptr::copy(bytes.as_ptr(), addr as usize as *mut u8, bytes.len()) };
        }
        Ok(())
    }
}

fn ret(v: u64) -> Result<HelperOutcome, String> {
    Ok(HelperOutcome::Return(v))
}

fn result_value(r: Result<(), EbpfResult>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(e) => e.helper_value(),
    }
}

/// Calls general helper `id`.
pub(crate) fn call(run: &mut Run, id: u32, a: [u64; 5]) -> Result<HelperOutcome, String> {
    let args = Args { run, id };
    let kernel = run.env.kernel;
    let cpu = kernel.current_cpu();
    match id {
        1 | 4 => {
            let map = run.map(a[0])?;
            let key = args.read(a[1], map.def().key_size as u64, "key")?;
            ret(map.helper_lookup(&key, cpu, id == 4).unwrap_or(0))
        }
        2 => {
            let map = run.map(a[0])?;
            let key = args.read(a[1], map.def().key_size as u64, "key")?;
            let value = args.read(a[2], map.def().value_size as u64, "value")?;
            ret(result_value(map.helper_update(&key, &value, a[3], cpu)))
        }
        3 => {
            let map = run.map(a[0])?;
            let key = args.read(a[1], map.def().key_size as u64, "key")?;
            ret(result_value(map.helper_delete(&key)))
        }
        5 => {
            if a[0] != run.ctx {
                return Err(
                    "bpf_tail_call (5): the first argument is not the program context".into(),
                );
            }
            let map = run.map(a[1])?;
            if map.def().map_type != map_type::PROG_ARRAY {
                return Err("bpf_tail_call (5): the map is not a program array".into());
            }
            let Some(next) = map.program_at(a[2] as u32) else {
                return ret(EbpfResult::InvalidArgument.helper_value());
            };
            if run.tail_calls + 1 >= MAX_TAIL_CALL_COUNT {
                return ret(EbpfResult::NoMoreTailCalls.helper_value());
            }
            if next.program_type != run.program.program_type {
                return ret(EbpfResult::InvalidArgument.helper_value());
            }
            run.tail_calls += 1;
            run.tail_call = Some(next);
            // eBPF for Windows unwinds the caller when the tail call succeeds.
            Ok(HelperOutcome::Unwind(0))
        }
        6 => ret(kernel.random_u32() as u64),
        7 => ret(kernel.time_since_boot_100ns(true).wrapping_mul(100)),
        8 => ret(cpu as u64),
        9 => ret(kernel.time_since_boot_100ns(false).wrapping_mul(100)),
        10 => {
            let (from_size, to_size, seed) = (a[1] as i32, a[3] as i32, a[4] as i32);
            if from_size < 0 || to_size < 0 || from_size % 4 != 0 || to_size % 4 != 0 {
                return ret(EINVAL);
            }
            let from = if a[0] == 0 {
                Vec::new()
            } else {
                args.read(a[0], from_size as u64, "from")?
            };
            let to = if a[2] == 0 {
                Vec::new()
            } else {
                args.read(a[2], to_size as u64, "to")?
            };
            let mut sum = seed as i64;
            for c in to.chunks_exact(2) {
                sum += u16::from_le_bytes([c[0], c[1]]) as i64;
            }
            for c in from.chunks_exact(2) {
                sum += (!u16::from_le_bytes([c[0], c[1]])) as i64;
            }
            let sum = sum as i32;
            ret(if sum < 0 { EINVAL } else { sum as u32 as u64 })
        }
        11 => {
            let map = run.map(a[0])?;
            if map.def().map_type != map_type::RINGBUF {
                return Err("bpf_ringbuf_output (11): the map is not a ring buffer".into());
            }
            let data = args.read(a[1], a[2], "data")?;
            ret(result_value(map.ring_output(&data)))
        }
        12..=15 => {
            let fmt = args.read(a[0], a[1], "format")?;
            let values = &a[2..2 + (id - 12) as usize];
            let r = printk(&fmt, values);
            if let Ok(line) = &r.1 {
                run.env
                    .trace
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.clone());
            }
            ret(r.0 as u64)
        }
        16 => {
            let map = run.map(a[0])?;
            let value = args.read(a[1], map.def().value_size as u64, "value")?;
            ret(result_value(map.push(&value, a[2])))
        }
        17 | 18 => {
            let map = run.map(a[0])?;
            args.mem(a[1], map.def().value_size as u64, true, "value")?;
            match map.pop(id == 17) {
                Ok(v) => {
                    args.write(a[1], &v, "value")?;
                    ret(0)
                }
                Err(e) => ret(e.helper_value()),
            }
        }
        19 => ret(kernel.current_pid_tgid()),
        // eBPF for Windows answers 0 when called at DISPATCH_LEVEL or above.
        20 if crate::kernel::irql::current() >= crate::kernel::types::DISPATCH_LEVEL => ret(0),
        20 => ret(kernel.current_logon_id()),
        21 => ret(kernel.is_current_admin() as i64 as u64),
        22 | 25 => {
            // memcpy_s / memmove_s: -EINVAL when the source is larger.
            let (dst, dst_size, src, src_size) = (a[0], a[1], a[2], a[3]);
            if src_size > dst_size {
                return ret(EINVAL);
            }
            args.mem(dst, dst_size, true, "destination")?;
            let bytes = args.read(src, src_size, "source")?;
            args.write(dst, &bytes, "destination")?;
            ret(0)
        }
        23 => {
            let m1 = args.read(a[0], a[1], "first buffer")?;
            let m2 = args.read(a[2], a[3], "second buffer")?;
            let n = m1.len().min(m2.len());
            let r: i32 = match m1[..n].cmp(&m2[..n]) {
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Equal => (m1.len() as i64 - m2.len() as i64).signum() as i32,
            };
            ret(r as i64 as u64)
        }
        24 => {
            args.write(a[0], &vec![a[2] as u8; a[1] as usize], "memory")?;
            // Returns the buffer's address, as memset does.
            ret(a[0])
        }
        27 => {
            let (dst, dst_size, src, count) = (a[0], a[1], a[2], a[3]);
            if dst_size == 0 {
                return ret(STATUS_INVALID_PARAMETER as i64 as u64);
            }
            args.mem(dst, dst_size, true, "destination")?;
            let src_bytes = args.read(src, count, "source")?;
            let len = src_bytes
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(src_bytes.len());
            let mut out = vec![0u8; dst_size as usize];
            let copied = len.min(dst_size as usize - 1);
            out[..copied].copy_from_slice(&src_bytes[..copied]);
            args.write(dst, &out, "destination")?;
            ret(if copied < len {
                STATUS_BUFFER_OVERFLOW as i64 as u64
            } else {
                0
            })
        }
        28 => {
            let (dst, dst_size, src, count) = (a[0], a[1], a[2], a[3]);
            let cur = args.read(dst, dst_size, "destination")?;
            let Some(dlen) = cur.iter().position(|&c| c == 0) else {
                if dst_size > 0 {
                    args.write(dst, &[0], "destination")?;
                }
                return ret(EINVAL);
            };
            let src_bytes = args.read(src, count, "source")?;
            let slen = src_bytes
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(src_bytes.len());
            if dlen + slen + 1 > dst_size as usize {
                args.write(dst, &[0], "destination")?;
                return ret((-ERANGE) as u64);
            }
            let mut tail = src_bytes[..slen].to_vec();
            tail.push(0);
            args.write(dst + dlen as u64, &tail, "destination")?;
            ret(0)
        }
        29 => {
            if a[0] == 0 {
                return ret(0);
            }
            let s = args.read(a[0], a[1], "string")?;
            ret(s.iter().position(|&c| c == 0).unwrap_or(s.len()) as u64)
        }
        30 => ret(kernel.time_since_boot_100ns(true) / 10_000),
        31 => ret(kernel.time_since_boot_100ns(false) / 10_000),
        32 => {
            if a[0] != run.ctx {
                return Err(
                    "bpf_perf_event_output (32): the first argument is not the program context"
                        .into(),
                );
            }
            let map = run.map(a[1])?;
            if map.def().map_type != map_type::PERF_EVENT_ARRAY {
                return Err("bpf_perf_event_output (32): the map is not a perf event array".into());
            }
            let flags = a[2];
            let index = flags & 0xffff_ffff;
            let capture = ((flags >> 32) & 0xfffff) as usize;
            if flags & !0x000f_ffff_ffff_ffff != 0 || (index != 0xffff_ffff && index != cpu as u64)
            {
                return ret(EbpfResult::InvalidArgument.helper_value());
            }
            let mut data = args.read(a[3], a[4], "data")?;
            if capture > 0 {
                let Some((start, end)) = run.packet else {
                    return ret(EbpfResult::InvalidArgument.helper_value());
                };
                if end < start || (end - start) < capture as u64 {
                    return ret(EbpfResult::InvalidArgument.helper_value());
                }
                data.extend(args.read(start, capture as u64, "context data")?);
            }
            ret(result_value(map.perf_output(cpu, data)))
        }
        33 => ret(kernel.current_process_start_key()),
        34 => ret(kernel.current_thread_create_time() as u64),
        _ => Err(format!(
            "helper {id} is not a general helper this core provides"
        )),
    }
}

/// `bpf_trace_printk`: validates the format as eBPF for Windows does (only
/// `%d %i %u %x` with `l`/`ll`, `%%`; as many specifiers as arguments) and
/// formats it. Returns (helper result, the line or why it was refused).
pub(crate) fn printk(fmt: &[u8], args: &[u64]) -> (i64, Result<String, String>) {
    if fmt.len() as u64 > MAX_PRINTK_STRING_SIZE - 1 || fmt.is_empty() {
        return (-1, Err("format too long or empty".into()));
    }
    // Drop the terminating zero (and a newline before it).
    let mut s = fmt.to_vec();
    let mut end = s.len() - 1;
    if end > 0 && s[end - 1] == b'\n' {
        end -= 1;
    }
    s.truncate(end);
    if let Some(z) = s.iter().position(|&c| c == 0) {
        s.truncate(z);
    }
    let mut out = String::new();
    let mut used = 0usize;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'%' {
            out.push(c as char);
            i += 1;
            continue;
        }
        if i + 1 >= s.len() {
            return (-1, Err("format ends with %".into()));
        }
        if s[i + 1] == b'%' {
            out.push('%');
            i += 2;
            continue;
        }
        let mut j = i + 1;
        let mut longs = 0;
        while j < s.len() && s[j] == b'l' && longs < 2 {
            longs += 1;
            j += 1;
        }
        let Some(&conv) = s.get(j) else {
            return (-1, Err("incomplete conversion".into()));
        };
        if !b"diux".contains(&conv) {
            return (-1, Err(format!("unsupported conversion %{}", conv as char)));
        }
        let Some(&v) = args.get(used) else {
            return (-1, Err("more conversions than arguments".into()));
        };
        used += 1;
        let wide = longs > 0;
        let text = match conv {
            b'd' | b'i' => {
                if wide {
                    (v as i64).to_string()
                } else {
                    (v as i32).to_string()
                }
            }
            b'u' => {
                if wide {
                    v.to_string()
                } else {
                    (v as u32).to_string()
                }
            }
            _ => {
                if wide {
                    format!("{v:x}")
                } else {
                    format!("{:x}", v as u32)
                }
            }
        };
        out.push_str(&text);
        i = j + 1;
    }
    if used != args.len() {
        return (-1, Err("fewer conversions than arguments".into()));
    }
    (out.len() as i64, Ok(out))
}
