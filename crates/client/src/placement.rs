//! Which node holds a key: rendezvous (highest-random-weight) hashing on node names.
//!
//! Pure functions, no I/O: the multi-node client routes with them, the `rebalance` command
//! decides what to move with them, and a client in another language can reproduce them
//! from this page alone. They must give the same answer in every process and every
//! version, so they use only SHA-256 and fixed integer arithmetic (never `std`'s randomly
//! seeded hashers).
//!
//! # The function
//!
//! 1. The **routing key** of a key ([`routing_key`]): if the key ends with a tagged session
//!    id, `T~R` where `T` is [`TAG_LEN`] (8) URL-safe base64 characters (`A-Z a-z 0-9 - _`),
//!    then one `~`, then `R`, 43 such characters, the routing key is `T`. Otherwise it is
//!    the whole key. (So all sessions minted with one owner's tag route together, whatever
//!    key prefix the application uses, and untagged keys spread by their own bytes.)
//! 2. `h(x)` = the first 8 bytes of SHA-256(x), read as a big-endian `u64`.
//! 3. The **weight** of node `n` for routing key `k` ([`weight`]) is
//!    `mix(h(k) XOR h(name of n))`, where `mix` is the 64-bit finaliser of MurmurHash3
//!    (`fmix64`), all arithmetic modulo 2^64:
//!    ```text
//!    z ^= z >> 33; z *= 0xff51afd7ed558ccd;
//!    z ^= z >> 33; z *= 0xc4ceb9fe1a85ec53;
//!    z ^= z >> 33;
//!    ```
//! 4. The key lives on the node of **highest weight**; equal weights (astronomically rare)
//!    go to the node whose name sorts first bytewise.
//!
//! Only node names enter the function, never addresses: a node that moves to another
//! address (a rescheduled pod, a new IP) keeps all its keys. Adding a node moves to it only
//! the keys for which it now has the highest weight, about 1/N of them; removing one moves
//! only its own keys, each to the node that ranked second for it. No key moves between two
//! nodes that stay.
//!
//! ```
//! use sessiond_client::placement::{Node, Topology};
//!
//! let three = Topology::new([
//!     Node::new("sessiond-0", "10.0.0.1:7878")?,
//!     Node::new("sessiond-1", "10.0.0.2:7878")?,
//!     Node::new("sessiond-2", "10.0.0.3:7878")?,
//! ])?;
//! let home = three.node_for_key(b"session:abc");
//! // The same name at another address: the same placement.
//! let moved = Topology::new([
//!     Node::new("sessiond-0", "10.0.9.9:7878")?,
//!     Node::new("sessiond-1", "10.0.0.2:7878")?,
//!     Node::new("sessiond-2", "10.0.0.3:7878")?,
//! ])?;
//! assert_eq!(moved.node_for_key(b"session:abc").name(), home.name());
//! # Ok::<(), sessiond_client::placement::TopologyError>(())
//! ```

use std::fmt;

use sha2::{Digest, Sha256};

/// Characters in a routing tag.
pub const TAG_LEN: usize = 8;

/// What separates a routing tag from the random part of a session id. Not a dot: key
/// prefixes often end in a word and a dot (`app.sessions.`), and an untagged id behind one
/// would look tagged. A tilde is URL- and cookie-safe and rare in prefixes.
pub const TAG_SEPARATOR: u8 = b'~';

/// Characters in the random part of a session id (32 bytes in URL-safe base64).
const RANDOM_LEN: usize = 43;

/// The longest node name: names travel in topology files and logs, and a DNS label is at
/// most 63 bytes, a whole name 253.
pub const MAX_NAME_LEN: usize = 253;

/// One sessiond node: a stable name, which decides placement, and where to reach it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Node {
    name: String,
    addr: String,
}

impl Node {
    /// The node `name` at `addr` (`HOST:PORT`). The name must be 1 to [`MAX_NAME_LEN`]
    /// printable ASCII characters without spaces; it is what placement hashes, so it must
    /// never change while the node holds sessions (a StatefulSet pod's name,
    /// `sessiond-0`, is a good one; an IP address is not).
    pub fn new(name: impl Into<String>, addr: impl Into<String>) -> Result<Node, TopologyError> {
        let name = name.into();
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(TopologyError::BadName(name));
        }
        let addr = addr.into();
        if addr.is_empty() {
            return Err(TopologyError::NoAddress(name));
        }
        Ok(Node { name, addr })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the node listens.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// Why a list of nodes is not a topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The list is empty.
    #[error("a topology needs at least one node")]
    Empty,
    /// Two nodes have the same name.
    #[error("two nodes are named {0:?}: names must be unique")]
    DuplicateName(String),
    /// A name is empty, too long, or has spaces or control characters.
    #[error("bad node name {0:?}: 1 to 253 printable ASCII characters, no spaces")]
    BadName(String),
    /// A node has no address.
    #[error("node {0:?} has no address")]
    NoAddress(String),
}

