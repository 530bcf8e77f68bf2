//! One module per command (the `dashboard` command is the dashboard's own, in
//! `dashboard/command.rs`); the crate root dispatches.

pub(crate) mod inspect;
pub(crate) mod migrate;
pub(crate) mod projections;
pub(crate) mod prune;
pub(crate) mod replay;
pub(crate) mod status;
pub(crate) mod tail;

use crate::open::Location;
use crate::registry::Registry;
use crate::render::Out;

/// What every command gets: the application's types, the journal's location, the output.
pub(crate) struct Ctx {
    pub registry: Registry,
    pub location: Location,
    pub out: Out,
}
