//! RADIUS accounting input: turns Start / Interim-Update / Stop records into usage events.
//!
//! * **Sessions never mix.** A session is keyed by `Acct-Unique-Session-Id` when the record has
//!   one, else by (NAS, `Acct-Session-Id`, `User-Name`). A record whose `User-Name` differs from
//!   the one its session started with is refused ([`UsageError::RadiusSessionUserMismatch`]):
//!   a record carrying someone else's session id is never billed to that someone.
//! * **64-bit totals.** A record's total in one direction is `Gigawords × 2³² + Octets`. A record
//!   with Octets but no Gigawords keeps the session's last high word, plus one when the low word
//!   is smaller than the last one (a single 32-bit wrap), unless the record is evidence of a reset
//!   (below). A record without an Octets attribute keeps that direction's stored total: a Stop
//!   never zeroes it.
//! * **Deltas.** Counters are cumulative for the session; each record yields its growth over the
//!   session's previous total, so duplicates yield nothing.
//! * **Stale, wrap or reset.** Each record is compared with the session's latest one:
//!   - *stale* (an out-of-order or retransmitted record): its timestamp is earlier; or nothing
//!     elapsed (same timestamp, same or smaller Acct-Session-Time) and a counter or the session
//!     time fell. It yields nothing and changes nothing.
//!   - *reset* (the NAS restarted counting from zero): a different `Acct-Session-Id` under the
//!     same key; or Acct-Session-Time went backwards while the timestamp moved forward; or a
//!     counter with Gigawords fell (a 64-bit counter cannot wrap); or a counter without Gigawords
//!     fell by more than one wrap can explain: the growth across a wrap, `2³² − last + now`
//!     bytes, exceeds what the line can carry in the elapsed time (the larger of the timestamps'
//!     and the session times' differences) at [`RadiusSettings::max_line_rate_bps`]. After a
//!     reset the record's counters count from zero: its delta is its whole total, and usage
//!     already counted stays counted.
//!   - otherwise a fall of the low word without Gigawords is a wrap.
//!
//!   So the reset rule needs evidence; without any, the wrap rule applies.
//! * **Zero-filled Stops.** A record whose counters are all zero after traffic was counted (a
//!   Stop without traffic attributes that some servers fill with zeros, FreeRADIUS PR 1460)
//!   keeps the stored totals.
//! * **Direction.** RFC 2866 counts Acct-Input as octets received from the user (upload); many
//!   NAS vendors swap them. [`Direction`] says which convention the NAS follows.
//! * **Idempotent ids.** A usage event's id is derived from the session key, the direction and
//!   the usage counted so far, so replaying records through a fresh normaliser yields the same
//!   ids and the usage ingest counts them once.
//! * **Restarts.** [`RadiusNormaliser`] serializes with serde (settings and every session's
//!   state); a normaliser restored from it carries on where the saved one stopped, so the next
//!   interim of a running session yields only its delta.

use std::fmt::Write as _;

