//! Reaching ttmd: the socket path, the gRPC channel over it, and turning the
//! daemon's statuses into failures with connection context.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Uri};
use tonic::{Response, Status};
use ttm_proto::paths::ClientTree;
use ttm_proto::v1::HelloRequest;
use ttm_proto::v1::ttm_client::TtmClient;

use crate::autostart;
use crate::cli::Global;
use crate::exit::{self, Exit, Failure, error_chain};

/// Responses (a long list, a big state) may exceed tonic's 4 MiB default;
/// the daemon is trusted, so the cap only guards against nonsense.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// The generated client, stamping every request with our versions.
pub type Client = TtmClient<InterceptedService<Channel, VersionHeaders>>;

/// Adds `ttm-api-version` and `ttm-client-version` to every request, so a
/// daemon of another API generation refuses with a message naming both
/// (the handshake costs no extra round trip), and `ttm-root-bin` when the
/// user named a tree, so a daemon serving another tree refuses instead of
/// writing there.
#[derive(Debug, Clone)]
pub struct VersionHeaders {
    root: Option<MetadataValue<tonic::metadata::Binary>>,
}

impl VersionHeaders {
    fn new() -> Self {
        let tree = tree();
        let root = tree.explicit.then(|| {
            use std::os::unix::ffi::OsStrExt;
            let abs = std::path::absolute(&tree.root).unwrap_or(tree.root);
            MetadataValue::from_bytes(abs.as_os_str().as_bytes())
        });
        VersionHeaders { root }
    }
}

impl Interceptor for VersionHeaders {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let meta = req.metadata_mut();
        meta.insert(
            ttm_proto::headers::API_VERSION,
            MetadataValue::from(ttm_proto::API_VERSION),
        );
        meta.insert(
            ttm_proto::headers::CLIENT_VERSION,
            MetadataValue::from_static(ttm_proto::VERSION),
        );
        if let Some(root) = &self.root {
            meta.insert_bin(ttm_proto::headers::ROOT, root.clone());
        }
        Ok(req)
    }
}

/// A connected daemon. Clones share the connection (for the tasks of
/// `top`).
#[derive(Debug, Clone)]
pub struct Daemon {
    /// The generated client over the socket's channel.
    client: Client,
    /// Where it was reached, for messages.
    socket: PathBuf,
}

/// The tree this invocation means, decided once at start-up.
static TREE: OnceLock<ClientTree> = OnceLock::new();

/// How long a request may wait for its answer (`--rpc-timeout`); `None`
/// waits for ever.
static DEADLINE: OnceLock<Option<Duration>> = OnceLock::new();

/// Sets the request deadline from `--rpc-timeout` seconds (0: none).
pub fn init_deadline(seconds: u64) {
    let _ = DEADLINE.set((seconds > 0).then(|| Duration::from_secs(seconds)));
}

/// The request deadline: 30 s unless `--rpc-timeout` said otherwise.
pub fn deadline() -> Option<Duration> {
    *DEADLINE.get_or_init(|| Some(Duration::from_secs(30)))
}

/// The failure for a daemon that took the connection but did not answer
/// within the deadline: as good as unreachable for this call (exit 7).
pub fn no_answer(socket: &Path, waited: Duration) -> Failure {
    Failure::new(
        Exit::Unreachable,
        format!(
            "ttmd at {} did not answer within {}s; it may be overloaded or stuck \
             (see its log: journalctl --user -u ttmd), or allow longer with \
             --rpc-timeout / TTM_RPC_TIMEOUT",
            socket.display(),
            waited.as_secs()
        ),
    )
}

/// Works out which tree is meant (`TETRA_DIR`, or the bash `TTM_DIR` /
/// `TTM_TXNS_DIR`); a contradiction is a usage error.
pub fn init_tree() -> Result<(), Failure> {
    let tree = ttm_proto::paths::client_tree().map_err(|m| Failure::new(Exit::Usage, m))?;
    let _ = TREE.set(tree);
    Ok(())
}

