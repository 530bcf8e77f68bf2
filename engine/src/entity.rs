//! What an application writes: entity types with typed commands, events, replies, state.

use std::future::Future;
use std::time::Duration;

use entlog_journal::{EntityKey, Headers, JournalError, NewMessage, Payload, Timestamp};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::error::EngineError;

/// An entity type: an addressable, single-threaded unit of state.
///
/// Messages to one entity are handled one at a time, in journal order. `handle` decides;
/// `apply` is the only way state changes, so replaying the events rebuilds the state.
/// `apply` must be deterministic and must not fail.
///
/// ```
/// use entlog_engine::{Context, Entity, Outcome, Rejection};
/// use serde::{Deserialize, Serialize};
///
/// /// A thermostat: its target temperature, set within bounds.
/// struct Thermostat;
///
/// #[derive(Serialize, Deserialize)]
/// enum Command { Set(i32), Get }
///
/// #[derive(Serialize, Deserialize)]
/// struct TargetSet(i32);
///
/// impl Entity for Thermostat {
///     const TYPE: &'static str = "thermostat";
///     // Per type, instead of the cluster's Config: at most 100 unanswered messages.
///     const MAILBOX_CAPACITY: Option<u32> = Some(100);
///     type Command = Command;
///     type Event = TargetSet;
///     type Reply = i32;
///     type State = i32;
///
///     async fn handle(&self, target: &i32, cmd: Command, _: &mut Context)
///         -> Result<Outcome<Self>, Rejection> {
///         match cmd {
///             Command::Set(t) if !(5..=30).contains(&t) => {
///                 Err(Rejection::new(format!("{t} °C is out of range")))
///             }
///             Command::Set(t) => Ok(Outcome::new(vec![TargetSet(t)], t)),
///             Command::Get => Ok(Outcome::reply(*target)),
///         }
///     }
///
///     fn apply(target: &mut i32, event: &TargetSet) {
///         *target = event.0;
///     }
/// }
///
/// // State is the fold of the events, whoever replays them.
/// let mut state = 0;
/// Thermostat::apply(&mut state, &TargetSet(21));
/// assert_eq!(state, 21);
/// ```
pub trait Entity: Send + Sync + 'static {
    /// The stable name of the type (`"account"`); stored in every entry.
    const TYPE: &'static str;
    /// Schema version of `Command`, stored with every message.
    const COMMAND_VERSION: u32 = 1;
    /// Schema version of `Event`, stored with every event.
    const EVENT_VERSION: u32 = 1;
    /// Schema version of `Reply`, stored with every reply.
    const REPLY_VERSION: u32 = 1;
    /// Schema version of `State`; snapshots of another version are ignored (full replay).
    const STATE_VERSION: u32 = 1;
    /// Attempts at a command whose handler panics before it gets a failure reply; `None`:
    /// `Config::max_attempts`.
    const MAX_ATTEMPTS: Option<u32> = None;
    /// First pause between attempts (doubled each time, jittered); `None`:
    /// `Config::retry_backoff`.
    const RETRY_BACKOFF: Option<Duration> = None;
    /// Idle time after which an instance leaves memory; `None`: `Config::passivate_after`.
    const PASSIVATE_AFTER: Option<Duration> = None;
    /// Most unanswered messages an instance may have before sends to it fail with
    /// `EngineError::MailboxFull`; `None`: `Config::mailbox_capacity`.
    const MAILBOX_CAPACITY: Option<u32> = None;
    /// The shard group the type's entities live in: only runners that register the type
    /// (and so host its group) own those shards. The journal must have the group
    /// (`Config::shard_groups`), and a type never changes groups once registered.
    const SHARD_GROUP: &'static str = entlog_journal::DEFAULT_GROUP;

    /// What the entity is asked to do.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What it decided happened.
    type Event: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What it answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// What it remembers: the fold of its events.
    type State: Default + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Decides the events, the reply and any messages to other entities for one command.
    fn handle(
        &self,
        state: &Self::State,
        command: Self::Command,
        ctx: &mut Context,
    ) -> impl Future<Output = Result<Outcome<Self>, Rejection>> + Send;

    /// Folds one event into the state.
    fn apply(state: &mut Self::State, event: &Self::Event);

    /// Reads an event stored with an older `EVENT_VERSION` as the current `Event`.
    ///
    /// Called for every stored event whose version is below [`Entity::EVENT_VERSION`]
    /// (never for the current version, never for a newer one), on every read path:
    /// activation, the state projection, [`decode_event`](crate::decode_event), the CLI.
    /// It receives the stored payload (type tag, version, bytes) and typically decodes the
    /// old shape, kept in the application as e.g. `EventV1`, and converts it:
    ///
    /// ```ignore
    /// fn upcast_event(payload: &Payload) -> Option<Result<Event, JournalError>> {
    ///     match payload.version {
    ///         1 => Some(payload.decode::<EventV1>().map(Event::from)),
    ///         _ => None,
    ///     }
    /// }
    /// ```
    ///
    /// `None` (the default) means no upcaster for that version: the read fails with
    /// [`EngineError::NoUpcaster`] naming the type tag, the version, the shard and the
    /// offset. `Some(Err(_))` fails it with [`EngineError::Undecodable`]. Upcasting must
    /// be deterministic, like `apply`: replays must rebuild the same state.
    fn upcast_event(payload: &Payload) -> Option<Result<Self::Event, JournalError>> {
        let _ = payload;
        None
    }

    /// Reads a command stored with an older `COMMAND_VERSION` as the current `Command`
    /// (messages queued before a deploy). Same contract as [`Entity::upcast_event`];
    /// without an upcaster the message gets a failure reply naming the problem.
    fn upcast_command(payload: &Payload) -> Option<Result<Self::Command, JournalError>> {
        let _ = payload;
        None
    }
}

