//! The shards this process's runner owns: written by the runner at each change, read by
//! the sending side (to tell asks answered locally, and for `owned_shards`).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

/// Shards owned by this process's runner, for clients deciding how to wait for replies.
pub(crate) type Owned = Arc<RwLock<BTreeSet<u32>>>;
