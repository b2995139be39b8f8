//! RADIUS accounting input: turns Start / Interim-Update / Stop records into usage events.
//!
//! * **64-bit totals.** A record's total in one direction is `Gigawords × 2³² + Octets`.
//! * **Deltas.** RADIUS counters are cumulative for the session (keyed by
//!   `Acct-Unique-Session-Id`); each record produces the growth since the highest total seen
//!   for that session, so duplicates and out-of-order interims produce nothing.
//! * **Never negative, never zeroed.** A counter that goes backwards produces no usage and does
//!   not lower the high-water mark, so the usage already counted stays counted. The exception
//!   is a 32-bit wrap: when a record has no Gigawords and the counter dropped by more than half
//!   the 32-bit range, the counter wrapped and the delta is taken across the wrap. A record
//!   with all counters at zero after traffic was seen (a Stop without traffic attributes that
//!   some servers fill with zeros, FreeRADIUS PR 1460) carries no information and is ignored.
//! * **Direction.** RFC 2866 counts Acct-Input as octets received from the user (upload); many
//!   NAS vendors swap them. [`Direction`] says which convention the NAS follows.
//! * **Idempotent ids.** A usage event's id is derived from the session id, the direction and
//!   the cumulative total, so replaying a record through a fresh normaliser yields the same id
//!   and the usage ingest counts it once.

use chrono::{DateTime, TimeZone, Utc};
use dotmac_core::{CustomerId, SubscriptionId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::usage::{FastMap, MeterId, UsageEvent, UsageEventId};

/// `Acct-Status-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcctStatusType {
    /// A session started.
    Start,
    /// A session's running totals (also called Alive).
    InterimUpdate,
    /// A session ended, with its final totals.
    Stop,
    /// The NAS started: not about a session, produces no usage.
    AccountingOn,
    /// The NAS is stopping: not about a session, produces no usage.
    AccountingOff,
}

impl std::str::FromStr for AcctStatusType {
    type Err = BillingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "Start" | "1" => Ok(AcctStatusType::Start),
            "Stop" | "2" => Ok(AcctStatusType::Stop),
            "Interim-Update" | "Alive" | "3" => Ok(AcctStatusType::InterimUpdate),
            "Accounting-On" | "7" => Ok(AcctStatusType::AccountingOn),
            "Accounting-Off" | "8" => Ok(AcctStatusType::AccountingOff),
            _ => Err(BillingError::MalformedRadiusRecord {
                reason: "unknown Acct-Status-Type",
            }),
        }
    }
}

/// One RADIUS accounting record, with the attributes usage needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RadiusRecord {
    /// `Acct-Status-Type`.
    pub status: AcctStatusType,
    /// `Acct-Unique-Session-Id`: the session key.
    pub session_id: String,
    /// `User-Name`: resolved to a customer by an [`AccountResolver`].
    pub user_name: String,
    /// `Event-Timestamp`, or when the record was received.
    pub timestamp: DateTime<Utc>,
    /// `Acct-Input-Octets`.
    pub input_octets: Option<u32>,
    /// `Acct-Input-Gigawords`.
    pub input_gigawords: Option<u32>,
    /// `Acct-Output-Octets`.
    pub output_octets: Option<u32>,
    /// `Acct-Output-Gigawords`.
    pub output_gigawords: Option<u32>,
}

fn malformed(reason: &'static str) -> BillingError {
    BillingError::MalformedRadiusRecord { reason }
}

fn counter(value: &str, reason: &'static str) -> Result<u32, BillingError> {
    value.trim().parse().map_err(|_| malformed(reason))
}

