//! [`IpBlock`]: one IP address or CIDR block (`127.0.0.1`, `10.0.0.0/8`, `fd00::/8`), as
//! `emit_allowed_clients` lists them.
//!
//! Invariant: the prefix fits the address family and the address has no bit set past it, so
//! `10.0.0.1/8` is refused instead of silently letting in the whole /8 the writer may not have
//! meant. (The workspace has no CIDR crate of its own; `ipnet` only comes in through reqwest.)

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 address with a prefix length; a lone address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpBlock {
    addr: IpAddr,
    prefix: u8,
}

/// Why a text is not an [`IpBlock`]; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseIpBlockError(String);

fn width(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The first `prefix` bits of `addr` (the rest zero), widened to `u128`.
fn masked(addr: IpAddr, prefix: u8) -> u128 {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u128::from(u32::from(a) & m)
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & m
        }
    }
}

impl IpBlock {
    /// The block `addr/prefix`; refused if the prefix is too long for the family or `addr`
    /// has bits set past it.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpBlock, ParseIpBlockError> {
        let w = width(addr);
        if prefix > w {
            return Err(ParseIpBlockError(format!(
                "\"{addr}/{prefix}\": prefix {prefix} is out of range 0..={w}"
            )));
        }
        let network = masked(addr, prefix);
        let bare = match addr {
            IpAddr::V4(_) => IpAddr::from(u32::try_from(network).unwrap_or(0).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(network.to_be_bytes()),
        };
        if bare != addr {
            return Err(ParseIpBlockError(format!(
                "\"{addr}/{prefix}\" has bits set past its /{prefix} prefix: write \
                 {bare}/{prefix} for the whole block, or {addr} for the one address"
            )));
        }
        Ok(IpBlock { addr, prefix })
    }

    /// The block's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length (32 or 128 for a single address).
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in the block. An IPv4 client seen as IPv4-mapped IPv6
    /// (`::ffff:10.1.2.3`, as a dual-stack listener reports it) matches IPv4 blocks, and the
    /// other way round.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => ip,
        };
        masked(ip, self.prefix) == masked(self.addr, self.prefix)
    }
}

impl FromStr for IpBlock {
    type Err = ParseIpBlockError;

    /// `ADDR` or `ADDR/PREFIX`, IPv4 or IPv6 (no brackets, no zone).
    fn from_str(s: &str) -> Result<IpBlock, ParseIpBlockError> {
        let bad = || {
            ParseIpBlockError(format!(
                "{s:?} is not an IP address or a CIDR block (e.g. 127.0.0.1, 10.0.0.0/8, ::1, \
                 fd00::/8)"
            ))
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix = match prefix {
            None => width(addr),
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        IpBlock::new(addr, prefix)
    }
}

impl fmt::Display for IpBlock {
    /// `ADDR/PREFIX`, or the bare address for a block of one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == width(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(s: &str) -> IpBlock {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn single_addresses_match_only_themselves() {
        let b = block("127.0.0.1");
        assert_eq!(b.prefix(), 32);
        assert!(b.contains(ip("127.0.0.1")));
        assert!(!b.contains(ip("127.0.0.2")));
        let b = block("::1");
        assert_eq!(b.prefix(), 128);
        assert!(b.contains(ip("::1")));
        assert!(!b.contains(ip("::2")));
        assert!(!b.contains(ip("127.0.0.1")));
    }

    #[test]
    fn cidr_blocks_match_their_range() {
        let b = block("10.0.0.0/8");
        assert!(b.contains(ip("10.0.0.0")));
        assert!(b.contains(ip("10.255.255.255")));
        assert!(!b.contains(ip("11.0.0.0")));
        assert!(!b.contains(ip("9.255.255.255")));
        let b = block("192.168.1.128/25");
        assert!(b.contains(ip("192.168.1.200")));
        assert!(!b.contains(ip("192.168.1.127")));
        let b = block("fd00::/8");
        assert!(b.contains(ip("fd12:3456::1")));
        assert!(!b.contains(ip("fe80::1")));
        let all = block("0.0.0.0/0");
        assert!(all.contains(ip("1.2.3.4")) && all.contains(ip("255.255.255.255")));
        assert!(block("::/0").contains(ip("2001:db8::1")));
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_blocks_and_back() {
        assert!(block("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(!block("10.0.0.0/8").contains(ip("::ffff:11.1.2.3")));
        assert!(!block("10.0.0.0/8").contains(ip("2001:db8::1")));
        assert!(block("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
    }

    #[test]
    fn bad_blocks_are_refused_with_a_reason() {
        for bad in [
            "",
            "localhost",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/+8",
            "[::1]",
        ] {
            let e = bad.parse::<IpBlock>().unwrap_err().to_string();
            assert!(
                e.contains("is not an IP address or a CIDR block"),
                "{bad}: {e}"
            );
        }
        let e = "10.0.0.0/33".parse::<IpBlock>().unwrap_err().to_string();
        assert!(e.contains("out of range 0..=32"), "{e}");
        let e = "::/129".parse::<IpBlock>().unwrap_err().to_string();
        assert!(e.contains("out of range 0..=128"), "{e}");
        let e = "10.0.0.1/8".parse::<IpBlock>().unwrap_err().to_string();
        assert!(
            e.contains("bits set past") && e.contains("10.0.0.0/8") && e.contains("10.0.0.1"),
            "{e}"
        );
    }

    #[test]
    fn display_round_trips() {
        for s in ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8", "0.0.0.0/0"] {
            assert_eq!(block(s).to_string(), s);
        }
    }
}
