//! [`EntityRef`]: sending to one entity — `ask`, `tell`, timers, their idempotent forms —
//! with a bounded mailbox, and waiting for a reply from the local runner or the journal;
//! reading its state, owner and whether it is local without a message.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use entlog_journal::{AppendOutcome, EntityKey, Headers, Journal, NewMessage, Timestamp};
use futures_util::FutureExt;
use tracing::Instrument;
use uuid::Uuid;

use crate::client::Client;
use crate::codec;
use crate::entity::Entity;
use crate::error::EngineError;
use crate::metrics as m;
use crate::panics::panic_message;
use crate::runner::pipeline::MAILBOX;
use crate::state;

/// A handle on one entity: `ask`, `tell` and their idempotent forms, `state` without a
/// message. Cheap to clone.
///
/// ```
/// # use entlog_engine::{Context, Entity, Outcome, Rejection};
/// # struct Counter;
/// # impl Entity for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = u64; type Event = u64; type Reply = u64; type State = u64;
/// #     async fn handle(&self, n: &u64, add: u64, _: &mut Context)
/// #         -> Result<Outcome<Self>, Rejection> { Ok(Outcome::new(vec![add], n + add)) }
/// #     fn apply(n: &mut u64, add: &u64) { *n += add; }
/// # }
/// # fn main() -> Result<(), entlog_engine::EngineError> {
/// # let dir = std::env::temp_dir().join(format!("entlog-doc-{}", uuid::Uuid::now_v7()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let cluster = entlog_engine::Cluster::builder().sqlite(dir.join("app.db"))
/// #     .entity(Counter).start().await?;
/// use std::time::Duration;
/// use entlog_engine::EngineError;
///
/// let counter = cluster.entity::<Counter>("c-1");
/// assert_eq!(counter.ask(5).await?, 5);
///
/// // The same id twice: executed once, the second send gets the stored reply.
/// let id = uuid::Uuid::now_v7();
/// assert_eq!(counter.ask_with_id(id, 10).await?, 15);
/// assert_eq!(counter.ask_with_id(id, 10).await?, 15);
///
/// counter.tell(1).await?;                                 // durable, no reply awaited
/// counter.tell_after(Duration::from_secs(3600), 1).await?; // a durable timer
///
/// // The state read from the journal, with no message journaled.
/// let answered = counter.ask(0).await?;
/// let (seq, state) = counter.state().await?;
/// assert_eq!((seq, state), (4, answered));
///
/// // What to retry: a timeout, no runner, a full mailbox, a passing database error.
/// match counter.ask(1).await {
///     Err(e) if e.is_retryable() => { /* try again later, with ask_with_id */ }
///     Err(e) => return Err(e),
///     Ok(n) => assert_eq!(n, 17),
/// }
/// # cluster.shutdown().await?;
/// # Ok::<_, EngineError>(())
/// # })?;
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(())
/// # }
/// ```
pub struct EntityRef<E: Entity> {
    client: Client,
    id: String,
    /// Sent with every message through this handle.
    headers: Headers,
    _entity: PhantomData<fn() -> E>,
}

impl<E: Entity> Clone for EntityRef<E> {
    fn clone(&self) -> Self {
        EntityRef {
            client: self.client.clone(),
            id: self.id.clone(),
            headers: self.headers.clone(),
            _entity: PhantomData,
        }
    }
}

impl Client {
    /// A handle to send messages to entity `id` of type `E`.
    pub fn entity<E: Entity>(&self, id: &str) -> EntityRef<E> {
        EntityRef::new(self.clone(), id)
    }
}

impl<E: Entity> EntityRef<E> {
    /// A handle on entity `id` of type `E`, sending through `client`.
    pub(crate) fn new(client: Client, id: &str) -> Self {
        EntityRef {
            client,
            id: id.to_owned(),
            headers: Headers::new(),
            _entity: PhantomData,
        }
    }

    /// This handle with a header: every message sent through it carries `name: value`
    /// (stored with the message under its checksum), its handler sees it in
    /// [`Context::headers`](crate::Context::headers), and what the handler sends — now or
    /// as a timer — carries it on. For a tenant, a trace id, a request id.
    ///
    /// A name must be non-empty and at most 255 bytes, and a message's headers at most
    /// 8 KiB together; a send that breaks these fails with a typed journal error.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The headers this handle sends.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The entity's address, routed by its type's shard group; an empty or oversized id,
    /// or a group the journal lacks or that contradicts the type's record, is a typed
    /// journal error.
    pub(crate) fn key(&self) -> Result<EntityKey, EngineError> {
        let key = EntityKey::new(E::TYPE, self.id.as_str())?;
        self.client
            .journal()
            .shard_map()
            .declare(E::TYPE, E::SHARD_GROUP)?;
        Ok(key)
    }

