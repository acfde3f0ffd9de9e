//! The one place where daemon errors become gRPC statuses (SPEC §10).

use std::io::ErrorKind;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::core::Error;

/// Maps an error to its status; the message is the error's own text, which
/// already says what went wrong and what to do.
pub fn to_status(err: Error) -> Status {
    let code = code(&err);
    // A stopping daemon ending its streams is expected, not worth a warning.
    let noteworthy = matches!(
        code,
        Code::Internal | Code::Unavailable | Code::ResourceExhausted
    ) && !matches!(err, Error::ShuttingDown | Error::LeaseBusy(_));
    if noteworthy {
        tracing::warn!(error = %err, "request failed");
    }
    // The code alone is ambiguous for these; the marker gives each its own
    // meaning in ttmctl: "wrong daemon" (exit 7), "stopping" (a follower
    // resumes after the restart), busy (exit 10) and a wait that ran out
    // (exit 11, SPEC §17), coordination unavailable (exit 12).
    let marker = match err {
        Error::WrongTree(_) => Some(ttm_proto::headers::WRONG_TREE),
        Error::ShuttingDown => Some(ttm_proto::headers::SHUTTING_DOWN),
        Error::LeaseBusy(_) => Some(ttm_proto::headers::LEASE_BUSY),
        Error::WaitTimedOut(_) => Some(ttm_proto::headers::WAIT_TIMEOUT),
        Error::CoordinationUnavailable(_) => Some(ttm_proto::headers::NO_COORDINATION),
        _ => None,
    };
    let mut status = Status::new(code, err.to_string());
    if let Some(marker) = marker {
        status.metadata_mut().insert(
            ttm_proto::headers::ERROR,
            MetadataValue::from_static(marker),
        );
    }
    status
}

/// tonic answers a request body it cannot decode with INTERNAL, which the
/// API documents as a bug in ttmd; it is the client's fault, so such an
/// answer (a headers-only one, as every refused request is) is rewritten to
/// INVALID_ARGUMENT with a message that says what to do.
pub fn fix_decode_error(headers: &mut http::HeaderMap) {
    const TONIC_SAYS: &str = "failed to decode Protobuf message";
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() != Code::Internal || !status.message().starts_with(TONIC_SAYS) {
        return;
    }
    let fixed = Status::invalid_argument(format!(
        "the request is not a valid ttm.v1 message ({}); build the client from \
         proto/ttm/v1/ttm.proto of this ttmd's version",
        status.message()
    ));
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if fixed.add_header(headers).is_err() {
        tracing::warn!("could not rewrite a decode error: {}", status.message());
    }
}

/// The gRPC code of each kind of error (SPEC §10).
fn code(err: &Error) -> Code {
    match err {
        Error::Unknown(_) => Code::NotFound,
        Error::Malformed(_) => Code::InvalidArgument,
        Error::Refused(_) => Code::FailedPrecondition,
        // Not this host's to change: run it on the home host.
        Error::HomedElsewhere(_) => Code::FailedPrecondition,
        // The request cannot be served until someone fixes the link.
        Error::UnsafeLink(_) => Code::FailedPrecondition,
        Error::Conflict(_) | Error::Fenced(_) => Code::Aborted,
        // Not a race (ABORTED) but a key that names another request.
        Error::RequestIdReused(_) => Code::AlreadyExists,
        // Busy is the holder's state, not the caller's fault or a conflict
        // of guards; a timed-out wait is the caller's own deadline.
        Error::LeaseBusy(_) => Code::Unavailable,
        Error::WaitTimedOut(_) => Code::DeadlineExceeded,
        // Like a tree that cannot be written: try again once etcd (or the
        // home host) is back; the marker tells ttmctl to exit 12.
        Error::CoordinationUnavailable(_) => Code::Unavailable,
        Error::NotAllowed(_) => Code::PermissionDenied,
        Error::OverLimit(_) | Error::StateTooLarge(_) => Code::ResourceExhausted,
        Error::UploadIncomplete(_) => Code::InvalidArgument,
        Error::Io { source, .. } => io_code(source),
        // A file in the tree the daemon cannot use: the request cannot be
        // served until someone fixes the file.
        Error::Corrupt { .. } | Error::UnsafePath(_) => Code::FailedPrecondition,
        Error::WrongTree(_) | Error::ApiMismatch(_) => Code::FailedPrecondition,
        Error::ShuttingDown => Code::Unavailable,
        // Like EROFS from a write: the tree, not the request, must change.
        Error::ReadOnlyTree(_) => Code::Unavailable,
        Error::Gone(_) => Code::NotFound,
        Error::FellBehind(_) => Code::DataLoss,
        Error::Bug(_) => Code::Internal,
    }
}

