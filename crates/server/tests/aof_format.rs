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
//!   with them, including a file of format version 1, which startup converts.
//! - A property test stores values made of well-formed records (of this file's salt and of
//!   others) and cuts the file at every offset: every cut is a torn tail, never corruption.

mod common;

use common::{del, set, touch};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use sessiond::aof::check::{check, Verdict};
use sessiond::aof::reader::{read_file, read_header, ReadError, ReadSummary};
use sessiond::aof::record::{
    decode_record, encode_file_header, Decoded, Format, Record, Salt, SessionRecord,
    FILE_HEADER_LEN, MAX_BATCH_BODY_LEN, MAX_BODY_LEN, RECORD_HEADER_LEN,
};
use sessiond::aof::replay::{load, LoadError};
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

#[path = "common/spec_crc32c.rs"]
mod crc32c_spec;
use crc32c_spec::crc32c_of as spec_crc32c_of;

/// The specification itself; `include_str!` also makes cargo rerun these tests when it changes.
const SPEC: &str = include_str!("../../../proto/AOF.md");

/// 2100-01-01T00:00:00Z: a deadline every test run sees in the future.
const FAR: u64 = 4_102_444_800_000;
/// 2023-11-14T22:13:20Z: a deadline every test run sees in the past.
const PAST: u64 = 1_700_000_000_000;
/// Where the reader stops looking for a valid record after damage (`proto/AOF.md` 6.2).
const MAX_TORN_TAIL: u64 = 32 * 1024 * 1024;
/// The salt of every example in the specification (section 1.1).
const EXAMPLE_SALT: u64 = 0x0123_4567_89ab_cdef;

fn salt() -> Salt {
    Salt::new(EXAMPLE_SALT)
}

fn format() -> Format {
    Format::V2(salt())
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A record's bytes, through the encoder the server uses.
fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    record.encode(salt(), &mut out);
    out
}

fn header() -> Vec<u8> {
    let mut out = Vec::new();
    encode_file_header(salt(), &mut out);
    out
}

/// A record as format version 1 frames it: `body_len`, CRC-32C of the body, body.
fn encode_v1(record: &Record) -> Vec<u8> {
    let body = &encode(record)[RECORD_HEADER_LEN..];
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(spec_crc32c(body).to_be_bytes());
    out.extend(body);
    out
}

/// A whole file of format version 1.
fn v1_file_of(records: &[Record]) -> Vec<u8> {
    let mut out = b"SESSAOF\0\0\0\0\x01\0\0\0\0".to_vec();
    for record in records {
        out.extend(encode_v1(record));
    }
    out
}

/// The records that state data (SET, TOUCH, DEL): a running writer may add LAST_VERSION and
/// CLOCK records of its own between them.
fn data_records(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .filter(|r| !matches!(r, Record::LastVersion { .. } | Record::Clock { .. }))
        .cloned()
        .collect()
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
    let mut records = v1_sample_records();
    records.insert(1, Record::Clock { now_ms: PAST });
    records
}

/// [`sample_records`] without the CLOCK record, which format version 1 does not have.
fn v1_sample_records() -> Vec<Record> {
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
    spec_crc32c_of(&[bytes])
}

// ---------------------------------------------------------------------------------------------
// The examples, copied from the specification
// ---------------------------------------------------------------------------------------------

const FILE_HEADER: &str = r##"
53 45 53 53 41 4f 46 00  # magic "SESSAOF\0"
00 00 00 02              # format version 2
00 00 00 00              # reserved
01 23 45 67 89 ab cd ef  # salt 0x0123456789abcdef
4c 43 54 4a              # header checksum 0x4c43544a
"##;

const SET_RECORD: &str = r##"
00 00 00 21              # body_len 33
e7 87 5e ae              # frame_check 0xe7875eae
a0 01 99 93              # crc 0xa0019993
01                       # kind SET
00 00 00 00 00 00 00 07  # version 7
00 00 01 8b cf dc 40 40  # expires_at_ms 1699999400000
00 03 61 62 63           # key_len 3, key "abc"
00 00 00 07              # value_len 7
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

const TOUCH_RECORD: &str = r##"
00 00 00 0e              # body_len 14
99 29 ec 54              # frame_check 0x9929ec54
36 c0 b6 9d              # crc 0x36c0b69d
02                       # kind TOUCH
00 00 01 8b cf e5 68 00  # expires_at_ms 1700000000000
00 03 61 62 63           # key_len 3, key "abc"
"##;

const DEL_RECORD: &str = r##"
00 00 00 06  # body_len 6
13 f0 b4 9b  # frame_check 0x13f0b49b
38 1b c9 94  # crc 0x381bc994
03           # kind DEL
00 03        # key_len 3
61 62 63     # key "abc"
"##;

const LAST_VERSION_RECORD: &str = r##"
00 00 00 09              # body_len 9
4d e3 88 bf              # frame_check 0x4de388bf
8b 9f 3d d5              # crc 0x8b9f3dd5
04                       # kind LAST_VERSION
00 00 00 00 00 00 00 07  # version 7
"##;

const CLOCK_RECORD: &str = r##"
00 00 00 09              # body_len 9
4d e3 88 bf              # frame_check 0x4de388bf
3a fe 1b f6              # crc 0x3afe1bf6
05                       # kind CLOCK
00 00 01 8b cf e5 68 00  # now_ms 1700000000000
"##;

