//! The owner index against a model: random interleavings of creates, updates, touches,
//! deletes, time passing, rotations, end-all, per-owner limits, restarts (a real append-only
//! file in a temporary directory, replayed) and rewrites. After every step, each owner's
//! `sessions_of` must be exactly the model's live sessions of that owner (keys, creation and
//! last-access times, deadlines), and every key must be live exactly when the model says.
//!
//! Time is tokio's paused clock, so deadlines in the store and the model agree to the
//! millisecond.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use sessiond::aof::record::{decode_file_header, Format, FILE_HEADER_LEN};
use sessiond::aof::rewrite::{finish, no_hook, write_snapshot};
use sessiond::aof::{Aof, AofSettings, FsyncPolicy, FILE_NAME};
use sessiond::clock::Clock;
use sessiond::store::{
    Expiry, LimitPolicy, OwnerLimit, RotateOutcome, SessionInfo, SessionOptions, SessionSetOutcome,
};
use sessiond::Store;
use sessiond_proto::command::{GetReply, SetMode, SetOutcome};

const KEYS: usize = 6;
const OWNERS: usize = 3;
/// The model's time starts here (Unix ms).
const EPOCH: u64 = 1_800_000_000_000;

fn key(i: usize) -> Vec<u8> {
    format!("session:{i}").into_bytes()
}

fn owner(i: usize) -> Vec<u8> {
    format!("user:{i}").into_bytes()
}

#[derive(Debug, Clone)]
enum Op {
    /// `set_session` (or a plain SET without owner or deadline).
    Set {
        key: usize,
        mode: u8,
        ttl_s: u64,
        owner: Option<usize>,
        absolute_s: Option<u64>,
        limit: Option<(u32, bool)>,
    },
    /// GET with touch (`get`) or TOUCH.
    Touch {
        key: usize,
        ttl_s: u64,
        get: bool,
    },
    Delete {
        key: usize,
    },
    Advance {
        ms: u64,
    },
    Rotate {
        old: usize,
        new: usize,
        bind: Option<usize>,
        limit: Option<(u32, bool)>,
    },
    EndAll {
        owner: usize,
        except: Option<usize>,
    },
    Restart,
    Rewrite,
}

fn limit() -> impl Strategy<Value = Option<(u32, bool)>> {
    prop::option::weighted(0.4, (1u32..=3, any::<bool>()))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0..KEYS,
            0u8..3,
            1u64..6,
            prop::option::weighted(0.8, 0..OWNERS),
            prop::option::weighted(0.3, 1u64..8),
            limit()
        )
            .prop_map(|(key, mode, ttl_s, owner, absolute_s, limit)| Op::Set {
                key,
                mode,
                ttl_s,
                owner,
                absolute_s,
                limit
            }),
        3 => (0..KEYS, 1u64..6, any::<bool>()).prop_map(|(key, ttl_s, get)| Op::Touch { key, ttl_s, get }),
        1 => (0..KEYS).prop_map(|key| Op::Delete { key }),
        3 => (0u64..3_000).prop_map(|ms| Op::Advance { ms }),
        2 => (0..KEYS, 0..KEYS, prop::option::weighted(0.5, 0..OWNERS), limit())
            .prop_map(|(old, new, bind, limit)| Op::Rotate { old, new, bind, limit }),
        1 => (0..OWNERS, prop::option::of(0..KEYS)).prop_map(|(owner, except)| Op::EndAll { owner, except }),
        1 => Just(Op::Restart),
        1 => Just(Op::Rewrite),
    ]
}

/// One session as the model holds it.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    expires_at_ms: u64,
    owner: Option<usize>,
    absolute: Option<u64>,
    created_ms: u64,
    last_access_ms: u64,
}

impl Session {
    /// Whether the store keeps session fields for it (an owner or an absolute deadline).
    fn is_session(&self) -> bool {
        self.owner.is_some() || self.absolute.is_some()
    }
}

fn clamp(deadline: u64, absolute: Option<u64>) -> u64 {
    absolute.map_or(deadline, |a| deadline.min(a))
}

#[derive(Debug, Default)]
struct Model {
    sessions: BTreeMap<usize, Session>,
}

impl Model {
    fn live(&self, key: usize, now: u64) -> Option<&Session> {
        self.sessions.get(&key).filter(|s| s.expires_at_ms > now)
    }

