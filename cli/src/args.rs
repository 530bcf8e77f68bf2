//! The command line: global options and one subcommand per job.

use clap::{Args, Parser, Subcommand};

/// Replay, inspect and watch entlog journals.
#[derive(Debug, Parser)]
#[command(
    name = "entlog",
    version,
    after_help = "Examples:
  entlog --db quickstart.db status
  entlog --db postgres://postgres@127.0.0.1/app --schema entlog status --json
  entlog --db app.db inspect account/alice
  entlog --db app.db replay account/alice --to-seq 10
  entlog --db app.db tail --type account
  entlog --db app.db prune --older-than 30d

A journal is a PostgreSQL URL (postgres://…) or a SQLite file (a path or sqlite://path).
Payloads are decoded only by an application's own CLI, built with entlog::cli and its
type registry; the plain binary shows type tags, versions and raw bytes."
)]
pub(crate) struct Cli {
    /// The journal: a PostgreSQL URL or a SQLite file.
    #[arg(long, global = true, env = "ENTLOG_DB")]
    pub db: Option<String>,
    /// PostgreSQL schema of the journal.
    #[arg(long, global = true, default_value = "entlog", env = "ENTLOG_SCHEMA")]
    pub schema: String,
    /// Print JSON (one document; `tail` prints one object per line).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a journal, or apply pending migrations to an existing one.
    #[command(after_help = "Examples:
  entlog --db app.db migrate --shards 16
  entlog --db postgres://postgres@127.0.0.1/app --schema orders migrate")]
    Migrate {
        /// Shards of a new journal (default 64 on PostgreSQL, 8 on SQLite; an existing one
        /// keeps its own count).
        #[arg(long)]
        shards: Option<u32>,
    },
    /// Runners, shards (owner, head, cursor, backlog), projections (lag), poison messages,
    /// damaged entries (known only by shard and offset), and what is stuck: a shard whose
    /// oldest unanswered message waits longer than --stuck-after, a shard retrying its
    /// commit, a projection stopped at an event. Exits 1 when anything is stuck.
    #[command(after_help = "Examples:
  entlog --db app.db status
  entlog --db postgres://postgres@127.0.0.1/app status --json | jq '.shards[] | select(.backlog > 0)'")]
    Status {
        /// Most poison messages (failure replies) to list.
        #[arg(long, default_value_t = 20)]
        poison_limit: usize,
        /// A shard whose oldest unanswered message has waited this long is stuck.
        #[arg(long, default_value = "60s")]
        stuck_after: String,
    },
    /// Follow new entries of the journal, decoded when the types are registered.
    #[command(after_help = "Examples:
  entlog --db app.db tail                      # every shard, new entries only
  entlog --db app.db tail --entity account/alice --from-start
  entlog --db app.db tail --shard 3 --count 10 --json")]
    Tail(TailArgs),
    /// An entity's messages, events, replies and snapshot, in order; a long history a
    /// page at a time.
    #[command(after_help = "Examples:
  entlog --db app.db inspect account/alice
  entlog --db app.db inspect account/alice --json
  entlog --db app.db inspect account/alice --limit 100               # the newest 100
  entlog --db app.db inspect account/alice --limit 100 --before 5120 # the 100 before them")]
    Inspect {
        /// The entity, as TYPE/ID.
        entity: String,
        /// Only entries before this offset (the first offset of the page after).
        #[arg(long)]
        before: Option<u64>,
        /// At most this many entries: the newest ones (before --before).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// The state after each event, and what each event changed.
    #[command(after_help = "Examples:
  entlog --db app.db replay account/alice
  entlog --db app.db replay account/alice --to-seq 3
  entlog --db app.db replay account/alice --at 2026-11-27T10:00:00Z
  entlog --db app.db replay account/alice --from-snapshot   # check the snapshot")]
    Replay(ReplayArgs),
    /// Projection status, or rebuild one from the start of the journal.
    #[command(after_help = "Examples:
  entlog --db app.db projections
  entlog --db app.db projections rebuild balances")]
    Projections {
        #[command(subcommand)]
        action: Option<ProjectionsAction>,
    },
    /// A read-only web page of the journal: runners, the shard map, projections,
    /// failures, throughput, and each entity's history with its replayed states.
    #[command(after_help = "Examples:
  entlog --db app.db dashboard                       # http://127.0.0.1:7777/
  entlog --db app.db dashboard --bind 127.0.0.1:0    # any free port (printed)
  entlog --db postgres://postgres@db/app dashboard --bind 0.0.0.0:7777 --token s3cret

The page's data comes from JSON endpoints that answer as the commands' --json:
/api/status, /api/inspect/TYPE/ID (?before=OFFSET&limit=N), /api/replay/TYPE/ID
(?to_seq=N&last=N), and /api/history (throughput and backlog over ten minutes).")]
    Dashboard {
        /// Address to listen on; anything but loopback needs --token.
        #[arg(long, default_value = "127.0.0.1:7777")]
        bind: String,
        /// Require this token on every request (?token=… or Authorization: Bearer).
        #[arg(long, env = "ENTLOG_DASHBOARD_TOKEN")]
        token: Option<String>,
        /// A shard whose oldest unanswered message has waited this long is stuck.
        #[arg(long, default_value = "60s")]
        stuck_after: String,
    },
    /// Delete processed messages and their replies older than an age; never events.
    #[command(after_help = "Examples:
  entlog --db app.db prune --older-than 30d

A message id is remembered (and a re-send of it answered with the stored reply) for as
long as its reply is kept: at least --older-than after it was processed. A send of the
same id after that is a new message. Events, scheduled messages and unprocessed messages
are never deleted.")]
    Prune {
        /// Keep what was processed within this age (e.g. 7d, 12h, 30m, 0s).
        #[arg(long)]
        older_than: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Only this shard.
    #[arg(long, conflicts_with = "entity")]
    pub shard: Option<u32>,
    /// Only this entity type.
    #[arg(long = "type", conflicts_with = "entity")]
    pub entity_type: Option<String>,
    /// Only this entity, as TYPE/ID.
    #[arg(long)]
    pub entity: Option<String>,
    /// Start at the beginning of the journal instead of its current end.
    #[arg(long)]
    pub from_start: bool,
    /// Exit after printing this many entries.
    #[arg(long)]
    pub count: Option<u64>,
    /// How often to look for new entries, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub poll_ms: u64,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The entity, as TYPE/ID.
    pub entity: String,
    /// Stop after the event at this seq.
    #[arg(long)]
    pub to_seq: Option<u64>,
    /// Stop at the last event written at or before this time (RFC 3339).
    #[arg(long)]
    pub at: Option<String>,
    /// Compare the stored snapshot with a full replay up to its seq.
    #[arg(long)]
    pub from_snapshot: bool,
    /// Show only the last N events (the state is still replayed from the start).
    #[arg(long)]
    pub last: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsAction {
    /// Checkpoints, lag and failures of every projection (the default).
    Status,
    /// Empty the read model and replay the journal into it, with a progress bar.
    Rebuild {
        /// The projection's name.
        name: String,
        /// Events per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}
