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