fn io_code(err: &std::io::Error) -> Code {
    match err.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => {
            Code::ResourceExhausted
        }
        ErrorKind::NotFound => Code::NotFound,
        _ => Code::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_errors_keep_the_os_message() {
        let full = Error::io(
            "appending to",
            "/t/events.ndjson",
            std::io::Error::from_raw_os_error(28),
        );
        let s = to_status(full);
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(
            s.message().contains("/t/events.ndjson") && s.message().contains("No space"),
            "{}",
            s.message()
        );
        let ro = Error::io(
            "writing",
            "/t/state.json",
            std::io::Error::from_raw_os_error(30),
        );
        assert_eq!(to_status(ro).code(), Code::Unavailable);
        let denied = Error::io(
            "writing",
            "/t/state.json",
            std::io::Error::from_raw_os_error(13),
        );
        assert_eq!(to_status(denied).code(), Code::Unavailable);
    }

    #[test]
    fn refusals_map_one_to_one() {
        let cases = [
            (Error::Unknown("x".into()), Code::NotFound),
            (Error::invalid("x"), Code::InvalidArgument),
            (Error::Refused("x".into()), Code::FailedPrecondition),
            (Error::Conflict("x".into()), Code::Aborted),
            (Error::NotAllowed("x".into()), Code::PermissionDenied),
            (Error::OverLimit("x".into()), Code::ResourceExhausted),
            (Error::StateTooLarge("x".into()), Code::ResourceExhausted),
            (Error::UploadIncomplete("x".into()), Code::InvalidArgument),
            (Error::WrongTree("x".into()), Code::FailedPrecondition),
            (Error::ApiMismatch("x".into()), Code::FailedPrecondition),
            (Error::ShuttingDown, Code::Unavailable),
            (Error::ReadOnlyTree("x".into()), Code::Unavailable),
            (Error::UnsafePath("x".into()), Code::FailedPrecondition),
            (Error::Gone("x".into()), Code::NotFound),
            (Error::FellBehind("x".into()), Code::DataLoss),
            (Error::Bug("x".into()), Code::Internal),
            (
                Error::CoordinationUnavailable("x".into()),
                Code::Unavailable,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(to_status(err).code(), code);
        }
    }

    #[test]
    fn only_a_wrong_tree_and_a_shutdown_carry_a_marker() {
        let marker = |s: &Status| {
            s.metadata()
                .get(ttm_proto::headers::ERROR)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let wrong = to_status(Error::WrongTree("x".into()));
        assert_eq!(
            marker(&wrong).as_deref(),
            Some(ttm_proto::headers::WRONG_TREE)
        );
        assert_eq!(
            marker(&to_status(Error::ShuttingDown)).as_deref(),
            Some(ttm_proto::headers::SHUTTING_DOWN)
        );
        assert_eq!(
            marker(&to_status(Error::CoordinationUnavailable("x".into()))).as_deref(),
            Some(ttm_proto::headers::NO_COORDINATION)
        );
        assert_eq!(marker(&to_status(Error::ApiMismatch("x".into()))), None);
        assert_eq!(marker(&to_status(Error::Refused("x".into()))), None);
        let disk = Error::io("appending to", "/t", std::io::Error::from_raw_os_error(30));
        assert_eq!(marker(&to_status(disk)), None, "read-only tree: no resume");
    }
}
