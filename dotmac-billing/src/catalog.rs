//! The catalogue: products, plans and their versioned, multi-currency prices.
//!
//! A plan's billing shape (interval, in advance or in arrears, trial) is fixed; its prices live
//! in immutable [`PlanVersion`]s. Changing a price adds a version; subscriptions keep the
//! version they were sold until they are migrated with a plan change, so a credit for unused
//! time is always computed at the price that was billed.

use chrono::NaiveDate;
use dotmac_core::{BillingInterval, Currency, MeterId, Money, PlanId, ProductId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;
use crate::pricing::PriceModel;

/// A product in a tenant's catalogue (for example "Fibre broadband").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// The product's id.
    pub id: ProductId,
    /// Its display name.
    pub name: String,
}

/// When a period is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BillingTiming {
    /// Prepaid: a period is billed on its first day.
    #[default]
    InAdvance,
    /// Postpaid: a period is billed on the first day of the next period.
    InArrears,
}

/// What a charge on a plan bills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum ChargeKind {
    /// A fixed amount per period: the price model is applied to a quantity of 1.
    RecurringFlat,
    /// Per seat (or per line, per IP address): the model is applied to the subscription's
    /// quantity.
    PerSeat,
    /// Metered usage of `meter`, rated by the usage module at the end of the period; the
    /// recurring bill run skips it. The meter is named by id, as allowances name it, so that a
    /// renamed meter code does not silently detach the charge.
    Usage {
        /// The meter.
        meter: MeterId,
    },
}

/// A price model in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyPrice {
    /// The currency the amounts are in.
    pub currency: Currency,
    /// How a quantity becomes an amount.
    pub model: PriceModel,
}

/// One charge on a plan, priced in one or more currencies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// What it bills.
    pub kind: ChargeKind,
    /// Its price in every currency the plan is sold in.
    pub prices: Vec<CurrencyPrice>,
}

impl Charge {
    /// A flat recurring charge with one price per currency.
    pub fn recurring_flat(amounts: impl IntoIterator<Item = Money>) -> Self {
        Charge {
            kind: ChargeKind::RecurringFlat,
            prices: amounts
                .into_iter()
                .map(|m| CurrencyPrice {
                    currency: m.currency(),
                    model: PriceModel::flat(m.amount()),
                })
                .collect(),
        }
    }

    /// A per-seat charge with one model per currency.
    pub fn per_seat(prices: Vec<CurrencyPrice>) -> Self {
        Charge {
            kind: ChargeKind::PerSeat,
            prices,
        }
    }

    /// A usage charge for `meter`, with one model per currency. The recurring bill run skips
    /// it; [`crate::usage_billing`] rates it per closed period.
    pub fn usage(meter: MeterId, prices: Vec<CurrencyPrice>) -> Self {
        Charge {
            kind: ChargeKind::Usage { meter },
            prices,
        }
    }

    /// The price model in `currency`, if the charge is sold in it.
    pub fn price_in(&self, currency: Currency) -> Option<&PriceModel> {
        self.prices
            .iter()
            .find(|p| p.currency == currency)
            .map(|p| &p.model)
    }

    /// True for the charges that the recurring bill run prices (not usage).
    pub fn is_recurring(&self) -> bool {
        matches!(self.kind, ChargeKind::RecurringFlat | ChargeKind::PerSeat)
    }
}

/// An immutable set of prices for a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanVersion {
    /// 1 for the first version, then 2, 3, …
    pub version: u32,
    /// The first day new subscriptions get this version.
    pub effective_from: NaiveDate,
    /// The charges, in the order their lines appear on invoices.
    pub charges: Vec<Charge>,
    /// One-time setup fees, at most one per currency, billed on the first document.
    pub setup_fees: Vec<Money>,
}

impl PlanVersion {
    /// The recurring amount for one whole period at `quantity`, in `currency`, exact.
    ///
    /// # Errors
    ///
    /// [`BillingError::CurrencyNotOffered`] when a recurring charge has no price in `currency`;
    /// pricing errors for a bad quantity.
    pub fn recurring_amount(
        &self,
        plan: PlanId,
        currency: Currency,
        quantity: Decimal,
    ) -> Result<Money, BillingError> {
        let mut total = Money::zero(currency);
        for charge in self.charges.iter().filter(|c| c.is_recurring()) {
            let amount = charge_amount(plan, charge, currency, quantity)?;
            total = total.checked_add(amount)?;
        }
        Ok(total)
    }

    /// The setup fee in `currency`, if there is one.
    pub fn setup_fee(&self, currency: Currency) -> Option<Money> {
        self.setup_fees
            .iter()
            .find(|m| m.currency() == currency)
            .copied()
    }

    /// True when every charge (and the setup fee, if any) is priced in `currency`.
    pub fn offers(&self, currency: Currency) -> bool {
        self.charges.iter().all(|c| c.price_in(currency).is_some())
            && (self.setup_fees.is_empty() || self.setup_fee(currency).is_some())
    }
}

