//! Headers: string key/values a message carries besides its command — a tenant, a trace
//! id — stored with it under its checksum, and carried on by what its handler sends.
//!
//! Stored as the postcard encoding of the pairs in key order, and not at all (SQL `NULL`)
//! when a message has none, so that a message without headers is stored and checksummed
//! exactly as before headers existed.

use std::collections::BTreeMap;

use crate::error::{Field, JournalError, Result};
use crate::names::check_name;

/// A message's headers, in key order.
pub type Headers = BTreeMap<String, String>;

/// Largest stored size of one message's headers, in bytes.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// The stored form of `headers`, validated: `None` when there are none. A name must be
/// non-empty and at most [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES); all of them together at most
/// [`MAX_HEADER_BYTES`].
pub(crate) fn encode(headers: &Headers) -> Result<Option<Vec<u8>>> {
    if headers.is_empty() {
        return Ok(None);
    }
    for name in headers.keys() {
        check_name(Field::HeaderName, name)?;
    }
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let bytes = postcard::to_stdvec(&pairs).map_err(|source| JournalError::Codec {
        type_tag: "headers".into(),
        source,
    })?;
    if bytes.len() > MAX_HEADER_BYTES {
        return Err(JournalError::TooLong {
            field: Field::Headers,
            len: bytes.len(),
            limit: MAX_HEADER_BYTES,
        });
    }
    Ok(Some(bytes))
}

/// Headers read back from their stored form; `Err` says why they do not decode.
pub(crate) fn decode(stored: Option<&[u8]>) -> std::result::Result<Headers, String> {
    let Some(bytes) = stored else {
        return Ok(Headers::new());
    };
    let (pairs, rest): (Vec<(String, String)>, _) =
        postcard::take_from_bytes(bytes).map_err(|e| format!("headers do not decode: {e}"))?;
    if !rest.is_empty() {
        return Err("headers have trailing bytes".into());
    }
    Ok(pairs.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::MAX_NAME_BYTES;

    #[test]
    fn round_trip_none_and_limits() {
        assert_eq!(encode(&Headers::new()).ok(), Some(None));
        let h: Headers = [
            ("tenant".into(), "acme".into()),
            ("a".into(), String::new()),
        ]
        .into();
        let stored = encode(&h).ok().flatten();
        assert_eq!(decode(stored.as_deref()), Ok(h));
        assert_eq!(decode(None), Ok(Headers::new()));
        assert!(decode(Some(&[0xff, 0xff])).is_err());

        let empty_name: Headers = [(String::new(), "x".into())].into();
        assert!(matches!(
            encode(&empty_name),
            Err(JournalError::Empty {
                field: Field::HeaderName
            })
        ));
        let long_name: Headers = [("n".repeat(MAX_NAME_BYTES + 1), "x".into())].into();
        assert!(matches!(
            encode(&long_name),
            Err(JournalError::TooLong {
                field: Field::HeaderName,
                ..
            })
        ));
        let big: Headers = [("big".into(), "x".repeat(MAX_HEADER_BYTES))].into();
        assert!(matches!(
            encode(&big),
            Err(JournalError::TooLong {
                field: Field::Headers,
                limit: MAX_HEADER_BYTES,
                ..
            })
        ));
    }
}
