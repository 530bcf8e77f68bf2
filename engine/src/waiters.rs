//! Asks waiting for their replies in this process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use entlog_journal::Payload;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Pending local asks by message id (several asks may wait on one id); a runner of the
/// same cluster resolves them when the message's outcome commits.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<Uuid, Vec<Waiting>>>,
    next: AtomicU64,
}

/// A registered wait: its token and where its reply goes.
type Waiting = (u64, oneshot::Sender<Payload>);

/// One registered wait; `forget` it when done.
pub(crate) struct Ticket {
    pub id: Uuid,
    token: u64,
}

impl Waiters {
    pub(crate) fn register(&self, id: Uuid) -> (Ticket, oneshot::Receiver<Payload>) {
        let (tx, rx) = oneshot::channel();
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.map.lock() {
            m.entry(id).or_default().push((token, tx));
        }
        (Ticket { id, token }, rx)
    }

    pub(crate) fn forget(&self, ticket: &Ticket) {
        if let Ok(mut m) = self.map.lock()
            && let Some(list) = m.get_mut(&ticket.id)
        {
            list.retain(|(t, _)| *t != ticket.token);
            if list.is_empty() {
                m.remove(&ticket.id);
            }
        }
    }

    pub(crate) fn resolve(&self, id: Uuid, reply: Payload) {
        let waiting = self.map.lock().ok().and_then(|mut m| m.remove(&id));
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(reply.clone());
        }
    }
}