const SESSION_SET_RECORD: &str = r##"
00 00 00 38              # body_len 56
8f 6b 42 0d              # frame_check 0x8f6b420d
71 a0 50 30              # crc 0x71a05030
06                       # kind SESSION_SET
00 00 00 00 00 00 00 07  # version 7
00 00 01 8b cf e5 68 00  # expires_at_ms 1700000000000
00 00 01 8b cf d6 25 c0  # created_ms 1699999000000
00 00 01 8b cf e3 e1 60  # last_access_ms 1699999900000
00 00 01 8b d0 1c 56 80  # absolute_deadline_ms 1700003600000
00 02 75 31              # owner_len 2, owner "u1"
00 03 61 62 63           # key_len 3, key "abc"
00 00 00 02 68 69        # value_len 2, value "hi"
"##;

const SESSION_TOUCH_RECORD: &str = r##"
00 00 00 16              # body_len 22
03 ae 73 f4              # frame_check 0x03ae73f4
b1 98 4c 08              # crc 0xb1984c08
07                       # kind SESSION_TOUCH
00 00 01 8b cf e6 52 60  # expires_at_ms 1700000060000
00 00 01 8b cf e5 68 00  # last_access_ms 1700000000000
00 03 61 62 63           # key_len 3, key "abc"
"##;

const ROTATE_RECORD: &str = r##"
00 00 00 3d              # body_len 61
ba 9a 56 11              # frame_check 0xba9a5611
e8 5d 97 ad              # crc 0xe85d97ad
08                       # kind ROTATE
00 03 61 62 63           # old_key_len 3, old key "abc"
00 00 00 00 00 00 00 08  # version 8
00 00 01 8b cf e5 68 00  # expires_at_ms 1700000000000
00 00 01 8b cf d6 25 c0  # created_ms 1699999000000
00 00 01 8b cf e3 e1 60  # last_access_ms 1699999900000
00 00 01 8b d0 1c 56 80  # absolute_deadline_ms 1700003600000
00 02 75 31              # owner_len 2, owner "u1"
00 03 78 79 7a           # key_len 3, key "xyz"
00 00 00 02 68 69        # value_len 2, value "hi"
"##;

const COMPLETE_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 02 00 00 00 00  # header, format version 2
01 23 45 67 89 ab cd ef 4c 43 54 4a              #   salt, header checksum
00 00 00 21 e7 87 5e ae a0 01 99 93              # offset 28: SET, body_len 33, checks
01 00 00 00 00 00 00 00 07                       #   kind SET, version 7
00 00 01 8b cf dc 40 40                          #   expires_at_ms 1699999400000
00 03 61 62 63 00 00 00 07 7b 22 75 22 3a 37 7d  #   key "abc", value '{"u":7}'
00 00 00 0e 99 29 ec 54 36 c0 b6 9d              # offset 73: TOUCH, body_len 14, checks
02 00 00 01 8b cf e5 68 00 00 03 61 62 63        #   expires_at 1700000000000, key "abc"
00 00 00 06 13 f0 b4 9b 38 1b c9 94              # offset 99: DEL, body_len 6, checks
03 00 03 61 62 63                                #   key "abc"
"##;

const TORN_TAIL_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 02 00 00 00 00  # header
01 23 45 67 89 ab cd ef 4c 43 54 4a              #   salt, header checksum
00 00 00 06 13 f0 b4 9b 38 1b c9 94 03 00 03 61  # offset 28: DEL "abc"
62 63                                            #
00 00 00 0e 99 29 ec 54 36 c0 b6 9d 02           # offset 46: TOUCH, body_len 14, 1 byte of body
"##;

const ZERO_TAIL_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 02 00 00 00 00  # header
01 23 45 67 89 ab cd ef 4c 43 54 4a              #   salt, header checksum
00 00 00 06 13 f0 b4 9b 38 1b c9 94 03 00 03 61  # offset 28: DEL "abc"
62 63                                            #
00 00 00 00 00 00 00 00 00 00 00 00              # offset 46: zeros
"##;

const VALUE_HOLDS_RECORD_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 02 00 00 00 00  # header
01 23 45 67 89 ab cd ef 4c 43 54 4a              #   salt, header checksum
00 00 00 2e b9 94 62 8a dc c4 38 41              # offset 28: SET, body_len 46, checks
01 00 00 00 00 00 00 00 08                       #   kind SET, version 8
00 00 01 8b cf e5 68 00                          #   expires_at_ms 1700000000000
00 03 61 62 63 00 00 00 14                       #   key "abc", value_len 20
00 00 00 06 13 f0 b4 9b 38 1b c9 94 03 00 03 61  #   value: the DEL example (offset 66) ...
62 63 21                                         #   ... then "!", the last "!" missing
"##;

const CORRUPT_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 02 00 00 00 00  # header
01 23 45 67 89 ab cd ef 4c 43 54 4a              #   salt, header checksum
00 00 00 06 13 f0 b4 9b 38 1b c9 94 03 00 03 61  # offset 28: DEL "abd", checksum mismatch
62 64                                            #
00 00 00 06 13 f0 b4 9b 38 1b c9 94 03 00 03 61  # offset 46: DEL "abc", valid
62 63                                            #
"##;

const REWRITTEN_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 02 00 00 00 00  # header, the old file's salt
01 23 45 67 89 ab cd ef 4c 43 54 4a              #
00 00 00 09 4d e3 88 bf 8b 9f 3d d5              # offset 28: LAST_VERSION, body_len 9, checks
04 00 00 00 00 00 00 00 07                       #   kind LAST_VERSION, version 7
00 00 00 09 4d e3 88 bf 3a fe 1b f6              # offset 49: CLOCK, body_len 9, checks
05 00 00 01 8b cf e5 68 00                       #   kind CLOCK, now_ms 1700000000000
"##;

