//! The limits every name-like field meets: entity types and ids, type tags, consumer and
//! runner names, header names. Checked where a name enters the journal, so that a stored
//! name always fits its column and the error names the field.

use crate::error::{Field, JournalError, Result};

/// Longest entity type, entity id, type tag or consumer name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a name-like field against the journal's limits.
pub fn check_name(field: Field, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(JournalError::Empty { field });
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(JournalError::TooLong {
            field,
            len: value.len(),
            limit: MAX_NAME_BYTES,
        });
    }
    Ok(())
}
