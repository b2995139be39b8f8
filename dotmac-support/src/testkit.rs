//! The behaviour suite every support store must pass (feature `testkit`).
//!
//! A storage crate calls [`run_store_suite`] from its own test with a fresh store; it panics
//! with a message naming the failed expectation.

#![allow(clippy::panic)]
// A test suite: fixed, small figures, where plain operators are the clearest.
#![allow(clippy::arithmetic_side_effects)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use dotmac_core::TenantId;

use crate::calendar::BusinessCalendar;
use crate::csat::{CsatResponse, CsatResponseId, CsatScore};
use crate::error::SupportError;
use crate::escalation::{MarkKind, SlaMark, SlaMarks};
use crate::routing::{Agent, AssignmentStrategy, Presence, Queue, QueueCursor, Router};
use crate::sla::{SlaMetric, SlaPolicy, SlaPolicyId, SlaPolicySet, SlaRecord};
use crate::store::{SupportConfig, SupportStore};
use crate::ticket::{Actor, NewTicket, Priority, StatusCatalog, Ticket};
use crate::vocab::{AgentId, QueueId, Status, StatusCategory, TicketId};

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0)
        .single()
        .unwrap_or_default()
        + Duration::minutes(minutes)
}

fn check<T: std::fmt::Debug>(what: &str, result: Result<T, SupportError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("store suite: {what} failed: {e}"),
    }
}

fn expect(what: &str, condition: bool) {
    if !condition {
        panic!("store suite: {what}");
    }
}

/// Runs every behaviour check against `store`, which must be empty.
///
/// # Panics
///
/// On the first expectation the store does not meet, naming it.
pub async fn run_store_suite<S: SupportStore>(store: &S) {
    tickets(store).await;
    agents_and_queues(store).await;
    config(store).await;
    sla_state(store).await;
    csat(store).await;
}

async fn tickets<S: SupportStore>(store: &S) {
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let queue = QueueId::new();
    let agent = AgentId::new();
    let mut parent = Ticket::open(
        TicketId::new(),
        tenant,
        NewTicket::new("Outage in sector 7"),
        at(0),
    );
    parent
        .set_queue(queue, Actor::System, at(0))
        .unwrap_or_default();
    check("insert parent", store.insert_ticket(tenant, &parent).await);
    let duplicate = store.insert_ticket(tenant, &parent).await;
    expect(
        "inserting an existing id is AlreadyExists",
        matches!(duplicate, Err(SupportError::AlreadyExists { .. })),
    );

    let mut child = Ticket::open(
        TicketId::new(),
        tenant,
        NewTicket::new("No internet").priority(Priority::High),
        at(1),
    );
    child
        .set_queue(queue, Actor::System, at(1))
        .unwrap_or_default();
    child
        .link_to_parent(&parent, Actor::System, at(2))
        .unwrap_or_default();
    check("insert child", store.insert_ticket(tenant, &child).await);

    let loaded = check("get child", store.get_ticket(tenant, child.id()).await);
    expect(
        "a ticket round-trips with its whole history",
        loaded.as_ref() == Some(&child),
    );
    let foreign = check(
        "get from another tenant",
        store.get_ticket(other, child.id()).await,
    );
    expect("another tenant never sees the ticket", foreign.is_none());

    let children = check("children_of", store.children_of(tenant, parent.id()).await);
    expect(
        "children_of finds the child",
        children.iter().map(Ticket::id).collect::<Vec<_>>() == vec![child.id()],
    );

    let waiting = check(
        "waiting_in_queue",
        store.waiting_in_queue(tenant, queue).await,
    );
    expect(
        "waiting_in_queue lists unassigned tickets oldest first",
        waiting.iter().map(Ticket::id).collect::<Vec<_>>() == vec![parent.id(), child.id()],
    );
    expect(
        "waiting_in_queue is tenant-scoped",
        check("waiting other", store.waiting_in_queue(other, queue).await).is_empty(),
    );

    child
        .assign(Some(agent), Actor::System, at(3))
        .unwrap_or_default();
    check("update child", store.update_ticket(tenant, &child).await);
    let waiting = check(
        "waiting after assign",
        store.waiting_in_queue(tenant, queue).await,
    );
    expect(
        "an assigned ticket no longer waits",
        waiting.iter().all(|t| t.id() != child.id()),
    );
    let assigned = check("assigned_to", store.assigned_to(tenant, agent).await);
    expect(
        "assigned_to finds it",
        assigned.len() == 1 && assigned.first().map(Ticket::id) == Some(child.id()),
    );

    // A desk's own statuses: the store keeps the name and files the ticket by category.
    let solved = check(
        "custom resolved status",
        Status::custom("solved by phone", StatusCategory::Resolved),
    );
    check(
        "resolve",
        child.change_status(solved, Actor::Agent(agent), at(4)),
    );
    check("update resolved", store.update_ticket(tenant, &child).await);
    expect(
        "a ticket in a custom status round-trips",
        check("get resolved", store.get_ticket(tenant, child.id()).await).as_ref() == Some(&child),
    );
    expect(
        "resolved tickets are not in assigned_to",
        check(
            "assigned_to after resolve",
            store.assigned_to(tenant, agent).await,
        )
        .is_empty(),
    );
    let unclosed = check("unclosed", store.unclosed_tickets(tenant).await);
    expect(
        "resolved (not closed) tickets are unclosed",
        unclosed.len() == 2,
    );
    let duplicate = check(
        "custom closed status",
        Status::custom("closed as duplicate", StatusCategory::Closed),
    );
    check(
        "close",
        child.change_status(duplicate, Actor::Agent(agent), at(5)),
    );
    check("update closed", store.update_ticket(tenant, &child).await);
    let unclosed = check("unclosed after close", store.unclosed_tickets(tenant).await);
    expect(
        "closed tickets are not unclosed",
        unclosed.iter().map(Ticket::id).collect::<Vec<_>>() == vec![parent.id()],
    );

    let missing = Ticket::open(TicketId::new(), tenant, NewTicket::new("ghost"), at(0));
    let result = store.update_ticket(tenant, &missing).await;
    expect(
        "updating an unknown ticket is NotFound",
        matches!(result, Err(SupportError::NotFound { .. })),
    );
    let result = store.update_ticket(other, &child).await;
    expect(
        "updating another tenant's ticket is NotFound",
        matches!(result, Err(SupportError::NotFound { .. })),
    );
}