const V1_FILE: &str = r##"
53 45 53 53 41 4f 46 00 00 00 00 01 00 00 00 00  # magic, format version 1, reserved
00 00 00 06 57 9b a2 a4                          # offset 16: body_len 6, crc32c(body)
03 00 03 61 62 63                                #   kind DEL, key "abc"
"##;

const BATCH_RECORD: &str = r##"
00 00 00 34              # body_len 52
c2 28 8d dd              # frame_check 0xc2288ddd
4b 6e f0 bf              # crc 0x4b6ef0bf
09                       # kind BATCH
00 00 00 02              # count 2
00 00 00 21              # len 33: the body of the SET example of section 4.3
01                       # kind SET
00 00 00 00 00 00 00 07  # version 7
00 00 01 8b cf dc 40 40  # expires_at_ms 1699999400000
00 03 61 62 63           # key_len 3, key "abc"
00 00 00 07              # value_len 7
7b 22 75 22 3a 37 7d     # value '{"u":7}'
00 00 00 06              # len 6
03                       # kind DEL
00 03 78 79 7a           # key_len 3, key "xyz"
"##;

/// Every example, by name.
const EXAMPLES: &[(&str, &str)] = &[
    ("FILE_HEADER", FILE_HEADER),
    ("SET_RECORD", SET_RECORD),
    ("TOUCH_RECORD", TOUCH_RECORD),
    ("DEL_RECORD", DEL_RECORD),
    ("LAST_VERSION_RECORD", LAST_VERSION_RECORD),
    ("CLOCK_RECORD", CLOCK_RECORD),
    ("SESSION_SET_RECORD", SESSION_SET_RECORD),
    ("SESSION_TOUCH_RECORD", SESSION_TOUCH_RECORD),
    ("ROTATE_RECORD", ROTATE_RECORD),
    ("BATCH_RECORD", BATCH_RECORD),
    ("COMPLETE_FILE", COMPLETE_FILE),
    ("TORN_TAIL_FILE", TORN_TAIL_FILE),
    ("ZERO_TAIL_FILE", ZERO_TAIL_FILE),
    ("VALUE_HOLDS_RECORD_FILE", VALUE_HOLDS_RECORD_FILE),
    ("CORRUPT_FILE", CORRUPT_FILE),
    ("REWRITTEN_FILE", REWRITTEN_FILE),
    ("V1_FILE", V1_FILE),
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
    let bytes = hex(FILE_HEADER);
    assert_eq!(header(), bytes);
    assert_eq!(FILE_HEADER_LEN, 28);
    // The salt is at offset 16 and the header checksum covers the 24 bytes before it.
    assert_eq!(bytes[16..24], EXAMPLE_SALT.to_be_bytes());
    assert_eq!(
        spec_crc32c(&bytes[..24]).to_be_bytes(),
        bytes[24..28],
        "header checksum"
    );
}

/// The spec's checks of a version 2 record: the frame check over `salt ‖ body_len` and the
/// checksum over `salt ‖ body` (section 5).
fn assert_spec_checks(bytes: &[u8]) {
    let salt = EXAMPLE_SALT.to_be_bytes();
    let field = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(
        spec_crc32c_of(&[&salt, &bytes[..4]]),
        field(4),
        "frame check"
    );
    assert_eq!(spec_crc32c_of(&[&salt, &bytes[12..]]), field(8), "checksum");
}

