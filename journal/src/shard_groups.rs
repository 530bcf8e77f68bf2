//! Shard groups: named slices of a journal's shards, so that runners host only the entity
//! types they can run.
//!
//! # This is part of the storage format
//!
//! A journal's shards `0..shard_count` are laid out once, when the journal is created, and
//! the layout is stored in its metadata (`shard_groups`, e.g. `payments:16,audit:4`): the
//! default group comes first and holds what the named groups leave, then each named group
//! in the order given. Each entity type belongs to one group; the first registration of a
//! type records it in the metadata (`group:<type>`) and a later registration that names
//! another group is refused, since moving a type would strand its entities' history in
//! shards that no longer route to them.
//!
//! An entity's shard is `start + crc32(id) % size` of its type's group. With no named
//! group the default group is every shard and this is exactly
//! [`shard_of`](crate::shard::shard_of): journals without groups route as they always did.
//! Entities of one group that share an id share a shard, as before.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::RwLock;

use crate::envelope::EntityKey;
use crate::error::{JournalError, Result};
use crate::shard::{Shard, shard_of};

/// The group of every entity type that names none, and of singletons.
pub const DEFAULT_GROUP: &str = "default";

/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 64;

/// A named group of shards, configured when a journal is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardGroup {
    /// Its name: 1–64 bytes of `a-z`, `0-9`, `_` and `-`.
    pub name: String,
    /// How many of the journal's shards it holds (at least 1).
    pub shards: u32,
}

impl ShardGroup {
    /// A group named `name` of `shards` shards.
    pub fn new(name: impl Into<String>, shards: u32) -> Self {
        ShardGroup {
            name: name.into(),
            shards,
        }
    }
}

/// Refuses a group name the metadata could not store unambiguously.
pub fn check_group_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_GROUP_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(JournalError::Config(format!(
            "shard group name {name:?} must be 1-{MAX_GROUP_NAME_BYTES} characters of a-z, 0-9, _ and -"
        )))
    }
}

/// How a journal's shards are divided into groups: the default group first, then the
/// named groups in order, each a contiguous range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    groups: Vec<(String, Range<Shard>)>,
}

impl ShardLayout {
    /// Every shard in the default group.
    pub fn single(shard_count: u32) -> Self {
        ShardLayout {
            groups: vec![(DEFAULT_GROUP.to_owned(), 0..shard_count)],
        }
    }

    /// `shard_count` shards, `named` groups at the end and the default group before them
    /// holding the rest, which must be at least one shard.
    pub fn new(shard_count: u32, named: &[ShardGroup]) -> Result<Self> {
        let mut taken: u64 = 0;
        for (i, g) in named.iter().enumerate() {
            check_group_name(&g.name)?;
            if g.name == DEFAULT_GROUP || named[..i].iter().any(|h| h.name == g.name) {
                return Err(JournalError::Config(format!(
                    "shard group {:?} is named twice (the default group is always there)",
                    g.name
                )));
            }
            if g.shards == 0 {
                return Err(JournalError::Config(format!(
                    "shard group {:?} has no shards",
                    g.name
                )));
            }
            taken += u64::from(g.shards);
        }
        if taken >= u64::from(shard_count) {
            return Err(JournalError::Config(format!(
                "the named shard groups take {taken} of {shard_count} shards; the default group needs at least one"
            )));
        }
        let mut start = shard_count - taken as u32;
        let mut groups = vec![(DEFAULT_GROUP.to_owned(), 0..start)];
        for g in named {
            groups.push((g.name.clone(), start..start + g.shards));
            start += g.shards;
        }
        Ok(ShardLayout { groups })
    }

    /// Total number of shards.
    pub fn shard_count(&self) -> u32 {
        self.groups.last().map(|(_, r)| r.end).unwrap_or(0)
    }

    /// Whether the default group is every shard (no named group).
    pub fn is_single(&self) -> bool {
        self.groups.len() == 1
    }

    /// The named groups, in order (the default group is implied).
    pub fn named(&self) -> Vec<ShardGroup> {
        self.groups[1..]
            .iter()
            .map(|(n, r)| ShardGroup::new(n.clone(), r.end - r.start))
            .collect()
    }

    /// Every group with its shards, the default group first.
    pub fn groups(&self) -> impl Iterator<Item = (&str, Range<Shard>)> {
        self.groups.iter().map(|(n, r)| (n.as_str(), r.clone()))
    }

    /// The shards of `group`, if the layout has it.
    pub fn range(&self, group: &str) -> Option<Range<Shard>> {
        self.index(group).map(|i| self.groups[i].1.clone())
    }