use chrono::{DateTime, TimeZone, Utc};
use dotmac_core::{CustomerId, IdDigest, MeterId, SubscriptionId, UsageEventId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::UsageError;
use crate::event::UsageEvent;

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
    type Err = UsageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "Start" | "1" => Ok(AcctStatusType::Start),
            "Stop" | "2" => Ok(AcctStatusType::Stop),
            "Interim-Update" | "Alive" | "3" => Ok(AcctStatusType::InterimUpdate),
            "Accounting-On" | "7" => Ok(AcctStatusType::AccountingOn),
            "Accounting-Off" | "8" => Ok(AcctStatusType::AccountingOff),
            _ => Err(UsageError::MalformedRadiusRecord {
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
    /// `Acct-Unique-Session-Id`: the session key when the server computed one (empty when not).
    pub session_id: String,
    /// `Acct-Session-Id`, the NAS's own session id: with the NAS and the User-Name it keys the
    /// session when there is no Acct-Unique-Session-Id; a different one under the same unique id
    /// means the NAS restarted its counters.
    #[serde(default)]
    pub acct_session_id: Option<String>,
    /// The NAS (`NAS-IP-Address`, `NAS-IPv6-Address` or `NAS-Identifier`).
    #[serde(default)]
    pub nas: Option<String>,
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
    /// `Acct-Session-Time`: seconds since the session started.
    #[serde(default)]
    pub session_time: Option<u32>,
}

fn malformed(reason: &'static str) -> UsageError {
    UsageError::MalformedRadiusRecord { reason }
}

fn counter(value: &str, reason: &'static str) -> Result<u32, UsageError> {
    value.trim().parse().map_err(|_| malformed(reason))
}

/// One direction's counter as a record reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    octets: u32,
    gigawords: Option<u32>,
}

impl Reading {
    /// The 64-bit total the record states, with a missing high word read as zero.
    fn stated(self) -> u64 {
        (u64::from(self.gigawords.unwrap_or(0)) << 32) | u64::from(self.octets)
    }
}

impl RadiusRecord {
    /// Reads a record from attribute name/value pairs as a RADIUS server logs them
    /// (`Acct-Status-Type = Interim-Update`, `Acct-Input-Octets = 1234`, …). `Event-Timestamp`
    /// may be Unix seconds or RFC 3339; without it, `received_at` is used. Other attributes are
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`UsageError::MalformedRadiusRecord`] for a missing or unknown status, a counter or
    /// session time that is not a 32-bit number or an unreadable timestamp.
    pub fn from_attributes<'a, I>(
        attributes: I,
        received_at: DateTime<Utc>,
    ) -> Result<Self, UsageError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut status = None;
        let mut nas_identifier = None;
        let mut record = RadiusRecord {
            status: AcctStatusType::Start,
            session_id: String::new(),
            acct_session_id: None,
            nas: None,
            user_name: String::new(),
            timestamp: received_at,
            input_octets: None,
            input_gigawords: None,
            output_octets: None,
            output_gigawords: None,
            session_time: None,
        };
        for (name, value) in attributes {
            let value = value.trim().trim_matches('"');
            match name.trim() {
                "Acct-Status-Type" => status = Some(value.parse()?),
                "Acct-Unique-Session-Id" => record.session_id = value.to_owned(),
                "Acct-Session-Id" => record.acct_session_id = Some(value.to_owned()),
                "NAS-IP-Address" | "NAS-IPv6-Address" => record.nas = Some(value.to_owned()),
                "NAS-Identifier" => nas_identifier = Some(value.to_owned()),
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
                "Acct-Session-Time" => {
                    record.session_time =
                        Some(counter(value, "Acct-Session-Time is not a 32-bit number")?)
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
        // An address names the NAS more reliably than its configurable identifier.
        if record.nas.is_none() {
            record.nas = nas_identifier;
        }
        record.status = status.ok_or(malformed("missing Acct-Status-Type"))?;
        Ok(record)
    }

    /// The input and output readings.
    fn readings(&self) -> Result<(Option<Reading>, Option<Reading>), UsageError> {
        if (self.input_gigawords.is_some() && self.input_octets.is_none())
            || (self.output_gigawords.is_some() && self.output_octets.is_none())
        {
            return Err(malformed("Gigawords without the matching Octets"));
        }
        let reading = |octets: Option<u32>, gigawords: Option<u32>| {
            octets.map(|octets| Reading { octets, gigawords })
        };
        Ok((
            reading(self.input_octets, self.input_gigawords),
            reading(self.output_octets, self.output_gigawords),
        ))
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

/// What identifies a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKey {
    /// `Acct-Unique-Session-Id`.
    Unique(String),
    /// A NAS's `Acct-Session-Id` for one user (used when there is no unique id).
    Nas {
        /// The NAS (empty when the records do not name it).
        nas: String,
        /// `Acct-Session-Id`.
        acct_session_id: String,
        /// `User-Name`.
        user_name: String,
    },
}

impl SessionKey {
    /// The key of the session `record` belongs to.
    ///
    /// # Errors
    ///
    /// [`UsageError::MalformedRadiusRecord`] when the record has neither an
    /// Acct-Unique-Session-Id nor an Acct-Session-Id.
    pub fn of(record: &RadiusRecord) -> Result<SessionKey, UsageError> {
        if !record.session_id.is_empty() {
            return Ok(SessionKey::Unique(record.session_id.clone()));
        }
        match record.acct_session_id.as_deref() {
            Some(id) if !id.is_empty() => Ok(SessionKey::Nas {
                nas: record.nas.clone().unwrap_or_default(),
                acct_session_id: id.to_owned(),
                user_name: record.user_name.clone(),
            }),
            _ => Err(malformed("missing Acct-Unique-Session-Id")),
        }
    }

    /// Writes the map key into `buf`: unambiguous (lengths prefix the parts of a NAS key).
    fn encode_parts(unique: &str, nas: &str, acct_session_id: &str, user: &str, buf: &mut String) {
        buf.clear();
        if unique.is_empty() {
            // Writing to a String cannot fail.
            let _ = write!(
                buf,
                "N{}:{nas}{}:{acct_session_id}{user}",
                nas.len(),
                acct_session_id.len()
            );
        } else {
            buf.push('U');
            buf.push_str(unique);
        }
    }

    fn encode(&self, buf: &mut String) {
        match self {
            SessionKey::Unique(id) => SessionKey::encode_parts(id, "", "", "", buf),
            SessionKey::Nas {
                nas,
                acct_session_id,
                user_name,
            } => SessionKey::encode_parts("", nas, acct_session_id, user_name, buf),
        }
    }

    /// [`SessionKey::of`] written into `buf`, without allocating.
    fn encode_record(record: &RadiusRecord, buf: &mut String) -> Result<(), UsageError> {
        if record.session_id.is_empty()
            && record.acct_session_id.as_deref().is_none_or(str::is_empty)
        {
            return Err(malformed("missing Acct-Unique-Session-Id"));
        }
        SessionKey::encode_parts(
            &record.session_id,
            record.nas.as_deref().unwrap_or(""),
            record.acct_session_id.as_deref().unwrap_or(""),
            &record.user_name,
            buf,
        );
        Ok(())
    }
}

/// One session's state: what survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    customer: CustomerId,
    subscription: Option<SubscriptionId>,
    /// The User-Name the session started with.
    user_name: String,
    /// The latest Acct-Session-Id seen.
    acct_session_id: Option<String>,
    /// Digest of the session key, part of every event id of the session.
    key_hash: u64,
    /// The counters as the NAS last reported them (64-bit, after wrap handling).
    upload_counter: u64,
    download_counter: u64,
    /// Usage counted so far (the sum of the deltas): never falls, even across resets.
    upload_counted: u64,
    download_counted: u64,
    /// The latest Acct-Session-Time.
    seconds: Option<u32>,
    /// The timestamp of the latest record applied.
    last_at: Option<DateTime<Utc>>,
    stopped: bool,
}

/// A session's totals, as [`RadiusNormaliser::session`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionUsage {
    /// The customer billed.
    pub customer: CustomerId,
    /// Bytes uploaded (usage counted, across wraps and resets).
    pub upload_bytes: u64,
    /// Bytes downloaded.
    pub download_bytes: u64,
    /// The latest Acct-Session-Time, if any record carried one.
    pub seconds: Option<u32>,
    /// Whether a Stop was seen.
    pub stopped: bool,
}

