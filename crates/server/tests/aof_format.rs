//! The append-only file against its specification, `proto/AOF.md`, and the reader against
//! damage.
//!
//! - Every ```` ```hex ```` block of the specification is copied here as a constant and checked
//!   against the code: records decode to what the text says and encode back to the same bytes,
//!   and whole files get the verdict the text gives them.
//!   [`every_hex_block_in_the_spec_is_tested`] reads the specification itself, so the two cannot
//!   drift apart by a single byte.
//! - A small file holding every record kind is replayed, cut at every offset and damaged at every
//!   byte (every bit, and all eight at once): the reader must return exactly the records before
//!   the damage and the right verdict, never other data and never a panic.
//! - The committed fixtures in `tests/fixtures/aof/` pin the verdict of `check-aof` on the files
//!   a crash or a mistake leaves behind, what `--repair` makes of each, and what startup does
//!   with them.

mod common;

use common::{del, set, touch};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sessiond::aof::check::{check, Verdict};
use sessiond::aof::reader::{read_file, ReadError, ReadSummary};
use sessiond::aof::record::{
    decode_record, encode_file_header, Decoded, Record, FILE_HEADER_LEN, MAX_BODY_LEN,
};
use sessiond::aof::replay::LoadError;
use sessiond::aof::rewrite::{finish, no_hook, write_snapshot};
use sessiond::aof::{Aof, AofSettings, FsyncPolicy, FILE_NAME};
use sessiond::clock::Clock;
use sessiond::Store;
use sessiond_proto::command::{GetReply, SetMode, SetOutcome};
use tempfile::TempDir;

// The same reader of hex blocks as the protocol spec's tests.
#[path = "../../proto/tests/support/spec_hex.rs"]
mod spec_hex;
use spec_hex::{assert_examples_match_spec, hex};

/// The specification itself; `include_str!` also makes cargo rerun these tests when it changes.
const SPEC: &str = include_str!("../../../proto/AOF.md");

/// 2100-01-01T00:00:00Z: a deadline every test run sees in the future.
const FAR: u64 = 4_102_444_800_000;
/// 2023-11-14T22:13:20Z: a deadline every test run sees in the past.
const PAST: u64 = 1_700_000_000_000;
/// Where the reader stops looking for a valid record after damage (`proto/AOF.md` 6.2).
const MAX_TORN_TAIL: u64 = 32 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A record's bytes, through the encoder the server uses.
fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    record.encode(&mut out);
    out
}

fn header() -> Vec<u8> {
    let mut out = Vec::new();
    encode_file_header(&mut out);
    out
}

/// A whole file: the header, then `records`.
fn file_of(records: &[Record]) -> Vec<u8> {
    let mut out = header();
    for record in records {
        out.extend(encode(record));
    }
    out
}

/// The offsets where the records of `file_of(records)` end, starting with the header's end:
/// `ends[i]` is where record `i` starts, `ends[i + 1]` where it ends.
fn ends(records: &[Record]) -> Vec<u64> {
    let mut ends = vec![FILE_HEADER_LEN as u64];
    for record in records {
        ends.push(ends.last().unwrap() + encode(record).len() as u64);
    }
    ends
}

/// The small file of these tests: every record kind, an empty value, a binary key, an entry
/// that has expired, one that is deleted and one that is touched.
fn sample_records() -> Vec<Record> {
    vec![
        Record::LastVersion { version: 12 },
        set(b"a", b"alpha", FAR, 3),
        set(b"b", b"", FAR, 7),
        set(b"c", b"gamma", PAST, 9),
        touch(b"a", FAR + 60_000),
        del(b"b"),
        set(b"k\x00\xff", b"\x00binary\xff", FAR, 11),
    ]
}

/// A store's live contents: key to (value, deadline, version).
type State = BTreeMap<Vec<u8>, (Vec<u8>, u64, u64)>;

/// What replaying `sample_records` leaves at any time before 2100.
fn sample_state() -> State {
    BTreeMap::from([
        (b"a".to_vec(), (b"alpha".to_vec(), FAR + 60_000, 3)),
        (b"k\x00\xff".to_vec(), (b"\x00binary\xff".to_vec(), FAR, 11)),
    ])
}

fn state(store: &Store) -> State {
    {
        let mut entries = BTreeMap::new();
        for shard in 0..store.shard_count() {
            store.visit_live_in_shard(shard, |key, value, expires_at_ms, version| {
                entries.insert(key.to_vec(), (value.to_vec(), expires_at_ms, version));
            });
        }
        entries
    }
}

