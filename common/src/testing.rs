//! Test support shared by the services' integration tests (feature `testing`): a
//! fresh PostgreSQL database per test, and a TCP proxy that can cut a dependency
//! (database or object store) the way an outage or a partition would.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The PostgreSQL server tests create their databases on: `TEST_DATABASE_URL`,
/// `DATABASE_URL`, or the local default.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database `medrobotics_test_<uuid>` and returns its URL.
pub async fn create_pg_database() -> String {
    use sqlx::Connection;
    let name = format!("medrobotics_test_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL server (scripts/test provides one)");
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .expect("create database");
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("URL with a database");
    format!("{base}/{name}")
}

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways.
    Forward,
    /// Close every connection at once (server down: refused/reset).
    Refuse,
    /// Accept and never answer (network partition).
    Blackhole,
    /// Forward requests but swallow every reply: the upstream does the work and the
    /// client never learns it (a response lost on the way back).
    DropReplies,
}

/// A TCP proxy whose behaviour the test switches; leaving `Forward` also cuts the
/// connections already open.
pub struct Proxy {
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    mode: watch::Sender<ProxyMode>,
}

impl Proxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, rx) = watch::channel(ProxyMode::Forward);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let current = *rx.borrow_and_update();
                    match current {
                        ProxyMode::Refuse => drop(inbound),
                        ProxyMode::Blackhole => {
                            let _ = rx.wait_for(|m| *m == ProxyMode::Forward).await;
                        }
                        ProxyMode::Forward => {
                            let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = rx.wait_for(|m| *m != ProxyMode::Forward) => {}
                            }
                        }
                        ProxyMode::DropReplies => {
                            let Ok(outbound) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            let (mut up_read, mut up_write) = outbound.into_split();
                            let (mut in_read, _in_write) = inbound.split();
                            let mut swallowed = tokio::io::sink();
                            tokio::select! {
                                _ = tokio::io::copy(&mut in_read, &mut up_write) => {}
                                _ = tokio::io::copy(&mut up_read, &mut swallowed) => {}
                                _ = rx.wait_for(|m| *m != ProxyMode::DropReplies) => {}
                            }
                        }
                    }
                });
            }
        });
        Self { port, mode }
    }

    /// Switches the behaviour.
    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }
}

/// `url` with its `host:port` replaced by the proxy's.
pub fn via_proxy(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme://");
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let userinfo = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    let sep = if path.is_empty() && !rest.contains('/') {
        ""
    } else {
        "/"
    };
    format!("{scheme}://{userinfo}127.0.0.1:{port}{sep}{path}")
}

/// The socket address of the host in `url` (`localhost` is 127.0.0.1).
pub fn socket_addr(url: &str) -> SocketAddr {
    let (scheme, rest) = url.split_once("://").expect("scheme://");
    let authority = rest.split('/').next().expect("authority");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = if scheme.starts_with("postgres") {
        5432
    } else {
        80
    };
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default_port}")
    };
    hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("ip:port")
}

/// Runs each `async fn(Backend)` test once per backend; the calling test crate has
/// `crate::helpers::Backend` with `Postgres` and `Sqlite`.
// `crate::helpers` is the calling test crate's harness, on purpose.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name(crate::helpers::Backend::Postgres).await
            }
            #[tokio::test]
            async fn sqlite() {
                super::$name(crate::helpers::Backend::Sqlite).await
            }
        })*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_through_the_proxy() {
        assert_eq!(
            via_proxy("postgres://postgres@127.0.0.1:5432/db1", 7000),
            "postgres://postgres@127.0.0.1:7000/db1"
        );
        assert_eq!(
            via_proxy("http://127.0.0.1:5000", 7001),
            "http://127.0.0.1:7001"
        );
        assert_eq!(socket_addr("postgres://u:p@localhost/db").port(), 5432);
        assert_eq!(socket_addr("http://127.0.0.1:5000").port(), 5000);
    }
}
