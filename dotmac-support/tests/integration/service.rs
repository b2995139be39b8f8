//! Behaviour of the support service over the in-memory store.
// Helpers outside #[test] functions unwrap too: a failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, TimeZone, Utc};
use dotmac_core::{ManualClock, TenantId};
use dotmac_support::store::{ConfigStore, CsatStore, TicketStore};
use dotmac_support::*;

struct Desk {
    service: SupportService<InMemorySupportStore, std::sync::Arc<ManualClock>>,
    clock: std::sync::Arc<ManualClock>,
    tenant: TenantId,
    l1: QueueId,
    noc: QueueId,
    agents: Vec<AgentId>,
}

impl Desk {
    /// The ticket as the store has it.
    async fn stored(&self, id: TicketId) -> Option<Ticket> {
        self.service
            .store()
            .get_ticket(self.tenant, id)
            .await
            .unwrap()
    }
}

fn types(events: &SupportEvents) -> Vec<&'static str> {
    use dotmac_core::EventPayload;
    events.iter().map(|e| e.payload.event_type()).collect()
}

/// A desk in UTC, Mon-Fri 09:00-17:00, two L1 agents (offline) in round robin, a NOC queue for
/// outages, escalation: notify on first-response warning, raise priority on breach.
async fn desk() -> Desk {
    // Monday 2026-03-02 09:00 UTC.
    let clock = std::sync::Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
    ));
    let service = SupportService::new(InMemorySupportStore::new(), clock.clone());
    let tenant = TenantId::new();
    let agents: Vec<AgentId> = (1..=2).map(AgentId::from_u128).collect();
    for id in &agents {
        service
            .put_agent(tenant, &Agent::new(*id, "agent", 2).unwrap())
            .await
            .unwrap();
    }
    let l1 = QueueId::from_u128(10);
    let noc = QueueId::from_u128(11);
    service
        .put_queue(
            tenant,
            &Queue {
                id: l1,
                name: "L1".into(),
                members: agents.clone(),
                strategy: AssignmentStrategy::RoundRobin,
            },
        )
        .await
        .unwrap();
    service
        .put_queue(
            tenant,
            &Queue {
                id: noc,
                name: "NOC".into(),
                members: vec![],
                strategy: AssignmentStrategy::RoundRobin,
            },
        )
        .await
        .unwrap();
    let policy = SlaPolicy::builder(SlaPolicyId::from_u128(1), "office")
        .targets(
            Priority::Normal,
            SlaTarget::business(60).unwrap(),
            SlaTarget::business(240).unwrap(),
        )
        .targets(
            Priority::High,
            SlaTarget::business(30).unwrap(),
            SlaTarget::business(120).unwrap(),
        )
        .pause_in(Status::PENDING)
        .pause_in(StatusName::new("pending reminder").unwrap())
        .warn_before(10)
        .build()
        .unwrap();
    let config = SupportConfig::new(
        BusinessCalendar::builder("UTC")
            .weekdays("09:00", "17:00")
            .build()
            .unwrap(),
        SlaPolicySet {
            policies: vec![policy],
        },
        Router::new(l1).rule(RoutingRule {
            name: "outages".into(),
            conditions: vec![RuleCondition::Category(vec![Category::Outage])],
            queue: noc,
        }),
    )
    .with_escalations(vec![
        EscalationRule {
            id: EscalationRuleId::from_u128(1),
            name: "warn lead".into(),
            trigger: EscalationTrigger::Warning(SlaMetric::FirstResponse),
            action: EscalationAction::Notify {
                recipient: "lead@isp".into(),
            },
        },
        EscalationRule {
            id: EscalationRuleId::from_u128(2),
            name: "raise".into(),
            trigger: EscalationTrigger::Breach(SlaMetric::FirstResponse),
            action: EscalationAction::RaisePriority,
        },
    ])
    // Two of the desk's own statuses; only the first pauses the clocks.
    .with_statuses(
        StatusCatalog::new()
            .define("pending reminder", StatusCategory::Pending)
            .unwrap()
            .define("waiting on customer", StatusCategory::OnHold)
            .unwrap(),
    );
    service.configure(tenant, config).await.unwrap();
    Desk {
        service,
        clock,
        tenant,
        l1,
        noc,
        agents,
    }
}

