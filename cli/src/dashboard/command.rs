//! `dashboard`: serves the web dashboard over the journal until interrupted.

use super::Dashboard;
use crate::commands::Ctx;
use crate::error::CliError;
use crate::open::{self, Location, Need};

pub(crate) async fn run(
    ctx: &Ctx,
    bind: &str,
    token: Option<String>,
    stuck_after: &str,
) -> Result<(), CliError> {
    let stuck_after = crate::commands::status::parse_stuck_after(stuck_after)?;
    let listener =
        tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| CliError::BadArgument {
                what: "--bind",
                value: bind.to_owned(),
                reason: e.to_string(),
            })?;
    let journal = open::existing(&ctx.location, Need::Read).await?;
    let addr = listener.local_addr()?;
    let mut dashboard = Dashboard::new(ctx.registry.clone(), journal.clone())
        .title(title(&ctx.location))
        .stuck_after(stuck_after);
    let query = match token {
        Some(t) => {
            let query = format!("?token={t}");
            dashboard = dashboard.token(t);
            query
        }
        None => String::new(),
    };
    ctx.out
        .line(format_args!("entlog dashboard: http://{addr}/{query}"))?;
    let served = dashboard
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    journal.close().await;
    served
}

/// The journal as the page names it: a SQLite file, or a PostgreSQL server, database and
/// schema (without user or password).
fn title(location: &Location) -> String {
    match location {
        Location::Sqlite(path) => path.display().to_string(),
        Location::Postgres { url, schema } => {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let host = host.split_once('?').map_or(host, |(h, _)| h);
            format!("{host} (schema {schema})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_leave_out_credentials() {
        let pg = Location::Postgres {
            url: "postgres://app:secret@db.local:5432/orders?sslmode=require".into(),
            schema: "entlog".into(),
        };
        assert_eq!(title(&pg), "db.local:5432/orders (schema entlog)");
        assert_eq!(title(&Location::Sqlite("app.db".into())), "app.db");
    }
}
