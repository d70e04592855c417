//! An index of IPv6 prefixes that answers "which stored prefixes overlap this
//! one" without scanning them all.
//!
//! Two prefixes overlap exactly when one contains the other, so the
//! overlapping entries of a query prefix are its ancestors (one exact lookup
//! per prefix length in use, at most 129) and its descendants (one ordered
//! range: every stored network inside the query's range). A home agent with a
//! million Mobile Network Prefixes checks a Binding Update's prefixes in
//! logarithmic time instead of a million comparisons.

use std::collections::BTreeMap;

use ipnet::Ipv6Net;

/// Prefixes mapped to values, with overlap queries.
#[derive(Debug, Clone)]
pub struct PrefixIndex<V> {
    /// Keyed by network then length: networks sort in address order, so
    /// the prefixes inside a range are one contiguous run.
    entries: BTreeMap<Key, V>,
    /// How many stored prefixes have each length (index 0..=128).
    lengths: [u32; 129],
}

impl<V> Default for PrefixIndex<V> {
    fn default() -> Self {
        PrefixIndex {
            entries: BTreeMap::new(),
            lengths: [0; 129],
        }
    }
}

/// A prefix as a key: the network's 16 octets, then the length. Ordered
/// as (network, length) is, in 17 octets where `(u128, u8)` takes 32 (its
/// alignment): a million prefixes in about 30 MB less.
type Key = [u8; 17];

fn packed(network: u128, length: u8) -> Key {
    let mut key = [0; 17];
    key[..16].copy_from_slice(&network.to_be_bytes());
    key[16] = length;
    key
}

fn key(net: &Ipv6Net) -> Key {
    let net = net.trunc();
    packed(u128::from(net.network()), net.prefix_len())
}

fn key_length(key: &Key) -> u8 {
    key[16]
}

fn net(key: &Key) -> Ipv6Net {
    let mut network = [0; 16];
    network.copy_from_slice(&key[..16]);
    // Keys are built from valid prefixes only.
    Ipv6Net::new(network.into(), key_length(key)).unwrap_or_default()
}

impl<V> PrefixIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a value for a prefix (host bits ignored), returning the previous.
    pub fn insert(&mut self, prefix: Ipv6Net, value: V) -> Option<V> {
        let key = key(&prefix);
        let previous = self.entries.insert(key, value);
        if previous.is_none() {
            self.lengths[usize::from(key_length(&key))] += 1;
        }
        previous
    }

    /// Removes a prefix, returning its value.
    pub fn remove(&mut self, prefix: &Ipv6Net) -> Option<V> {
        let key = key(prefix);
        let removed = self.entries.remove(&key);
        if removed.is_some() {
            self.lengths[usize::from(key_length(&key))] -= 1;
        }
        removed
    }

    /// The value stored for exactly this prefix.
    pub fn get(&self, prefix: &Ipv6Net) -> Option<&V> {
        self.entries.get(&key(prefix))
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every stored prefix that shares an address with `prefix`: the ones
    /// containing it (shortest first), then the ones inside it in address
    /// order. The prefix itself, when stored, is reported once.
    pub fn overlapping<'a>(
        &'a self,
        prefix: &Ipv6Net,
    ) -> impl Iterator<Item = (Ipv6Net, &'a V)> + 'a {
        let query = prefix.trunc();
        let length = query.prefix_len();
        let first = u128::from(query.network());
        let last = u128::from(query.broadcast());
        let ancestors = (0..length)
            .filter(|&l| self.lengths[usize::from(l)] > 0)
            .filter_map(move |l| {
                let key = key(&Ipv6Net::new(query.network(), l).ok()?);
                self.entries.get(&key).map(|value| (net(&key), value))
            });
        // Inside the range, a stored network shorter than `length` would start
        // at `first` and be an ancestor already reported: skip it.
        let inside = self
            .entries
            .range(packed(first, 0)..=packed(last, 128))
            .filter(move |(key, _)| key_length(key) >= length)
            .map(|(key, value)| (net(key), value));
        ancestors.chain(inside)
    }

    /// Every prefix and its value, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv6Net, &V)> {
        self.entries.iter().map(|(key, value)| (net(key), value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Ipv6Net {
        text.parse().unwrap()
    }

    fn brute(stored: &[(Ipv6Net, u32)], query: &Ipv6Net) -> Vec<(Ipv6Net, u32)> {
        let mut found: Vec<_> = stored
            .iter()
            .filter(|(n, _)| crate::ha::overlaps(n, query))
            .copied()
            .collect();
        found.sort();
        found
    }

    #[test]
    fn ancestors_descendants_and_strangers() {
        let stored = [
            (p("2001:db8::/32"), 1),
            (p("2001:db8:1::/48"), 2),
            (p("2001:db8:1:5::/64"), 3),
            (p("2001:db8:2::/48"), 4),
            (p("2001:db9::/32"), 5),
        ];
        let mut index = PrefixIndex::new();
        for (n, v) in stored {
            assert!(index.insert(n, v).is_none());
        }
        for query in [
            "2001:db8:1::/48",
            "2001:db8:1:5::/64",
            "2001:db8:1:5::1/128",
            "2001:db8::/31",
            "2001:db8:3::/48",
            "2001:dba::/32",
            "::/0",
        ] {
            let query = p(query);
            let mut got: Vec<_> = index.overlapping(&query).map(|(n, v)| (n, *v)).collect();
            got.sort();
            assert_eq!(got, brute(&stored, &query), "query {query}");
        }
        assert_eq!(index.remove(&p("2001:db8:1::/48")), Some(2));
        assert_eq!(index.remove(&p("2001:db8:1::/48")), None);
        assert_eq!(index.len(), 4);
        let got: Vec<_> = index
            .overlapping(&p("2001:db8:1::/48"))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(got, vec![1, 3]);
    }

    #[test]
    fn host_bits_are_ignored() {
        let mut index = PrefixIndex::new();
        index.insert(p("2001:db8:1::77/48"), 7);
        assert_eq!(index.get(&p("2001:db8:1::/48")), Some(&7));
        assert_eq!(
            index.iter().next().map(|(n, _)| n),
            Some(p("2001:db8:1::/48"))
        );
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_scan(
            stored in proptest::collection::vec((0u16..16, 0u8..=20), 0..40),
            query in (0u16..16, 0u8..=20),
        ) {
            // Small random prefixes under 2001:db8::/32 so that overlaps are common.
            let make = |(bits, len): (u16, u8)| {
                let address = u128::from(p("2001:db8::/32").network()) | (u128::from(bits) << 92);
                Ipv6Net::new(address.into(), 32 + len).unwrap().trunc()
            };
            let mut index = PrefixIndex::new();
            let mut unique: Vec<(Ipv6Net, u32)> = Vec::new();
            for (i, s) in stored.into_iter().enumerate() {
                let n = make(s);
                index.insert(n, i as u32);
                unique.retain(|(m, _)| *m != n);
                unique.push((n, i as u32));
            }
            let query = make(query);
            let mut got: Vec<_> = index.overlapping(&query).map(|(n, v)| (n, *v)).collect();
            got.sort();
            proptest::prop_assert_eq!(got, brute(&unique, &query));
        }
    }
}
