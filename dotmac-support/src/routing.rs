//! Routing rules that choose a queue, and assignment strategies that choose an agent.
//!
//! Assignment never picks an agent who is not [`Presence::Online`] or who is at capacity;
//! when nobody qualifies the ticket waits in its queue (assignment returns `None`) and is
//! assigned when an agent comes online or frees capacity (see `SupportService`).

use std::collections::{BTreeSet, HashMap};

use dotmac_core::TenantId;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SupportError};
use crate::ticket::{Category, Channel, CustomerTier, Priority, Ticket};
use crate::vocab::{AgentId, QueueId};

/// Whether an agent can take work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Available for assignment.
    Online,
    /// Signed in but not taking new work.
    Away,
    /// Signed out.
    Offline,
}

/// A support agent.
///
/// The capacity is private: it is at least 1 ([`Agent::new`] checks it, and so does
/// deserialization), read it with [`Agent::capacity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AgentRepr")]
pub struct Agent {
    /// Id.
    pub id: AgentId,
    /// Display name.
    pub name: String,
    /// Presence.
    pub presence: Presence,
    /// Most SLA-active tickets at once; at least 1.
    capacity: u32,
    /// Skills (`"fiber"`, `"spanish"`, …).
    pub skills: BTreeSet<String>,
}

/// An [`Agent`] as stored, checked on the way in.
#[derive(Deserialize)]
struct AgentRepr {
    id: AgentId,
    name: String,
    presence: Presence,
    capacity: u32,
    skills: BTreeSet<String>,
}

impl TryFrom<AgentRepr> for Agent {
    type Error = SupportError;
    fn try_from(repr: AgentRepr) -> Result<Self> {
        let agent = Agent::new(repr.id, repr.name, repr.capacity)?;
        Ok(Agent {
            presence: repr.presence,
            skills: repr.skills,
            ..agent
        })
    }
}

impl Agent {
    /// An offline agent without skills.
    ///
    /// # Errors
    ///
    /// [`SupportError::ZeroCapacity`] for a capacity of zero.
    pub fn new(id: AgentId, name: impl Into<String>, capacity: u32) -> Result<Self> {
        if capacity == 0 {
            return Err(SupportError::ZeroCapacity("agent capacity"));
        }
        Ok(Agent {
            id,
            name: name.into(),
            presence: Presence::Offline,
            capacity,
            skills: BTreeSet::new(),
        })
    }

    /// Most SLA-active tickets at once (at least 1).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// With a skill.
    #[must_use]
    pub fn with_skill(mut self, skill: impl Into<String>) -> Self {
        self.skills.insert(skill.into());
        self
    }

    /// With a presence.
    #[must_use]
    pub fn with_presence(mut self, presence: Presence) -> Self {
        self.presence = presence;
        self
    }
}

/// How a queue picks an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "strategy")]
#[non_exhaustive]
pub enum AssignmentStrategy {
    /// The next available member after the last one assigned (the rotation remembers its
    /// place in [`QueueCursor`]).
    RoundRobin,
    /// The available member with the fewest SLA-active tickets; `cap` (if set) lowers every
    /// member's capacity for this queue.
    LeastLoaded {
        /// Per-agent cap for this queue.
        cap: Option<u32>,
    },
    /// Least-loaded among available members having every required skill; after the ticket has
    /// waited `relax_after_minutes`, the skills are no longer required.
    SkillsBased {
        /// Skills a ticket of this queue needs.
        required: BTreeSet<String>,
        /// Minutes of waiting after which any available member will do.
        relax_after_minutes: u32,
    },
    /// Never assign automatically.
    Manual,
}

/// A queue (team).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// Id.
    pub id: QueueId,
    /// Name.
    pub name: String,
    /// Members, in rotation order.
    pub members: Vec<AgentId>,
    /// Strategy.
    pub strategy: AssignmentStrategy,
}

/// Where a queue's rotation stands: the member index to try first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueCursor {
    /// Index into the queue's members.
    pub next: usize,
}

