//! Pricing models: pure functions from a quantity to an exact, unrounded amount.
//!
//! Every model is validated when it is built (or deserialized), so pricing itself only fails on
//! a bad quantity or an arithmetic overflow. Amounts are bare `Decimal`s in the price's
//! currency; the caller wraps them in [`Money`](dotmac_core::Money) and rounds them once, on the
//! invoice line.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::BillingError;

const HUNDRED: Decimal = Decimal::ONE_HUNDRED;

/// One tier of a `graduated` or `volume` price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Inclusive upper bound of the tier; `None` for the last, unbounded tier.
    pub up_to: Option<Decimal>,
    /// Price of one unit in this tier.
    pub unit_amount: Decimal,
    /// Fixed amount added once when the tier holds part of the quantity.
    #[serde(default)]
    pub flat_amount: Decimal,
}

/// One tier of a `graduated_percentage` price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentTier {
    /// Inclusive upper bound of the tier; `None` for the last, unbounded tier.
    pub up_to: Option<Decimal>,
    /// Percentage of the tier's part of the amount (2.9 means 2.9 %).
    pub rate_percent: Decimal,
    /// Fixed amount added once when the tier holds part of the amount.
    #[serde(default)]
    pub flat_amount: Decimal,
}

/// One tier of a Kill Bill-style block price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockTier {
    /// Units per block (above zero).
    pub block_size: Decimal,
    /// Blocks the tier holds; `None` for no bound.
    pub max_blocks: Option<Decimal>,
    /// Price of one block, started blocks included.
    pub block_amount: Decimal,
}

/// Validated tiers with the cumulative price of every full tier below each one precomputed, so
/// that pricing a graduated quantity is one search and one multiplication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Tier>", into = "Vec<Tier>")]
pub struct Tiers {
    tiers: Vec<Tier>,
    /// `lower[k]`: the upper bound of tier `k - 1` (0 for the first tier).
    lower: Vec<Decimal>,
    /// `below[k]`: the graduated amount of tiers `0..k` when all are full, flat amounts included.
    below: Vec<Decimal>,
}

impl Tiers {
    /// Validates tiers: at least one, bounds strictly ascending and not negative, only the last
    /// one unbounded.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidPrice`] describing the first problem found.
    pub fn new(tiers: Vec<Tier>) -> Result<Self, BillingError> {
        let bounds: Vec<Option<Decimal>> = tiers.iter().map(|t| t.up_to).collect();
        check_bounds(&bounds)?;
        let mut lower = Vec::with_capacity(tiers.len());
        let mut below = Vec::with_capacity(tiers.len());
        let mut floor = Decimal::ZERO;
        let mut sum = Decimal::ZERO;
        for tier in &tiers {
            lower.push(floor);
            below.push(sum);
            if let Some(up_to) = tier.up_to {
                let full = up_to
                    .checked_sub(floor)
                    .and_then(|width| width.checked_mul(tier.unit_amount))
                    .and_then(|a| a.checked_add(tier.flat_amount))
                    .and_then(|a| a.checked_add(sum))
                    .ok_or(BillingError::InvalidPrice {
                        reason: "tier amounts overflow",
                    })?;
                sum = full;
                floor = up_to;
            }
        }
        Ok(Tiers {
            tiers,
            lower,
            below,
        })
    }

    /// The tiers, in order.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Index of the first tier whose bound holds `q` (the last tier when none does).
    fn index_of(&self, q: Decimal) -> usize {
        self.tiers
            .iter()
            .position(|t| t.up_to.is_none_or(|up| q <= up))
            .unwrap_or(self.tiers.len().saturating_sub(1))
    }

