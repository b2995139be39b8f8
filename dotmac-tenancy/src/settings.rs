//! Settings with fallback: platform defaults → the tenant's plan → the tenant → (where it makes
//! sense) the customer. [`resolve`] is the one resolution, a pure function; its result,
//! [`ResolvedSettings`], has one typed accessor per setting, and each value says which layer
//! it came from ([`Resolved::source`]): "why is this customer's payment term 30 days?" is
//! `resolved.payment_terms().source`.
//!
//! Settings whose types belong to another domain crate (tax rates and the suspension-billing
//! policy are `dotmac-billing`'s, the dunning policy `dotmac-collections`', the SLA calendar
//! `dotmac-support`'s) are kept here as that crate's own serde document
//! ([`SettingDocument`]): this crate depends on `dotmac-core` only, and a concept has one
//! home. The `dotmac` facade decodes them into the domain types (`dotmac::TenantSettingsExt`).

use std::fmt;

use chrono_tz::Tz;
use dotmac_core::{Currency, CustomerId, RoundingMode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::TenancyError;
use crate::vocab::{InvalidName, PlanCode, SettingKey, SettingSource};

/// A locale tag in BCP 47 form (`"en-US"`, `"pt-BR"`, `"sr-Latn-RS"`): a language of 2 or 3
/// letters, then subtags of 1 to 8 letters or digits, joined by `-`, 35 characters at most.
/// Only the form is checked; what a locale means for formatting is the embedder's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Locale(String);

impl Locale {
    /// A locale tag.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] when the tag is not of the form above.
    pub fn new(tag: &str) -> Result<Self, InvalidName> {
        let bad = |reason| InvalidName::new("locale", tag, reason);
        if tag.len() > 35 {
            return Err(bad("a locale tag has at most 35 characters"));
        }
        let mut parts = tag.split('-');
        let language = parts.next().unwrap_or_default();
        if !(2..=3).contains(&language.len()) || !language.chars().all(|c| c.is_ascii_alphabetic())
        {
            return Err(bad(
                "expected a language of 2 or 3 letters first, as in en-US",
            ));
        }
        if !parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(bad(
                "expected subtags of 1 to 8 letters or digits after the language, as in en-US",
            ));
        }
        Ok(Locale(tag.to_owned()))
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Locale {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Locale::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Payment terms: an invoice is due this many days after its issue date ("net 14").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PaymentTerms(u32);

impl PaymentTerms {
    /// The longest terms accepted: ten years of days.
    pub const MAX_DAYS: u32 = 3_650;

    /// Net `days` (0 = due on issue).
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidSetting`] beyond [`PaymentTerms::MAX_DAYS`].
    pub fn net(days: u32) -> Result<Self, TenancyError> {
        if days > Self::MAX_DAYS {
            return Err(TenancyError::InvalidSetting {
                setting: SettingKey::PaymentTerms,
                reason: format!("{days} days is more than the {} allowed", Self::MAX_DAYS),
            });
        }
        Ok(PaymentTerms(days))
    }

    /// The days from issue to due date.
    pub fn days(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PaymentTerms {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PaymentTerms::net(u32::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// How invoice numbers are written (prefix, padding, yearly reset): `dotmac-core`'s type,
/// which billing numbers its invoices with, so the setting and the numbers agree.
pub use dotmac_core::{InvoiceNumberFormat, NumberReset};

/// A setting whose type belongs to another domain crate, kept as that crate's serde document
/// (JSON): tax rates and the suspension-billing policy (`dotmac-billing`), the dunning policy
/// (`dotmac-collections`), the SLA calendar (`dotmac-support`). [`SettingDocument::UNSET`]
/// (JSON `null`) means "the domain's own default". The `dotmac` facade encodes and decodes
/// them with the domain types, so a stored document is always the domain's own form.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SettingDocument(serde_json::Value);

impl SettingDocument {
    /// No value: the owning domain's default applies.
    pub const UNSET: SettingDocument = SettingDocument(serde_json::Value::Null);

    /// The document of `value`, serialised with its own serde.
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidSetting`] when `value` does not serialise to JSON.
    pub fn encode<T: Serialize>(setting: SettingKey, value: &T) -> Result<Self, TenancyError> {
        serde_json::to_value(value)
            .map(SettingDocument)
            .map_err(|e| TenancyError::InvalidSetting {
                setting,
                reason: e.to_string(),
            })
    }

    /// A document from JSON.
    pub fn from_json(value: serde_json::Value) -> Self {
        SettingDocument(value)
    }

    /// The JSON.
    pub fn as_json(&self) -> &serde_json::Value {
        &self.0
    }

    /// True for [`SettingDocument::UNSET`].
    pub fn is_unset(&self) -> bool {
        self.0.is_null()
    }

    /// The value as a `T`, or `None` when unset.
    ///
    /// # Errors
    ///
    /// [`TenancyError::InvalidSetting`] naming `setting` when the document is not a `T`.
    pub fn decode<T: DeserializeOwned>(
        &self,
        setting: SettingKey,
    ) -> Result<Option<T>, TenancyError> {
        if self.is_unset() {
            return Ok(None);
        }
        T::deserialize(&self.0)
            .map(Some)
            .map_err(|e| TenancyError::InvalidSetting {
                setting,
                reason: e.to_string(),
            })
    }
}

/// A document field of a layer that is present is set, even to [`SettingDocument::UNSET`]
/// (`null`): a tenant may set a domain setting back to the domain's default over its plan's
/// value. (Serde's `Option` would read a present `null` as "not set".)
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SettingDocument>, D::Error> {
    SettingDocument::deserialize(deserializer).map(Some)
}

/// A complete set of settings: the platform's defaults, and what [`resolve`] produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Settings {
    /// The currency of customers' accounts, prices and documents.
    pub currency: Currency,
    /// The zone whose local dates are business dates (bill days, due dates).
    pub time_zone: Tz,
    /// The locale documents and messages are written in.
    pub locale: Locale,
    /// The one rounding mode of every document line.
    pub rounding_mode: RoundingMode,
    /// Days from issue to due date.
    pub payment_terms: PaymentTerms,
    /// How invoice numbers are written.
    pub invoice_number_format: InvoiceNumberFormat,
    /// How credit-note numbers are written (a sequence of their own, apart from invoices').
    /// Settings stored before the setting existed read it as the default format.
    #[serde(default)]
    pub credit_note_number_format: InvoiceNumberFormat,
    /// Tax rates applied to every line (`dotmac-billing`'s `Vec<TaxRate>`).
    pub tax_rates: SettingDocument,
    /// The dunning policy (`dotmac-collections`' `DunningPolicy`).
    pub dunning_policy: SettingDocument,
    /// What is billed while a subscription is suspended (`dotmac-billing`'s
    /// `SuspensionBilling`).
    pub suspension_billing: SettingDocument,
    /// The support desk's business calendar (`dotmac-support`'s `CalendarSpec`).
    pub sla_calendar: SettingDocument,
}

impl Settings {
    /// DotMac's platform defaults: USD, UTC, `en-US`, half-up rounding, net 14 days, invoice
    /// and credit-note numbers of six digits without a prefix that never reset (`000042`, as
    /// `dotmac-billing` writes them), and every domain document unset (each domain's own default: no taxes,
    /// keep billing while suspended, a dunning policy without steps, no SLA calendar).
    pub fn platform_defaults() -> Self {
        Settings {
            currency: Currency::USD,
            time_zone: Tz::UTC,
            locale: Locale("en-US".to_owned()),
            rounding_mode: RoundingMode::HalfUp,
            payment_terms: PaymentTerms(14),
            invoice_number_format: InvoiceNumberFormat::default(),
            credit_note_number_format: InvoiceNumberFormat::default(),
            tax_rates: SettingDocument::UNSET,
            dunning_policy: SettingDocument::UNSET,
            suspension_billing: SettingDocument::UNSET,
            sla_calendar: SettingDocument::UNSET,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::platform_defaults()
    }
}

/// One layer of settings (a plan's or a tenant's): each setting it leaves `None` falls back to
/// the layer below.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SettingsLayer {
    /// See [`Settings::currency`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// See [`Settings::time_zone`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<Tz>,
    /// See [`Settings::locale`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    /// See [`Settings::rounding_mode`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounding_mode: Option<RoundingMode>,
    /// See [`Settings::payment_terms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_terms: Option<PaymentTerms>,
    /// See [`Settings::invoice_number_format`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_number_format: Option<InvoiceNumberFormat>,
    /// See [`Settings::credit_note_number_format`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_note_number_format: Option<InvoiceNumberFormat>,
    /// See [`Settings::tax_rates`].
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub tax_rates: Option<SettingDocument>,
    /// See [`Settings::dunning_policy`].
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub dunning_policy: Option<SettingDocument>,
    /// See [`Settings::suspension_billing`].
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub suspension_billing: Option<SettingDocument>,
    /// See [`Settings::sla_calendar`].
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub sla_calendar: Option<SettingDocument>,
}

impl SettingsLayer {
    /// A layer that sets nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the currency.
    #[must_use]
    pub fn with_currency(mut self, currency: Currency) -> Self {
        self.currency = Some(currency);
        self
    }

    /// With the time zone.
    #[must_use]
    pub fn with_time_zone(mut self, zone: Tz) -> Self {
        self.time_zone = Some(zone);
        self
    }

    /// With the locale.
    #[must_use]
    pub fn with_locale(mut self, locale: Locale) -> Self {
        self.locale = Some(locale);
        self
    }

    /// With the rounding mode.
    #[must_use]
    pub fn with_rounding_mode(mut self, mode: RoundingMode) -> Self {
        self.rounding_mode = Some(mode);
        self
    }

    /// With the payment terms.
    #[must_use]
    pub fn with_payment_terms(mut self, terms: PaymentTerms) -> Self {
        self.payment_terms = Some(terms);
        self
    }

    /// With the invoice number format.
    #[must_use]
    pub fn with_invoice_number_format(mut self, format: InvoiceNumberFormat) -> Self {
        self.invoice_number_format = Some(format);
        self
    }

    /// With the credit-note number format.
    #[must_use]
    pub fn with_credit_note_number_format(mut self, format: InvoiceNumberFormat) -> Self {
        self.credit_note_number_format = Some(format);
        self
    }

    /// With a domain document for `setting` (one of tax rates, dunning policy, suspension
    /// billing or SLA calendar; any other key leaves the layer as it is).
    #[must_use]
    pub fn with_document(mut self, setting: SettingKey, document: SettingDocument) -> Self {
        match setting {
            SettingKey::TaxRates => self.tax_rates = Some(document),
            SettingKey::DunningPolicy => self.dunning_policy = Some(document),
            SettingKey::SuspensionBilling => self.suspension_billing = Some(document),
            SettingKey::SlaCalendar => self.sla_calendar = Some(document),
            _ => {}
        }
        self
    }

    /// The settings this layer sets.
    pub fn keys(&self) -> Vec<SettingKey> {
        let set = [
            self.currency.is_some(),
            self.time_zone.is_some(),
            self.locale.is_some(),
            self.rounding_mode.is_some(),
            self.payment_terms.is_some(),
            self.invoice_number_format.is_some(),
            self.credit_note_number_format.is_some(),
            self.tax_rates.is_some(),
            self.dunning_policy.is_some(),
            self.suspension_billing.is_some(),
            self.sla_calendar.is_some(),
        ];
        SettingKey::ALL
            .into_iter()
            .zip(set)
            .filter_map(|(key, set)| set.then_some(key))
            .collect()
    }
}

/// A customer's own settings: only those that make sense per customer (see
/// [`SettingKey::per_customer`]); rounding, numbering, the suspension-billing policy and the
/// SLA calendar are the tenant's alone, so this type has no field for them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CustomerSettings {
    /// See [`Settings::currency`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// See [`Settings::time_zone`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<Tz>,
    /// See [`Settings::locale`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    /// See [`Settings::payment_terms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_terms: Option<PaymentTerms>,
    /// See [`Settings::tax_rates`].
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub tax_rates: Option<SettingDocument>,
    /// See [`Settings::dunning_policy`].
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub dunning_policy: Option<SettingDocument>,
}