/// A set of nodes and the placement of keys over them. Cheap to query: one SHA-256 of the
/// routing key, then a multiply-xorshift per node.
#[derive(Clone, PartialEq, Eq)]
pub struct Topology {
    nodes: Vec<Node>,
    /// `h(name)` of each node, in `nodes` order.
    seeds: Vec<u64>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.nodes).finish()
    }
}

impl Topology {
    /// The topology of `nodes`: at least one, names unique. Their order does not matter.
    pub fn new(nodes: impl IntoIterator<Item = Node>) -> Result<Topology, TopologyError> {
        let nodes: Vec<Node> = nodes.into_iter().collect();
        if nodes.is_empty() {
            return Err(TopologyError::Empty);
        }
        let mut names: Vec<&str> = nodes.iter().map(Node::name).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(TopologyError::DuplicateName(pair[0].to_string()));
        }
        let seeds = nodes.iter().map(|n| h(n.name.as_bytes())).collect();
        Ok(Topology { nodes, seeds })
    }

    /// The nodes, in the order given.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node with `name`, if any.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node that holds routing key `routing_key` (see [`routing_key`]).
    pub fn node_for(&self, routing_key: &[u8]) -> &Node {
        &self.nodes[self.index_for(routing_key)]
    }

    /// The node that holds `key`: [`Topology::node_for`] of its [`routing_key`].
    pub fn node_for_key(&self, key: &[u8]) -> &Node {
        self.node_for(routing_key(key))
    }

    /// The position in [`Topology::nodes`] of the node that holds `routing_key`.
    pub fn index_for(&self, routing_key: &[u8]) -> usize {
        let key_hash = h(routing_key);
        let mut best = 0;
        let mut best_weight = mix(key_hash ^ self.seeds[0]);
        for (i, seed) in self.seeds.iter().enumerate().skip(1) {
            let weight = mix(key_hash ^ seed);
            let wins = weight > best_weight
                || (weight == best_weight && self.nodes[i].name < self.nodes[best].name);
            if wins {
                best = i;
                best_weight = weight;
            }
        }
        best
    }
}

/// The part of `key` that decides its node: the routing tag of a tagged session id at the
/// end of the key, else the whole key (see the module docs).
///
/// ```
/// use sessiond_client::placement::routing_key;
///
/// let random = "A".repeat(43);
/// assert_eq!(routing_key(format!("session:k3Y_9aZ-~{random}").as_bytes()), b"k3Y_9aZ-");
/// assert_eq!(routing_key(format!("session:{random}").as_bytes()), format!("session:{random}").as_bytes());
/// ```
pub fn routing_key(key: &[u8]) -> &[u8] {
    let tagged = TAG_LEN + 1 + RANDOM_LEN;
    if key.len() < tagged {
        return key;
    }
    let id = &key[key.len() - tagged..];
    let (tag, rest) = id.split_at(TAG_LEN);
    let is_tagged =
        rest[0] == TAG_SEPARATOR && tag.iter().chain(&rest[1..]).copied().all(is_base64url);
    if is_tagged {
        tag
    } else {
        key
    }
}

/// The weight of the node named `node_name` for `routing_key`: the key lives on the node
/// of highest weight. Exposed so that other implementations can check theirs against it.
///
/// ```
/// use sessiond_client::placement::weight;
/// // Test vectors (see the module docs for the function): of these three nodes,
/// // "session:abc" lives on sessiond-2.
/// assert_eq!(weight("sessiond-0", b"session:abc"), 0x2e5a_ca2b_554f_0778);
/// assert_eq!(weight("sessiond-1", b"session:abc"), 0x041d_6c11_5c61_914a);
/// assert_eq!(weight("sessiond-2", b"session:abc"), 0xd5cf_54f8_fc8b_5050);
/// ```
pub fn weight(node_name: &str, routing_key: &[u8]) -> u64 {
    mix(h(routing_key) ^ h(node_name.as_bytes()))
}

