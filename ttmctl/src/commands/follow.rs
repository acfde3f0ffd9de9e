//! Following across daemon restarts (SPEC §17): `events --follow`,
//! `status --follow` and `watch` reconnect when ttmd goes away and, for
//! events, resume from the next `seq`, so a script waiting on another
//! script's work is not cut off by a `systemctl restart ttmd` or an
//! upgrade. They end only on the outcome, on `--timeout`, or on an error
//! a restart does not explain (the transaction was removed, access was
//! refused, …).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::{Status, Streaming};
use ttm_proto::v1::events_response::Kind;
use ttm_proto::v1::{EventsRequest, EventsResponse, WatchRequest, WatchResponse};

use crate::connect::{self, Daemon};
use crate::exit::{Exit, Failure};

/// ttmd sends a heartbeat on an idle stream every 10 s by default; this
/// much silence means the connection is dead even if the socket says
/// nothing (a daemon frozen, a connection half-open).
const SILENCE: Duration = Duration::from_secs(45);

/// The first wait before a reconnect; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Whether a stream that ended with `status` may go on after a reconnect:
/// the connection broke (tonic's own status, with a cause), or ttmd said
/// it is stopping. Anything else ttmd said is its answer.
pub fn restart_explains(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
        || status
            .metadata()
            .get(ttm_proto::headers::ERROR)
            .is_some_and(|v| v == ttm_proto::headers::SHUTTING_DOWN)
}

/// Says once per outage, on a terminal only, that the follow is waiting
/// for ttmd (scripts' logs stay clean; the exit code tells them the end).
fn note(text: &str) {
    let mut stderr = std::io::stderr();
    if stderr.is_terminal() {
        let _ = writeln!(stderr, "{text}");
    }
}

/// Dials ttmd until it answers `call`, waiting longer between tries up to
/// [`BACKOFF_MAX`]. Never starts a daemon: the one that went away is
/// being restarted by whoever runs it (systemd, a person).
async fn redial<T>(
    socket: &Path,
    mut call: impl AsyncFnMut(&mut Daemon) -> Result<T, Failure>,
) -> Result<(Daemon, T), Failure> {
    let mut wait = BACKOFF_MIN;
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(BACKOFF_MAX);
        let mut daemon = match connect::connect_with(socket, false).await {
            Ok(daemon) => daemon,
            Err(failure) if failure.exit == Exit::Unreachable => continue,
            Err(failure) => return Err(failure),
        };
        match call(&mut daemon).await {
            Ok(value) => return Ok((daemon, value)),
            Err(failure) if failure.resumable => continue,
            Err(failure) => return Err(failure),
        }
    }
}

/// A transaction's events, in `seq` order without gap or repeat, across
/// any number of daemon restarts.
pub struct EventFollow {
    socket: PathBuf,
    daemon: Daemon,
    /// The request, pinned to one transaction id (never "the active one",
    /// which may change while ttmd is away); `from_seq` moves on as
    /// events arrive.
    request: EventsRequest,
    stream: Option<Streaming<EventsResponse>>,
    /// A caught-up marker was passed on already: a resumed stream sends
    /// another, which means nothing new to the caller.
    caught_up: bool,
}

impl EventFollow {
    /// Starts following; `request.txn` must name the transaction.
    pub async fn start(
        mut daemon: Daemon,
        socket: PathBuf,
        request: EventsRequest,
    ) -> Result<EventFollow, Failure> {
        let first = request.clone();
        let stream = daemon.call(async move |c| c.events(first).await).await?;
        Ok(EventFollow {
            socket,
            daemon,
            request,
            stream: Some(stream),
            caught_up: false,
        })
    }

