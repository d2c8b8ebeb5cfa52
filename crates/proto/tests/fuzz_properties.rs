//! The native codec's fuzz target (`fuzz/src/native_codec.rs`) under `cargo test`: its
//! checks (same frames whatever the read sizes, frame and request round trips, no panic)
//! over the committed seed corpus, over mutations of it, and over arbitrary bytes. The fuzz
//! target explores far more inputs (`scripts/fuzz`); this keeps the properties, and every
//! input a fuzzer once failed on, checked by every test run.

#[path = "support/corpus.rs"]
mod corpus;
#[path = "../../../fuzz/src/native_codec.rs"]
mod native_codec;

use proptest::prelude::*;

#[test]
fn every_seed_of_the_native_codec_corpus_holds() {
    corpus::check_every_seed("native_codec", native_codec::check);
}

proptest! {
    #[test]
    fn mutated_native_seeds_hold(data in corpus::mutated("native_codec")) {
        native_codec::check(&data);
    }

    #[test]
    fn arbitrary_bytes_hold_for_the_native_codec(
        data in proptest::collection::vec(any::<u8>(), 0..1024)
    ) {
        native_codec::check(&data);
    }
}