/// What reading a file gave: the records delivered (including those before an error) and the
/// result.
#[derive(Debug)]
struct Read {
    records: Vec<Record>,
    result: Result<ReadSummary, ReadError>,
}

fn read_path(path: &Path) -> Read {
    let mut records = Vec::new();
    let result = read_file(path, |record| records.push(record), |_| {});
    Read { records, result }
}

/// A directory to write files into and read them back.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(FILE_NAME)
    }

    fn write(&self, bytes: &[u8]) -> PathBuf {
        let path = self.path();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read(&self, bytes: &[u8]) -> Read {
        read_path(&self.write(bytes))
    }

    fn settings(&self) -> AofSettings {
        AofSettings {
            dir: self.dir.path().to_path_buf(),
            fsync: FsyncPolicy::Always,
            rewrite_min_bytes: u64::MAX,
            rewrite_growth_percent: 100,
        }
    }

    fn load(&self, repair: bool) -> Result<(Store, Aof), LoadError> {
        Aof::open_and_load(self.settings(), Clock::new(), repair)
    }
}

fn assert_torn(read: &Read, records: &[Record], offset: u64, reason: &str) {
    assert_eq!(read.records, records);
    let summary = read.result.as_ref().expect("a torn tail is not an error");
    let (at, why) = summary.torn_tail.as_ref().expect("a torn tail");
    assert_eq!(*at, offset, "torn tail offset ({why})");
    assert!(why.contains(reason), "reason {why:?} lacks {reason:?}");
    assert_eq!(summary.valid_len, offset);
    assert_eq!(summary.records, records.len() as u64);
}

fn assert_corrupt(read: &Read, records: &[Record], offset: u64, reason: &str) {
    assert_eq!(read.records, records);
    match &read.result {
        Err(ReadError::Corrupt {
            offset: at,
            reason: why,
            ..
        }) => {
            assert_eq!(*at, offset, "corruption offset ({why})");
            assert!(why.contains(reason), "reason {why:?} lacks {reason:?}");
        }
        other => panic!("expected corruption at {offset}, got {other:?}"),
    }
}

fn assert_header_error(read: &Read, reason: &str) {
    assert!(read.records.is_empty());
    match &read.result {
        Err(ReadError::Header { reason: why, .. }) => {
            assert!(why.contains(reason), "reason {why:?} lacks {reason:?}")
        }
        other => panic!("expected a header error, got {other:?}"),
    }
}

/// The CRC-32C algorithm exactly as `proto/AOF.md` section 5 writes it, bit by bit.
fn spec_crc32c(bytes: &[u8]) -> u32 {
    let mut crc: u32 = 0xFFFF_FFFF;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xFFFF_FFFF
}

// ---------------------------------------------------------------------------------------------
// The examples, copied from the specification
// ---------------------------------------------------------------------------------------------

const FILE_HEADER: &str = r##"
53 45 53 53 41 4f 46 00  # magic "SESSAOF\0"
00 00 00 01              # format version 1
00 00 00 00              # reserved
"##;

const SET_RECORD: &str = r##"
00 00 00 21              # body_len 33
e3 31 b3 99              # crc 0xe331b399
01                       # kind SET
00 00 00 00 00 00 00 07  # version 7
00 00 01 8b cf dc 40 40  # expires_at_ms 1699999400000
00 03 61 62 63           # key_len 3, key "abc"
00 00 00 07              # value_len 7
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

/// The same bytes as `the_literal_example_in_the_spec_decodes` in `src/aof/record.rs`.
const TOUCH_RECORD: &str = r##"
00 00 00 0e              # body_len 14
53 92 bb 86              # crc 0x5392bb86
02                       # kind TOUCH
00 00 01 8b cf e5 68 00  # expires_at_ms 1700000000000
00 03 61 62 63           # key_len 3, key "abc"
"##;

const DEL_RECORD: &str = r##"
00 00 00 06  # body_len 6
57 9b a2 a4  # crc 0x579ba2a4
03           # kind DEL
00 03        # key_len 3
61 62 63     # key "abc"
"##;

const LAST_VERSION_RECORD: &str = r##"
00 00 00 09              # body_len 9
b1 e0 ce 7b              # crc 0xb1e0ce7b
04                       # kind LAST_VERSION
00 00 00 00 00 00 00 07  # version 7
"##;

