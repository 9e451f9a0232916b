//! Tests of tokens, SIDs and account lookups.

use super::*;

fn empty_us() -> UNICODE_STRING {
    UNICODE_STRING {
        Length: 0,
        MaximumLength: 0,
        Buffer: std::ptr::null_mut(),
    }
}

#[test]
fn token_sid_and_account_round_trip() {
    let sim = Sim::new();
    let pid = create_process(&ProcessSpec {
        user_sid: Some(test_user_sid()),
        ..spec("user.exe")
    })
    .pid;
    // SAFETY: the calls below pass valid pointers to local buffers, as a
    // driver would; the TOKEN_USER block is read within its size and freed.
    unsafe {
        let mut process_ptr: PEPROCESS = std::ptr::null_mut();
        assert_eq!(
            PsLookupProcessByProcessId(pid, &mut process_ptr),
            STATUS_SUCCESS
        );
        assert_eq!(process_ptr as usize, process(pid).unwrap().eprocess);
        assert_eq!(process(pid).unwrap().driver_references, 1);
        let token = PsReferencePrimaryToken(process_ptr);
        assert_eq!(token as usize, process(pid).unwrap().token);

        let mut info: *mut c_void = std::ptr::null_mut();
        assert_eq!(
            SeQueryInformationToken(token, TOKEN_USER_CLASS, &mut info),
            STATUS_SUCCESS
        );
        let sid = *(info as *const *const c_void);
        assert_eq!(
            sid as usize,
            info as usize + 16,
            "SID follows the TOKEN_USER"
        );
        assert_eq!(*(info as *const u32).add(2), 0, "Attributes");
        assert_eq!(RtlValidSid(sid), 1);
        assert_eq!(RtlLengthSid(sid), 28);
        let mut copy = [0u8; SECURITY_MAX_SID_SIZE];
        assert_eq!(
            RtlCopySid(27, copy.as_mut_ptr().cast(), sid),
            STATUS_BUFFER_TOO_SMALL
        );
        assert_eq!(copy, [0u8; 68], "nothing copied");
        assert_eq!(
            RtlCopySid(68, copy.as_mut_ptr().cast(), sid),
            STATUS_SUCCESS
        );
        assert_eq!(&copy[..28], &test_user_sid()[..]);
        assert_eq!(RtlEqualSid(copy.as_ptr().cast(), sid), 1);
        assert_eq!(RtlEqualSid(SYSTEM_SID.as_ptr().cast(), sid), 0);

        // Too small: required sizes come back, nothing is copied.
        let mut name_buf = [0u16; 16];
        let mut domain_buf = [0u16; 16];
        let mut name = UNICODE_STRING {
            Length: 0,
            MaximumLength: 4,
            Buffer: name_buf.as_mut_ptr(),
        };
        let mut domain = UNICODE_STRING {
            Length: 0,
            MaximumLength: 32,
            Buffer: domain_buf.as_mut_ptr(),
        };
        let (mut name_size, mut domain_size, mut name_use) = (4u32, 2u32, 0u32);
        let st = SecLookupAccountSid(
            copy.as_ptr().cast(),
            &mut name_size,
            &mut name,
            &mut domain_size,
            &mut domain,
            &mut name_use,
        );
        assert_eq!(st, STATUS_BUFFER_TOO_SMALL);
        assert_eq!(
            (name_size, domain_size),
            (12, 10),
            "\"tester\" and \"NTSIM\" in bytes"
        );
        assert_eq!((name.Length, domain.Length, name_use), (0, 0, 0));
        assert_eq!(name_buf, [0u16; 16]);

        // The sizes declared must fit the UNICODE_STRINGs too.
        let st = SecLookupAccountSid(
            copy.as_ptr().cast(),
            &mut name_size,
            &mut name,
            &mut domain_size,
            &mut domain,
            &mut name_use,
        );
        assert_eq!(st, STATUS_BUFFER_TOO_SMALL, "MaximumLength 4 < 12");
        name.MaximumLength = 32;
        let st = SecLookupAccountSid(
            copy.as_ptr().cast(),
            &mut name_size,
            &mut name,
            &mut domain_size,
            &mut domain,
            &mut name_use,
        );
        assert_eq!(st, STATUS_SUCCESS);
        assert_eq!(name.to_string_lossy(), "tester");
        assert_eq!(domain.to_string_lossy(), "NTSIM");
        assert_eq!((name.Length, domain.Length), (12, 10));
        assert_eq!(
            (name_size, domain_size, name_use),
            (12, 10, SID_NAME_USE_USER)
        );

        // DomainBuffer is optional.
        let mut name2 = UNICODE_STRING {
            Length: 0,
            MaximumLength: 32,
            Buffer: name_buf.as_mut_ptr(),
        };
        let (mut ns, mut ds) = (32u32, 99u32);
        let st = SecLookupAccountSid(
            sid,
            &mut ns,
            &mut name2,
            &mut ds,
            std::ptr::null_mut(),
            &mut name_use,
        );
        assert_eq!(st, STATUS_SUCCESS);
        assert_eq!((ns, ds), (12, 0));
        // A NULL NameBuffer asks for the size.
        let mut ns = 0u32;
        let mut d = empty_us();
        let mut ds = 0u32;
        let st = SecLookupAccountSid(
            sid,
            &mut ns,
            std::ptr::null_mut(),
            &mut ds,
            &mut d,
            &mut name_use,
        );
        assert_eq!((st, ns, ds), (STATUS_BUFFER_TOO_SMALL, 12, 10));
        assert_eq!(account_lookups(), 5);

        pool::kernel_free(info);
        PsDereferencePrimaryToken(token);
        ObDereferenceObject(process_ptr);

        // Another account table; the System process's token is SYSTEM.
        set_accounts(vec![Account {
            sid: SYSTEM_SID.to_vec(),
            name: "LocalSystem".into(),
            domain: "HOST".into(),
            use_: SID_NAME_USE_WELL_KNOWN_GROUP,
        }]);
        let mut n = UNICODE_STRING {
            Length: 0,
            MaximumLength: 32,
            Buffer: name_buf.as_mut_ptr(),
        };
        let mut ns = 32u32;
        let mut ds = 0u32;
        let st = SecLookupAccountSid(
            copy.as_ptr().cast(),
            &mut ns,
            &mut n,
            &mut ds,
            std::ptr::null_mut(),
            &mut name_use,
        );
        assert_eq!(
            st, STATUS_NONE_MAPPED,
            "the test user is no longer in the table"
        );
        let sys = PsGetCurrentProcess();
        assert_eq!(PsGetProcessId(sys), SYSTEM_PID);
        let sys_token = PsReferencePrimaryToken(sys);
        let mut info: *mut c_void = std::ptr::null_mut();
        assert_eq!(
            SeQueryInformationToken(sys_token, TOKEN_USER_CLASS, &mut info),
            STATUS_SUCCESS
        );
        let sid = *(info as *const *const c_void);
        let st = SecLookupAccountSid(
            sid,
            &mut ns,
            &mut n,
            &mut ds,
            std::ptr::null_mut(),
            &mut name_use,
        );
        assert_eq!(st, STATUS_SUCCESS);
        assert_eq!(n.to_string_lossy(), "LocalSystem");
        assert_eq!(name_use, SID_NAME_USE_WELL_KNOWN_GROUP);
        pool::kernel_free(info);
        PsDereferencePrimaryToken(sys_token);
    }
    assert!(exit_process(pid, 0, None));
    sim.finish().unwrap();
}