    fn message(
        &self,
        id: Uuid,
        command: &E::Command,
        at: Option<Timestamp>,
    ) -> Result<NewMessage, EngineError> {
        #[allow(unused_mut)] // written only with OpenTelemetry
        let mut headers = self.headers.clone();
        // A tell carries the caller's current span's context, unless it names its own.
        #[cfg(feature = "opentelemetry")]
        if !headers.contains_key(crate::TRACE_HEADER) {
            crate::otel::carry(&tracing::Span::current(), &mut headers);
        }
        Ok(NewMessage {
            entity: self.key()?,
            message_id: id,
            payload: codec::command::<E>(command)?,
            deliver_at: at,
            headers,
        })
    }

    async fn append(&self, message: NewMessage) -> Result<AppendOutcome, EngineError> {
        if self.client.is_shut_down() {
            return Err(EngineError::ShutDown);
        }
        // Checked against the journal's record once per type and process, so that a type
        // this member does not register is still routed as every other member routes it.
        // A journal without named groups has nothing to check: `key()` saw the group.
        let journal = self.client.journal();
        if !journal.shard_map().layout().is_single() {
            journal.record_group(E::TYPE, E::SHARD_GROUP).await?;
        }
        self.check_mailbox(&message.entity).await?;
        let outcome = self.client.parts.appender.append(message).await?;
        match &outcome {
            AppendOutcome::Duplicate { .. } => {
                metrics::counter!(m::MESSAGES_DEDUPLICATED).increment(1)
            }
            _ => metrics::counter!(m::MESSAGES_APPENDED).increment(1),
        }
        Ok(outcome)
    }

    /// Refuses a send to an entity with its capacity of unanswered messages (when one is
    /// set: `Entity::MAILBOX_CAPACITY`, else `Config::mailbox_capacity`).
    async fn check_mailbox(&self, entity: &EntityKey) -> Result<(), EngineError> {
        let inner = &self.client.parts;
        let Some(capacity) = E::MAILBOX_CAPACITY.or(inner.config.mailbox_capacity) else {
            return Ok(());
        };
        let waiting = inner
            .journal
            .unanswered(entity, MAILBOX, u64::from(capacity))
            .await?;
        if waiting < u64::from(capacity) {
            return Ok(());
        }
        metrics::counter!(m::MAILBOX_FULL).increment(1);
        Err(EngineError::MailboxFull {
            entity: entity.to_string(),
            capacity,
        })
    }

    /// Sends a command and waits for the reply (at most `ask_timeout`).
    pub async fn ask(&self, command: E::Command) -> Result<E::Reply, EngineError> {
        self.ask_with_id(Uuid::now_v7(), command).await
    }

    /// Sends a command under a caller-chosen id: sending the same id again never
    /// executes it twice, and returns the stored reply (waiting for it if needed).
    ///
    /// The reply is matched by this entity and `id` (the same id asked of another entity
    /// at the same time gets that entity's reply), and its type tag is checked before it
    /// is decoded ([`EngineError::ReplyType`]). When this member's runner owns the entity's
    /// shard, the reply comes from it directly; otherwise from the replies table, read when
    /// the shard announces committed replies (see `replies.rs`), never by polling per ask.
    /// Dropping the returned future unregisters the wait.
    pub async fn ask_with_id(
        &self,
        id: Uuid,
        command: E::Command,
    ) -> Result<E::Reply, EngineError> {
        #[allow(unused_mut)] // written only with OpenTelemetry
        let mut message = self.message(id, &command, None)?;
        let span = tracing::info_span!(
            "ask",
            entity = %message.entity,
            message_id = %id,
            trace = tracing::field::Empty,
        );
        if let Some(trace) = message.headers.get(crate::TRACE_HEADER) {
            span.record("trace", tracing::field::display(trace));
        }
        // The ask joins the caller's trace; the message carries the ask's own context.
        #[cfg(feature = "opentelemetry")]
        {
            crate::otel::join(&span, &message.headers);
            crate::otel::carry(&span, &mut message.headers);
        }
        self.ask_message(id, message).instrument(span).await
    }

    /// Appends `message` and waits for its reply (the body of [`ask_with_id`]).
    ///
    /// [`ask_with_id`]: Self::ask_with_id
    async fn ask_message(&self, id: Uuid, message: NewMessage) -> Result<E::Reply, EngineError> {
        let inner = &self.client.parts;
        let shard = inner.journal.shard_of(&message.entity);
        // Registered before the append, so that no reply can commit unseen in between.
        let (mut wait, start_fetcher) = inner.waiters.register(message.entity.clone(), id, shard);
        if start_fetcher {
            inner.fetch.spawn(shard);
        }
        // A duplicate already answered has its reply; any other outcome (journaled now, for
        // later, or before but not answered yet) waits for it.
        if let AppendOutcome::Duplicate {
            reply: Some(reply), ..
        } = self.append(message).await?
        {
            return codec::decode_reply::<E>(id, &reply.payload);
        }
        let start = tokio::time::Instant::now();
        let deadline = start + inner.config.ask_timeout;
        let mut check = start + inner.config.unavailable_after;
        let reply = wait.reply();
        tokio::pin!(reply);
        loop {
            tokio::select! {
                got = &mut reply => return match got {
                    Some(reply) => codec::decode_reply::<E>(id, &reply),
                    None => Err(EngineError::ShutDown),
                },
                _ = tokio::time::sleep_until(deadline.min(check)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Timeout { message_id: id });
            }
            // Slow, or nobody there? Only a shard no live runner holds fails early; a
            // check that cannot be made (the database is unreachable) leaves the ask
            // waiting for its reply or its timeout, as before.
            let owned = inner.owner_checks.has_owner(&inner.journal, shard).await;
            if let Err(e) = &owned {
                tracing::debug!(shard, error = %e, "cannot check the shard's owner; still waiting");
            }
            if owned.is_ok_and(|owned| !owned) {
                metrics::counter!(m::RUNNER_UNAVAILABLE).increment(1);
                return Err(EngineError::RunnerUnavailable {
                    shard,
                    message_id: id,
                    waited: start.elapsed(),
                });
            }
            check += inner.config.unavailable_after;
        }
    }