const COMPLETE_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 01 00 00 00 00  # header, format version 1
00 00 00 21 e3 31 b3 99                          # offset 16: SET, body_len 33, crc
01 00 00 00 00 00 00 00 07                       #   kind SET, version 7
00 00 01 8b cf dc 40 40                          #   expires_at_ms 1699999400000
00 03 61 62 63 00 00 00 07 7b 22 75 22 3a 37 7d  #   key "abc", value '{"u":7}'
00 00 00 0e 53 92 bb 86                          # offset 57: TOUCH, body_len 14, crc
02 00 00 01 8b cf e5 68 00 00 03 61 62 63        #   expires_at 1700000000000, key "abc"
00 00 00 06 57 9b a2 a4                          # offset 79: DEL, body_len 6, crc
03 00 03 61 62 63                                #   key "abc"
"##;

const TORN_TAIL_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 01 00 00 00 00  # header
00 00 00 06 57 9b a2 a4 03 00 03 61 62 63        # offset 16: DEL "abc"
00 00 00 0e 53 92 bb 86 02                       # offset 30: TOUCH, body_len 14, 1 byte of body
"##;

const ZERO_TAIL_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 01 00 00 00 00  # header
00 00 00 06 57 9b a2 a4 03 00 03 61 62 63        # offset 16: DEL "abc"
00 00 00 00 00 00 00 00                          # offset 30: zeros
"##;

const CORRUPT_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 01 00 00 00 00  # header
00 00 00 06 57 9b a2 a4 03 00 03 61 62 64        # offset 16: DEL "abd", checksum mismatch
00 00 00 06 57 9b a2 a4 03 00 03 61 62 63        # offset 30: DEL "abc", valid
"##;

const REWRITTEN_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 01 00 00 00 00  # header
00 00 00 09 b1 e0 ce 7b                          # offset 16: LAST_VERSION, body_len 9, crc
04 00 00 00 00 00 00 00 07                       #   kind LAST_VERSION, version 7
"##;

/// Every example, by name.
const EXAMPLES: &[(&str, &str)] = &[
    ("FILE_HEADER", FILE_HEADER),
    ("SET_RECORD", SET_RECORD),
    ("TOUCH_RECORD", TOUCH_RECORD),
    ("DEL_RECORD", DEL_RECORD),
    ("LAST_VERSION_RECORD", LAST_VERSION_RECORD),
    ("COMPLETE_FILE", COMPLETE_FILE),
    ("TORN_TAIL_FILE", TORN_TAIL_FILE),
    ("ZERO_TAIL_FILE", ZERO_TAIL_FILE),
    ("CORRUPT_FILE", CORRUPT_FILE),
    ("REWRITTEN_FILE", REWRITTEN_FILE),
];