    fn live_of(&self, owner: usize, now: u64) -> Vec<(usize, Session)> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.expires_at_ms > now && s.owner == Some(owner))
            .map(|(k, s)| (*k, s.clone()))
            .collect()
    }

    fn over_limit(&self, owner: usize, now: u64, except: usize, max: u32) -> bool {
        self.live_of(owner, now)
            .iter()
            .filter(|(k, _)| *k != except)
            .count()
            >= max as usize
    }

    /// Ends the least recently used sessions of `owner` but `keep`, down to `max - 1`.
    fn end_least_recent(&mut self, owner: usize, now: u64, keep: usize, max: u32) -> usize {
        let mut others: Vec<_> = self
            .live_of(owner, now)
            .into_iter()
            .filter(|(k, _)| *k != keep)
            .collect();
        let allowed = max as usize - 1;
        if others.len() <= allowed {
            return 0;
        }
        others.sort_by_key(|(k, s)| (s.last_access_ms, s.created_ms, key(*k)));
        let excess = others.len() - allowed;
        for (k, _) in &others[..excess] {
            self.sessions.remove(k);
        }
        excess
    }
}

fn policy(lru: bool) -> LimitPolicy {
    if lru {
        LimitPolicy::EndLeastRecentlyUsed
    } else {
        LimitPolicy::Refuse
    }
}

/// The store, its AOF and the directory they live in.
struct Harness {
    dir: tempfile::TempDir,
    store: Store,
    aof: Aof,
}

fn settings(dir: &Path) -> AofSettings {
    AofSettings {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::No,
        rewrite_min_bytes: u64::MAX,
        rewrite_growth_percent: 100,
    }
}

impl Harness {
    fn open(dir: tempfile::TempDir, now: u64) -> Harness {
        let (store, aof) = Aof::open_and_load(
            settings(dir.path()),
            Clock::following_tokio_from(now),
            false,
        )
        .expect("the file loads");
        Harness { dir, store, aof }
    }

    fn restart(self, now: u64) -> Harness {
        self.aof.close();
        drop(self.store);
        Harness::open(self.dir, now)
    }

    /// Closes the file, replaces it with a snapshot of the store as the writer's rewrite
    /// does, and loads that.
    fn rewrite(self, now: u64) -> Harness {
        self.aof.close();
        let dir = self.dir.path();
        let header = std::fs::read(dir.join(FILE_NAME)).expect("the file");
        let Ok(Format::V2(salt)) = decode_file_header(&header[..FILE_HEADER_LEN]) else {
            panic!("not a version 2 file");
        };
        let (file, len) = write_snapshot(dir, &self.store, salt, &no_hook).expect("snapshot");
        finish(dir, file, len, &[], &no_hook).expect("rename");
        drop(self.store);
        Harness::open(self.dir, now)
    }
}

fn listed(store: &Store, owner: usize) -> BTreeMap<Vec<u8>, (u64, u64, u64, Option<u64>)> {
    store
        .sessions_of(&self::owner(owner))
        .into_iter()
        .map(|s: SessionInfo| {
            (
                s.key.to_vec(),
                (
                    s.created_ms,
                    s.last_access_ms,
                    s.expires_at_ms,
                    s.absolute_deadline_ms,
                ),
            )
        })
        .collect()
}

fn expected(
    model: &Model,
    owner: usize,
    now: u64,
) -> BTreeMap<Vec<u8>, (u64, u64, u64, Option<u64>)> {
    model
        .live_of(owner, now)
        .into_iter()
        .map(|(k, s)| {
            (
                key(k),
                (s.created_ms, s.last_access_ms, s.expires_at_ms, s.absolute),
            )
        })
        .collect()
}

