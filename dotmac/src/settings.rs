//! A tenant's settings as the domains' own types: `dotmac-tenancy` keeps the settings whose
//! types belong to another crate (tax rates, the suspension-billing policy, the dunning policy,
//! the SLA calendar) as that crate's serde documents; this module decodes them
//! ([`TenantSettingsExt`]) and encodes them ([`SettingsLayerExt`]), and turns resolved settings
//! into the services' settings structs, which is how [`Dotmac`](crate::Dotmac) reads its
//! services' settings from a tenant ([`Dotmac::configured_for`](crate::Dotmac::configured_for),
//! [`DotmacBuilder::tenant_settings`](crate::DotmacBuilder::tenant_settings)).
//!
//! ```
//! use dotmac::billing::{SuspensionBilling, TaxRate, TaxRateId};
//! use dotmac::settings::{SettingsLayerExt, TenantSettingsExt};
//! use dotmac::tenancy::{resolve, SettingSource, Settings, SettingsLayer};
//!
//! let layer = SettingsLayer::new()
//!     .with_taxes(&[TaxRate::exclusive(TaxRateId::from_u128(1), "VAT 23 %", 23.into())])?
//!     .with_suspension_policy(SuspensionBilling::PauseBilling)?;
//! let resolved = resolve(&Settings::platform_defaults(), None, &layer, None);
//! assert_eq!(resolved.taxes()?.value[0].name, "VAT 23 %");
//! assert_eq!(resolved.suspension_policy()?.source, SettingSource::Tenant);
//! let billing = resolved.billing_settings(Default::default())?;
//! assert_eq!(billing.suspension_billing, SuspensionBilling::PauseBilling);
//! # Ok::<(), dotmac::Error>(())
//! ```

use dotmac_billing::usage_billing::UsageBillingSettings;
use dotmac_billing::{BillingSettings, SuspensionBilling, TaxRate};
use dotmac_collections::{CollectionsSettings, DunningPolicy};
use dotmac_support::BusinessCalendar;
use dotmac_tenancy::{Resolved, ResolvedSettings, SettingDocument, SettingKey, SettingsLayer};

use crate::Error;

/// Decodes a resolved document into `T`, keeping where it came from (`None` when unset).
fn decoded<T: serde::de::DeserializeOwned>(
    key: SettingKey,
    document: Resolved<&SettingDocument>,
) -> Result<Resolved<Option<T>>, Error> {
    Ok(Resolved {
        value: document.value.decode(key)?,
        source: document.source,
    })
}

/// The domain-typed accessors of a tenant's resolved settings.
pub trait TenantSettingsExt {
    /// The tax rates (none when unset).
    ///
    /// # Errors
    ///
    /// [`Error::Tenancy`] (`invalid_setting`) for a stored document that is not a list of
    /// `dotmac-billing` tax rates.
    fn taxes(&self) -> Result<Resolved<Vec<TaxRate>>, Error>;

    /// What is billed while a subscription is suspended (billing's default when unset).
    ///
    /// # Errors
    ///
    /// As [`TenantSettingsExt::taxes`].
    fn suspension_policy(&self) -> Result<Resolved<SuspensionBilling>, Error>;

    /// The dunning policy, `None` when unset.
    ///
    /// # Errors
    ///
    /// As [`TenantSettingsExt::taxes`] (a stored policy is validated as
    /// `DunningPolicy`'s own deserialisation does).
    fn dunning(&self) -> Result<Resolved<Option<DunningPolicy>>, Error>;

    /// The support desk's business calendar, `None` when unset.
    ///
    /// # Errors
    ///
    /// As [`TenantSettingsExt::taxes`].
    fn business_calendar(&self) -> Result<Resolved<Option<BusinessCalendar>>, Error>;

    /// `base` (for what tenancy does not set: the bill run's chunk size) with the tenant's
    /// rounding mode, payment terms, time zone, invoice and credit-note number formats, and,
    /// when set, its tax rates and suspension-billing policy.
    ///
    /// # Errors
    ///
    /// As [`TenantSettingsExt::taxes`].
    fn billing_settings(&self, base: BillingSettings) -> Result<BillingSettings, Error>;