fn example_set() -> Record {
    set(b"abc", br#"{"u":7}"#, 1_699_999_400_000, 7)
}

fn example_touch() -> Record {
    touch(b"abc", 1_700_000_000_000)
}

fn example_del() -> Record {
    del(b"abc")
}

// ---------------------------------------------------------------------------------------------
// The specification and this file agree
// ---------------------------------------------------------------------------------------------

#[test]
fn every_hex_block_in_the_spec_is_tested() {
    assert_examples_match_spec("AOF.md", SPEC, EXAMPLES);
}

// ---------------------------------------------------------------------------------------------
// Sections 3 to 5: header, records, checksum
// ---------------------------------------------------------------------------------------------

#[test]
fn the_file_header() {
    assert_eq!(header(), hex(FILE_HEADER));
    assert_eq!(FILE_HEADER_LEN, 16);
}

/// `block` is exactly one record that decodes to `record`, and `record` encodes to it.
fn check_record(block: &str, record: Record) {
    let bytes = hex(block);
    assert_eq!(encode(&record), bytes, "encoding");
    assert_eq!(
        decode_record(&Bytes::from(bytes.clone())),
        Decoded::Record(record, bytes.len())
    );
    // The stored checksum is the spec's CRC-32C of the body.
    let stored = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
    assert_eq!(spec_crc32c(&bytes[8..]), stored);
}

#[test]
fn set_record() {
    check_record(SET_RECORD, example_set());
}

#[test]
fn touch_record() {
    check_record(TOUCH_RECORD, example_touch());
}

#[test]
fn del_record() {
    check_record(DEL_RECORD, example_del());
}

#[test]
fn last_version_record() {
    check_record(LAST_VERSION_RECORD, Record::LastVersion { version: 7 });
}

#[test]
fn the_checksum_is_crc32c_as_the_spec_writes_it() {
    // The catalogue check value, and the worked value of section 5.
    assert_eq!(spec_crc32c(b"123456789"), 0xE306_9283);
    let touch_body = [
        0x02, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x00, 0x03, 0x61, 0x62, 0x63,
    ];
    assert_eq!(spec_crc32c(&touch_body), 0x5392_BB86);
    assert_eq!(hex(TOUCH_RECORD)[8..], touch_body);
    // The damaged body of the corruption example (section 6.3).
    assert_eq!(
        spec_crc32c(&[0x03, 0x00, 0x03, 0x61, 0x62, 0x64]),
        0x8351_C64F
    );
    // And the spec's algorithm agrees with the server's on records of every kind and size.
    for record in sample_records()
        .into_iter()
        .chain([set(b"big", &vec![0xa5; 100_000], FAR, 1)])
    {
        let bytes = encode(&record);
        let stored = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(spec_crc32c(&bytes[8..]), stored, "{record:?}");
    }
}

#[test]
fn the_complete_file_is_the_three_records_and_replays_to_nothing() {
    let bytes = hex(COMPLETE_FILE);
    let mut expected = hex(FILE_HEADER);
    for block in [SET_RECORD, TOUCH_RECORD, DEL_RECORD] {
        expected.extend(hex(block));
    }
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), 93);
    let records = [example_set(), example_touch(), example_del()];
    assert_eq!(ends(&records), [16, 57, 79, 93]);

    let scratch = Scratch::new();
    let read = scratch.read(&bytes);
    assert_eq!(read.records, records);
    let summary = read.result.unwrap();
    assert_eq!(summary.torn_tail, None);
    assert_eq!((summary.records, summary.valid_len), (3, 93));

    let (store, aof) = scratch.load(false).unwrap();
    assert!(store.is_empty());
    assert_eq!(store.last_version(), 7);
    assert_eq!(
        store.set(b"abc", b"x", 60_000, SetMode::Upsert),
        SetOutcome::Stored { version: 8 }
    );
    aof.close();
}

#[test]
fn rewriting_the_complete_file_gives_the_rewritten_file() {
    let scratch = Scratch::new();
    scratch.write(&hex(COMPLETE_FILE));
    let (store, aof) = scratch.load(false).unwrap();
    aof.close();
    let dir = scratch.dir.path();
    let (file, len) = write_snapshot(dir, &store, &no_hook).unwrap();
    finish(dir, file, len, &[], &no_hook).unwrap();
    assert_eq!(std::fs::read(scratch.path()).unwrap(), hex(REWRITTEN_FILE));
}

#[test]
fn the_body_length_limits_of_section_4_8() {
    assert_eq!(MAX_BODY_LEN, 16_842_774);
    let frame = |body_len: u32| {
        let mut bytes = body_len.to_be_bytes().to_vec();
        bytes.extend([0; 4]);
        Bytes::from(bytes)
    };
    // The longest body is a record that needs more bytes; one more is not a record at all.
    assert_eq!(decode_record(&frame(MAX_BODY_LEN)), Decoded::Incomplete);
    assert!(matches!(
        decode_record(&frame(MAX_BODY_LEN + 1)),
        Decoded::Invalid(_)
    ));
    assert!(matches!(decode_record(&frame(0)), Decoded::Invalid(_)));
}

/// A record with the given body and its correct checksum.
fn framed(body: &[u8]) -> Bytes {
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend(spec_crc32c(body).to_be_bytes());
    bytes.extend(body);
    Bytes::from(bytes)
}

#[test]
fn fields_must_fill_the_body_exactly_even_with_a_good_checksum() {
    // DEL "abc" with one byte too many, and one too few.
    for body in [&b"\x03\x00\x03abcX"[..], &b"\x03\x00\x03ab"[..]] {
        assert!(matches!(decode_record(&framed(body)), Decoded::Invalid(_)));
    }
    // SET whose value_len is one less than the bytes left.
    let mut body = hex(SET_RECORD)[8..].to_vec();
    let at = body.len() - 7 - 4;
    body[at + 3] = 6;
    assert!(matches!(decode_record(&framed(&body)), Decoded::Invalid(_)));
    // An undefined kind.
    assert!(matches!(
        decode_record(&framed(b"\x05\x00\x00")),
        Decoded::Invalid(_)
    ));
    // A key of length 0 is accepted (sessiond never writes one).
    assert_eq!(
        decode_record(&framed(b"\x03\x00\x00")),
        Decoded::Record(del(b""), 11)
    );
}