impl RadiusRecord {
    /// Reads a record from attribute name/value pairs as a RADIUS server logs them
    /// (`Acct-Status-Type = Interim-Update`, `Acct-Input-Octets = 1234`, …). `Event-Timestamp`
    /// may be Unix seconds or RFC 3339; without it, `received_at` is used. Other attributes are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`BillingError::MalformedRadiusRecord`] for a missing or unknown status, a missing
    /// session id, a counter that is not a 32-bit number or an unreadable timestamp.
    pub fn from_attributes<'a, I>(
        attributes: I,
        received_at: DateTime<Utc>,
    ) -> Result<Self, BillingError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut status = None;
        let mut record = RadiusRecord {
            status: AcctStatusType::Start,
            session_id: String::new(),
            user_name: String::new(),
            timestamp: received_at,
            input_octets: None,
            input_gigawords: None,
            output_octets: None,
            output_gigawords: None,
        };
        for (name, value) in attributes {
            let value = value.trim().trim_matches('"');
            match name.trim() {
                "Acct-Status-Type" => status = Some(value.parse()?),
                "Acct-Unique-Session-Id" => record.session_id = value.to_owned(),
                "User-Name" => record.user_name = value.to_owned(),
                "Acct-Input-Octets" => {
                    record.input_octets =
                        Some(counter(value, "Acct-Input-Octets is not a 32-bit number")?)
                }
                "Acct-Input-Gigawords" => {
                    record.input_gigawords = Some(counter(
                        value,
                        "Acct-Input-Gigawords is not a 32-bit number",
                    )?)
                }
                "Acct-Output-Octets" => {
                    record.output_octets =
                        Some(counter(value, "Acct-Output-Octets is not a 32-bit number")?)
                }
                "Acct-Output-Gigawords" => {
                    record.output_gigawords = Some(counter(
                        value,
                        "Acct-Output-Gigawords is not a 32-bit number",
                    )?)
                }
                "Event-Timestamp" => {
                    record.timestamp = match value.parse::<i64>() {
                        Ok(seconds) => Utc
                            .timestamp_opt(seconds, 0)
                            .single()
                            .ok_or(malformed("Event-Timestamp out of range"))?,
                        Err(_) => DateTime::parse_from_rfc3339(value)
                            .map(|t| t.with_timezone(&Utc))
                            .map_err(|_| {
                                malformed("Event-Timestamp is neither Unix seconds nor RFC 3339")
                            })?,
                    }
                }
                _ => {}
            }
        }
        record.status = status.ok_or(malformed("missing Acct-Status-Type"))?;
        Ok(record)
    }

    fn totals(&self) -> Result<Option<(u64, u64, bool)>, BillingError> {
        if (self.input_gigawords.is_some() && self.input_octets.is_none())
            || (self.output_gigawords.is_some() && self.output_octets.is_none())
        {
            return Err(malformed("Gigawords without the matching Octets"));
        }
        if self.input_octets.is_none() && self.output_octets.is_none() {
            return Ok(None);
        }
        let total = |octets: Option<u32>, gigawords: Option<u32>| {
            (u64::from(gigawords.unwrap_or(0)) << 32) | u64::from(octets.unwrap_or(0))
        };
        let has_gigawords = self.input_gigawords.is_some() || self.output_gigawords.is_some();
        Ok(Some((
            total(self.input_octets, self.input_gigawords),
            total(self.output_octets, self.output_gigawords),
            has_gigawords,
        )))
    }
}

/// Which way the NAS counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// RFC 2866: Acct-Input is what the user sent (upload), Acct-Output what it received.
    #[default]
    InputIsUpload,
    /// Swapped, as many NAS vendors do: Acct-Input is what the user received (download).
    InputIsDownload,
}

/// Finds the customer (and subscription) behind a RADIUS `User-Name`.
pub trait AccountResolver {
    /// The account for a user name, or `None` when there is none.
    fn resolve(&self, user_name: &str) -> Option<(CustomerId, Option<SubscriptionId>)>;
}

impl<F> AccountResolver for F
where
    F: Fn(&str) -> Option<(CustomerId, Option<SubscriptionId>)>,
{
    fn resolve(&self, user_name: &str) -> Option<(CustomerId, Option<SubscriptionId>)> {
        self(user_name)
    }
}

#[derive(Debug, Clone)]
struct Session {
    upload: u64,
    download: u64,
    customer: CustomerId,
    subscription: Option<SubscriptionId>,
    key: u64,
    stopped: bool,
}

/// A record refused in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    /// Its position in the batch.
    pub index: usize,
    /// Why.
    pub error: BillingError,
}