    /// `base` with the tenant's time zone and, when set, its dunning policy; with no `base`,
    /// a policy without steps in the tenant's currency when the tenant sets none.
    ///
    /// # Errors
    ///
    /// As [`TenantSettingsExt::taxes`]; [`Error::Collections`] if the step-less policy
    /// cannot be built.
    fn collections_settings(
        &self,
        base: Option<CollectionsSettings>,
    ) -> Result<CollectionsSettings, Error>;

    /// `base` (meters, allowances) with the tenant's time zone.
    fn usage_settings(&self, base: UsageBillingSettings) -> UsageBillingSettings;
}

impl TenantSettingsExt for ResolvedSettings {
    fn taxes(&self) -> Result<Resolved<Vec<TaxRate>>, Error> {
        let found = decoded::<Vec<TaxRate>>(SettingKey::TaxRates, self.tax_rates())?;
        Ok(Resolved {
            value: found.value.unwrap_or_default(),
            source: found.source,
        })
    }

    fn suspension_policy(&self) -> Result<Resolved<SuspensionBilling>, Error> {
        let found =
            decoded::<SuspensionBilling>(SettingKey::SuspensionBilling, self.suspension_billing())?;
        Ok(Resolved {
            value: found.value.unwrap_or_default(),
            source: found.source,
        })
    }

    fn dunning(&self) -> Result<Resolved<Option<DunningPolicy>>, Error> {
        decoded(SettingKey::DunningPolicy, self.dunning_policy())
    }

    fn business_calendar(&self) -> Result<Resolved<Option<BusinessCalendar>>, Error> {
        decoded(SettingKey::SlaCalendar, self.sla_calendar())
    }

    fn billing_settings(&self, base: BillingSettings) -> Result<BillingSettings, Error> {
        let mut settings = base
            .with_rounding(self.rounding_mode().value)
            .with_payment_terms_days(self.payment_terms().value.days())
            .with_zone(self.time_zone().value)
            .with_number_format(self.invoice_number_format().value.clone())
            .with_credit_note_number_format(self.credit_note_number_format().value.clone());
        if !self.tax_rates().value.is_unset() {
            settings = settings.with_taxes(self.taxes()?.value);
        }
        if !self.suspension_billing().value.is_unset() {
            settings = settings.with_suspension_billing(self.suspension_policy()?.value);
        }
        Ok(settings)
    }

    fn collections_settings(
        &self,
        base: Option<CollectionsSettings>,
    ) -> Result<CollectionsSettings, Error> {
        let zone = self.time_zone().value;
        let settings = match (self.dunning()?.value, base) {
            (Some(policy), _) => CollectionsSettings::new(policy),
            (None, Some(base)) => base,
            (None, None) => {
                CollectionsSettings::new(DunningPolicy::builder(self.currency().value).build()?)
            }
        };
        Ok(settings.with_zone(zone))
    }

    fn usage_settings(&self, mut base: UsageBillingSettings) -> UsageBillingSettings {
        base.zone = self.time_zone().value;
        base
    }
}

/// Domain-typed setters of a tenant's (or a plan's) settings layer.
pub trait SettingsLayerExt: Sized {
    /// With `rates` as the tax rates.
    ///
    /// # Errors
    ///
    /// [`Error::Tenancy`] if they do not serialise.
    fn with_taxes(self, rates: &[TaxRate]) -> Result<Self, Error>;

    /// With `policy` as the suspension-billing policy.
    ///
    /// # Errors
    ///
    /// As [`SettingsLayerExt::with_taxes`].
    fn with_suspension_policy(self, policy: SuspensionBilling) -> Result<Self, Error>;

    /// With `policy` as the dunning policy.
    ///
    /// # Errors
    ///
    /// As [`SettingsLayerExt::with_taxes`].
    fn with_dunning(self, policy: &DunningPolicy) -> Result<Self, Error>;

