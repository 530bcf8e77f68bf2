//! The engine's metrics, named and described in one place.

/// Gauge: entity instances in memory (this runner, all shards).
pub const ENTITIES_ACTIVE: &str = "entlog_entities_active";
/// Gauge: shards this runner owns.
pub const SHARDS_OWNED: &str = "entlog_shards_owned";
/// Gauge: live runners seen by this runner.
pub const RUNNERS_LIVE: &str = "entlog_runners_live";
/// Counter: messages appended by clients.
pub const MESSAGES_APPENDED: &str = "entlog_messages_appended_total";
/// Counter: messages handled and committed.
pub const MESSAGES_PROCESSED: &str = "entlog_messages_processed_total";
/// Counter: messages read again after a commit failed or a shard changed owner.
pub const MESSAGES_REDELIVERED: &str = "entlog_messages_redelivered_total";
/// Counter: sends recognised as duplicates of an earlier message id.
pub const MESSAGES_DEDUPLICATED: &str = "entlog_messages_deduplicated_total";
/// Counter: messages given a failure reply after their retries (poison messages), by
/// `kind`: unregistered, activation, state_lost, panicked, timeout, too_large,
/// undecodable, unencodable, apply_panicked, refused.
pub const MESSAGES_FAILED: &str = "entlog_messages_failed_total";
/// Histogram (seconds): from a message's append (a scheduled message's due time) to the
/// end of its handling (its batch commits right after).
pub const PROCESSING_LATENCY: &str = "entlog_processing_latency_seconds";
/// Counter: events replayed while activating entities.
pub const EVENTS_REPLAYED: &str = "entlog_events_replayed_total";
/// Counter: snapshots saved.
pub const SNAPSHOTS_WRITTEN: &str = "entlog_snapshots_written_total";
/// Counter: damaged entries (checksum failed) recorded and passed by a mailbox.
pub const ENTRIES_DAMAGED: &str = "entlog_entries_damaged_total";
/// Counter: failed reads, commits or activations that a shard retries after a back-off.
pub const SHARD_RETRIES: &str = "entlog_shard_retries_total";
/// Histogram: handled messages per commit of the runner's pipeline (all shards together;
/// 0 for a commit that only moves cursors).
pub const MESSAGES_PER_COMMIT: &str = "entlog_messages_per_commit";
/// Histogram (seconds): one append of the client, the group commit of the sends waiting
/// at that moment, from its start to the journal's answer.
pub const APPEND_SECONDS: &str = "entlog_append_seconds";
/// Histogram: messages per append of the client.
pub const MESSAGES_PER_APPEND: &str = "entlog_messages_per_append";
/// Histogram (seconds): one mailbox read of the runner's pipeline (every due shard at once).
pub const READ_SECONDS: &str = "entlog_read_seconds";
/// Histogram (seconds): one commit of the runner's pipeline (what every shard handled).
pub const COMMIT_SECONDS: &str = "entlog_commit_seconds";

/// Counter: batched reply queries made for asks whose shard another process owns (each
/// serves every such ask of one shard).
pub const REPLY_QUERIES: &str = "entlog_reply_queries_total";

/// Counter: asks that failed with `RunnerUnavailable` (no live runner owned their shard).
pub const RUNNER_UNAVAILABLE: &str = "entlog_runner_unavailable_total";

/// Counter: sends refused with `MailboxFull` (the entity had its capacity of unanswered
/// messages).
pub const MAILBOX_FULL: &str = "entlog_mailbox_full_total";

/// Counter: lock sessions this runner lost (a dead or silent connection): it stopped
/// writing and dropped every shard.
pub const LOCK_SESSIONS_LOST: &str = "entlog_lock_sessions_lost_total";

/// Counter: attempts to open a lock session that failed (the database unreachable, or
/// this runner id still live in an old session); the runner retries every 500 ms.
pub const LOCK_SESSION_FAILURES: &str = "entlog_lock_session_failures_total";

/// Gauge: 1 while this runner has an open lock session (it can own shards), else 0.
pub const LOCK_SESSION_OPEN: &str = "entlog_lock_session_open";

/// Gauge: 1 while this runner runs the singleton named by the label `singleton`, else 0.
pub const SINGLETON_RUNNING: &str = "entlog_singleton_running";

/// Registers the descriptions of every metric with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(ENTITIES_ACTIVE, "entity instances in memory");
    describe_gauge!(SHARDS_OWNED, "shards owned by this runner");
    describe_gauge!(RUNNERS_LIVE, "live runners seen by this runner");
    describe_counter!(MESSAGES_APPENDED, "messages appended by clients");
    describe_counter!(MESSAGES_PROCESSED, "messages handled and committed");
    describe_counter!(
        MESSAGES_REDELIVERED,
        "messages read again after a failed commit or an owner change"
    );
    describe_counter!(MESSAGES_DEDUPLICATED, "sends recognised as duplicates");
    describe_counter!(
        MESSAGES_FAILED,
        "messages given a failure reply after their retries"
    );
    describe_histogram!(
        PROCESSING_LATENCY,
        Unit::Seconds,
        "append (or due time) to handled (its batch commits right after)"
    );
    describe_counter!(EVENTS_REPLAYED, "events replayed during activation");
    describe_counter!(SNAPSHOTS_WRITTEN, "snapshots saved");
    describe_counter!(
        ENTRIES_DAMAGED,
        "damaged entries recorded and passed by a mailbox"
    );
    describe_counter!(
        SHARD_RETRIES,
        "failed reads, commits or activations retried after a back-off"
    );
    describe_histogram!(
        MESSAGES_PER_COMMIT,
        "handled messages per pipeline commit (all shards together)"
    );
    describe_histogram!(
        APPEND_SECONDS,
        Unit::Seconds,
        "one client append (the group commit of concurrent sends)"
    );
    describe_histogram!(MESSAGES_PER_APPEND, "messages per client append");
    describe_histogram!(
        READ_SECONDS,
        Unit::Seconds,
        "one mailbox read of the pipeline (every due shard)"
    );
    describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "one commit of the pipeline (every shard's handled messages)"
    );
    describe_counter!(
        REPLY_QUERIES,
        "batched reply queries for asks answered by another process"
    );
    describe_counter!(
        RUNNER_UNAVAILABLE,
        "asks failed because no live runner owned their shard"
    );
    describe_counter!(
        MAILBOX_FULL,
        "sends refused because the entity had its capacity of unanswered messages"
    );
    describe_counter!(
        LOCK_SESSIONS_LOST,
        "lock sessions lost: every shard dropped, writing stopped"
    );
    describe_counter!(
        LOCK_SESSION_FAILURES,
        "attempts to open a lock session that failed"
    );
    describe_gauge!(
        LOCK_SESSION_OPEN,
        "1 while this runner has an open lock session, else 0"
    );
    describe_gauge!(
        SINGLETON_RUNNING,
        "1 while this runner runs the singleton, else 0"
    );
}