/// What handling a command produced: events (applied and journaled), and the reply.
///
/// ```
/// # use entlog_engine::{Context, Entity, Outcome, Rejection};
/// # use std::collections::BTreeSet;
/// # struct Tags;
/// # impl Entity for Tags {
/// #     const TYPE: &'static str = "tags";
/// #     type Command = String;
/// #     type Event = String;
/// #     type Reply = usize;
/// #     type State = BTreeSet<String>;
/// #     async fn handle(&self, _: &BTreeSet<String>, _: String, _: &mut Context)
/// #         -> Result<Outcome<Self>, Rejection> { unimplemented!() }
/// #     fn apply(tags: &mut BTreeSet<String>, tag: &String) { tags.insert(tag.clone()); }
/// # }
/// let tags: BTreeSet<String> = ["red".to_owned()].into();
/// // The reply from the state after the events: adding a tag that is there changes nothing.
/// let again = Outcome::<Tags>::applied(&tags, vec!["red".into()], |after| after.len());
/// assert_eq!(again.reply, 1);
/// let new = Outcome::<Tags>::applied(&tags, vec!["blue".into()], |after| after.len());
/// assert_eq!((new.events.len(), new.reply), (1, 2));
/// // A query: a reply, no events.
/// assert!(Outcome::<Tags>::reply(tags.len()).events.is_empty());
/// ```
pub struct Outcome<E: Entity + ?Sized> {
    /// Events, journaled in order at the entity's next seqs.
    pub events: Vec<E::Event>,
    /// The reply, stored so a repeated send gets the same answer.
    pub reply: E::Reply,
}

impl<E: Entity + ?Sized> Outcome<E> {
    /// A reply without events (a query).
    pub fn reply(reply: E::Reply) -> Self {
        Outcome {
            events: Vec::new(),
            reply,
        }
    }

    /// Events and a reply.
    pub fn new(events: Vec<E::Event>, reply: E::Reply) -> Self {
        Outcome { events, reply }
    }

    /// Events and a reply computed from the state *after* them: `reply` gets a copy of
    /// `state` with the events applied (as the runner will apply them), so it need not
    /// repeat `apply`'s logic (`items.len() + 1` is wrong when the item was there).
    pub fn applied(
        state: &E::State,
        events: Vec<E::Event>,
        reply: impl FnOnce(&E::State) -> E::Reply,
    ) -> Self
    where
        E::State: Clone,
    {
        let mut after = state.clone();
        for e in &events {
            E::apply(&mut after, e);
        }
        Outcome {
            reply: reply(&after),
            events,
        }
    }
}

/// The handler said no: stored as the reply, with no events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Rejection {
    /// Why, for the asker.
    pub reason: String,
}

impl Rejection {
    /// A rejection with a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
        }
    }
}

