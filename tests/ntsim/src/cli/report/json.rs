//! The JSON form of a run (`ntsim run --json`): one object a line, the
//! schema documented in docs/ntsim.md ("JSON output").

use super::*;

fn status_json(s: NTSTATUS) -> (J, J) {
    (
        J::String(format!("{:#010x}", s as u32)),
        status::name(s).map_or(J::Null, |n| J::String(n.into())),
    )
}

/// The JSON object of a step.
pub fn step_json(step: &StepReport) -> J {
    let mut o = json!({
        "type": "step",
        "step": step.index,
        "line": step.line,
        "keyword": step.keyword,
        "name": step.name,
    });
    let m = o.as_object_mut().expect("an object");
    match &step.outcome {
        Outcome::Created {
            pid,
            tid,
            parent_pid,
            spec,
            logon_id,
            ..
        } => {
            let (creator_pid, creator_tid) = spec.creating_thread.unwrap_or((0, 0));
            let creation_time = spec.creation_time.unwrap_or(0);
            m.extend([
                ("event".into(), json!("process_create")),
                ("pid".into(), json!(pid)),
                ("tid".into(), json!(tid)),
                ("parent_pid".into(), json!(parent_pid)),
                (
                    "creator".into(),
                    json!({"pid": creator_pid, "tid": creator_tid}),
                ),
                ("image".into(), json!(spec.image_file_name)),
                ("command_line".into(), json!(spec.command_line)),
                (
                    "user_sid".into(),
                    json!(spec.user_sid.as_deref().and_then(ps::sid_to_string)),
                ),
                ("token_logon_id".into(), json!(logon_id)),
                ("creation_time".into(), json!(creation_time)),
                ("time".into(), json!(format_filetime(creation_time))),
            ]);
        }
        Outcome::Exited {
            pid, code, time, ..
        } => {
            m.extend([
                ("event".into(), json!("process_exit")),
                ("pid".into(), json!(pid)),
                ("exit_code".into(), json!(format!("{:#010x}", *code as u32))),
                ("exit_time".into(), json!(time)),
                ("time".into(), json!(format_filetime(*time))),
            ]);
        }
        Outcome::TestRun {
            program,
            input: TestRunKind::Netevent(input),
            ..
        } => {
            m.extend([
                ("event".into(), json!("test_run")),
                ("program".into(), json!(program)),
                (
                    "input".into(),
                    json!({
                        "type": input.event_type,
                        "header": hex(&input.header),
                        "data": hex(&input.data),
                        "data_in": hex(&input.data_in()),
                    }),
                ),
            ]);
        }
        Outcome::TestRun {
            program,
            input: TestRunKind::Process(input),
            ..
        } => {
            let md = &input.md;
            let sid = &md.token_sid[..(md.token_sid_size as usize).min(TOKEN_SID_MAX_SIZE)];
            let strings: serde_json::Map<String, J> = TEST_RUN_STRINGS
                .iter()
                .zip(input.strings())
                .map(|(n, b)| ((*n).to_string(), json!(from_utf16(b))))
                .collect();
            m.extend([
                ("event".into(), json!("test_run")),
                ("program".into(), json!(program)),
                (
                    "input".into(),
                    json!({
                        "process_id": md.process_id,
                        "parent_process_id": md.parent_process_id,
                        "creating_process_id": md.creating_process_id,
                        "creating_thread_id": md.creating_thread_id,
                        "creation_time": md.creation_time,
                        "exit_time": md.exit_time,
                        "process_exit_code": md.process_exit_code,
                        "operation": md.operation,
                        "token_sid": (!sid.is_empty()).then(|| ps::sid_to_string(sid).unwrap_or_else(|| hex(sid))),
                        "strings": strings,
                        "account_lookup_done": input.account_lookup_done,
                    }),
                ),
            ]);
        }
        Outcome::ThreadCreated {
            pid,
            tid,
            creator_pid,
            creator_tid,
            start,
            ..
        } => {
            m.extend([
                ("event".into(), json!("thread_create")),
                ("pid".into(), json!(pid)),
                ("tid".into(), json!(tid)),
                (
                    "creator".into(),
                    json!({"pid": creator_pid, "tid": creator_tid}),
                ),
                ("start_address".into(), json!(start)),
                ("remote".into(), json!(creator_pid != pid)),
            ]);
        }
        Outcome::ThreadExited { tid, code, .. } => {
            m.extend([
                ("event".into(), json!("thread_exit")),
                ("tid".into(), json!(tid)),
                (
                    "exit_status".into(),
                    json!(format!("{:#010x}", *code as u32)),
                ),
            ]);
        }
        Outcome::ImageLoaded {
            process,
            pid,
            path,
            base,
            size,
        } => {
            let (event, flags) = match process {
                Some(_) => ("image_load", 0),
                None => ("driver_load", image_load::FLAG_SYSTEM_MODE),
            };
            m.extend([
                ("event".into(), json!(event)),
                ("pid".into(), json!(pid)),
                ("path".into(), json!(path)),
                ("image_base".into(), json!(base)),
                ("image_size".into(), json!(size)),
                ("flags".into(), json!(flags)),
            ]);
        }
        Outcome::Skipped { .. } => {
            m.extend([
                ("event".into(), json!("skipped")),
                (
                    "reason".into(),
                    json!("the process or thread is not running (a creation was denied)"),
                ),
            ]);
        }
        Outcome::Netevent(d) => {
            let clients: Vec<J> = d
                .clients
                .iter()
                .map(|c| {
                    json!({
                        "module": c.module.to_string(),
                        "binding": c.binding,
                        "capture_type": c.capture_type,
                        "result": format!("{:?}", c.result).to_ascii_lowercase(),
                    })
                })
                .collect();
            m.extend([
                ("event".into(), json!("netevent")),
                ("provider".into(), json!(d.provider)),
                ("irql".into(), json!(d.irql)),
                ("event_type".into(), json!(d.event_type)),
                ("clients".into(), json!(clients)),
            ]);
        }
        Outcome::NeteventProvider {
            id,
            registered,
            clients,
        } => {
            m.extend([
                (
                    "event".into(),
                    json!(if *registered {
                        "netevent_provider_registered"
                    } else {
                        "netevent_provider_deregistered"
                    }),
                ),
                ("provider".into(), json!(id)),
                (
                    "clients".into(),
                    json!(clients.iter().map(|c| c.to_string()).collect::<Vec<_>>()),
                ),
            ]);
        }
        Outcome::NotRunning { .. } => {
            m.extend([
                ("event".into(), json!("skipped")),
                (
                    "reason".into(),
                    json!("the process is not running (its creation was denied)"),
                ),
            ]);
        }
    }
    o
}

