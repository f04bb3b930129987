//! Waking the workers the moment work exists. In one process a [`Notify`]; between
//! instances on one PostgreSQL store, `NOTIFY lethe_work` and a connection that listens
//! for it. Polling stays, slowly, for what nobody announces (a retry coming due, a lease
//! running out).

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::Notify;

use super::{Backend, Store};

/// The PostgreSQL channel work is announced on.
pub const CHANNEL: &str = "lethe_work";

impl Store {
    /// Tells the other instances on this store that work exists (PostgreSQL; on SQLite one
    /// process serves, and its own [`Notify`] is enough).
    pub async fn announce_work(&self) {
        if self.backend == Backend::Postgres
            && let Err(e) = sqlx::query("NOTIFY lethe_work").execute(&self.pool).await
        {
            tracing::warn!(error = %e, "announcing work to the other instances");
        }
    }

    /// Wakes `wake` each time another instance announces work (PostgreSQL), reconnecting
    /// after a lost connection; None on SQLite.
    pub fn listen_for_work(&self, wake: Arc<Notify>) -> Option<tokio::task::JoinHandle<()>> {
        let url = self.listen_url.clone()?;
        Some(tokio::spawn(async move {
            loop {
                match listen(url.expose_secret(), &wake).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other instances' work; again in 5 s")
                    }
                }
                // Whatever was announced meanwhile is looked for at once.
                wake.notify_one();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }))
    }
}

async fn listen(url: &str, wake: &Notify) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    loop {
        listener.recv().await?;
        wake.notify_one();
    }
}
