//! Builders of correctly filled structures, for host-side tests and for
//! the core's hook client: [`ProgramDataBuilder`], [`ExtensionDataBuilder`],
//! [`attach_provider_data`].

use super::*;

/// A heap allocation owned through a raw pointer, so that raw pointers handed
/// to C-shaped structures stay valid while the owner mutates the value.
pub(super) struct RawBox<T: ?Sized> {
    ptr: *mut T,
}

impl<T: ?Sized> RawBox<T> {
    fn new(b: Box<T>) -> Self {
        Self {
            ptr: Box::into_raw(b),
        }
    }

    fn get(&self) -> &T {
        // SAFETY: `ptr` came from Box::into_raw and is freed only in Drop;
        // `&self` rules out a live `&mut` from get_mut.
        unsafe { &*self.ptr }
    }

    fn get_mut(&mut self) -> &mut T {
        // SAFETY: as in get; `&mut self` makes this the only reference.
        unsafe { &mut *self.ptr }
    }
}

impl<T: ?Sized> Drop for RawBox<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from Box::into_raw and is dropped once.
        drop(unsafe { Box::from_raw(self.ptr) });
    }
}

/// A helper for [`ProgramDataBuilder`].
#[derive(Clone, Debug)]
pub struct HelperSpec {
    pub helper_id: u32,
    pub name: String,
    pub return_type: ebpf_return_type_t,
    pub arguments: [ebpf_argument_type_t; 5],
    pub reallocate_packet: bool,
    pub implicit_context: bool,
    pub address: u64,
}

impl HelperSpec {
    pub fn new(
        helper_id: u32,
        name: &str,
        return_type: ebpf_return_type_t,
        arguments: [ebpf_argument_type_t; 5],
        address: u64,
    ) -> Self {
        Self {
            helper_id,
            name: name.to_string(),
            return_type,
            arguments,
            reallocate_packet: false,
            implicit_context: false,
            address,
        }
    }
}

/// Builds correctly filled program data (every header current) for
/// host-side tests and host-side providers.
#[derive(Clone, Debug)]
pub struct ProgramDataBuilder {
    name: String,
    program_type: GUID,
    bpf_prog_type: u32,
    is_privileged: bool,
    context_descriptor: ebpf_context_descriptor_t,
    type_specific: Vec<HelperSpec>,
    global: Vec<HelperSpec>,
    context_create: Option<ebpf_program_context_create_t>,
    context_destroy: Option<ebpf_program_context_destroy_t>,
    required_irql: u8,
}

impl ProgramDataBuilder {
    pub fn new(
        name: &str,
        program_type: GUID,
        context_descriptor: ebpf_context_descriptor_t,
    ) -> Self {
        Self {
            name: name.to_string(),
            program_type,
            bpf_prog_type: 0,
            is_privileged: false,
            context_descriptor,
            type_specific: Vec::new(),
            global: Vec::new(),
            context_create: None,
            context_destroy: None,
            required_irql: 0,
        }
    }

    pub fn bpf_prog_type(mut self, value: u32) -> Self {
        self.bpf_prog_type = value;
        self
    }

    pub fn privileged(mut self, value: bool) -> Self {
        self.is_privileged = value;
        self
    }

    /// Adds a program-type-specific helper (its prototype and address).
    pub fn helper(mut self, spec: HelperSpec) -> Self {
        self.type_specific.push(spec);
        self
    }

    /// Adds a global helper override.
    pub fn global_helper(mut self, spec: HelperSpec) -> Self {
        self.global.push(spec);
        self
    }

    /// What eBPF for Windows' store helper writes for this program type
    /// with `sections` (prefix, attach type, `bpf_attach_type`), for
    /// [`store::register`](crate::ebpf::store::register): a host-side
    /// provider registers its own store entries.
    pub fn store_entry(&self, sections: &[(&str, GUID, u32)]) -> crate::ebpf::store::HostProvider {
        let c = &self.context_descriptor;
        crate::ebpf::store::HostProvider {
            program_type: self.program_type,
            name: self.name.clone(),
            context: crate::ebpf::program::ContextDescriptor {
                size: c.size,
                data: c.data,
                end: c.end,
                meta: c.meta,
            },
            bpf_prog_type: self.bpf_prog_type,
            helpers: self
                .type_specific
                .iter()
                .map(|h| (h.name.clone(), h.helper_id, h.return_type, h.arguments))
                .collect(),
            sections: sections
                .iter()
                .map(|(p, a, b)| (p.to_string(), *a, *b))
                .collect(),
        }
    }

    /// Sets context_create, context_destroy and required_irql together.
    pub fn context_functions(
        mut self,
        create: ebpf_program_context_create_t,
        destroy: ebpf_program_context_destroy_t,
        required_irql: u8,
    ) -> Self {
        self.context_create = Some(create);
        self.context_destroy = Some(destroy);
        self.required_irql = required_irql;
        self
    }