/// A routing condition; a rule matches when all its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "on", content = "value")]
#[non_exhaustive]
pub enum RuleCondition {
    /// Category is one of these.
    Category(Vec<Category>),
    /// Priority is one of these.
    Priority(Vec<Priority>),
    /// Priority is at least this.
    MinPriority(Priority),
    /// Channel is one of these.
    Channel(Vec<Channel>),
    /// Customer tier is one of these.
    Tier(Vec<CustomerTier>),
    /// Subject or description contains one of these words (ASCII case-insensitive).
    Keywords(Vec<String>),
    /// The ticket belongs to one of these tenants (for routers shared by a reseller's tenants).
    Tenant(Vec<TenantId>),
}

impl RuleCondition {
    /// Whether the ticket satisfies it.
    pub fn matches(&self, ticket: &Ticket) -> bool {
        match self {
            RuleCondition::Category(any) => any.contains(&ticket.category()),
            RuleCondition::Priority(any) => any.contains(&ticket.priority()),
            RuleCondition::MinPriority(min) => ticket.priority() >= *min,
            RuleCondition::Channel(any) => any.contains(&ticket.channel()),
            RuleCondition::Tier(any) => any.contains(&ticket.tier()),
            RuleCondition::Keywords(words) => words.iter().any(|w| {
                contains_ignore_ascii_case(ticket.subject(), w)
                    || contains_ignore_ascii_case(ticket.description(), w)
            }),
            RuleCondition::Tenant(any) => any.contains(&ticket.tenant()),
        }
    }
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return true;
    }
    h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// An ordered routing rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    /// Name, for audit.
    pub name: String,
    /// All must hold.
    pub conditions: Vec<RuleCondition>,
    /// Where matching tickets go.
    pub queue: QueueId,
}

/// Ordered rules and a fallback queue.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use dotmac_core::TenantId;
/// use dotmac_support::{Category, NewTicket, QueueId, Router, RoutingRule, RuleCondition, Ticket, TicketId};
///
/// let (outages, billing, general) = (QueueId::new(), QueueId::new(), QueueId::new());
/// let router = Router::new(general)
///     .rule(RoutingRule { name: "outages".into(), conditions: vec![RuleCondition::Category(vec![Category::Outage])], queue: outages })
///     .rule(RoutingRule { name: "billing words".into(), conditions: vec![RuleCondition::Keywords(vec!["invoice".into()])], queue: billing });
/// let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
/// let ticket = Ticket::open(TicketId::new(), TenantId::new(), NewTicket::new("Wrong INVOICE amount"), at);
/// assert_eq!(router.route(&ticket), billing);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
    rules: Vec<RoutingRule>,
    fallback: QueueId,
}

impl Router {
    /// A router that sends everything to `fallback` until rules are added.
    pub fn new(fallback: QueueId) -> Self {
        Router {
            rules: Vec::new(),
            fallback,
        }
    }

    /// Appends a rule (earlier rules win).
    #[must_use]
    pub fn rule(mut self, rule: RoutingRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[RoutingRule] {
        &self.rules
    }

    /// The fallback queue.
    pub fn fallback(&self) -> QueueId {
        self.fallback
    }

    /// The queue for a ticket: the first matching rule's, else the fallback.
    pub fn route(&self, ticket: &Ticket) -> QueueId {
        self.rules
            .iter()
            .find(|rule| rule.conditions.iter().all(|c| c.matches(ticket)))
            .map_or(self.fallback, |rule| rule.queue)
    }
}

/// An agent and the number of SLA-active tickets they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLoad {
    /// The agent.
    pub agent: Agent,
    /// SLA-active tickets assigned (paused and done tickets do not count).
    pub active: u32,
}

/// The agents of a tenant with their loads, indexed by id: what assignment decides on.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    agents: Vec<AgentLoad>,
    // Looked up once per queue member per decision: a fast hasher matters here.
    index: HashMap<AgentId, usize, foldhash::fast::RandomState>,
}

impl Roster {
    /// An empty roster.
    pub fn new() -> Self {
        Roster::default()
    }

