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
//!
//! **Live sessions** (RFC 5176). What FreeRADIUS answers applies to the next Access-Request;
//! a subscriber already online keeps the rate it was given until its NAS hears otherwise. With
//! [`CoaSettings`], after a command is applied the adapter looks up the user's open sessions
//! in `radacct` (no `acctstoptime`) and sends each session's NAS (`nasipaddress`, at the CoA
//! port) a **Disconnect-Request** when the subscriber is suspended or removed (the NAS ends
//! the session; its next Access-Request meets the suspended group), or a **CoA-Request** with
//! the new rate-limit attributes otherwise (a plan change, a fair-usage slowdown, a restore),
//! naming the session by `User-Name`, `Acct-Session-Id`, `NAS-IP-Address` and
//! `Framed-IP-Address`. An ACK, or a Disconnect-NAK whose `Error-Cause` is
//! Session-Context-Not-Found (the session already ended), completes the command; a NAS that
//! does not answer fails it as retryable, and the redelivered command, already applied to the
//! tables, sends the requests again (at least once: a repeated CoA sets the same rate, a
//! repeated Disconnect finds no session); any other refusal parks it with the NAS's answer.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use dotmac_core::TenantId;
use dotmac_core::outbox::{BoxFuture, HandlerErrorKind};
use dotmac_customers::{Access, ProvisionError, Provisioner, ProvisioningCommand, Rate};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::coa::{self, Attribute, CoaError};
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

/// Where and how the adapter sends RFC 5176 requests for a subscriber's live sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoaSettings {
    port: u16,
    secret: String,
    timeout: Duration,
    attempts: u32,
}

impl CoaSettings {
    /// Requests to each NAS's port 3799 (RFC 5176's) with the NAS's dynamic-authorization
    /// `secret`, two seconds per try, three tries.
    pub fn new(secret: &str) -> Self {
        CoaSettings {
            port: 3799,
            secret: secret.to_owned(),
            timeout: Duration::from_secs(2),
            attempts: 3,
        }
    }

    /// Another CoA port.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How long to wait for each answer.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times to send a request before the command fails as retryable (at least 1).
    #[must_use]
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }
}

/// How the adapter writes.
#[derive(Debug, Clone)]
pub struct FreeRadiusSettings {
    vendors: Vec<RateVendor>,
    suspended: SuspendedMode,
    group: String,
    coa: Option<CoaSettings>,
}

impl Default for FreeRadiusSettings {
    /// MikroTik rate limits, suspended subscribers rejected, group `dotmac-suspended`.
    fn default() -> Self {
        FreeRadiusSettings {
            vendors: vec![RateVendor::Mikrotik],
            suspended: SuspendedMode::Reject,
            group: "dotmac-suspended".to_owned(),
            coa: None,
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

    /// With RFC 5176 requests for live sessions (see the module docs); without, a change
    /// reaches a subscriber at its next Access-Request.
    #[must_use]
    pub fn coa(mut self, coa: CoaSettings) -> Self {
        self.coa = Some(coa);
        self
    }
}

/// A session FreeRADIUS has open for a user (`radacct` without `acctstoptime`).
#[derive(Debug, Clone)]
struct LiveSession {
    session_id: String,
    nas: IpAddr,
    framed: Option<Ipv4Addr>,
}

/// What a command's write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Applied now.
    Applied,
    /// Already the user's last applied command (a redelivery).
    Current,
    /// Older than the last applied one: changes nothing, sends nothing.
    Stale,
}

/// The rate-limit attributes of `command` as vendor-specific attributes of a CoA-Request.
fn coa_rate_attributes(command: &ProvisioningCommand, vendors: &[RateVendor]) -> Vec<Attribute> {
    rate_replies(command, vendors)
        .into_iter()
        .filter_map(|(attribute, _, value)| match attribute {
            // Vendor 14988 (MikroTik), attribute 8; vendor 9 (Cisco), attribute 1.
            "Mikrotik-Rate-Limit" => Some(Attribute::Vendor {
                vendor: 14988,
                kind: 8,
                value,
            }),
            "Cisco-AVPair" => Some(Attribute::Vendor {
                vendor: 9,
                kind: 1,
                value,
            }),
            _ => None,
        })
        .collect()
}

fn coa_failure(error: CoaError) -> ProvisionError {
    match error {
        CoaError::Unanswered(..) => ProvisionError::retryable(error),
        _ => ProvisionError::permanent(error),
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
    /// The identifier of the next RFC 5176 request.
    identifier: Arc<AtomicU8>,
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
            identifier: Arc::new(AtomicU8::new(0)),
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

    async fn write(&self, command: &ProvisioningCommand) -> Result<Written, SqlError> {
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
            return Ok(if held == sequence {
                Written::Current
            } else {
                Written::Stale
            });
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
        Ok(Written::Applied)
    }

    /// The user's open sessions, as FreeRADIUS's accounting recorded them.
    async fn live_sessions(&self, user: &str) -> Result<Vec<LiveSession>, SqlError> {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT acctsessionid, host(nasipaddress), host(framedipaddress) FROM radacct \
             WHERE username = $1 AND acctstoptime IS NULL ORDER BY radacctid",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .during("read the user's open sessions")?;
        Ok(rows
            .into_iter()
            .filter_map(|(session_id, nas, framed)| {
                Some(LiveSession {
                    session_id,
                    nas: nas?.parse().ok()?,
                    framed: framed.and_then(|f| f.parse().ok()),
                })
            })
            .collect())
    }

    /// Tells each live session's NAS of the command: a Disconnect-Request when the
    /// subscriber may no longer be online, a CoA-Request with the new rate otherwise.
    async fn notify(
        &self,
        command: &ProvisioningCommand,
        coa_settings: &CoaSettings,
    ) -> Result<(), ProvisionError> {
        let sessions = self
            .live_sessions(&command.username)
            .await
            .map_err(failure)?;
        for session in sessions {
            let mut attributes = vec![
                Attribute::user_name(&command.username),
                Attribute::acct_session_id(&session.session_id),
            ];
            if let IpAddr::V4(nas) = session.nas {
                attributes.push(Attribute::nas_ip(nas));
            }
            if let Some(framed) = session.framed {
                attributes.push(Attribute::framed_ip(framed));
            }
            let code = if command.access == Access::Allowed {
                attributes.extend(coa_rate_attributes(command, &self.settings.vendors));
                coa::COA_REQUEST
            } else {
                coa::DISCONNECT_REQUEST
            };
            let identifier = self.identifier.fetch_add(1, Ordering::Relaxed);
            let packet = coa::encode(code, identifier, &attributes, &coa_settings.secret)
                .map_err(coa_failure)?;
            let nas = SocketAddr::new(session.nas, coa_settings.port);
            match coa::exchange(
                &packet,
                nas,
                &coa_settings.secret,
                coa_settings.timeout,
                coa_settings.attempts,
            )
            .await
            {
                Ok(()) => {}
                // The session ended before the Disconnect reached it.
                Err(CoaError::Refused {
                    cause: Some(coa::SESSION_CONTEXT_NOT_FOUND),
                    ..
                }) if code == coa::DISCONNECT_REQUEST => {}
                Err(e) => return Err(coa_failure(e)),
            }
        }
        Ok(())
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
            let written = self.write(command).await.map_err(failure)?;
            match (&self.settings.coa, written) {
                (Some(coa), Written::Applied | Written::Current) => self.notify(command, coa).await,
                _ => Ok(()),
            }
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
