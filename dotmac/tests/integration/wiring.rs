//! Every service of a `Dotmac` shares the one store and clock, and the facade's calls refuse
//! bad input with the domain's exact error, changing nothing.

use chrono::{NaiveDate, TimeZone, Utc};
use dotmac::billing::{BillingError, BillingSettings, Charge, NewSubscription, Plan, Product};
use dotmac::{
    Currency, CustomerAccount, CustomerId, Dotmac, Error, FixedClock, Money, PlanId, ProductId,
};

fn day(m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, m, d).unwrap()
}

fn plan(product: ProductId) -> Plan {
    Plan::builder(PlanId::new(), product, "Fibre 300")
        .charge(Charge::recurring_flat([Money::parse(
            "45.00",
            Currency::EUR,
        )
        .unwrap()]))
        .build(day(1, 1))
        .unwrap()
}

#[tokio::test]
async fn documents_made_now_carry_the_local_date_of_the_billing_zone() {
    // 23:30 UTC on March 31st is already April 1st in Auckland.
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 31, 23, 30, 0).unwrap());
    let dotmac = Dotmac::builder("sqlite::memory:")
        .clock(clock)
        .billing(BillingSettings::default().with_zone(chrono_tz::Pacific::Auckland))
        .connect()
        .await
        .unwrap();
    assert_eq!(dotmac.today(), day(4, 1));
    let tenant = dotmac.create_tenant("Kiwi Fibre").await.unwrap();
    let product = Product {
        id: ProductId::new(),
        name: "Fibre".into(),
    };
    let plan = plan(product.id);
    dotmac
        .publish_plan(tenant, product, plan.clone())
        .await
        .unwrap();
    let customer = CustomerId::new();
    dotmac
        .subscribe(
            tenant,
            CustomerAccount::new(customer, Currency::EUR),
            NewSubscription::new(customer, plan.id, Currency::EUR, day(4, 1)),
        )
        .await
        .unwrap();
    let run = dotmac
        .billing()
        .run_bill(tenant, dotmac.today())
        .await
        .unwrap();
    assert_eq!(run.invoices, 1);
    let invoices = dotmac.invoices_of(tenant, customer).await.unwrap();
    assert_eq!(invoices[0].issue_date, day(4, 1));
    assert_eq!(
        invoices[0].total,
        Money::parse("45.00", Currency::EUR).unwrap()
    );
}

#[tokio::test]
async fn a_plan_published_under_another_product_is_refused_and_nothing_is_stored() {
    let dotmac = Dotmac::connect("sqlite::memory:").await.unwrap();
    let tenant = dotmac.create_tenant("Acme").await.unwrap();
    let product = Product {
        id: ProductId::new(),
        name: "Fibre".into(),
    };
    let stray = plan(ProductId::new());
    let refused = dotmac.publish_plan(tenant, product, stray.clone()).await;
    assert!(matches!(
        refused,
        Err(Error::Billing(BillingError::UnknownProduct(p))) if p == stray.product
    ));
    use dotmac::billing::CatalogStore;
    assert!(dotmac.store().plans(tenant).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_subscription_in_another_currency_than_the_account_is_refused() {
    let dotmac = Dotmac::connect("sqlite::memory:").await.unwrap();
    let tenant = dotmac.create_tenant("Acme").await.unwrap();
    let product = Product {
        id: ProductId::new(),
        name: "Fibre".into(),
    };
    let plan = plan(product.id);
    dotmac
        .publish_plan(tenant, product, plan.clone())
        .await
        .unwrap();
    let customer = CustomerId::new();
    let refused = dotmac
        .subscribe(
            tenant,
            CustomerAccount::new(customer, Currency::USD),
            NewSubscription::new(customer, plan.id, Currency::EUR, day(4, 1)),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Billing(BillingError::CurrencyNotUsed { .. }))
        ),
        "{refused:?}"
    );
    use dotmac::billing::SubscriptionStore;
    assert!(
        dotmac
            .store()
            .subscriptions_page(tenant, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
