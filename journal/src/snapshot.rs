//! Which stored snapshots may be trusted.

use uuid::Uuid;

use crate::envelope::{CrcDomain, EntityKey, Payload, checksum};
use crate::records::Snapshot;
use crate::time::Timestamp;

/// A stored snapshot if it passes its checksum and has the current state version;
/// otherwise `None` and a warning, so that the caller replays the full history instead.
pub(crate) fn accept(
    entity: &EntityKey,
    seq: u64,
    state: Payload,
    crc: i64,
    created_at: Timestamp,
    state_version: u32,
) -> Option<Snapshot> {
    if i64::from(checksum(
        CrcDomain::Snapshot,
        entity,
        Some(seq),
        &Uuid::nil(),
        &state,
    )) != crc
    {
        tracing::warn!(%entity, seq, "snapshot fails its checksum; ignoring it");
        return None;
    }
    if state.version != state_version {
        tracing::warn!(
            %entity,
            seq,
            stored = state.version,
            current = state_version,
            "snapshot has another state version; ignoring it"
        );
        return None;
    }
    Some(Snapshot {
        seq,
        state,
        created_at,
    })
}