fn apply(h: &Harness, model: &mut Model, op: &Op, now: u64) {
    let store = &h.store;
    match *op {
        Op::Set {
            key: k,
            mode,
            ttl_s,
            owner: o,
            absolute_s,
            limit,
        } => {
            let mode = [SetMode::Upsert, SetMode::CreateOnly, SetMode::UpdateOnly][mode as usize];
            let owner_bytes = o.map(owner);
            let options = SessionOptions {
                owner: owner_bytes.as_deref(),
                absolute_deadline: absolute_s.map(|s| now + s * 1000),
                owner_limit: limit.map(|(max, lru)| OwnerLimit {
                    max,
                    policy: policy(lru),
                }),
            };
            let outcome = store
                .set_session(&key(k), b"v", Expiry::In(ttl_s * 1000), mode, &options)
                .expect("valid options");
            let live = model.live(k, now).cloned();
            // The store checks the owner's limit before the mode.
            if let (Some(o), Some((max, false))) = (o, limit) {
                let bound = live.as_ref().is_some_and(|s| s.owner == Some(o));
                if !bound && model.over_limit(o, now, k, max) {
                    assert_eq!(outcome, SessionSetOutcome::OwnerLimitReached);
                    return;
                }
            }
            match (mode, &live) {
                (SetMode::CreateOnly, Some(_)) => {
                    return assert_eq!(outcome, SessionSetOutcome::Exists)
                }
                (SetMode::UpdateOnly, None) => {
                    return assert_eq!(outcome, SessionSetOutcome::NotFound)
                }
                _ => {}
            }
            let SessionSetOutcome::Stored { ended, .. } = outcome else {
                panic!("expected Stored, got {outcome:?}");
            };
            let deadline = now + ttl_s * 1000;
            let requested = absolute_s.map(|s| now + s * 1000);
            let session = match &live {
                Some(old) => {
                    let absolute = match (old.absolute, requested) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    Session {
                        expires_at_ms: clamp(deadline, absolute),
                        owner: o.or(old.owner),
                        absolute,
                        created_ms: if old.is_session() {
                            old.created_ms
                        } else {
                            now
                        },
                        last_access_ms: now,
                    }
                }
                None => Session {
                    expires_at_ms: clamp(deadline, requested),
                    owner: o,
                    absolute: requested,
                    created_ms: now,
                    last_access_ms: now,
                },
            };
            model.sessions.insert(k, session);
            let bound = live.as_ref().is_some_and(|s| s.owner == o);
            let mut model_ended = 0;
            if let (Some(o), Some((max, true)), false) = (o, limit, bound) {
                model_ended = model.end_least_recent(o, now, k, max);
            }
            assert_eq!(ended.len(), model_ended, "sessions ended by the limit");
        }
        Op::Touch { key: k, ttl_s, get } => {
            let touched = if get {
                matches!(store.get(&key(k), Some(ttl_s * 1000)), GetReply::Hit(_))
            } else {
                matches!(
                    store.touch(&key(k), ttl_s * 1000),
                    sessiond_proto::command::TouchReply::Touched { .. }
                )
            };
            assert_eq!(touched, model.live(k, now).is_some());
            if let Some(s) = model.sessions.get_mut(&k).filter(|s| s.expires_at_ms > now) {
                s.expires_at_ms = clamp(now + ttl_s * 1000, s.absolute);
                s.last_access_ms = now;
            }
        }
        Op::Delete { key: k } => {
            store.del(&key(k), None);
            model.sessions.remove(&k);
        }
        Op::Advance { .. } | Op::Restart | Op::Rewrite => {}
        Op::Rotate {
            old,
            new,
            bind,
            limit,
        } => {
            let bind_bytes = bind.map(owner);
            let owner_limit = limit.map(|(max, lru)| OwnerLimit {
                max,
                policy: policy(lru),
            });
            let outcome = store
                .rotate(
                    &key(old),
                    &key(new),
                    None,
                    bind_bytes.as_deref().map(|o| (o, owner_limit)),
                )
                .expect("valid options");
            if old == new {
                return assert_eq!(outcome, RotateOutcome::Exists);
            }
            let live = model.live(old, now).cloned();
            let bound = match (bind, &live) {
                (Some(b), Some(s)) => s.owner == Some(b),
                (Some(_), None) => false,
                (None, _) => true,
            };
            if let (Some(b), Some((max, false)), false) = (bind, limit, bound) {
                if model.over_limit(b, now, new, max) {
                    return assert_eq!(outcome, RotateOutcome::OwnerLimitReached);
                }
            }
            let Some(session) = live else {
                return assert_eq!(outcome, RotateOutcome::NotFound);
            };
            if model.live(new, now).is_some() {
                return assert_eq!(outcome, RotateOutcome::Exists);
            }
            let RotateOutcome::Rotated { ended, .. } = outcome else {
                panic!("expected Rotated, got {outcome:?}");
            };
            let moved = match bind {
                Some(b) if !session.is_session() => Session {
                    owner: Some(b),
                    created_ms: now,
                    last_access_ms: now,
                    ..session
                },
                Some(b) => Session {
                    owner: Some(b),
                    ..session
                },
                None => session,
            };
            model.sessions.remove(&old);
            model.sessions.insert(new, moved);
            let mut model_ended = 0;
            if let (Some(b), Some((max, true)), false) = (bind, limit, bound) {
                model_ended = model.end_least_recent(b, now, new, max);
            }
            assert_eq!(ended.len(), model_ended, "sessions ended by the limit");
        }
        Op::EndAll { owner: o, except } => {
            let except_key = except.map(key);
            let ended = store.end_all(&owner(o), except_key.as_deref());
            let doomed: Vec<usize> = model
                .live_of(o, now)
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| Some(*k) != except)
                .collect();
            assert_eq!(ended, doomed.len() as u64);
            for k in doomed {
                model.sessions.remove(&k);
            }
        }
    }
}

