//! Delivery claims: two claimers on separate handles never both hold one delivery while its
//! lease is live; an expired lease is claimed again; an outcome recorded under a stale claim's
//! lease never moves a delivery that was claimed again; one endpoint's deep backlog never
//! hides another endpoint's due deliveries; organisations take turns for short slots and one
//! never takes more than its share.

use std::collections::{HashMap, HashSet};

use clarion_store::{
    AfterAttempt, Attempt, AttemptOutcome, ClaimRequest, ClaimedDelivery, DeliveryFilter,
    DeliveryId, DeliveryStatus, EndpointId, Millis, OrgId, Store,
};

use crate::{backend, endpoint, queue_deliveries};

const DELIVERIES_PER_ENDPOINT: usize = 20;
const ENDPOINTS: usize = 3;
const HANDLES: usize = 4;
const TASKS_PER_HANDLE: usize = 2;
const ROUNDS: i64 = 5;
/// Each round happens this long after the previous one; leases last half of it.
const ROUND_MS: Millis = 1_000;

fn request(owner: &str, now: Millis, limit: u32) -> ClaimRequest<'_> {
    ClaimRequest {
        owner,
        now,
        lease_until: now + ROUND_MS / 2,
        limit,
        first_attempts: true,
        per_endpoint_limit: 1_000,
        in_flight: &[],
        endpoint_limits: &[],
        per_organization_limit: 1_000,
        in_flight_per_organization: &[],
    }
}

