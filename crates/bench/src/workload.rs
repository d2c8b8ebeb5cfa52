//! What the load generator asks for: the kinds of operation, their mix, the keys, and the
//! random choices between them.
//!
//! Everything here is the same whichever server is measured; only [`crate::protocol`] knows
//! how an operation is spelled on a given wire.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

/// An operation of the session workload.
///
/// Each is the closest equivalent on every target, so that the same mix means the same work:
/// see the protocol modules for the exact commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// Read a session and slide its expiry in the same round trip (the common request of a
    /// web application with sliding sessions).
    Get,
    /// Read a session without touching its expiry.
    Read,
    /// Write a session (unconditional upsert) with the TTL.
    Set,
    /// Delete a session (logout).
    Del,
    /// Slide a session's expiry without reading it.
    Touch,
    /// Log in: write the session bound to its owner (sessiond's native protocol only).
    Login,
    /// List the sessions of the key's owner: a "your devices" page (native only).
    Devices,
    /// End every session of the key's owner: "log out everywhere" (native only).
    EndAll,
    /// Release a session lock the way phpredis does: `EVAL` of its compare-and-delete
    /// script (RESP only).
    Unlock,
    /// A transaction of three commands, `MULTI`, `GETEX`, `SET`, `PEXPIRE`, `EXEC`: a
    /// read, write and touch of the session, applied together (RESP only).
    Multi,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; KINDS] = [
        OpKind::Get,
        OpKind::Read,
        OpKind::Set,
        OpKind::Del,
        OpKind::Touch,
        OpKind::Login,
        OpKind::Devices,
        OpKind::EndAll,
        OpKind::Unlock,
        OpKind::Multi,
    ];

    /// The name used in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Read => "read",
            OpKind::Set => "set",
            OpKind::Del => "del",
            OpKind::Touch => "touch",
            OpKind::Login => "login",
            OpKind::Devices => "devices",
            OpKind::EndAll => "end_all",
            OpKind::Unlock => "unlock",
            OpKind::Multi => "multi",
        }
    }

    /// Whether the operation is about owners, which only sessiond's native protocol has.
    pub fn needs_owners(self) -> bool {
        matches!(self, OpKind::Login | OpKind::Devices | OpKind::EndAll)
    }

    /// Whether the operation is a script or a transaction, which only RESP has.
    pub fn needs_resp(self) -> bool {
        matches!(self, OpKind::Unlock | OpKind::Multi)
    }

    /// The owner of `key` for the owner operations: the key without its last digit, so that
    /// the keys `…0` to `…9` are the sessions of one owner (a user with ten devices).
    pub fn owner_of(key: &[u8]) -> &[u8] {
        &key[..key.len().saturating_sub(1)]
    }

    /// Position in [`OpKind::ALL`], for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many kinds of operation there are.
pub const KINDS: usize = 10;

/// Relative weights of the operation kinds, e.g. `get=80,set=15,del=5`.
///
/// Weights are integers and need not add up to 100; a kind that is not named has weight 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; KINDS],
    /// Running sums of `weights`, so one random number below the total picks a kind.
    cumulative: [u64; KINDS],
}

impl Mix {
    /// The weight of `kind`.
    pub fn weight(&self, kind: OpKind) -> u32 {
        self.weights[kind.index()]
    }

    /// Sum of all weights (at least 1).
    pub fn total(&self) -> u64 {
        self.cumulative[KINDS - 1]
    }

    /// The kinds with a non-zero weight, in report order.
    pub fn kinds(&self) -> impl Iterator<Item = OpKind> + '_ {
        OpKind::ALL.into_iter().filter(|k| self.weight(*k) > 0)
    }

    /// The kind that `draw` (in `0..self.total()`) falls on.
    pub fn pick(&self, draw: u64) -> OpKind {
        for kind in OpKind::ALL {
            if draw < self.cumulative[kind.index()] {
                return kind;
            }
        }
        // Only reachable with a draw out of range; the last kind with weight is as good as any.
        self.kinds().last().unwrap_or(OpKind::Get)
    }

    fn from_weights(weights: [u32; KINDS]) -> Result<Mix, String> {
        let mut cumulative = [0u64; KINDS];
        let mut sum = 0u64;
        for (slot, weight) in cumulative.iter_mut().zip(weights) {
            sum += u64::from(weight);
            *slot = sum;
        }
        if sum == 0 {
            return Err("the mix must give at least one operation a non-zero weight".into());
        }
        Ok(Mix {
            weights,
            cumulative,
        })
    }
}

