//! Entity types registered with a cluster, behind one object-safe interface: their names,
//! shard groups and settings. An instance in memory, and the call of its handler, are
//! `instance.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use entlog_journal::{AnyJournal, EntityKey, ShardLayout};

use crate::entity::Entity;
use crate::error::EngineError;
use crate::instance::{BoxFuture, Instance};

/// An entity type, its Rust types erased.
pub(crate) trait EntityType: Send + Sync {
    /// Loads the latest valid snapshot and replays the later events.
    fn activate<'a>(
        &'a self,
        journal: &'a AnyJournal,
        key: EntityKey,
    ) -> BoxFuture<'a, Result<Box<dyn Instance>, EngineError>>;

    /// Schema version of the type's replies (for failure replies).
    fn reply_version(&self) -> u32;

    /// The type's own idle time before passivation, if it sets one.
    fn passivate_after(&self) -> Option<std::time::Duration>;
}

/// All entity types of a cluster, by name.
#[derive(Default)]
pub(crate) struct Registry {
    types: HashMap<&'static str, Arc<dyn EntityType>>,
    /// Each type's shard group.
    groups: HashMap<&'static str, &'static str>,
}

impl Registry {
    pub(crate) fn register<E: Entity>(&mut self, entity: E) {
        self.types
            .insert(E::TYPE, Arc::new(Registered(Arc::new(entity))));
        self.groups.insert(E::TYPE, E::SHARD_GROUP);
    }

    /// The shard groups a runner with these types hosts: `None` (every group) in a journal
    /// without named groups; else the groups of the registered types, or the default
    /// group (where singletons live) for a runner that registers none.
    pub(crate) fn hosted_groups(&self, layout: &ShardLayout) -> Option<Vec<String>> {
        if layout.is_single() {
            return None;
        }
        let mut groups: Vec<String> = self.groups.values().map(|g| (*g).to_owned()).collect();
        if groups.is_empty() {
            groups.push(entlog_journal::DEFAULT_GROUP.to_owned());
        }
        groups.sort();
        groups.dedup();
        Some(groups)
    }

    /// Every registered type with its shard group.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.groups.iter().map(|(t, g)| (*t, *g))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn EntityType>> {
        self.types.get(name)
    }

    /// The shortest idle time before passivation, over `default` and every type's own.
    pub(crate) fn shortest_passivation(&self, default: std::time::Duration) -> std::time::Duration {
        self.types
            .values()
            .filter_map(|t| t.passivate_after())
            .fold(default, std::cmp::min)
    }
}

struct Registered<E>(Arc<E>);

impl<E: Entity> EntityType for Registered<E> {
    fn activate<'a>(
        &'a self,
        journal: &'a AnyJournal,
        key: EntityKey,
    ) -> BoxFuture<'a, Result<Box<dyn Instance>, EngineError>> {
        Box::pin(crate::instance::activate(self.0.clone(), journal, key))
    }

    fn reply_version(&self) -> u32 {
        E::REPLY_VERSION
    }

    fn passivate_after(&self) -> Option<std::time::Duration> {
        E::PASSIVATE_AFTER
    }
}
