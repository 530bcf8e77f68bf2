//! One module per command; [`run`] dispatches.

mod dashboard;
pub(crate) mod inspect;
mod migrate;
mod projections;
mod prune;
pub(crate) mod replay;
pub(crate) mod status;
mod tail;

use crate::args::{Command, ProjectionsAction};
use crate::error::CliError;
use crate::open::Location;
use crate::registry::Registry;
use crate::render::Out;

/// What every command gets: the application's types, the journal's location, the output.
pub(crate) struct Ctx {
    pub registry: Registry,
    pub location: Location,
    pub out: Out,
}

pub(crate) async fn run(ctx: &Ctx, command: Command) -> Result<(), CliError> {
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
        } => dashboard::run(ctx, &bind, token, &stuck_after).await,
    }
}