/// The amount of one charge for one whole period.
pub(crate) fn charge_amount(
    plan: PlanId,
    charge: &Charge,
    currency: Currency,
    quantity: Decimal,
) -> Result<Money, BillingError> {
    let model = charge
        .price_in(currency)
        .ok_or_else(|| BillingError::CurrencyNotOffered {
            plan,
            currency: currency.code(),
        })?;
    let units = match charge.kind {
        ChargeKind::PerSeat => quantity,
        _ => Decimal::ONE,
    };
    Ok(Money::new(model.amount(units)?, currency))
}

/// A plan: how often and when it bills, and its price versions.
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_billing::{BillingTiming, Charge, Plan};
/// use dotmac_core::{BillingInterval, Currency, MeterId, Money, PlanId, ProductId};
/// use rust_decimal::Decimal;
///
/// let jan = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
/// let mut plan = Plan::builder(PlanId::new(), ProductId::new(), "Fibre 100")
///     .interval(BillingInterval::MONTHLY)
///     .timing(BillingTiming::InAdvance)
///     .charge(Charge::recurring_flat([Money::parse("29.99", Currency::USD)?]))
///     .build(jan)?;
/// assert_eq!(plan.current_version().version, 1);
///
/// // A price rise is a new version; version 1 stays as it was.
/// let v2 = plan.add_version(
///     NaiveDate::from_ymd_opt(2026, 6, 1).unwrap(),
///     vec![Charge::recurring_flat([Money::parse("32.99", Currency::USD)?])],
///     vec![],
/// )?;
/// assert_eq!(v2, 2);
/// let v1 = plan.version(1)?.recurring_amount(plan.id, Currency::USD, Decimal::ONE)?;
/// assert_eq!(v1.amount(), Decimal::new(2999, 2));
/// # Ok::<(), dotmac_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPlan")]
pub struct Plan {
    /// The plan's id.
    pub id: PlanId,
    /// The product it sells.
    pub product: ProductId,
    /// Its display name.
    pub name: String,
    /// How long one billing period is.
    pub interval: BillingInterval,
    /// Whether periods are billed in advance or in arrears.
    pub timing: BillingTiming,
    /// Free days at the start of a new subscription.
    pub trial_days: u32,
    versions: Vec<PlanVersion>,
}

