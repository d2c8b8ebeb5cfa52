//! The properties the fuzz targets check, one module per parser of outside bytes, each with
//! a `check(data)` that panics when a property fails.
//!
//! They are kept apart from the `fuzz_targets/` wrappers so that the crates' own tests can
//! run the same checks (`#[path]`-included) under proptest and over the committed seed
//! corpora in `cargo test`, where cargo-fuzz is not needed. So each module names only
//! external crates, never `crate::`.

pub mod aof_record;
pub mod aof_replay;
pub mod config;
pub mod native_codec;
pub mod resp_decode;