#[tokio::test]
async fn nobody_online_waits_then_assigns_on_login() {
    let d = desk().await;
    let (ticket, events) = d
        .service
        .create_ticket(d.tenant, NewTicket::new("Router blinking"))
        .await
        .unwrap();
    assert_eq!(
        types(&events),
        ["support.ticket_created", "support.ticket_waiting"]
    );
    assert_eq!(ticket.queue(), Some(d.l1));
    assert_eq!(ticket.assignee(), None);

    let events = d
        .service
        .set_presence(d.tenant, d.agents[1], Presence::Online)
        .await
        .unwrap();
    assert_eq!(
        types(&events),
        ["support.presence_changed", "support.ticket_assigned"]
    );
    let stored = d
        .service
        .store()
        .get_ticket(d.tenant, ticket.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.assignee(), Some(d.agents[1]));
}

#[tokio::test]
async fn manual_assignment_to_offline_agent_is_refused_and_changes_nothing() {
    let d = desk().await;
    let (ticket, _) = d
        .service
        .create_ticket(d.tenant, NewTicket::new("x"))
        .await
        .unwrap();
    let before = d
        .service
        .store()
        .get_ticket(d.tenant, ticket.id())
        .await
        .unwrap();
    let err = d
        .service
        .assign(d.tenant, ticket.id(), d.agents[0], Actor::System)
        .await
        .unwrap_err();
    assert_eq!(err, SupportError::AgentUnavailable { agent: d.agents[0] });
    assert_eq!(
        d.service
            .store()
            .get_ticket(d.tenant, ticket.id())
            .await
            .unwrap(),
        before
    );
}

#[tokio::test]
async fn round_robin_alternates_and_capacity_counts_only_active_tickets() {
    let d = desk().await;
    for id in &d.agents {
        d.service
            .set_presence(d.tenant, *id, Presence::Online)
            .await
            .unwrap();
    }
    let mut assigned = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (t, _) = d
            .service
            .create_ticket(d.tenant, NewTicket::new("slow"))
            .await
            .unwrap();
        assigned.push(t.assignee());
        ids.push(t.id());
    }
    let a = d.agents.clone();
    assert_eq!(assigned, [Some(a[0]), Some(a[1]), Some(a[0]), Some(a[1])]);
    // Both at capacity 2: the fifth waits.
    let (fifth, _) = d
        .service
        .create_ticket(d.tenant, NewTicket::new("slow"))
        .await
        .unwrap();
    assert_eq!(fifth.assignee(), None);
    // Waiting on the customer frees capacity: the fifth ticket is assigned to that agent.
    let events = d
        .service
        .change_status(d.tenant, ids[0], Status::PENDING, Actor::Agent(a[0]))
        .await
        .unwrap();
    assert!(types(&events).contains(&"support.ticket_assigned"));
    let fifth = d
        .service
        .store()
        .get_ticket(d.tenant, fifth.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fifth.assignee(), Some(a[0]));
}

#[tokio::test]
async fn outage_goes_to_noc_and_parent_closes_children() {
    let d = desk().await;
    let (parent, _) = d
        .service
        .create_ticket(
            d.tenant,
            NewTicket::new("Fiber cut sector 7").category(Category::Outage),
        )
        .await
        .unwrap();
    assert_eq!(parent.queue(), Some(d.noc));
    let mut children = Vec::new();
    for _ in 0..3 {
        let (c, _) = d
            .service
            .create_ticket(d.tenant, NewTicket::new("no internet"))
            .await
            .unwrap();
        d.service
            .link_to_parent(d.tenant, c.id(), parent.id(), Actor::System)
            .await
            .unwrap();
        children.push(c.id());
    }
    d.clock.advance(Duration::minutes(5));
    let events = d
        .service
        .change_status(d.tenant, parent.id(), Status::RESOLVED, Actor::System)
        .await
        .unwrap();
    let status_changes = types(&events)
        .iter()
        .filter(|t| **t == "support.status_changed")
        .count();
    assert_eq!(status_changes, 4);
    for id in children {
        let c = d
            .service
            .store()
            .get_ticket(d.tenant, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.status(), &Status::RESOLVED);
    }
}