/// Turns RADIUS accounting records into usage events on a download and an upload meter.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use dotmac_billing::radius::*;
/// use dotmac_billing::usage::MeterId;
/// use dotmac_core::CustomerId;
///
/// let mut radius = RadiusNormaliser::new(Direction::InputIsUpload, MeterId::from_u128(1), MeterId::from_u128(2));
/// let resolver = |_: &str| Some((CustomerId::from_u128(9), None));
/// let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
/// let interim = RadiusRecord::from_attributes(
///     [("Acct-Status-Type", "Interim-Update"), ("Acct-Unique-Session-Id", "s1"),
///      ("User-Name", "alice"), ("Acct-Output-Octets", "100"), ("Acct-Output-Gigawords", "1"),
///      ("Acct-Input-Octets", "50")],
///     at,
/// )?;
/// let mut events = Vec::new();
/// radius.normalise(&interim, &resolver, &mut events)?;
/// assert_eq!(events.len(), 2);
/// assert_eq!(events[0].quantity, rust_decimal::Decimal::from(4_294_967_396u64)); // 2^32 + 100 down
/// assert_eq!(radius.normalise(&interim, &resolver, &mut events)?, 0);             // duplicate
/// # Ok::<(), dotmac_billing::BillingError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RadiusNormaliser {
    direction: Direction,
    download_meter: MeterId,
    upload_meter: MeterId,
    sessions: FastMap<Box<str>, Session>,
}

/// Half the 32-bit counter range: a larger drop without Gigawords is a wrap.
const WRAP_THRESHOLD: u64 = 1 << 31;

/// FNV-1a: stable across processes and versions, unlike the map's seeded hasher, because the
/// ids derived from it must match when a record is replayed tomorrow.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Growth of a cumulative counter from `last` to `now`.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "each branch's guard bounds its operands: now ≥ last, or last ≤ u32::MAX and now < last"
)]
fn growth(last: u64, now: u64, has_gigawords: bool) -> (u64, u64) {
    if now >= last {
        (now - last, now)
    } else if !has_gigawords && last <= u64::from(u32::MAX) && last - now > WRAP_THRESHOLD {
        ((1u64 << 32) - last + now, now)
    } else {
        (0, last)
    }
}

impl RadiusNormaliser {
    /// A normaliser for a NAS counting in `direction`, producing events on the two meters.
    pub fn new(direction: Direction, download_meter: MeterId, upload_meter: MeterId) -> Self {
        RadiusNormaliser {
            direction,
            download_meter,
            upload_meter,
            sessions: FastMap::default(),
        }
    }

    /// How many sessions are tracked.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Forgets stopped sessions (call after the period in which duplicates can still arrive).
    pub fn forget_stopped(&mut self) {
        self.sessions.retain(|_, s| !s.stopped);
    }

