//! Invariants of settings resolution and of the permission check, against reference models
//! written here independently of the crate's code.
// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use dotmac_core::{Currency, CustomerId, RoundingMode, TenantId};
use dotmac_tenancy::*;
use proptest::prelude::*;
use serde_json::Value;

use dotmac_testing::cases;

// ---- settings ---------------------------------------------------------------------------

fn currencies() -> impl Strategy<Value = Currency> {
    prop::sample::select(vec![
        Currency::USD,
        Currency::EUR,
        Currency::GBP,
        Currency::JPY,
    ])
}

fn zones() -> impl Strategy<Value = chrono_tz::Tz> {
    prop::sample::select(vec![
        chrono_tz::UTC,
        chrono_tz::Europe::Lisbon,
        chrono_tz::America::Sao_Paulo,
        chrono_tz::Asia::Kolkata,
    ])
}

fn locales() -> impl Strategy<Value = Locale> {
    prop::sample::select(vec!["en-US", "pt-BR", "de", "sr-Latn-RS"])
        .prop_map(|tag| Locale::new(tag).unwrap())
}

fn roundings() -> impl Strategy<Value = RoundingMode> {
    prop::sample::select(vec![
        RoundingMode::HalfUp,
        RoundingMode::HalfEven,
        RoundingMode::Up,
        RoundingMode::Down,
    ])
}

fn terms() -> impl Strategy<Value = PaymentTerms> {
    (0u32..=PaymentTerms::MAX_DAYS).prop_map(|days| PaymentTerms::net(days).unwrap())
}

fn formats() -> impl Strategy<Value = InvoiceNumberFormat> {
    (
        "[A-Z]{0,4}[-/]?",
        1u8..=InvoiceNumberFormat::MAX_PADDING,
        any::<bool>(),
    )
        .prop_map(|(prefix, padding, yearly)| {
            let reset = if yearly {
                NumberReset::Yearly
            } else {
                NumberReset::Never
            };
            InvoiceNumberFormat::new(&prefix, padding, reset).unwrap()
        })
}

/// Documents, the domain default (`null`) among them.
fn documents() -> impl Strategy<Value = SettingDocument> {
    prop_oneof![
        Just(SettingDocument::UNSET),
        (0u8..100).prop_map(|n| SettingDocument::from_json(
            serde_json::json!([{ "percent": n.to_string() }])
        )),
        "[a-z_]{1,12}".prop_map(|s| SettingDocument::from_json(Value::String(s))),
    ]
}

fn layers() -> impl Strategy<Value = SettingsLayer> {
    (
        (
            prop::option::of(currencies()),
            prop::option::of(zones()),
            prop::option::of(locales()),
            prop::option::of(roundings()),
            prop::option::of(terms()),
        ),
        (
            prop::option::of(formats()),
            prop::option::of(formats()),
            prop::option::of(documents()),
            prop::option::of(documents()),
            prop::option::of(documents()),
            prop::option::of(documents()),
        ),
    )
        .prop_map(|((c, z, l, r, t), (f, notes, tax, dun, sus, sla))| {
            let mut layer = SettingsLayer::new();
            layer.currency = c;
            layer.time_zone = z;
            layer.locale = l;
            layer.rounding_mode = r;
            layer.payment_terms = t;
            layer.invoice_number_format = f;
            layer.credit_note_number_format = notes;
            layer.tax_rates = tax;
            layer.dunning_policy = dun;
            layer.suspension_billing = sus;
            layer.sla_calendar = sla;
            layer
        })
}

fn customer_layers() -> impl Strategy<Value = CustomerSettings> {
    (
        prop::option::of(currencies()),
        prop::option::of(zones()),
        prop::option::of(locales()),
        prop::option::of(terms()),
        prop::option::of(documents()),
        prop::option::of(documents()),
    )
        .prop_map(|(c, z, l, t, tax, dun)| {
            let mut own = CustomerSettings::new();
            own.currency = c;
            own.time_zone = z;
            own.locale = l;
            own.payment_terms = t;
            own.tax_rates = tax;
            own.dunning_policy = dun;
            own
        })
}