/// Every claimer (several tasks on each of several handles) claims small batches at `now`
/// until nothing is due; answers every claim made, by claimer.
async fn claim_everything(handles: &[Store], now: Millis) -> Vec<ClaimedDelivery> {
    let mut tasks = Vec::new();
    for (h, store) in handles.iter().enumerate() {
        for t in 0..TASKS_PER_HANDLE {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("node{h}-{t}");
                let mut mine = Vec::new();
                loop {
                    let claimed = store.claim_due(&request(&owner, now, 3)).await.unwrap();
                    // More claims than deliveries means some were claimed twice: stop, so a
                    // broken claim fails the check instead of looping forever.
                    if claimed.is_empty() || mine.len() > ENDPOINTS * DELIVERIES_PER_ENDPOINT {
                        break mine;
                    }
                    mine.extend(claimed);
                }
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

async fn setup() -> (crate::Backend, OrgId, Vec<Store>) {
    let backend = backend().await;
    let org = backend.store.create_org("claims", 0).await.unwrap().id;
    for e in 0..ENDPOINTS {
        let endpoint = endpoint(&backend.store, org, &format!("https://r{e}.example/")).await;
        queue_deliveries(&backend.store, org, endpoint.id, DELIVERIES_PER_ENDPOINT, 0).await;
    }
    let handles = backend.handles(HANDLES).await;
    (backend, org, handles)
}

fn assert_each_claimed_once(claims: &[ClaimedDelivery], round: i64) {
    let mut seen = HashMap::<DeliveryId, usize>::new();
    for claim in claims {
        *seen.entry(claim.id).or_default() += 1;
    }
    let doubles: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubles.is_empty(),
        "round {round}: deliveries held by two claimers under a live lease: {doubles:?}"
    );
    assert_eq!(
        seen.len(),
        ENDPOINTS * DELIVERIES_PER_ENDPOINT,
        "round {round}: every due delivery is claimed"
    );
    let leases: HashSet<&str> = claims.iter().map(|c| c.lease.as_str()).collect();
    assert_eq!(
        leases.len(),
        claims.len(),
        "each claim has its own lease token"
    );
}

/// Eight claimers on four handles race for sixty deliveries: each is held by exactly one.
/// Then every lease expires and the next round claims every delivery again, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claimers_never_share_a_live_lease_and_expired_leases_are_claimed_again() {
    let (_backend, _org, handles) = setup().await;
    for round in 1..=ROUNDS {
        // Leases of the previous round (taken at (round-1)*ROUND_MS, lasting ROUND_MS/2) have
        // expired by now: the whole queue is claimable again.
        let claims = claim_everything(&handles, round * ROUND_MS).await;
        assert_each_claimed_once(&claims, round);
        // While the leases are live nobody gets anything.
        let again = claim_everything(&handles, round * ROUND_MS + ROUND_MS / 4).await;
        assert!(
            again.is_empty(),
            "round {round}: claimed under a live lease"
        );
    }
}

fn delivered(claim: &ClaimedDelivery, at: Millis) -> AttemptOutcome {
    AttemptOutcome {
        delivery_id: claim.id,
        lease: claim.lease.clone(),
        attempt: Attempt {
            attempt_number: claim.attempt_count + 1,
            attempted_at: at,
            status_code: Some(200),
            duration_ms: 1,
            error: None,
            response_body: None,
        },
        next: AfterAttempt::Delivered,
        disable_endpoint: None,
    }
}

/// The stale claims' outcomes race against new claims of the same deliveries (leases
/// expired). For each delivery exactly one side wins: either the stale outcome landed first
/// (delivered, so nobody claims it again) or the new claim did (the stale outcome is
/// refused: still pending, no attempt counted, the new lease kept). Never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_outcome_racing_a_new_claim_never_moves_the_new_claims_delivery() {
    let (backend, org, handles) = setup().await;
    let stale = claim_everything(&handles, ROUND_MS).await;
    assert_each_claimed_once(&stale, 1);

    let later = 3 * ROUND_MS;
    let mut recorders = Vec::new();
    for (h, chunk) in stale.chunks(stale.len().div_ceil(HANDLES)).enumerate() {
        let store = handles[h].clone();
        let chunk = chunk.to_vec();
        recorders.push(tokio::spawn(async move {
            // Outcomes one at a time, so claims interleave with them.
            for claim in &chunk {
                store
                    .record_outcomes(&[delivered(claim, later)], later)
                    .await
                    .unwrap();
            }
        }));
    }
    let reclaimed = claim_everything(&handles, later).await;
    for recorder in recorders {
        recorder.await.unwrap();
    }

    let reclaimed: HashMap<DeliveryId, &ClaimedDelivery> =
        reclaimed.iter().map(|c| (c.id, c)).collect();
    let deliveries = backend
        .store
        .list_deliveries(org, &DeliveryFilter::default(), None, 1_000)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), ENDPOINTS * DELIVERIES_PER_ENDPOINT);
    for delivery in &deliveries {
        assert_eq!(delivery.attempts.len(), 1, "every attempt is history");
        match reclaimed.get(&delivery.id) {
            Some(_) => {
                assert_eq!(
                    (delivery.status, delivery.attempt_count),
                    (DeliveryStatus::Pending, 0),
                    "a stale outcome moved delivery {} after it was claimed again",
                    delivery.id
                );
            }
            None => assert_eq!(delivery.status, DeliveryStatus::Delivered),
        }
    }
    // The new claims' outcomes land.
    let outcomes: Vec<_> = reclaimed.values().map(|c| delivered(c, later)).collect();
    backend
        .store
        .record_outcomes(&outcomes, later)
        .await
        .unwrap();
    assert_eq!(backend.store.queue_stats().await.unwrap().pending, 0);
}

