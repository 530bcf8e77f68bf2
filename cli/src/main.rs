//! The plain `entlog` command: journals' metadata and raw payloads, without an
//! application's types. An application decodes its payloads by calling
//! `entlog::cli::Cli::new(registry).main()` (feature `cli`) from a binary of its own.

fn main() -> std::process::ExitCode {
    entlog_cli::Cli::new(entlog_cli::Registry::new()).main()
}
