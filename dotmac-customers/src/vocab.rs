//! The leaf vocabulary: ids, rates, MAC addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CustomersError;

dotmac_core::define_id! {
    /// A subscriber's network service (an internet access line).
    ServiceId
}
dotmac_core::define_id! {
    /// A tenant's address pool.
    PoolId
}
dotmac_core::define_id! {
    /// A fair-usage top-up (bought data): applying it twice counts it once, and billing's
    /// charge for it is derived from it.
    TopUpId
}

/// A speed in kilobits per second (1 Mbit/s = 1000 kbit/s), per direction.
///
/// ```
/// use dotmac_customers::Rate;
/// let r = Rate::new(20_000, 5_000);
/// assert_eq!(r.download_kbps(), 20_000);
/// assert_eq!(r.to_string(), "20000k/5000k");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rate {
    download_kbps: u64,
    upload_kbps: u64,
}

impl Rate {
    /// A rate of `download_kbps` down and `upload_kbps` up.
    pub const fn new(download_kbps: u64, upload_kbps: u64) -> Self {
        Rate {
            download_kbps,
            upload_kbps,
        }
    }

    /// A rate in Mbit/s (saturating at `u64::MAX` kbit/s).
    pub const fn mbps(download: u64, upload: u64) -> Self {
        Rate::new(download.saturating_mul(1000), upload.saturating_mul(1000))
    }

    /// Towards the subscriber.
    pub const fn download_kbps(&self) -> u64 {
        self.download_kbps
    }

    /// From the subscriber.
    pub const fn upload_kbps(&self) -> u64 {
        self.upload_kbps
    }

    /// Both directions scaled to `percent` % (rounded down, at least 1 kbit/s).
    pub fn percent(&self, percent: u8) -> Rate {
        let scale = |v: u64| -> u64 {
            let scaled = u128::from(v)
                .saturating_mul(u128::from(percent))
                .checked_div(100)
                .unwrap_or(0);
            u64::try_from(scaled).unwrap_or(u64::MAX).max(1)
        };
        Rate::new(scale(self.download_kbps), scale(self.upload_kbps))
    }

    /// The smaller of two rates, per direction.
    pub fn min(self, other: Rate) -> Rate {
        Rate::new(
            self.download_kbps.min(other.download_kbps),
            self.upload_kbps.min(other.upload_kbps),
        )
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}k/{}k", self.download_kbps, self.upload_kbps)
    }
}

/// Burst above the rate (MikroTik's burst: a higher rate while the average over `time_secs`
/// stays under `threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Burst {
    /// The burst rate.
    pub rate: Rate,
    /// The average rate under which bursting is allowed.
    pub threshold: Rate,
    /// The averaging window, seconds.
    pub time_secs: u32,
}

/// A MAC address (a CPE's), kept as six bytes, shown `aa:bb:cc:dd:ee:ff`.
///
/// ```
/// use dotmac_customers::MacAddress;
/// let mac: MacAddress = "AA-BB-CC-00-11-22".parse()?;
/// assert_eq!(mac.to_string(), "aa:bb:cc:00:11:22");
/// # Ok::<(), dotmac_customers::CustomersError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// The six bytes.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddress {
    type Err = CustomersError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CustomersError::InvalidInput(format!("{s:?} is not a MAC address"));
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddress(out))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_scale_by_percent_and_never_reach_zero() {
        let r = Rate::mbps(100, 20);
        assert_eq!(r.percent(50), Rate::new(50_000, 10_000));
        assert_eq!(Rate::new(1, 1).percent(10), Rate::new(1, 1));
        assert_eq!(Rate::new(u64::MAX, 0).percent(100), Rate::new(u64::MAX, 1));
    }

    #[test]
    fn bad_mac_addresses_are_refused_with_the_text() {
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:gg",
            "aaa:b:cc:dd:ee:ff",
        ] {
            assert_eq!(
                bad.parse::<MacAddress>(),
                Err(CustomersError::InvalidInput(format!(
                    "{bad:?} is not a MAC address"
                )))
            );
        }
        let mac: MacAddress = "00:1a:2B:3c:4d:5e".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"00:1a:2b:3c:4d:5e\""
        );
    }
}