impl Default for Mix {
    /// 80 % get-with-touch, 15 % set, 5 % del: a session store mostly reads (and slides) the
    /// session of each request, writes when the session changed, and deletes on logout.
    fn default() -> Self {
        let mut weights = [0; KINDS];
        weights[OpKind::Get.index()] = 80;
        weights[OpKind::Set.index()] = 15;
        weights[OpKind::Del.index()] = 5;
        match Mix::from_weights(weights) {
            Ok(mix) => mix,
            Err(_) => unreachable!("the default weights are not all zero"),
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(spec: &str) -> Result<Mix, String> {
        let mut weights = [0u32; KINDS];
        let mut seen = [false; KINDS];
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not NAME=WEIGHT"))?;
            let kind = OpKind::from_name(name.trim()).ok_or_else(|| {
                let names: Vec<_> = OpKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown operation `{}` (expected one of {})",
                    name.trim(),
                    names.join(", ")
                )
            })?;
            if seen[kind.index()] {
                return Err(format!("`{kind}` is given twice"));
            }
            seen[kind.index()] = true;
            weights[kind.index()] = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of `{kind}` is not a whole number: `{weight}`"))?;
        }
        Mix::from_weights(weights)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .kinds()
            .map(|k| format!("{k}={}", self.weight(k)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// The keys a run uses: `prefix` followed by the key's number, zero-padded to `id_len`
/// digits, so that every key has the same length as a real prefixed session id (a 32-byte
/// random id in URL-safe base64 is 43 characters).
///
/// All keys are built once into one buffer and handed out as [`Bytes`] slices of it: the
/// native client takes keys as `Bytes`, and slicing a shared buffer costs a reference count,
/// not an allocation per request.
#[derive(Debug, Clone)]
pub struct KeySpace {
    buf: Bytes,
    key_len: usize,
    count: u64,
}

impl KeySpace {
    /// `count` keys `prefix` + number padded to `id_len` digits.
    pub fn new(prefix: &str, id_len: usize, count: u64) -> Result<KeySpace, String> {
        if count == 0 {
            return Err("the key space must hold at least one key".into());
        }
        let digits = (count - 1).to_string().len();
        if digits > id_len {
            return Err(format!(
                "{count} keys need ids of {digits} digits, longer than the id length {id_len}"
            ));
        }
        let key_len = prefix.len() + id_len;
        let total = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(key_len))
            .ok_or_else(|| format!("{count} keys of {key_len} bytes do not fit in memory"))?;
        let mut buf = Vec::with_capacity(total);
        for n in 0..count {
            buf.extend_from_slice(prefix.as_bytes());
            buf.extend_from_slice(format!("{n:0id_len$}").as_bytes());
        }
        Ok(KeySpace {
            buf: Bytes::from(buf),
            key_len,
            count,
        })
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether there are no keys (never true: [`KeySpace::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Length of every key in bytes.
    pub fn key_len(&self) -> usize {
        self.key_len
    }

    /// Key number `n` (taken modulo the key count).
    pub fn key(&self, n: u64) -> Bytes {
        let start = (n % self.count) as usize * self.key_len;
        self.buf.slice(start..start + self.key_len)
    }
}

/// A small, fast pseudo-random generator (xorshift64*). Each connection has its own, seeded
/// from `--seed` and the connection's number, so a run's sequence of operations is
/// reproducible and no generator is shared between threads.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for stream `stream` of `seed`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        // splitmix64 of the pair, so neighbouring streams do not start out correlated.
        let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0), by multiply-shift rather than a division.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mix_is_the_session_mix() {
        let mix = Mix::default();
        assert_eq!(mix.to_string(), "get=80,set=15,del=5");
        assert_eq!(mix.total(), 100);
        assert_eq!(mix.pick(0), OpKind::Get);
        assert_eq!(mix.pick(79), OpKind::Get);
        assert_eq!(mix.pick(80), OpKind::Set);
        assert_eq!(mix.pick(94), OpKind::Set);
        assert_eq!(mix.pick(95), OpKind::Del);
        assert_eq!(mix.pick(99), OpKind::Del);
    }

    #[test]
    fn mix_parses_and_rejects() {
        let mix: Mix = "set=1, touch=3".parse().unwrap();
        assert_eq!(
            mix.kinds().collect::<Vec<_>>(),
            [OpKind::Set, OpKind::Touch]
        );
        assert_eq!(mix.pick(0), OpKind::Set);
        assert_eq!(mix.pick(1), OpKind::Touch);
        assert!("get=0".parse::<Mix>().is_err());
        assert!("get".parse::<Mix>().is_err());
        assert!("fetch=1".parse::<Mix>().is_err());
        assert!("get=1,get=2".parse::<Mix>().is_err());
        assert!("get=-1".parse::<Mix>().is_err());
    }

    #[test]
    fn the_owner_operations_parse_and_share_an_owner_per_ten_keys() {
        let mix: Mix = "get=90,login=5,devices=3,end_all=2".parse().unwrap();
        assert_eq!(mix.to_string(), "get=90,login=5,devices=3,end_all=2");
        assert!(mix.kinds().any(OpKind::needs_owners));
        assert!(!Mix::default().kinds().any(OpKind::needs_owners));
        let keys = KeySpace::new("session:", 43, 1000).unwrap();
        assert_eq!(
            OpKind::owner_of(&keys.key(10)),
            OpKind::owner_of(&keys.key(19))
        );
        assert_ne!(
            OpKind::owner_of(&keys.key(19)),
            OpKind::owner_of(&keys.key(20))
        );
        assert_eq!(OpKind::owner_of(&keys.key(7)).len(), 50);
    }

    #[test]
    fn keys_are_fixed_width_session_ids() {
        let keys = KeySpace::new("session:", 43, 1000).unwrap();
        assert_eq!(keys.key_len(), 51);
        assert_eq!(
            &keys.key(7)[..],
            b"session:0000000000000000000000000000000000000000007"
        );
        assert_eq!(keys.key(1007), keys.key(7));
        assert!(KeySpace::new("k", 2, 101).is_err());
        assert!(KeySpace::new("k", 2, 100).is_ok());
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Rng::new(1, 2);
        for _ in 0..10_000 {
            assert!(rng.below(7) < 7);
        }
    }
}