impl CustomerSettings {
    /// Settings that set nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the currency.
    #[must_use]
    pub fn with_currency(mut self, currency: Currency) -> Self {
        self.currency = Some(currency);
        self
    }

    /// With the time zone.
    #[must_use]
    pub fn with_time_zone(mut self, zone: Tz) -> Self {
        self.time_zone = Some(zone);
        self
    }

    /// With the locale.
    #[must_use]
    pub fn with_locale(mut self, locale: Locale) -> Self {
        self.locale = Some(locale);
        self
    }

    /// With the payment terms.
    #[must_use]
    pub fn with_payment_terms(mut self, terms: PaymentTerms) -> Self {
        self.payment_terms = Some(terms);
        self
    }

    /// With a domain document for `setting` (tax rates or dunning policy; any other key
    /// leaves the settings as they are).
    #[must_use]
    pub fn with_document(mut self, setting: SettingKey, document: SettingDocument) -> Self {
        match setting {
            SettingKey::TaxRates => self.tax_rates = Some(document),
            SettingKey::DunningPolicy => self.dunning_policy = Some(document),
            _ => {}
        }
        self
    }
}

/// A resolved value and the layer it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved<T> {
    /// The value.
    pub value: T,
    /// The most specific layer that sets it.
    pub source: SettingSource,
}