/// The JSON object of a step's verdict: what the programs decided and
/// what they obtained from the driver's helpers.
pub fn verdict_json(step: &StepReport) -> J {
    let (verdict, code, name) = match step.verdict() {
        Some(s) => {
            let (code, name) = status_json(s);
            let v = if nt_success(s) { "permitted" } else { "denied" };
            (json!(v), code, name)
        }
        None => (json!("none"), J::Null, J::Null),
    };
    let account = match (&step.outcome, step.account_seen()) {
        (Outcome::Created { .. }, AccountSeen::Read { domain, name }) => {
            json!({"domain": domain, "name": name})
        }
        (Outcome::Created { .. }, AccountSeen::Error(e)) => json!({"error": e}),
        _ => J::Null,
    };
    let helpers: Vec<J> = step
        .helpers
        .iter()
        .map(|c| {
            json!({
                "program": c.program,
                "id": c.id,
                "helper": hook::helper_name(c.id),
                "result": c.result,
                "value": c.bytes.as_deref().map(from_utf16),
            })
        })
        .collect();
    let test_run = match &step.outcome {
        Outcome::TestRun { input, output, .. } => decode::to_json(&test_run_value(input, output)),
        _ => J::Null,
    };
    json!({
        "type": "verdict",
        "step": step.index,
        "verdict": verdict,
        "status": code,
        "status_name": name,
        "account": account,
        "helpers": helpers,
        "test_run": test_run,
    })
}

/// The JSON object of an event (the schema of `ntsim run --json`).
pub fn event_json(event: &Event, decoder: &Decoder) -> J {
    match event {
        Event::Start(s) => {
            let (code, name) = status_json(s.driver_entry);
            json!({
                "type": "start",
                "schema": JSON_SCHEMA_VERSION,
                "driver": s.driver,
                "driver_entry": code,
                "driver_entry_name": name,
                "object": s.object,
                "programs": s.programs,
                "faults": s.faults.iter().map(|(api, n)| json!({"api": api, "call": n})).collect::<Vec<_>>(),
                "steps": s.steps,
                "drivers": s.drivers.iter().map(|d| {
                    let (code, name) = status_json(d.driver_entry);
                    json!({
                        "name": d.name,
                        "driver_entry": code,
                        "driver_entry_name": name,
                        "dbgprint": d.dbgprint,
                    })
                }).collect::<Vec<_>>(),
            })
        }
        Event::Step(s) => step_json(s),
        Event::Verdict(s) => verdict_json(s),
        Event::Record(r) => json!({
            "type": "record",
            "step": r.step,
            "map": r.map,
            "map_type": map_type_key(r.map_type),
            "index": r.index,
            "cpu": r.cpu,
            "size": r.data.len(),
            "data": hex(&r.data),
            "value_type": decoder.record_type(&r.map),
            "value": decoder.record(&r.map, &r.data).as_ref().map(decode::to_json),
        }),
        Event::Trace {
            step,
            program,
            text,
        } => json!({
            "type": "trace",
            "step": step,
            "program": program,
            "text": text.trim_end(),
        }),
        Event::ProgramError {
            step,
            program,
            text,
        } => json!({
            "type": "program_error",
            "step": step,
            "program": program,
            "text": text,
        }),
        Event::Map(m) => map_json(m, decoder),
        Event::Etw { step, event } => etw_json(*step, event),
        Event::End(e) => json!({
            "type": "end",
            "ok": e.findings.is_empty(),
            "programs": e.programs,
            "unload_error": e.unload_error,
            "unfired_faults": e.unfired.iter().map(|(api, n)| json!({"api": api, "call": n})).collect::<Vec<_>>(),
            "findings": e.findings,
            "drivers": e.drivers.iter().map(|d| json!({
                "name": d.name,
                "unload_error": d.unload_error,
                "dbgprint": d.dbgprint.iter().map(|(step, text)| json!({"step": step, "text": text})).collect::<Vec<_>>(),
                "findings": d.findings,
            })).collect::<Vec<_>>(),
        }),
    }
}

