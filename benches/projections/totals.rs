//! The projection under test: `Totals`, per entity the sum of the event values and the
//! number of events, one upsert per batch, timing its decode-and-aggregate and SQL work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use entlog_journal::{AnyTx, Entry};
use entlog_projections::{Projection, ProjectionError};

use crate::ENTITY_TYPE;
use crate::rows::{Agg, Write, tx_write};

/// Per entity: the sum of the event values and the number of events, one upsert per batch.
pub(crate) struct Totals {
    pub(crate) name: String,
    table: String,
    /// Time spent decoding and aggregating, and in the upsert statement (ns, all shards).
    prep_ns: AtomicU64,
    sql_ns: AtomicU64,
    applies: AtomicU64,
    pub(crate) rows: AtomicU64,
}

impl Totals {
    pub(crate) fn new(name: &str) -> Arc<Self> {
        Arc::new(Totals {
            name: name.to_owned(),
            table: name.to_owned(),
            prep_ns: AtomicU64::new(0),
            sql_ns: AtomicU64::new(0),
            applies: AtomicU64::new(0),
            rows: AtomicU64::new(0),
        })
    }

    pub(crate) fn prep(&self) -> Duration {
        Duration::from_nanos(self.prep_ns.load(Ordering::Relaxed))
    }

    pub(crate) fn sql(&self) -> Duration {
        Duration::from_nanos(self.sql_ns.load(Ordering::Relaxed))
    }
}

impl Projection for Totals {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, entity_type: &str) -> bool {
        entity_type == ENTITY_TYPE
    }

    async fn apply(&self, tx: &mut AnyTx, events: &[Entry]) -> Result<(), ProjectionError> {
        let start = Instant::now();
        let mut agg = Agg::with_capacity(events.len());
        for e in events {
            agg.add(e.entity.entity_id(), e.payload.decode::<i64>()?);
        }
        let rows = agg.rows();
        let prepared = Instant::now();
        tx_write(tx, &self.table, &rows, Write::Upsert).await?;
        self.prep_ns
            .fetch_add((prepared - start).as_nanos() as u64, Ordering::Relaxed);
        self.sql_ns
            .fetch_add(prepared.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.applies.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn reset(&self, tx: &mut AnyTx) -> Result<(), ProjectionError> {
        let sql = format!("DELETE FROM {}", self.table);
        tx.execute(entlog_journal::sql(&sql)).await?;
        Ok(())
    }
}
