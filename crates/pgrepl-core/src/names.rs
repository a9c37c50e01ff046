//! Newtypes for the words of the domain: member names, LSNs, timelines, system identifiers.
//! Owns parsing and display of these values; knows nothing of where they come from.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The name of one member, e.g. `node-2`: 1 to 40 characters of lowercase ASCII letters,
/// digits and `-`, starting with a letter. Also names its replication slot (`node_2`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemberName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("member name {0:?} is not allowed: use 1 to 40 lowercase letters, digits and '-', starting with a letter")]
pub struct BadMemberName(pub String);

impl MemberName {
    pub fn new(name: impl Into<String>) -> Result<Self, BadMemberName> {
        let name = name.into();
        let ok = (1..=40).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(MemberName(name))
        } else {
            Err(BadMemberName(name))
        }
    }

    /// The embedded naming scheme: `node-1`, `node-2`, ...
    pub fn numbered(n: u32) -> Self {
        MemberName(format!("node-{n}"))
    }

    /// The number in a `node-N` name, if it has that shape.
    pub fn number(&self) -> Option<u32> {
        self.0.strip_prefix("node-")?.parse().ok()
    }

    /// The physical replication slot that the primary keeps for this member.
    pub fn slot_name(&self) -> String {
        self.0.replace('-', "_")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MemberName {
    type Error = BadMemberName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        MemberName::new(s)
    }
}

impl From<MemberName> for String {
    fn from(m: MemberName) -> String {
        m.0
    }
}

impl FromStr for MemberName {
    type Err = BadMemberName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MemberName::new(s)
    }
}

/// A WAL position. Displays and parses as PostgreSQL does: `16/B374D848`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Lsn(pub u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an LSN: {0:?} (expected two hexadecimal numbers such as 0/16B3748)")]
pub struct BadLsn(pub String);

impl Lsn {
    /// Bytes from `earlier` to `self`, zero if `earlier` is ahead.
    pub fn bytes_after(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = BadLsn;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadLsn(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl TryFrom<String> for Lsn {
    type Error = BadLsn;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Lsn> for String {
    fn from(l: Lsn) -> String {
        l.to_string()
    }
}

/// A PostgreSQL timeline id; promotion starts a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline(pub u32);

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The database system identifier that `initdb` chose; every member of one cluster shares it.
/// Serialized as a decimal string, since JSON numbers lose precision past 2^53.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<String> for SystemId {
    type Error = std::num::ParseIntError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Ok(SystemId(s.trim().parse()?))
    }
}

impl From<SystemId> for String {
    fn from(s: SystemId) -> String {
        s.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_postgres_text() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn lsn_distance_saturates() {
        assert_eq!(Lsn(100).bytes_after(Lsn(40)), 60);
        assert_eq!(Lsn(40).bytes_after(Lsn(100)), 0);
    }

    #[test]
    fn member_names_are_checked_and_name_slots() {
        let m = MemberName::new("node-12").unwrap();
        assert_eq!(m.slot_name(), "node_12");
        assert_eq!(m.number(), Some(12));
        assert_eq!(MemberName::numbered(3).as_str(), "node-3");
        for bad in ["", "Node-1", "1node", "node_1", "node 1", &"a".repeat(41)] {
            assert!(MemberName::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn system_id_survives_json_without_precision_loss() {
        let id = SystemId(7_312_395_133_209_421_981);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"7312395133209421981\"");
        assert_eq!(serde_json::from_str::<SystemId>(&json).unwrap(), id);
    }
}