    /// The group a shard belongs to.
    pub fn group_of(&self, shard: Shard) -> &str {
        self.groups
            .iter()
            .find(|(_, r)| r.contains(&shard))
            .map(|(n, _)| n.as_str())
            .unwrap_or(DEFAULT_GROUP)
    }

    /// The shard of entity id `id` in `group` (the default group for a group not in the
    /// layout: callers check names with [`range`](Self::range) first).
    pub fn shard_in(&self, group: &str, id: &str) -> Shard {
        self.shard_in_index(self.index(group).unwrap_or(0), id)
    }

    fn shard_in_index(&self, index: usize, id: &str) -> Shard {
        let r = &self.groups[index].1;
        r.start + shard_of(id, r.end - r.start)
    }

    fn index(&self, group: &str) -> Option<usize> {
        self.groups.iter().position(|(n, _)| n == group)
    }

    /// The metadata value: the named groups as `name:shards,…` (empty for none).
    pub(crate) fn encode(&self) -> String {
        encode_groups(&self.named())
    }

    /// Reads the metadata value written by [`encode`](Self::encode).
    pub(crate) fn decode(shard_count: u32, value: &str) -> Result<Self> {
        let bad = || {
            JournalError::Config(format!(
                "journal metadata shard_groups = {value:?} is unreadable"
            ))
        };
        let named = value
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|part| {
                let (name, n) = part.split_once(':').ok_or_else(bad)?;
                Ok(ShardGroup::new(name, n.parse().map_err(|_| bad())?))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(shard_count, &named)
    }
}

/// `name:shards,…`, as the metadata stores named groups.
pub(crate) fn encode_groups(groups: &[ShardGroup]) -> String {
    groups
        .iter()
        .map(|g| format!("{}:{}", g.name, g.shards))
        .collect::<Vec<_>>()
        .join(",")
}

/// A journal's layout and the groups of the entity types it knows: routes every entity to
/// its shard.
#[derive(Debug)]
pub struct ShardMap {
    layout: ShardLayout,
    /// Entity type → (index of its group in the layout, whether the journal's record of
    /// it was read), as recorded or declared.
    types: RwLock<HashMap<String, (usize, bool)>>,
}

impl ShardMap {
    /// A map over `layout`, knowing the types in `recorded` (type, group) pairs; pairs
    /// naming a group the layout lacks are refused.
    pub(crate) fn new(layout: ShardLayout, recorded: &[(String, String)]) -> Result<Self> {
        let map = ShardMap {
            layout,
            types: RwLock::new(HashMap::new()),
        };
        for (t, g) in recorded {
            map.learn(t, g, true)?;
        }
        Ok(map)
    }

    /// The layout of groups over shards.
    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    /// The shard of an entity: by its type's group, the default group for a type the map
    /// does not know (which, with groups, is one never registered nor declared).
    pub fn shard_of(&self, entity: &EntityKey) -> Shard {
        if self.layout.is_single() {
            return self.layout.shard_in_index(0, entity.entity_id());
        }
        let index = self
            .types
            .read()
            .ok()
            .and_then(|t| t.get(entity.entity_type()).map(|(i, _)| *i))
            .unwrap_or(0);
        self.layout.shard_in_index(index, entity.entity_id())
    }

    /// The group this map routes `entity_type` to, if it knows the type.
    pub fn group_of_type(&self, entity_type: &str) -> Option<&str> {
        let (index, _) = *self.types.read().ok()?.get(entity_type)?;
        Some(self.layout.groups[index].0.as_str())
    }