    fn graduated(&self, q: Decimal) -> Result<Decimal, BillingError> {
        let k = self.index_of(q);
        let (Some(tier), Some(lower), Some(below)) =
            (self.tiers.get(k), self.lower.get(k), self.below.get(k))
        else {
            return Ok(Decimal::ZERO);
        };
        let mut amount = q
            .checked_sub(*lower)
            .and_then(|above| above.checked_mul(tier.unit_amount))
            .ok_or_else(overflow)?;
        // Zero terms are common (no flat fee, first tier) and a Decimal add is not free.
        if !tier.flat_amount.is_zero() {
            amount = amount.checked_add(tier.flat_amount).ok_or_else(overflow)?;
        }
        if !below.is_zero() {
            amount = amount.checked_add(*below).ok_or_else(overflow)?;
        }
        Ok(amount)
    }

    fn volume(&self, q: Decimal) -> Result<Decimal, BillingError> {
        let Some(tier) = self.tiers.get(self.index_of(q)) else {
            return Ok(Decimal::ZERO);
        };
        q.checked_mul(tier.unit_amount)
            .and_then(|a| a.checked_add(tier.flat_amount))
            .ok_or_else(overflow)
    }
}

impl TryFrom<Vec<Tier>> for Tiers {
    type Error = BillingError;
    fn try_from(tiers: Vec<Tier>) -> Result<Self, Self::Error> {
        Tiers::new(tiers)
    }
}

impl From<Tiers> for Vec<Tier> {
    fn from(tiers: Tiers) -> Self {
        tiers.tiers
    }
}

/// Validated percentage tiers, priced through the graduated code path with each rate divided
/// by 100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<PercentTier>", into = "Vec<PercentTier>")]
pub struct PercentTiers {
    tiers: Vec<PercentTier>,
    compiled: Tiers,
}