    /// Adds or replaces an agent with its load.
    pub fn upsert(&mut self, agent: Agent, active: u32) {
        if let Some(slot) = self
            .index
            .get(&agent.id)
            .and_then(|&i| self.agents.get_mut(i))
        {
            *slot = AgentLoad { agent, active };
            return;
        }
        self.index.insert(agent.id, self.agents.len());
        self.agents.push(AgentLoad { agent, active });
    }

    /// An agent's entry.
    pub fn get(&self, id: AgentId) -> Option<&AgentLoad> {
        self.index.get(&id).and_then(|&i| self.agents.get(i))
    }

    /// Changes an agent's presence; `false` when unknown.
    pub fn set_presence(&mut self, id: AgentId, presence: Presence) -> bool {
        match self.index.get(&id).and_then(|&i| self.agents.get_mut(i)) {
            Some(entry) => {
                entry.agent.presence = presence;
                true
            }
            None => false,
        }
    }

    /// Counts one more active ticket for an agent (after an assignment).
    pub fn add_load(&mut self, id: AgentId) {
        if let Some(entry) = self.index.get(&id).and_then(|&i| self.agents.get_mut(i)) {
            entry.active = entry.active.saturating_add(1);
        }
    }

    /// Counts one fewer (a ticket resolved, paused or moved away).
    pub fn remove_load(&mut self, id: AgentId) {
        if let Some(entry) = self.index.get(&id).and_then(|&i| self.agents.get_mut(i)) {
            entry.active = entry.active.saturating_sub(1);
        }
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

/// Picks an agent of `queue` for a ticket that has waited `waited_minutes`, advancing the
/// rotation. `None`: nobody is online with spare capacity (or the queue is manual); the ticket
/// waits.
///
/// The caller records the assignment in the roster ([`Roster::add_load`]) if it keeps using it.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "rotation indices: n is a member count above zero and every index is below n"
)]
pub fn pick_agent(
    queue: &Queue,
    cursor: &mut QueueCursor,
    roster: &Roster,
    waited_minutes: u32,
) -> Option<AgentId> {
    let members = &queue.members;
    let n = members.len();
    if n == 0 {
        return None;
    }
    let start = cursor.next % n;
    let available = |id: &AgentId, cap: Option<u32>| -> Option<&AgentLoad> {
        let entry = roster.get(*id)?;
        let limit = cap.map_or(entry.agent.capacity, |c| c.min(entry.agent.capacity));
        (entry.agent.presence == Presence::Online && entry.active < limit).then_some(entry)
    };
    let rotation = (0..n).map(|offset| (start + offset) % n);
    let chosen = match &queue.strategy {
        AssignmentStrategy::Manual => None,
        AssignmentStrategy::RoundRobin => rotation
            .clone()
            .find(|&i| members.get(i).and_then(|id| available(id, None)).is_some()),
        AssignmentStrategy::LeastLoaded { cap } => least_loaded(rotation.clone(), |i| {
            members.get(i).and_then(|id| available(id, *cap))
        }),
        AssignmentStrategy::SkillsBased {
            required,
            relax_after_minutes,
        } => {
            let relaxed = waited_minutes >= *relax_after_minutes;
            least_loaded(rotation.clone(), |i| {
                members
                    .get(i)
                    .and_then(|id| available(id, None))
                    .filter(|entry| relaxed || required.is_subset(&entry.agent.skills))
            })
        }
    }?;
    cursor.next = (chosen + 1) % n;
    members.get(chosen).copied()
}

/// Assigns many tickets from one queue: the same decisions as repeated [`pick_agent`] calls
/// (each followed by [`Roster::add_load`]), but a least-loaded or skills-based decision costs
/// O(log members) instead of a scan of every member. Build it once per batch (O(members ·
/// log members)); it keeps its own copy of the loads.
#[derive(Debug, Clone)]
pub struct QueueAssigner<'q> {
    queue: &'q Queue,
    cursor: QueueCursor,
    /// Per member position: active tickets and limit, `None` when not assignable at all
    /// (unknown or not online).
    slots: Vec<Option<(u32, u32)>>,
    skilled: Vec<bool>,
    /// Available members as (load, position).
    all: BTreeSet<(u32, usize)>,
    /// Available members with every required skill (skills-based queues only).
    with_skills: BTreeSet<(u32, usize)>,
}

