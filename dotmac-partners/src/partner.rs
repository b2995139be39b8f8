//! Partner accounts: who they are (referral partner, reseller, master agent and its
//! sub-agents), the plan they earn on, and their lifecycle.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::PartnersError;
use crate::ids::{CommissionPlanId, PartnerId};
use crate::tiers::check_rate;

/// What kind of partner an account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PartnerKind {
    /// Refers customers and earns on what they pay (an affiliate, a landlord, a shop).
    Referral,
    /// Sells the operator's service under its own relationship with the customer.
    Reseller,
    /// Recruits sub-agents and earns an override on what their customers pay, besides what
    /// its own customers pay.
    MasterAgent,
}

/// Where a partner is in its lifecycle.
///
/// ```text
/// applied ──► active ◄──► suspended
///    │           │            │
///    └───────────┴────────────┴──► terminated
/// ```
///
/// Commission accrues while a partner is active or suspended (a suspension stops payouts, not
/// earnings); an applied partner earns nothing yet, a terminated one nothing more. Refunds
/// claw back whatever the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PartnerStatus {
    /// Applied to join the programme, not yet approved.
    Applied,
    /// In the programme: earns, may be attributed customers, is paid out.
    Active,
    /// Temporarily out (a dispute, a compliance review): earns, is not paid out, takes no new
    /// customers.
    Suspended,
    /// Out for good: earns nothing more; what it is still owed may be paid out.
    Terminated,
}

impl PartnerStatus {
    /// Whether the lifecycle allows a move from `self` to `to`.
    pub fn can_become(self, to: PartnerStatus) -> bool {
        use PartnerStatus::{Active, Applied, Suspended, Terminated};
        matches!(
            (self, to),
            (Applied, Active)
                | (Applied, Terminated)
                | (Active, Suspended)
                | (Suspended, Active)
                | (Active, Terminated)
                | (Suspended, Terminated)
        )
    }

    /// Whether payments from the partner's customers earn commission in this status.
    pub fn earns(self) -> bool {
        matches!(self, PartnerStatus::Active | PartnerStatus::Suspended)
    }

    /// Whether a payout run pays the partner in this status (a terminated partner is paid
    /// what it is still owed).
    pub fn is_paid_out(self) -> bool {
        matches!(self, PartnerStatus::Active | PartnerStatus::Terminated)
    }

    /// The status's name (`"applied"`, `"active"`, `"suspended"`, `"terminated"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerStatus::Applied => "applied",
            PartnerStatus::Active => "active",
            PartnerStatus::Suspended => "suspended",
            PartnerStatus::Terminated => "terminated",
        }
    }
}

impl std::fmt::Display for PartnerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lifecycle move, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    /// The status before.
    pub from: PartnerStatus,
    /// The status after.
    pub to: PartnerStatus,
    /// The day it took effect.
    pub on: NaiveDate,
}

/// A sub-agent's place under its master agent: the master's override, a share of every
/// commission the sub-agent earns, recorded in the master's own ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterOverride {
    master: PartnerId,
    override_percent: Decimal,
}

impl MasterOverride {
    /// `override_percent` (0–100) of each commission the sub-agent earns goes to `master`.
    ///
    /// # Errors
    ///
    /// [`PartnersError::InvalidRate`] for a share outside 0–100 %.
    pub fn new(master: PartnerId, override_percent: Decimal) -> Result<Self, PartnersError> {
        check_rate(override_percent)?;
        Ok(MasterOverride {
            master,
            override_percent,
        })
    }

    /// The master agent.
    pub fn master(&self) -> PartnerId {
        self.master
    }

    /// The master's share of each commission, in percent.
    pub fn override_percent(&self) -> Decimal {
        self.override_percent
    }
}

/// A partner's account: its kind, its plan, its master agent (for a sub-agent) and its
/// lifecycle, with every move kept.
///
/// ```
/// use chrono::NaiveDate;
/// use dotmac_partners::{CommissionPlanId, PartnerAccount, PartnerId, PartnerKind, PartnerStatus};
///
/// let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
/// let mut shop = PartnerAccount::apply(
///     PartnerId::from_u128(1), "Corner Shop", PartnerKind::Referral, CommissionPlanId::from_u128(1), day(1),
/// )?;
/// shop.change_status(PartnerStatus::Active, day(3))?;
/// shop.change_status(PartnerStatus::Suspended, day(20))?;
/// assert_eq!(shop.status_on(day(10)), PartnerStatus::Active);
/// assert_eq!(shop.status(), PartnerStatus::Suspended);
/// // Terminated is final.
/// shop.change_status(PartnerStatus::Terminated, day(25))?;
/// assert!(shop.change_status(PartnerStatus::Active, day(26)).is_err());
/// # Ok::<(), dotmac_partners::PartnersError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartnerAccount {
    id: PartnerId,
    name: String,
    kind: PartnerKind,
    plan: CommissionPlanId,
    master: Option<MasterOverride>,
    applied_on: NaiveDate,
    status: PartnerStatus,
    history: Vec<StatusChange>,
    version: u64,
}