#[tokio::test]
async fn warning_breach_and_escalation_fire_once() {
    let d = desk().await;
    let (ticket, events) = d
        .service
        .create_ticket(d.tenant, NewTicket::new("x"))
        .await
        .unwrap();
    let created = &events[0].payload;
    assert!(
        matches!(created, SupportEvent::TicketCreated { first_response_due: Some(due), .. }
        if *due == Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap())
    );

    d.clock.advance(Duration::minutes(51));
    let events = d.service.sweep(d.tenant).await.unwrap();
    // First response and next response both run from creation (no customer message since):
    // two warnings, one escalation (its rule watches the first-response clock).
    assert_eq!(
        types(&events),
        [
            "support.sla_warning",
            "support.sla_warning",
            "support.escalated"
        ]
    );
    assert!(d.service.sweep(d.tenant).await.unwrap().is_empty());

    d.clock.advance(Duration::minutes(10));
    let events = d.service.sweep(d.tenant).await.unwrap();
    assert_eq!(
        types(&events),
        [
            "support.sla_breached",
            "support.sla_breached",
            "support.priority_changed",
            "support.escalated"
        ]
    );
    let stored = d
        .service
        .store()
        .get_ticket(d.tenant, ticket.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.priority(), Priority::High);
    // High priority has other targets: the clocks are rebuilt, and no rule fires twice for
    // the same clock.
    let again = d.service.sweep(d.tenant).await.unwrap();
    assert!(!types(&again).contains(&"support.escalated"));
}

#[tokio::test]
async fn response_records_statistics_and_pending_pauses() {
    let d = desk().await;
    let (ticket, _) = d
        .service
        .create_ticket(d.tenant, NewTicket::new("x"))
        .await
        .unwrap();
    d.clock.advance(Duration::minutes(20));
    d.service
        .change_status(d.tenant, ticket.id(), Status::PENDING, Actor::System)
        .await
        .unwrap();
    d.clock.advance(Duration::minutes(120));
    d.service
        .change_status(d.tenant, ticket.id(), Status::OPEN, Actor::Customer)
        .await
        .unwrap();
    let clocks = d.service.sla_clocks(d.tenant, ticket.id()).await.unwrap();
    // 20 minutes counted before the pause: 40 left from 11:20.
    assert_eq!(
        clocks[0].due_at,
        Some(Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap())
    );
    d.clock.advance(Duration::minutes(10));
    let agent = Actor::Agent(AgentId::new());
    let events = d
        .service
        .comment(d.tenant, ticket.id(), NewComment::public(agent, "fixed?"))
        .await
        .unwrap();
    assert!(types(&events).contains(&"support.sla_clock_stopped"));
    let from = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let to = from + Duration::days(7);
    let stats = d
        .service
        .sla_stats(d.tenant, SlaMetric::FirstResponse, from, to)
        .await
        .unwrap();
    assert_eq!((stats.count, stats.met), (1, 1));
    assert_eq!(stats.mean_elapsed_minutes, rust_decimal::Decimal::from(30));
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let d = desk().await;
    let (ticket, _) = d
        .service
        .create_ticket(d.tenant, NewTicket::new("x"))
        .await
        .unwrap();
    let before = d
        .service
        .store()
        .get_ticket(d.tenant, ticket.id())
        .await
        .unwrap();
    assert_eq!(
        d.service
            .change_status_named(d.tenant, ticket.id(), "frozen", Actor::System)
            .await,
        Err(SupportError::UnknownStatus("frozen".into()))
    );
    assert_eq!(
        d.service
            .change_status(d.tenant, ticket.id(), Status::REOPENED, Actor::System)
            .await,
        Err(SupportError::IllegalTransition {
            ticket: ticket.id(),
            from: Status::NEW,
            to: Status::REOPENED
        })
    );
    assert_eq!(
        d.service.record_csat(d.tenant, ticket.id(), 9, None).await,
        Err(SupportError::InvalidScore(9))
    );
    assert_eq!(
        d.service
            .store()
            .get_ticket(d.tenant, ticket.id())
            .await
            .unwrap(),
        before
    );
    let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    assert!(
        d.service
            .store()
            .csat_responses(d.tenant, from, from + Duration::days(365))
            .await
            .unwrap()
            .is_empty()
    );

    // A configuration naming a queue that does not exist is refused; the old one stays.
    let old = d
        .service
        .store()
        .get_config(d.tenant)
        .await
        .unwrap()
        .unwrap();
    let mut bad = old.clone();
    bad.router = Router::new(QueueId::new());
    assert!(matches!(
        d.service.configure(d.tenant, bad).await,
        Err(SupportError::Config(_))
    ));
    assert_eq!(
        d.service.store().get_config(d.tenant).await.unwrap(),
        Some(old)
    );
}