impl<T> Resolved<T> {
    fn as_ref(&self) -> Resolved<&T> {
        Resolved {
            value: &self.value,
            source: self.source.clone(),
        }
    }
}

/// Every setting resolved for a tenant (or one of its customers), with where each value came
/// from. Made by [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedSettings {
    currency: Resolved<Currency>,
    time_zone: Resolved<Tz>,
    locale: Resolved<Locale>,
    rounding_mode: Resolved<RoundingMode>,
    payment_terms: Resolved<PaymentTerms>,
    invoice_number_format: Resolved<InvoiceNumberFormat>,
    /// Resolved settings stored before the setting existed read it as the platform default.
    #[serde(default = "default_credit_note_number_format")]
    credit_note_number_format: Resolved<InvoiceNumberFormat>,
    tax_rates: Resolved<SettingDocument>,
    dunning_policy: Resolved<SettingDocument>,
    suspension_billing: Resolved<SettingDocument>,
    sla_calendar: Resolved<SettingDocument>,
}

impl ResolvedSettings {
    /// The currency.
    pub fn currency(&self) -> Resolved<Currency> {
        self.currency.clone()
    }

    /// The time zone.
    pub fn time_zone(&self) -> Resolved<Tz> {
        self.time_zone.clone()
    }

    /// The locale.
    pub fn locale(&self) -> Resolved<&Locale> {
        self.locale.as_ref()
    }