/// A record refused in a batch.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RejectedRecord {
    /// Its position in the batch.
    pub index: usize,
    /// Why.
    pub error: UsageError,
}

/// The default [`RadiusSettings::max_line_rate_bps`]: 10 Gbit/s, the fastest common access
/// line (XGS-PON, 10G Ethernet). Generous on purpose: a genuine wrap is never taken for a
/// reset on a line this fast or slower; set the real rate for sharper reset detection.
pub const DEFAULT_MAX_LINE_RATE_BPS: u64 = 10_000_000_000;

/// How a [`RadiusNormaliser`] reads its NAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RadiusSettings {
    /// Which way the NAS counts.
    pub direction: Direction,
    /// The meter download events go to.
    pub download_meter: MeterId,
    /// The meter upload events go to.
    pub upload_meter: MeterId,
    /// The fastest any subscriber line moves data in one direction, in bits per second: a
    /// counter without Gigawords that falls by more than this rate can carry in the elapsed
    /// time across one wrap was reset, not wrapped. 0 makes every such fall a reset.
    pub max_line_rate_bps: u64,
}

impl RadiusSettings {
    /// Settings with the default line rate, [`DEFAULT_MAX_LINE_RATE_BPS`].
    pub fn new(direction: Direction, download_meter: MeterId, upload_meter: MeterId) -> Self {
        RadiusSettings {
            direction,
            download_meter,
            upload_meter,
            max_line_rate_bps: DEFAULT_MAX_LINE_RATE_BPS,
        }
    }

    /// The same settings with another line rate (bits per second).
    pub fn with_max_line_rate_bps(mut self, bits_per_second: u64) -> Self {
        self.max_line_rate_bps = bits_per_second;
        self
    }

    /// The most bytes a line can carry in `seconds`.
    fn capacity(&self, seconds: u64) -> u64 {
        self.max_line_rate_bps.saturating_mul(seconds) / 8
    }
}

/// Turns RADIUS accounting records into usage events on a download and an upload meter.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use dotmac_usage::radius::*;
/// use dotmac_usage::MeterId;
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
///
/// // The state survives a restart.
/// let saved = serde_json::to_string(&radius).unwrap();
/// let restored: RadiusNormaliser = serde_json::from_str(&saved).unwrap();
/// assert_eq!(restored.session(&SessionKey::Unique("s1".into())), radius.session(&SessionKey::Unique("s1".into())));
/// # Ok::<(), dotmac_usage::UsageError>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "SavedNormaliser", from = "SavedNormaliser")]
pub struct RadiusNormaliser {
    settings: RadiusSettings,
    sessions: dotmac_core::FastMap<Box<str>, Session>,
    /// Reused to build each record's map key without allocating.
    scratch: String,
}

/// The serialized form of a [`RadiusNormaliser`]: sessions in key order, so the same state
/// always serializes the same way.
#[derive(Serialize, Deserialize)]
struct SavedNormaliser {
    settings: RadiusSettings,
    sessions: Vec<SessionState>,
}

/// One session's state, as a [`RadiusNormaliser`] keeps it: for a reader that persists
/// sessions one by one (an incremental reader of a RADIUS server's accounting table saves the
/// state of each session it touched, and restores only the sessions of its next batch), where
/// serializing the whole normaliser would rewrite every open session each time.
///
/// Serialized as one entry of a serialized normaliser's `sessions`; its contents are the
/// normaliser's business (read it back with [`RadiusNormaliser::restore_session`]).
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use dotmac_usage::radius::*;
/// use dotmac_usage::MeterId;
/// use dotmac_core::CustomerId;
///
/// let settings = RadiusSettings::new(Direction::InputIsUpload, MeterId::from_u128(1), MeterId::from_u128(2));
/// let resolver = |_: &str| Some((CustomerId::from_u128(9), None));
/// let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
/// let interim = |octets: &str| RadiusRecord::from_attributes(
///     [("Acct-Status-Type", "Interim-Update"), ("Acct-Unique-Session-Id", "s1"),
///      ("User-Name", "alice"), ("Acct-Output-Octets", octets)],
///     at,
/// );
/// let mut first = RadiusNormaliser::with_settings(settings);
/// first.normalise(&interim("100")?, &resolver, &mut Vec::new())?;
/// let key = SessionKey::Unique("s1".into());
/// let saved = serde_json::to_string(&first.session_state(&key).unwrap()).unwrap();
///
/// // Another process, another day: only this session restored.
/// let mut next = RadiusNormaliser::with_settings(settings);
/// next.restore_session(serde_json::from_str(&saved).unwrap());
/// let mut events = Vec::new();
/// next.normalise(&interim("250")?, &resolver, &mut events)?;
/// assert_eq!(events[0].quantity, rust_decimal::Decimal::from(150));
/// # Ok::<(), dotmac_usage::UsageError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    key: String,
    #[serde(flatten)]
    session: Session,
}

impl SessionState {
    /// Whether the session's Stop was seen.
    pub fn stopped(&self) -> bool {
        self.session.stopped
    }
}

impl From<RadiusNormaliser> for SavedNormaliser {
    fn from(normaliser: RadiusNormaliser) -> Self {
        let mut sessions: Vec<SessionState> = normaliser
            .sessions
            .into_iter()
            .map(|(key, session)| SessionState {
                key: key.into(),
                session,
            })
            .collect();
        sessions.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        SavedNormaliser {
            settings: normaliser.settings,
            sessions,
        }
    }
}

impl From<SavedNormaliser> for RadiusNormaliser {
    fn from(saved: SavedNormaliser) -> Self {
        RadiusNormaliser {
            settings: saved.settings,
            sessions: saved
                .sessions
                .into_iter()
                .map(|s| (s.key.into_boxed_str(), s.session))
                .collect(),
            scratch: String::new(),
        }
    }
}

