//! The plain `entlog` command: journals' metadata and raw payloads, without an
//! application's types. An application decodes its payloads by calling
//! `entlog::cli::Cli::new(registry).main()` from a binary of its own.

fn main() -> std::process::ExitCode {
    entlog::cli::Cli::new(entlog::cli::Registry::new()).main()
}
