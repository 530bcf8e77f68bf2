//! The `account` entity: it opens with a deposit, debits a transfer (or rejects it when
//! funds are insufficient) and sends the matching credit through the outbox, and takes
//! every credit. Its state keeps the money `sent` and `received` that the books are
//! checked with.

use entlog::{Context, Entity, Outcome, Rejection};
use serde::{Deserialize, Serialize};

/// A bank account.
pub(crate) struct Account;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Opens the account with its first deposit.
    Open { initial: u64 },
    /// Moves `amount` to account `to`: debits here, credits there.
    Transfer { to: String, amount: u64 },
    /// The receiving half of a transfer, sent by the debited account.
    Credit { from: String, amount: u64 },
    /// Replies with the state.
    Get,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Event {
    Opened { initial: u64 },
    Debited { to: String, amount: u64 },
    Credited { from: String, amount: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AccountState {
    pub(crate) open: bool,
    /// The opening deposit.
    pub(crate) initial: u64,
    /// Always `initial + received - sent`.
    pub(crate) balance: u64,
    /// Money debited by this account's transfers (their credits are in flight or done).
    pub(crate) sent: u64,
    /// Money credited by other accounts' transfers.
    pub(crate) received: u64,
}

impl Entity for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = Event;
    type Reply = AccountState;
    type State = AccountState;

    async fn handle(
        &self,
        state: &AccountState,
        command: Command,
        ctx: &mut Context,
    ) -> Result<Outcome<Self>, Rejection> {
        let events = match command {
            Command::Get => return Ok(Outcome::reply(state.clone())),
            Command::Open { .. } if state.open => return Err(Rejection::new("already open")),
            Command::Open { initial } => vec![Event::Opened { initial }],
            Command::Transfer { .. } if !state.open => return Err(Rejection::new("not open")),
            Command::Transfer { to, .. } if to == ctx.entity_id() => {
                return Err(Rejection::new("a transfer to itself"));
            }
            Command::Transfer { amount, .. } if amount > state.balance => {
                return Err(Rejection::new(format!(
                    "insufficient funds: balance {}, asked {amount}",
                    state.balance
                )));
            }
            Command::Transfer { to, amount } => {
                // Journaled with the debit, in the same transaction: both or neither.
                let from = ctx.entity_id().to_owned();
                ctx.send::<Account>(&to, &Command::Credit { from, amount });
                vec![Event::Debited { to, amount }]
            }
            // The sender's debit is committed: a credit cannot be refused.
            Command::Credit { from, amount } => vec![Event::Credited { from, amount }],
        };
        let mut next = state.clone();
        for e in &events {
            Self::apply(&mut next, e);
        }
        Ok(Outcome::new(events, next))
    }

    fn apply(state: &mut AccountState, event: &Event) {
        match event {
            Event::Opened { initial } => {
                state.open = true;
                state.initial = *initial;
                state.balance += initial;
            }
            Event::Debited { amount, .. } => {
                state.balance -= amount;
                state.sent += amount;
            }
            Event::Credited { amount, .. } => {
                state.balance += amount;
                state.received += amount;
            }
        }
    }
}