impl<'q> QueueAssigner<'q> {
    /// An assigner for `queue` from the roster's current presence and loads.
    pub fn new(queue: &'q Queue, roster: &Roster, cursor: QueueCursor) -> Self {
        let cap = match &queue.strategy {
            AssignmentStrategy::LeastLoaded { cap } => *cap,
            _ => None,
        };
        let required = match &queue.strategy {
            AssignmentStrategy::SkillsBased { required, .. } => Some(required),
            _ => None,
        };
        let mut assigner = QueueAssigner {
            queue,
            cursor,
            slots: Vec::with_capacity(queue.members.len()),
            skilled: Vec::with_capacity(queue.members.len()),
            all: BTreeSet::new(),
            with_skills: BTreeSet::new(),
        };
        for (position, id) in queue.members.iter().enumerate() {
            let entry = roster
                .get(*id)
                .filter(|e| e.agent.presence == Presence::Online);
            let slot = entry.map(|e| {
                let limit = cap.map_or(e.agent.capacity, |c| c.min(e.agent.capacity));
                (e.active, limit)
            });
            let skilled = match (entry, required) {
                (Some(e), Some(required)) => required.is_subset(&e.agent.skills),
                (Some(_), None) => true,
                (None, _) => false,
            };
            assigner.slots.push(slot);
            assigner.skilled.push(skilled);
            assigner.insert(position);
        }
        assigner
    }

    fn insert(&mut self, position: usize) {
        if let Some(Some((active, limit))) = self.slots.get(position).copied()
            && active < limit
        {
            self.all.insert((active, position));
            if self.skilled.get(position).copied().unwrap_or(false) {
                self.with_skills.insert((active, position));
            }
        }
    }

    /// The rotation position after the decisions so far (store it for the next batch).
    pub fn cursor(&self) -> QueueCursor {
        self.cursor
    }

    /// Picks an agent for a ticket that has waited `waited_minutes` and counts the assignment.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "rotation indices: n is a member count above zero and every index is below n"
    )]
    pub fn pick(&mut self, waited_minutes: u32) -> Option<AgentId> {
        let n = self.queue.members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.next % n;
        let chosen = match &self.queue.strategy {
            AssignmentStrategy::Manual => None,
            AssignmentStrategy::RoundRobin => {
                (0..n).map(|offset| (start + offset) % n).find(|&i| {
                    self.slots
                        .get(i)
                        .copied()
                        .flatten()
                        .is_some_and(|(active, limit)| active < limit)
                })
            }
            AssignmentStrategy::LeastLoaded { .. } => first_in_rotation(&self.all, start),
            AssignmentStrategy::SkillsBased {
                relax_after_minutes,
                ..
            } => {
                if waited_minutes >= *relax_after_minutes {
                    first_in_rotation(&self.all, start)
                } else {
                    first_in_rotation(&self.with_skills, start)
                }
            }
        }?;
        if let Some(Some((active, _))) = self.slots.get_mut(chosen) {
            self.all.remove(&(*active, chosen));
            self.with_skills.remove(&(*active, chosen));
            *active = active.saturating_add(1);
        }
        self.insert(chosen);
        self.cursor.next = (chosen + 1) % n;
        self.queue.members.get(chosen).copied()
    }
}

/// Among the least-loaded entries, the first at or after `start` in rotation order.
fn first_in_rotation(set: &BTreeSet<(u32, usize)>, start: usize) -> Option<usize> {
    let &(load, first) = set.first()?;
    let after = set.range((load, start)..=(load, usize::MAX)).next();
    Some(after.map_or(first, |&(_, position)| position))
}