async fn agents_and_queues<S: SupportStore>(store: &S) {
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let agent = check("agent", Agent::new(AgentId::new(), "Ana", 5))
        .with_skill("fiber")
        .with_presence(Presence::Online);
    check("put agent", store.put_agent(tenant, &agent).await);
    expect(
        "agent round-trips",
        check("get agent", store.get_agent(tenant, agent.id).await) == Some(agent.clone()),
    );
    expect(
        "agents are tenant-scoped",
        check("get agent other", store.get_agent(other, agent.id).await).is_none(),
    );
    let mut offline = agent.clone();
    offline.presence = Presence::Offline;
    check("replace agent", store.put_agent(tenant, &offline).await);
    expect(
        "put_agent replaces",
        check("list agents", store.list_agents(tenant).await) == vec![offline],
    );

    let queue = Queue {
        id: QueueId::new(),
        name: "L1".into(),
        members: vec![agent.id],
        strategy: AssignmentStrategy::LeastLoaded { cap: Some(3) },
    };
    check("put queue", store.put_queue(tenant, &queue).await);
    expect(
        "queue round-trips",
        check("get queue", store.get_queue(tenant, queue.id).await) == Some(queue.clone()),
    );
    expect(
        "queues are tenant-scoped",
        check("list queues other", store.list_queues(other).await).is_empty(),
    );
    expect(
        "a new cursor starts at zero",
        check("cursor", store.get_cursor(tenant, queue.id).await) == QueueCursor::default(),
    );
    check(
        "put cursor",
        store
            .put_cursor(tenant, queue.id, QueueCursor { next: 7 })
            .await,
    );
    expect(
        "cursor persists",
        check("cursor again", store.get_cursor(tenant, queue.id).await).next == 7,
    );
    expect(
        "cursors are tenant-scoped",
        check("cursor other", store.get_cursor(other, queue.id).await).next == 0,
    );
}