/// `block` is exactly one record that decodes to `record`, and `record` encodes to it.
fn check_record(block: &str, record: Record) {
    let bytes = hex(block);
    assert_eq!(encode(&record), bytes, "encoding");
    assert_eq!(
        decode_record(&Bytes::from(bytes.clone()), format()),
        Decoded::Record(record, bytes.len())
    );
    assert_spec_checks(&bytes);
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
fn clock_record() {
    check_record(
        CLOCK_RECORD,
        Record::Clock {
            now_ms: 1_700_000_000_000,
        },
    );
}

/// The session of the examples of sections 4.10 and 4.12, at `key` with `version`.
fn example_session(key: &'static [u8], version: u64) -> SessionRecord {
    SessionRecord {
        key: Bytes::from_static(key),
        value: Bytes::from_static(b"hi"),
        expires_at_ms: 1_700_000_000_000,
        version,
        created_ms: 1_699_999_000_000,
        last_access_ms: 1_699_999_900_000,
        absolute_deadline_ms: Some(1_700_003_600_000),
        owner: Some(Bytes::from_static(b"u1")),
    }
}

#[test]
fn session_set_record() {
    check_record(
        SESSION_SET_RECORD,
        Record::SessionSet(example_session(b"abc", 7)),
    );
}

#[test]
fn session_touch_record() {
    check_record(
        SESSION_TOUCH_RECORD,
        Record::SessionTouch {
            key: Bytes::from_static(b"abc"),
            expires_at_ms: 1_700_000_060_000,
            last_access_ms: 1_700_000_000_000,
        },
    );
}

#[test]
fn rotate_record() {
    check_record(
        ROTATE_RECORD,
        Record::Rotate {
            old_key: Bytes::from_static(b"abc"),
            new: example_session(b"xyz", 8),
        },
    );
}

#[test]
fn session_records_replay_to_the_owner_index_and_are_not_version_1_kinds() {
    // The three examples in a file, replayed at a time when the session is still live: the
    // old key is gone, the new one is the owner's, with the record's times and deadlines.
    let mut file = hex(FILE_HEADER);
    for block in [SESSION_SET_RECORD, SESSION_TOUCH_RECORD, ROTATE_RECORD] {
        file.extend(hex(block));
    }
    let scratch = Scratch::new();
    scratch.write(&file);
    let store = Store::with_parts(Clock::starting_at(1_699_999_950_000), None);
    load(&scratch.settings(), &store, false).unwrap();
    assert!(matches!(store.get(b"abc", None), GetReply::Miss));
    let sessions = store.sessions_of(b"u1");
    assert_eq!(sessions.len(), 1);
    let session = &sessions[0];
    assert_eq!(session.key, Bytes::from_static(b"xyz"));
    assert_eq!(
        (session.version, session.created_ms, session.last_access_ms),
        (8, 1_699_999_000_000, 1_699_999_900_000)
    );
    assert_eq!(session.expires_at_ms, 1_700_000_000_000);
    assert_eq!(session.absolute_deadline_ms, Some(1_700_003_600_000));
    // Version 1 did not define them.
    for block in [SESSION_SET_RECORD, SESSION_TOUCH_RECORD, ROTATE_RECORD] {
        let body = &hex(block)[RECORD_HEADER_LEN..];
        let mut v1 = (body.len() as u32).to_be_bytes().to_vec();
        v1.extend(spec_crc32c(body).to_be_bytes());
        v1.extend(body);
        assert!(matches!(
            decode_record(&Bytes::from(v1), Format::V1),
            Decoded::Invalid(_)
        ));
    }
}

/// The store that loading `file` gives at the time `now_ms`.
fn replay_at(file: &[u8], now_ms: u64) -> Store {
    let scratch = Scratch::new();
    scratch.write(file);
    let store = Store::with_parts(Clock::starting_at(now_ms), None);
    load(&scratch.settings(), &store, false).unwrap();
    store
}

#[test]
fn a_rotation_cut_anywhere_by_a_crash_leaves_the_old_key_or_the_new_one_never_both() {
    let mut file = hex(FILE_HEADER);
    file.extend(hex(SESSION_SET_RECORD));
    let before_rotation = file.len();
    file.extend(hex(ROTATE_RECORD));
    for cut in before_rotation..=file.len() {
        let store = replay_at(&file[..cut], 1_699_999_950_000);
        let live = |key: &[u8]| matches!(store.get(key, None), GetReply::Hit(_));
        let listed: Vec<_> = store
            .sessions_of(b"u1")
            .into_iter()
            .map(|s| s.key)
            .collect();
        if cut == file.len() {
            assert!(!live(b"abc") && live(b"xyz"), "whole file");
            assert_eq!(listed, [Bytes::from_static(b"xyz")]);
        } else {
            assert!(live(b"abc") && !live(b"xyz"), "cut at {cut}");
            assert_eq!(listed, [Bytes::from_static(b"abc")], "cut at {cut}");
        }
    }
}

fn example_batch() -> Record {
    Record::Batch(vec![example_set(), del(b"xyz")])
}

#[test]
fn batch_record() {
    check_record(BATCH_RECORD, example_batch());
}

#[test]
fn a_batch_cut_anywhere_by_a_crash_is_applied_whole_or_not_at_all() {
    // Before the batch, "xyz" holds an entry and "abc" none; the batch sets one and deletes
    // the other.
    let before = [set(b"xyz", b"old", FAR, 3)];
    let mut file = file_of(&before);
    let start = file.len();
    file.extend(hex(BATCH_RECORD));
    for cut in start..=file.len() {
        let store = replay_at(&file[..cut], 1_699_999_000_000);
        let live = |key: &[u8]| matches!(store.get(key, None), GetReply::Hit(_));
        if cut == file.len() {
            assert!(live(b"abc") && !live(b"xyz"), "whole file");
        } else {
            assert!(!live(b"abc") && live(b"xyz"), "cut at {cut}");
        }
    }
}

#[test]
fn a_batch_holds_only_writes_and_no_batch() {
    let entry = |body: &[u8]| {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend(body);
        bytes
    };
    let batch = |count: u32, entries: &[&[u8]]| {
        let mut body = vec![0x09];
        body.extend(count.to_be_bytes());
        for e in entries {
            body.extend(entry(e));
        }
        framed(&body)
    };
    let del_body: &[u8] = &[0x03, 0x00, 0x01, b'k'];
    let clock_body: &[u8] = &[0x05, 0, 0, 0, 0, 0, 0, 0, 1];
    let nested = {
        let mut body = vec![0x09];
        body.extend(1u32.to_be_bytes());
        body.extend(entry(del_body));
        body
    };
    // The well-formed one decodes.
    assert!(matches!(
        decode_record(&batch(1, &[del_body]), format()),
        Decoded::Record(Record::Batch(_), _)
    ));
    for (what, bytes) in [
        ("empty", batch(0, &[])),
        ("count beyond the entries", batch(2, &[del_body])),
        ("a CLOCK inside", batch(1, &[clock_body])),
        ("a batch inside", batch(1, &[&nested])),
        ("a damaged entry", batch(1, &[&[0x03, 0x00, 0x05, b'k']])),
        // Found by the aof_record fuzz target: it made the decoder read a kind byte that
        // was not there.
        ("an empty entry", batch(1, &[&[]])),
    ] {
        assert!(
            matches!(decode_record(&bytes, format()), Decoded::Invalid(_)),
            "{what}"
        );
    }
    // Bytes after the last entry.
    let mut body = vec![0x09];
    body.extend(1u32.to_be_bytes());
    body.extend(entry(del_body));
    body.push(0);
    assert!(matches!(
        decode_record(&framed(&body), format()),
        Decoded::Invalid(_)
    ));
}

#[test]
fn the_checksum_is_crc32c_as_the_spec_writes_it() {
    // The catalogue check value, and the worked values of section 5.
    assert_eq!(spec_crc32c(b"123456789"), 0xE306_9283);
    let salt = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
    let touch_body = [
        0x02, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x00, 0x03, 0x61, 0x62, 0x63,
    ];
    assert_eq!(spec_crc32c_of(&[&salt, &[0, 0, 0, 0x0e]]), 0x9929_EC54);
    assert_eq!(spec_crc32c_of(&[&salt, &touch_body]), 0x36C0_B69D);
    assert_eq!(hex(TOUCH_RECORD)[12..], touch_body);
    // The damaged body of the corruption example (section 6.3).
    assert_eq!(
        spec_crc32c_of(&[&salt, &[0x03, 0x00, 0x03, 0x61, 0x62, 0x64]]),
        0xECD1_AD7F
    );
    // And the spec's algorithm agrees with the server's on records of every kind and size.
    for record in sample_records()
        .into_iter()
        .chain([set(b"big", &vec![0xa5; 100_000], FAR, 1)])
    {
        assert_spec_checks(&encode(&record));
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
    assert_eq!(bytes.len(), 117);
    let records = [example_set(), example_touch(), example_del()];
    assert_eq!(ends(&records), [28, 73, 99, 117]);

    let scratch = Scratch::new();
    let read = scratch.read(&bytes);
    assert_eq!(read.records, records);
    let summary = read.result.unwrap();
    assert_eq!(summary.torn_tail, None);
    assert_eq!((summary.records, summary.valid_len), (3, 117));

    let (store, aof) = scratch.load(false).unwrap();
    assert!(store.is_empty());
    assert_eq!(store.last_version(), 7);
    assert_eq!(
        store.set(b"abc", b"x", 60_000, SetMode::Upsert),
        SetOutcome::Stored { version: 8 }
    );
    aof.close();
}

#[tokio::test(start_paused = true)]
async fn rewriting_the_complete_file_gives_the_rewritten_file() {
    let scratch = Scratch::new();
    scratch.write(&hex(COMPLETE_FILE));
    // A clock that stands still at the example's time, so the CLOCK record is exact.
    let store = Store::with_parts(Clock::following_tokio_from(1_700_000_000_000), None);
    let (_, _, loaded_salt) = load(&scratch.settings(), &store, false).unwrap();
    assert_eq!(loaded_salt, salt(), "the salt is read from the header");
    let dir = scratch.dir.path();
    let (file, len) = write_snapshot(dir, &store, loaded_salt, &no_hook).unwrap();
    finish(dir, file, len, &[], &no_hook).unwrap();
    assert_eq!(std::fs::read(scratch.path()).unwrap(), hex(REWRITTEN_FILE));
}

#[test]
fn the_body_length_limits_of_section_4_9() {
    assert_eq!(MAX_BODY_LEN, 16_908_593);
    assert_eq!(MAX_BATCH_BODY_LEN, 67_108_869);
    // A frame with a correct frame check and no body.
    let frame = |body_len: u32| {
        let len = body_len.to_be_bytes();
        let mut bytes = len.to_vec();
        bytes.extend(spec_crc32c_of(&[&EXAMPLE_SALT.to_be_bytes(), &len]).to_be_bytes());
        bytes.extend([0; 4]);
        Bytes::from(bytes)
    };
    // The longest body (a batch's) is a record that needs more bytes; one more is not a
    // record at all. Past the longest write, only a batch is.
    let with_kind = |body_len: u32, kind: u8| {
        let mut bytes = frame(body_len).to_vec();
        bytes.push(kind);
        Bytes::from(bytes)
    };
    assert_eq!(
        decode_record(&frame(MAX_BATCH_BODY_LEN), format()),
        Decoded::Incomplete
    );
    assert_eq!(
        decode_record(&with_kind(MAX_BATCH_BODY_LEN, 0x09), format()),
        Decoded::Incomplete
    );
    assert_eq!(
        decode_record(&with_kind(MAX_BODY_LEN, 0x01), format()),
        Decoded::Incomplete
    );
    assert!(matches!(
        decode_record(&with_kind(MAX_BODY_LEN + 1, 0x01), format()),
        Decoded::Invalid(_)
    ));
    assert!(matches!(
        decode_record(&frame(MAX_BATCH_BODY_LEN + 1), format()),
        Decoded::Invalid(_)
    ));
    assert!(matches!(
        decode_record(&frame(0), format()),
        Decoded::Invalid(_)
    ));
}

/// A record with the given body and its correct checks.
fn framed(body: &[u8]) -> Bytes {
    let salt = EXAMPLE_SALT.to_be_bytes();
    let len = (body.len() as u32).to_be_bytes();
    let mut bytes = len.to_vec();
    bytes.extend(spec_crc32c_of(&[&salt, &len]).to_be_bytes());
    bytes.extend(spec_crc32c_of(&[&salt, body]).to_be_bytes());
    bytes.extend(body);
    Bytes::from(bytes)
}

#[test]
fn fields_must_fill_the_body_exactly_even_with_a_good_checksum() {
    // DEL "abc" with one byte too many, and one too few.
    for body in [&b"\x03\x00\x03abcX"[..], &b"\x03\x00\x03ab"[..]] {
        assert!(matches!(
            decode_record(&framed(body), format()),
            Decoded::Invalid(_)
        ));
    }
    // SET whose value_len is one less than the bytes left.
    let mut body = hex(SET_RECORD)[12..].to_vec();
    let at = body.len() - 7 - 4;
    body[at + 3] = 6;
    assert!(matches!(
        decode_record(&framed(&body), format()),
        Decoded::Invalid(_)
    ));
    // An undefined kind, and a CLOCK with a short body.
    for body in [&b"\x06\x00\x00"[..], b"\x05\x00\x00"] {
        assert!(matches!(
            decode_record(&framed(body), format()),
            Decoded::Invalid(_)
        ));
    }
    // A key of length 0 is accepted (sessiond never writes one).
    assert_eq!(
        decode_record(&framed(b"\x03\x00\x00"), format()),
        Decoded::Record(del(b""), 15)
    );
}

// ---------------------------------------------------------------------------------------------
// Section 6: the spec's damage examples
// ---------------------------------------------------------------------------------------------

#[test]
fn torn_tail_example() {
    let read = Scratch::new().read(&hex(TORN_TAIL_FILE));
    assert_torn(&read, &[example_del()], 46, "ends inside a record");
}

#[test]
fn zero_tail_example() {
    let read = Scratch::new().read(&hex(ZERO_TAIL_FILE));
    assert_torn(
        &read,
        &[example_del()],
        46,
        "record length 0 is out of range",
    );
}

#[test]
fn a_torn_set_whose_value_holds_a_valid_record_is_a_torn_tail() {
    let bytes = hex(VALUE_HOLDS_RECORD_FILE);
    assert_eq!(bytes.len(), 85);
    // The value really holds a valid record of this file, at offset 66.
    let del_example = hex(DEL_RECORD);
    assert_eq!(bytes[66..84], del_example);
    assert_eq!(
        decode_record(&Bytes::from(bytes[66..].to_vec()), format()),
        Decoded::Record(example_del(), 18)
    );
    // And the file is the SET, less its last byte.
    let mut value = del_example;
    value.extend(b"!!");
    let whole = encode(&set(b"abc", &value, 1_700_000_000_000, 8));
    assert_eq!(bytes[28..], whole[..whole.len() - 1]);
    let read = Scratch::new().read(&bytes);
    assert_torn(&read, &[], 28, "ends inside a record");
}

#[test]
fn corruption_example() {
    let read = Scratch::new().read(&hex(CORRUPT_FILE));
    assert_corrupt(
        &read,
        &[],
        28,
        "checksum mismatch (stored 381bc994, computed ecd1ad7f); a valid record follows at offset 46",
    );
}

#[test]
fn the_version_1_example_is_read_with_the_version_1_rules() {
    let bytes = hex(V1_FILE);
    assert_eq!(bytes, v1_file_of(&[example_del()]));
    let scratch = Scratch::new();
    assert_eq!(read_header(&scratch.write(&bytes)).unwrap(), Format::V1);
    let read = scratch.read(&bytes);
    assert_eq!(read.records, [example_del()]);
    assert_eq!(read.result.unwrap().torn_tail, None);
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
    assert_eq!(read.records[..sample_records().len()], sample_records());
    let appended = data_records(&read.records[sample_records().len()..]);
    assert!(
        matches!(&appended[..], [Record::Set { key, version: 13, .. }] if key == "new"),
        "{appended:?}"
    );
    let (store, aof) = scratch.load(false).unwrap();
    assert!(store.last_version() >= 13);
    assert_eq!(store.len(), 3);
    aof.close();
}

#[test]
fn a_new_data_directory_gets_a_file_holding_only_the_header() {
    let scratch = Scratch::new();
    // Loading alone, without the writer that then starts appending.
    let store = Store::new();
    let (_, len, created_salt) = load(&scratch.settings(), &store, false).unwrap();
    assert!(store.is_empty());
    assert_eq!(store.last_version(), 0);
    // A header with a salt of its own (random, so not the examples'), and nothing else.
    let bytes = std::fs::read(scratch.path()).unwrap();
    assert_eq!(bytes.len(), FILE_HEADER_LEN);
    assert_eq!(len, FILE_HEADER_LEN as u64);
    assert_ne!(created_salt, salt());
    assert_eq!(
        read_header(&scratch.path()).unwrap(),
        Format::V2(created_salt)
    );
    assert_eq!(bytes[..16], header()[..16]);
    assert!(matches!(read_header(&scratch.path()), Ok(Format::V2(_))));
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
            assert_header_error(&read, "shorter than");
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
                // Reserved field, salt and the checksum itself: a damaged salt must not make
                // every record look torn.
                12..=27 => assert_header_error(&read, "header checksum mismatch"),
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
    future[8..12].copy_from_slice(&3u32.to_be_bytes());

    // A file from the sessiond before format version 2, which startup converts.
    let v1 = v1_file_of(&v1_sample_records());

    vec![
        ("valid.aof", valid),
        ("torn-tail.aof", torn),
        ("corrupt-middle.aof", corrupt),
        ("zero-tail.aof", zeros),
        ("bad-magic.aof", redis.to_vec()),
        ("future-version.aof", future),
        ("v1.aof", v1),
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
            // The third record (SET "a") is damaged; the fourth is valid.
            let bytes = std::fs::read(fixture_dir().join(name)).unwrap();
            let crc = |body: &[u8]| spec_crc32c_of(&[&EXAMPLE_SALT.to_be_bytes(), body]);
            let body = &bytes[ends[2] as usize + RECORD_HEADER_LEN..ends[3] as usize];
            let stored = crc(&encode(&records[2])[RECORD_HEADER_LEN..]);
            let reason = format!(
                "checksum mismatch (stored {stored:08x}, computed {:08x}); \
                 a valid record follows at offset {}",
                crc(body),
                ends[3]
            );
            Ok(damaged(2, ends[2], false, &reason))
        }
        "zero-tail.aof" => Ok(damaged(
            records.len(),
            valid_len,
            true,
            "record length 0 is out of range",
        )),
        "bad-magic.aof" => Err("bad magic"),
        "future-version.aof" => Err("format version 3 is not supported"),
        "v1.aof" => Ok(Verdict::Valid {
            records: v1_sample_records().len() as u64,
            bytes: v1_file_of(&v1_sample_records()).len() as u64,
        }),
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
        let n = sample_records().len();
        assert_eq!(read.records[..n], sample_records());
        let appended = data_records(&read.records[n..]);
        assert!(
            matches!(&appended[..], [Record::Set { key, .. }] if key == "after"),
            "{name}: {appended:?}"
        );
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
        Err(LoadError::Corrupt(ReadError::Corrupt { offset, .. })) => assert_eq!(offset, ends[2]),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a corrupt file was loaded"),
    }
    assert_eq!(
        std::fs::read(scratch.path()).unwrap(),
        original,
        "refusing changed the file"
    );

    // --repair-aof: the records before the damage are kept (here only LAST_VERSION 12 and
    // CLOCK), and the file is cut there.
    let (store, aof) = scratch.load(true).unwrap();
    assert!(store.is_empty());
    assert_eq!(store.last_version(), 12);
    aof.close();
    // Cut there; whatever the writer appended since follows the cut.
    let read = read_path(&scratch.path());
    assert_eq!(read.records[..2], sample_records()[..2]);
    assert_eq!(data_records(&read.records), []);
    assert!(std::fs::read(scratch.path())
        .unwrap()
        .starts_with(&original[..ends[2] as usize]));
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

// ---------------------------------------------------------------------------------------------
// Section 12: a file of format version 1 is read and converted
// ---------------------------------------------------------------------------------------------

#[test]
fn startup_converts_a_version_1_file_before_serving() {
    let v1 = std::fs::read(fixture_dir().join("v1.aof")).unwrap();
    // A crash in the middle of appending to the old file: read with the old rules, the torn
    // record is dropped, then the rest is converted.
    let mut torn = v1.clone();
    let late = encode_v1(&set(b"late", b"never acknowledged", FAR, 13));
    torn.extend(&late[..late.len() / 2]);
    for original in [v1, torn] {
        let scratch = Scratch::new();
        scratch.write(&original);
        let (store, aof) = scratch.load(false).unwrap();
        assert_eq!(state(&store), sample_state());
        assert_eq!(store.last_version(), 12);

        // Before anything was written, the file already is a version 2 file holding what was
        // loaded, with a salt of its own; the temporary file is gone.
        assert!(matches!(read_header(&scratch.path()), Ok(Format::V2(_))));
        let read = read_path(&scratch.path());
        assert_eq!(read.result.as_ref().unwrap().torn_tail, None);
        let mut sets = data_records(&read.records);
        sets.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(
            sets,
            [
                set(b"a", b"alpha", FAR + 60_000, 3),
                set(b"k\x00\xff", b"\x00binary\xff", FAR, 11),
            ]
        );
        assert!(read.records.contains(&Record::LastVersion { version: 12 }));
        assert!(read
            .records
            .iter()
            .any(|r| matches!(r, Record::Clock { .. })));
        let names: Vec<_> = std::fs::read_dir(scratch.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);

        // New writes go to the converted file, and a second start reads it all.
        assert_eq!(
            store.set(b"new", b"v", 60_000, SetMode::CreateOnly),
            SetOutcome::Stored { version: 13 }
        );
        aof.close();
        let (store, aof) = scratch.load(false).unwrap();
        assert_eq!(store.len(), 3);
        assert!(store.last_version() >= 13);
        aof.close();
    }
}

#[test]
fn version_1_rules_search_from_the_next_byte_even_inside_a_torn_record() {
    // The reason for version 2: under version 1, a torn SET whose value holds a version 1
    // record is reported as corruption. Kept so that the old rules stay what section 12 says.
    let records = v1_sample_records();
    let mut bytes = v1_file_of(&records);
    let offset = bytes.len() as u64;
    let planted = encode_v1(&del(b"a"));
    let mut value = planted.clone();
    value.extend(b"!!");
    let torn = encode_v1(&set(b"x", &value, FAR, 20));
    bytes.extend(&torn[..torn.len() - 1]);
    let read = Scratch::new().read(&bytes);
    assert_corrupt(&read, &records, offset, "a valid record follows");
}

// ---------------------------------------------------------------------------------------------
// Section 6.2: values made of records never make a torn write look like corruption
// ---------------------------------------------------------------------------------------------

/// Bytes a client might put in a value to imitate records.
#[derive(Debug, Clone)]
enum Piece {
    /// A record with this file's salt (which no client knows, but the format must not care).
    SameSalt(Record),
    /// A record with another salt, as a client guessing one would write.
    OtherSalt(u64, Record),
    /// A record of format version 1.
    Version1(Record),
    /// Anything.
    Raw(Vec<u8>),
    /// A SET record with this file's salt whose value is made of pieces in turn.
    Nested(Vec<Piece>),
}

fn record_strategy() -> impl Strategy<Value = Record> {
    let key = prop::collection::vec(any::<u8>(), 0..6);
    let value = prop::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        (key.clone(), value, any::<u64>(), any::<u64>())
            .prop_map(|(k, v, deadline, version)| set(&k, &v, deadline, version)),
        (key.clone(), any::<u64>()).prop_map(|(k, deadline)| touch(&k, deadline)),
        key.prop_map(|k| del(&k)),
        any::<u64>().prop_map(|version| Record::LastVersion { version }),
        any::<u64>().prop_map(|now_ms| Record::Clock { now_ms }),
    ]
}

fn piece_strategy() -> impl Strategy<Value = Piece> {
    let leaf = prop_oneof![
        3 => record_strategy().prop_map(Piece::SameSalt),
        2 => (any::<u64>(), record_strategy()).prop_map(|(s, r)| Piece::OtherSalt(s, r)),
        2 => record_strategy().prop_map(Piece::Version1),
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Piece::Raw),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop::collection::vec(inner, 1..3).prop_map(Piece::Nested)
    })
}