#[tokio::test]
async fn csat_per_agent() {
    let d = desk().await;
    d.service
        .set_presence(d.tenant, d.agents[0], Presence::Online)
        .await
        .unwrap();
    let (ticket, _) = d
        .service
        .create_ticket(d.tenant, NewTicket::new("x"))
        .await
        .unwrap();
    d.service
        .record_csat(d.tenant, ticket.id(), 5, Some("great".into()))
        .await
        .unwrap();
    assert!(matches!(
        d.service.record_csat(d.tenant, ticket.id(), 4, None).await,
        Err(SupportError::AlreadyExists { .. })
    ));
    let from = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let to = from + Duration::days(30);
    let responses = d
        .service
        .store()
        .csat_responses(d.tenant, from, to)
        .await
        .unwrap();
    let per_agent = CsatSummary::by_agent(&responses, from, to);
    assert_eq!(
        per_agent[&d.agents[0]].csat_percent,
        rust_decimal::Decimal::ONE_HUNDRED
    );
    let summary = d.service.csat_summary(d.tenant, from, to).await.unwrap();
    assert_eq!(summary.responses, 1);
}

#[tokio::test]
async fn correcting_a_past_status_or_the_calendar_recomputes_due_times() {
    let d = desk().await;
    let (ticket, _) = d
        .service
        .create_ticket(d.tenant, NewTicket::new("x"))
        .await
        .unwrap();
    d.clock.advance(Duration::minutes(10));
    d.service
        .change_status(d.tenant, ticket.id(), Status::PENDING, Actor::System)
        .await
        .unwrap();
    d.clock.advance(Duration::minutes(30));
    d.service
        .change_status(d.tenant, ticket.id(), Status::OPEN, Actor::System)
        .await
        .unwrap();
    let due = |clocks: Vec<ClockState>| clocks[0].due_at.unwrap();
    let at = |h, m| Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap();
    // 10 minutes, 30 paused, then 50 more from 09:40.
    assert_eq!(
        due(d.service.sla_clocks(d.tenant, ticket.id()).await.unwrap()),
        at(10, 30)
    );

    // The pending was a mistake: history entry 2 (created, queued, pending, ...) becomes open.
    let stored = d
        .service
        .store()
        .get_ticket(d.tenant, ticket.id())
        .await
        .unwrap()
        .unwrap();
    let pending_entry = stored
        .history()
        .iter()
        .position(|e| {
            matches!(
                &e.change,
                Change::StatusChanged { to, .. } if *to == Status::PENDING
            )
        })
        .unwrap();
    d.service
        .amend_status(
            d.tenant,
            ticket.id(),
            StatusAmendment::new(pending_entry, Status::OPEN, Actor::System),
        )
        .await
        .unwrap();
    assert_eq!(
        due(d.service.sla_clocks(d.tenant, ticket.id()).await.unwrap()),
        at(10, 0)
    );

    // A new calendar opening at 09:30 moves the due time again.
    let mut config = d
        .service
        .store()
        .get_config(d.tenant)
        .await
        .unwrap()
        .unwrap();
    config.calendar = BusinessCalendar::builder("UTC")
        .weekdays("09:30", "17:00")
        .build()
        .unwrap();
    d.service.configure(d.tenant, config).await.unwrap();
    assert_eq!(
        due(d.service.sla_clocks(d.tenant, ticket.id()).await.unwrap()),
        at(10, 30)
    );
}

