//! Which runner should own which shard: rendezvous hashing over the live runners that
//! host the shard's group.
//!
//! Every runner computes the same answer from the same list of live runners, with no
//! coordinator: shard `s` belongs to the runner with the highest `score(runner, s)` among
//! those hosting the group `s` is in. When a runner joins or leaves, only the shards it
//! wins or held move (about 1/n of its groups' shards). A group no live runner hosts has
//! no owner: its shards wait, and `status` shows them orphaned.

use entlog_journal::{RunnerInfo, ShardLayout};

/// The live runners hosting each group of a journal's layout.
pub(crate) struct Candidates<'a> {
    layout: &'a ShardLayout,
    /// Per group, in layout order: the ids of the live runners that host it.
    by_group: Vec<Vec<String>>,
}

impl<'a> Candidates<'a> {
    pub(crate) fn new(live: &[RunnerInfo], layout: &'a ShardLayout) -> Self {
        let by_group = layout
            .groups()
            .map(|(group, _)| {
                live.iter()
                    .filter(|r| r.hosts(group))
                    .map(|r| r.runner.clone())
                    .collect()
            })
            .collect();
        Candidates { layout, by_group }
    }

    /// The runner that should own `shard`; `None` when no live runner hosts its group.
    pub(crate) fn owner(&self, shard: u32) -> Option<&str> {
        let group = self.layout.group_of(shard);
        let index = self.layout.groups().position(|(g, _)| g == group)?;
        owner(&self.by_group[index], shard)
    }
}

/// 64-bit FNV-1a of a runner id.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn score(runner: &str, shard: u32) -> u64 {
    mix(fnv1a(runner.as_bytes()) ^ u64::from(shard).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The runner (among `live`) that should own `shard`; `None` when no runner is live.
pub(crate) fn owner(live: &[String], shard: u32) -> Option<&str> {
    live.iter()
        .max_by_key(|r| (score(r, shard), r.as_str()))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(id: &str, groups: Option<&[&str]>) -> RunnerInfo {
        RunnerInfo {
            runner: id.to_owned(),
            started_at: entlog_journal::Timestamp(0),
            heartbeat_at: entlog_journal::Timestamp(0),
            groups: groups.map(|g| g.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn shards_go_only_to_runners_hosting_their_group() {
        let layout =
            ShardLayout::new(40, &[entlog_journal::ShardGroup::new("payments", 10)]).unwrap();
        let live = [
            runner("r-default", Some(&["default"])),
            runner("r-pay", Some(&["payments"])),
            runner("r-both", Some(&["default", "payments"])),
            runner("r-old", None),
        ];
        let c = Candidates::new(&live, &layout);
        let mut owners = std::collections::HashMap::new();
        for s in 0..40 {
            let o = c.owner(s).unwrap();
            if s < 30 {
                assert_ne!(
                    o, "r-pay",
                    "default shard {s} given to a payments-only runner"
                );
            } else {
                assert_ne!(
                    o, "r-default",
                    "payments shard {s} given to a default-only runner"
                );
            }
            *owners.entry(o).or_insert(0) += 1;
        }
        assert_eq!(owners.len(), 4, "every runner owns some: {owners:?}");
        // Nobody hosting payments: its shards have no owner, the others still do.
        let c = Candidates::new(&live[..1], &layout);
        assert!((30..40).all(|s| c.owner(s).is_none()));
        assert!((0..30).all(|s| c.owner(s) == Some("r-default")));
    }

    #[test]
    fn spreads_and_moves_little() {
        let three: Vec<String> = ["r-a", "r-b", "r-c"].map(String::from).to_vec();
        let shards = 300;
        let mut counts = std::collections::HashMap::new();
        for s in 0..shards {
            *counts.entry(owner(&three, s).unwrap()).or_insert(0) += 1;
        }
        for (r, c) in &counts {
            assert!((70..=130).contains(c), "{r} owns {c} of {shards}");
        }
        // A fourth runner takes about a quarter, and only from the others.
        let mut four = three.clone();
        four.push("r-d".into());
        let mut moved = 0;
        for s in 0..shards {
            let before = owner(&three, s).unwrap();
            let after = owner(&four, s).unwrap();
            if before != after {
                assert_eq!(after, "r-d", "shard {s} moved between old runners");
                moved += 1;
            }
        }
        assert!((45..=105).contains(&moved), "{moved} shards moved");
        assert_eq!(owner(&[], 1), None);
    }
}
