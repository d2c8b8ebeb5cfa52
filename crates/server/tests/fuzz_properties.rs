//! The server's fuzz targets (`fuzz/src/`: RESP decoder, AOF records, AOF replay, config)
//! under `cargo test`: each target's checks over its committed seed corpus, over mutations
//! of it, and over arbitrary bytes. The fuzz targets explore far more inputs
//! (`scripts/fuzz`); this keeps the properties, and every input a fuzzer once failed on,
//! checked by every test run.

#[path = "../../../fuzz/src/aof_record.rs"]
mod aof_record;
#[path = "../../../fuzz/src/aof_replay.rs"]
mod aof_replay;
#[path = "../../../fuzz/src/config.rs"]
mod config;
#[path = "../../proto/tests/support/corpus.rs"]
mod corpus;
#[path = "../../../fuzz/src/resp_decode.rs"]
mod resp_decode;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

#[test]
fn every_seed_of_the_resp_corpus_holds() {
    corpus::check_every_seed("resp_decode", resp_decode::check);
}

#[test]
fn every_seed_of_the_aof_record_corpus_holds() {
    corpus::check_every_seed("aof_record", aof_record::check);
}

#[test]
fn every_seed_of_the_aof_replay_corpus_holds() {
    corpus::check_every_seed("aof_replay", aof_replay::check);
}

#[test]
fn every_seed_of_the_config_corpus_holds() {
    corpus::check_every_seed("config", config::check);
}

/// Found by the `config` fuzz target: a 165-byte file whose `log.level` holds a span field
/// value (`[log{OOe=lo6.0......}]`). Validation compiled it as a regular expression into a
/// dense automaton: more than 4 GiB and nine minutes before the fuzzer's memory limit
/// stopped it. Field values are now matched literally.
#[test]
fn a_log_level_with_a_field_value_pattern_is_validated_in_bounded_time() {
    let data = corpus::seed("config", "log-level-field-regex-blowup");
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        config::check(&data);
        let _ = done.send(());
    });
    assert!(
        finished.recv_timeout(Duration::from_secs(10)).is_ok(),
        "validating the configuration took more than 10 s"
    );
}

/// Found by the `config` fuzz target: a `log.level` holding a two-byte UTF-8 letter made
/// tracing-subscriber slice the directive inside the character and panic, so the daemon died
/// at startup instead of naming the bad setting. Filters are now refused unless ASCII.
#[test]
fn a_non_ascii_log_level_is_refused_not_a_panic() {
    let data = corpus::seed("config", "non-ascii-log-level");
    config::check(&data);
    let text = std::str::from_utf8(&data).expect("the seed is UTF-8");
    let parsed: sessiond::Config = toml::from_str(text).expect("the seed parses as a config");
    let error = parsed
        .validate()
        .expect_err("a non-ASCII log.level is refused");
    assert!(error.to_string().contains("log.level"), "{error}");
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..1024)
}

proptest! {
    #[test]
    fn mutated_resp_seeds_hold(data in corpus::mutated("resp_decode")) {
        resp_decode::check(&data);
    }

    #[test]
    fn arbitrary_bytes_hold_for_the_resp_decoder(data in bytes()) {
        resp_decode::check(&data);
    }

    #[test]
    fn mutated_aof_files_hold_for_the_record_decoder(data in corpus::mutated("aof_record")) {
        aof_record::check(&data);
    }

    #[test]
    fn mutated_aof_files_hold_for_replay(data in corpus::mutated("aof_replay")) {
        aof_replay::check(&data);
    }

    #[test]
    fn mutated_configs_hold(data in corpus::mutated("config")) {
        config::check(&data);
    }

    #[test]
    fn arbitrary_text_holds_for_the_config_parser(text in "\\PC{0,256}") {
        config::check(text.as_bytes());
    }
}
