//! gRPC health: tonic-health's service, except that `Watch` of a service
//! nobody registered streams SERVICE_UNKNOWN and stays open, as the health
//! protocol says, instead of ending with NOT_FOUND (which tells a client to
//! retry in a loop).

use std::pin::Pin;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use crate::shutdown::Shutdown;

type Answers = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

/// The health service the daemon serves.
#[derive(Debug)]
pub struct Checker {
    inner: HealthService,
    stop: Shutdown,
}

/// The reporter to set statuses with, and the service to serve; unknown
/// services' watches end when `stop` is triggered.
pub fn service(stop: Shutdown) -> (HealthReporter, HealthServer<Checker>) {
    let reporter = HealthReporter::new();
    let inner = HealthService::from_health_reporter(reporter.clone());
    (reporter, HealthServer::new(Checker { inner, stop }))
}

#[tonic::async_trait]
impl Health for Checker {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Answers;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Answers>, Status> {
        let asked = request.get_ref().clone();
        match self.inner.watch(Request::new(asked)).await {
            Ok(known) => Ok(Response::new(Box::pin(known.into_inner()) as Answers)),
            Err(e) if e.code() == Code::NotFound => Ok(Response::new(self.unknown())),
            Err(e) => Err(e),
        }
    }
}

impl Checker {
    /// SERVICE_UNKNOWN, then nothing until the client leaves or the daemon
    /// stops.
    fn unknown(&self) -> Answers {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let first = HealthCheckResponse {
                status: ServingStatus::ServiceUnknown as i32,
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            tokio::select! {
                () = stop.wait() => {}
                () = tx.closed() => {}
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}
