//! The shard function: which shard of the journal an entity's entries live in.
//!
//! # This is part of the storage format
//!
//! `shard_of(id, n) = crc32(id) % n`, where crc32 is the IEEE CRC-32 (the one zlib, PNG and
//! Ethernet use, computed by `crc32fast`) of the entity id's UTF-8 bytes. Every entry of an
//! entity is stored, tailed and locked under this shard. Changing the function, or a
//! journal's shard count, moves entities to other shards and strands their history:
//! **do not change it**. The test vectors in this module pin it.
//!
//! The entity type is deliberately not hashed: an id names one shard for every type, so an
//! application may co-locate the entities of one customer by giving them the same id.

/// A shard number, `0..shard_count`.
pub type Shard = u32;

/// Shard of an entity id in a journal with `shard_count` shards (see the module docs).
///
/// `shard_count` must be at least 1; journals refuse to open with 0 shards.
pub fn shard_of(entity_id: &str, shard_count: u32) -> Shard {
    crc32fast::hash(entity_id.as_bytes()) % shard_count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: if one of these changes, existing journals route entities elsewhere.
    #[test]
    fn test_vectors() {
        assert_eq!(
            crc32fast::hash(b"123456789"),
            0xCBF4_3926,
            "IEEE CRC-32 check value"
        );
        assert_eq!(shard_of("c-1", 64), 62);
        assert_eq!(shard_of("account-42", 1024), 92);
        assert_eq!(shard_of("device/Ω", 7), 1);
        assert_eq!(shard_of("anything", 1), 0);
    }

    #[test]
    fn spreads_ids_evenly() {
        let shards = 64u32;
        let ids = 64_000u32;
        let mut counts = vec![0u32; shards as usize];
        for i in 0..ids {
            counts[shard_of(&format!("entity-{i}"), shards) as usize] += 1;
        }
        let expected = ids / shards;
        for (shard, &c) in counts.iter().enumerate() {
            assert!(
                c > expected * 8 / 10 && c < expected * 12 / 10,
                "shard {shard} got {c} of {ids} ids (expected about {expected})"
            );
        }
    }
}
