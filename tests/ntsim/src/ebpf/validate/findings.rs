//! What validation reports: the object and field at fault ([`Object`]),
//! the rule broken ([`Rule`], [`ValidationError`]), why an attach was
//! refused ([`AttachRefusal`]), and the strict report's [`Finding`]s.

use super::*;

/// Which of a program's two helper sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HelperSet {
    /// The program type's own helpers (`program_type_specific_*`).
    TypeSpecific,
    /// Overrides of general helpers (`global_*`).
    Global,
}

/// The structure a rule or finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// The `NPI_REGISTRATION_INSTANCE` of the provider.
    ProviderRegistration,
    ProgramData,
    ProgramInfo,
    ProgramTypeDescriptor,
    ContextDescriptor,
    /// An `ebpf_helper_function_addresses_t`.
    HelperAddresses(HelperSet),
    /// A helper prototype array as a whole.
    HelperPrototypes(HelperSet),
    /// Element `index` of a prototype array, as the core's validation walks
    /// it (stride: element 0's `total_size`).
    HelperPrototype(HelperSet, u32),
    /// Element `index` of a prototype array as the core's copy walks it
    /// (stride: element 0's `size` rounded up to 8), where the validation
    /// did not cover it.
    CopiedHelperPrototype(HelperSet, u32),
    AttachProviderData,
}

/// The rule the core enforces that the data breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A pointer the core requires is NULL.
    Null,
    /// `header.version` is not the one the core supports.
    Version { found: u16, expected: u16 },
    /// `header.size` is not one of the sizes the core accepts.
    Size {
        found: usize,
        accepted: &'static [usize],
    },
    /// `helper_function_count` is 0.
    ZeroCount,
    /// `context_descriptor->size < sizeof(ebpf_context_descriptor_t)`.
    ContextTooSmall { found: i32 },
    /// `required_irql > HIGH_LEVEL`.
    IrqlAboveHigh { found: u8 },
    /// `capabilities != 0`.
    CapabilitiesNonZero { found: u32 },
    /// Helper address count differs from the prototype count.
    CountMismatch { addresses: u32, prototypes: u32 },
    /// `supported_program_type` is `GUID_NULL`.
    NullGuid,
    /// `ModuleId->Type` is not `MIT_GUID`.
    ModuleIdNotGuid { found: u32 },
}

/// Why the core refuses an extension's data: the structure, the field and
/// the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidationError {
    pub object: Object,
    pub field: &'static str,
    pub rule: Rule,
}

impl ValidationError {
    pub(super) fn new(object: Object, field: &'static str, rule: Rule) -> Self {
        Self {
            object,
            field,
            rule,
        }
    }

    /// What the core's ClientAttachProvider returns for this refusal.
    pub fn status(&self) -> NTSTATUS {
        STATUS_INVALID_PARAMETER
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}.{}: {:?}", self.object, self.field, self.rule)
    }
}

impl std::error::Error for ValidationError {}

/// Why a NMR client of the core does not attach to a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachRefusal {
    /// The provider's data is malformed (STATUS_INVALID_PARAMETER).
    Invalid(ValidationError),
    /// The provider serves something else (STATUS_NOINTERFACE): `field` of
    /// the provider holds `found`, the client wants `expected`.
    NoInterface {
        field: &'static str,
        expected: GUID,
        found: GUID,
    },
}

impl AttachRefusal {
    /// The status the core's ClientAttachProvider returns.
    pub fn status(&self) -> NTSTATUS {
        match self {
            AttachRefusal::Invalid(e) => e.status(),
            AttachRefusal::NoInterface { .. } => STATUS_NOINTERFACE,
        }
    }
}

impl fmt::Display for AttachRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachRefusal::Invalid(e) => write!(f, "invalid provider data: {e}"),
            AttachRefusal::NoInterface {
                field,
                expected,
                found,
            } => {
                write!(
                    f,
                    "not this client's provider: {field} is {found}, expected {expected}"
                )
            }
        }
    }
}

impl std::error::Error for AttachRefusal {}

/// Something the core accepts but that is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issue {
    /// The core refuses the data; nothing else is reported.
    Refused(ValidationError),
    /// `header.total_size` is 0.
    TotalSizeZero,
    /// `header.total_size` is not `sizeof` the structure of the version that
    /// `header.size` describes.
    TotalSizeNotSizeof {
        found: usize,
        expected: usize,
    },
    /// `header.size` is an older accepted size, not the current version's.
    SizeNotCurrent {
        found: usize,
        current: usize,
    },
    /// The core validates the array with one stride and copies it with another.
    StrideMismatch {
        validated: usize,
        copied: usize,
    },
    /// This element's header differs from element 0's (the core uses element
    /// 0's for the whole array).
    HeaderDiffersFromFirst,
    /// The id appears earlier in the same set.
    DuplicateHelperId {
        id: u32,
        first_index: u32,
    },
    /// A program-type-specific helper uses a general helper id (<= 0xFFFF).
    GeneralIdInTypeSpecific {
        id: u32,
    },
    /// A global override uses an id that is not a general helper id.
    NonGeneralIdInGlobal {
        id: u32,
    },
    /// The context size is negative; the core compares it as unsigned and
    /// accepts it.
    NegativeContextSize {
        found: i32,
    },
    /// A data/end/meta offset is neither -1 nor a pointer inside the context.
    ContextOffsetOutOfRange {
        offset: i32,
        context_size: i32,
    },
    EmptyName,
    NameTooLong {
        len: usize,
        max: usize,
    },
    /// A helper address is 0.
    HelperAddressZero {
        index: u32,
    },
    /// Type-specific prototypes without an address table.
    PrototypesWithoutAddresses {
        count: u32,
    },
    /// Only one of context_create/context_destroy is set.
    ContextFunctionsIncomplete,
    /// A byte past `header.size` that the core's copy reads anyway is non-zero.
    ReadBeyondSize {
        offset: usize,
        value: u8,
    },
    /// The type descriptor's program type differs from the provider's ModuleId.
    ProgramTypeMismatch {
        descriptor: GUID,
        module_id: GUID,
    },
    /// `link_type` is not a known `bpf_link_type`.
    UnknownLinkType {
        found: u32,
    },
}

/// One finding of a strict report: the structure, the field and the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    pub object: Object,
    pub field: &'static str,
    pub issue: Issue,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}.{}: {:?}", self.object, self.field, self.issue)
    }
}
