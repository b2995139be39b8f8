//! Which partner a customer belongs to: touches (a referral link clicked, a lead passed on),
//! attribution by first or last touch within a window, and transfers, each dated. A customer
//! belongs to one partner at a time; the history is kept, never edited.

use chrono::{Days, NaiveDate};
use dotmac_core::CustomerId;
use serde::{Deserialize, Serialize};

use crate::error::PartnersError;
use crate::ids::PartnerId;

/// Which touch wins when a customer is attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttributionModel {
    /// The earliest touch inside the window.
    FirstTouch,
    /// The latest touch inside the window.
    LastTouch,
}

/// How a customer is attributed from its touches: a model and a look-back window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttributionRule {
    /// First or last touch.
    pub model: AttributionModel,
    /// Touches dated at most this many days before the attribution date count (the day
    /// itself included); older ones have expired.
    pub window_days: u32,
}

impl AttributionRule {
    /// First touch within `window_days`.
    pub fn first_touch(window_days: u32) -> Self {
        AttributionRule {
            model: AttributionModel::FirstTouch,
            window_days,
        }
    }

    /// Last touch within `window_days`.
    pub fn last_touch(window_days: u32) -> Self {
        AttributionRule {
            model: AttributionModel::LastTouch,
            window_days,
        }
    }
}

/// A partner's touch of a prospective customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    /// The partner.
    pub partner: PartnerId,
    /// The day.
    pub on: NaiveDate,
}

/// How an attribution came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum AttributionSource {
    /// The earliest touch in the window won.
    FirstTouch,
    /// The latest touch in the window won.
    LastTouch,
    /// Assigned directly (a reseller's own sale, an import).
    Direct,
    /// Moved from another partner.
    Transfer {
        /// The partner the customer came from.
        from: PartnerId,
    },
}

/// One partner's hold on a customer: from `from` (inclusive) until `until` (exclusive; open
/// while current).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// The partner.
    pub partner: PartnerId,
    /// The first day the customer is the partner's.
    pub from: NaiveDate,
    /// The first day it no longer is (a transfer or an end), if any.
    pub until: Option<NaiveDate>,
    /// How it came about.
    pub source: AttributionSource,
}

impl Attribution {
    /// Whether the attribution is in force on `on`.
    pub fn covers(&self, on: NaiveDate) -> bool {
        self.from <= on && self.until.is_none_or(|until| on < until)
    }
}

/// A customer's touches and attributions, in date order. One partner at a time: the
/// attributions never overlap.
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_core::CustomerId;
/// use dotmac_partners::{AttributionRule, CustomerAttribution, PartnerId};
///
/// let day = |d| NaiveDate::from_ymd_opt(2026, 4, d).unwrap();
/// let (shop, reseller) = (PartnerId::from_u128(1), PartnerId::from_u128(2));
/// let mut customer = CustomerAttribution::new(CustomerId::from_u128(7));
/// customer.record_touch(shop, day(1));
/// customer.record_touch(reseller, day(9));
/// // First touch within 30 days: the shop.
/// assert_eq!(customer.attribute(AttributionRule::first_touch(30), day(10))?.partner, shop);
/// // Moved to the reseller on the 20th: the shop keeps the 10th to the 19th.
/// customer.transfer(reseller, day(20))?;
/// assert_eq!(customer.partner_on(day(19)), Some(shop));
/// assert_eq!(customer.partner_on(day(20)), Some(reseller));
/// assert_eq!(customer.referred_on(), Some(day(10)));
/// # Ok::<(), dotmac_partners::PartnersError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerAttribution {
    customer: CustomerId,
    touches: Vec<Touch>,
    attributions: Vec<Attribution>,
    version: u64,
}

impl CustomerAttribution {
    /// A customer no partner has touched yet.
    pub fn new(customer: CustomerId) -> Self {
        CustomerAttribution {
            customer,
            touches: Vec::new(),
            attributions: Vec::new(),
            version: 0,
        }
    }

    /// The customer.
    pub fn customer(&self) -> CustomerId {
        self.customer
    }

    /// Every touch, in date order (ties in the order recorded).
    pub fn touches(&self) -> &[Touch] {
        &self.touches
    }

    /// Every attribution, oldest first.
    pub fn attributions(&self) -> &[Attribution] {
        &self.attributions
    }