    /// Appends the usage events for one record to `out` and returns how many (0, 1 or 2).
    ///
    /// # Errors
    ///
    /// [`BillingError::MalformedRadiusRecord`] for a record without a session id or with
    /// Gigawords but no Octets; [`BillingError::UnknownRadiusUser`] when a new session's user
    /// is unknown. A refused record changes nothing.
    pub fn normalise<R: AccountResolver + ?Sized>(
        &mut self,
        record: &RadiusRecord,
        resolver: &R,
        out: &mut Vec<UsageEvent>,
    ) -> Result<usize, BillingError> {
        if matches!(
            record.status,
            AcctStatusType::AccountingOn | AcctStatusType::AccountingOff
        ) {
            return Ok(0);
        }
        if record.session_id.is_empty() {
            return Err(malformed("missing Acct-Unique-Session-Id"));
        }
        let totals = record.totals()?;
        let session = match self.sessions.get_mut(record.session_id.as_str()) {
            Some(session) => session,
            None => {
                let (customer, subscription) =
                    resolver.resolve(&record.user_name).ok_or_else(|| {
                        BillingError::UnknownRadiusUser {
                            session: record.session_id.clone(),
                            user_name: record.user_name.clone(),
                        }
                    })?;
                self.sessions
                    .entry(record.session_id.as_str().into())
                    .or_insert(Session {
                        upload: 0,
                        download: 0,
                        customer,
                        subscription,
                        key: stable_hash(record.session_id.as_bytes()),
                        stopped: false,
                    })
            }
        };
        if record.status == AcctStatusType::Stop {
            session.stopped = true;
        }
        let Some((input, output, has_gigawords)) = totals else {
            return Ok(0);
        };
        if input == 0 && output == 0 {
            return Ok(0);
        }
        let (upload_now, download_now) = match self.direction {
            Direction::InputIsUpload => (input, output),
            Direction::InputIsDownload => (output, input),
        };
        let (download, download_mark) = growth(session.download, download_now, has_gigawords);
        let (upload, upload_mark) = growth(session.upload, upload_now, has_gigawords);
        session.download = download_mark;
        session.upload = upload_mark;
        let before = out.len();
        for (delta, mark, meter, salt) in [
            (download, download_mark, self.download_meter, 0u64),
            (upload, upload_mark, self.upload_meter, 1u64),
        ] {
            if delta == 0 {
                continue;
            }
            let low = mix(session.key ^ mix(mark.wrapping_mul(2).wrapping_add(salt)));
            out.push(UsageEvent {
                id: UsageEventId::from_u128((u128::from(session.key) << 64) | u128::from(low)),
                customer: session.customer,
                subscription: session.subscription,
                meter,
                quantity: Decimal::from(delta),
                timestamp: record.timestamp,
                properties: Default::default(),
            });
        }
        // `out` only grows here.
        Ok(out.len().saturating_sub(before))
    }