fn least_loaded<'a>(
    rotation: impl Iterator<Item = usize>,
    candidate: impl Fn(usize) -> Option<&'a AgentLoad>,
) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for i in rotation {
        if let Some(entry) = candidate(i)
            && best.is_none_or(|(_, load)| entry.active < load)
        {
            best = Some((i, entry.active));
            if entry.active == 0 {
                // Nobody can be less loaded than idle: the first idle agent in rotation wins.
                break;
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster(n: usize) -> (Roster, Vec<AgentId>) {
        let mut roster = Roster::new();
        let ids: Vec<AgentId> = (0..n).map(|i| AgentId::from_u128(i as u128 + 1)).collect();
        for id in &ids {
            roster.upsert(
                Agent::new(*id, "a", 3)
                    .unwrap()
                    .with_presence(Presence::Online),
                0,
            );
        }
        (roster, ids)
    }

    fn queue(members: Vec<AgentId>, strategy: AssignmentStrategy) -> Queue {
        Queue {
            id: QueueId::new(),
            name: "q".into(),
            members,
            strategy,
        }
    }

    #[test]
    fn round_robin_skips_offline_and_full_agents_and_remembers_its_place() {
        let (mut roster, ids) = roster(3);
        roster.set_presence(ids[1], Presence::Offline);
        let q = queue(ids.clone(), AssignmentStrategy::RoundRobin);
        let mut cursor = QueueCursor::default();
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 0), Some(ids[0]));
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 0), Some(ids[2]));
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 0), Some(ids[0]));
        roster.upsert(roster.get(ids[2]).unwrap().agent.clone(), 3);
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 0), Some(ids[0]));
        assert_eq!(
            Agent::new(ids[0], "x", 0),
            Err(SupportError::ZeroCapacity("agent capacity"))
        );
    }

    #[test]
    fn a_stored_agent_keeps_its_capacity_check() {
        let agent = Agent::new(AgentId::from_u128(7), "Ana", 2)
            .unwrap()
            .with_skill("fiber")
            .with_presence(Presence::Away);
        let json = serde_json::to_value(&agent).unwrap();
        assert_eq!(
            serde_json::from_value::<Agent>(json.clone()).unwrap(),
            agent
        );
        let mut zero = json;
        zero["capacity"] = 0.into();
        let err = serde_json::from_value::<Agent>(zero).unwrap_err();
        assert_eq!(err.to_string(), "agent capacity must be at least 1");
    }

    #[test]
    fn nobody_online_means_waiting() {
        let (mut roster, ids) = roster(2);
        for id in &ids {
            roster.set_presence(*id, Presence::Away);
        }
        let q = queue(ids.clone(), AssignmentStrategy::RoundRobin);
        let mut cursor = QueueCursor::default();
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 0), None);
        assert_eq!(cursor, QueueCursor::default());
    }

    #[test]
    fn least_loaded_respects_the_cap() {
        let (mut roster, ids) = roster(3);
        roster.upsert(roster.get(ids[0]).unwrap().agent.clone(), 2);
        roster.upsert(roster.get(ids[1]).unwrap().agent.clone(), 1);
        roster.upsert(roster.get(ids[2]).unwrap().agent.clone(), 2);
        let q = queue(
            ids.clone(),
            AssignmentStrategy::LeastLoaded { cap: Some(2) },
        );
        let mut cursor = QueueCursor::default();
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 0), Some(ids[1]));
        roster.add_load(ids[1]);
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 0), None);
    }

    #[test]
    fn skills_relax_after_timeout() {
        let (mut roster, ids) = roster(2);
        let fiber = roster
            .get(ids[1])
            .unwrap()
            .agent
            .clone()
            .with_skill("fiber");
        roster.upsert(fiber, 2);
        let q = queue(
            ids.clone(),
            AssignmentStrategy::SkillsBased {
                required: BTreeSet::from(["fiber".to_owned()]),
                relax_after_minutes: 30,
            },
        );
        let mut cursor = QueueCursor::default();
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 5), Some(ids[1]));
        roster.set_presence(ids[1], Presence::Offline);
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 5), None);
        assert_eq!(pick_agent(&q, &mut cursor, &roster, 30), Some(ids[0]));
    }
}