impl PercentTiers {
    /// Validates tiers with the same rules as [`Tiers::new`].
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidPrice`] describing the first problem found.
    pub fn new(tiers: Vec<PercentTier>) -> Result<Self, BillingError> {
        let compiled = Tiers::new(
            tiers
                .iter()
                .map(|t| {
                    Ok(Tier {
                        up_to: t.up_to,
                        unit_amount: t.rate_percent.checked_div(HUNDRED).ok_or_else(overflow)?,
                        flat_amount: t.flat_amount,
                    })
                })
                .collect::<Result<_, BillingError>>()?,
        )?;
        Ok(PercentTiers { tiers, compiled })
    }

    /// The tiers, in order.
    pub fn tiers(&self) -> &[PercentTier] {
        &self.tiers
    }
}

impl TryFrom<Vec<PercentTier>> for PercentTiers {
    type Error = BillingError;
    fn try_from(tiers: Vec<PercentTier>) -> Result<Self, Self::Error> {
        PercentTiers::new(tiers)
    }
}

impl From<PercentTiers> for Vec<PercentTier> {
    fn from(tiers: PercentTiers) -> Self {
        tiers.tiers
    }
}

fn check_bounds(bounds: &[Option<Decimal>]) -> Result<(), BillingError> {
    if bounds.is_empty() {
        return Err(BillingError::InvalidPrice {
            reason: "a tiered price needs at least one tier",
        });
    }
    let mut previous = Decimal::ZERO;
    for (i, bound) in bounds.iter().enumerate() {
        match bound {
            Some(up) if *up < Decimal::ZERO => {
                return Err(BillingError::InvalidPrice {
                    reason: "tier bounds must not be negative",
                });
            }
            Some(up) if i > 0 && *up <= previous => {
                return Err(BillingError::InvalidPrice {
                    reason: "tier bounds must be strictly ascending",
                });
            }
            Some(up) => previous = *up,
            None if i < bounds.len().saturating_sub(1) => {
                return Err(BillingError::InvalidPrice {
                    reason: "only the last tier may be unbounded",
                });
            }
            None => {}
        }
    }
    Ok(())
}

/// `amount × percent / 100`, exact. Dividing by 100 is a shift of the decimal scale, far cheaper
/// than a `Decimal` division on the bill run's hot path.
pub(crate) fn percent_of(amount: Decimal, percent: Decimal) -> Result<Decimal, BillingError> {
    let mut product = amount.checked_mul(percent).ok_or_else(overflow)?;
    let scale = product.scale().saturating_add(2);
    if scale <= 28 && product.set_scale(scale).is_ok() {
        return Ok(product);
    }
    product.checked_div(HUNDRED).ok_or_else(overflow)
}

fn overflow() -> BillingError {
    BillingError::Core(dotmac_core::CoreError::Overflow {
        operation: "pricing",
    })
}

/// How a charge turns a quantity into an amount.
///
/// Serialized with a `model` tag in snake case, in the shared conformance format:
/// `{"model": "per_unit", "unit_amount": "0.0125"}`.
///
/// ```
/// use dotmac_billing::{PriceModel, Tier, Tiers};
/// use rust_decimal::Decimal;
///
/// let graduated = PriceModel::Graduated {
///     tiers: Tiers::new(vec![
///         Tier { up_to: Some(Decimal::from(5)), unit_amount: Decimal::from(7), flat_amount: Decimal::ZERO },
///         Tier { up_to: None, unit_amount: Decimal::new(65, 1), flat_amount: Decimal::ZERO },
///     ])?,
/// };
/// assert_eq!(graduated.amount(Decimal::from(6))?, Decimal::new(415, 1)); // 5 × 7 + 6.5
/// # Ok::<(), dotmac_billing::BillingError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", try_from = "RawPriceModel")]
#[non_exhaustive]
pub enum PriceModel {
    /// `q × unit_amount`.
    PerUnit {
        /// Price of one unit.
        unit_amount: Decimal,
    },
    /// `ceil(max(q − free_units, 0) / package_size) × package_amount`.
    Package {
        /// Units per package (above zero).
        package_size: Decimal,
        /// Price of one started package.
        package_amount: Decimal,
        /// Units given free before packages count.
        free_units: Decimal,
    },
    /// Each tier prices its own part of the quantity, plus its flat amount when it holds any;
    /// the first tier's flat amount applies even to a zero quantity.
    Graduated {
        /// The tiers.
        tiers: Tiers,
    },
    /// The tier that holds the whole quantity prices all of it.
    Volume {
        /// The tiers.
        tiers: Tiers,
    },
    /// A percentage of an amount of money (`q` is the amount).
    Percentage {
        /// 2.9 means 2.9 %.
        rate_percent: Decimal,
    },
    /// Like `graduated`, with each tier charging a percentage of its part of the amount.
    GraduatedPercentage {
        /// The tiers.
        tiers: PercentTiers,
    },
    /// Kill Bill `ALL_TIERS`: units fill the tiers in order, each tier bills its started blocks.
    BlockGraduated {
        /// The tiers.
        tiers: Vec<BlockTier>,
    },
    /// Kill Bill `TOP_TIER`: the first tier whose cumulative capacity holds the quantity (else
    /// the last) bills all of it in its blocks.
    BlockVolume {
        /// The tiers.
        tiers: Vec<BlockTier>,
    },
}

/// The serialized form, validated into a [`PriceModel`].
#[derive(Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
enum RawPriceModel {
    PerUnit {
        unit_amount: Decimal,
    },
    Package {
        package_size: Decimal,
        package_amount: Decimal,
        #[serde(default)]
        free_units: Decimal,
    },
    Graduated {
        tiers: Vec<Tier>,
    },
    Volume {
        tiers: Vec<Tier>,
    },
    Percentage {
        rate_percent: Decimal,
    },
    GraduatedPercentage {
        tiers: Vec<PercentTier>,
    },
    BlockGraduated {
        tiers: Vec<BlockTier>,
    },
    BlockVolume {
        tiers: Vec<BlockTier>,
    },
}

impl TryFrom<RawPriceModel> for PriceModel {
    type Error = BillingError;
    fn try_from(raw: RawPriceModel) -> Result<Self, Self::Error> {
        let model = match raw {
            RawPriceModel::PerUnit { unit_amount } => PriceModel::PerUnit { unit_amount },
            RawPriceModel::Package {
                package_size,
                package_amount,
                free_units,
            } => PriceModel::Package {
                package_size,
                package_amount,
                free_units,
            },
            RawPriceModel::Graduated { tiers } => PriceModel::Graduated {
                tiers: Tiers::new(tiers)?,
            },
            RawPriceModel::Volume { tiers } => PriceModel::Volume {
                tiers: Tiers::new(tiers)?,
            },
            RawPriceModel::Percentage { rate_percent } => PriceModel::Percentage { rate_percent },
            RawPriceModel::GraduatedPercentage { tiers } => PriceModel::GraduatedPercentage {
                tiers: PercentTiers::new(tiers)?,
            },
            RawPriceModel::BlockGraduated { tiers } => PriceModel::BlockGraduated { tiers },
            RawPriceModel::BlockVolume { tiers } => PriceModel::BlockVolume { tiers },
        };
        model.validate()?;
        Ok(model)
    }
}

impl PriceModel {
    /// A flat price: `amount` per unit, billed with quantity 1 for a flat recurring charge.
    pub fn flat(amount: Decimal) -> Self {
        PriceModel::PerUnit {
            unit_amount: amount,
        }
    }