    /// Normalises a batch: the good records produce events, the bad ones are reported.
    pub fn normalise_batch<R: AccountResolver + ?Sized>(
        &mut self,
        records: &[RadiusRecord],
        resolver: &R,
    ) -> (Vec<UsageEvent>, Vec<RejectedRecord>) {
        let mut events = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (index, record) in records.iter().enumerate() {
            if let Err(error) = self.normalise(record, resolver, &mut events) {
                rejected.push(RejectedRecord { index, error });
            }
        }
        (events, rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        status: AcctStatusType,
        input: Option<(u32, u32)>,
        output: Option<(u32, u32)>,
    ) -> RadiusRecord {
        RadiusRecord {
            status,
            session_id: "sess-1".into(),
            user_name: "alice".into(),
            timestamp: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
            input_octets: input.map(|(o, _)| o),
            input_gigawords: input.map(|(_, g)| g),
            output_octets: output.map(|(o, _)| o),
            output_gigawords: output.map(|(_, g)| g),
        }
    }

    fn resolver(name: &str) -> Option<(CustomerId, Option<SubscriptionId>)> {
        (name == "alice").then_some((CustomerId::from_u128(1), None))
    }

    fn quantities(events: &[UsageEvent]) -> Vec<(u128, u64)> {
        events
            .iter()
            .map(|e| {
                (
                    e.meter.as_uuid().as_u128(),
                    u64::try_from(e.quantity.mantissa()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn backwards_and_zeroed_counters_produce_nothing_and_keep_the_mark() {
        let mut n = RadiusNormaliser::new(
            Direction::InputIsUpload,
            MeterId::from_u128(1),
            MeterId::from_u128(2),
        );
        let mut out = Vec::new();
        n.normalise(
            &record(AcctStatusType::Start, None, None),
            &resolver,
            &mut out,
        )
        .unwrap();
        n.normalise(
            &record(
                AcctStatusType::InterimUpdate,
                Some((10, 0)),
                Some((1000, 0)),
            ),
            &resolver,
            &mut out,
        )
        .unwrap();
        // A smaller interim (out of order) and a zeroed Stop: nothing.
        n.normalise(
            &record(AcctStatusType::InterimUpdate, Some((5, 0)), Some((900, 0))),
            &resolver,
            &mut out,
        )
        .unwrap();
        n.normalise(
            &record(AcctStatusType::Stop, Some((0, 0)), Some((0, 0))),
            &resolver,
            &mut out,
        )
        .unwrap();
        n.normalise(
            &record(AcctStatusType::Stop, Some((30, 0)), Some((1500, 0))),
            &resolver,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            quantities(&out),
            vec![(1, 1000), (2, 10), (1, 500), (2, 20)]
        );
    }

    #[test]
    fn swapped_direction_and_32_bit_wrap() {
        let mut n = RadiusNormaliser::new(
            Direction::InputIsDownload,
            MeterId::from_u128(1),
            MeterId::from_u128(2),
        );
        let mut out = Vec::new();
        let near_top = u32::MAX - 99;
        n.normalise(
            &record(AcctStatusType::InterimUpdate, Some((near_top, 0)), None),
            &resolver,
            &mut out,
        )
        .unwrap();
        let mut wrapped = record(AcctStatusType::InterimUpdate, Some((50, 0)), None);
        wrapped.input_gigawords = None;
        let mut first = record(AcctStatusType::InterimUpdate, Some((near_top, 0)), None);
        first.input_gigawords = None;
        let mut n2 = RadiusNormaliser::new(
            Direction::InputIsDownload,
            MeterId::from_u128(1),
            MeterId::from_u128(2),
        );
        let mut out2 = Vec::new();
        n2.normalise(&first, &resolver, &mut out2).unwrap();
        n2.normalise(&wrapped, &resolver, &mut out2).unwrap();
        assert_eq!(quantities(&out2), vec![(1, u64::from(near_top)), (1, 150)]);
        assert_eq!(quantities(&out), vec![(1, u64::from(near_top))]);
    }

    #[test]
    fn replay_through_a_fresh_normaliser_gives_the_same_ids() {
        let records = [
            record(
                AcctStatusType::InterimUpdate,
                Some((10, 0)),
                Some((1000, 2)),
            ),
            record(AcctStatusType::Stop, Some((20, 0)), Some((2000, 2))),
        ];
        let mut a = RadiusNormaliser::new(
            Direction::InputIsUpload,
            MeterId::from_u128(1),
            MeterId::from_u128(2),
        );
        let mut b = a.clone();
        let (first, _) = a.normalise_batch(&records, &resolver);
        let (second, _) = b.normalise_batch(&records, &resolver);
        assert_eq!(first, second);
        assert_eq!(first[0].quantity, Decimal::from((2u64 << 32) + 1000));
    }

    #[test]
    fn malformed_records_are_rejected_and_the_rest_processed() {
        let mut bad = record(AcctStatusType::InterimUpdate, Some((10, 0)), None);
        bad.input_octets = None;
        let mut stranger = record(AcctStatusType::Start, None, None);
        stranger.session_id = "sess-2".into();
        stranger.user_name = "mallory".into();
        let good = record(AcctStatusType::InterimUpdate, Some((10, 0)), None);
        let mut n = RadiusNormaliser::new(
            Direction::InputIsUpload,
            MeterId::from_u128(1),
            MeterId::from_u128(2),
        );
        let (events, rejected) = n.normalise_batch(&[bad, stranger, good], &resolver);
        assert_eq!(events.len(), 1);
        assert_eq!(
            rejected,
            vec![
                RejectedRecord {
                    index: 0,
                    error: BillingError::MalformedRadiusRecord {
                        reason: "Gigawords without the matching Octets"
                    }
                },
                RejectedRecord {
                    index: 1,
                    error: BillingError::UnknownRadiusUser {
                        session: "sess-2".into(),
                        user_name: "mallory".into()
                    }
                }
            ]
        );
        assert_eq!(n.sessions(), 1);
        let err =
            RadiusRecord::from_attributes([("Acct-Status-Type", "Bogus")], Utc::now()).unwrap_err();
        assert_eq!(
            err,
            BillingError::MalformedRadiusRecord {
                reason: "unknown Acct-Status-Type"
            }
        );
        let err = RadiusRecord::from_attributes(
            [("Acct-Status-Type", "Stop"), ("Acct-Input-Octets", "-5")],
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            BillingError::MalformedRadiusRecord {
                reason: "Acct-Input-Octets is not a 32-bit number"
            }
        );
    }
}