impl Plan {
    /// Starts building a plan (monthly, in advance, no trial until told otherwise).
    pub fn builder(id: PlanId, product: ProductId, name: impl Into<String>) -> PlanBuilder {
        PlanBuilder {
            id,
            product,
            name: name.into(),
            interval: BillingInterval::MONTHLY,
            timing: BillingTiming::InAdvance,
            trial_days: 0,
            charges: Vec::new(),
            setup_fees: Vec::new(),
        }
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[PlanVersion] {
        &self.versions
    }

    /// The newest version (the one new subscriptions get).
    pub fn current_version(&self) -> &PlanVersion {
        // `build` guarantees at least one version and nothing removes versions.
        &self.versions[self.versions.len().saturating_sub(1)]
    }

    /// The version sold on `date`: the newest whose `effective_from` is on or before it, or the
    /// first version for dates before any.
    pub fn version_on(&self, date: NaiveDate) -> &PlanVersion {
        self.versions
            .iter()
            .rev()
            .find(|v| v.effective_from <= date)
            .unwrap_or(&self.versions[0])
    }

    /// Version number `version`.
    ///
    /// # Errors
    ///
    /// [`BillingError::UnknownPlanVersion`] when the plan has no such version.
    pub fn version(&self, version: u32) -> Result<&PlanVersion, BillingError> {
        version
            .checked_sub(1)
            .and_then(|i| self.versions.get(i as usize))
            .ok_or(BillingError::UnknownPlanVersion {
                plan: self.id,
                version,
            })
    }

    /// Adds a price version and returns its number.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidPlan`] when the version would take effect before the current
    /// one, and the errors of [`Plan::validate`] for invalid charges or setup fees.
    pub fn add_version(
        &mut self,
        effective_from: NaiveDate,
        charges: Vec<Charge>,
        setup_fees: Vec<Money>,
    ) -> Result<u32, BillingError> {
        if effective_from < self.current_version().effective_from {
            return Err(BillingError::InvalidPlan {
                plan: self.id,
                reason: "a new price version cannot take effect before the current one",
            });
        }
        let version = u32::try_from(self.versions.len().saturating_add(1)).map_err(|_| {
            BillingError::InvalidPlan {
                plan: self.id,
                reason: "too many versions",
            }
        })?;
        let v = PlanVersion {
            version,
            effective_from,
            charges,
            setup_fees,
        };
        validate_version(self.id, &v)?;
        self.versions.push(v);
        Ok(version)
    }

    /// Checks the plan's invariants (used by stores on insert; deserialized plans are not
    /// trusted: plan JSON is checked by this on deserialization).
    ///
    /// # Errors
    ///
    /// The first problem found: [`BillingError::InvalidPlan`], [`BillingError::InvalidPrice`],
    /// [`BillingError::PlanWithoutCharges`], [`BillingError::NegativePrice`],
    /// [`BillingError::DuplicateCurrencyPrice`], [`BillingError::SetupFeeCurrencyWithoutPrice`].
    pub fn validate(&self) -> Result<(), BillingError> {
        if self.versions.is_empty() {
            return Err(BillingError::InvalidPlan {
                plan: self.id,
                reason: "a plan needs at least one price version",
            });
        }
        for (i, v) in self.versions.iter().enumerate() {
            if v.version as usize != i.saturating_add(1) {
                return Err(BillingError::InvalidPlan {
                    plan: self.id,
                    reason: "versions must be numbered 1, 2, 3, … in order",
                });
            }
            validate_version(self.id, v)?;
        }
        Ok(())
    }
}

/// The serialized form of a plan, validated into a [`Plan`].
#[derive(Deserialize)]
struct RawPlan {
    id: PlanId,
    product: ProductId,
    name: String,
    interval: BillingInterval,
    timing: BillingTiming,
    trial_days: u32,
    versions: Vec<PlanVersion>,
}

impl TryFrom<RawPlan> for Plan {
    type Error = BillingError;
    fn try_from(raw: RawPlan) -> Result<Self, Self::Error> {
        let plan = Plan {
            id: raw.id,
            product: raw.product,
            name: raw.name,
            interval: raw.interval,
            timing: raw.timing,
            trial_days: raw.trial_days,
            versions: raw.versions,
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// Checks one price version: what [`Plan::validate`], [`PlanBuilder::build`],
/// [`Plan::add_version`] and deserialization all refuse.
fn validate_version(plan: PlanId, v: &PlanVersion) -> Result<(), BillingError> {
    if v.charges.is_empty() {
        return Err(BillingError::PlanWithoutCharges {
            plan,
            version: v.version,
        });
    }
    for (index, charge) in v.charges.iter().enumerate() {
        if charge.prices.is_empty() {
            return Err(BillingError::InvalidPlan {
                plan,
                reason: "every charge needs a price in at least one currency",
            });
        }
        for (i, p) in charge.prices.iter().enumerate() {
            p.model.validate()?;
            if p.model.has_negative_amount() {
                return Err(BillingError::NegativePrice {
                    plan,
                    charge: index,
                    currency: p.currency.code(),
                });
            }
            if charge
                .prices
                .iter()
                .take(i)
                .any(|q| q.currency == p.currency)
            {
                return Err(BillingError::DuplicateCurrencyPrice {
                    plan,
                    charge: index,
                    currency: p.currency.code(),
                });
            }
        }
    }
    for (i, fee) in v.setup_fees.iter().enumerate() {
        if fee.is_negative() {
            return Err(BillingError::InvalidPlan {
                plan,
                reason: "setup fees must not be negative",
            });
        }
        if v.setup_fees
            .iter()
            .take(i)
            .any(|f| f.currency() == fee.currency())
        {
            return Err(BillingError::InvalidPlan {
                plan,
                reason: "at most one setup fee per currency",
            });
        }
        if !v
            .charges
            .iter()
            .all(|c| c.price_in(fee.currency()).is_some())
        {
            return Err(BillingError::SetupFeeCurrencyWithoutPrice {
                plan,
                currency: fee.currency().code(),
            });
        }
    }
    Ok(())
}

/// Builds a [`Plan`] with its first price version.
#[derive(Debug, Clone)]
pub struct PlanBuilder {
    id: PlanId,
    product: ProductId,
    name: String,
    interval: BillingInterval,
    timing: BillingTiming,
    trial_days: u32,
    charges: Vec<Charge>,
    setup_fees: Vec<Money>,
}

impl PlanBuilder {
    /// The billing interval (default monthly).
    pub fn interval(mut self, interval: BillingInterval) -> Self {
        self.interval = interval;
        self
    }

    /// In advance (default) or in arrears.
    pub fn timing(mut self, timing: BillingTiming) -> Self {
        self.timing = timing;
        self
    }

    /// Free trial days (default 0).
    pub fn trial_days(mut self, days: u32) -> Self {
        self.trial_days = days;
        self
    }

    /// Adds a charge to the first version.
    pub fn charge(mut self, charge: Charge) -> Self {
        self.charges.push(charge);
        self
    }

    /// Adds a one-time setup fee (one per currency).
    pub fn setup_fee(mut self, fee: Money) -> Self {
        self.setup_fees.push(fee);
        self
    }

    /// The plan, with version 1 effective from `effective_from`.
    ///
    /// # Errors
    ///
    /// The errors of [`Plan::validate`] for invalid charges or setup fees.
    pub fn build(self, effective_from: NaiveDate) -> Result<Plan, BillingError> {
        let plan = Plan {
            id: self.id,
            product: self.product,
            name: self.name,
            interval: self.interval,
            timing: self.timing,
            trial_days: self.trial_days,
            versions: vec![PlanVersion {
                version: 1,
                effective_from,
                charges: self.charges,
                setup_fees: self.setup_fees,
            }],
        };
        plan.validate()?;
        Ok(plan)
    }
}