    /// Sends a command durably without waiting for its reply; returns its id.
    pub async fn tell(&self, command: E::Command) -> Result<Uuid, EngineError> {
        let id = Uuid::now_v7();
        self.append(self.message(id, &command, None)?).await?;
        Ok(id)
    }

    /// Sends a command to be delivered at `at` (at once if `at` is not in the future);
    /// returns its id. The message is durable on return, survives restarts and failover,
    /// and is delivered once, not before `at`.
    pub async fn tell_at(&self, at: Timestamp, command: E::Command) -> Result<Uuid, EngineError> {
        let id = Uuid::now_v7();
        self.tell_at_with_id(id, at, command).await?;
        Ok(id)
    }

    /// Sends a command to be delivered `after` from now; returns its id.
    pub async fn tell_after(
        &self,
        after: Duration,
        command: E::Command,
    ) -> Result<Uuid, EngineError> {
        let at = self.client.journal().now().after(after);
        self.tell_at(at, command).await
    }

    /// [`tell_at`](Self::tell_at) under a caller-chosen id: re-sending an id that is
    /// scheduled, or was delivered, writes nothing (`Duplicate`). An id that was cancelled
    /// is forgotten, so sending it again schedules it anew (cancel + re-send moves a timer).
    pub async fn tell_at_with_id(
        &self,
        id: Uuid,
        at: Timestamp,
        command: E::Command,
    ) -> Result<AppendOutcome, EngineError> {
        self.append(self.message(id, &command, Some(at))?).await
    }

    /// Cancels a scheduled message. `Ok(true)`: it was still scheduled and will never be
    /// delivered. `Ok(false)`: the entity has no scheduled message with this id — unknown,
    /// cancelled already, or already due and moved to the entity's mailbox, in which case
    /// it is delivered once as usual.
    pub async fn cancel(&self, message_id: Uuid) -> Result<bool, EngineError> {
        if self.client.is_shut_down() {
            return Err(EngineError::ShutDown);
        }
        let key = self.key()?;
        Ok(self
            .client
            .journal()
            .cancel_scheduled(&key, message_id)
            .await?)
    }

    /// The stored reply to an earlier message, if it was processed.
    pub async fn reply_to(&self, id: Uuid) -> Result<Option<E::Reply>, EngineError> {
        let key = self.key()?;
        match self.client.journal().reply(&key, id).await? {
            Some(r) => codec::decode_reply::<E>(id, &r.payload).map(Some),
            None => Ok(None),
        }
    }

    /// The entity's current state and the seq of its last event (0: it has none), read
    /// from the journal — its latest snapshot and every later committed event — without
    /// sending a message and whoever owns it. It reflects every event committed before
    /// the call; a message being handled meanwhile is not in it.
    ///
    /// An `apply` that panics while folding is [`EngineError::Failed`].
    pub async fn state(&self) -> Result<(u64, E::State), EngineError> {
        let key = self.key()?;
        let journal = self.client.journal();
        match AssertUnwindSafe(state::fold::<E>(journal, &key))
            .catch_unwind()
            .await
        {
            Ok(folded) => folded.map(|f| (f.seq, f.state)),
            Err(panic) => Err(EngineError::Failed {
                reason: format!(
                    "apply panicked while replaying {key}: {}",
                    panic_message(panic.as_ref())
                ),
            }),
        }
    }

    /// The runner that owns this entity's shard now, if a live one does.
    pub async fn owner(&self) -> Result<Option<String>, EngineError> {
        let key = self.key()?;
        let journal = self.client.journal();
        Ok(journal.shard_owner(journal.shard_of(&key)).await?)
    }

    /// Whether this member's runner owns the entity's shard now (its asks are answered in
    /// this process).
    pub fn is_local(&self) -> Result<bool, EngineError> {
        let key = self.key()?;
        let shard = self.client.journal().shard_of(&key);
        Ok(self.client.owned_shards().contains(&shard))
    }
}
