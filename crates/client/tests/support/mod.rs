//! What the session-layer tests share: a connected client and `Sessions` against a real
//! `sessiond`, and a browser's view of `Set-Cookie` headers.

use std::time::Duration;

use sessiond_client::{Client, Session, SessionConfig, Sessions, SetCookie};
use sessiond_tests::Daemon;

/// A client of `daemon` and the session layer over it with `config`.
pub async fn sessions(daemon: &Daemon, config: SessionConfig) -> (Client, Sessions) {
    let client = Client::builder(daemon.addr().to_string())
        .request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let sessions = Sessions::new(client.clone(), config).unwrap();
    (client, sessions)
}

/// The `Cookie` header a browser would send back for `set_cookie`.
pub fn cookie_header(set_cookie: &SetCookie) -> String {
    set_cookie.as_str().split(';').next().unwrap().to_string()
}

/// The value of attribute `name` of `set_cookie`, if it has one.
pub fn attribute(set_cookie: &SetCookie, name: &str) -> Option<String> {
    set_cookie
        .as_str()
        .split("; ")
        .find_map(|part| part.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// A stored session (`n` = 1) as one request loaded it just before another request saved
/// it (`n` = 2), and the `Cookie` header naming it: a save or a move of the stale copy must
/// be refused.
pub async fn stale_session(sessions: &Sessions) -> (Session, String) {
    let mut session = sessions.load(None).await.unwrap();
    session.insert("n", 1).unwrap();
    let header = cookie_header(&sessions.save(&mut session).await.unwrap().unwrap());
    let stale = sessions.load([header.as_str()]).await.unwrap();
    let mut other = sessions.load([header.as_str()]).await.unwrap();
    other.insert("n", 2).unwrap();
    sessions.save(&mut other).await.unwrap();
    (stale, header)
}
