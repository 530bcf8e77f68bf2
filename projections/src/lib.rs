//! entlog's projections: read models folded from the journal, exactly once per shard.
//!
//! Implement [`Projection`]: a name, the entity types it wants, an `apply` that writes the
//! application's own tables inside the transaction that also moves the projection's
//! per-shard checkpoint, and a `reset` for rebuilds. Runners run a [`Projector`] per
//! owned shard and projection (ownership follows the shard locks); [`rebuild`] replays a
//! projection from the start; [`status`] reports checkpoints, lag and failures.
#![warn(missing_docs)]

mod errors;
pub mod metrics;
mod projection;
mod projector;
mod rebuild;

pub use projection::{
    DynProjection, Projection, ProjectionError, checkpoint_name, projection_of, set_up,
};
pub use projector::{Projector, ShardStatus, Step, status};
pub use rebuild::{Progress, rebuild};
