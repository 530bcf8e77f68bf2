//! Client-side group commit: concurrent sends are appended together.
//!
//! Each send goes through a channel to a few appender tasks; a task takes everything
//! waiting (up to `append_batch`) and appends it in one transaction. A lone send is
//! appended at once, so sequential latency does not suffer; under load, one commit
//! carries many messages.

use std::sync::Arc;

use entlog_journal::{AnyJournal, AppendOutcome, Journal, JournalError, NewMessage};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::EngineError;

type Request = (
    NewMessage,
    oneshot::Sender<Result<AppendOutcome, JournalError>>,
);

#[derive(Debug, Clone)]
pub(crate) struct Appender {
    tx: mpsc::Sender<Request>,
}

impl Appender {
    /// Starts the appender tasks; they end when `shutdown` turns true.
    pub(crate) fn start(
        journal: AnyJournal,
        max_batch: usize,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let n = journal.parallel_writers();
        let (tx, rx) = mpsc::channel::<Request>(max_batch.max(1) * n);
        let rx = Arc::new(Mutex::new(rx));
        let tasks = (0..n)
            .map(|_| {
                tokio::spawn(run(
                    journal.clone(),
                    rx.clone(),
                    max_batch.max(1),
                    shutdown.clone(),
                ))
            })
            .collect();
        (Appender { tx }, tasks)
    }

    pub(crate) async fn append(&self, message: NewMessage) -> Result<AppendOutcome, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((message, tx))
            .await
            .map_err(|_| EngineError::ShutDown)?;
        Ok(rx.await.map_err(|_| EngineError::ShutDown)??)
    }
}

async fn run(
    journal: AnyJournal,
    rx: Arc<Mutex<mpsc::Receiver<Request>>>,
    max: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = tokio::select! {
                rx = rx.lock() => rx,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let first = tokio::select! {
                first = rx.recv() => first,
                _ = shutdown.wait_for(|s| *s) => None,
            };
            let Some(first) = first else { return };
            batch.push(first);
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        let (messages, senders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match journal.append(messages.clone()).await {
            Ok(outcomes) => {
                for (tx, o) in senders.into_iter().zip(outcomes) {
                    let _ = tx.send(Ok(o));
                }
            }
            Err(e) if senders.len() > 1 => {
                // One bad message must not fail its neighbours: append one by one.
                tracing::debug!(error = %e, "batched append failed; appending singly");
                for (m, tx) in messages.into_iter().zip(senders) {
                    let r = journal.append(vec![m]).await.and_then(|mut o| {
                        o.pop()
                            .ok_or_else(|| JournalError::Config("empty append result".into()))
                    });
                    let _ = tx.send(r);
                }
            }
            Err(e) => {
                if let Some(tx) = senders.into_iter().next() {
                    let _ = tx.send(Err(e));
                }
            }
        }
    }
}
