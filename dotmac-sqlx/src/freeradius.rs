//! The FreeRADIUS adapter: a [`Provisioner`] that writes FreeRADIUS's own SQL schema
//! (`radcheck`, `radreply`, `radusergroup`, `radgroupcheck`, `radgroupreply`, as created by
//! `mods-config/sql/main/postgresql/schema.sql`) on the PostgreSQL database its `rlm_sql`
//! reads.
//!
//! One adapter serves one tenant's RADIUS database (an operator's FreeRADIUS answers for its
//! own subscribers; its tables have no tenant column). Each command is one transaction that
//! replaces everything the adapter keeps for the user name:
//!
//! - `radcheck`: `Cleartext-Password := <password>` (PAP and CHAP both work from it);
//! - `radreply` while allowed: the rate limit in each configured vendor's dictionary
//!   ([`RateVendor`]: MikroTik's `Mikrotik-Rate-Limit`, Cisco's `Cisco-AVPair` rate-limit
//!   interface configuration) and `Framed-IP-Address` when the service has an address;
//! - `radusergroup` while suspended: membership of the suspended group, which either rejects
//!   (`radgroupcheck`: `Auth-Type := Reject`) or walls off (`radgroupreply`: a `Framed-Pool`
//!   and a low rate), as [`SuspendedMode`] says;
//! - nothing at all once removed.
//!
//! A small table of the adapter's own, `dotmac_provisioned (username, sequence)`, keeps the
//! sequence of the last command applied per user name: a command at or below it changes
//! nothing (a redelivery, or an old command requeued after newer ones ran).

use std::fmt::Write as _;

use dotmac_core::TenantId;
use dotmac_core::outbox::{BoxFuture, HandlerErrorKind};
use dotmac_customers::{Access, ProvisionError, Provisioner, ProvisioningCommand, Rate};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::error::{Context, SqlError};

/// A NAS vendor whose rate-limit attributes the adapter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateVendor {
    /// `Mikrotik-Rate-Limit = "rx/tx [burst-rx/burst-tx threshold-rx/threshold-tx time/time]"`
    /// (rx is what the router receives: the subscriber's upload).
    Mikrotik,
    /// `Cisco-AVPair += "lcp:interface-config#N=rate-limit input|output <bps> <normal> <max>
    /// conform-action transmit exceed-action drop"` (input: the subscriber's upload); the
    /// bursts are 1.5 s and 3 s of traffic at the rate, in bytes, Cisco's usual sizing.
    Cisco,
}

/// What the suspended group does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SuspendedMode {
    /// Access-Reject (`Auth-Type := Reject`).
    Reject,
    /// Access-Accept into a walled garden: addresses from `pool` (`Framed-Pool`) at `rate`.
    WalledGarden {
        /// The NAS's pool for the walled garden.
        pool: String,
        /// The rate there.
        rate: Rate,
    },
}

/// How the adapter writes.
#[derive(Debug, Clone)]
pub struct FreeRadiusSettings {
    vendors: Vec<RateVendor>,
    suspended: SuspendedMode,
    group: String,
}

impl Default for FreeRadiusSettings {
    /// MikroTik rate limits, suspended subscribers rejected, group `dotmac-suspended`.
    fn default() -> Self {
        FreeRadiusSettings {
            vendors: vec![RateVendor::Mikrotik],
            suspended: SuspendedMode::Reject,
            group: "dotmac-suspended".to_owned(),
        }
    }
}

impl FreeRadiusSettings {
    /// With these vendors' attributes (at least one).
    #[must_use]
    pub fn vendors(mut self, vendors: &[RateVendor]) -> Self {
        if !vendors.is_empty() {
            self.vendors = vendors.to_vec();
        }
        self
    }

    /// With this suspended mode.
    #[must_use]
    pub fn suspended(mut self, mode: SuspendedMode) -> Self {
        self.suspended = mode;
        self
    }

    /// With another name for the suspended group (one FreeRADIUS database, two modes).
    #[must_use]
    pub fn group_name(mut self, name: &str) -> Self {
        self.group = name.to_owned();
        self
    }

    /// The suspended group's name.
    pub fn group(&self) -> &str {
        &self.group
    }
}

/// A rate as MikroTik writes it: `M` for whole megabits, `k` otherwise.
fn mikrotik_rate(kbps: u64) -> String {
    if kbps.is_multiple_of(1000) {
        format!("{}M", kbps / 1000)
    } else {
        format!("{kbps}k")
    }
}

