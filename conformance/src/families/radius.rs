//! `radius/`: RADIUS accounting records turned into usage.
//!
//! Each record becomes a `dotmac_usage::radius::RadiusRecord` keyed by its Acct-Unique-Session-Id
//! (the case's `session`) and goes through one `RadiusNormaliser`; a record's delta is the usage
//! the normaliser emitted for it, and the final totals come from `RadiusNormaliser::session`.

use std::collections::BTreeMap;

use crate::instant;
use dotmac_core::{CustomerId, SubscriptionId};
use dotmac_usage::MeterId;
use dotmac_usage::radius::{AcctStatusType, Direction, RadiusNormaliser, RadiusRecord, SessionKey};
use rust_decimal::Decimal;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    source: String,
    #[serde(default)]
    direction: CaseDirection,
    records: Vec<Record>,
    expected: Expected,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum CaseDirection {
    #[default]
    Rfc2866,
    Reversed,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RecordType {
    Start,
    Interim,
    Stop,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    session: String,
    #[serde(rename = "type")]
    kind: RecordType,
    at: String,
    input_octets: Option<u32>,
    output_octets: Option<u32>,
    input_gigawords: Option<u32>,
    output_gigawords: Option<u32>,
    session_time: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    sessions: BTreeMap<String, SessionTotals>,
    deltas: Option<Vec<Delta>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionTotals {
    upload_bytes: u64,
    download_bytes: u64,
    seconds: u64,
}

#[derive(Deserialize, PartialEq, Eq, Debug)]
#[serde(deny_unknown_fields)]
struct Delta {
    upload: u64,
    download: u64,
}

const DOWNLOAD: MeterId = MeterId::from_u128(1);
const UPLOAD: MeterId = MeterId::from_u128(2);
/// The cases name no users: every session belongs to one subscriber.
const SUBSCRIBER: &str = "subscriber";

fn resolver(_: &str) -> Option<(CustomerId, Option<SubscriptionId>)> {
    Some((CustomerId::from_u128(1), None))
}

fn bytes(quantity: Decimal) -> Result<u64, String> {
    u64::try_from(quantity).map_err(|e| format!("usage {quantity} is not a byte count: {e}"))
}

pub fn run(case: Case) -> Result<(), String> {
    let direction = match case.direction {
        CaseDirection::Rfc2866 => Direction::InputIsUpload,
        CaseDirection::Reversed => Direction::InputIsDownload,
    };
    let mut normaliser = RadiusNormaliser::new(direction, DOWNLOAD, UPLOAD);
    let mut deltas = Vec::with_capacity(case.records.len());
    for (index, r) in case.records.iter().enumerate() {
        let record = RadiusRecord {
            status: match r.kind {
                RecordType::Start => AcctStatusType::Start,
                RecordType::Interim => AcctStatusType::InterimUpdate,
                RecordType::Stop => AcctStatusType::Stop,
            },
            session_id: r.session.clone(),
            acct_session_id: None,
            nas: None,
            user_name: SUBSCRIBER.into(),
            timestamp: instant(&r.at)?,
            input_octets: r.input_octets,
            input_gigawords: r.input_gigawords,
            output_octets: r.output_octets,
            output_gigawords: r.output_gigawords,
            session_time: r.session_time,
        };
        let mut events = Vec::new();
        normaliser
            .normalise(&record, &resolver, &mut events)
            .map_err(|e| format!("record {index}: {e}"))?;
        let mut delta = Delta {
            upload: 0,
            download: 0,
        };
        for event in &events {
            let b = bytes(event.quantity)?;
            if event.meter == UPLOAD {
                delta.upload += b;
            } else {
                delta.download += b;
            }
        }
        deltas.push(delta);
    }
    if let Some(expected) = &case.expected.deltas
        && *expected != deltas
    {
        return Err(format!("deltas: expected {expected:?}, got {deltas:?}"));
    }
    for (session, want) in &case.expected.sessions {
        let got = normaliser
            .session(&SessionKey::Unique(session.clone()))
            .ok_or_else(|| format!("session {session:?} was not tracked"))?;
        let got_totals = (
            got.upload_bytes,
            got.download_bytes,
            got.seconds.map_or(0, u64::from),
        );
        let want_totals = (want.upload_bytes, want.download_bytes, want.seconds);
        if got_totals != want_totals {
            return Err(format!(
                "session {session:?}: expected (upload, download, seconds) {want_totals:?}, got {got_totals:?}"
            ));
        }
    }
    if normaliser.sessions() != case.expected.sessions.len() {
        return Err(format!(
            "{} sessions tracked, {} expected",
            normaliser.sessions(),
            case.expected.sessions.len()
        ));
    }
    Ok(())
}
