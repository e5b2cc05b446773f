//! A `signal-server` started in the test's own process, shared by the tests.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use signal_server::Config;
use swarm_loadgen::{ServerKind, Target};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A server on a free loopback port, stopped by [`Server::stop`].
pub struct Server {
    pub target: Target,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            signal_server::run(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .expect("server ran cleanly");
        });
        let target = Target {
            kind: ServerKind::Swarm,
            addr,
            // The server runs in this process, so this process's memory is the server's.
            pid: Some(std::process::id()),
            peers: None,
            label: "swarm".into(),
        };
        Self { target, stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
    }
}