/// The tree this invocation means.
pub fn tree() -> ClientTree {
    TREE.get().cloned().unwrap_or_else(|| ClientTree {
        root: ttm_proto::paths::tetra_dir(),
        explicit: false,
    })
}

/// `--socket` / `$TTM_SOCKET`, else the path the daemon computes itself.
pub fn socket_path(global: &Global) -> PathBuf {
    match &global.socket {
        Some(path) if !path.as_os_str().is_empty() => path.clone(),
        _ => ttm_proto::paths::default_socket(&tree().root),
    }
}

/// Connects to the daemon at `socket`, starting one if none listens there.
pub async fn connect(socket: &Path) -> Result<Daemon, Failure> {
    connect_with(socket, !autostart::disabled()).await
}

/// Connects to the daemon at `socket`; starts one first only if `autostart`.
pub async fn connect_with(socket: &Path, autostart: bool) -> Result<Daemon, Failure> {
    let stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(err) if nobody_listens(&err) => {
            if !autostart {
                return Err(Failure::new(
                    Exit::Unreachable,
                    format!(
                        "ttmd is not running at {}; start it with `ttmd` or \
                         `systemctl --user start ttmd.socket`, or unset \
                         TTM_NO_AUTOSTART to let ttmctl start it",
                        socket.display()
                    ),
                ));
            }
            autostart::start(socket).await?
        }
        Err(err) => {
            return Err(Failure::new(
                Exit::Unreachable,
                format!(
                    "cannot connect to ttmd at {}: {err}; check that path and its \
                     permissions, or name another socket with --socket or TTM_SOCKET",
                    socket.display()
                ),
            ));
        }
    };
    trust(&stream, socket).map_err(|message| Failure::new(Exit::Unreachable, message))?;
    // A daemon whose accept queue still takes connections while it is
    // stuck never completes the HTTP/2 handshake.
    let channel = match deadline() {
        Some(limit) => tokio::time::timeout(limit, channel(socket, stream))
            .await
            .map_err(|_| no_answer(socket, limit))??,
        None => channel(socket, stream).await?,
    };
    Ok(Daemon {
        client: TtmClient::with_interceptor(channel, VersionHeaders::new())
            .max_decoding_message_size(MAX_RESPONSE_BYTES),
        socket: socket.to_path_buf(),
    })
}

/// Refuses (before anything is sent) a daemon running as a uid that is
/// neither ours, nor root, nor one the user trusts in `TTM_DAEMON_UIDS`:
/// whoever can put a socket at the path would otherwise receive our
/// requests (and with them, as root, a chance to mislead root).
fn trust(stream: &UnixStream, socket: &Path) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    let theirs = stream
        .peer_cred()
        .map_err(|e| {
            format!(
                "cannot tell who serves {} ({e}); ttmctl sends nothing to an unknown daemon",
                socket.display()
            )
        })?
        .uid();
    let trusted = std::env::var("TTM_DAEMON_UIDS").unwrap_or_default();
    let listed = trusted
        .split(',')
        .any(|u| u.trim().parse::<u32>() == Ok(theirs));
    if theirs == me || theirs == 0 || listed {
        return Ok(());
    }
    Err(format!(
        "the daemon at {} runs as uid {theirs}, not as you (uid {me}) or root; ttmctl sent \
         it nothing. If that is the shared ttmd you mean to use, trust its uid with \
         TTM_DAEMON_UIDS={theirs}; otherwise remove that socket or use your own \
         (--socket / TTM_SOCKET)",
        socket.display()
    ))
}

