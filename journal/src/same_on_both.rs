//! The [`Journal`](crate::Journal) methods that are written once for both backends.

/// The [`Journal`](crate::Journal) methods that are the same on both backends, expanded
/// inside each backend's `impl Journal`: the shard count and map, the reads of `read.rs`
/// and the writes of `writes.rs` (each shard checked first), the checks before an append
/// and a mailbox read, and the schedule-changed flag. The backend provides `inner.common`
/// (a [`Common`](crate::common::Common)), `reads` and `writes` (the
/// [`Pool`](crate::pool::Pool)s its reads and bookkeeping writes run on), `place_appended`
/// and `read_mailboxes_of`.
macro_rules! same_on_both_backends {
    () => {
        fn shard_count(&self) -> u32 {
            self.inner.common.shard_count
        }

        fn shard_map(&self) -> &crate::shard_groups::ShardMap {
            &self.inner.common.shard_map
        }

        async fn append(
            &self,
            messages: Vec<crate::envelope::NewMessage>,
        ) -> crate::error::Result<Vec<crate::records::AppendOutcome>> {
            if messages.is_empty() {
                return Ok(Vec::new());
            }
            let now = self.now();
            let (entries, sources) = self.inner.common.append_columns(messages, now)?;
            let placed = self.place_appended(&entries, now).await?;
            self.inner.common.wake_after_append(&entries, &placed);
            crate::outcomes::append_outcomes(self, &entries, &placed, &sources).await
        }

        async fn read_mailboxes(
            &self,
            from: &[(crate::shard::Shard, u64)],
            limit_per_shard: usize,
        ) -> crate::error::Result<Vec<crate::damaged::Delivery>> {
            let cursors = crate::journal::mailbox_cursors(from, self.inner.common.shard_count)?;
            if cursors.is_empty() || limit_per_shard == 0 {
                return Ok(Vec::new());
            }
            self.read_mailboxes_of(&cursors, limit_per_shard).await
        }

        async fn record_damaged(
            &self,
            entries: &[crate::damaged::DamagedEntry],
        ) -> crate::error::Result<()> {
            for e in entries {
                self.inner.common.check_shard(e.shard)?;
            }
            crate::writes::record_damaged(self.writes(), entries, self.now()).await
        }

        async fn save_snapshot(
            &self,
            snapshot: crate::records::NewSnapshot,
        ) -> crate::error::Result<()> {
            crate::writes::save_snapshot(
                self.writes(),
                &snapshot,
                self.inner.common.max_payload_bytes,
                self.now(),
            )
            .await
        }

        async fn advance_cursor(
            &self,
            consumer: &str,
            shard: crate::shard::Shard,
            offset: u64,
        ) -> crate::error::Result<()> {
            self.inner.common.check_shard(shard)?;
            crate::names::check_name(crate::error::Field::Consumer, consumer)?;
            crate::writes::advance_cursor(self.writes(), consumer, shard, offset).await
        }

        async fn read_shard(
            &self,
            shard: crate::shard::Shard,
            after: u64,
            limit: usize,
            kind: Option<crate::envelope::EntryKind>,
        ) -> crate::error::Result<Vec<crate::envelope::Entry>> {
            self.inner.common.check_shard(shard)?;
            crate::read::read_shard(self.reads(), shard, after, limit, kind).await
        }

        async fn read_events(
            &self,
            entity: &crate::envelope::EntityKey,
            from_seq: u64,
            limit: usize,
        ) -> crate::error::Result<Vec<crate::envelope::Entry>> {
            crate::read::read_events(self.reads(), entity, from_seq, limit).await
        }

        async fn reply(
            &self,
            entity: &crate::envelope::EntityKey,
            message_id: uuid::Uuid,
        ) -> crate::error::Result<Option<crate::records::StoredReply>> {
            crate::read::reply(self.reads(), entity, message_id).await
        }

        async fn load_snapshot(
            &self,
            entity: &crate::envelope::EntityKey,
            state_version: u32,
        ) -> crate::error::Result<Option<crate::records::Snapshot>> {
            crate::read::load_snapshot(self.reads(), entity, state_version).await
        }

        async fn cursor(
            &self,
            consumer: &str,
            shard: crate::shard::Shard,
        ) -> crate::error::Result<u64> {
            self.inner.common.check_shard(shard)?;
            crate::read::cursor(self.reads(), consumer, shard).await
        }

        async fn head(&self, shard: crate::shard::Shard) -> crate::error::Result<u64> {
            self.inner.common.check_shard(shard)?;
            crate::read::head(self.reads(), shard).await
        }

        async fn next_due(
            &self,
            shard: crate::shard::Shard,
        ) -> crate::error::Result<Option<crate::time::Timestamp>> {
            self.next_due_many(&[shard])
                .await
                .map(|mut due| due.pop().flatten())
        }

        async fn next_due_many(
            &self,
            shards: &[crate::shard::Shard],
        ) -> crate::error::Result<Vec<Option<crate::time::Timestamp>>> {
            for &shard in shards {
                self.inner.common.check_shard(shard)?;
            }
            crate::read::next_due_many(self.reads(), shards).await
        }

        fn take_schedule_changed(&self, shard: crate::shard::Shard) -> bool {
            self.inner.common.wakeups.take_scheduled(shard)
        }
    };
}
pub(crate) use same_on_both_backends;