// ---------------------------------------------------------------------------------------------
// Section 6: the spec's damage examples
// ---------------------------------------------------------------------------------------------

#[test]
fn torn_tail_example() {
    let read = Scratch::new().read(&hex(TORN_TAIL_FILE));
    assert_torn(&read, &[example_del()], 30, "ends inside a record");
}

#[test]
fn zero_tail_example() {
    let read = Scratch::new().read(&hex(ZERO_TAIL_FILE));
    assert_torn(
        &read,
        &[example_del()],
        30,
        "record length 0 is out of range",
    );
}

#[test]
fn corruption_example() {
    let read = Scratch::new().read(&hex(CORRUPT_FILE));
    assert_corrupt(
        &read,
        &[],
        16,
        "checksum mismatch (stored 579ba2a4, computed 8351c64f); a valid record follows at offset 30",
    );
}

// ---------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------

#[test]
fn read_file_returns_every_record_in_order() {
    let records = sample_records();
    let bytes = file_of(&records);
    let read = Scratch::new().read(&bytes);
    assert_eq!(read.records, records);
    let summary = read.result.unwrap();
    assert_eq!(
        summary,
        ReadSummary {
            records: records.len() as u64,
            valid_len: bytes.len() as u64,
            file_len: bytes.len() as u64,
            torn_tail: None,
        }
    );
}

#[test]
fn replay_restores_entries_drops_expired_ones_and_continues_the_versions() {
    let scratch = Scratch::new();
    scratch.write(&file_of(&sample_records()));
    let (store, aof) = scratch.load(false).unwrap();
    // `c` expired long ago and `b` was deleted; expired entries are gone, not just hidden.
    assert_eq!(state(&store), sample_state());
    assert_eq!(store.len(), 2);
    assert_eq!(store.get(b"c", None), GetReply::Miss);
    assert_eq!(store.get(b"b", None), GetReply::Miss);
    // The deadline is absolute: the remaining TTL is what is left until it.
    let now = store.clock().now_ms();
    match store.get(b"a", None) {
        GetReply::Hit(entry) => {
            assert_eq!(entry.value, Bytes::from_static(b"alpha"));
            assert_eq!(entry.version, 3);
            assert!(entry.ttl_ms <= FAR + 60_000 - now);
            assert!(entry.ttl_ms > FAR + 60_000 - now - 60_000);
        }
        GetReply::Miss => panic!("a was not restored"),
    }
    // The counter continues above LAST_VERSION 12, though no SET carries more than 11.
    assert_eq!(store.last_version(), 12);
    assert_eq!(
        store.set(b"new", b"v", 60_000, SetMode::CreateOnly),
        SetOutcome::Stored { version: 13 }
    );
    aof.close();

    // The new write was appended after the replayed records, and a second start sees it.
    let read = read_path(&scratch.path());
    assert_eq!(read.records.len(), sample_records().len() + 1);
    assert!(matches!(
        read.records.last(),
        Some(Record::Set { key, version: 13, .. }) if key == "new"
    ));
    let (store, aof) = scratch.load(false).unwrap();
    assert_eq!(store.last_version(), 13);
    assert_eq!(store.len(), 3);
    aof.close();
}

#[test]
fn a_new_data_directory_gets_a_file_holding_only_the_header() {
    let scratch = Scratch::new();
    let (store, aof) = scratch.load(false).unwrap();
    assert!(store.is_empty());
    assert_eq!(store.last_version(), 0);
    aof.close();
    assert_eq!(std::fs::read(scratch.path()).unwrap(), header());
    let names: Vec<_> = std::fs::read_dir(scratch.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        [FILE_NAME],
        "the temporary file is renamed, not left"
    );
}

// ---------------------------------------------------------------------------------------------
// Every truncation, every damaged byte
// ---------------------------------------------------------------------------------------------