    /// The next event, caught-up marker or heartbeat; `None` when a
    /// stream that does not follow has ended.
    pub async fn next(&mut self) -> Result<Option<Kind>, Failure> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                self.resume().await?;
                continue;
            };
            let message = match tokio::time::timeout(SILENCE, stream.message()).await {
                Ok(message) => message,
                Err(_) => {
                    self.lost("no word from ttmd for 45 s");
                    continue;
                }
            };
            match message {
                Ok(Some(EventsResponse { kind: Some(kind) })) => {
                    if let Some(kind) = self.pass(kind) {
                        return Ok(Some(kind));
                    }
                }
                Ok(Some(_)) => {}
                // A follow ends only when we end it; the stream ending
                // first means the daemon went away.
                Ok(None) if self.request.follow => self.lost("ttmd closed the stream"),
                Ok(None) => return Ok(None),
                Err(status) if self.request.follow && restart_explains(&status) => {
                    self.lost(status.message());
                }
                Err(status) => return Err(self.daemon.explain(status).await),
            }
        }
    }

    /// Moves the resume point past an event, and drops what a resumed
    /// stream repeats: events already passed on, a second caught-up.
    fn pass(&mut self, kind: Kind) -> Option<Kind> {
        match &kind {
            Kind::Event(event) if event.seq < self.request.from_seq => return None,
            Kind::Event(event) => self.request.from_seq = event.seq + 1,
            Kind::CaughtUp(_) if self.caught_up => return None,
            Kind::CaughtUp(_) => self.caught_up = true,
            Kind::Heartbeat(_) => {}
        }
        Some(kind)
    }

    fn lost(&mut self, why: &str) {
        self.stream = None;
        note(&format!(
            "ttmctl: {why}; resuming at seq {} once ttmd is back",
            self.request.from_seq.max(1)
        ));
    }

    async fn resume(&mut self) -> Result<(), Failure> {
        let request = self.request.clone();
        let (daemon, stream) = redial(&self.socket, async |daemon| {
            let request = request.clone();
            daemon.call(async move |c| c.events(request).await).await
        })
        .await?;
        note(&format!(
            "ttmctl: reconnected to ttmd; resuming at seq {}",
            self.request.from_seq.max(1)
        ));
        self.daemon = daemon;
        self.stream = Some(stream);
        Ok(())
    }
}

/// A module's changes across daemon restarts. Changes made while ttmd was
/// away are not replayed (the feed is live only); the first change after
/// the reconnect is.
pub struct WatchFollow {
    socket: PathBuf,
    daemon: Daemon,
    request: WatchRequest,
    stream: Option<Streaming<WatchResponse>>,
}

impl WatchFollow {
    pub async fn start(
        mut daemon: Daemon,
        socket: PathBuf,
        request: WatchRequest,
    ) -> Result<WatchFollow, Failure> {
        let first = request.clone();
        let stream = daemon.call(async move |c| c.watch(first).await).await?;
        Ok(WatchFollow {
            socket,
            daemon,
            request,
            stream: Some(stream),
        })
    }

    /// The next change (heartbeats included); never ends by itself.
    pub async fn next(&mut self) -> Result<WatchResponse, Failure> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                let request = self.request.clone();
                let (daemon, stream) = redial(&self.socket, async |daemon| {
                    let request = request.clone();
                    daemon.call(async move |c| c.watch(request).await).await
                })
                .await?;
                note("ttmctl: reconnected to ttmd; changes made while it was away are not shown");
                self.daemon = daemon;
                self.stream = Some(stream);
                continue;
            };
            let why = match tokio::time::timeout(SILENCE, stream.message()).await {
                Ok(Ok(Some(change))) => return Ok(change),
                Ok(Ok(None)) => "ttmd closed the stream".to_owned(),
                Ok(Err(status)) if restart_explains(&status) => status.message().to_owned(),
                Ok(Err(status)) => return Err(self.daemon.explain(status).await),
                Err(_) => "no word from ttmd for 45 s".to_owned(),
            };
            self.stream = None;
            note(&format!("ttmctl: {why}; watching again once ttmd is back"));
        }
    }
}

/// When a `--timeout` of `seconds` that starts now runs out.
pub fn give_up_at(seconds: Option<u64>) -> Option<tokio::time::Instant> {
    seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs(s))
}

/// `next`, unless the user's `--timeout` runs out first: then exit 11
/// with `waited_for()` saying what had not happened yet.
pub async fn within<T>(
    until: Option<tokio::time::Instant>,
    next: impl Future<Output = Result<T, Failure>>,
    waited_for: impl FnOnce() -> String,
) -> Result<T, Failure> {
    let Some(until) = until else {
        return next.await;
    };
    match tokio::time::timeout_at(until, next).await {
        Ok(result) => result,
        Err(_) => Err(Failure::new(
            Exit::WaitTimedOut,
            format!("gave up waiting (--timeout): {}", waited_for()),
        )),
    }
}