    /// The rounding mode.
    pub fn rounding_mode(&self) -> Resolved<RoundingMode> {
        self.rounding_mode.clone()
    }

    /// The payment terms.
    pub fn payment_terms(&self) -> Resolved<PaymentTerms> {
        self.payment_terms.clone()
    }

    /// The invoice number format.
    pub fn invoice_number_format(&self) -> Resolved<&InvoiceNumberFormat> {
        self.invoice_number_format.as_ref()
    }

    /// The credit-note number format.
    pub fn credit_note_number_format(&self) -> Resolved<&InvoiceNumberFormat> {
        self.credit_note_number_format.as_ref()
    }

    /// The tax rates (`dotmac-billing`'s document).
    pub fn tax_rates(&self) -> Resolved<&SettingDocument> {
        self.tax_rates.as_ref()
    }

    /// The dunning policy (`dotmac-collections`' document).
    pub fn dunning_policy(&self) -> Resolved<&SettingDocument> {
        self.dunning_policy.as_ref()
    }

    /// The suspension-billing policy (`dotmac-billing`'s document).
    pub fn suspension_billing(&self) -> Resolved<&SettingDocument> {
        self.suspension_billing.as_ref()
    }

    /// The SLA calendar (`dotmac-support`'s document).
    pub fn sla_calendar(&self) -> Resolved<&SettingDocument> {
        self.sla_calendar.as_ref()
    }