async fn config<S: SupportStore>(store: &S) {
    let (tenant, other) = (TenantId::new(), TenantId::new());
    expect(
        "no config at first",
        check("get config", store.get_config(tenant).await).is_none(),
    );
    let calendar = check(
        "calendar",
        BusinessCalendar::builder("Europe/Berlin")
            .weekdays("09:00", "17:00")
            .build(),
    );
    let config = SupportConfig {
        calendar: calendar.clone(),
        policy_calendars: [(SlaPolicyId::from_u128(9), BusinessCalendar::always_open())].into(),
        policies: SlaPolicySet {
            policies: vec![SlaPolicy::isp_default(SlaPolicyId::from_u128(9))],
        },
        router: Router::new(QueueId::new()),
        escalations: Vec::new(),
        statuses: check(
            "status catalog",
            StatusCatalog::new().define("pending reminder", StatusCategory::Pending),
        ),
    };
    check("put config", store.put_config(tenant, &config).await);
    expect(
        "config round-trips",
        check("get config again", store.get_config(tenant).await) == Some(config),
    );
    expect(
        "config is tenant-scoped",
        check("get config other", store.get_config(other).await).is_none(),
    );
}

async fn sla_state<S: SupportStore>(store: &S) {
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let ticket = TicketId::new();
    expect(
        "no marks at first",
        check("marks", store.get_marks(tenant, ticket).await) == SlaMarks::default(),
    );
    let mut marks = SlaMarks::default();
    marks.marks.insert(SlaMark {
        kind: MarkKind::Breached,
        metric: SlaMetric::FirstResponse,
        clock_started_at: at(0),
    });
    check("put marks", store.put_marks(tenant, ticket, &marks).await);
    expect(
        "marks round-trip",
        check("marks again", store.get_marks(tenant, ticket).await) == marks,
    );
    expect(
        "marks are tenant-scoped",
        check("marks other", store.get_marks(other, ticket).await) == SlaMarks::default(),
    );

    let record = |minutes: i64, metric| SlaRecord {
        ticket,
        policy: SlaPolicyId::from_u128(1),
        priority: Priority::Normal,
        metric,
        started_at: at(0),
        stopped_at: at(minutes),
        target_minutes: 60,
        elapsed_minutes: 50,
        margin_minutes: 10,
        met: true,
    };
    check(
        "add record",
        store
            .add_record(tenant, &record(90, SlaMetric::Resolution))
            .await,
    );
    check(
        "add record",
        store
            .add_record(tenant, &record(30, SlaMetric::FirstResponse))
            .await,
    );
    let found = check("records", store.records(tenant, at(0), at(120)).await);
    expect(
        "records come back in stop order",
        found
            == vec![
                record(30, SlaMetric::FirstResponse),
                record(90, SlaMetric::Resolution),
            ],
    );
    expect(
        "records filter by stop time",
        check(
            "records window",
            store.records(tenant, at(31), at(90)).await,
        )
        .is_empty(),
    );
    expect(
        "records are tenant-scoped",
        check("records other", store.records(other, at(0), at(120)).await).is_empty(),
    );
}

async fn csat<S: SupportStore>(store: &S) {
    let (tenant, other) = (TenantId::new(), TenantId::new());
    let response = CsatResponse {
        id: CsatResponseId::new(),
        ticket: TicketId::new(),
        agent: Some(AgentId::new()),
        queue: None,
        score: check("score", CsatScore::new(4)),
        comment: Some("quick fix".into()),
        at: at(10),
    };
    check("add csat", store.add_csat(tenant, &response).await);
    let again = CsatResponse {
        id: CsatResponseId::new(),
        ..response.clone()
    };
    let duplicate = store.add_csat(tenant, &again).await;
    expect(
        "one CSAT response per ticket",
        matches!(duplicate, Err(SupportError::AlreadyExists { .. })),
    );
    expect(
        "csat round-trips",
        check("csat", store.csat_responses(tenant, at(0), at(60)).await) == vec![response],
    );
    expect(
        "csat window is half-open",
        check(
            "csat window",
            store.csat_responses(tenant, at(0), at(10)).await,
        )
        .is_empty(),
    );
    expect(
        "csat is tenant-scoped",
        check(
            "csat other",
            store.csat_responses(other, at(0), at(60)).await,
        )
        .is_empty(),
    );
}