#[test]
fn token_and_lookup_failures() {
    let sim = Sim::new();
    let pid = create_process(&spec("nosid.exe")).pid;
    let eprocess = process(pid).unwrap().eprocess as PEPROCESS;
    // SAFETY: valid pointers to locals; live objects.
    unsafe {
        let token = PsReferencePrimaryToken(eprocess);
        let mut info: *mut c_void = std::ptr::null_mut();
        assert_eq!(
            SeQueryInformationToken(token, TOKEN_USER_CLASS, &mut info),
            STATUS_NO_TOKEN
        );
        assert!(info.is_null());
        PsDereferencePrimaryToken(token);

        let token = PsReferencePrimaryToken(PsGetCurrentProcess());
        let next = fault::counts()
            .get("SeQueryInformationToken")
            .copied()
            .unwrap_or(0)
            + 1;
        fault::fail_nth("SeQueryInformationToken", next);
        assert_eq!(
            SeQueryInformationToken(token, TOKEN_USER_CLASS, &mut info),
            STATUS_INSUFFICIENT_RESOURCES
        );
        assert!(info.is_null());
        assert_eq!(
            SeQueryInformationToken(token, 2, &mut info),
            STATUS_INVALID_INFO_CLASS
        );
        assert!(violation::take()[0].message.contains("not modeled"));
        PsDereferencePrimaryToken(token);

        let mut buf = [0u16; 8];
        let mut n = UNICODE_STRING {
            Length: 0,
            MaximumLength: 16,
            Buffer: buf.as_mut_ptr(),
        };
        let (mut ns, mut ds, mut nu) = (16u32, 0u32, 0u32);
        let sid = SYSTEM_SID.as_ptr().cast();
        fault::fail_nth("SecLookupAccountSid", 1);
        let st = SecLookupAccountSid(sid, &mut ns, &mut n, &mut ds, std::ptr::null_mut(), &mut nu);
        assert_eq!(st, STATUS_NO_MEMORY);
        let bad = [2u8, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
        let st = SecLookupAccountSid(
            bad.as_ptr().cast(),
            &mut ns,
            &mut n,
            &mut ds,
            std::ptr::null_mut(),
            &mut nu,
        );
        assert_eq!(st, STATUS_INVALID_SID);
        assert_eq!(RtlValidSid(bad.as_ptr().cast()), 0);
        assert_eq!(RtlValidSid(std::ptr::null()), 0);
        RtlLengthSid(bad.as_ptr().cast());
        assert!(violation::take()[0].message.contains("invalid SID"));
        irql::at(DISPATCH_LEVEL, || {
            SecLookupAccountSid(sid, &mut ns, &mut n, &mut ds, std::ptr::null_mut(), &mut nu)
        });
        let v = violation::take();
        assert_eq!((v.len(), v[0].kind), (1, "irql"), "{v:?}");
        assert_eq!(account_lookups(), 3);
    }
    assert!(exit_process(pid, 0, None));
    sim.finish().unwrap();
}
