//! Talking to systemd (SPEC §8): readiness, status, stopping, and a watchdog
//! fed only by proof that the daemon really answers. Outside systemd
//! (no `NOTIFY_SOCKET`) every call is a no-op.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sd_notify::NotifyState;
use ttm_proto::v1::HelloRequest;
use ttm_proto::v1::ttm_client::TtmClient;

use crate::shutdown::Shutdown;

/// Sends `states` to the service manager; a failure is logged, not fatal.
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// How often to feed the watchdog: half of `WATCHDOG_USEC`, if set for us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// Feeds the watchdog every `every`, but only after a real `Hello` round
/// trip over the daemon's own socket and a round trip through the blocking
/// pool both succeed: a wedged accept loop, service or file-work pool stops
/// the pings and lets systemd restart the daemon. Ends when the daemon
/// begins to stop, whose closing socket would only fail the probe.
pub async fn watchdog(socket: PathBuf, every: Duration, stop: Shutdown) {
    tokio::select! {
        () = feed(&socket, every) => {}
        () = stop.wait() => {}
    }
}

async fn feed(socket: &Path, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, probe(socket)).await {
            Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "watchdog probe failed; not feeding the watchdog")
            }
            Err(_) => tracing::warn!("watchdog probe timed out; not feeding the watchdog"),
        }
    }
}

async fn probe(socket: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = ttm_proto::channel::connect(socket).await?;
    TtmClient::new(channel)
        .hello(HelloRequest::default())
        .await?;
    tokio::task::spawn_blocking(|| ()).await?;
    Ok(())
}
