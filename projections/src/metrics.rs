//! The projections' metrics, named in one place.

/// Gauge: journal entries between a projection's checkpoint and its shard's head.
pub const PROJECTION_LAG: &str = "entlog_projection_lag_entries";
/// Counter: events a projection failed on (each retry counts).
pub const PROJECTION_FAILURES: &str = "entlog_projection_failures_total";

/// Registers the descriptions of the projections' metrics.
pub fn describe() {
    metrics::describe_gauge!(
        PROJECTION_LAG,
        "entries between a projection's checkpoint and the shard head"
    );
    metrics::describe_counter!(PROJECTION_FAILURES, "events a projection failed to apply");
}