/// The session key's digest: stable across processes and versions, unlike the map's seeded
/// hasher, because the ids derived from it must match when a record is replayed tomorrow.
fn session_digest(key: &[u8]) -> u64 {
    // The low half of the digest is as well mixed as the whole.
    #[allow(clippy::cast_possible_truncation)]
    let low = IdDigest::new("radius-session").bytes(key).finish() as u64;
    low
}

/// What a record is, compared with its session's latest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Older than what the session has: ignored.
    Stale,
    /// The NAS restarted its counters: they count from zero.
    Reset,
    /// The counters continue: each direction's new counter.
    Continues { upload: u64, download: u64 },
}

/// Where one direction's counter goes, or the verdict (stale or reset) its reading is
/// evidence of.
fn next_counter(
    last: u64,
    reading: Option<Reading>,
    elapsed: u64,
    settings: &RadiusSettings,
) -> Result<u64, Verdict> {
    let Some(reading) = reading else {
        return Ok(last);
    };
    let fell = if elapsed == 0 {
        Verdict::Stale
    } else {
        Verdict::Reset
    };
    match reading.gigawords {
        Some(_) => {
            let now = reading.stated();
            if now >= last { Ok(now) } else { Err(fell) }
        }
        None => {
            let high = last >> 32;
            let last_low = last & u64::from(u32::MAX);
            let low = u64::from(reading.octets);
            if low >= last_low {
                return Ok((high << 32) | low);
            }
            // One wrap: the high word goes up by one.
            let wrapped = high
                .checked_add(1)
                .and_then(|h| h.checked_mul(1 << 32))
                .map(|h| h | low);
            match wrapped {
                Some(now)
                    if elapsed > 0
                        && now
                            .checked_sub(last)
                            .is_some_and(|grown| grown <= settings.capacity(elapsed)) =>
                {
                    Ok(now)
                }
                _ => Err(fell),
            }
        }
    }
}

impl RadiusNormaliser {
    /// A normaliser for a NAS counting in `direction`, producing events on the two meters, with
    /// the default line rate.
    pub fn new(direction: Direction, download_meter: MeterId, upload_meter: MeterId) -> Self {
        RadiusNormaliser::with_settings(RadiusSettings::new(
            direction,
            download_meter,
            upload_meter,
        ))
    }

