//! The store on its own: every SET mode, versions, expiry (with paused time), the sweep, the
//! mutation seam and the memory limit, plus a property test against a plain `HashMap` model.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use sessiond::clock::Clock;
use sessiond::store::sweep::SweepCursor;
use sessiond::store::{Mutation, MutationSink};
use sessiond::Store;
use sessiond_proto::command::{DelOutcome, Entry, GetReply, SetMode, SetOutcome, TouchReply};
use tokio::time::advance;

const MINUTE: u64 = 60_000;

/// A store whose clock follows tokio's, so that `start_paused` tests control its time.
fn paused_store() -> Store {
    Store::with_parts(Clock::following_tokio(), None)
}

fn stored(outcome: SetOutcome) -> u64 {
    match outcome {
        SetOutcome::Stored { version } => version,
        other => panic!("expected Stored, got {other:?}"),
    }
}

fn hit(reply: GetReply) -> Entry {
    match reply {
        GetReply::Hit(entry) => entry,
        GetReply::Miss => panic!("expected a hit"),
    }
}

#[tokio::test(start_paused = true)]
async fn upsert_then_get_returns_value_version_and_ttl() {
    let store = paused_store();
    let v = stored(store.set(b"k", b"hello", MINUTE, SetMode::Upsert));
    assert!(v >= 1);
    advance(Duration::from_millis(1500)).await;
    let entry = hit(store.get(b"k", None));
    assert_eq!(entry.value, Bytes::from_static(b"hello"));
    assert_eq!(entry.version, v);
    assert_eq!(entry.ttl_ms, MINUTE - 1500);
}

#[tokio::test(start_paused = true)]
async fn every_write_gets_a_larger_version_across_keys_and_recreation() {
    let store = paused_store();
    let a1 = stored(store.set(b"a", b"1", MINUTE, SetMode::Upsert));
    let b1 = stored(store.set(b"b", b"1", MINUTE, SetMode::Upsert));
    let a2 = stored(store.set(b"a", b"2", MINUTE, SetMode::Upsert));
    assert!(a1 < b1 && b1 < a2);
    assert_eq!(store.del(b"a", None), DelOutcome::Deleted);
    let a3 = stored(store.set(b"a", b"3", MINUTE, SetMode::CreateOnly));
    assert!(a3 > a2, "a recreated key must not reuse an old version");
    assert_eq!(store.last_version(), a3);
}

#[tokio::test(start_paused = true)]
async fn create_only_refuses_a_live_key_but_not_an_expired_one() {
    let store = paused_store();
    stored(store.set(b"k", b"1", 100, SetMode::CreateOnly));
    assert_eq!(
        store.set(b"k", b"2", 100, SetMode::CreateOnly),
        SetOutcome::Exists
    );
    assert_eq!(hit(store.get(b"k", None)).value, Bytes::from_static(b"1"));
    advance(Duration::from_millis(100)).await;
    stored(store.set(b"k", b"3", 100, SetMode::CreateOnly));
    assert_eq!(hit(store.get(b"k", None)).value, Bytes::from_static(b"3"));
}

#[tokio::test(start_paused = true)]
async fn update_only_never_resurrects() {
    let store = paused_store();
    assert_eq!(
        store.set(b"k", b"1", MINUTE, SetMode::UpdateOnly),
        SetOutcome::NotFound
    );
    assert_eq!(store.get(b"k", None), GetReply::Miss);
    stored(store.set(b"k", b"1", 100, SetMode::Upsert));
    stored(store.set(b"k", b"2", 100, SetMode::UpdateOnly));
    advance(Duration::from_millis(100)).await;
    assert_eq!(
        store.set(b"k", b"3", MINUTE, SetMode::UpdateOnly),
        SetOutcome::NotFound
    );
    assert_eq!(store.get(b"k", None), GetReply::Miss);
}

