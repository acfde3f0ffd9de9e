//! The one place where daemon errors become gRPC statuses (SPEC §10).

use std::io::ErrorKind;

use tonic::{Code, Status};

use crate::core::Error;

/// Maps an error to its status; the message is the error's own text, which
/// already says what went wrong and what to do.
pub fn to_status(err: Error) -> Status {
    let code = match &err {
        Error::Unknown(_) => Code::NotFound,
        Error::Malformed(_) => Code::InvalidArgument,
        Error::Refused(_) => Code::FailedPrecondition,
        Error::Conflict(_) => Code::Aborted,
        Error::NotAllowed(_) => Code::PermissionDenied,
        Error::OverLimit(_) => Code::ResourceExhausted,
        Error::Io { source, .. } => io_code(source),
        // A file in the tree the daemon cannot use: the request cannot be
        // served until someone fixes the file.
        Error::Corrupt { .. } => Code::FailedPrecondition,
    };
    if code == Code::Internal || code == Code::Unavailable || code == Code::ResourceExhausted {
        tracing::warn!(error = %err, "request failed");
    }
    Status::new(code, err.to_string())
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
        ];
        for (err, code) in cases {
            assert_eq!(to_status(err).code(), code);
        }
    }
}