    /// How many times the record was saved: the store's optimistic-concurrency check.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn bump_version(&mut self) {
        self.version = self.version.saturating_add(1);
    }

    /// The attribution in force now (the last one, while it has no end).
    pub fn current(&self) -> Option<&Attribution> {
        self.attributions.last().filter(|a| a.until.is_none())
    }

    /// The attribution in force on `on`.
    pub fn on(&self, on: NaiveDate) -> Option<&Attribution> {
        self.attributions.iter().find(|a| a.covers(on))
    }

    /// The partner the customer belongs to on `on`.
    pub fn partner_on(&self, on: NaiveDate) -> Option<PartnerId> {
        self.on(on).map(|a| a.partner)
    }

    /// The day the customer was first attributed to a partner: commission terms ("the first
    /// 12 months") count from here, so a transfer never extends them.
    pub fn referred_on(&self) -> Option<NaiveDate> {
        self.attributions.first().map(|a| a.from)
    }

    /// Whether `partner` ever held the customer.
    pub fn ever_with(&self, partner: PartnerId) -> bool {
        self.attributions.iter().any(|a| a.partner == partner)
    }

    /// Records a partner's touch (kept in date order).
    pub fn record_touch(&mut self, partner: PartnerId, on: NaiveDate) {
        let at = self.touches.partition_point(|t| t.on <= on);
        self.touches.insert(at, Touch { partner, on });
    }

    /// The touch `rule` picks for an attribution on `on`, without attributing.
    pub fn winning_touch(&self, rule: AttributionRule, on: NaiveDate) -> Option<Touch> {
        let oldest = on.checked_sub_days(Days::new(u64::from(rule.window_days)));
        let mut inside = self
            .touches
            .iter()
            .filter(|t| t.on <= on && oldest.is_none_or(|oldest| t.on >= oldest));
        match rule.model {
            AttributionModel::FirstTouch => inside.next().copied(),
            AttributionModel::LastTouch => inside.next_back().copied(),
        }
    }

    fn check_new(&self, on: NaiveDate) -> Result<(), PartnersError> {
        if let Some(current) = self.current() {
            return Err(PartnersError::AlreadyAttributed {
                customer: self.customer,
                partner: current.partner,
            });
        }
        if let Some(latest) = self
            .attributions
            .last()
            .and_then(|a| a.until)
            .filter(|until| on < *until)
        {
            return Err(PartnersError::OutOfOrder { on, latest });
        }
        Ok(())
    }

    /// Attributes the customer from `on` to the partner whose touch `rule` picks.
    ///
    /// # Errors
    ///
    /// [`PartnersError::AlreadyAttributed`] while another attribution is current (use
    /// [`CustomerAttribution::transfer`]), [`PartnersError::NoTouchInWindow`] when no touch
    /// is inside the window, [`PartnersError::OutOfOrder`] for a date before the end of the
    /// last attribution. Nothing changes on error.
    pub fn attribute(
        &mut self,
        rule: AttributionRule,
        on: NaiveDate,
    ) -> Result<Attribution, PartnersError> {
        self.check_new(on)?;
        let touch = self
            .winning_touch(rule, on)
            .ok_or(PartnersError::NoTouchInWindow {
                customer: self.customer,
                on,
                window_days: rule.window_days,
            })?;
        let source = match rule.model {
            AttributionModel::FirstTouch => AttributionSource::FirstTouch,
            AttributionModel::LastTouch => AttributionSource::LastTouch,
        };
        Ok(self.open(touch.partner, on, source))
    }

    /// Attributes the customer to `partner` from `on` directly (no touch needed).
    ///
    /// # Errors
    ///
    /// As [`CustomerAttribution::attribute`], without the window.
    pub fn assign(
        &mut self,
        partner: PartnerId,
        on: NaiveDate,
    ) -> Result<Attribution, PartnersError> {
        self.check_new(on)?;
        Ok(self.open(partner, on, AttributionSource::Direct))
    }

    fn open(
        &mut self,
        partner: PartnerId,
        on: NaiveDate,
        source: AttributionSource,
    ) -> Attribution {
        let attribution = Attribution {
            partner,
            from: on,
            until: None,
            source,
        };
        self.attributions.push(attribution);
        attribution
    }

    /// Moves the customer to `to` from `on`: the current attribution ends the day before.
    ///
    /// # Errors
    ///
    /// [`PartnersError::NotAttributed`] without a current attribution,
    /// [`PartnersError::SamePartner`] for a move to the current partner,
    /// [`PartnersError::OutOfOrder`] for a date not after the current attribution's start.
    /// Nothing changes on error.
    pub fn transfer(&mut self, to: PartnerId, on: NaiveDate) -> Result<Attribution, PartnersError> {
        let customer = self.customer;
        let current = self
            .attributions
            .last_mut()
            .filter(|a| a.until.is_none())
            .ok_or(PartnersError::NotAttributed(customer))?;
        if current.partner == to {
            return Err(PartnersError::SamePartner {
                customer,
                partner: to,
            });
        }
        if on <= current.from {
            return Err(PartnersError::OutOfOrder {
                on,
                latest: current.from,
            });
        }
        let from = current.partner;
        current.until = Some(on);
        Ok(self.open(to, on, AttributionSource::Transfer { from }))
    }

    /// Ends the current attribution from `on` (the customer left, or no longer counts for the
    /// partner): its payments from then on earn nobody anything.
    ///
    /// # Errors
    ///
    /// [`PartnersError::NotAttributed`] without a current attribution,
    /// [`PartnersError::OutOfOrder`] for a date not after its start.
    pub fn end(&mut self, on: NaiveDate) -> Result<(), PartnersError> {
        let customer = self.customer;
        let current = self
            .attributions
            .last_mut()
            .filter(|a| a.until.is_none())
            .ok_or(PartnersError::NotAttributed(customer))?;
        if on <= current.from {
            return Err(PartnersError::OutOfOrder {
                on,
                latest: current.from,
            });
        }
        current.until = Some(on);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 4, d).unwrap()
    }
    const A: PartnerId = PartnerId::from_u128(1);
    const B: PartnerId = PartnerId::from_u128(2);

    fn touched() -> CustomerAttribution {
        let mut c = CustomerAttribution::new(CustomerId::from_u128(7));
        c.record_touch(B, day(12));
        c.record_touch(A, day(2));
        c.record_touch(B, day(5));
        c
    }

    #[test]
    fn first_and_last_touch_pick_inside_the_window_only() {
        let c = touched();
        let touch = |rule, on| c.winning_touch(rule, on).map(|t| (t.partner, t.on));
        assert_eq!(
            touch(AttributionRule::first_touch(30), day(20)),
            Some((A, day(2)))
        );
        assert_eq!(
            touch(AttributionRule::last_touch(30), day(20)),
            Some((B, day(12)))
        );
        // A 15-day window on the 20th starts on the 5th: the 2nd has expired.
        assert_eq!(
            touch(AttributionRule::first_touch(15), day(20)),
            Some((B, day(5)))
        );
        // Touches after the attribution date do not count.
        assert_eq!(
            touch(AttributionRule::last_touch(30), day(10)),
            Some((B, day(5)))
        );
        assert_eq!(touch(AttributionRule::last_touch(0), day(3)), None);
    }

    #[test]
    fn one_partner_at_a_time_and_refusals_change_nothing() {
        let mut c = touched();
        c.attribute(AttributionRule::first_touch(30), day(10))
            .unwrap();
        let before = c.clone();
        assert_eq!(
            c.assign(B, day(11)),
            Err(PartnersError::AlreadyAttributed {
                customer: c.customer(),
                partner: A
            })
        );
        assert_eq!(
            c.transfer(A, day(11)),
            Err(PartnersError::SamePartner {
                customer: c.customer(),
                partner: A
            })
        );
        assert_eq!(
            c.transfer(B, day(10)),
            Err(PartnersError::OutOfOrder {
                on: day(10),
                latest: day(10)
            })
        );
        assert_eq!(c, before);
        let moved = c.transfer(B, day(15)).unwrap();
        assert_eq!(moved.source, AttributionSource::Transfer { from: A });
        assert_eq!(c.partner_on(day(14)), Some(A));
        assert_eq!(c.partner_on(day(15)), Some(B));
        assert_eq!(c.partner_on(day(9)), None);
        c.end(day(20)).unwrap();
        assert_eq!(c.current(), None);
        assert_eq!(c.partner_on(day(20)), None);
        // Attributed again after the end: not before it.
        assert_eq!(
            c.assign(A, day(19)),
            Err(PartnersError::OutOfOrder {
                on: day(19),
                latest: day(20)
            })
        );
        c.assign(A, day(25)).unwrap();
        assert_eq!(c.referred_on(), Some(day(10)));
        assert!(c.ever_with(B));
    }

    #[test]
    fn no_touch_in_the_window_is_an_error() {
        let mut c = CustomerAttribution::new(CustomerId::from_u128(7));
        assert_eq!(
            c.attribute(AttributionRule::last_touch(30), day(1)),
            Err(PartnersError::NoTouchInWindow {
                customer: CustomerId::from_u128(7),
                on: day(1),
                window_days: 30
            })
        );
        assert_eq!(
            c.transfer(A, day(2)),
            Err(PartnersError::NotAttributed(CustomerId::from_u128(7)))
        );
    }
}
