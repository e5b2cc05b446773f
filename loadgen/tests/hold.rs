//! The idle hold, with its worker processes (this package's `loadgen` binary), against a real
//! `signal-server` started in this process: every peer is held, from the given source
//! addresses, and released.

mod common;

use std::time::Duration;

use common::Server;
use signal_server::Config;
use swarm_loadgen::connect::parse_source_addrs;
use swarm_loadgen::hold::{self, HoldOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_peers_are_held_by_several_workers_and_released() {
    let server = Server::start(Config::default()).await;
    let options = HoldOptions {
        peers: 40,
        room_size: 4,
        per_process: 15,
        // Two source addresses: 20 peers each, under the server's default of 64 per address.
        source_addrs: parse_source_addrs("127.0.0.2-127.0.0.3").expect("addresses"),
        connect_concurrency: 8,
        hold: Duration::from_millis(300),
        timeout: Duration::from_secs(20),
        run_id: swarm_loadgen::run_id(),
        worker_exe: env!("CARGO_BIN_EXE_loadgen").into(),
    };
    let report = hold::run(&server.target, &options)
        .await
        .expect("hold runs");
    assert_eq!(report.workers, 3, "40 peers at most 15 per process");
    assert_eq!(report.connected, 40, "{:?}", report.first_error);
    assert_eq!(report.failed, 0);
    assert_eq!(
        report.alive, 40,
        "every peer still connected after the hold"
    );
    assert!(report.rss_per_peer_kib().is_some());
    assert!(report.projected_kib(100_000).is_some());

    server.stop().await;
}
