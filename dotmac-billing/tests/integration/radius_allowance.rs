//! From RADIUS accounting to a rated data allowance: the ISP usage pipeline end to end.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use dotmac_billing::PriceModel;
use dotmac_billing::usage_billing::allowance::{AllowancePeriod, AllowancePolicy, Rollover, TopUp};
use dotmac_billing::usage_billing::rate;
use dotmac_core::{BillingInterval, Currency, CustomerId, Money, SubscriptionId};
use dotmac_usage::radius::{Direction, RadiusNormaliser, RadiusRecord};
use dotmac_usage::{Aggregation, Meter, MeterId, UsageAggregator, UsageCalendar};
use rust_decimal::Decimal;

const GIB: u64 = 1 << 30;

fn record(status: &str, minute: u32, down_bytes: u64, up_bytes: u64) -> RadiusRecord {
    let at: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 10, 12, minute, 0).unwrap();
    let (down_octets, down_giga) = (
        (down_bytes & 0xffff_ffff).to_string(),
        (down_bytes >> 32).to_string(),
    );
    let (up_octets, up_giga) = (
        (up_bytes & 0xffff_ffff).to_string(),
        (up_bytes >> 32).to_string(),
    );
    // This NAS swaps directions: Acct-Input is what the subscriber downloaded.
    RadiusRecord::from_attributes(
        [
            ("Acct-Status-Type", status),
            ("Acct-Unique-Session-Id", "5f1c-nas1"),
            ("User-Name", "alice@isp"),
            ("Acct-Input-Octets", down_octets.as_str()),
            ("Acct-Input-Gigawords", down_giga.as_str()),
            ("Acct-Output-Octets", up_octets.as_str()),
            ("Acct-Output-Gigawords", up_giga.as_str()),
        ],
        at,
    )
    .unwrap()
}

#[test]
fn radius_usage_fills_the_allowance_and_rates_the_overage() {
    let customer = CustomerId::from_u128(1);
    let (down, up) = (MeterId::from_u128(1), MeterId::from_u128(2));
    let resolver = |name: &str| {
        (name == "alice@isp").then_some((customer, Some(SubscriptionId::from_u128(3))))
    };
    let mut radius = RadiusNormaliser::new(Direction::InputIsDownload, down, up);
    let records = [
        record("Start", 0, 0, 0),
        record("Interim-Update", 10, 60 * GIB, GIB),
        record("Interim-Update", 10, 60 * GIB, GIB), // duplicate
        record("Interim-Update", 20, 100 * GIB, 2 * GIB),
        record("Stop", 30, 125 * GIB, 3 * GIB),
    ];
    let (events, rejected) = radius.normalise_batch(&records, &resolver);
    assert!(rejected.is_empty());

    let calendar = UsageCalendar {
        interval: BillingInterval::MONTHLY,
        anchor: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        zone: chrono_tz::UTC,
    };
    let meters = vec![
        Meter {
            id: down,
            code: "download_bytes".into(),
            aggregation: Aggregation::Sum,
        },
        Meter {
            id: up,
            code: "upload_bytes".into(),
            aggregation: Aggregation::Sum,
        },
    ];
    let mut usage = UsageAggregator::new(calendar, meters);
    usage.register_customer(customer);
    let now = Utc.with_ymd_and_hms(2026, 3, 10, 13, 0, 0).unwrap();
    let report = usage.ingest_batch(&events, now);
    assert_eq!(report.counted, events.len());
    // Replaying the same records through a fresh normaliser yields the same event ids.
    let (again, _) = RadiusNormaliser::new(Direction::InputIsDownload, down, up)
        .normalise_batch(&records, &resolver);
    assert_eq!(usage.ingest_batch(&again, now).duplicates, again.len());

    let march = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let downloaded = usage.aggregate(customer, down, march).unwrap();
    assert_eq!(downloaded, Decimal::from(125 * GIB));
    assert_eq!(
        usage.aggregate(customer, up, march).unwrap(),
        Decimal::from(3 * GIB)
    );

    // 100 GiB included, a 20 GiB top-up, 2.00 per GiB above that, notices at 80 % and 100 %.
    let per_gib = PriceModel::PerUnit {
        unit_amount: Decimal::from(2),
    };
    let policy = AllowancePolicy::new(
        down,
        Decimal::from(100),
        Currency::USD,
        Some(per_gib.clone()),
        &[80, 100],
    )
    .unwrap();
    let mut period = AllowancePeriod::open(&policy, customer, march, Decimal::ZERO);
    let used_gib = downloaded / Decimal::from(GIB);
    let crossed = period.check_thresholds(&policy, Decimal::from(85)).unwrap();
    assert_eq!(crossed.iter().map(|t| t.percent).collect::<Vec<_>>(), [80]);
    period
        .add_top_up(TopUp {
            quantity: Decimal::from(20),
            rollover: Rollover::NextPeriod,
        })
        .unwrap();
    let crossed = period.check_thresholds(&policy, used_gib).unwrap();
    assert_eq!(crossed.iter().map(|t| t.percent).collect::<Vec<_>>(), [100]);
    assert_eq!(period.overage(used_gib).unwrap(), Decimal::from(5));
    assert_eq!(
        period.overage_charge(&policy, used_gib).unwrap(),
        Money::from_minor(1000, Currency::USD)
    );
    assert_eq!(
        rate(&per_gib, Decimal::from(5), Currency::USD).unwrap(),
        Money::from_minor(1000, Currency::USD)
    );
    assert_eq!(period.rollover_out(used_gib).unwrap(), Decimal::ZERO);
}

#[test]
fn a_malformed_record_is_rejected_with_the_rest_processed() {
    let customer = CustomerId::from_u128(1);
    let resolver = |_: &str| Some((customer, None));
    let mut radius = RadiusNormaliser::new(
        Direction::InputIsUpload,
        MeterId::from_u128(1),
        MeterId::from_u128(2),
    );
    let mut no_session = record("Interim-Update", 5, GIB, GIB);
    no_session.session_id.clear();
    let good = record("Interim-Update", 10, GIB, GIB);
    let (events, rejected) = radius.normalise_batch(&[no_session, good], &resolver);
    assert_eq!(events.len(), 2);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].index, 0);
    assert_eq!(
        rejected[0].error,
        dotmac_usage::UsageError::MalformedRadiusRecord {
            reason: "missing Acct-Unique-Session-Id"
        }
    );
}