#[tokio::test(start_paused = true)]
async fn if_version_detects_a_concurrent_update() {
    let store = paused_store();
    let v1 = stored(store.set(b"k", b"base", MINUTE, SetMode::Upsert));
    // Two requests both loaded v1; the first to save wins.
    let v2 = stored(store.set(b"k", b"first", MINUTE, SetMode::IfVersion(v1)));
    assert_eq!(
        store.set(b"k", b"second", MINUTE, SetMode::IfVersion(v1)),
        SetOutcome::VersionMismatch { current: v2 }
    );
    assert_eq!(
        hit(store.get(b"k", None)).value,
        Bytes::from_static(b"first")
    );
    assert_eq!(
        store.set(b"gone", b"x", MINUTE, SetMode::IfVersion(v1)),
        SetOutcome::NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn touch_and_get_with_touch_slide_the_deadline_and_keep_the_version() {
    let store = paused_store();
    let v = stored(store.set(b"k", b"x", 1000, SetMode::Upsert));
    advance(Duration::from_millis(900)).await;
    assert_eq!(store.touch(b"k", 1000), TouchReply::Touched { version: v });
    advance(Duration::from_millis(900)).await;
    let entry = hit(store.get(b"k", Some(1000)));
    assert_eq!((entry.version, entry.ttl_ms), (v, 1000));
    advance(Duration::from_millis(999)).await;
    assert_eq!(hit(store.get(b"k", None)).ttl_ms, 1);
    // Still writable with the version read through the touch.
    stored(store.set(b"k", b"y", 1000, SetMode::IfVersion(v)));
    assert_eq!(store.touch(b"missing", 1000), TouchReply::NotFound);
}

#[tokio::test(start_paused = true)]
async fn an_expired_entry_is_never_returned_and_is_reclaimed_on_access() {
    let store = paused_store();
    stored(store.set(b"k", b"x", 50, SetMode::Upsert));
    advance(Duration::from_millis(49)).await;
    hit(store.get(b"k", None));
    advance(Duration::from_millis(1)).await;
    assert_eq!(store.get(b"k", None), GetReply::Miss);
    assert_eq!(store.get(b"k", Some(MINUTE)), GetReply::Miss);
    assert_eq!(store.touch(b"k", MINUTE), TouchReply::NotFound);
    assert_eq!(store.del(b"k", None), DelOutcome::NotFound);
    assert_eq!(store.len(), 0);
    assert_eq!(store.expired_reclaimed(), 1);
}

#[tokio::test(start_paused = true)]
async fn del_with_if_version() {
    let store = paused_store();
    let v = stored(store.set(b"k", b"x", MINUTE, SetMode::Upsert));
    assert_eq!(
        store.del(b"k", Some(v + 1)),
        DelOutcome::VersionMismatch { current: v }
    );
    hit(store.get(b"k", None));
    assert_eq!(store.del(b"k", Some(v)), DelOutcome::Deleted);
    assert_eq!(store.del(b"k", Some(v)), DelOutcome::NotFound);
}

#[tokio::test(start_paused = true)]
async fn the_sweep_reclaims_expired_entries_and_keeps_live_ones() {
    let store = paused_store();
    for i in 0..10_000u32 {
        let ttl = if i % 2 == 0 { 100 } else { MINUTE };
        stored(store.set(&i.to_be_bytes(), &[0u8; 100], ttl, SetMode::Upsert));
    }
    let before = store.memory_estimate();
    advance(Duration::from_millis(100)).await;
    let mut cursor = SweepCursor::default();
    // An unbounded budget still stops after one full cycle.
    let report = store.sweep(&mut cursor, Duration::from_secs(3600));
    assert!(report.completed_cycle);
    assert_eq!(report.reclaimed, 5_000);
    assert_eq!(store.len(), 5_000);
    assert_eq!(store.expired_reclaimed(), 5_000);
    assert!(store.memory_estimate() < before);
    for i in (1..10_000u32).step_by(2) {
        hit(store.get(&i.to_be_bytes(), None));
    }
}

#[tokio::test(start_paused = true)]
async fn a_zero_budget_sweep_does_one_bounded_step_and_resumes() {
    let store = paused_store();
    for i in 0..50_000u32 {
        stored(store.set(&i.to_be_bytes(), b"v", 10, SetMode::Upsert));
    }
    advance(Duration::from_millis(10)).await;
    let mut cursor = SweepCursor::default();
    let first = store.sweep(&mut cursor, Duration::ZERO);
    assert!(!first.completed_cycle);
    assert!(first.buckets_scanned <= sessiond::store::sweep::BUCKETS_PER_LOCK as u64);
    let mut total = first.reclaimed;
    let mut steps = 1;
    loop {
        let report = store.sweep(&mut cursor, Duration::ZERO);
        total += report.reclaimed;
        steps += 1;
        if report.completed_cycle {
            break;
        }
        assert!(steps < 100_000, "the sweep never completed a cycle");
    }
    assert_eq!(total, 50_000);
    assert!(store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_background_sweeper_runs_until_its_guard_is_dropped() {
    let store = paused_store();
    stored(store.set(b"k", b"x", 10, SetMode::Upsert));
    // A generous budget: the sweeper yields after every step, so it covers the map over
    // many polls; the test yields until it has.
    let guard = store.start_sweeper(Duration::from_millis(20), Duration::from_secs(10));
    advance(Duration::from_millis(100)).await;
    for _ in 0..100_000 {
        if store.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(store.is_empty(), "the sweeper did not reclaim the entry");
    drop(guard);
    stored(store.set(b"k2", b"x", 10, SetMode::Upsert));
    advance(Duration::from_millis(100)).await;
    for _ in 0..10_000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(store.len(), 1, "a dropped guard must stop the sweeper");
}

/// Records every mutation.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<(Vec<u8>, &'static str, u64)>>,
}

impl MutationSink for Recorder {
    fn record(&self, mutation: Mutation<'_>) {
        let entry = match mutation {
            Mutation::Set { key, version, .. } => (key.to_vec(), "set", version),
            Mutation::Touch { key, expires_at_ms } => (key.to_vec(), "touch", expires_at_ms),
            Mutation::Del { key } => (key.to_vec(), "del", 0),
            Mutation::SessionSet(session) => (session.key.to_vec(), "session", session.version),
            Mutation::SessionTouch {
                key, expires_at_ms, ..
            } => (key.to_vec(), "session touch", expires_at_ms),
            Mutation::Rotate { new, .. } => (new.key.to_vec(), "rotate", new.version),
        };
        self.log.lock().unwrap().push(entry);
    }
}

#[tokio::test(start_paused = true)]
async fn every_mutation_reaches_the_sink_with_absolute_deadlines() {
    let recorder = Arc::new(Recorder::default());
    let store = Store::with_parts(
        Clock::following_tokio_from(1_000_000),
        Some(recorder.clone()),
    );
    let v = stored(store.set(b"k", b"x", 500, SetMode::Upsert));
    assert_eq!(
        store.set(b"k", b"y", 500, SetMode::CreateOnly),
        SetOutcome::Exists
    );
    store.touch(b"k", 2_000);
    store.get(b"k", None);
    store.get(b"k", Some(3_000));
    store.del(b"k", None);
    store.del(b"k", None);
    let log = recorder.log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            (b"k".to_vec(), "set", v),
            (b"k".to_vec(), "touch", 1_002_000),
            (b"k".to_vec(), "touch", 1_003_000),
            (b"k".to_vec(), "del", 0),
        ],
        "refused writes and plain reads are not mutations"
    );
}

#[test]
fn concurrent_writers_reach_the_sink_in_per_key_version_order() {
    let recorder = Arc::new(Recorder::default());
    let store = Store::with_parts(Clock::new(), Some(recorder.clone()));
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..5_000u32 {
                    let key = [b'k', (i % 8) as u8];
                    store.set(&key, &[t], MINUTE, SetMode::Upsert);
                }
            });
        }
    });
    let log = recorder.log.lock().unwrap();
    assert_eq!(log.len(), 20_000);
    let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
    for (key, _, version) in log.iter() {
        let previous = last.insert(key.clone(), *version).unwrap_or(0);
        assert!(
            *version > previous,
            "versions of one key reached the sink out of order"
        );
    }
    // And the store ends with, for each key, the last version the sink saw.
    for (key, version) in last {
        assert_eq!(hit(store.get(&key, None)).version, version);
    }
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Set(u8, u8, u64, u8),
    Get(u8, Option<u64>),
    Touch(u8, u64),
    Del(u8, bool),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    let ttl = 1u64..400;
    prop_oneof![
        (key.clone(), any::<u8>(), ttl.clone(), 0u8..5)
            .prop_map(|(k, v, t, m)| Op::Set(k, v, t, m)),
        (key.clone(), proptest::option::of(ttl.clone())).prop_map(|(k, t)| Op::Get(k, t)),
        (key.clone(), ttl).prop_map(|(k, t)| Op::Touch(k, t)),
        (key, any::<bool>()).prop_map(|(k, c)| Op::Del(k, c)),
        (0u64..300).prop_map(Op::Advance),
    ]
}