fn platforms() -> impl Strategy<Value = Settings> {
    (
        currencies(),
        zones(),
        roundings(),
        terms(),
        formats(),
        formats(),
    )
        .prop_map(|(c, z, r, t, f, notes)| {
            let mut platform = Settings::platform_defaults();
            platform.currency = c;
            platform.time_zone = z;
            platform.rounding_mode = r;
            platform.payment_terms = t;
            platform.invoice_number_format = f;
            platform.credit_note_number_format = notes;
            platform
        })
}

/// A layer as the JSON object of the settings it sets (a field present is set, `null`
/// included).
fn as_map<T: serde::Serialize>(value: &T) -> BTreeMap<String, Value> {
    match serde_json::to_value(value).unwrap() {
        Value::Object(map) => map.into_iter().collect(),
        other => panic!("not an object: {other}"),
    }
}

/// The reference resolution: for each setting, the first layer that has it among the
/// customer (per-customer settings only), the tenant and the plan, else the platform.
fn reference(
    platform: &Settings,
    plan: Option<(&PlanCode, &SettingsLayer)>,
    tenant: &SettingsLayer,
    customer: Option<(CustomerId, &CustomerSettings)>,
) -> BTreeMap<SettingKey, (Value, SettingSource)> {
    let platform = as_map(platform);
    let tenant = as_map(tenant);
    let plan = plan.map(|(code, layer)| (code.clone(), as_map(layer)));
    let customer = customer.map(|(id, own)| (id, as_map(own)));
    SettingKey::ALL
        .into_iter()
        .map(|key| {
            let name = key.as_str();
            let found = customer
                .as_ref()
                .filter(|_| key.per_customer())
                .and_then(|(id, map)| {
                    map.get(name)
                        .map(|v| (v.clone(), SettingSource::Customer(*id)))
                })
                .or_else(|| tenant.get(name).map(|v| (v.clone(), SettingSource::Tenant)))
                .or_else(|| {
                    plan.as_ref().and_then(|(code, map)| {
                        map.get(name)
                            .map(|v| (v.clone(), SettingSource::Plan(code.clone())))
                    })
                })
                .unwrap_or_else(|| (platform[name].clone(), SettingSource::Platform));
            (key, found)
        })
        .collect()
}