impl PartnerAccount {
    /// A partner that applied on `applied_on`, earning on `plan` once approved.
    ///
    /// # Errors
    ///
    /// [`PartnersError::InvalidPartner`] for an empty name.
    pub fn apply(
        id: PartnerId,
        name: impl Into<String>,
        kind: PartnerKind,
        plan: CommissionPlanId,
        applied_on: NaiveDate,
    ) -> Result<Self, PartnersError> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(PartnersError::InvalidPartner {
                partner: id,
                reason: "the name is empty",
            });
        }
        Ok(PartnerAccount {
            id,
            name,
            kind,
            plan,
            master: None,
            applied_on,
            status: PartnerStatus::Applied,
            history: Vec::new(),
            version: 0,
        })
    }

    /// The same account as a sub-agent under `master` (checked against the master's account
    /// by the service: it must be an active master agent).
    ///
    /// # Errors
    ///
    /// [`PartnersError::NotAMasterAgent`] when this account is itself a master agent (one
    /// level of agents), [`PartnersError::InvalidPartner`] for a master that is the account
    /// itself.
    pub fn under(mut self, master: MasterOverride) -> Result<Self, PartnersError> {
        if self.kind == PartnerKind::MasterAgent {
            return Err(PartnersError::NotAMasterAgent(self.id));
        }
        if master.master == self.id {
            return Err(PartnersError::InvalidPartner {
                partner: self.id,
                reason: "a partner cannot be its own master agent",
            });
        }
        self.master = Some(master);
        Ok(self)
    }

    /// The id.
    pub fn id(&self) -> PartnerId {
        self.id
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind.
    pub fn kind(&self) -> PartnerKind {
        self.kind
    }

    /// The commission plan.
    pub fn plan(&self) -> CommissionPlanId {
        self.plan
    }

    /// The master agent and its override, for a sub-agent.
    pub fn master(&self) -> Option<MasterOverride> {
        self.master
    }

    /// The day the partner applied.
    pub fn applied_on(&self) -> NaiveDate {
        self.applied_on
    }

    /// The status now (after every recorded move).
    pub fn status(&self) -> PartnerStatus {
        self.status
    }

    /// Every lifecycle move, oldest first.
    pub fn history(&self) -> &[StatusChange] {
        &self.history
    }

    /// How many times the account was saved: the store's optimistic-concurrency check.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The next version, for a store saving the account (the first save writes version 1).
    pub(crate) fn bump_version(&mut self) {
        self.version = self.version.saturating_add(1);
    }

    /// The status in force on `on`: the last move dated on or before it (applied before the
    /// first).
    pub fn status_on(&self, on: NaiveDate) -> PartnerStatus {
        self.history
            .iter()
            .rev()
            .find(|change| change.on <= on)
            .map_or(PartnerStatus::Applied, |change| change.to)
    }

    /// Moves the partner to `to` from `on`.
    ///
    /// # Errors
    ///
    /// [`PartnersError::InvalidTransition`] for a move the lifecycle forbids (including one to
    /// the status the partner is in), [`PartnersError::OutOfOrder`] for a date before the
    /// latest move or the application. Nothing changes on error.
    pub fn change_status(&mut self, to: PartnerStatus, on: NaiveDate) -> Result<(), PartnersError> {
        if !self.status.can_become(to) {
            return Err(PartnersError::InvalidTransition {
                partner: self.id,
                from: self.status,
                to,
            });
        }
        let latest = self.history.last().map_or(self.applied_on, |c| c.on);
        if on < latest {
            return Err(PartnersError::OutOfOrder { on, latest });
        }
        self.history.push(StatusChange {
            from: self.status,
            to,
            on,
        });
        self.status = to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    fn account(kind: PartnerKind) -> PartnerAccount {
        PartnerAccount::apply(
            PartnerId::from_u128(1),
            "Shop",
            kind,
            CommissionPlanId::from_u128(1),
            day(1),
        )
        .unwrap()
    }

    #[test]
    fn the_lifecycle_allows_exactly_its_moves() {
        use PartnerStatus::*;
        let all = [Applied, Active, Suspended, Terminated];
        let allowed: Vec<(PartnerStatus, PartnerStatus)> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Applied, Active),
                (Applied, Terminated),
                (Active, Suspended),
                (Active, Terminated),
                (Suspended, Active),
                (Suspended, Terminated),
            ]
        );
    }

    #[test]
    fn a_forbidden_or_back_dated_move_is_refused_and_changes_nothing() {
        let mut p = account(PartnerKind::Reseller);
        let before = p.clone();
        assert_eq!(
            p.change_status(PartnerStatus::Suspended, day(2)),
            Err(PartnersError::InvalidTransition {
                partner: p.id(),
                from: PartnerStatus::Applied,
                to: PartnerStatus::Suspended
            })
        );
        assert_eq!(p, before);
        p.change_status(PartnerStatus::Active, day(5)).unwrap();
        let before = p.clone();
        assert_eq!(
            p.change_status(PartnerStatus::Suspended, day(4)),
            Err(PartnersError::OutOfOrder {
                on: day(4),
                latest: day(5)
            })
        );
        assert_eq!(p, before);
        assert_eq!(p.status_on(day(4)), PartnerStatus::Applied);
        assert_eq!(p.status_on(day(5)), PartnerStatus::Active);
    }

    #[test]
    fn sub_agents_sit_under_a_master_one_level_deep() {
        let master = MasterOverride::new(PartnerId::from_u128(9), dec!(20)).unwrap();
        let sub = account(PartnerKind::Referral).under(master).unwrap();
        assert_eq!(sub.master(), Some(master));
        assert_eq!(
            account(PartnerKind::MasterAgent).under(master),
            Err(PartnersError::NotAMasterAgent(PartnerId::from_u128(1)))
        );
        let own = MasterOverride::new(PartnerId::from_u128(1), dec!(20)).unwrap();
        assert!(matches!(
            account(PartnerKind::Reseller).under(own),
            Err(PartnersError::InvalidPartner { .. })
        ));
        assert_eq!(
            MasterOverride::new(PartnerId::from_u128(9), dec!(120)),
            Err(PartnersError::InvalidRate(dec!(120)))
        );
    }
}
