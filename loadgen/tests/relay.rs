//! The relay scenario against a real `signal-server` started in this process on a loopback
//! port: every signal must arrive with its latency recorded, and signals the server refuses
//! must show up as lost.

mod common;

use std::time::Duration;

use common::Server;
use signal_server::Config;
use swarm_loadgen::relay::{self, RelayOptions, RelayReport};

fn options(rate: f64, timeout: Duration) -> RelayOptions {
    RelayOptions {
        peers: 20,
        room_size: 4,
        rounds: 3,
        payload_bytes: 200,
        rate,
        connect_concurrency: 8,
        source_addrs: Vec::new(),
        phase_timeout: timeout,
        run_id: swarm_loadgen::run_id(),
    }
}

/// 20 peers in 5 rooms of 4, 3 rounds: each peer sends 3 signals to each of 3 room mates.
const EXPECTED_SIGNALS: usize = 20 * 3 * 3;

fn assert_complete(report: &RelayReport) {
    assert_eq!(report.joined, 20, "every peer joins: {report:?}");
    assert_eq!(report.first_join_error, None);
    assert_eq!(report.discoveries_expected, 5 * 4 * 3);
    assert_eq!(
        report.discovered, report.discoveries_expected,
        "welcome and joined name every room mate"
    );
    assert_eq!(report.expected, EXPECTED_SIGNALS);
    assert_eq!(report.sent, EXPECTED_SIGNALS);
    assert_eq!(report.received, EXPECTED_SIGNALS, "every signal arrives");
    assert_eq!(report.lost(), 0);
    assert_eq!(report.refused, 0, "no refusals: {:?}", report.first_refusal);
    assert_eq!(report.unreadable, 0);
    assert_eq!(report.closed_early, 0);
    let latency = report.latency.expect("latencies recorded");
    assert_eq!(latency.count, EXPECTED_SIGNALS, "one latency per signal");
    assert!(latency.p50 > Duration::ZERO && latency.p50 <= latency.p99);
    assert!(latency.p99 <= latency.max && latency.max < Duration::from_secs(5));
    let join = report.join_latency.expect("join latencies recorded");
    assert_eq!(join.count, 20);
    assert!(report.joins_per_sec() > 0.0);
    assert!(report.relayed_per_sec() > 0.0);
    assert!(report.rss_before_kib.is_some() && report.rss_joined_kib.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signal_between_room_mates_arrives_with_its_latency() {
    let server = Server::start(Config::default()).await;
    let report = relay::run(&server.target, &options(0.0, Duration::from_secs(20)))
        .await
        .expect("scenario runs");
    assert_complete(&report);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_relay_spreads_the_signals_over_time() {
    let server = Server::start(Config::default()).await;
    // 180 signals at 200 per second: the last ones go out about 0.9 s after the first.
    let report = relay::run(&server.target, &options(200.0, Duration::from_secs(20)))
        .await
        .expect("scenario runs");
    assert_complete(&report);
    assert!(
        report.relay_elapsed >= Duration::from_millis(600),
        "paced at 200/s, took only {:?}",
        report.relay_elapsed
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_the_server_refuses_are_reported_lost() {
    // Every 200-byte payload is over this frame limit: the server answers `too-large`.
    let server = Server::start(Config {
        max_frame_len: 100,
        ..Config::default()
    })
    .await;
    let report = relay::run(&server.target, &options(0.0, Duration::from_secs(2)))
        .await
        .expect("scenario runs");
    assert_eq!(report.joined, 20);
    assert_eq!(report.sent, EXPECTED_SIGNALS);
    assert_eq!(report.received, 0);
    assert_eq!(report.lost(), EXPECTED_SIGNALS);
    assert_eq!(report.refused, EXPECTED_SIGNALS, "one refusal per signal");
    assert!(
        report
            .first_refusal
            .as_deref()
            .is_some_and(|why| why.starts_with("too-large")),
        "{:?}",
        report.first_refusal
    );
    assert_eq!(report.latency, None);
    server.stop().await;
}
