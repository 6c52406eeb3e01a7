//! Vector clocks: one LSN per origin instance id.

use std::{cmp::Ordering, collections::BTreeMap, fmt};

use crate::{
    consts::VCLOCK_MAX,
    msgpack::{DecodeError, Reader, write},
};

/// A vector clock `{replica_id: lsn}`. Components absent from the map are 0.
///
/// Vclocks are portable between the instances of one replicaset: rows keep
/// their origin id and LSN when relayed, so a position read from a master is
/// valid against its replicas and vice versa.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Vclock(BTreeMap<u32, u64>);

impl Vclock {
    /// The empty vclock (every component 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// The LSN of component `id` (0 when absent).
    pub fn get(&self, id: u32) -> u64 {
        self.0.get(&id).copied().unwrap_or(0)
    }

    /// Sets component `id` to `lsn` (removing it when 0).
    pub fn set(&mut self, id: u32, lsn: u64) {
        if lsn == 0 {
            self.0.remove(&id);
        } else {
            self.0.insert(id, lsn);
        }
    }

    /// Raises component `id` to `lsn` if that is larger; returns whether it moved.
    pub fn follow(&mut self, id: u32, lsn: u64) -> bool {
        if lsn > self.get(id) {
            self.0.insert(id, lsn);
            true
        } else {
            false
        }
    }

    /// Raises every component to at least the other's.
    pub fn merge(&mut self, other: &Vclock) {
        for (id, lsn) in other.iter() {
            self.follow(id, lsn);
        }
    }

    /// Components in id order, non-zero only.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }

    /// Whether every component is 0.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sum of all components (Tarantool's "signature"): grows with every row.
    pub fn signature(&self) -> u64 {
        self.0.values().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// A copy without component 0 (replication-local rows), as SUBSCRIBE wants.
    pub fn without_local(&self) -> Self {
        let mut v = self.clone();
        v.0.remove(&0);
        v
    }

    /// The first component in which `self` is ahead of `other`, if any.
    pub fn first_ahead_of(&self, other: &Vclock) -> Option<u32> {
        self.iter()
            .find(|(id, lsn)| *lsn > other.get(*id))
            .map(|(id, _)| id)
    }

    /// Whether every component of `self` is `<=` the other's.
    pub fn le(&self, other: &Vclock) -> bool {
        self.first_ahead_of(other).is_none()
    }

    /// Partial order of vclocks; `None` when they are concurrent.
    pub fn compare(&self, other: &Vclock) -> Option<Ordering> {
        match (self.le(other), other.le(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }

    /// Appends the vclock as a MessagePack map.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write::map_len(out, self.0.len() as u32);
        for (id, lsn) in self.iter() {
            write::uint(out, u64::from(id));
            write::uint(out, lsn);
        }
    }

    /// Reads a MessagePack map `{id: lsn}`; ids must be below [`VCLOCK_MAX`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.read_map_len()?;
        let mut v = Self::new();
        for _ in 0..n {
            let id = r.read_u32()?;
            if id >= VCLOCK_MAX {
                return Err(DecodeError::OutOfRange {
                    target: "vclock component id",
                });
            }
            let lsn = r.read_u64()?;
            v.set(id, lsn);
        }
        Ok(v)
    }
}

impl FromIterator<(u32, u64)> for Vclock {
    fn from_iter<T: IntoIterator<Item = (u32, u64)>>(iter: T) -> Self {
        let mut v = Self::new();
        for (id, lsn) in iter {
            v.set(id, lsn);
        }
        v
    }
}

impl fmt::Display for Vclock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (id, lsn)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}: {lsn}")?;
        }
        f.write_str("}")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Vclock {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A vclock component id as a map key: an integer, or an integer in a
/// string (JSON object keys are strings, and serde's buffered content, as in
/// untagged enums, does not turn them back into integers).
#[cfg(feature = "serde")]
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct ComponentId(u32);

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ComponentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ComponentId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a vclock component id")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ComponentId, E> {
                u32::try_from(v)
                    .map(ComponentId)
                    .map_err(|_| E::custom(format!("vclock component id {v} is too large")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ComponentId, E> {
                let n: u64 = v
                    .parse()
                    .map_err(|_| E::custom(format!("vclock component id '{v}' is not a number")))?;
                self.visit_u64(n)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Vclock {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map: BTreeMap<u32, u64> = BTreeMap::<ComponentId, u64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k.0, v))
            .collect();
        if let Some(id) = map.keys().find(|id| **id >= VCLOCK_MAX) {
            return Err(serde::de::Error::custom(format!(
                "vclock component id {id} is too large"
            )));
        }
        Ok(map.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn encode_decode_round_trip(pairs in proptest::collection::vec((0u32..32, any::<u64>()), 0..32)) {
            let v: Vclock = pairs.into_iter().collect();
            let mut out = Vec::new();
            v.encode(&mut out);
            prop_assert_eq!(Vclock::decode(&mut Reader::new(&out)), Ok(v));
        }
    }

    #[test]
    fn partial_order() {
        let a: Vclock = [(1, 5), (2, 3)].into_iter().collect();
        let b: Vclock = [(1, 6), (2, 3)].into_iter().collect();
        let c: Vclock = [(1, 4), (2, 9)].into_iter().collect();
        assert_eq!(a.compare(&b), Some(Ordering::Less));
        assert_eq!(b.compare(&a), Some(Ordering::Greater));
        assert_eq!(a.compare(&c), None);
        assert_eq!(b.first_ahead_of(&c), Some(1));
        assert_eq!(a.to_string(), "{1: 5, 2: 3}");
        assert_eq!(a.signature(), 8);
    }

    #[test]
    fn component_ids_are_bounded() {
        let mut out = Vec::new();
        write::map_len(&mut out, 1);
        write::uint(&mut out, 40);
        write::uint(&mut out, 1);
        assert!(Vclock::decode(&mut Reader::new(&out)).is_err());
    }
}