fn check(h: &Harness, model: &Model, now: u64, step: usize, op: &Op) {
    for o in 0..OWNERS {
        assert_eq!(
            listed(&h.store, o),
            expected(model, o, now),
            "owner {o} after step {step} ({op:?})"
        );
    }
    for k in 0..KEYS {
        let live = matches!(h.store.get(&key(k), None), GetReply::Hit(_));
        assert_eq!(
            live,
            model.live(k, now).is_some(),
            "key {k} after step {step} ({op:?})"
        );
    }
}

fn run(ops: &[Op]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let _entered = runtime.enter();
    // The model reads the store's clock. It follows tokio's paused clock, except that a
    // restart may raise it by a few milliseconds: the writer thread, outside the runtime,
    // stamps its CLOCK records with real time, and replay never lets time go back.
    let now = |h: &Harness| h.store.clock().now_ms();
    let mut h = Harness::open(tempfile::tempdir().expect("a temporary directory"), EPOCH);
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Advance { ms } => {
                runtime.block_on(tokio::time::advance(Duration::from_millis(*ms)));
            }
            Op::Restart => {
                let at = now(&h);
                h = h.restart(at);
            }
            Op::Rewrite => {
                let at = now(&h);
                h = h.rewrite(at);
            }
            _ => {}
        }
        let at = now(&h);
        apply(&h, &mut model, op, at);
        check(&h, &model, at, step, op);
    }
    // A plain SET (the commands every client already uses) over each key: a live session
    // keeps its owner, an expired one becomes a plain entry.
    for k in 0..KEYS {
        let outcome = h.store.set(&key(k), b"plain", 5_000, SetMode::Upsert);
        assert!(matches!(outcome, SetOutcome::Stored { .. }));
        let t = now(&h);
        match model.sessions.get_mut(&k).filter(|s| s.expires_at_ms > t) {
            Some(s) => {
                s.expires_at_ms = clamp(t + 5_000, s.absolute);
                s.last_access_ms = t;
            }
            None => {
                model.sessions.insert(
                    k,
                    Session {
                        expires_at_ms: t + 5_000,
                        owner: None,
                        absolute: None,
                        created_ms: t,
                        last_access_ms: t,
                    },
                );
            }
        }
    }
    let at = now(&h);
    h = h.restart(at);
    let at = now(&h);
    check(&h, &model, at, ops.len(), &Op::Restart);
    h.aof.close();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    })]

    #[test]
    fn sessions_of_is_exactly_the_live_sessions_of_each_owner(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}

#[test]
fn replay_keeps_a_session_whose_touch_comes_after_a_set_that_has_expired_by_then() {
    // Replayed a second later, the second SET's deadline has passed, and the TOUCH after it
    // brings the session back: the index must still hold it (it once dropped the key as
    // soon as the expired SET replaced the first one).
    use Op::*;
    run(&[
        Set {
            key: 3,
            mode: 0,
            ttl_s: 1,
            owner: Some(2),
            absolute_s: None,
            limit: None,
        },
        Set {
            key: 3,
            mode: 0,
            ttl_s: 1,
            owner: None,
            absolute_s: None,
            limit: None,
        },
        Touch {
            key: 3,
            ttl_s: 2,
            get: false,
        },
        Advance { ms: 1_000 },
        Restart,
    ]);
}

#[test]
fn a_long_interleaving_with_every_operation() {
    // A fixed sequence that reaches every branch, so a failure here needs no shrinking.
    use Op::*;
    let limit = Some((2, true));
    run(&[
        Set {
            key: 0,
            mode: 0,
            ttl_s: 5,
            owner: Some(0),
            absolute_s: Some(7),
            limit: None,
        },
        Set {
            key: 1,
            mode: 0,
            ttl_s: 5,
            owner: Some(0),
            absolute_s: None,
            limit,
        },
        Advance { ms: 1_000 },
        Touch {
            key: 0,
            ttl_s: 5,
            get: true,
        },
        Set {
            key: 2,
            mode: 1,
            ttl_s: 5,
            owner: Some(0),
            absolute_s: None,
            limit,
        },
        Rotate {
            old: 0,
            new: 3,
            bind: None,
            limit: None,
        },
        Restart,
        Set {
            key: 4,
            mode: 0,
            ttl_s: 5,
            owner: Some(1),
            absolute_s: None,
            limit: Some((1, false)),
        },
        Set {
            key: 5,
            mode: 0,
            ttl_s: 5,
            owner: Some(1),
            absolute_s: None,
            limit: Some((1, false)),
        },
        Rotate {
            old: 3,
            new: 5,
            bind: Some(1),
            limit: Some((1, true)),
        },
        Rewrite,
        Advance { ms: 2_500 },
        EndAll {
            owner: 0,
            except: Some(2),
        },
        Advance { ms: 6_000 },
        Restart,
        Rewrite,
    ]);
}