/// A decoded ETW field's value in JSON: numbers as numbers, hexadecimal
/// and NTSTATUS fields as `"0x..."` strings, GUIDs as `"{...}"`, binary
/// as hex, arrays as lists.
fn etw_value_json(v: &EtwValue) -> J {
    match v {
        EtwValue::I8(x) => json!(x),
        EtwValue::U8(x) => json!(x),
        EtwValue::I16(x) => json!(x),
        EtwValue::U16(x) => json!(x),
        EtwValue::I32(x) => json!(x),
        EtwValue::U32(x) => json!(x),
        EtwValue::I64(x) => json!(x),
        EtwValue::U64(x) => json!(x),
        EtwValue::Hex32(x) => json!(format!("{x:#x}")),
        EtwValue::Hex64(x) => json!(format!("{x:#x}")),
        EtwValue::Bool(x) => json!(x),
        EtwValue::NtStatus(x) => json!(format!("{x:#010x}")),
        EtwValue::Guid(g) => json!(format!("{{{g}}}")),
        EtwValue::Str(s) => json!(s),
        EtwValue::Binary(b) => json!(hex(b)),
        EtwValue::Array(items) => J::Array(items.iter().map(etw_value_json).collect()),
    }
}

/// The JSON object of an ETW event: the decoded TraceLogging event
/// (provider name, event name, fields by name), or for an event that is
/// not TraceLogging, its descriptor and data.
fn etw_json(step: Option<usize>, e: &EtwEvent) -> J {
    let d = &e.descriptor;
    let mut o = json!({
        "type": "etw",
        "step": step,
        "provider_id": format!("{{{}}}", e.provider),
        "level": d.Level,
        "keyword": format!("{:#x}", d.Keyword),
        "opcode": d.Opcode,
    });
    let m = o.as_object_mut().expect("an object");
    match &e.decoded {
        Some(ev) => {
            let fields: serde_json::Map<String, J> = ev
                .fields
                .iter()
                .map(|f| (f.name.clone(), etw_value_json(&f.value)))
                .collect();
            m.extend([
                ("provider".into(), json!(ev.provider_name)),
                ("event".into(), json!(ev.name)),
                ("fields".into(), J::Object(fields)),
            ]);
        }
        None => {
            m.extend([
                ("provider".into(), J::Null),
                ("event".into(), J::Null),
                ("id".into(), json!(d.Id)),
                ("data".into(), json!(hex(&e.data))),
            ]);
        }
    }
    o
}

fn map_json(m: &MapReport, decoder: &Decoder) -> J {
    let def = &m.def;
    let (key_type, value_type) = decoder.map_types(&m.name);
    let decode_value = |v: &[u8]| {
        decoder
            .value(&m.name, v)
            .map_or_else(|| J::String(hex(v)), |d| decode::to_json(&d))
    };
    let entries: Vec<J> = m
        .entries
        .iter()
        .map(|(k, v)| {
            let key = decoder
                .key(&m.name, k)
                .map_or_else(|| J::String(hex(k)), |d| decode::to_json(&d));
            let mut e = json!({"key": key, "key_data": hex(k)});
            let o = e.as_object_mut().expect("an object");
            if is_percpu(def.map_type) {
                let values: Vec<J> = split_percpu(def.value_size, v)
                    .into_iter()
                    .map(decode_value)
                    .collect();
                o.insert("values".into(), J::Array(values));
            } else {
                o.insert("value".into(), decode_value(v));
            }
            o.insert("value_data".into(), J::String(hex(v)));
            e
        })
        .collect();
    let elements: Vec<J> = m
        .elements
        .iter()
        .map(|v| {
            let decoded = match def.map_type {
                map_type::RINGBUF | map_type::PERF_EVENT_ARRAY => decoder.record(&m.name, v),
                _ => decoder.value(&m.name, v),
            };
            json!({"data": hex(v), "value": decoded.as_ref().map(decode::to_json)})
        })
        .collect();
    json!({
        "type": "map",
        "map": m.name,
        "map_type": map_type_key(def.map_type),
        "key_size": def.key_size,
        "value_size": def.value_size,
        "max_entries": def.max_entries,
        "key_type": decoder.type_name(key_type),
        "value_type": decoder.type_name(value_type),
        "entries": entries,
        "zero_entries_omitted": m.zero_omitted,
        "elements": elements,
    })
}

impl Sink for JsonSink<'_> {
    fn emit(&mut self, event: &Event, decoder: &Decoder) -> Result<(), String> {
        let line = event_json(event, decoder);
        writeln!(self.0, "{line}").map_err(|e| format!("cannot write the output: {e}"))
    }
}
