//! Small rooms end to end: the overlay stays connected, floods reach everyone, lookups find
//! providers.

use swarm_sim::overlay::{OverlayConfig, Policy};
use swarm_sim::{Config, Report, run};

fn small(policy: Policy, churn: f64) -> Config {
    Config {
        peers: 200,
        churn,
        churn_rounds: 30,
        round_ms: 60_000,
        flood_every: 2,
        contents: 20,
        lookups_per_round: 5,
        overlay: OverlayConfig {
            policy,
            welcome: if policy == Policy::Random { 32 } else { 0 },
            ..OverlayConfig::default()
        },
        ..Config::default()
    }
}

fn assert_connected_and_reached(report: &Report) {
    assert_eq!(report.last.components, 1, "{:?}", report.last);
    assert_eq!(report.most_components_after_repair, 1);
    assert!(!report.floods.is_empty());
    for flood in &report.floods {
        assert_eq!(flood.reached, flood.alive, "{flood:?}");
    }
}

fn assert_lookups_succeed(report: &Report) {
    assert_eq!(report.lookups, 150);
    let success = report.successes as f64 / report.lookups as f64;
    assert!(success >= 0.95, "lookup success {success}");
    assert!(report.hops.iter().all(|h| *h <= 6), "{:?}", report.hops);
}

/// Lookups as the clients make them (`swarm_core::dht` routed over the mesh's links): the
/// detours around local minima make them find the provider nearly always (about 65 % without).
fn assert_routed_lookups_succeed(report: &Report) {
    assert_eq!(report.routed_lookups, 150);
    let success = report.routed_successes as f64 / report.routed_lookups as f64;
    assert!(success >= 0.95, "routed lookup success {success}");
    let limit = u32::from(swarm_core::dht::HOP_LIMIT);
    assert!(report.routed_hops.iter().all(|h| *h <= limit));
}

#[test]
fn random_neighbours_with_churn() {
    let report = run(&small(Policy::Random, 0.05));
    assert!(report.departures > 200, "{} departures", report.departures);
    assert_connected_and_reached(&report);
    assert!(report.publications > 20, "republished and replaced");
    assert_lookups_succeed(&report);
}

#[test]
fn the_real_mesh_without_churn() {
    let report = run(&small(Policy::Mesh, 0.0));
    assert_connected_and_reached(&report);
    let (min, _, max) = report.degrees;
    assert!(min >= 1 && max <= 16, "{:?}", report.degrees);
    assert_lookups_succeed(&report);
    assert_routed_lookups_succeed(&report);
}

#[test]
fn the_real_mesh_with_light_churn() {
    let report = run(&small(Policy::Mesh, 0.01));
    assert!(report.departures > 50, "{} departures", report.departures);
    assert_connected_and_reached(&report);
    assert_lookups_succeed(&report);
    assert_routed_lookups_succeed(&report);
}

/// With closest-only (XOR) neighbour choices, heavy churn removed the long links of the first
/// joiners and a room of 1,000 split along id prefixes; the mesh now dials half its
/// neighbours at random, and this passes. It takes 10 s optimised but minutes in a debug
/// build, so it is left out of `cargo test`: run
/// `cargo test --release -p swarm-sim -- --ignored`.
#[test]
#[ignore = "slow in a debug build: run with --release -- --ignored"]
fn the_real_mesh_under_heavy_churn() {
    let config = Config {
        peers: 1000,
        churn_rounds: 60,
        ..small(Policy::Mesh, 0.05)
    };
    let report = run(&config);
    assert_connected_and_reached(&report);
}

#[test]
fn runs_are_reproducible() {
    let config = Config {
        peers: 100,
        churn_rounds: 5,
        ..Config::default()
    };
    let (a, b) = (run(&config), run(&config));
    assert_eq!(a.hops, b.hops);
    assert_eq!(a.messages, b.messages);
    assert_eq!(a.floods, b.floods);
}