fn piece_bytes(piece: &Piece) -> Vec<u8> {
    match piece {
        Piece::SameSalt(record) => encode(record),
        Piece::OtherSalt(other, record) => {
            let mut out = Vec::new();
            record.encode(Salt::new(*other), &mut out);
            out
        }
        Piece::Version1(record) => encode_v1(record),
        Piece::Raw(bytes) => bytes.clone(),
        Piece::Nested(pieces) => {
            let value: Vec<u8> = pieces.iter().flat_map(piece_bytes).collect();
            encode(&set(b"nested", &value, FAR, 1))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_cut_of_sets_whose_values_hold_records_is_a_torn_tail(
        values in prop::collection::vec(prop::collection::vec(piece_strategy(), 1..5), 1..4)
    ) {
        // SETs through the server's encoder, each value the concatenation of its pieces.
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, pieces)| {
                let value: Vec<u8> = pieces.iter().flat_map(piece_bytes).collect();
                set(format!("s{i}").as_bytes(), &value, FAR, i as u64 + 1)
            })
            .collect();
        let file = file_of(&records);
        let ends = ends(&records);
        let scratch = Scratch::new();
        // Every offset of a file up to 2000 bytes; every step-th offset of a larger one (nested
        // values make some large), to keep the test quick.
        let step = (file.len() / 1000).max(1);
        for cut in (FILE_HEADER_LEN..=file.len()).step_by(step) {
            let read = scratch.read(&file[..cut]);
            let whole = ends.iter().filter(|&&end| end <= cut as u64).count() - 1;
            prop_assert_eq!(&read.records[..], &records[..whole], "cut at {}", cut);
            let summary = match &read.result {
                Ok(summary) => summary,
                Err(e) => return Err(TestCaseError::fail(format!("cut at {cut}: {e}"))),
            };
            prop_assert_eq!(summary.valid_len, ends[whole], "cut at {}", cut);
            if cut as u64 == ends[whole] {
                prop_assert_eq!(&summary.torn_tail, &None, "cut at {}", cut);
            } else {
                prop_assert!(summary.torn_tail.is_some(), "cut at {}", cut);
            }
        }
    }
}