#[tokio::test]
async fn desk_statuses_pause_by_name_and_follow_their_category() {
    let d = desk().await;
    let mut tickets = Vec::new();
    for subject in ["reminder", "waiting"] {
        let (ticket, _) = d
            .service
            .create_ticket(d.tenant, NewTicket::new(subject))
            .await
            .unwrap();
        tickets.push(ticket.id());
    }
    let first_response = |clocks: Vec<ClockState>| clocks[0];
    d.clock.advance(Duration::minutes(20));
    let events = d
        .service
        .change_status_named(d.tenant, tickets[0], "pending reminder", Actor::System)
        .await
        .unwrap();
    let reminder = Status::custom("pending reminder", StatusCategory::Pending).unwrap();
    assert!(events.iter().any(|e| matches!(
        &e.payload,
        SupportEvent::StatusChanged { to, .. } if *to == reminder
    )));
    d.service
        .change_status_named(d.tenant, tickets[1], "waiting on customer", Actor::System)
        .await
        .unwrap();
    d.clock.advance(Duration::minutes(10));
    let paused = first_response(d.service.sla_clocks(d.tenant, tickets[0]).await.unwrap());
    let running = first_response(d.service.sla_clocks(d.tenant, tickets[1]).await.unwrap());
    assert_eq!(paused.status, ClockStatus::Paused);
    assert_eq!(running.status, ClockStatus::Running);
    d.clock.advance(Duration::minutes(10));
    for id in &tickets {
        d.service
            .change_status(d.tenant, *id, Status::OPEN, Actor::Customer)
            .await
            .unwrap();
    }
    // 60 minutes to respond: the reminder paused 09:20-09:40, waiting on customer did not.
    let due = |h, m| Some(Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap());
    let clocks = d.service.sla_clocks(d.tenant, tickets[0]).await.unwrap();
    assert_eq!(first_response(clocks).due_at, due(10, 20));
    let clocks = d.service.sla_clocks(d.tenant, tickets[1]).await.unwrap();
    assert_eq!(first_response(clocks).due_at, due(10, 0));
    let stored = d.stored(tickets[0]).await.unwrap();
    assert!(stored.history().iter().any(|e| matches!(
        &e.change,
        Change::StatusChanged { to, .. } if *to == reminder
    )));
}

#[tokio::test]
async fn statuses_the_desk_does_not_define_change_nothing() {
    let d = desk().await;
    let (ticket, _) = d
        .service
        .create_ticket(d.tenant, NewTicket::new("x"))
        .await
        .unwrap();
    let before = d.stored(ticket.id()).await;
    // Not defined at all, and defined but in another category.
    for stranger in [
        Status::custom("frozen", StatusCategory::Pending).unwrap(),
        Status::custom("pending reminder", StatusCategory::OnHold).unwrap(),
    ] {
        let name = stranger.name().to_string();
        assert_eq!(
            d.service
                .change_status(d.tenant, ticket.id(), stranger, Actor::System)
                .await,
            Err(SupportError::UnknownStatus(name))
        );
    }
    assert_eq!(d.stored(ticket.id()).await, before);
    // A policy may only pause in a status the configuration knows.
    let config = d
        .service
        .store()
        .get_config(d.tenant)
        .await
        .unwrap()
        .unwrap();
    let mut typo = config.clone();
    typo.policies.policies = vec![
        SlaPolicy::builder(SlaPolicyId::from_u128(2), "typo")
            .pause_in(StatusName::new("pending remnider").unwrap())
            .build()
            .unwrap(),
    ];
    assert_eq!(
        d.service.configure(d.tenant, typo).await,
        Err(SupportError::Config(
            "SLA policy \"typo\" pauses in status \"pending remnider\", which is \
             neither built in nor defined in the configuration's statuses"
                .into()
        ))
    );
    assert_eq!(
        d.service.store().get_config(d.tenant).await.unwrap(),
        Some(config)
    );
}