    /// Checks the parts that construction cannot: positive package and block sizes, non-negative
    /// block bounds, at least one block tier.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidPrice`] describing the first problem found.
    pub fn validate(&self) -> Result<(), BillingError> {
        let invalid = |reason| Err(BillingError::InvalidPrice { reason });
        match self {
            PriceModel::Package {
                package_size,
                free_units,
                ..
            } => {
                if *package_size <= Decimal::ZERO {
                    return invalid("package_size must be above zero");
                }
                if *free_units < Decimal::ZERO {
                    return invalid("free_units must not be negative");
                }
            }
            PriceModel::BlockGraduated { tiers } | PriceModel::BlockVolume { tiers } => {
                if tiers.is_empty() {
                    return invalid("a block price needs at least one tier");
                }
                for (i, t) in tiers.iter().enumerate() {
                    if t.block_size <= Decimal::ZERO {
                        return invalid("block_size must be above zero");
                    }
                    match t.max_blocks {
                        Some(m) if m <= Decimal::ZERO => {
                            return invalid("max_blocks must be above zero");
                        }
                        None if i < tiers.len().saturating_sub(1) => {
                            return invalid("only the last block tier may be unbounded");
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// True when any amount or rate of the model is below zero, so that some quantity would
    /// price below zero. Plans refuse such models ([`BillingError::NegativePrice`]); a credit
    /// is a pending charge with a negative unit price, never a plan price.
    pub fn has_negative_amount(&self) -> bool {
        let negative = |d: &Decimal| d.is_sign_negative() && !d.is_zero();
        match self {
            PriceModel::PerUnit { unit_amount } => negative(unit_amount),
            PriceModel::Package { package_amount, .. } => negative(package_amount),
            PriceModel::Graduated { tiers } | PriceModel::Volume { tiers } => tiers
                .tiers()
                .iter()
                .any(|t| negative(&t.unit_amount) || negative(&t.flat_amount)),
            PriceModel::Percentage { rate_percent } => negative(rate_percent),
            PriceModel::GraduatedPercentage { tiers } => tiers
                .tiers()
                .iter()
                .any(|t| negative(&t.rate_percent) || negative(&t.flat_amount)),
            PriceModel::BlockGraduated { tiers } | PriceModel::BlockVolume { tiers } => {
                tiers.iter().any(|t| negative(&t.block_amount))
            }
        }
    }

    /// The exact amount for `quantity`, unrounded.
    ///
    /// # Errors
    ///
    /// [`BillingError::InvalidQuantity`] for a negative quantity; [`BillingError::Core`] with an
    /// overflow when the amount does not fit in a `Decimal`.
    pub fn amount(&self, quantity: Decimal) -> Result<Decimal, BillingError> {
        if quantity.is_sign_negative() && !quantity.is_zero() {
            return Err(BillingError::InvalidQuantity {
                quantity,
                reason: "quantities must not be negative",
            });
        }
        let q = quantity;
        match self {
            PriceModel::PerUnit { unit_amount } => q.checked_mul(*unit_amount).ok_or_else(overflow),
            PriceModel::Package {
                package_size,
                package_amount,
                free_units,
            } => {
                let billable = q
                    .checked_sub(*free_units)
                    .ok_or_else(overflow)?
                    .max(Decimal::ZERO);
                let packages = billable
                    .checked_div(*package_size)
                    .ok_or_else(overflow)?
                    .ceil();
                packages.checked_mul(*package_amount).ok_or_else(overflow)
            }
            PriceModel::Graduated { tiers } => tiers.graduated(q),
            PriceModel::GraduatedPercentage { tiers } => tiers.compiled.graduated(q),
            PriceModel::Volume { tiers } => tiers.volume(q),
            PriceModel::Percentage { rate_percent } => percent_of(q, *rate_percent),
            PriceModel::BlockGraduated { tiers } => block_graduated(tiers, q),
            PriceModel::BlockVolume { tiers } => block_volume(tiers, q),
        }
    }
}

fn blocks(units: Decimal, tier: &BlockTier) -> Result<Decimal, BillingError> {
    units
        .checked_div(tier.block_size)
        .ok_or_else(overflow)?
        .ceil()
        .checked_mul(tier.block_amount)
        .ok_or_else(overflow)
}

fn capacity(tier: &BlockTier) -> Option<Decimal> {
    tier.max_blocks.and_then(|m| m.checked_mul(tier.block_size))
}

fn block_graduated(tiers: &[BlockTier], q: Decimal) -> Result<Decimal, BillingError> {
    let mut left = q;
    let mut total = Decimal::ZERO;
    let last = tiers.len().saturating_sub(1);
    for (i, tier) in tiers.iter().enumerate() {
        if left <= Decimal::ZERO {
            break;
        }
        // Units beyond the last tier's capacity stay in the last tier rather than go unbilled.
        let here = match capacity(tier) {
            Some(cap) if i != last => left.min(cap),
            _ => left,
        };
        total = total
            .checked_add(blocks(here, tier)?)
            .ok_or_else(overflow)?;
        left = left.checked_sub(here).ok_or_else(overflow)?;
    }
    Ok(total)
}

fn block_volume(tiers: &[BlockTier], q: Decimal) -> Result<Decimal, BillingError> {
    let mut cumulative = Decimal::ZERO;
    for tier in tiers {
        match capacity(tier) {
            Some(cap) => {
                cumulative = cumulative.checked_add(cap).ok_or_else(overflow)?;
                if q <= cumulative {
                    return blocks(q, tier);
                }
            }
            None => return blocks(q, tier),
        }
    }
    match tiers.last() {
        Some(tier) => blocks(q, tier),
        None => Ok(Decimal::ZERO),
    }
}

/// Converts a floating-point quantity from a meter or an API into a `Decimal`.
///
/// # Errors
///
/// [`BillingError::InvalidQuantity`] for NaN, infinities and negative values.
pub fn quantity_from_f64(value: f64) -> Result<Decimal, BillingError> {
    if !value.is_finite() {
        return Err(BillingError::InvalidQuantity {
            quantity: Decimal::ZERO,
            reason: "quantity is not a finite number",
        });
    }
    let q = Decimal::try_from(value).map_err(|_| BillingError::InvalidQuantity {
        quantity: Decimal::ZERO,
        reason: "quantity does not fit in a decimal",
    })?;
    if q < Decimal::ZERO {
        return Err(BillingError::InvalidQuantity {
            quantity: q,
            reason: "quantities must not be negative",
        });
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn tier(up_to: Option<Decimal>, unit: Decimal, flat: Decimal) -> Tier {
        Tier {
            up_to,
            unit_amount: unit,
            flat_amount: flat,
        }
    }

    #[test]
    fn graduated_matches_a_tier_by_tier_sum() {
        let tiers = Tiers::new(vec![
            tier(Some(dec!(10)), dec!(10), dec!(2)),
            tier(Some(dec!(20)), dec!(5), dec!(3)),
            tier(None, dec!(5), dec!(3)),
        ])
        .unwrap();
        let model = PriceModel::Graduated { tiers };
        // 10 × 10 + 2, then 10 × 5 + 3, then 1 × 5 + 3
        assert_eq!(model.amount(dec!(21)).unwrap(), dec!(163));
        assert_eq!(model.amount(dec!(10.5)).unwrap(), dec!(107.5));
    }

    #[test]
    fn bad_tiers_and_quantities_are_refused() {
        assert_eq!(
            Tiers::new(vec![]),
            Err(BillingError::InvalidPrice {
                reason: "a tiered price needs at least one tier"
            })
        );
        assert_eq!(
            Tiers::new(vec![
                tier(Some(dec!(10)), dec!(1), dec!(0)),
                tier(Some(dec!(5)), dec!(1), dec!(0))
            ]),
            Err(BillingError::InvalidPrice {
                reason: "tier bounds must be strictly ascending"
            })
        );
        assert_eq!(
            Tiers::new(vec![
                tier(None, dec!(1), dec!(0)),
                tier(Some(dec!(5)), dec!(1), dec!(0))
            ]),
            Err(BillingError::InvalidPrice {
                reason: "only the last tier may be unbounded"
            })
        );
        assert_eq!(
            PriceModel::flat(dec!(1)).amount(dec!(-1)),
            Err(BillingError::InvalidQuantity {
                quantity: dec!(-1),
                reason: "quantities must not be negative"
            })
        );
        let json = r#"{"model":"package","package_size":"0","package_amount":"1"}"#;
        assert!(serde_json::from_str::<PriceModel>(json).is_err());
        assert!(quantity_from_f64(f64::NAN).is_err());
        assert!(quantity_from_f64(f64::INFINITY).is_err());
        assert!(quantity_from_f64(-1.5).is_err());
        assert_eq!(quantity_from_f64(2.5).unwrap(), dec!(2.5));
    }

    #[test]
    fn serde_round_trips() {
        let json = r#"{"model":"graduated","tiers":[{"up_to":"10","unit_amount":"1"},{"up_to":null,"unit_amount":"0.5","flat_amount":"2"}]}"#;
        let model: PriceModel = serde_json::from_str(json).unwrap();
        let back: PriceModel =
            serde_json::from_str(&serde_json::to_string(&model).unwrap()).unwrap();
        assert_eq!(model, back);
        assert_eq!(model.amount(dec!(12)).unwrap(), dec!(13));
    }

    #[test]
    fn huge_quantities_and_unvalidated_models_overflow_as_errors() {
        let overflow = Err(BillingError::Core(dotmac_core::CoreError::Overflow {
            operation: "pricing",
        }));
        // Built directly, without `validate`: negative free units used to panic in `q − free`.
        let package = PriceModel::Package {
            package_size: Decimal::MAX,
            package_amount: Decimal::MAX,
            free_units: Decimal::MIN,
        };
        assert_eq!(package.amount(Decimal::MAX), overflow);
        let graduated = PriceModel::Graduated {
            tiers: Tiers::new(vec![
                tier(Some(dec!(10)), dec!(1), dec!(0)),
                tier(None, Decimal::MAX, dec!(0)),
            ])
            .unwrap(),
        };
        assert_eq!(graduated.amount(Decimal::MAX), overflow);
        let blocks = PriceModel::BlockGraduated {
            tiers: vec![BlockTier {
                block_size: dec!(1),
                max_blocks: None,
                block_amount: Decimal::MAX,
            }],
        };
        assert_eq!(blocks.amount(dec!(2)), overflow);
    }
}