/// One endpoint has hundreds of deliveries due before another's few: a claim still takes the
/// other endpoint's, both when the busy endpoint is under its cap and when it is at its cap on
/// the claiming node. (The claim used to rank only the `limit × 4` earliest due rows, which
/// 300 rows of one endpoint due first filled.)
#[tokio::test]
async fn a_deep_backlog_never_hides_another_endpoints_due_deliveries() {
    let backend = backend().await;
    let store = &backend.store;
    let org = store.create_org("backlog", 0).await.unwrap().id;
    let busy = endpoint(store, org, "https://busy.example/").await;
    let quiet = endpoint(store, org, "https://quiet.example/").await;
    queue_deliveries(store, org, busy.id, 300, 0).await;
    queue_deliveries(store, org, quiet.id, 2, 1).await;

    let count = |claims: &[ClaimedDelivery], endpoint: EndpointId| {
        claims.iter().filter(|c| c.endpoint_id == endpoint).count()
    };
    // The busy endpoint already has its cap in flight on this node: only the quiet one's.
    let claims = claim_capped(store, &[(busy.id, 4)]).await;
    assert_eq!(
        count(&claims, quiet.id),
        2,
        "the quiet endpoint's deliveries"
    );
    assert_eq!(
        count(&claims, busy.id),
        0,
        "the busy endpoint is at its cap"
    );
    store
        .release_leases(
            &claims
                .iter()
                .map(|c| (c.id, c.lease.as_str()))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();

    // Under its cap, the busy endpoint gets its cap and the quiet one still gets its own.
    let claims = claim_capped(store, &[]).await;
    assert_eq!(count(&claims, busy.id), 4);
    assert_eq!(count(&claims, quiet.id), 2);
}

/// A claim of ten with a cap of four per endpoint, `in_flight` already on the claiming node.
async fn claim_capped(store: &Store, in_flight: &[(EndpointId, u32)]) -> Vec<ClaimedDelivery> {
    claim_limited(store, 10, in_flight, &[]).await
}

/// A claim of `limit` with a default cap of four per endpoint and the endpoints' own limits.
async fn claim_limited(
    store: &Store,
    limit: u32,
    in_flight: &[(EndpointId, u32)],
    endpoint_limits: &[(EndpointId, u32)],
) -> Vec<ClaimedDelivery> {
    store
        .claim_due(&ClaimRequest {
            owner: "node",
            now: 10,
            lease_until: 10_000,
            limit,
            first_attempts: true,
            per_endpoint_limit: 4,
            in_flight,
            endpoint_limits,
            per_organization_limit: 1_000,
            in_flight_per_organization: &[],
        })
        .await
        .unwrap()
}

/// An endpoint's own limit (the dispatcher's adaptive concurrency) replaces the default cap,
/// above it or below it, and still counts what is in flight.
#[tokio::test]
async fn an_endpoints_own_limit_replaces_the_default_cap() {
    let backend = backend().await;
    let store = &backend.store;
    let org = store.create_org("limits", 0).await.unwrap().id;
    let fast = endpoint(store, org, "https://fast.example/").await;
    let slow = endpoint(store, org, "https://slow.example/").await;
    let plain = endpoint(store, org, "https://plain.example/").await;
    for hook in [&fast, &slow, &plain] {
        queue_deliveries(store, org, hook.id, 12, 0).await;
    }
    let count = |claims: &[ClaimedDelivery], endpoint: EndpointId| {
        claims.iter().filter(|c| c.endpoint_id == endpoint).count()
    };
    let claims = claim_limited(store, 30, &[(fast.id, 2)], &[(fast.id, 9), (slow.id, 1)]).await;
    assert_eq!(
        count(&claims, fast.id),
        7,
        "its own limit of 9, two in flight"
    );
    assert_eq!(count(&claims, slow.id), 1, "its own limit of 1");
    assert_eq!(count(&claims, plain.id), 4, "the default cap");
}

/// Organisation A has three endpoints with ten deliveries each, all due before organisation
/// B's five. A claim of six takes turns: three of A's (one per endpoint) and three of B's,
/// where the earliest-due order alone would give A all six. Counting what is already in
/// flight, the organisation with the fewest goes first; and an organisation at its cap gets
/// nothing while the other still gets its own. (The per-organisation counts are the claiming
/// node's own, like the per-endpoint ones, so there is no cross-claimer race to check here;
/// the lease re-check is covered by the racing-claimers check above.)
#[tokio::test]
async fn organisations_take_turns_for_short_slots_and_none_exceeds_its_share() {
    let backend = backend().await;
    let store = &backend.store;
    let busy_org = store.create_org("busy", 0).await.unwrap().id;
    let quiet_org = store.create_org("quiet", 0).await.unwrap().id;
    let mut busy_endpoints = Vec::new();
    for e in 0..3 {
        let endpoint = endpoint(store, busy_org, &format!("https://busy{e}.example/")).await;
        queue_deliveries(store, busy_org, endpoint.id, 10, 0).await;
        busy_endpoints.push(endpoint.id);
    }
    let quiet = endpoint(store, quiet_org, "https://quiet.example/").await;
    queue_deliveries(store, quiet_org, quiet.id, 5, 1).await;

    let of_org =
        |claims: &[ClaimedDelivery], org: OrgId| claims.iter().filter(|c| c.org_id == org).count();
    let claim_and_release = |limit: u32, per_org: u32, in_flight: Vec<(OrgId, u32)>| async move {
        let claims = store
            .claim_due(&ClaimRequest {
                owner: "node",
                now: 10,
                lease_until: 10_000,
                limit,
                first_attempts: true,
                per_endpoint_limit: 100,
                in_flight: &[],
                endpoint_limits: &[],
                per_organization_limit: per_org,
                in_flight_per_organization: &in_flight,
            })
            .await
            .unwrap();
        store
            .release_leases(
                &claims
                    .iter()
                    .map(|c| (c.id, c.lease.as_str()))
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        claims
    };

    // Nothing in flight: turns, and A's turns go round its endpoints.
    let claims = claim_and_release(6, 100, Vec::new()).await;
    assert_eq!(of_org(&claims, busy_org), 3, "{claims:?}");
    assert_eq!(of_org(&claims, quiet_org), 3, "{claims:?}");
    for endpoint in &busy_endpoints {
        assert_eq!(
            claims.iter().filter(|c| c.endpoint_id == *endpoint).count(),
            1,
            "one per endpoint of the busy organisation: {claims:?}"
        );
    }

    // A already has four in flight: B catches up first (all five of its), then A gets one.
    let claims = claim_and_release(6, 100, vec![(busy_org, 4)]).await;
    assert_eq!(of_org(&claims, quiet_org), 5, "{claims:?}");
    assert_eq!(of_org(&claims, busy_org), 1, "{claims:?}");

    // A cap of eight per organisation with A at seven: A gets one, B its five, and the rest
    // of the batch stays unclaimed rather than going over A's share.
    let claims = claim_and_release(20, 8, vec![(busy_org, 7)]).await;
    assert_eq!(of_org(&claims, busy_org), 1, "{claims:?}");
    assert_eq!(of_org(&claims, quiet_org), 5, "{claims:?}");

    // The claimed rows carry their organisation.
    let claims = claim_and_release(40, 100, Vec::new()).await;
    assert_eq!(claims.len(), 35);
    for claim in &claims {
        let expected = if claim.endpoint_id == quiet.id {
            quiet_org
        } else {
            busy_org
        };
        assert_eq!(claim.org_id, expected);
    }
}

/// The per-endpoint cap holds over every claimer of the database, not one node's claims:
/// whoever holds an endpoint's live leases, they count. Sequentially, a second node gets
/// nothing of an endpoint at its cap; racing (several handles, several tasks each, claiming
/// in small batches and never releasing), the endpoint's live leases never pass its cap,
/// however the claims interleave. Expired leases do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_endpoint_cap_holds_across_nodes() {
    let backend = backend().await;
    let store = &backend.store;
    let org = store.create_org("cluster cap", 0).await.unwrap().id;
    let hook = endpoint(store, org, "https://capped.example/").await;
    queue_deliveries(store, org, hook.id, 40, 0).await;
    let handles = backend.handles(HANDLES).await;

    // One node takes the cap (in batches of two); another node, knowing nothing of those
    // attempts, gets nothing more.
    let mut first = Vec::new();
    loop {
        let claimed = handles[0].claim_due(&capped("a", 10)).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        first.extend(claimed);
    }
    assert_eq!(first.len(), CAP as usize, "the first node takes the cap");
    let second = handles[1].claim_due(&capped("b", 10)).await.unwrap();
    assert!(
        second.is_empty(),
        "a second node passed the cap: {second:?}"
    );

    // Once those leases have expired (at 1,010), claimers race at 2,000: together they hold
    // at most the cap.
    let mut tasks = Vec::new();
    for (h, handle) in handles.iter().enumerate() {
        for t in 0..TASKS_PER_HANDLE {
            let handle = handle.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = 0;
                let owner = format!("n{h}-{t}");
                for _ in 0..10 {
                    mine += handle
                        .claim_due(&capped(&owner, 2_000))
                        .await
                        .unwrap()
                        .len();
                }
                mine
            }));
        }
    }
    let mut held = 0;
    for task in tasks {
        held += task.await.unwrap();
    }
    assert_eq!(
        held, CAP as usize,
        "the endpoint's leases over every node, after the expired ones were taken again"
    );
}

/// The cap of [`the_endpoint_cap_holds_across_nodes`].
const CAP: u32 = 5;

/// A claim of two at `now` under [`CAP`], leased for a second, knowing of nothing in flight.
fn capped(owner: &str, now: Millis) -> ClaimRequest<'_> {
    ClaimRequest {
        per_endpoint_limit: CAP,
        lease_until: now + 1_000,
        ..request(owner, now, 2)
    }
}
