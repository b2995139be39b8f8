//! The harness against a real FreeRADIUS: it starts, answers from PostgreSQL, and a server
//! that cannot start is an error (never a skip).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dotmac_radius_harness::{
    FreeRadius, FreeRadiusSettings, HarnessError, PgTarget, prepare_database,
};

/// FreeRADIUS's database beside the test's own: `<DATABASE_URL's db>_radius`.
async fn radius_db() -> PgTarget {
    let url = std::env::var("DATABASE_URL")
        .expect("the FreeRADIUS tests need DATABASE_URL (a PostgreSQL server); they never skip");
    let admin = PgTarget::from_url(&url).unwrap();
    prepare_database(&url, &format!("{}_radius", admin.dbname))
        .await
        .unwrap()
}

#[tokio::test]
async fn freeradius_starts_and_answers_from_its_postgresql_tables() {
    let db = radius_db().await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url())
        .await
        .unwrap();
    let user = format!("harness-{}", std::process::id());
    sqlx::query("DELETE FROM radcheck WHERE username = $1")
        .bind(&user)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM radreply WHERE username = $1")
        .bind(&user)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO radcheck (username, attribute, op, value) VALUES ($1, 'Cleartext-Password', ':=', 's3cret')",
    )
    .bind(&user)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO radreply (username, attribute, op, value) VALUES ($1, 'Mikrotik-Rate-Limit', ':=', '10M/2M')",
    )
    .bind(&user)
    .execute(&mut conn)
    .await
    .unwrap();

    let server = FreeRadius::start(&FreeRadiusSettings::new(db)).unwrap_or_else(|e| panic!("{e}"));
    let accept = server.authenticate(&user, "s3cret").unwrap();
    assert_eq!(accept.code, "Access-Accept", "{}", server.log());
    assert_eq!(accept.attribute("Mikrotik-Rate-Limit"), Some("10M/2M"));
    let reject = server.authenticate(&user, "wrong").unwrap();
    assert_eq!(reject.code, "Access-Reject");
    let unknown = server.authenticate("nobody-at-all", "x").unwrap();
    assert_eq!(unknown.code, "Access-Reject");
    let (accepted, text) = server.radtest(&user, "s3cret").unwrap();
    assert!(accepted, "radtest: {text}");
    // The CoA listener answers (RFC 5176).
    let coa = server
        .send(
            "coa",
            server.coa_port(),
            &[
                ("User-Name", format!("\"{user}\"")),
                ("Mikrotik-Rate-Limit", "\"5M/1M\"".to_owned()),
            ],
        )
        .unwrap();
    assert_eq!(coa.code, "CoA-ACK");
}

#[tokio::test]
async fn a_server_that_cannot_reach_its_database_is_an_error_with_its_log() {
    let db = radius_db().await;
    let mut settings = FreeRadiusSettings::new(db.with_dbname("no_such_database_for_radius"));
    settings.ready_timeout = std::time::Duration::from_secs(20);
    let error = FreeRadius::start(&settings).unwrap_err();
    match error {
        HarnessError::NotReady { log, .. } => assert!(log.contains("rlm_sql"), "{log}"),
        other => panic!("expected NotReady, got {other}"),
    }
}