fn resolved_map(resolved: &ResolvedSettings) -> BTreeMap<SettingKey, (Value, SettingSource)> {
    let json = as_map(resolved);
    SettingKey::ALL
        .into_iter()
        .map(|key| {
            let entry = &json[key.as_str()];
            (
                key,
                (
                    entry["value"].clone(),
                    serde_json::from_value(entry["source"].clone()).unwrap(),
                ),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn every_setting_comes_from_its_most_specific_layer(
        platform in platforms(),
        plan in prop::option::of(layers()),
        tenant in layers(),
        customer in prop::option::of(customer_layers()),
    ) {
        let code = PlanCode::new("tier").unwrap();
        let id = CustomerId::from_u128(42);
        let plan = plan.as_ref().map(|layer| (&code, layer));
        let customer = customer.as_ref().map(|own| (id, own));
        let resolved = resolve(&platform, plan, &tenant, customer);
        let expected = reference(&platform, plan, &tenant, customer);
        prop_assert_eq!(resolved_map(&resolved), expected.clone());
        // The typed accessors and `source` say the same.
        for (key, (_, source)) in &expected {
            prop_assert_eq!(resolved.source(*key), source);
        }
        prop_assert_eq!(resolved.payment_terms().source, expected[&SettingKey::PaymentTerms].1.clone());
        prop_assert_eq!(
            serde_json::to_value(resolved.currency().value).unwrap(),
            expected[&SettingKey::Currency].0.clone()
        );
        // A tenant-only setting never comes from the customer.
        for key in SettingKey::ALL.into_iter().filter(|k| !k.per_customer()) {
            prop_assert!(!matches!(resolved.source(key), SettingSource::Customer(_)));
        }
    }

    #[test]
    fn layers_survive_storage_and_resolve_the_same(
        platform in platforms(),
        plan in layers(),
        tenant in layers(),
        customer in customer_layers(),
    ) {
        let code = PlanCode::new("tier").unwrap();
        let id = CustomerId::from_u128(7);
        let stored = |layer: &SettingsLayer| -> SettingsLayer {
            serde_json::from_str(&serde_json::to_string(layer).unwrap()).unwrap()
        };
        let own: CustomerSettings =
            serde_json::from_str(&serde_json::to_string(&customer).unwrap()).unwrap();
        prop_assert_eq!(&stored(&tenant), &tenant);
        prop_assert_eq!(&own, &customer);
        let before = resolve(&platform, Some((&code, &plan)), &tenant, Some((id, &customer)));
        let after = resolve(&platform, Some((&code, &stored(&plan))), &stored(&tenant), Some((id, &own)));
        prop_assert_eq!(before, after);
    }

    #[test]
    fn setting_a_value_in_a_layer_changes_that_setting_alone(
        platform in platforms(),
        plan in layers(),
        tenant in layers(),
        days in 0u32..=PaymentTerms::MAX_DAYS,
    ) {
        let code = PlanCode::new("tier").unwrap();
        let before = resolve(&platform, Some((&code, &plan)), &tenant, None);
        let changed = tenant.clone().with_payment_terms(PaymentTerms::net(days).unwrap());
        let after = resolve(&platform, Some((&code, &plan)), &changed, None);
        prop_assert_eq!(after.payment_terms().value.days(), days);
        prop_assert_eq!(after.payment_terms().source, SettingSource::Tenant);
        let (mut a, mut b) = (resolved_map(&before), resolved_map(&after));
        a.remove(&SettingKey::PaymentTerms);
        b.remove(&SettingKey::PaymentTerms);
        prop_assert_eq!(a, b);
    }
}

// ---- permissions ------------------------------------------------------------------------

const CUSTOM: [&str; 3] = ["noc", "auditor", "sales"];

fn permission_set() -> impl Strategy<Value = BTreeSet<Permission>> {
    prop::collection::btree_set(prop::sample::select(Permission::ALL.to_vec()), 0..8)
}

/// Custom roles by name; "owner" and "read_only" appear too, as a hand-edited store could
/// hold them (built-in names cannot be redefined: the policy ignores them).
fn custom_roles() -> impl Strategy<Value = Vec<Role>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["noc", "auditor", "sales", "owner", "read_only"]),
        permission_set(),
        0..5,
    )
    .prop_map(|roles| {
        roles
            .into_iter()
            .map(|(name, permissions)| {
                serde_json::from_value(serde_json::json!({
                    "name": name,
                    "permissions": permissions,
                    "description": "",
                }))
                .unwrap()
            })
            .collect()
    })
}

fn role_names() -> impl Strategy<Value = BTreeSet<RoleName>> {
    let names: Vec<RoleName> = RoleName::BUILT_IN
        .into_iter()
        .chain(CUSTOM.iter().map(|n| RoleName::new(n).unwrap()))
        .chain([RoleName::new("ghost").unwrap()])
        .collect();
    prop::collection::btree_set(prop::sample::select(names), 0..4)
}

fn statuses() -> impl Strategy<Value = TenantStatus> {
    prop::sample::select(TenantStatus::ALL.to_vec())
}

fn user(tenant: TenantId, roles: &BTreeSet<RoleName>, active: bool) -> TenantUser {
    let mut new = NewUser::new("subject", "name");
    for role in roles {
        new = new.role(role.clone());
    }
    let mut user =
        TenantUser::new(UserId::from_u128(9), tenant, new, DateTime::UNIX_EPOCH).unwrap();
    if !active {
        user.set_status(UserStatus::Disabled);
    }
    user
}

