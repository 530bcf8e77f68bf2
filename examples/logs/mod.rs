//! The examples' logs: entlog's warnings and errors on stderr by default (a lost lock
//! session, a retrying shard, a stopped projection); `RUST_LOG=info` or
//! `RUST_LOG=entlog_engine=debug` shows more. An application installs the same.

/// Installs a `tracing` subscriber that prints to stderr, filtered by `RUST_LOG`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
