//! A TCP proxy that can go silent: it stops forwarding in both directions and accepts new
//! connections without answering, yet closes nothing — what a host sees when its peer
//! loses power or a firewall starts dropping packets. Tests and benches put a runner's
//! lock connection behind it to check that a silent runner loses its shards.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A forwarding proxy on 127.0.0.1 with a switch that black-holes every connection.
#[derive(Debug)]
pub struct BlackHoleProxy {
    addr: SocketAddr,
    silent: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl BlackHoleProxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards every connection to
    /// `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (silent, _) = watch::channel(false);
        let silent = Arc::new(silent);
        let upstream = upstream.to_owned();
        let switch = silent.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let silent = switch.subscribe();
                tokio::spawn(async move {
                    let mut gate = silent.clone();
                    // A silent proxy accepts but never connects: the client waits.
                    if gate.wait_for(|s| !s).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pump(cr, sw, silent.clone()));
                    let down = tokio::spawn(pump(sr, cw, silent));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Ok(BlackHoleProxy {
            addr,
            silent,
            accept,
        })
    }

    /// A proxy in front of the server of a `postgres://` URL, and the URL through it.
    pub async fn for_url(url: &str) -> std::io::Result<(Self, String)> {
        use std::str::FromStr;
        let opts = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let proxy = Self::start(&format!("{}:{}", opts.get_host(), opts.get_port())).await?;
        let through = proxy.url_for(url);
        Ok((proxy, through))
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (a `postgres://` URL) with its host and port replaced by the proxy's.
    fn url_for(&self, url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
        match userinfo {
            Some(u) => format!("{scheme}://{u}@{}{path}", self.addr),
            None => format!("{scheme}://{}{path}", self.addr),
        }
    }

    /// Stops forwarding (`true`) or forwards again (`false`). Bytes read while silent are
    /// held and delivered when forwarding resumes, as TCP would retransmit them.
    pub fn set_silent(&self, silent: bool) {
        self.silent.send_replace(silent);
    }
}

impl Drop for BlackHoleProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to`, holding every chunk while the proxy is silent.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut silent: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // While silent, do not even read: the sender's data sits unacknowledged in its
        // socket, as with a peer that vanished.
        if silent.wait_for(|s| !s).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = silent.wait_for(|s| *s) => continue,
        };
        if silent.wait_for(|s| !s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