/// The first 8 bytes of SHA-256(`bytes`), big-endian.
fn h(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// MurmurHash3's `fmix64`: every input bit affects every output bit, so XOR-combined
/// hashes that differ in one node seed give unrelated weights.
fn mix(mut z: u64) -> u64 {
    z ^= z >> 33;
    z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

/// Whether `b` is a URL-safe base64 character.
pub(crate) fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn topology(names: impl IntoIterator<Item = String>) -> Topology {
        Topology::new(names.into_iter().map(|name| {
            let addr = format!("{name}.example:7878");
            Node::new(name, addr).unwrap()
        }))
        .unwrap()
    }

    fn named(n: usize) -> Topology {
        topology((0..n).map(|i| format!("sessiond-{i}")))
    }

    /// The fraction of `keys` whose node is another (by name) in `b` than in `a`.
    fn moved(a: &Topology, b: &Topology, keys: &[Vec<u8>]) -> f64 {
        let changed = keys
            .iter()
            .filter(|k| a.node_for_key(k).name() != b.node_for_key(k).name())
            .count();
        changed as f64 / keys.len() as f64
    }

    fn keys(seed: u64, count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| format!("session:{seed:x}:{i}").into_bytes())
            .collect()
    }

    #[test]
    fn weights_match_the_documented_function() {
        // Computed by hand from the definition, so that a change to it fails here: the
        // placement of every existing deployment depends on it.
        let k = h(b"session:abc");
        let n = h(b"sessiond-0");
        assert_eq!(weight("sessiond-0", b"session:abc"), mix(k ^ n));
        assert_eq!(weight("sessiond-0", b"session:abc"), 0x2e5a_ca2b_554f_0778);
        assert_eq!(named(3).node_for_key(b"session:abc").name(), "sessiond-2");
        assert_eq!(h(b""), 0xe3b0_c442_98fc_1c14);
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0xb456_bcfc_34c2_cb2c);
    }

    #[test]
    fn bad_topologies_are_refused() {
        assert_eq!(Topology::new([]), Err(TopologyError::Empty));
        let a = Node::new("a", "h:1").unwrap();
        let a2 = Node::new("a", "h:2").unwrap();
        assert_eq!(
            Topology::new([a, a2]),
            Err(TopologyError::DuplicateName("a".into()))
        );
        assert!(matches!(
            Node::new("", "h:1"),
            Err(TopologyError::BadName(_))
        ));
        assert!(matches!(
            Node::new("a b", "h:1"),
            Err(TopologyError::BadName(_))
        ));
        assert!(matches!(
            Node::new("a", ""),
            Err(TopologyError::NoAddress(_))
        ));
    }

    #[test]
    fn keys_spread_evenly() {
        let four = named(4);
        let keys = keys(7, 40_000);
        let mut counts = [0usize; 4];
        for key in &keys {
            counts[four.index_for(routing_key(key))] += 1;
        }
        for count in counts {
            // 10000 expected; 3 standard deviations is about 260.
            assert!((9_500..=10_500).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn tagged_ids_route_by_their_tag_and_others_by_the_whole_key() {
        let random = "Ab-_".repeat(10) + "xyz";
        let tagged = format!("app:session:TAG_tag-~{random}");
        assert_eq!(routing_key(tagged.as_bytes()), b"TAG_tag-");
        let other_prefix = format!("x.TAG_tag-~{random}");
        assert_eq!(routing_key(other_prefix.as_bytes()), b"TAG_tag-");
        // Not a tag: a character outside base64url, another separator (a key prefix
        // ending in 8 base64url characters and a dot is common), too short.
        for key in [
            format!("s:TAG+tag-~{random}"),
            format!("s:TAG_tag-.{random}"),
            // An untagged id behind a prefix ending in eight base64url characters.
            format!("app.sessions.{random}"),
            format!("TAG_tag~{random}"),
            random.clone(),
        ] {
            assert_eq!(routing_key(key.as_bytes()), key.as_bytes(), "{key}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Adding a node moves about 1/(N+1) of the keys, all of them to the new node;
        /// removing it moves them back and nothing else.
        #[test]
        fn adding_or_removing_a_node_moves_about_one_nth(n in 1usize..12, seed in any::<u64>()) {
            let before = named(n);
            let after = named(n + 1);
            let keys = keys(seed, 20_000);
            let fraction = moved(&before, &after, &keys);
            let expected = 1.0 / (n + 1) as f64;
            prop_assert!((fraction - expected).abs() < 0.03, "{fraction} vs {expected}");
            let added = after.nodes()[n].name();
            for key in &keys {
                let (old, new) = (before.node_for_key(key), after.node_for_key(key));
                prop_assert!(old.name() == new.name() || new.name() == added);
            }
        }

        /// Removing any one node moves exactly its keys, about 1/N of them.
        #[test]
        fn removing_a_node_moves_only_its_keys(n in 2usize..12, gone in 0usize..12, seed in any::<u64>()) {
            let gone = gone % n;
            let before = named(n);
            let after = topology((0..n).filter(|i| *i != gone).map(|i| format!("sessiond-{i}")));
            let keys = keys(seed, 20_000);
            let fraction = moved(&before, &after, &keys);
            prop_assert!((fraction - 1.0 / n as f64).abs() < 0.03, "{fraction}");
            let gone = format!("sessiond-{gone}");
            for key in &keys {
                let old = before.node_for_key(key);
                prop_assert!(old.name() == gone || old.name() == after.node_for_key(key).name());
            }
        }

        /// Addresses and the order of the list do not matter; only names do.
        #[test]
        fn readdressing_or_reordering_nodes_moves_no_key(n in 1usize..10, seed in any::<u64>(), shift in 0usize..10) {
            let before = named(n);
            let mut renamed: Vec<Node> = before
                .nodes()
                .iter()
                .map(|node| Node::new(node.name(), format!("10.1.2.{}:9999", node.name().len())).unwrap())
                .collect();
            renamed.rotate_left(shift % n);
            let after = Topology::new(renamed).unwrap();
            prop_assert_eq!(moved(&before, &after, &keys(seed, 5_000)), 0.0);
        }
    }
}
