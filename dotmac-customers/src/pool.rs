//! Per-tenant IPv4 address pools.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{CustomersError, Result};
use crate::vocab::PoolId;

/// A range of addresses a tenant hands to its subscribers, lowest free first.
///
/// ```
/// use std::net::Ipv4Addr;
/// use dotmac_customers::{IpPool, PoolId};
/// let pool = IpPool::from_cidr(PoolId::from_u128(1), "residential", "100.64.0.0/30")?;
/// // The network and broadcast addresses are never handed out.
/// assert_eq!(pool.size(), 2);
/// let taken = [Ipv4Addr::new(100, 64, 0, 1)].into_iter().collect();
/// assert_eq!(pool.first_free(&taken), Some(Ipv4Addr::new(100, 64, 0, 2)));
/// # Ok::<(), dotmac_customers::CustomersError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPool {
    id: PoolId,
    name: String,
    first: Ipv4Addr,
    last: Ipv4Addr,
}

impl IpPool {
    /// The pool of `first..=last`.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidInput`] when `last` is below `first` or the name is empty.
    pub fn range(id: PoolId, name: &str, first: Ipv4Addr, last: Ipv4Addr) -> Result<Self> {
        if name.trim().is_empty() {
            return Err(CustomersError::InvalidInput(
                "a pool needs a name".to_owned(),
            ));
        }
        if u32::from(last) < u32::from(first) {
            return Err(CustomersError::InvalidInput(format!(
                "pool {name}: {last} is below {first}"
            )));
        }
        Ok(IpPool {
            id,
            name: name.to_owned(),
            first,
            last,
        })
    }

    /// The usable hosts of a CIDR block (`a.b.c.d/n`, n ≤ 30): without the network and
    /// broadcast addresses.
    ///
    /// # Errors
    ///
    /// [`CustomersError::InvalidInput`] for a malformed block or one without hosts.
    pub fn from_cidr(id: PoolId, name: &str, cidr: &str) -> Result<Self> {
        let bad = || {
            CustomersError::InvalidInput(format!(
                "{cidr:?} is not an IPv4 block a.b.c.d/n with n ≤ 30"
            ))
        };
        let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u32 = len.parse().map_err(|_| bad())?;
        if len > 30 {
            return Err(bad());
        }
        let mask = u32::MAX.checked_shl(32u32.saturating_sub(len)).unwrap_or(0);
        let network = u32::from(addr) & mask;
        let broadcast = network | !mask;
        let first = network.checked_add(1).ok_or_else(bad)?;
        let last = broadcast.checked_sub(1).ok_or_else(bad)?;
        IpPool::range(id, name, Ipv4Addr::from(first), Ipv4Addr::from(last))
    }

    /// The id.
    pub fn id(&self) -> PoolId {
        self.id
    }

    /// The name (also sent as `Framed-Pool` where a NAS assigns from a named pool).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lowest address handed out.
    pub fn first(&self) -> Ipv4Addr {
        self.first
    }

    /// The highest address handed out.
    pub fn last(&self) -> Ipv4Addr {
        self.last
    }

    /// How many addresses it holds.
    pub fn size(&self) -> u64 {
        u64::from(u32::from(self.last))
            .saturating_sub(u64::from(u32::from(self.first)))
            .saturating_add(1)
    }

    /// Whether `address` is in the pool.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(address))
    }

    /// The lowest address of the pool not in `taken`.
    pub fn first_free(&self, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last))
            .map(Ipv4Addr::from)
            .find(|a| !taken.contains(a))
    }

    /// The free address `skip` places after the lowest free one, counting round the free
    /// addresses (`skip` 0 is [`IpPool::first_free`]): creators that lost a race for one
    /// address spread over the next ones instead of all retrying the same. `None` when no
    /// address is free.
    pub fn nth_free(&self, taken: &BTreeSet<Ipv4Addr>, skip: usize) -> Option<Ipv4Addr> {
        let free = || {
            (u32::from(self.first)..=u32::from(self.last))
                .map(Ipv4Addr::from)
                .filter(|a| !taken.contains(a))
        };
        let count = free().count();
        if count == 0 {
            return None;
        }
        free().nth(skip.checked_rem(count)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nth_free_address_counts_round_the_free_ones() {
        let p = IpPool::from_cidr(PoolId::from_u128(1), "p", "10.0.0.0/29").unwrap();
        let taken: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 3)]
            .into_iter()
            .collect();
        // Free: .2 .4 .5 .6
        assert_eq!(p.nth_free(&taken, 0), p.first_free(&taken));
        assert_eq!(p.nth_free(&taken, 1), Some(Ipv4Addr::new(10, 0, 0, 4)));
        assert_eq!(p.nth_free(&taken, 5), Some(Ipv4Addr::new(10, 0, 0, 4)));
        let all: BTreeSet<Ipv4Addr> = (1..=6).map(|n| Ipv4Addr::new(10, 0, 0, n)).collect();
        assert_eq!(p.nth_free(&all, 3), None);
    }

    #[test]
    fn a_cidr_block_keeps_its_hosts_only() {
        let p = IpPool::from_cidr(PoolId::from_u128(1), "p", "10.1.2.77/24").unwrap();
        assert_eq!(p.first(), Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(p.last(), Ipv4Addr::new(10, 1, 2, 254));
        assert_eq!(p.size(), 254);
        for bad in ["10.0.0.0/31", "10.0.0.0", "10.0.0/24", "10.0.0.0/x"] {
            assert!(
                IpPool::from_cidr(PoolId::from_u128(1), "p", bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_full_pool_has_no_free_address() {
        let p = IpPool::from_cidr(PoolId::from_u128(1), "p", "10.0.0.0/30").unwrap();
        let taken = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
            .into_iter()
            .collect();
        assert_eq!(p.first_free(&taken), None);
    }
}