/// The model: what each key holds and when it expires, in plain data.
#[derive(Default)]
struct Model {
    now: u64,
    entries: HashMap<u8, (u8, u64, u64)>, // value, deadline, version
}

impl Model {
    fn live(&self, k: u8) -> Option<(u8, u64, u64)> {
        self.entries.get(&k).copied().filter(|e| e.1 > self.now)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_store_behaves_like_a_map_with_deadlines(ops in proptest::collection::vec(op(), 1..120)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = paused_store();
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Set(k, v, ttl, m) => {
                        let live = model.live(k);
                        // Mode 4 means if-version with the right version when there is one.
                        let mode = match (m, live) {
                            (0, _) => SetMode::Upsert,
                            (1, _) => SetMode::CreateOnly,
                            (2, _) => SetMode::UpdateOnly,
                            (3, _) => SetMode::IfVersion(0),
                            (_, Some(e)) => SetMode::IfVersion(e.2),
                            (_, None) => SetMode::IfVersion(1),
                        };
                        let got = store.set(&[k], &[v], ttl, mode);
                        let expected_ok = match (mode, live) {
                            (SetMode::Upsert, _) => true,
                            (SetMode::CreateOnly, live) => live.is_none(),
                            (SetMode::UpdateOnly, live) => live.is_some(),
                            (SetMode::IfVersion(want), Some(e)) => e.2 == want,
                            (SetMode::IfVersion(_), None) => false,
                        };
                        match got {
                            SetOutcome::Stored { version } => {
                                prop_assert!(expected_ok, "{mode:?} stored over {live:?}");
                                model.entries.insert(k, (v, model.now + ttl, version));
                            }
                            SetOutcome::Exists => prop_assert!(live.is_some() && mode == SetMode::CreateOnly),
                            SetOutcome::NotFound => prop_assert!(live.is_none() && !expected_ok),
                            SetOutcome::VersionMismatch { current } => {
                                prop_assert_eq!(Some(current), live.map(|e| e.2));
                            }
                        }
                    }
                    Op::Get(k, touch) => {
                        let got = store.get(&[k], touch);
                        match model.live(k) {
                            Some((v, deadline, version)) => {
                                let deadline = touch.map_or(deadline, |t| model.now + t);
                                model.entries.insert(k, (v, deadline, version));
                                prop_assert_eq!(got, GetReply::Hit(Entry {
                                    value: Bytes::copy_from_slice(&[v]),
                                    version,
                                    ttl_ms: deadline - model.now,
                                }));
                            }
                            None => prop_assert_eq!(got, GetReply::Miss),
                        }
                    }
                    Op::Touch(k, ttl) => {
                        let got = store.touch(&[k], ttl);
                        match model.live(k) {
                            Some((v, _, version)) => {
                                model.entries.insert(k, (v, model.now + ttl, version));
                                prop_assert_eq!(got, TouchReply::Touched { version });
                            }
                            None => prop_assert_eq!(got, TouchReply::NotFound),
                        }
                    }
                    Op::Del(k, conditional) => {
                        let live = model.live(k);
                        let if_version = conditional.then(|| live.map_or(7, |e| e.2));
                        let got = store.del(&[k], if_version);
                        match live {
                            Some(_) => {
                                model.entries.remove(&k);
                                prop_assert_eq!(got, DelOutcome::Deleted);
                            }
                            None => prop_assert_eq!(got, DelOutcome::NotFound),
                        }
                    }
                    Op::Advance(ms) => {
                        advance(Duration::from_millis(ms)).await;
                        model.now += ms;
                        if ms % 3 == 0 {
                            store.sweep(&mut SweepCursor::default(), Duration::from_secs(1));
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn set_with_keeps_or_sets_absolute_deadlines() {
    use sessiond::store::Expiry;
    let store = paused_store();
    let now = store.clock().now_ms();
    stored(store.set_with(b"k", b"1", Expiry::At(now + 5_000), SetMode::Upsert));
    assert_eq!(hit(store.get(b"k", None)).ttl_ms, 5_000);
    advance(Duration::from_millis(1_000)).await;
    stored(store.set_with(b"k", b"2", Expiry::KeepOr(MINUTE), SetMode::Upsert));
    let entry = hit(store.get(b"k", None));
    assert_eq!((entry.value.as_ref(), entry.ttl_ms), (&b"2"[..], 4_000));
    // An absent key has no deadline to keep: it gets the fallback.
    stored(store.set_with(b"new", b"x", Expiry::KeepOr(MINUTE), SetMode::Upsert));
    assert_eq!(hit(store.get(b"new", None)).ttl_ms, MINUTE);
}

#[tokio::test(start_paused = true)]
async fn set_returning_previous_reads_under_the_same_lock() {
    use sessiond::store::Expiry;
    let store = paused_store();
    let (outcome, previous) =
        store.set_returning_previous(b"k", b"1", Expiry::In(MINUTE), SetMode::Upsert);
    let v1 = stored(outcome);
    assert_eq!(previous, None);
    let (outcome, previous) =
        store.set_returning_previous(b"k", b"2", Expiry::In(MINUTE), SetMode::CreateOnly);
    assert_eq!(outcome, SetOutcome::Exists);
    assert_eq!(
        previous.map(|e| (e.value, e.version)),
        Some((Bytes::from_static(b"1"), v1))
    );
}

#[tokio::test(start_paused = true)]
async fn expire_at_moves_the_deadline_or_deletes() {
    let store = paused_store();
    let now = store.clock().now_ms();
    stored(store.set(b"k", b"x", MINUTE, SetMode::Upsert));
    assert!(store.expire_at(b"k", now + 10));
    assert_eq!(hit(store.get(b"k", None)).ttl_ms, 10);
    assert!(
        store.expire_at(b"k", now),
        "a past deadline deletes the key"
    );
    assert_eq!(store.get(b"k", None), GetReply::Miss);
    assert!(!store.expire_at(b"k", now + MINUTE));
}

#[tokio::test(start_paused = true)]
async fn getdel_and_clear_record_deletions() {
    let recorder = Arc::new(Recorder::default());
    let store = Store::with_parts(Clock::new(), Some(recorder.clone()));
    stored(store.set(b"a", b"1", MINUTE, SetMode::Upsert));
    stored(store.set(b"b", b"2", MINUTE, SetMode::Upsert));
    stored(store.set(b"c", b"3", MINUTE, SetMode::Upsert));
    assert_eq!(hit(store.getdel(b"a")).value, Bytes::from_static(b"1"));
    assert_eq!(store.getdel(b"a"), GetReply::Miss);
    assert_eq!(store.clear(), 2);
    assert!(store.is_empty());
    assert_eq!(store.memory_estimate(), 0);
    let dels = recorder
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, kind, _)| *kind == "del")
        .count();
    assert_eq!(dels, 3);
}

#[tokio::test(start_paused = true)]
async fn scan_returns_every_key_even_while_the_map_grows() {
    use std::collections::HashSet;
    let store = paused_store();
    let original: HashSet<Vec<u8>> = (0..20_000u32)
        .map(|i| format!("session:{i}").into_bytes())
        .collect();
    for key in &original {
        stored(store.set(key, b"v", MINUTE, SetMode::Upsert));
    }
    stored(store.set(b"other:1", b"v", MINUTE, SetMode::Upsert));
    let mut seen = HashSet::new();
    let mut cursor = 0;
    let mut calls = 0;
    loop {
        let (next, keys) = store.scan(cursor, 100, |k| k.starts_with(b"session:"));
        for key in keys {
            assert!(key.starts_with(b"session:"), "MATCH filter not applied");
            seen.insert(key.to_vec());
        }
        // Grow the map under the scan so that shards resize between calls.
        for j in 0..50u32 {
            store.set(
                format!("grow:{calls}:{j}").as_bytes(),
                b"v",
                MINUTE,
                SetMode::Upsert,
            );
        }
        calls += 1;
        assert!(calls < 100_000, "scan never finished");
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let missing = original.difference(&seen).count();
    assert_eq!(
        missing, 0,
        "{missing} keys present throughout were never returned"
    );
}

#[test]
fn scan_with_an_unknown_cursor_ends() {
    let store = paused_store();
    assert_eq!(store.scan(u64::MAX, 10, |_| true), (0, Vec::new()));
}

#[test]
fn replaying_a_set_replaces_the_whole_entry_and_keeps_the_payload_count() {
    let store = paused_store();
    let far = 4_000_000_000_000; // Unix ms, year 2096
    store.restore_set(b"k", b"first value", far, 7);
    store.restore_set(b"k", b"second", far + 1, 9);
    store.restore_set(b"other", b"x", far, 3);
    assert_eq!(store.len(), 2);
    let entry = hit(store.get(b"k", None));
    assert_eq!(entry.value, Bytes::from_static(b"second"));
    assert_eq!(entry.version, 9);
    // Payload: "k" + "second" and "other" + "x", each counted once.
    let overhead = sessiond::store::ENTRY_OVERHEAD_BYTES;
    assert_eq!(store.memory_estimate(), 1 + 6 + 5 + 1 + 2 * overhead);
    store.restore_del(b"k");
    assert_eq!(store.memory_estimate(), 5 + 1 + overhead);
    // New writes continue above every replayed version.
    assert_eq!(stored(store.set(b"n", b"v", 1000, SetMode::Upsert)), 10);
}

/// Writes `n` 1 KiB sessions `key0..` through the limited path; returns how many were stored.
fn fill_limited(store: &Store, from: u64, n: u64, ttl: impl Fn(u64) -> u64) -> u64 {
    let value = [b'v'; 1024];
    (from..from + n)
        .filter(|i| {
            let key = format!("key{i}");
            let expiry = sessiond::store::Expiry::In(ttl(*i));
            store
                .set_limited(key.as_bytes(), &value, expiry, SetMode::CreateOnly, None)
                .is_ok()
        })
        .count() as u64
}

#[tokio::test(start_paused = true)]
async fn refuse_new_refuses_creates_and_growth_at_the_cap_but_not_updates_or_deletes() {
    use sessiond::memory::Policy;
    use sessiond::store::{Expiry, OutOfMemory};
    let store = paused_store();
    store.memory().set_limit(Some(1 << 20), Policy::RefuseNew);
    let stored = fill_limited(&store, 0, 2000, |_| MINUTE);
    assert!(
        (800..1000).contains(&stored),
        "{stored} 1 KiB sessions in 1 MiB"
    );
    assert!(store.memory().used() <= 1 << 20);
    let refused = store.memory().refused();
    assert_eq!(refused, 2000 - stored);
    // A same-size update, a touch, a read and a delete are served; growth is refused.
    let same = [b'w'; 1024];
    let update = store.set_limited(
        b"key0",
        &same,
        Expiry::In(MINUTE),
        SetMode::UpdateOnly,
        None,
    );
    assert!(matches!(update, Ok(SetOutcome::Stored { .. })));
    assert!(matches!(
        store.touch(b"key0", MINUTE),
        TouchReply::Touched { .. }
    ));
    hit(store.get(b"key0", None));
    let grown = store.set_limited(
        b"key0",
        &[0; 4096],
        Expiry::In(MINUTE),
        SetMode::Upsert,
        None,
    );
    assert_eq!(grown, Err(OutOfMemory));
    assert_eq!(store.del(b"key1", None), DelOutcome::Deleted);
    // The delete made room for one more.
    assert_eq!(fill_limited(&store, 5000, 1, |_| MINUTE), 1);
    // Once everything has expired, a create at the cap reclaims before it is refused.
    advance(Duration::from_millis(MINUTE + 1)).await;
    assert_eq!(fill_limited(&store, 10_000, 100, |_| MINUTE), 100);
}

/// Caps `store` at the memory it uses now, with eviction, and evicts down to half of it.
async fn evict_to_half(store: &Store) {
    use sessiond::memory::Policy;
    let used = store.memory().used();
    store
        .memory()
        .set_limit(Some(used), Policy::EvictSoonestExpiring);
    let stopped = tokio_util::sync::CancellationToken::new();
    store.evict_down_to(used / 2, &stopped).await;
    assert!(store.memory().used() <= used / 2);
}

#[tokio::test(start_paused = true)]
async fn eviction_frees_expired_entries_first_and_spares_live_ones() {
    let store = paused_store();
    // 600 sessions that expire after a minute, and 400 that live 10 to 409 minutes.
    assert_eq!(fill_limited(&store, 0, 600, |_| MINUTE), 600);
    assert_eq!(
        fill_limited(&store, 600, 400, |i| (10 + i % 400) * MINUTE),
        400
    );
    // The 600 expire, and no sweep has reclaimed them yet.
    advance(Duration::from_millis(MINUTE + 1)).await;
    evict_to_half(&store).await;
    // Freeing the expired ones was enough: no live session was evicted for them.
    assert_eq!(store.memory().evicted(), 0);
    for i in 600..1000 {
        let found = store.get(format!("key{i}").as_bytes(), None);
        assert!(matches!(found, GetReply::Hit(_)), "key{i} was evicted");
    }
}

#[tokio::test(start_paused = true)]
async fn eviction_removes_the_soonest_expiring_entries_and_records_their_deletion() {
    let recorder = Arc::new(Recorder::default());
    let store = Store::with_parts(Clock::following_tokio(), Some(recorder.clone()));
    // Deadlines from 1 to 1000 minutes, in a scrambled order.
    let ttl = |i: u64| (1 + (i * 7919) % 1000) * MINUTE;
    assert_eq!(fill_limited(&store, 0, 1000, ttl), 1000);
    evict_to_half(&store).await;
    let evicted = store.memory().evicted();
    assert!((500..600).contains(&evicted), "{evicted} evicted");
    let (mut latest_evicted, mut earliest_kept) = (0, u64::MAX);
    for i in 0..1000 {
        match store.get(format!("key{i}").as_bytes(), None) {
            GetReply::Hit(_) => earliest_kept = earliest_kept.min(ttl(i)),
            GetReply::Miss => latest_evicted = latest_evicted.max(ttl(i)),
        }
    }
    assert!(
        latest_evicted <= earliest_kept + earliest_kept / 16,
        "evicted one with {latest_evicted} ms left, kept one with {earliest_kept} ms"
    );
    let log = recorder.log.lock().unwrap();
    let dels = log.iter().filter(|(_, kind, _)| *kind == "del").count() as u64;
    assert_eq!(dels, evicted, "each eviction is recorded as a DEL");
}