    /// With `calendar` as the support desk's business calendar.
    ///
    /// # Errors
    ///
    /// As [`SettingsLayerExt::with_taxes`].
    fn with_business_calendar(self, calendar: &BusinessCalendar) -> Result<Self, Error>;
}

fn with<T: serde::Serialize>(
    layer: SettingsLayer,
    key: SettingKey,
    value: &T,
) -> Result<SettingsLayer, Error> {
    Ok(layer.with_document(key, SettingDocument::encode(key, value)?))
}

impl SettingsLayerExt for SettingsLayer {
    fn with_taxes(self, rates: &[TaxRate]) -> Result<Self, Error> {
        with(self, SettingKey::TaxRates, &rates)
    }

    fn with_suspension_policy(self, policy: SuspensionBilling) -> Result<Self, Error> {
        with(self, SettingKey::SuspensionBilling, &policy)
    }

    fn with_dunning(self, policy: &DunningPolicy) -> Result<Self, Error> {
        with(self, SettingKey::DunningPolicy, policy)
    }

    fn with_business_calendar(self, calendar: &BusinessCalendar) -> Result<Self, Error> {
        with(self, SettingKey::SlaCalendar, calendar)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use dotmac_core::{Currency, Money, RoundingMode};
    use dotmac_tenancy::{PaymentTerms, SettingSource, Settings, resolve};

    use super::*;

    #[test]
    fn resolved_settings_become_the_services_settings() {
        let policy = DunningPolicy::builder(Currency::EUR)
            .step(1, "overdue_notice")
            .late_fee(5, "late_fee", Money::from_minor(500, Currency::EUR))
            .build()
            .unwrap();
        let layer = SettingsLayer::new()
            .with_payment_terms(PaymentTerms::net(30).unwrap())
            .with_rounding_mode(RoundingMode::HalfEven)
            .with_time_zone(chrono_tz::Europe::Lisbon)
            .with_dunning(&policy)
            .unwrap();
        let resolved = resolve(&Settings::platform_defaults(), None, &layer, None);
        let billing = resolved
            .billing_settings(BillingSettings::default().with_chunk_size(250))
            .unwrap();
        assert_eq!(billing.payment_terms_days, 30);
        assert_eq!(billing.rounding, RoundingMode::HalfEven);
        assert_eq!(billing.zone, chrono_tz::Europe::Lisbon);
        assert_eq!(billing.chunk_size, 250);
        assert!(billing.taxes.is_empty());
        let collections = resolved.collections_settings(None).unwrap();
        assert_eq!(collections.policy, policy);
        assert_eq!(collections.zone, chrono_tz::Europe::Lisbon);
        assert_eq!(resolved.dunning().unwrap().source, SettingSource::Tenant);

        // Unset documents keep what the builder had, or the domain's default.
        let bare = resolve(
            &Settings::platform_defaults(),
            None,
            &SettingsLayer::new(),
            None,
        );
        assert_eq!(bare.dunning().unwrap().value, None);
        assert_eq!(
            bare.collections_settings(Some(CollectionsSettings::new(policy.clone())))
                .unwrap()
                .policy,
            policy
        );
        assert!(
            bare.collections_settings(None)
                .unwrap()
                .policy
                .steps()
                .is_empty()
        );
        assert_eq!(bare.business_calendar().unwrap().value, None);
    }

    #[test]
    fn a_document_of_the_wrong_shape_is_a_typed_error() {
        let layer = SettingsLayer::new().with_document(
            SettingKey::DunningPolicy,
            SettingDocument::from_json(serde_json::json!({"steps": "soon"})),
        );
        let resolved = resolve(&Settings::platform_defaults(), None, &layer, None);
        let err = resolved.dunning().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Tenancy(dotmac_tenancy::TenancyError::InvalidSetting {
                    setting: SettingKey::DunningPolicy,
                    ..
                })
            ),
            "{err}"
        );
    }
}
