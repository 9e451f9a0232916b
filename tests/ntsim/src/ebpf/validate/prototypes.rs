//! Helper prototypes and helper address tables: the element and array
//! checks of the core (`ebpf_validate_helper_function_prototype_array`,
//! `_ebpf_validate_helper_function_addresses`) and the copy of an array as
//! `_duplicate_helper_function_prototype_array` walks it.

use super::*;

/// `_ebpf_validate_helper_function_addresses` (when the pointer is non-NULL).
///
/// # Safety
/// `p` must be readable for 40 bytes.
pub(super) unsafe fn check_addresses(
    set: HelperSet,
    p: *const u8,
) -> Result<AddressTable, ValidationError> {
    let object = Object::HelperAddresses(set);
    // SAFETY: the caller guarantees 40 readable bytes.
    let (header, count, array) = unsafe {
        (
            rd_header(p),
            rd::<u32>(p, HA_COUNT),
            rd::<*const u64>(p, HA_ARRAY),
        )
    };
    check_header(
        object,
        &header,
        EBPF_HELPER_FUNCTION_ADDRESSES_CURRENT_VERSION,
        ACCEPTED_HELPER_FUNCTION_ADDRESSES_SIZES,
    )?;
    if count == 0 {
        return Err(ValidationError::new(
            object,
            "helper_function_count",
            Rule::ZeroCount,
        ));
    }
    if array.is_null() {
        return Err(ValidationError::new(
            object,
            "helper_function_address",
            Rule::Null,
        ));
    }
    Ok(AddressTable {
        header,
        count,
        array,
    })
}

/// The element checks of `_ebpf_validate_helper_function_prototype`.
///
/// # Safety
/// `elem` must be readable for 40 bytes (header and name).
pub(super) unsafe fn check_prototype(
    object: Object,
    elem: *const u8,
) -> Result<(), ValidationError> {
    // SAFETY: the caller guarantees the header and name are readable.
    let (header, name) = unsafe { (rd_header(elem), rd::<*const c_char>(elem, HP_NAME)) };
    check_header(
        object,
        &header,
        EBPF_HELPER_FUNCTION_PROTOTYPE_CURRENT_VERSION,
        ACCEPTED_HELPER_FUNCTION_PROTOTYPE_SIZES,
    )?;
    if name.is_null() {
        return Err(ValidationError::new(object, "name", Rule::Null));
    }
    Ok(())
}

/// `ebpf_validate_helper_function_prototype_array`: walks `count` elements
/// with element 0's `total_size` as the stride.
///
/// # Safety
/// See [`validate_program_data`].
pub(super) unsafe fn check_prototype_array(
    set: HelperSet,
    parent_field: &'static str,
    base: *const u8,
    count: u32,
) -> Result<PrototypeArray, ValidationError> {
    let mut array = PrototypeArray {
        set,
        base,
        count,
        first: ebpf_extension_header_t {
            version: 0,
            size: 0,
            total_size: 0,
        },
    };
    if count == 0 {
        return Ok(array);
    }
    if base.is_null() {
        return Err(ValidationError::new(
            Object::ProgramInfo,
            parent_field,
            Rule::Null,
        ));
    }
    // SAFETY: element 0 is readable per the safety contract.
    array.first = unsafe { rd_header(base) };
    for i in 0..count {
        let elem = array.element(array.validated_stride(), i);
        // SAFETY: the contract covers `count` elements at this stride.
        unsafe { check_prototype(Object::HelperPrototype(set, i), elem) }?;
    }
    Ok(array)
}

/// Copies a prototype array the way `_duplicate_helper_function_prototype_array`
/// walks it, refusing elements the validation did not cover and that would
/// not pass it.
///
/// # Safety
/// See [`validate_program_data`].
pub(super) unsafe fn copy_prototypes(
    array: &PrototypeArray,
    addresses: Option<&AddressTable>,
) -> Result<Vec<HelperFunction>, ValidationError> {
    let stride = array.copied_stride();
    let mut out = Vec::with_capacity(array.count as usize);
    for i in 0..array.count {
        let elem = array.element(stride, i);
        if !array.validated_at(stride.wrapping_mul(i as usize)) {
            // SAFETY: the contract covers `count` elements at the copy stride.
            unsafe { check_prototype(Object::CopiedHelperPrototype(array.set, i), elem) }?;
        }
        // SAFETY: the element is readable for `stride` bytes (>= 64) per the
        // contract, and its name was checked non-NULL above or by validation.
        let prototype = unsafe {
            HelperPrototype {
                helper_id: rd::<u32>(elem, HP_ID),
                name: rd_cstr(rd::<*const c_char>(elem, HP_NAME)),
                return_type: rd::<u32>(elem, HP_RETURN),
                arguments: rd::<[u32; 5]>(elem, HP_ARGS),
                // memcpy of `stride` bytes: flags and implicit_context are
                // copied only when the stride covers them.
                reallocate_packet: stride > HP_FLAGS
                    && rd::<u8>(elem, HP_FLAGS)
                        & ebpf_helper_function_prototype_flags_t::REALLOCATE_PACKET
                        != 0,
                implicit_context: stride > HP_IMPLICIT && rd::<u8>(elem, HP_IMPLICIT) != 0,
            }
        };
        let address = addresses.map(|t| {
            // SAFETY: t.count == array.count (checked) and the contract makes
            // the address array readable for t.count entries.
            unsafe { ptr::read_unaligned(t.array.wrapping_add(i as usize)) }
        });
        out.push(HelperFunction { prototype, address });
    }
    Ok(out)
}
