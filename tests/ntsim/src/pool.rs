//! (being written)

use crate::exports::Export;

pub(crate) fn exports() -> Vec<Export> {
    Vec::new()
}

/// Forgets all state (a new [`crate::Sim`]).
pub(crate) fn reset() {}

/// What a driver left behind, one line each.
pub(crate) fn outstanding() -> Vec<String> {
    Vec::new()
}

/// Turns special pool on or off for the next allocations.
pub(crate) fn configure(_special: bool) {}