/// The reference rule: the policy's tenant's active user, not writing to an archived tenant,
/// with a role that grants the permission (built-in roles by their table, custom roles by
/// their own permissions unless they carry a built-in name).
fn reference_allows(
    status: TenantStatus,
    custom: &[Role],
    same_tenant: bool,
    active: bool,
    roles: &BTreeSet<RoleName>,
    permission: Permission,
) -> bool {
    let grants = |role: &RoleName| match built_in_permissions(role) {
        Some(set) => set.contains(&permission),
        None => custom
            .iter()
            .any(|r| r.name() == role && r.permissions().contains(&permission)),
    };
    same_tenant
        && active
        && !(status == TenantStatus::Archived && permission.access() == Access::Write)
        && roles.iter().any(grants)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1024)))]

    #[test]
    fn authorize_allows_exactly_what_the_rule_allows(
        status in statuses(),
        custom in custom_roles(),
        same_tenant in any::<bool>(),
        active in any::<bool>(),
        roles in role_names(),
        permission in prop::sample::select(Permission::ALL.to_vec()),
    ) {
        let tenant = TenantId::from_u128(1);
        let policy = AccessPolicy::new(tenant, status, custom.clone());
        let owner = if same_tenant { tenant } else { TenantId::from_u128(2) };
        let user = user(owner, &roles, active);
        let decision = authorize(&policy, &user, permission);
        prop_assert_eq!(
            decision.is_allowed(),
            reference_allows(status, &custom, same_tenant, active, &roles, permission)
        );
        match &decision {
            // The role named is the user's and grants it.
            Decision::Allowed { role } => {
                prop_assert!(roles.contains(role));
                prop_assert!(policy.role(role).is_some_and(|r| r.grants(permission)));
            }
            Decision::Denied(denial) => {
                let err = decision.require(user.id(), permission).unwrap_err();
                prop_assert_eq!(err, TenancyError::Forbidden {
                    user: user.id(),
                    permission,
                    reason: denial.reason(),
                });
            }
        }
        // The permissions a policy lists for the user are those a role grants.
        prop_assert_eq!(
            policy.permissions_of(&user).contains(&permission),
            roles.iter().any(|r| policy.role(r).is_some_and(|r| r.grants(permission)))
        );
    }

    #[test]
    fn without_roles_everything_is_denied(
        status in statuses(),
        custom in custom_roles(),
        permission in prop::sample::select(Permission::ALL.to_vec()),
    ) {
        let tenant = TenantId::from_u128(1);
        let policy = AccessPolicy::new(tenant, status, custom);
        let decision = authorize(&policy, &user(tenant, &BTreeSet::new(), true), permission);
        prop_assert!(!decision.is_allowed());
        if status != TenantStatus::Archived || permission.access() == Access::Read {
            prop_assert_eq!(decision, Decision::Denied(Denial::NotGranted));
        }
    }

    #[test]
    fn another_role_never_takes_a_permission_away(
        status in statuses(),
        custom in custom_roles(),
        roles in role_names(),
        extra in role_names(),
        permission in prop::sample::select(Permission::ALL.to_vec()),
    ) {
        let tenant = TenantId::from_u128(1);
        let policy = AccessPolicy::new(tenant, status, custom);
        let fewer = authorize(&policy, &user(tenant, &roles, true), permission);
        let more: BTreeSet<RoleName> = roles.union(&extra).cloned().collect();
        let with_more = authorize(&policy, &user(tenant, &more, true), permission);
        prop_assert!(!fewer.is_allowed() || with_more.is_allowed());
        if status == TenantStatus::Archived && permission.access() == Access::Write {
            prop_assert_eq!(with_more, Decision::Denied(Denial::TenantArchived));
        }
    }
}