    /// A normaliser with these settings.
    pub fn with_settings(settings: RadiusSettings) -> Self {
        RadiusNormaliser {
            settings,
            sessions: dotmac_core::FastMap::default(),
            scratch: String::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &RadiusSettings {
        &self.settings
    }

    /// How many sessions are tracked.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// A session's totals, or `None` when it is not tracked.
    pub fn session(&self, key: &SessionKey) -> Option<SessionUsage> {
        let mut buf = String::new();
        key.encode(&mut buf);
        self.sessions.get(buf.as_str()).map(|s| SessionUsage {
            customer: s.customer,
            upload_bytes: s.upload_counted,
            download_bytes: s.download_counted,
            seconds: s.seconds,
            stopped: s.stopped,
        })
    }

    /// One session's state, to persist on its own ([`SessionState`]); `None` when the session
    /// is not tracked.
    pub fn session_state(&self, key: &SessionKey) -> Option<SessionState> {
        let mut buf = String::new();
        key.encode(&mut buf);
        self.sessions.get(buf.as_str()).map(|session| SessionState {
            key: buf.clone(),
            session: session.clone(),
        })
    }

    /// Tracks a session as `state` says, replacing what the normaliser knew of it: the next
    /// record of the session yields only its growth over the state's totals.
    pub fn restore_session(&mut self, state: SessionState) {
        self.sessions
            .insert(state.key.into_boxed_str(), state.session);
    }

    /// Forgets stopped sessions (call after the period in which duplicates can still arrive).
    pub fn forget_stopped(&mut self) {
        self.sessions.retain(|_, s| !s.stopped);
    }

    /// Appends the usage events for one record to `out` and returns how many (0, 1 or 2).
    ///
    /// # Errors
    ///
    /// [`UsageError::MalformedRadiusRecord`] for a record with neither an
    /// Acct-Unique-Session-Id nor an Acct-Session-Id, or with Gigawords but no Octets;
    /// [`UsageError::UnknownRadiusUser`] when a new session's user is unknown;
    /// [`UsageError::RadiusSessionUserMismatch`] when the record's User-Name is not its
    /// session's; [`UsageError::Core`] when the usage counted for a session would pass
    /// 2⁶⁴ bytes. A refused record changes nothing.
    ///
    /// Counted in `dotmac_usage_radius_records_total` (label `outcome`: `usage`, `no_usage`,
    /// `rejected`).
    pub fn normalise<R: AccountResolver + ?Sized>(
        &mut self,
        record: &RadiusRecord,
        resolver: &R,
        out: &mut Vec<UsageEvent>,
    ) -> Result<usize, UsageError> {
        let result = self.normalise_record(record, resolver, out);
        let mut tally = RecordTally::default();
        tally.add(&result);
        tally.count();
        result
    }

    /// [`RadiusNormaliser::normalise`] without the metrics, which a batch counts once.
    fn normalise_record<R: AccountResolver + ?Sized>(
        &mut self,
        record: &RadiusRecord,
        resolver: &R,
        out: &mut Vec<UsageEvent>,
    ) -> Result<usize, UsageError> {
        if matches!(
            record.status,
            AcctStatusType::AccountingOn | AcctStatusType::AccountingOff
        ) {
            return Ok(0);
        }
        let (input, output) = record.readings()?;
        SessionKey::encode_record(record, &mut self.scratch)?;
        let session = match self.sessions.get_mut(self.scratch.as_str()) {
            Some(session) => {
                if session.user_name != record.user_name {
                    return Err(UsageError::RadiusSessionUserMismatch {
                        session: record.session_id.clone(),
                        session_user: session.user_name.clone(),
                        user_name: record.user_name.clone(),
                    });
                }
                session
            }
            None => {
                let (customer, subscription) =
                    resolver.resolve(&record.user_name).ok_or_else(|| {
                        UsageError::UnknownRadiusUser {
                            session: record.session_id.clone(),
                            user_name: record.user_name.clone(),
                        }
                    })?;
                let key_hash = if record.session_id.is_empty() {
                    session_digest(self.scratch.as_bytes())
                } else {
                    session_digest(record.session_id.as_bytes())
                };
                self.sessions
                    .entry(self.scratch.as_str().into())
                    .or_insert(Session {
                        customer,
                        subscription,
                        user_name: record.user_name.clone(),
                        acct_session_id: None,
                        key_hash,
                        upload_counter: 0,
                        download_counter: 0,
                        upload_counted: 0,
                        download_counted: 0,
                        seconds: None,
                        last_at: None,
                        stopped: false,
                    })
            }
        };
        let (upload, download) = match self.settings.direction {
            Direction::InputIsUpload => (input, output),
            Direction::InputIsDownload => (output, input),
        };
        let verdict = verdict(session, record, upload, download, &self.settings);
        let (upload_counter, download_counter) = match verdict {
            Verdict::Stale => return Ok(0),
            Verdict::Reset => (
                upload.map_or(0, Reading::stated),
                download.map_or(0, Reading::stated),
            ),
            Verdict::Continues { upload, download } => (upload, download),
        };
        let (upload_from, download_from) = match verdict {
            Verdict::Reset => (0, 0),
            _ => (session.upload_counter, session.download_counter),
        };
        let zero_filled = upload.is_none_or(|r| r.stated() == 0)
            && download.is_none_or(|r| r.stated() == 0)
            && (session.upload_counted > 0 || session.download_counted > 0);
        let (upload_delta, download_delta) = if zero_filled {
            (0, 0)
        } else {
            (
                upload_counter.saturating_sub(upload_from),
                download_counter.saturating_sub(download_from),
            )
        };
        let overflow = || dotmac_core::CoreError::Overflow {
            operation: "RADIUS session usage",
        };
        let upload_counted = session
            .upload_counted
            .checked_add(upload_delta)
            .ok_or_else(overflow)?;
        let download_counted = session
            .download_counted
            .checked_add(download_delta)
            .ok_or_else(overflow)?;
        if !zero_filled {
            session.upload_counter = upload_counter;
            session.download_counter = download_counter;
        }
        session.upload_counted = upload_counted;
        session.download_counted = download_counted;
        if record.status == AcctStatusType::Stop {
            session.stopped = true;
        }
        session.seconds = record.session_time.or(session.seconds);
        session.last_at = Some(record.timestamp);
        if record.acct_session_id.is_some() {
            session.acct_session_id.clone_from(&record.acct_session_id);
        }
        let before = out.len();
        for (delta, counted, meter, salt) in [
            (
                download_delta,
                download_counted,
                self.settings.download_meter,
                0u64,
            ),
            (
                upload_delta,
                upload_counted,
                self.settings.upload_meter,
                1u64,
            ),
        ] {
            if delta == 0 {
                continue;
            }
            out.push(UsageEvent {
                id: UsageEventId::derived(
                    IdDigest::new("radius-usage")
                        .u64(session.key_hash)
                        .u64(counted)
                        .u64(salt),
                ),
                customer: session.customer,
                subscription: session.subscription,
                meter,
                quantity: Decimal::from(delta),
                timestamp: record.timestamp,
                properties: Default::default(),
            });
        }
        Ok(out.len().saturating_sub(before))
    }

    /// Normalises a batch: the good records produce events, the bad ones are reported.
    /// Counted in `dotmac_usage_radius_records_total` as [`RadiusNormaliser::normalise`]
    /// counts, once per batch and outcome.
    pub fn normalise_batch<R: AccountResolver + ?Sized>(
        &mut self,
        records: &[RadiusRecord],
        resolver: &R,
    ) -> (Vec<UsageEvent>, Vec<RejectedRecord>) {
        let mut events = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        let mut tally = RecordTally::default();
        for (index, record) in records.iter().enumerate() {
            let result = self.normalise_record(record, resolver, &mut events);
            tally.add(&result);
            if let Err(error) = result {
                rejected.push(RejectedRecord { index, error });
            }
        }
        tally.count();
        (events, rejected)
    }
}

/// Records normalised, by outcome, for `dotmac_usage_radius_records_total`: a batch counts
/// once per outcome, not once per record.
#[derive(Default)]
struct RecordTally {
    /// Records that produced at least one usage event.
    usage: u64,
    /// Records that produced none (Accounting-On/Off, a stale or repeated record, no new
    /// bytes).
    no_usage: u64,
    /// Records refused.
    rejected: u64,
}

impl RecordTally {
    fn add(&mut self, result: &Result<usize, UsageError>) {
        // Counts of records in memory: they cannot reach u64::MAX.
        let slot = match result {
            Ok(0) => &mut self.no_usage,
            Ok(_) => &mut self.usage,
            Err(_) => &mut self.rejected,
        };
        *slot = slot.saturating_add(1);
    }

    fn count(&self) {
        // Literal labels: the metrics macros make a static key, so nothing is allocated.
        if self.usage > 0 {
            metrics::counter!("dotmac_usage_radius_records_total", "outcome" => "usage")
                .increment(self.usage);
        }
        if self.no_usage > 0 {
            metrics::counter!("dotmac_usage_radius_records_total", "outcome" => "no_usage")
                .increment(self.no_usage);
        }
        if self.rejected > 0 {
            metrics::counter!("dotmac_usage_radius_records_total", "outcome" => "rejected")
                .increment(self.rejected);
        }
    }
}

/// Stale, reset or continuing (the rule is in the module docs).
fn verdict(
    session: &Session,
    record: &RadiusRecord,
    upload: Option<Reading>,
    download: Option<Reading>,
    settings: &RadiusSettings,
) -> Verdict {
    let Some(last_at) = session.last_at else {
        // The session's first record: its counters start from zero.
        return Verdict::Continues {
            upload: upload.map_or(0, Reading::stated),
            download: download.map_or(0, Reading::stated),
        };
    };
    let since_last = record
        .timestamp
        .signed_duration_since(last_at)
        .num_seconds();
    if since_last < 0 {
        return Verdict::Stale;
    }
    if let (Some(known), Some(now)) = (&session.acct_session_id, &record.acct_session_id)
        && known != now
    {
        return Verdict::Reset;
    }
    let session_time_step = match (session.seconds, record.session_time) {
        (Some(before), Some(now)) => i64::from(now).saturating_sub(i64::from(before)),
        _ => 0,
    };
    if session_time_step < 0 {
        return if since_last > 0 {
            Verdict::Reset
        } else {
            Verdict::Stale
        };
    }
    let elapsed = u64::try_from(since_last.max(session_time_step)).unwrap_or(0);
    match (
        next_counter(session.upload_counter, upload, elapsed, settings),
        next_counter(session.download_counter, download, elapsed, settings),
    ) {
        (Ok(upload), Ok(download)) => Verdict::Continues { upload, download },
        (Err(Verdict::Stale), _) | (_, Err(Verdict::Stale)) => Verdict::Stale,
        _ => Verdict::Reset,
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
            acct_session_id: None,
            nas: None,
            user_name: "alice".into(),
            timestamp: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
            input_octets: input.map(|(o, _)| o),
            input_gigawords: input.map(|(_, g)| g),
            output_octets: output.map(|(o, _)| o),
            output_gigawords: output.map(|(_, g)| g),
            session_time: None,
        }
    }

    /// An upload-only record without Gigawords, `seconds` after noon, with that session time.
    fn upload_at(
        status: AcctStatusType,
        seconds: i64,
        octets: u32,
        session_time: u32,
    ) -> RadiusRecord {
        let mut r = record(status, Some((octets, 0)), None);
        r.input_gigawords = None;
        r.timestamp += chrono::Duration::seconds(seconds);
        r.session_time = Some(session_time);
        r
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
        // Five minutes later: time enough for 150 bytes, so the fall is a wrap.
        let mut wrapped = record(AcctStatusType::InterimUpdate, Some((50, 0)), None);
        wrapped.input_gigawords = None;
        wrapped.timestamp += chrono::Duration::minutes(5);
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
                    error: UsageError::MalformedRadiusRecord {
                        reason: "Gigawords without the matching Octets"
                    }
                },
                RejectedRecord {
                    index: 1,
                    error: UsageError::UnknownRadiusUser {
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
            UsageError::MalformedRadiusRecord {
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
            UsageError::MalformedRadiusRecord {
                reason: "Acct-Input-Octets is not a 32-bit number"
            }
        );
    }

    fn normaliser() -> RadiusNormaliser {
        RadiusNormaliser::new(
            Direction::InputIsUpload,
            MeterId::from_u128(1),
            MeterId::from_u128(2),
        )
    }

    fn usage(n: &RadiusNormaliser, id: &str) -> (u64, u64) {
        let s = n.session(&SessionKey::Unique(id.into())).unwrap();
        (s.upload_bytes, s.download_bytes)
    }

    fn alice_and_bob(name: &str) -> Option<(CustomerId, Option<SubscriptionId>)> {
        match name {
            "alice" => Some((CustomerId::from_u128(1), None)),
            "bob" => Some((CustomerId::from_u128(2), None)),
            _ => None,
        }
    }

    #[test]
    fn bobs_record_with_alices_session_id_is_refused_and_alices_totals_stay() {
        let mut n = normaliser();
        let mut out = Vec::new();
        let alice = record(
            AcctStatusType::InterimUpdate,
            Some((1000, 0)),
            Some((5000, 0)),
        );
        n.normalise(&alice, &alice_and_bob, &mut out).unwrap();
        let before = n.clone();
        let mut bob = record(
            AcctStatusType::InterimUpdate,
            Some((9000, 0)),
            Some((90_000, 0)),
        );
        bob.user_name = "bob".into();
        bob.timestamp += chrono::Duration::minutes(5);
        let err = n.normalise(&bob, &alice_and_bob, &mut out).unwrap_err();
        assert_eq!(
            err,
            UsageError::RadiusSessionUserMismatch {
                session: "sess-1".into(),
                session_user: "alice".into(),
                user_name: "bob".into(),
            }
        );
        assert_eq!(out.len(), 2, "no event for Bob's record");
        assert!(out.iter().all(|e| e.customer == CustomerId::from_u128(1)));
        assert_eq!(usage(&n, "sess-1"), (1000, 5000));
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::to_value(&before).unwrap()
        );
    }

    #[test]
    fn without_a_unique_id_sessions_are_keyed_by_nas_session_id_and_user() {
        let mut n = normaliser();
        let mut out = Vec::new();
        let mut alice = record(AcctStatusType::InterimUpdate, Some((1000, 0)), None);
        alice.session_id.clear();
        alice.acct_session_id = Some("0000001A".into());
        alice.nas = Some("10.0.0.1".into());
        let mut bob = alice.clone();
        bob.user_name = "bob".into();
        bob.input_octets = Some(300);
        let mut other_nas = alice.clone();
        other_nas.nas = Some("10.0.0.2".into());
        other_nas.input_octets = Some(70);
        for r in [&alice, &bob, &other_nas] {
            n.normalise(r, &alice_and_bob, &mut out).unwrap();
        }
        assert_eq!(n.sessions(), 3);
        let customers: Vec<(u128, Decimal)> = out
            .iter()
            .map(|e| (e.customer.as_uuid().as_u128(), e.quantity))
            .collect();
        assert_eq!(
            customers,
            vec![
                (1, Decimal::from(1000)),
                (2, Decimal::from(300)),
                (1, Decimal::from(70))
            ]
        );
        let key = SessionKey::of(&bob).unwrap();
        assert_eq!(n.session(&key).unwrap().upload_bytes, 300);
        let mut nameless = alice.clone();
        nameless.acct_session_id = None;
        assert_eq!(
            n.normalise(&nameless, &alice_and_bob, &mut out),
            Err(UsageError::MalformedRadiusRecord {
                reason: "missing Acct-Unique-Session-Id"
            })
        );
    }

    const THREE_E9: u32 = 3_000_000_000;
    /// What reading 3e9 → 10 as a wrap would bill: 2^32 − 3e9 + 10 (1.29 GB).
    const WRAP_FROM_THREE_E9: u64 = (1 << 32) - 3_000_000_000 + 10;

    /// An upload-only interim without Gigawords.
    fn interim(seconds: i64, octets: u32, session_time: u32) -> RadiusRecord {
        upload_at(AcctStatusType::InterimUpdate, seconds, octets, session_time)
    }

    /// Feeds `records` (none may be refused) and returns the quantities they produced.
    fn feed(n: &mut RadiusNormaliser, records: &[RadiusRecord]) -> Vec<(u128, u64)> {
        let (events, rejected) = n.normalise_batch(records, &resolver);
        assert_eq!(rejected, vec![]);
        quantities(&events)
    }

    #[test]
    fn a_fall_with_session_time_going_backwards_is_a_reset_not_a_wrap() {
        let mut n = normaliser();
        // A minute later the NAS reports 10 bytes at session time 30: it restarted counting.
        let produced = feed(&mut n, &[interim(0, THREE_E9, 3600), interim(60, 10, 30)]);
        assert_eq!(produced, vec![(2, 3_000_000_000), (2, 10)]);
        assert_eq!(usage(&n, "sess-1"), (3_000_000_010, 0));
        // The next interim grows from the reset counter.
        assert_eq!(feed(&mut n, &[interim(120, 510, 90)]), vec![(2, 500)]);
    }

    #[test]
    fn a_fall_too_large_for_one_wrap_at_the_line_rate_is_a_reset() {
        let settings = RadiusSettings::new(
            Direction::InputIsUpload,
            MeterId::from_u128(1),
            MeterId::from_u128(2),
        )
        .with_max_line_rate_bps(1_000_000_000);
        // At 1 Gbit/s a wrap from 3e9 (1.29 GB) needs 10.4 s: in 5 s it cannot have happened.
        let mut n = RadiusNormaliser::with_settings(settings);
        let produced = feed(&mut n, &[interim(0, THREE_E9, 600), interim(5, 10, 605)]);
        assert_eq!(produced, vec![(2, 3_000_000_000), (2, 10)]);
        // In 60 s it can: the same fall is a wrap.
        let mut n = RadiusNormaliser::with_settings(settings);
        let produced = feed(&mut n, &[interim(0, THREE_E9, 600), interim(60, 10, 660)]);
        assert_eq!(produced, vec![(2, 3_000_000_000), (2, WRAP_FROM_THREE_E9)]);
        // The default rate (10 Gbit/s) still rules out a 1.29 GB wrap in one second.
        let produced = feed(
            &mut normaliser(),
            &[interim(0, THREE_E9, 600), interim(1, 10, 601)],
        );
        assert_eq!(produced, vec![(2, 3_000_000_000), (2, 10)]);
    }

    #[test]
    fn a_new_acct_session_id_under_the_same_unique_id_is_a_reset() {
        let mut n = normaliser();
        let mut out = Vec::new();
        let mut first = upload_at(AcctStatusType::InterimUpdate, 0, THREE_E9, 600);
        first.acct_session_id = Some("A1".into());
        let mut second = upload_at(AcctStatusType::InterimUpdate, 600, 10, 1200);
        second.acct_session_id = Some("A2".into());
        n.normalise(&first, &resolver, &mut out).unwrap();
        n.normalise(&second, &resolver, &mut out).unwrap();
        assert_eq!(quantities(&out), vec![(2, 3_000_000_000), (2, 10)]);
    }

    #[test]
    fn a_gigawords_counter_that_falls_later_is_a_reset_and_ids_stay_unique() {
        let mut n = normaliser();
        let mut out = Vec::new();
        let mut first = record(AcctStatusType::InterimUpdate, Some((100, 1)), None);
        let mut second = record(AcctStatusType::InterimUpdate, Some((40, 0)), None);
        second.timestamp += chrono::Duration::minutes(5);
        let mut third = record(AcctStatusType::InterimUpdate, Some((140, 0)), None);
        third.timestamp += chrono::Duration::minutes(10);
        first.session_time = Some(60);
        n.normalise(&first, &resolver, &mut out).unwrap();
        n.normalise(&second, &resolver, &mut out).unwrap();
        n.normalise(&third, &resolver, &mut out).unwrap();
        assert_eq!(
            quantities(&out),
            vec![(2, (1 << 32) + 100), (2, 40), (2, 100)]
        );
        let ids: std::collections::BTreeSet<_> = out.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn an_out_of_order_interim_is_stale_and_changes_nothing() {
        let mut n = normaliser();
        let mut out = Vec::new();
        let late = upload_at(AcctStatusType::InterimUpdate, 300, 5000, 300);
        let early = upload_at(AcctStatusType::InterimUpdate, 0, 1000, 0);
        n.normalise(&late, &resolver, &mut out).unwrap();
        // The older record arrives after the newer one: neither a wrap nor a reset.
        assert_eq!(n.normalise(&early, &resolver, &mut out).unwrap(), 0);
        n.normalise(
            &upload_at(AcctStatusType::Stop, 600, 6000, 600),
            &resolver,
            &mut out,
        )
        .unwrap();
        assert_eq!(quantities(&out), vec![(2, 5000), (2, 1000)]);
        assert_eq!(usage(&n, "sess-1"), (6000, 0));
    }

    #[test]
    fn a_stop_without_octets_keeps_the_totals() {
        let mut n = normaliser();
        let mut out = Vec::new();
        n.normalise(
            &upload_at(AcctStatusType::InterimUpdate, 0, 700, 60),
            &resolver,
            &mut out,
        )
        .unwrap();
        let mut stop = record(AcctStatusType::Stop, None, Some((20, 0)));
        stop.timestamp += chrono::Duration::minutes(2);
        stop.session_time = Some(120);
        n.normalise(&stop, &resolver, &mut out).unwrap();
        let s = n.session(&SessionKey::Unique("sess-1".into())).unwrap();
        assert_eq!(
            (s.upload_bytes, s.download_bytes, s.seconds, s.stopped),
            (700, 20, Some(120), true)
        );
    }

    #[test]
    fn a_restored_normaliser_emits_only_the_next_delta() {
        let records: Vec<RadiusRecord> = [(0, 1000u32, 0u32), (300, 5000, 300), (600, 9000, 600)]
            .iter()
            .map(|(at, octets, time)| upload_at(AcctStatusType::InterimUpdate, *at, *octets, *time))
            .collect();
        let mut running = normaliser();
        let (all, _) = running.normalise_batch(&records, &resolver);
        let mut before_restart = normaliser();
        let (first, _) = before_restart.normalise_batch(&records[..2], &resolver);
        let saved = serde_json::to_string(&before_restart).unwrap();
        drop(before_restart);
        let mut restarted: RadiusNormaliser = serde_json::from_str(&saved).unwrap();
        assert_eq!(restarted.settings(), running.settings());
        let mut next = Vec::new();
        restarted
            .normalise(&records[2], &resolver, &mut next)
            .unwrap();
        assert_eq!(quantities(&next), vec![(2, 4000)]);
        // The same events, with the same ids, as without the restart.
        assert_eq!([first, next].concat(), all);
        assert_eq!(usage(&restarted, "sess-1"), usage(&running, "sess-1"));
        // A replayed interim after the restart yields nothing.
        assert_eq!(
            restarted
                .normalise(&records[1], &resolver, &mut Vec::new())
                .unwrap(),
            0
        );
    }

    #[test]
    fn attributes_carry_the_session_id_nas_and_session_time() {
        let r = RadiusRecord::from_attributes(
            [
                ("Acct-Status-Type", "Interim-Update"),
                ("Acct-Session-Id", "\"0000001A\""),
                ("NAS-Identifier", "bras-1"),
                ("NAS-IP-Address", "10.0.0.1"),
                ("Acct-Session-Time", "1905"),
            ],
            Utc::now(),
        )
        .unwrap();
        assert_eq!(r.acct_session_id.as_deref(), Some("0000001A"));
        assert_eq!(r.nas.as_deref(), Some("10.0.0.1"));
        assert_eq!(r.session_time, Some(1905));
        let err = RadiusRecord::from_attributes(
            [("Acct-Status-Type", "Stop"), ("Acct-Session-Time", "x")],
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            UsageError::MalformedRadiusRecord {
                reason: "Acct-Session-Time is not a 32-bit number"
            }
        );
    }

    #[test]
    fn records_are_counted_by_outcome_once_per_batch_or_record() {
        use dotmac_core::metrics_recorder::Counting;
        let mut n = RadiusNormaliser::new(
            Direction::InputIsUpload,
            MeterId::from_u128(1),
            MeterId::from_u128(2),
        );
        let mut stranger = record(AcctStatusType::Start, None, None);
        stranger.user_name = "bob".into();
        stranger.session_id = "sess-2".into();
        let recorder = Counting::default();
        let (events, rejected) = metrics::with_local_recorder(&recorder, || {
            let batch = n.normalise_batch(
                &[
                    record(AcctStatusType::Start, None, None),
                    record(
                        AcctStatusType::InterimUpdate,
                        Some((10, 0)),
                        Some((1000, 0)),
                    ),
                    stranger,
                ],
                &resolver,
            );
            let mut out = Vec::new();
            let stop = record(AcctStatusType::Stop, Some((20, 0)), Some((1000, 0)));
            assert_eq!(n.normalise(&stop, &resolver, &mut out).unwrap(), 1);
            batch
        });
        assert_eq!((events.len(), rejected.len()), (2, 1));
        assert_eq!(
            recorder.moved(),
            [
                "dotmac_usage_radius_records_total{outcome=no_usage}=1",
                "dotmac_usage_radius_records_total{outcome=rejected}=1",
                "dotmac_usage_radius_records_total{outcome=usage}=2",
            ]
        );
    }
}