#[test]
fn every_truncation_is_a_torn_tail_after_the_last_whole_record() {
    let records = sample_records();
    let file = file_of(&records);
    let ends = ends(&records);
    let scratch = Scratch::new();
    for cut in 0..=file.len() {
        let read = scratch.read(&file[..cut]);
        if cut < FILE_HEADER_LEN {
            assert_header_error(&read, "shorter than the 16-byte header");
            continue;
        }
        let cut = cut as u64;
        // Records wholly before the cut; the last of `ends` not after it is where they end.
        let whole = ends.iter().filter(|&&end| end <= cut).count() - 1;
        let valid_len = ends[whole];
        if cut == valid_len {
            assert_eq!(read.records, records[..whole], "cut at {cut}");
            let summary = read.result.unwrap();
            assert_eq!(summary.torn_tail, None, "cut at {cut}");
            assert_eq!(summary.valid_len, cut);
        } else {
            assert_torn(&read, &records[..whole], valid_len, "ends inside a record");
            assert_eq!(read.result.unwrap().file_len, cut);
        }
    }
}

#[test]
fn every_damaged_byte_is_caught_at_its_record_and_nothing_after_it_is_returned() {
    let records = sample_records();
    let file = file_of(&records);
    let ends = ends(&records);
    let last = records.len() - 1;
    let scratch = Scratch::new();
    let masks = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff];
    for offset in 0..file.len() {
        for mask in masks {
            let mut damaged = file.clone();
            damaged[offset] ^= mask;
            let read = scratch.read(&damaged);
            // Whatever else happens, nothing but a prefix of the original records comes out.
            assert!(
                records.starts_with(&read.records),
                "byte {offset} ^ {mask:#04x} returned {:?}",
                read.records
            );
            match offset {
                0..=7 => assert_header_error(&read, "bad magic"),
                8..=11 => assert_header_error(&read, "format version"),
                // The reserved field is ignored: the records are all there, unchanged.
                12..=15 => {
                    assert_eq!(read.records, records);
                    assert_eq!(read.result.unwrap().torn_tail, None);
                }
                _ => {
                    let offset = offset as u64;
                    let i = ends.iter().filter(|&&end| end <= offset).count() - 1;
                    // Damage in the last record cannot be told from a torn write; anywhere
                    // else a valid record follows it.
                    if i == last {
                        assert_torn(&read, &records[..i], ends[i], "");
                    } else {
                        assert_corrupt(&read, &records[..i], ends[i], "a valid record follows");
                    }
                }
            }
        }
    }
}

#[test]
fn bytes_that_are_not_a_record_after_a_valid_file_are_a_torn_tail() {
    let records = sample_records();
    let valid = file_of(&records);
    let scratch = Scratch::new();
    for garbage in [
        &b"\xff"[..],
        b"\x00\x00\x00",
        b"garbage that is no record",
        &[0xa5; 5000],
    ] {
        let mut bytes = valid.clone();
        bytes.extend(garbage);
        assert_torn(&scratch.read(&bytes), &records, valid.len() as u64, "");
    }
}

#[test]
fn a_valid_record_anywhere_after_damage_makes_it_corruption() {
    let records = sample_records();
    let valid = file_of(&records);
    let scratch = Scratch::new();
    // Misaligned by one byte, after a stretch of zeros, and past the reader's first 8 MiB chunk.
    for gap in [1, 100, 9 * 1024 * 1024] {
        let mut bytes = valid.clone();
        bytes.extend(vec![0; gap]);
        bytes.extend(encode(&del(b"late")));
        let follows = format!("a valid record follows at offset {}", valid.len() + gap);
        assert_corrupt(
            &scratch.read(&bytes),
            &records,
            valid.len() as u64,
            &follows,
        );
    }
}

#[test]
fn more_than_32_mib_of_damage_is_corruption_even_with_nothing_valid_after_it() {
    let records = sample_records();
    let valid = file_of(&records);
    let scratch = Scratch::new();
    let path = scratch.write(&valid);
    // A sparse file: zeros, as a file system that extended the file before a crash leaves.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(valid.len() as u64 + MAX_TORN_TAIL + 1)
        .unwrap();
    let read = read_path(&path);
    assert_corrupt(
        &read,
        &records,
        valid.len() as u64,
        "more than a torn write can leave",
    );
    // Exactly 32 MiB from the damage to the end is still searched, and is a torn tail.
    file.set_len(valid.len() as u64 + MAX_TORN_TAIL).unwrap();
    assert_torn(
        &read_path(&path),
        &records,
        valid.len() as u64,
        "out of range",
    );
}