/// A tail in which a SET frame starts every 32 bytes, each announcing a body that runs to the
/// end of the tail with a structure that fits it (a SET whose value is the rest): a reader
/// that checksummed the body at every such offset would do quadratic work. `frame` writes
/// the frame fields after `body_len`.
fn nested_set_frames(len: usize, frame: impl Fn(u32) -> Vec<u8>) -> Vec<u8> {
    let mut tail = vec![0xa5; len];
    let head_len = 4 + frame(0).len();
    for at in (0..len - 64).step_by(32) {
        let body_len = (len - at - head_len) as u32;
        let mut head = body_len.to_be_bytes().to_vec();
        head.extend(frame(body_len));
        head.push(0x01); // SET
        head.extend([0; 16]); // version, deadline
        head.extend([0, 0]); // key_len 0
        head.extend((body_len - 23).to_be_bytes()); // value_len: the rest
        tail[at..at + head.len()].copy_from_slice(&head);
    }
    tail
}

#[test]
fn the_search_after_damage_is_linear_even_when_values_nest_record_frames() {
    // 8 MiB of frames a client could plant in values, guessing the salt 0: the frame checks
    // fail in constant time at every offset. (Read with the rules of format version 1, which
    // has no frame check, the same shape costs a checksum of megabytes at each of a
    // quarter of a million offsets.)
    let records = sample_records();
    let mut bytes = file_of(&records);
    let offset = bytes.len() as u64;
    bytes.extend(nested_set_frames(8 * 1024 * 1024, |body_len| {
        // The frame check a client guessing salt 0 would write, and any checksum.
        let len = body_len.to_be_bytes();
        let check = spec_crc32c_of(&[&0u64.to_be_bytes(), &len]);
        let mut out = check.to_be_bytes().to_vec();
        out.extend([0; 4]);
        out
    }));
    let started = std::time::Instant::now();
    let read = Scratch::new().read(&bytes);
    let elapsed = started.elapsed();
    assert_torn(&read, &records, offset, "");
    // Linear work on 8 MiB takes seconds in a debug build; quadratic would take hours.
    assert!(
        elapsed < std::time::Duration::from_secs(60),
        "took {elapsed:?}"
    );
}