/// A missing socket file, or a stale one whose daemon is gone.
pub fn nobody_listens(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

/// A channel whose first connection is the already-open `first` (so the
/// probe that decided about autostart is not wasted); reconnects dial anew.
async fn channel(socket: &Path, first: UnixStream) -> Result<Channel, Failure> {
    let first = Arc::new(Mutex::new(Some(first)));
    let path = socket.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let ready = first.lock().ok().and_then(|mut slot| slot.take());
        let path = path.clone();
        async move {
            let stream = match ready {
                Some(stream) => stream,
                None => {
                    let stream = UnixStream::connect(&path).await?;
                    trust(&stream, &path).map_err(io::Error::other)?;
                    stream
                }
            };
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    ttm_proto::channel::endpoint()
        .connect_with_connector(connector)
        .await
        .map_err(|err| {
            let hint = if closed_by_peer(&err) {
                CLOSED_HINT
            } else {
                ""
            };
            Failure::new(
                Exit::Unreachable,
                format!(
                    "cannot talk to ttmd at {}: {}{hint}",
                    socket.display(),
                    error_chain(&err)
                ),
            )
        })
}

/// Said when the daemon closed the connection before answering.
const CLOSED_HINT: &str = "; ttmd closed the connection before answering: it is at its \
                           connection limit (see its log; limits.connections_per_uid / \
                           limits.connections_total in ttmd.toml) or stopping; try again";

/// Whether `err` comes from the other side closing the connection.
fn closed_by_peer(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(current) = next {
        if let Some(io) = current.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        if current
            .downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_closed() || e.is_canceled() || e.is_incomplete_message())
        {
            return true;
        }
        next = current.source();
    }
    false
}

impl Daemon {
    /// Runs one RPC; a refusal becomes the failure to report.
    pub async fn call<T>(
        &mut self,
        rpc: impl AsyncFnOnce(&mut Client) -> Result<Response<T>, Status>,
    ) -> Result<T, Failure> {
        let reply = match deadline() {
            Some(limit) => tokio::time::timeout(limit, rpc(&mut self.client))
                .await
                .map_err(|_| no_answer(&self.socket, limit))?,
            None => rpc(&mut self.client).await,
        };
        match reply {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.explain(status).await),
        }
    }

    /// [`Daemon::call`] without the deadline, for a call whose length is
    /// the caller's to bound (an upload of any size).
    pub async fn call_unbounded<T>(
        &mut self,
        rpc: impl AsyncFnOnce(&mut Client) -> Result<Response<T>, Status>,
    ) -> Result<T, Failure> {
        match rpc(&mut self.client).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.explain(status).await),
        }
    }

    /// Where this daemon was reached, for messages.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The failure for a status, with what the user needs to act on it.
    pub async fn explain(&mut self, status: Status) -> Failure {
        let mut failure = exit::from_status(&status);
        if failure.unimplemented {
            failure.message = self.version_mismatch().await;
        } else if failure.exit == Exit::Unreachable {
            let hint = if closed_by_peer(&status) {
                CLOSED_HINT
            } else {
                ""
            };
            failure.message = format!(
                "{} (socket {}){hint}",
                failure.message,
                self.socket.display()
            );
        }
        failure
    }

    /// UNIMPLEMENTED means the daemon speaks another version of the API;
    /// `Hello` (which every version has) tells which, for the message.
    async fn version_mismatch(&mut self) -> String {
        let request = HelloRequest {
            client_version: ttm_proto::VERSION.to_owned(),
            api_version: ttm_proto::API_VERSION,
        };
        let hello = tokio::time::timeout(Duration::from_secs(1), self.client.hello(request)).await;
        let mine = format!(
            "ttmctl {} (API v{})",
            ttm_proto::VERSION,
            ttm_proto::API_VERSION
        );
        match hello {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                format!(
                    "ttmd {} (API v{}, pid {}) is older or newer than {mine} and does not \
                     understand this request; restart ttmd (stop pid {}; the next ttmctl \
                     command starts a matching one)",
                    reply.daemon_version, reply.api_version, reply.pid, reply.pid
                )
            }
            _ => format!(
                "ttmd at {} is older or newer than {mine} and does not understand this \
                 request; restart ttmd (the next ttmctl command starts a matching one)",
                self.socket.display()
            ),
        }
    }
}