    /// The entity types this map routes to `group`, sorted.
    pub fn types_in(&self, group: &str) -> Vec<String> {
        let Some(index) = self.layout.index(group) else {
            return Vec::new();
        };
        let mut types: Vec<String> = self
            .types
            .read()
            .map(|t| {
                t.iter()
                    .filter(|(_, (i, _))| *i == index)
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        types.sort();
        types
    }

    /// Whether the journal's record of `entity_type` in `group` was read by this process.
    pub(crate) fn recorded_in(&self, entity_type: &str, group: &str) -> bool {
        let Some(index) = self.layout.index(group) else {
            return false;
        };
        self.types
            .read()
            .is_ok_and(|t| t.get(entity_type) == Some(&(index, true)))
    }

    /// Routes `entity_type` to `group` in this process: refused when the layout has no such
    /// group, or when the type is known in another group. Every group is checked against
    /// the journal by [`AnyJournal::record_group`](crate::AnyJournal::record_group); this
    /// in-memory declaration serves senders that cannot wait for a query.
    pub fn declare(&self, entity_type: &str, group: &str) -> Result<()> {
        self.learn(entity_type, group, false)
    }

    pub(crate) fn learn(&self, entity_type: &str, group: &str, recorded: bool) -> Result<()> {
        let Some(index) = self.layout.index(group) else {
            return Err(JournalError::UnknownShardGroup {
                group: group.to_owned(),
                groups: self.layout.groups().map(|(n, _)| n.to_owned()).collect(),
            });
        };
        if self.types.read().is_ok_and(|t| {
            t.get(entity_type)
                .is_some_and(|(i, r)| *i == index && *r >= recorded)
        }) {
            return Ok(());
        }
        let mut types = self
            .types
            .write()
            .map_err(|_| JournalError::Internal("shard map lock poisoned".into()))?;
        match types.get_mut(entity_type) {
            // A recorded group wins over one declared here before it was read.
            Some((known, was)) if (!recorded || *was) && *known != index => {
                Err(JournalError::GroupMismatch {
                    entity_type: entity_type.to_owned(),
                    stored: self.layout.groups[*known].0.clone(),
                    requested: group.to_owned(),
                })
            }
            Some(known) => {
                *known = (index, known.1 || recorded);
                Ok(())
            }
            None => {
                types.insert(entity_type.to_owned(), (index, recorded));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, id: &str) -> EntityKey {
        EntityKey::new(t, id).unwrap()
    }

    #[test]
    fn one_group_routes_as_before_groups() {
        let map = ShardMap::new(ShardLayout::single(64), &[]).unwrap();
        for id in ["c-1", "account-42", "device/Ω", "x"] {
            assert_eq!(map.shard_of(&key("any", id)), shard_of(id, 64));
        }
        assert_eq!(map.layout().encode(), "");
        assert_eq!(
            ShardLayout::decode(64, "").unwrap(),
            ShardLayout::single(64)
        );
    }

    /// Pinned: a layout's ranges and an entity's shard in a named group are storage format.
    #[test]
    fn layout_vectors() {
        let layout = ShardLayout::new(64, &[ShardGroup::new("payments", 16)]).unwrap();
        assert_eq!(layout.range(DEFAULT_GROUP), Some(0..48));
        assert_eq!(layout.range("payments"), Some(48..64));
        assert_eq!(layout.group_of(47), DEFAULT_GROUP);
        assert_eq!(layout.group_of(48), "payments");
        assert_eq!(layout.encode(), "payments:16");
        assert_eq!(ShardLayout::decode(64, "payments:16").unwrap(), layout);
        // crc32("c-1") % 16 = 14 (and % 64 = 62, the pinned vector of `shard_of`).
        assert_eq!(layout.shard_in("payments", "c-1"), 48 + 14);
        assert_eq!(layout.shard_in(DEFAULT_GROUP, "c-1"), shard_of("c-1", 48));
    }

    #[test]
    fn types_route_to_their_group_and_never_move() {
        let layout = ShardLayout::new(
            10,
            &[ShardGroup::new("payments", 3), ShardGroup::new("audit", 2)],
        )
        .unwrap();
        assert_eq!(layout.range("audit"), Some(8..10));
        let map = ShardMap::new(layout, &[("invoice".into(), "payments".into())]).unwrap();
        for i in 0..200 {
            let id = format!("e-{i}");
            assert!((5..8).contains(&map.shard_of(&key("invoice", &id))));
            assert!(
                map.shard_of(&key("cart", &id)) < 5,
                "unknown types use the default group"
            );
        }
        map.declare("trail", "audit").unwrap();
        assert_eq!(map.types_in("audit"), vec!["trail".to_owned()]);
        assert!(map.types_in("nope").is_empty());
        assert!((8..10).contains(&map.shard_of(&key("trail", "t"))));
        assert_eq!(map.group_of_type("trail"), Some("audit"));
        assert!(matches!(
            map.declare("invoice", DEFAULT_GROUP),
            Err(JournalError::GroupMismatch { .. })
        ));
        assert!(matches!(
            map.declare("cart", "nope"),
            Err(JournalError::UnknownShardGroup { .. })
        ));
    }

    #[test]
    fn bad_layouts_are_refused() {
        let g = |n: &str, s| ShardGroup::new(n, s);
        for named in [
            vec![g("a", 8)],
            vec![g("a", 4), g("b", 4)],
            vec![g("a", 0)],
            vec![g("a", 1), g("a", 1)],
            vec![g(DEFAULT_GROUP, 1)],
            vec![g("Upper", 1)],
            vec![g("", 1)],
            vec![g("a:b", 1)],
        ] {
            assert!(ShardLayout::new(8, &named).is_err(), "{named:?} accepted");
        }
        assert!(ShardLayout::decode(8, "a").is_err());
        assert!(ShardLayout::decode(8, "a:x").is_err());
    }
}