/// The reply attributes of an allowed subscriber: `(attribute, op, value)`.
fn rate_replies(
    command: &ProvisioningCommand,
    vendors: &[RateVendor],
) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    let rate = command.rate;
    for vendor in vendors {
        match vendor {
            RateVendor::Mikrotik => {
                let mut value = format!(
                    "{}/{}",
                    mikrotik_rate(rate.upload_kbps()),
                    mikrotik_rate(rate.download_kbps())
                );
                if let Some(burst) = command.burst {
                    let _ = write!(
                        value,
                        " {}/{} {}/{} {}/{}",
                        mikrotik_rate(burst.rate.upload_kbps()),
                        mikrotik_rate(burst.rate.download_kbps()),
                        mikrotik_rate(burst.threshold.upload_kbps()),
                        mikrotik_rate(burst.threshold.download_kbps()),
                        burst.time_secs,
                        burst.time_secs
                    );
                }
                out.push(("Mikrotik-Rate-Limit", ":=", value));
            }
            RateVendor::Cisco => {
                for (n, (direction, kbps)) in [
                    ("input", rate.upload_kbps()),
                    ("output", rate.download_kbps()),
                ]
                .into_iter()
                .enumerate()
                {
                    let bps = kbps.saturating_mul(1000);
                    let normal = bps / 8 * 3 / 2;
                    let max = normal.saturating_mul(2);
                    out.push((
                        "Cisco-AVPair",
                        "+=",
                        format!(
                            "lcp:interface-config#{}=rate-limit {direction} {bps} {normal} {max} conform-action transmit exceed-action drop",
                            n.saturating_add(1)
                        ),
                    ));
                }
            }
        }
    }
    if let Some(address) = command.address {
        out.push(("Framed-IP-Address", ":=", address.to_string()));
    }
    out
}

fn failure(error: SqlError) -> ProvisionError {
    if error.kind().is_retryable() {
        ProvisionError::retryable(error)
    } else {
        ProvisionError::permanent(error)
    }
}

/// The adapter over one tenant's FreeRADIUS database.
#[derive(Debug, Clone)]
pub struct FreeRadiusProvisioner {
    pool: PgPool,
    tenant: TenantId,
    settings: FreeRadiusSettings,
}

impl FreeRadiusProvisioner {
    /// Connects to FreeRADIUS's database at `url` for `tenant`, creates the adapter's
    /// `dotmac_provisioned` table and writes the suspended group.
    ///
    /// # Errors
    ///
    /// [`SqlError`] when the database cannot be reached or lacks FreeRADIUS's schema.
    pub async fn connect(
        url: &str,
        tenant: TenantId,
        settings: FreeRadiusSettings,
    ) -> Result<Self, SqlError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .during("connect to the FreeRADIUS database")?;
        let adapter = FreeRadiusProvisioner {
            pool,
            tenant,
            settings,
        };
        adapter.prepare().await?;
        Ok(adapter)
    }

    async fn prepare(&self) -> Result<(), SqlError> {
        let mut tx = self.pool.begin().await.during("begin")?;
        sqlx::query("SELECT pg_advisory_xact_lock(1813)")
            .execute(&mut *tx)
            .await
            .during("lock the group definition")?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS dotmac_provisioned (username text PRIMARY KEY, sequence bigint NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .during("create dotmac_provisioned")?;
        let group = self.settings.group.as_str();
        for table in ["radgroupcheck", "radgroupreply"] {
            let sql = if table == "radgroupcheck" {
                "DELETE FROM radgroupcheck WHERE groupname = $1"
            } else {
                "DELETE FROM radgroupreply WHERE groupname = $1"
            };
            sqlx::query(sql)
                .bind(group)
                .execute(&mut *tx)
                .await
                .during("clear the suspended group")?;
        }
        match &self.settings.suspended {
            SuspendedMode::Reject => {
                sqlx::query(
                    "INSERT INTO radgroupcheck (groupname, attribute, op, value) VALUES ($1, 'Auth-Type', ':=', 'Reject')",
                )
                .bind(group)
                .execute(&mut *tx)
                .await
                .during("write the suspended group")?;
            }
            SuspendedMode::WalledGarden { pool, rate } => {
                let rate = format!(
                    "{}/{}",
                    mikrotik_rate(rate.upload_kbps()),
                    mikrotik_rate(rate.download_kbps())
                );
                for (attribute, value) in
                    [("Framed-Pool", pool.clone()), ("Mikrotik-Rate-Limit", rate)]
                {
                    sqlx::query(
                        "INSERT INTO radgroupreply (groupname, attribute, op, value) VALUES ($1, $2, ':=', $3)",
                    )
                    .bind(group)
                    .bind(attribute)
                    .bind(value)
                    .execute(&mut *tx)
                    .await
                    .during("write the suspended group")?;
                }
            }
        }
        tx.commit().await.during("commit the suspended group")
    }

    async fn write(&self, command: &ProvisioningCommand) -> Result<bool, SqlError> {
        let user = command.username.as_str();
        let mut tx = self.pool.begin().await.during("begin")?;
        sqlx::query("INSERT INTO dotmac_provisioned (username, sequence) VALUES ($1, 0) ON CONFLICT DO NOTHING")
            .bind(user)
            .execute(&mut *tx)
            .await
            .during("mark the user")?;
        let held: i64 = sqlx::query_scalar(
            "SELECT sequence FROM dotmac_provisioned WHERE username = $1 FOR UPDATE",
        )
        .bind(user)
        .fetch_one(&mut *tx)
        .await
        .during("read the applied sequence")?;
        let sequence = i64::try_from(command.sequence).unwrap_or(i64::MAX);
        if held >= sequence {
            tx.commit().await.during("end")?;
            return Ok(false);
        }
        for sql in [
            "DELETE FROM radcheck WHERE username = $1",
            "DELETE FROM radreply WHERE username = $1",
            "DELETE FROM radusergroup WHERE username = $1",
        ] {
            sqlx::query(sql)
                .bind(user)
                .execute(&mut *tx)
                .await
                .during("clear the user")?;
        }
        if command.access != Access::Removed {
            sqlx::query("INSERT INTO radcheck (username, attribute, op, value) VALUES ($1, 'Cleartext-Password', ':=', $2)")
                .bind(user)
                .bind(&command.password)
                .execute(&mut *tx)
                .await
                .during("write the credentials")?;
        }
        match command.access {
            Access::Allowed => {
                for (attribute, op, value) in rate_replies(command, &self.settings.vendors) {
                    sqlx::query("INSERT INTO radreply (username, attribute, op, value) VALUES ($1, $2, $3, $4)")
                        .bind(user)
                        .bind(attribute)
                        .bind(op)
                        .bind(value)
                        .execute(&mut *tx)
                        .await
                        .during("write the replies")?;
                }
            }
            Access::Suspended => {
                sqlx::query(
                    "INSERT INTO radusergroup (username, groupname, priority) VALUES ($1, $2, 1)",
                )
                .bind(user)
                .bind(&self.settings.group)
                .execute(&mut *tx)
                .await
                .during("join the suspended group")?;
            }
            Access::Removed => {}
        }
        sqlx::query("UPDATE dotmac_provisioned SET sequence = $2 WHERE username = $1")
            .bind(user)
            .bind(sequence)
            .execute(&mut *tx)
            .await
            .during("record the applied sequence")?;
        tx.commit().await.during("commit the user")?;
        Ok(true)
    }
}

