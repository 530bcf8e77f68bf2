//! entlog's command line, as a library an application's own binary calls with its types.
//!
//! ```no_run
//! # use entlog_cli::{Cli, Registry};
//! # struct Account;
//! # fn with<E>(r: Registry) -> Registry { r }
//! fn main() -> std::process::ExitCode {
//!     // .entity::<Account>() for each entity type, .projection(p) for each projection
//!     let registry = Registry::new();
//!     Cli::new(registry).default_db("app.db").main()
//! }
//! ```
//!
//! The plain `entlog` binary is `Cli::new(Registry::new())`: it shows metadata and raw
//! payload bytes, and refuses what needs the application's code (`replay`, `projections
//! rebuild`) with a clear error.
//!
//! Commands: `migrate`, `status`, `tail`, `inspect TYPE/ID`, `replay TYPE/ID`,
//! `projections [status | rebuild NAME]`, `prune --older-than AGE`, `dashboard` (a web
//! page of the cluster, also served by an application with [`Dashboard`]); `entlog
//! --help` lists them with examples.
#![warn(missing_docs)]

mod args;
mod commands;
pub mod dashboard;
mod error;
mod open;
mod registry;
mod render;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use args::{Command, ProjectionsAction};

pub use dashboard::Dashboard;
pub use error::CliError;
pub use registry::Registry;

/// The CLI with an application's registry and defaults.
pub struct Cli {
    registry: Registry,
    default_db: Option<String>,
}

impl Cli {
    /// A CLI that decodes the registry's types.
    pub fn new(registry: Registry) -> Self {
        Cli {
            registry,
            default_db: None,
        }
    }

    /// The journal used when neither `--db` nor `ENTLOG_DB` is given.
    pub fn default_db(mut self, db: impl Into<String>) -> Self {
        self.default_db = Some(db.into());
        self
    }

    /// Parses the process's arguments, runs the command on a new tokio runtime, prints
    /// any error, and returns the exit status (0 ok, 1 failed, 2 bad arguments).
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// [`Cli::main`] with explicit arguments (the first is the program name).
    pub fn main_from(
        self,
        args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    ) -> ExitCode {
        let parsed = match args::Cli::try_parse_from(args) {
            Ok(p) => p,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
            }
        };
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let json = parsed.json;
        match runtime.block_on(self.run(parsed)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                ExitCode::SUCCESS
            }
            // With --json, the error is JSON too (on stderr), for the script reading it.
            Err(e) if json => {
                eprintln!("{}", serde_json::json!({ "error": e.to_string() }));
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Runs parsed arguments.
    async fn run(self, cli: args::Cli) -> Result<(), CliError> {
        let db = cli.db.or(self.default_db).ok_or(CliError::NoDatabase)?;
        let location = open::Location::parse(&db, &cli.schema)?;
        let out = render::Out::new(cli.json);
        let ctx = commands::Ctx {
            registry: self.registry,
            location,
            out,
        };
        dispatch(&ctx, cli.command).await
    }
}

/// Runs one command.
async fn dispatch(ctx: &commands::Ctx, command: Command) -> Result<(), CliError> {
    use commands::{inspect, migrate, projections, prune, replay, status, tail};
    match command {
        Command::Migrate { shards } => migrate::run(ctx, shards).await,
        Command::Status {
            poison_limit,
            stuck_after,
        } => status::run(ctx, poison_limit, &stuck_after).await,
        Command::Tail(args) => tail::run(ctx, args).await,
        Command::Inspect {
            entity,
            before,
            limit,
        } => inspect::run(ctx, &entity, inspect::Window { before, limit }).await,
        Command::Replay(args) => replay::run(ctx, args).await,
        Command::Projections { action } => match action {
            None | Some(ProjectionsAction::Status) => projections::status(ctx).await,
            Some(ProjectionsAction::Rebuild { name, batch }) => {
                projections::rebuild(ctx, &name, batch).await
            }
        },
        Command::Prune { older_than } => prune::run(ctx, &older_than).await,
        Command::Dashboard {
            bind,
            token,
            stuck_after,
        } => dashboard::command::run(ctx, &bind, token, &stuck_after).await,
    }
}
