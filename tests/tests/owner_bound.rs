//! The per-owner bound a deployment gets without configuring one (PROTOCOL.md 6.4,
//! `limits.max_sessions_per_owner`): a finite default, so that listing or ending one owner's
//! sessions is bounded work, and a ceiling on what an operator may configure. Against the
//! real daemon on an ephemeral port.

use bytes::Bytes;
use sessiond_proto::command::{
    GetReply, LimitPolicy, ListSessions, OwnerLimit, SessionList, SessionWriteOutcome, SetMode,
    SetSession,
};
use sessiond_proto::{Opcode, Request};
use sessiond_tests::Daemon;

/// The default of `limits.max_sessions_per_owner`, as config/sessiond.toml states it.
const DEFAULT_LIMIT: u64 = 1000;

fn login(key: String, owner: &[u8], owner_limit: Option<OwnerLimit>) -> Request {
    Request::SetSession(SetSession {
        key: Bytes::from(key),
        value: Bytes::from_static(b"{}"),
        ttl_ms: 3_600_000,
        mode: SetMode::CreateOnly,
        owner: Some(Bytes::copy_from_slice(owner)),
        lifetime_ms: None,
        owner_limit,
    })
}

/// With an empty configuration, one owner gets 1000 live sessions and the 1001st login is
/// refused with `OWNER_LIMIT`, also when the request asks for a higher limit of its own; an
/// update of one of its sessions still passes, and another owner is not affected.
#[tokio::test]
async fn the_default_limit_refuses_the_1001st_session_of_an_owner() {
    let daemon = Daemon::start();
    let mut conn = daemon.connect().await;
    let frames = (0..DEFAULT_LIMIT)
        .map(|i| login(format!("s:{i}"), b"svc", None).to_frame(i as u32))
        .collect();
    for reply in conn.pipeline(frames).await {
        let outcome = SessionWriteOutcome::from_frame(&reply, Opcode::SetSession);
        assert!(
            matches!(outcome, Ok(SessionWriteOutcome::Stored { ended: 0, .. })),
            "{outcome:?}"
        );
    }
    let higher = Some(OwnerLimit {
        max: 5000,
        policy: LimitPolicy::Refuse,
    });
    for limit in [None, higher] {
        let reply = conn.exchange(&login("s:extra".into(), b"svc", limit)).await;
        assert_eq!(
            SessionWriteOutcome::from_frame(&reply, Opcode::SetSession),
            Ok(SessionWriteOutcome::OwnerLimit),
            "the 1001st session with limit {limit:?}"
        );
    }
    let update = Request::SetSession(SetSession {
        mode: SetMode::Upsert,
        ..match login("s:7".into(), b"svc", None) {
            Request::SetSession(s) => s,
            _ => unreachable!("login builds a SET_SESSION"),
        }
    });
    let reply = conn.exchange(&update).await;
    assert!(matches!(
        SessionWriteOutcome::from_frame(&reply, Opcode::SetSession),
        Ok(SessionWriteOutcome::Stored { .. })
    ));
    let reply = conn.exchange(&login("o:1".into(), b"other", None)).await;
    assert!(matches!(
        SessionWriteOutcome::from_frame(&reply, Opcode::SetSession),
        Ok(SessionWriteOutcome::Stored { .. })
    ));

    let request = Request::ListSessions(ListSessions {
        owner: Bytes::from_static(b"svc"),
        max_sessions: 0,
    });
    let listed = SessionList::from_frame(&conn.exchange(&request).await)
        .unwrap_or_else(|e| panic!("LIST_SESSIONS: {e}"));
    assert_eq!(listed.total, DEFAULT_LIMIT);
    assert_eq!(
        conn.get(b"s:extra").await,
        GetReply::Miss,
        "a refused login wrote"
    );
}

/// An operator cannot configure a limit above 100000 (or 0): the daemon refuses to start,
/// naming the setting and its range, instead of running with an owner that makes listings
/// stall the server. The ceiling itself is accepted.
#[tokio::test]
async fn a_limit_above_the_ceiling_is_refused_at_startup() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for bad in ["0", "100001", "4000000000"] {
        let config = format!("[limits]\nmax_sessions_per_owner = {bad}\n");
        let finished = match Daemon::try_start_in(&config, &dir.path().join("data"), &[]) {
            Ok(_) => panic!("started with max_sessions_per_owner = {bad}"),
            Err(finished) => finished,
        };
        assert_eq!(finished.status.code(), Some(1), "{finished:?}");
        assert!(
            finished.stderr.contains("max_sessions_per_owner"),
            "{}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains("between 1 and 100000"),
            "{}",
            finished.stderr
        );
    }
    let daemon = Daemon::start_with_config("[limits]\nmax_sessions_per_owner = 100000\n");
    let mut conn = daemon.connect().await;
    let reply = conn.exchange(&login("k".into(), b"svc", None)).await;
    assert!(matches!(
        SessionWriteOutcome::from_frame(&reply, Opcode::SetSession),
        Ok(SessionWriteOutcome::Stored { .. })
    ));
}