// ---------------------------------------------------------------------------------------------
// Fixtures: what check-aof, --repair and startup make of damaged files
// ---------------------------------------------------------------------------------------------

/// Set to write the fixtures from [`fixtures`] instead of checking them.
const REGENERATE: &str = "SESSIOND_REGENERATE_AOF_FIXTURES";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aof")
}

/// Every fixture's name and bytes, built from the sample file.
fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let valid = file_of(&sample_records());

    // A crash in the middle of appending a SET: its first half.
    let mut torn = valid.clone();
    let late = encode(&set(b"late", b"never acknowledged", FAR, 13));
    torn.extend(&late[..late.len() / 2]);

    // One byte of the first SET's value damaged on disk: "alpha" became "alpHa".
    let mut corrupt = valid.clone();
    let at = valid.windows(5).position(|w| w == b"alpha").unwrap();
    corrupt[at + 3] = b'H';

    // A crash after the file was extended but before the data reached the disk.
    let mut zeros = valid.clone();
    zeros.extend([0; 4096]);

    // A Redis AOF put where sessiond's file belongs.
    let redis = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$5\r\nalpha\r\n";

    // A file from a later sessiond.
    let mut future = valid.clone();
    future[8..12].copy_from_slice(&2u32.to_be_bytes());

    vec![
        ("valid.aof", valid),
        ("torn-tail.aof", torn),
        ("corrupt-middle.aof", corrupt),
        ("zero-tail.aof", zeros),
        ("bad-magic.aof", redis.to_vec()),
        ("future-version.aof", future),
    ]
}

/// The verdict `check` must give each fixture: `Ok(verdict)`, or `Err(part of the reason)`
/// for a file it cannot read.
fn expected_verdict(name: &str) -> Result<Verdict, &'static str> {
    let records = sample_records();
    let ends = ends(&records);
    let valid_len = *ends.last().unwrap();
    let len = |name: &str| std::fs::metadata(fixture_dir().join(name)).unwrap().len();
    let damaged = |records: usize, offset: u64, torn: bool, reason: &str| Verdict::Damaged {
        records: records as u64,
        offset,
        dropped: len(name) - offset,
        torn,
        reason: reason.to_string(),
        repaired: false,
    };
    match name {
        "valid.aof" => Ok(Verdict::Valid {
            records: records.len() as u64,
            bytes: valid_len,
        }),
        "torn-tail.aof" => Ok(damaged(
            records.len(),
            valid_len,
            true,
            "the file ends inside a record",
        )),
        "corrupt-middle.aof" => {
            // The second record (SET "a") is damaged; the third is valid.
            let bytes = std::fs::read(fixture_dir().join(name)).unwrap();
            let body = &bytes[ends[1] as usize + 8..ends[2] as usize];
            let stored = spec_crc32c(&encode(&records[1])[8..]);
            let reason = format!(
                "checksum mismatch (stored {stored:08x}, computed {:08x}); \
                 a valid record follows at offset {}",
                spec_crc32c(body),
                ends[2]
            );
            Ok(damaged(1, ends[1], false, &reason))
        }
        "zero-tail.aof" => Ok(damaged(
            records.len(),
            valid_len,
            true,
            "record length 0 is out of range",
        )),
        "bad-magic.aof" => Err("bad magic"),
        "future-version.aof" => Err("format version 2 is not supported"),
        other => panic!("no verdict for {other}"),
    }
}

fn assert_verdict(path: &Path, name: &str) {
    match (check(path, false), expected_verdict(name)) {
        (Ok(verdict), Ok(expected)) => assert_eq!(verdict, expected, "{name}"),
        (Err(LoadError::Unreadable(ReadError::Header { reason, .. })), Err(expected)) => {
            assert!(reason.contains(expected), "{name}: {reason}")
        }
        (got, expected) => panic!("{name}: got {got:?}, expected {expected:?}"),
    }
}

#[test]
fn the_fixtures_are_committed_as_their_generator_makes_them() {
    let dir = fixture_dir();
    if std::env::var_os(REGENERATE).is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in fixtures() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in fixtures() {
        let committed = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e} (set {REGENERATE}=1 to write it)"));
        assert_eq!(committed, bytes, "{name} differs from its generator");
    }
}