/// What a handler may do besides deciding events: send messages to other entities, now
/// or later (durable timers).
///
/// Sent messages are journaled in the same transaction as the handler's events (a
/// built-in outbox): they exist exactly when the events do. A handler that is rejected,
/// panics on every attempt, or whose batch fails to commit sends nothing, timers included.
///
/// ```
/// # use entlog_engine::{Context, Entity, Outcome, Rejection};
/// # use serde::{Deserialize, Serialize};
/// # use std::time::Duration;
/// # struct Order;
/// # struct Shipping;
/// # #[derive(Serialize, Deserialize)] enum ShippingCmd { Ship { order: String } }
/// # impl Entity for Shipping {
/// #     const TYPE: &'static str = "shipping";
/// #     type Command = ShippingCmd; type Event = (); type Reply = (); type State = ();
/// #     async fn handle(&self, _: &(), _: ShippingCmd, _: &mut Context)
/// #         -> Result<Outcome<Self>, Rejection> { Ok(Outcome::reply(())) }
/// #     fn apply(_: &mut (), _: &()) {}
/// # }
/// #[derive(Serialize, Deserialize)]
/// enum OrderCmd { Pay, Expire }
///
/// #[derive(Serialize, Deserialize)]
/// enum OrderEvent { Paid, Expired }
///
/// impl Entity for Order {
///     const TYPE: &'static str = "order";
///     type Command = OrderCmd;
///     type Event = OrderEvent;
///     type Reply = ();
///     type State = bool; // paid
///
///     async fn handle(&self, paid: &bool, cmd: OrderCmd, ctx: &mut Context)
///         -> Result<Outcome<Self>, Rejection> {
///         match cmd {
///             OrderCmd::Pay => {
///                 // Journaled with the event, in one transaction: shipped exactly when paid.
///                 let order = ctx.entity_id().to_owned();
///                 ctx.send::<Shipping>("warehouse-1", &ShippingCmd::Ship { order });
///                 Ok(Outcome::new(vec![OrderEvent::Paid], ()))
///             }
///             OrderCmd::Expire if *paid => Ok(Outcome::reply(())),
///             OrderCmd::Expire => Ok(Outcome::new(vec![OrderEvent::Expired], ())),
///         }
///     }
///
///     fn apply(paid: &mut bool, event: &OrderEvent) {
///         *paid |= matches!(event, OrderEvent::Paid);
///     }
/// }
///
/// // A durable timer: the order expires in 30 minutes unless paid by then.
/// # fn created(ctx: &mut Context) {
/// let id = ctx.entity_id().to_owned();
/// ctx.schedule::<Order>(Duration::from_secs(30 * 60), &id, &OrderCmd::Expire);
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Context {
    pub(crate) entity: Option<EntityKey>,
    pub(crate) outgoing: Vec<NewMessage>,
    pub(crate) error: Option<EngineError>,
    /// The journal's clock when the message was handed to the handler.
    pub(crate) now: Timestamp,
    /// The headers the message was sent with; carried on by what the handler sends.
    pub(crate) headers: Headers,
    /// (type, shard group) of every type the handler sent to, routed before commit.
    pub(crate) groups: Vec<(&'static str, &'static str)>,
}

impl Context {
    /// The headers the message was sent with (a tenant, a trace id). Every message the
    /// handler sends (`send`, `send_at`, `schedule`) carries them on.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// One header of the message, if it was sent with it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The entity handling the message.
    pub fn entity_id(&self) -> &str {
        self.entity.as_ref().map_or("", |e| e.entity_id())
    }

    /// The journal's clock when the message was handed to the handler: the time its
    /// timers count from, the same on every member (PostgreSQL's clock in a cluster).
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Sends `command` to entity `id` of type `T` when this message's outcome commits.
    pub fn send<T: Entity>(&mut self, id: &str, command: &T::Command) {
        self.send_at::<T>(id, command, None);
    }

    /// Sends `command` to be delivered at `at` (a durable timer), journaled with this
    /// message's outcome; returns the sent message's id.
    pub fn send_at<T: Entity>(
        &mut self,
        id: &str,
        command: &T::Command,
        at: Option<Timestamp>,
    ) -> Uuid {
        let message_id = Uuid::now_v7();
        #[allow(unused_mut)] // written only with OpenTelemetry
        let mut headers = self.headers.clone();
        // The handler's span (or one it opened) becomes the sent message's parent.
        #[cfg(feature = "opentelemetry")]
        crate::otel::carry(&tracing::Span::current(), &mut headers);
        let message = EntityKey::new(T::TYPE, id)
            .and_then(|key| {
                Ok(NewMessage {
                    entity: key,
                    message_id,
                    payload: encode_command::<T>(command)?,
                    deliver_at: at,
                    headers,
                })
            })
            .map_err(EngineError::from);
        if !self.groups.contains(&(T::TYPE, T::SHARD_GROUP)) {
            self.groups.push((T::TYPE, T::SHARD_GROUP));
        }
        match message {
            Ok(m) => self.outgoing.push(m),
            Err(e) => self.error = self.error.take().or(Some(e)),
        }
        message_id
    }

    /// A durable timer: sends `command` to entity `id` of type `T` (this entity too) to be
    /// delivered `after` from now. It is journaled with this message's outcome, survives
    /// restarts and failover, and is delivered once, not before its time. Returns the
    /// timer's message id, with which a client can cancel it
    /// ([`EntityRef::cancel`](crate::EntityRef::cancel)).
    ///
    /// To send the timer to this entity, copy its id first (`let me =
    /// ctx.entity_id().to_owned();`): `ctx` is borrowed mutably by the call.
    pub fn schedule<T: Entity>(&mut self, after: Duration, id: &str, command: &T::Command) -> Uuid {
        self.send_at::<T>(id, command, Some(self.now.after(after)))
    }
}

/// The payload of an outgoing command, for code that builds messages itself.
pub fn command_payload<E: Entity>(command: &E::Command) -> Result<Payload, EngineError> {
    Ok(encode_command::<E>(command)?)
}

/// A command as stored: tagged `<type>.command`, at `COMMAND_VERSION`. It lives with the
/// trait (not in `codec`, which decodes) so that this module needs nothing of `codec`.
pub(crate) fn encode_command<E: Entity>(
    command: &E::Command,
) -> Result<Payload, entlog_journal::JournalError> {
    Payload::encode(&format!("{}.command", E::TYPE), E::COMMAND_VERSION, command)
}