    pub fn build(self) -> OwnedProgramData {
        fn prototypes(
            specs: &[HelperSpec],
            names: &[CString],
        ) -> Box<[ebpf_helper_function_prototype_t]> {
            specs
                .iter()
                .zip(names)
                .map(|(s, n)| ebpf_helper_function_prototype_t {
                    header: EBPF_HELPER_FUNCTION_PROTOTYPE_HEADER,
                    helper_id: s.helper_id,
                    name: n.as_ptr(),
                    return_type: s.return_type,
                    arguments: s.arguments,
                    flags: ebpf_helper_function_prototype_flags_t::new(s.reallocate_packet),
                    implicit_context: s.implicit_context,
                })
                .collect()
        }
        let cstring = |s: &str| CString::new(s).expect("names must not contain NUL");
        let name = cstring(&self.name);
        let specific_names: Vec<CString> = self
            .type_specific
            .iter()
            .map(|s| cstring(&s.name))
            .collect();
        let global_names: Vec<CString> = self.global.iter().map(|s| cstring(&s.name)).collect();

        let context_descriptor = RawBox::new(Box::new(self.context_descriptor));
        let type_descriptor = RawBox::new(Box::new(ebpf_program_type_descriptor_t {
            header: EBPF_PROGRAM_TYPE_DESCRIPTOR_HEADER,
            name: name.as_ptr(),
            context_descriptor: context_descriptor.ptr,
            program_type: self.program_type,
            bpf_prog_type: self.bpf_prog_type,
            is_privileged: self.is_privileged as c_char,
        }));
        let specific_prototypes = RawBox::new(prototypes(&self.type_specific, &specific_names));
        let global_prototypes = RawBox::new(prototypes(&self.global, &global_names));
        let specific_values: RawBox<[u64]> =
            RawBox::new(self.type_specific.iter().map(|s| s.address).collect());
        let global_values: RawBox<[u64]> =
            RawBox::new(self.global.iter().map(|s| s.address).collect());
        let table = |values: &RawBox<[u64]>| ebpf_helper_function_addresses_t {
            header: EBPF_HELPER_FUNCTION_ADDRESSES_HEADER,
            helper_function_count: values.get().len() as u32,
            helper_function_address: values.ptr.cast::<u64>(),
        };
        let specific_addresses = RawBox::new(Box::new(table(&specific_values)));
        let global_addresses = RawBox::new(Box::new(table(&global_values)));
        let array_ptr = |b: &RawBox<[ebpf_helper_function_prototype_t]>| {
            if b.get().is_empty() {
                ptr::null()
            } else {
                b.ptr.cast::<ebpf_helper_function_prototype_t>() as *const _
            }
        };
        let program_info = RawBox::new(Box::new(ebpf_program_info_t {
            header: EBPF_PROGRAM_INFORMATION_HEADER,
            program_type_descriptor: type_descriptor.ptr,
            count_of_program_type_specific_helpers: self.type_specific.len() as u32,
            program_type_specific_helper_prototype: array_ptr(&specific_prototypes),
            count_of_global_helpers: self.global.len() as u32,
            global_helper_prototype: array_ptr(&global_prototypes),
        }));
        let program_data = RawBox::new(Box::new(ebpf_program_data_t {
            header: EBPF_PROGRAM_DATA_HEADER,
            program_info: program_info.ptr,
            program_type_specific_helper_function_addresses: if self.type_specific.is_empty() {
                ptr::null()
            } else {
                specific_addresses.ptr
            },
            global_helper_function_addresses: if self.global.is_empty() {
                ptr::null()
            } else {
                global_addresses.ptr
            },
            context_create: self.context_create,
            context_destroy: self.context_destroy,
            required_irql: self.required_irql,
            capabilities: program_data_capabilities_t::default(),
        }));
        OwnedProgramData {
            program_data,
            program_info,
            type_descriptor,
            context_descriptor,
            specific_prototypes,
            global_prototypes,
            specific_addresses,
            global_addresses,
            specific_values,
            global_values,
            _names: (name, specific_names, global_names),
        }
    }
}

/// Program data and everything it points to, owned. Every part can be
/// mutated in place (for negative tests); the pointers between the parts
/// stay valid for the life of the value.
pub struct OwnedProgramData {
    program_data: RawBox<ebpf_program_data_t>,
    program_info: RawBox<ebpf_program_info_t>,
    type_descriptor: RawBox<ebpf_program_type_descriptor_t>,
    context_descriptor: RawBox<ebpf_context_descriptor_t>,
    specific_prototypes: RawBox<[ebpf_helper_function_prototype_t]>,
    global_prototypes: RawBox<[ebpf_helper_function_prototype_t]>,
    specific_addresses: RawBox<ebpf_helper_function_addresses_t>,
    global_addresses: RawBox<ebpf_helper_function_addresses_t>,
    specific_values: RawBox<[u64]>,
    global_values: RawBox<[u64]>,
    _names: (CString, Vec<CString>, Vec<CString>),
}

// SAFETY: every pointer inside points into allocations this value owns (or
// to static functions); nothing is shared with another owner, and mutation
// requires `&mut self`.
unsafe impl Send for OwnedProgramData {}
// SAFETY: `&self` only allows reads.
unsafe impl Sync for OwnedProgramData {}

