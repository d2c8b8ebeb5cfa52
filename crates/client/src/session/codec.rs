//! Session data on the wire: a MessagePack map of string keys to values.
//!
//! This is the format Flask-Session 0.7+ writes (it encodes the session dict with msgpack),
//! and every front end in this crate writes it too: the [`Sessions`](super::Sessions) layer,
//! the tower-sessions store and the actix-session store all store a map from names to
//! values, so one application's sessions are readable by another sharing the store.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::SessionError;

/// Encodes a map (anything that serializes as one) as MessagePack.
pub(crate) fn encode<T: Serialize + ?Sized>(data: &T) -> Result<Vec<u8>, SessionError> {
    rmp_serde::to_vec(data).map_err(|e| SessionError::Data(format!("encoding: {e}")))
}

/// Decodes stored MessagePack bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, SessionError> {
    rmp_serde::from_slice(bytes).map_err(|e| SessionError::Data(format!("decoding: {e}")))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn a_map_is_a_msgpack_map() {
        let mut data = BTreeMap::new();
        data.insert("username".to_string(), json!("Alice"));
        let bytes = encode(&data).unwrap();
        // fixmap(1), fixstr(8) "username", fixstr(5) "Alice"
        let mut expected = vec![0x81, 0xa8];
        expected.extend_from_slice(b"username");
        expected.push(0xa5);
        expected.extend_from_slice(b"Alice");
        assert_eq!(bytes, expected);
        assert_eq!(decode::<BTreeMap<String, Value>>(&bytes).unwrap(), data);
    }

    #[test]
    fn reads_what_flask_session_writes() {
        // msgspec.msgpack.encode({"_permanent": True, "username": "Alice", "n": 3})
        let mut bytes = vec![0x83, 0xaa];
        bytes.extend_from_slice(b"_permanent");
        bytes.push(0xc3);
        bytes.push(0xa8);
        bytes.extend_from_slice(b"username");
        bytes.push(0xa5);
        bytes.extend_from_slice(b"Alice");
        bytes.extend_from_slice(&[0xa1, b'n', 0x03]);
        let data: BTreeMap<String, Value> = decode(&bytes).unwrap();
        assert_eq!(data["_permanent"], json!(true));
        assert_eq!(data["username"], json!("Alice"));
        assert_eq!(data["n"], json!(3));
    }

    #[test]
    fn nested_values_round_trip() {
        let mut data = BTreeMap::new();
        data.insert(
            "cart".to_string(),
            json!({"items": [1, 2.5, -3, null, "x"], "ok": false}),
        );
        let bytes = encode(&data).unwrap();
        assert_eq!(decode::<BTreeMap<String, Value>>(&bytes).unwrap(), data);
    }

    #[test]
    fn garbage_is_a_data_error() {
        for bytes in [&b""[..], b"\xc1", b"\x81\xa8user", b"\x93\x01\x02\x03"] {
            assert!(matches!(
                decode::<BTreeMap<String, Value>>(bytes),
                Err(SessionError::Data(_))
            ));
        }
    }
}