impl Provisioner for FreeRadiusProvisioner {
    fn apply<'a>(
        &'a self,
        tenant: TenantId,
        command: &'a ProvisioningCommand,
    ) -> BoxFuture<'a, Result<(), ProvisionError>> {
        Box::pin(async move {
            if tenant != self.tenant {
                return Err(ProvisionError::message(
                    HandlerErrorKind::Permanent,
                    format!(
                        "this FreeRADIUS database serves tenant {}, not {tenant}",
                        self.tenant
                    ),
                ));
            }
            self.write(command).await.map(drop).map_err(failure)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dotmac_core::CustomerId;
    use dotmac_customers::{Burst, ServiceId};

    fn command(rate: Rate) -> ProvisioningCommand {
        ProvisioningCommand {
            service: ServiceId::from_u128(1),
            customer: CustomerId::from_u128(2),
            action: dotmac_customers::ProvisioningAction::Activate,
            sequence: 2,
            username: "u".into(),
            password: "p".into(),
            rate,
            burst: None,
            address: Some(std::net::Ipv4Addr::new(100, 64, 0, 1)),
            vlan: None,
            access: Access::Allowed,
        }
    }

    #[test]
    fn mikrotik_and_cisco_rate_limits_name_the_upload_first() {
        let mut c = command(Rate::new(20_000, 5_500));
        let replies = rate_replies(&c, &[RateVendor::Mikrotik, RateVendor::Cisco]);
        assert_eq!(
            replies[0],
            ("Mikrotik-Rate-Limit", ":=", "5500k/20M".to_owned())
        );
        assert_eq!(
            replies[1].2,
            "lcp:interface-config#1=rate-limit input 5500000 1031250 2062500 conform-action transmit exceed-action drop"
        );
        assert_eq!(
            replies[2].2,
            "lcp:interface-config#2=rate-limit output 20000000 3750000 7500000 conform-action transmit exceed-action drop"
        );
        assert_eq!(
            replies[3],
            ("Framed-IP-Address", ":=", "100.64.0.1".to_owned())
        );
        c.burst = Some(Burst {
            rate: Rate::mbps(40, 10),
            threshold: Rate::mbps(15, 4),
            time_secs: 8,
        });
        assert_eq!(
            rate_replies(&c, &[RateVendor::Mikrotik])[0].2,
            "5500k/20M 10M/40M 4M/15M 8/8"
        );
    }
}