    /// Where `setting`'s value came from.
    pub fn source(&self, setting: SettingKey) -> &SettingSource {
        match setting {
            SettingKey::Currency => &self.currency.source,
            SettingKey::TimeZone => &self.time_zone.source,
            SettingKey::Locale => &self.locale.source,
            SettingKey::RoundingMode => &self.rounding_mode.source,
            SettingKey::PaymentTerms => &self.payment_terms.source,
            SettingKey::InvoiceNumberFormat => &self.invoice_number_format.source,
            SettingKey::CreditNoteNumberFormat => &self.credit_note_number_format.source,
            SettingKey::TaxRates => &self.tax_rates.source,
            SettingKey::DunningPolicy => &self.dunning_policy.source,
            SettingKey::SuspensionBilling => &self.suspension_billing.source,
            SettingKey::SlaCalendar => &self.sla_calendar.source,
        }
    }

    /// Every setting with the layer it came from, in [`SettingKey::ALL`] order.
    pub fn sources(&self) -> Vec<(SettingKey, SettingSource)> {
        SettingKey::ALL
            .into_iter()
            .map(|key| (key, self.source(key).clone()))
            .collect()
    }

    /// The values alone.
    pub fn values(&self) -> Settings {
        Settings {
            currency: self.currency.value,
            time_zone: self.time_zone.value,
            locale: self.locale.value.clone(),
            rounding_mode: self.rounding_mode.value,
            payment_terms: self.payment_terms.value,
            invoice_number_format: self.invoice_number_format.value.clone(),
            credit_note_number_format: self.credit_note_number_format.value.clone(),
            tax_rates: self.tax_rates.value.clone(),
            dunning_policy: self.dunning_policy.value.clone(),
            suspension_billing: self.suspension_billing.value.clone(),
            sla_calendar: self.sla_calendar.value.clone(),
        }
    }
}

/// The platform's credit-note number format, from the platform layer.
fn default_credit_note_number_format() -> Resolved<InvoiceNumberFormat> {
    Resolved {
        value: InvoiceNumberFormat::default(),
        source: SettingSource::Platform,
    }
}

/// The value of the most specific layer that sets it: customer, then tenant, then plan, then
/// the platform.
fn pick<T: Clone>(
    platform: &T,
    plan: Option<(&PlanCode, Option<&T>)>,
    tenant: Option<&T>,
    customer: Option<(CustomerId, Option<&T>)>,
) -> Resolved<T> {
    if let Some((id, Some(value))) = customer {
        return Resolved {
            value: value.clone(),
            source: SettingSource::Customer(id),
        };
    }
    if let Some(value) = tenant {
        return Resolved {
            value: value.clone(),
            source: SettingSource::Tenant,
        };
    }
    if let Some((code, Some(value))) = plan {
        return Resolved {
            value: value.clone(),
            source: SettingSource::Plan(code.clone()),
        };
    }
    Resolved {
        value: platform.clone(),
        source: SettingSource::Platform,
    }
}