impl OwnedProgramData {
    /// The value for `NpiSpecificCharacteristics`.
    pub fn as_ptr(&self) -> *const ebpf_program_data_t {
        self.program_data.ptr
    }

    pub fn program_data(&self) -> &ebpf_program_data_t {
        self.program_data.get()
    }
    pub fn program_data_mut(&mut self) -> &mut ebpf_program_data_t {
        self.program_data.get_mut()
    }
    pub fn program_info_mut(&mut self) -> &mut ebpf_program_info_t {
        self.program_info.get_mut()
    }
    pub fn type_descriptor_mut(&mut self) -> &mut ebpf_program_type_descriptor_t {
        self.type_descriptor.get_mut()
    }
    pub fn context_descriptor_mut(&mut self) -> &mut ebpf_context_descriptor_t {
        self.context_descriptor.get_mut()
    }
    /// The prototype array of a set (empty when the set has no helpers).
    pub fn prototypes_mut(&mut self, set: HelperSet) -> &mut [ebpf_helper_function_prototype_t] {
        match set {
            HelperSet::TypeSpecific => self.specific_prototypes.get_mut(),
            HelperSet::Global => self.global_prototypes.get_mut(),
        }
    }
    /// The address table of a set. It is referenced by the program data only
    /// when the set has helpers.
    pub fn addresses_mut(&mut self, set: HelperSet) -> &mut ebpf_helper_function_addresses_t {
        match set {
            HelperSet::TypeSpecific => self.specific_addresses.get_mut(),
            HelperSet::Global => self.global_addresses.get_mut(),
        }
    }
    /// Pointer to a set's address table, whether or not the program data
    /// references it.
    pub fn addresses_ptr(&self, set: HelperSet) -> *const ebpf_helper_function_addresses_t {
        match set {
            HelperSet::TypeSpecific => self.specific_addresses.ptr,
            HelperSet::Global => self.global_addresses.ptr,
        }
    }
    /// The address values of a set.
    pub fn address_values_mut(&mut self, set: HelperSet) -> &mut [u64] {
        match set {
            HelperSet::TypeSpecific => self.specific_values.get_mut(),
            HelperSet::Global => self.global_values.get_mut(),
        }
    }
}

/// Attach provider data with a current header.
pub const fn attach_provider_data(
    supported_program_type: GUID,
    bpf_attach_type: u32,
    link_type: bpf_link_type,
) -> ebpf_attach_provider_data_t {
    ebpf_attach_provider_data_t::new(supported_program_type, bpf_attach_type, link_type)
}

/// Builds the link's client data (`ebpf_extension_data_t`) as the core fills
/// it: header {1, 48, 48}, the attach parameters (a copy; NULL and size 0
/// when there are none), and `prog_attach_flags`.
#[derive(Clone, Debug)]
pub struct ExtensionDataBuilder {
    header: ebpf_extension_header_t,
    params: Vec<u8>,
    prog_attach_flags: u64,
}

impl Default for ExtensionDataBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ExtensionDataBuilder {
    pub fn new() -> Self {
        Self {
            header: EBPF_ATTACH_CLIENT_DATA_HEADER_VERSION,
            params: Vec::new(),
            prog_attach_flags: 0,
        }
    }

    pub fn attach_params(mut self, params: &[u8]) -> Self {
        self.params = params.to_vec();
        self
    }

    pub fn prog_attach_flags(mut self, flags: u64) -> Self {
        self.prog_attach_flags = flags;
        self
    }

    /// Replaces the header (to test how an extension handles a client that
    /// is not the current core).
    pub fn header(mut self, header: ebpf_extension_header_t) -> Self {
        self.header = header;
        self
    }

    pub fn build(self) -> OwnedExtensionData {
        let params: RawBox<[u8]> = RawBox::new(self.params.into_boxed_slice());
        let len = params.get().len();
        let data = RawBox::new(Box::new(ebpf_extension_data_t {
            header: self.header,
            data: if len == 0 {
                ptr::null()
            } else {
                params.ptr.cast::<c_void>() as *const c_void
            },
            data_size: len,
            prog_attach_flags: self.prog_attach_flags,
        }));
        OwnedExtensionData { data, params }
    }
}

/// A link's client data and the attach parameters it points to, owned.
pub struct OwnedExtensionData {
    data: RawBox<ebpf_extension_data_t>,
    params: RawBox<[u8]>,
}

// SAFETY: the only pointer inside points into `params`, owned by this value.
unsafe impl Send for OwnedExtensionData {}
// SAFETY: `&self` only allows reads.
unsafe impl Sync for OwnedExtensionData {}

impl OwnedExtensionData {
    /// The value for the client's `NpiSpecificCharacteristics`.
    pub fn as_ptr(&self) -> *const ebpf_extension_data_t {
        self.data.ptr
    }
    pub fn data(&self) -> &ebpf_extension_data_t {
        self.data.get()
    }
    pub fn params(&self) -> &[u8] {
        self.params.get()
    }
}