#[test]
fn check_gives_each_fixture_its_verdict_and_changes_nothing() {
    for (name, _) in fixtures() {
        let path = fixture_dir().join(name);
        let before = std::fs::read(&path).unwrap();
        assert_verdict(&path, name);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "check changed {name}"
        );
    }
}

#[test]
fn repair_cuts_each_damaged_fixture_to_a_valid_file() {
    for (name, _) in fixtures() {
        let scratch = Scratch::new();
        let original = std::fs::read(fixture_dir().join(name)).unwrap();
        let path = scratch.write(&original);
        match expected_verdict(name) {
            Ok(Verdict::Valid { .. }) => {
                assert_verdict(&path, name);
                assert!(matches!(check(&path, true), Ok(Verdict::Valid { .. })));
                assert_eq!(std::fs::read(&path).unwrap(), original);
            }
            Ok(Verdict::Damaged {
                records,
                offset,
                dropped,
                torn,
                reason,
                ..
            }) => {
                let repaired = check(&path, true).unwrap();
                assert_eq!(
                    repaired,
                    Verdict::Damaged {
                        records,
                        offset,
                        dropped,
                        torn,
                        reason,
                        repaired: true
                    },
                    "{name}"
                );
                assert_eq!(std::fs::read(&path).unwrap(), original[..offset as usize]);
                assert_eq!(
                    check(&path, false).unwrap(),
                    Verdict::Valid {
                        records,
                        bytes: offset
                    },
                    "{name} after repair"
                );
                assert_eq!(
                    read_path(&path).records,
                    sample_records()[..records as usize]
                );
            }
            Err(_) => {
                // An unreadable file is reported, never cut.
                assert!(matches!(
                    check(&path, true),
                    Err(LoadError::Unreadable(ReadError::Header { .. }))
                ));
                assert_eq!(std::fs::read(&path).unwrap(), original);
            }
        }
    }
}

#[test]
fn startup_truncates_a_torn_tail_and_loads_the_rest() {
    for name in ["torn-tail.aof", "zero-tail.aof"] {
        let scratch = Scratch::new();
        scratch.write(&std::fs::read(fixture_dir().join(name)).unwrap());
        let (store, aof) = scratch.load(false).unwrap();
        assert_eq!(state(&store), sample_state(), "{name}");
        assert_eq!(store.last_version(), 12);
        // The torn tail is cut before anything is appended, so this record follows the
        // valid ones directly and the file stays valid.
        store.set(b"after", b"x", 60_000, SetMode::Upsert);
        aof.close();
        let read = read_path(&scratch.path());
        assert_eq!(read.records[..7], sample_records());
        assert_eq!(read.records.len(), 8);
        assert_eq!(read.result.unwrap().torn_tail, None, "{name}");
    }
}

#[test]
fn startup_refuses_a_corrupt_file_unless_repairing() {
    let original = std::fs::read(fixture_dir().join("corrupt-middle.aof")).unwrap();
    let ends = ends(&sample_records());
    let scratch = Scratch::new();
    scratch.write(&original);
    match scratch.load(false) {
        Err(LoadError::Corrupt(ReadError::Corrupt { offset, .. })) => assert_eq!(offset, ends[1]),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a corrupt file was loaded"),
    }
    assert_eq!(
        std::fs::read(scratch.path()).unwrap(),
        original,
        "refusing changed the file"
    );

    // --repair-aof: the records before the damage are kept (here only LAST_VERSION 12), and
    // the file is cut there.
    let (store, aof) = scratch.load(true).unwrap();
    assert!(store.is_empty());
    assert_eq!(store.last_version(), 12);
    aof.close();
    assert_eq!(
        std::fs::read(scratch.path()).unwrap(),
        original[..ends[1] as usize]
    );
}

#[test]
fn startup_refuses_a_file_with_a_bad_header_even_when_repairing() {
    for name in ["bad-magic.aof", "future-version.aof"] {
        let original = std::fs::read(fixture_dir().join(name)).unwrap();
        let scratch = Scratch::new();
        scratch.write(&original);
        for repair in [false, true] {
            assert!(
                matches!(
                    scratch.load(repair),
                    Err(LoadError::Unreadable(ReadError::Header { .. }))
                ),
                "{name}, repair {repair}"
            );
            assert_eq!(std::fs::read(scratch.path()).unwrap(), original);
        }
    }
}