/// Resolves every setting: for each, the value of the most specific layer that sets it —
/// the customer's (only for [per-customer](SettingKey::per_customer) settings), the
/// tenant's, its plan's — or else the platform's default. Pure: the one resolution every
/// store and service uses.
///
/// ```
/// use dotmac_core::{Currency, CustomerId};
/// use dotmac_tenancy::{
///     CustomerSettings, PaymentTerms, PlanCode, Settings, SettingSource, SettingsLayer, resolve,
/// };
///
/// let platform = Settings::platform_defaults();
/// let plan = SettingsLayer::new().with_payment_terms(PaymentTerms::net(30)?);
/// let tenant = SettingsLayer::new().with_currency(Currency::EUR);
/// let customer = CustomerId::from_u128(7);
/// let own = CustomerSettings::new().with_payment_terms(PaymentTerms::net(7)?);
///
/// let tenant_wide = resolve(&platform, Some((&PlanCode::STARTER, &plan)), &tenant, None);
/// assert_eq!(tenant_wide.payment_terms().value.days(), 30);
/// assert_eq!(tenant_wide.payment_terms().source, SettingSource::Plan(PlanCode::STARTER));
/// assert_eq!(tenant_wide.currency().source, SettingSource::Tenant);
/// assert_eq!(tenant_wide.rounding_mode().source, SettingSource::Platform);
///
/// let theirs = resolve(&platform, Some((&PlanCode::STARTER, &plan)), &tenant, Some((customer, &own)));
/// assert_eq!(theirs.payment_terms().value.days(), 7);
/// assert_eq!(theirs.payment_terms().source, SettingSource::Customer(customer));
/// # Ok::<(), dotmac_tenancy::TenancyError>(())
/// ```
pub fn resolve(
    platform: &Settings,
    plan: Option<(&PlanCode, &SettingsLayer)>,
    tenant: &SettingsLayer,
    customer: Option<(CustomerId, &CustomerSettings)>,
) -> ResolvedSettings {
    macro_rules! layered {
        ($field:ident, customer) => {
            pick(
                &platform.$field,
                plan.map(|(code, layer)| (code, layer.$field.as_ref())),
                tenant.$field.as_ref(),
                customer.map(|(id, own)| (id, own.$field.as_ref())),
            )
        };
        ($field:ident) => {
            pick(
                &platform.$field,
                plan.map(|(code, layer)| (code, layer.$field.as_ref())),
                tenant.$field.as_ref(),
                None,
            )
        };
    }
    ResolvedSettings {
        currency: layered!(currency, customer),
        time_zone: layered!(time_zone, customer),
        locale: layered!(locale, customer),
        rounding_mode: layered!(rounding_mode),
        payment_terms: layered!(payment_terms, customer),
        invoice_number_format: layered!(invoice_number_format),
        credit_note_number_format: layered!(credit_note_number_format),
        tax_rates: layered!(tax_rates, customer),
        dunning_policy: layered!(dunning_policy, customer),
        suspension_billing: layered!(suspension_billing),
        sla_calendar: layered!(sla_calendar),
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn locales_are_checked_for_form() {
        for good in ["en", "en-US", "pt-BR", "sr-Latn-RS", "es-419"] {
            assert!(Locale::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "e",
            "english",
            "en_US",
            "en-",
            "en-toolongsubtag",
            "1n-US",
        ] {
            assert!(Locale::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invoice_numbers_are_written_with_the_format() {
        let day = NaiveDate::from_ymd_opt(2027, 1, 3).unwrap();
        let plain = Settings::platform_defaults().invoice_number_format;
        assert_eq!(plain.format(42, day), "000042");
        assert_eq!(plain.series(day), "INV");
        let yearly = InvoiceNumberFormat::new("F/", 4, NumberReset::Yearly).unwrap();
        assert_eq!(yearly.format(7, day), "F/2027-0007");
        assert_eq!(yearly.series(day), "F-2027");
        // Wider numbers are written whole, never cut.
        assert_eq!(yearly.format(123_456, day), "F/2027-123456");
    }

    #[test]
    fn bad_formats_and_terms_are_refused_with_the_setting_named() {
        let err = InvoiceNumberFormat::new("INV ", 6, NumberReset::Never).unwrap_err();
        assert!(matches!(
            TenancyError::from(err),
            TenancyError::Core(dotmac_core::CoreError::InvalidNumberFormat { .. })
        ));
        assert!(InvoiceNumberFormat::new("INV-", 0, NumberReset::Never).is_err());
        assert!(InvoiceNumberFormat::new("INV-", 13, NumberReset::Never).is_err());
        let err = PaymentTerms::net(3_651).unwrap_err();
        assert_eq!(
            err,
            TenancyError::InvalidSetting {
                setting: SettingKey::PaymentTerms,
                reason: "3651 days is more than the 3650 allowed".into()
            }
        );
        // Serde checks the same.
        let json = r#"{"prefix":"INV-","padding":99,"reset":"never"}"#;
        assert!(serde_json::from_str::<InvoiceNumberFormat>(json).is_err());
        assert!(serde_json::from_str::<PaymentTerms>("5000").is_err());
    }

    #[test]
    fn settings_stored_before_the_credit_note_format_read_it_as_the_default() {
        // As stored before the field existed.
        fn stored_before<T: Serialize>(value: &T) -> serde_json::Value {
            let mut stored = serde_json::to_value(value).unwrap();
            stored
                .as_object_mut()
                .unwrap()
                .remove("credit_note_number_format");
            stored
        }
        let platform = Settings::platform_defaults();
        let read: Settings = serde_json::from_value(stored_before(&platform)).unwrap();
        assert_eq!(read, platform);
        let resolved = resolve(&platform, None, &SettingsLayer::new(), None);
        let read: ResolvedSettings = serde_json::from_value(stored_before(&resolved)).unwrap();
        assert_eq!(read, resolved);
        assert_eq!(
            read.source(SettingKey::CreditNoteNumberFormat),
            &SettingSource::Platform
        );
    }

    #[test]
    fn the_platform_alone_resolves_everything_from_the_platform() {
        let platform = Settings::platform_defaults();
        let resolved = resolve(&platform, None, &SettingsLayer::new(), None);
        assert_eq!(resolved.values(), platform);
        assert!(
            resolved
                .sources()
                .iter()
                .all(|(_, s)| *s == SettingSource::Platform)
        );
    }

    #[test]
    fn tenant_only_settings_ignore_the_customer() {
        let platform = Settings::platform_defaults();
        let tenant = SettingsLayer::new().with_rounding_mode(RoundingMode::HalfEven);
        let customer = CustomerId::from_u128(1);
        let own = CustomerSettings::new().with_currency(Currency::EUR);
        let resolved = resolve(&platform, None, &tenant, Some((customer, &own)));
        assert_eq!(resolved.rounding_mode().value, RoundingMode::HalfEven);
        assert_eq!(resolved.rounding_mode().source, SettingSource::Tenant);
        assert_eq!(
            resolved.currency().source,
            SettingSource::Customer(customer)
        );
    }

    #[test]
    fn documents_decode_into_their_types() {
        let doc = SettingDocument::encode(SettingKey::TaxRates, &vec![20, 5]).unwrap();
        assert_eq!(
            doc.decode::<Vec<u32>>(SettingKey::TaxRates).unwrap(),
            Some(vec![20, 5])
        );
        assert_eq!(
            SettingDocument::UNSET
                .decode::<Vec<u32>>(SettingKey::TaxRates)
                .unwrap(),
            None
        );
        let err = doc.decode::<String>(SettingKey::TaxRates).unwrap_err();
        assert_eq!(err.kind(), "invalid_setting");
    }

    #[test]
    fn a_document_set_back_to_the_domain_default_stays_set() {
        let layer =
            SettingsLayer::new().with_document(SettingKey::TaxRates, SettingDocument::UNSET);
        let json = serde_json::to_string(&layer).unwrap();
        assert_eq!(json, r#"{"tax_rates":null}"#);
        let back: SettingsLayer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, layer);
        let plan = SettingsLayer::new().with_document(
            SettingKey::TaxRates,
            SettingDocument::from_json(serde_json::json!([{"percent": "20"}])),
        );
        let resolved = resolve(
            &Settings::platform_defaults(),
            Some((&PlanCode::STARTER, &plan)),
            &back,
            None,
        );
        assert!(resolved.tax_rates().value.is_unset());
        assert_eq!(resolved.tax_rates().source, SettingSource::Tenant);
    }

    #[test]
    fn layers_round_trip_through_json_and_refuse_unknown_fields() {
        let layer = SettingsLayer::new()
            .with_currency(Currency::GBP)
            .with_time_zone(chrono_tz::Europe::London)
            .with_payment_terms(PaymentTerms::net(30).unwrap());
        let json = serde_json::to_string(&layer).unwrap();
        assert_eq!(
            json,
            r#"{"currency":"GBP","time_zone":"Europe/London","payment_terms":30}"#
        );
        assert_eq!(serde_json::from_str::<SettingsLayer>(&json).unwrap(), layer);
        assert!(serde_json::from_str::<SettingsLayer>(r#"{"colour":"red"}"#).is_err());
        assert_eq!(
            layer.keys(),
            vec![
                SettingKey::Currency,
                SettingKey::TimeZone,
                SettingKey::PaymentTerms
            ]
        );
    }
}
