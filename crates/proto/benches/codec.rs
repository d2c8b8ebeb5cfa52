//! Micro-benchmarks of the wire codec: encoding and decoding the `GET` and `SET` request and
//! response frames of the session workload, with 1 KiB values and 51-byte keys (the
//! `session:` prefix and a 43-character id that `sessiond-bench` uses).
//!
//! Each benchmark does what one side of a connection does per frame: the server decodes a
//! request and parses it into a command, then turns the reply into a frame and encodes it;
//! the client does the reverse. Run with `cargo bench -p sessiond-proto --bench codec`.
//! Not run in CI: timings on a shared machine say nothing, and the build alone (under
//! `cargo clippy --all-targets`) keeps the code compiling.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_main, Criterion, Throughput};
use sessiond_proto::command::{Entry, Get, GetReply, Set, SetMode, SetOutcome};
use sessiond_proto::{ClientCodec, Inbound, Limits, Request, ServerCodec};
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder};

const VALUE_LEN: usize = 1024;
const TTL_MS: u64 = 30 * 60 * 1000;

fn key() -> Bytes {
    Bytes::from(format!("session:{:0>43}", 12345))
}

fn value() -> Bytes {
    (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect()
}

fn get_request() -> Request {
    Request::Get(Get {
        key: key(),
        touch_ttl_ms: Some(TTL_MS),
    })
}

fn set_request() -> Request {
    Request::Set(Set {
        key: key(),
        value: value(),
        ttl_ms: TTL_MS,
        mode: SetMode::Upsert,
    })
}

fn get_hit() -> GetReply {
    GetReply::Hit(Entry {
        value: value(),
        version: 42,
        ttl_ms: TTL_MS,
    })
}

/// The bytes a client sends for `request`.
fn request_bytes(request: &Request) -> BytesMut {
    let mut buf = BytesMut::new();
    let _ = ClientCodec::new().encode(request.to_frame(7), &mut buf);
    buf
}

/// Client side: a typed request into bytes.
fn bench_encode_request(c: &mut Criterion, name: &str, request: &Request) {
    let mut codec = ClientCodec::new();
    let mut buf = BytesMut::with_capacity(4096);
    let len = request_bytes(request).len() as u64;
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(len));
    group.bench_function(format!("encode {name}"), |b| {
        b.iter(|| {
            buf.clear();
            let _ = codec.encode(black_box(request).to_frame(7), &mut buf);
            black_box(buf.len())
        })
    });
    group.finish();
}

/// Server side: bytes into a parsed request. The bytes are copied into a fresh buffer on each
/// iteration, as a read from the socket would put them there; that copy is part of the time.
fn bench_decode_request(c: &mut Criterion, name: &str, request: &Request) {
    let bytes = request_bytes(request).freeze();
    let limits = Limits::default();
    let mut codec = ServerCodec::new(limits);
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function(format!("decode {name}"), |b| {
        b.iter(|| {
            let mut src = BytesMut::from(&black_box(&bytes)[..]);
            match codec.decode(&mut src) {
                Ok(Some(Inbound::Request(frame))) => black_box(Request::parse(frame, &limits).ok()),
                _ => None,
            }
        })
    });
    group.finish();
}

fn bench_requests(c: &mut Criterion) {
    for (name, request) in [("GET+touch", get_request()), ("SET 1KiB", set_request())] {
        bench_encode_request(c, name, &request);
        bench_decode_request(c, name, &request);
    }
}

fn bench_responses(c: &mut Criterion) {
    let get_hit = get_hit();
    let stored = SetOutcome::Stored { version: 43 };
    let mut server = ServerCodec::new(Limits::default());
    let mut client = ClientCodec::new();
    let mut buf = BytesMut::with_capacity(4096);

    let mut group = c.benchmark_group("response");
    group.bench_function("encode GET hit 1KiB", |b| {
        b.iter(|| {
            buf.clear();
            let _ = server.encode(black_box(&get_hit).to_frame(7), &mut buf);
            black_box(buf.len())
        })
    });
    group.bench_function("encode SET stored", |b| {
        b.iter(|| {
            buf.clear();
            let _ = server.encode(black_box(&stored).to_frame(7), &mut buf);
            black_box(buf.len())
        })
    });

    // Decoding copies the bytes into a fresh buffer each iteration, like a socket read.
    let mut encoded = BytesMut::new();
    let _ = server.encode(get_hit.to_frame(7), &mut encoded);
    let get_bytes = encoded.split().freeze();
    let _ = server.encode(stored.to_frame(7), &mut encoded);
    let set_bytes = encoded.split().freeze();
    group.bench_function("decode GET hit 1KiB", |b| {
        b.iter(|| {
            let mut src = BytesMut::from(&black_box(&get_bytes)[..]);
            match client.decode(&mut src) {
                Ok(Some(frame)) => black_box(GetReply::from_frame(&frame).ok()),
                _ => None,
            }
        })
    });
    group.bench_function("decode SET stored", |b| {
        b.iter(|| {
            let mut src = BytesMut::from(&black_box(&set_bytes)[..]);
            match client.decode(&mut src) {
                Ok(Some(frame)) => black_box(SetOutcome::from_frame(&frame).ok()),
                _ => None,
            }
        })
    });
    group.finish();
}

// `criterion_group!` defines a `pub fn`, which cannot carry a doc comment.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench_requests, super::bench_responses);
}
criterion_main!(group::benches);
