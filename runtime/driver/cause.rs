//! A failed gRPC stream, in a word: the [`InterruptCause`] the session and its owner
//! see, with the transport's own text kept as the detail (for the logs, and for a
//! session still greeting, whose close reason must tell a TLS failure from a refusal).

use tonic::{Code, Status};

use crate::error::{InterruptCause, chain, sources};
use crate::session::Broken;
use crate::tls::tls_failure;

/// The status message of a node that takes no new streams because it drains.
pub(crate) const SHUTTING_DOWN: &str = "node is shutting down";

/// How long a status message may be in a cause before it is cut.
const MESSAGE_CHARS: usize = 80;

/// Where a stream failed: on the initiator's dial, or once it carried frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum At {
    Dial,
    Stream,
}

/// Why `status` ended a stream, typed, with its whole text as the detail.
/// The detail is logged at `debug`, in the session's span.
pub(crate) fn broken(status: &Status, at: At) -> Broken {
    let cause = classify(status, at);
    let detail = describe(status);
    tracing::debug!(%cause, %detail, "stream failed");
    Broken {
        cause,
        detail: Some(detail),
    }
}

fn classify(status: &Status, at: At) -> InterruptCause {
    if let Some(failure) = tls_failure(status) {
        return InterruptCause::Tls(failure);
    }
    if at == At::Dial && never_connected(status) {
        return InterruptCause::Unreachable;
    }
    if let Some(cause) = from_sources(status) {
        // A dial whose connection opened and then broke is `ConnectionLost`: the peer
        // took the connection (a TLS server dialled in plaintext does).
        return cause;
    }
    match (status.code(), at) {
        // What the peer's service answers while its node drains (runtime/node/server/service.rs).
        (Code::Unavailable, _) if status.message() == SHUTTING_DOWN => {
            InterruptCause::PeerShuttingDown
        }
        (Code::Unavailable, At::Dial) => InterruptCause::Unreachable,
        (Code::Unavailable, At::Stream) => InterruptCause::ConnectionLost,
        (Code::Cancelled, _) => InterruptCause::StreamReset,
        (code, _) => InterruptCause::Status {
            code: format!("{code:?}"),
            message: cut(status.message()),
        },
    }
}

/// Whether a dial failed before any connection existed: nobody listening, no route, no
/// such host, the connect deadline passed. tonic wraps what failed while connecting
/// (TCP, name resolution, TLS) in its `ConnectError`; TLS is told apart first.
fn never_connected(status: &Status) -> bool {
    use std::io::ErrorKind;
    sources(status).any(|error| {
        error.is::<tonic::ConnectError>()
            || error.is::<tonic::TimeoutExpired>()
            || error.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::TimedOut
                        | ErrorKind::HostUnreachable
                        | ErrorKind::NetworkUnreachable
                        | ErrorKind::AddrNotAvailable
                )
            })
    })
}

/// What the error chain under the status says: h2's and the socket's own errors.
fn from_sources(status: &Status) -> Option<InterruptCause> {
    for error in sources(status) {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            if h2.is_go_away() || h2.is_io() {
                return Some(InterruptCause::ConnectionLost);
            }
            if h2.is_reset() {
                return Some(InterruptCause::StreamReset);
            }
        }
        if error.downcast_ref::<std::io::Error>().is_some() {
            return Some(InterruptCause::ConnectionLost);
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && (hyper.is_closed() || hyper.is_incomplete_message() || hyper.is_timeout())
        {
            return Some(InterruptCause::ConnectionLost);
        }
    }
    None
}

fn cut(message: &str) -> String {
    match message.char_indices().nth(MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message.to_owned(),
    }
}

/// A failed gRPC call, with the chain of its causes.
fn describe(status: &Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&chain(source));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_stream_is_a_reset_and_a_dead_connection_is_lost_or_unreachable() {
        let reset = Status::from_error(Box::new(h2::Error::from(h2::Reason::CANCEL)));
        assert_eq!(classify(&reset, At::Stream), InterruptCause::StreamReset);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let mut lost = Status::unknown("error reading a body from connection");
        lost.set_source(std::sync::Arc::new(io));
        assert_eq!(classify(&lost, At::Stream), InterruptCause::ConnectionLost);
        let refused = Status::unavailable("tcp connect error");
        assert_eq!(classify(&refused, At::Dial), InterruptCause::Unreachable);
        let draining = Status::unavailable(SHUTTING_DOWN);
        assert_eq!(
            classify(&draining, At::Dial),
            InterruptCause::PeerShuttingDown
        );
    }

    #[test]
    fn a_dial_that_never_connected_is_unreachable_and_one_that_broke_is_lost() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let mut refused = Status::unavailable("error trying to connect");
        refused.set_source(std::sync::Arc::new(tonic::ConnectError(Box::new(io))));
        assert_eq!(classify(&refused, At::Dial), InterruptCause::Unreachable);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let mut broke = Status::unavailable("connection closed");
        broke.set_source(std::sync::Arc::new(io));
        assert_eq!(classify(&broke, At::Dial), InterruptCause::ConnectionLost);
    }

    #[test]
    fn a_rustls_error_under_the_status_is_a_typed_tls_failure() {
        let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let mut status = Status::unavailable("error trying to connect");
        status.set_source(std::sync::Arc::new(tonic::ConnectError(Box::new(io))));
        assert_eq!(
            classify(&status, At::Dial),
            InterruptCause::Tls(crate::error::TlsFailure::UntrustedPeer)
        );
        assert!(
            describe(&status).contains("UnknownIssuer"),
            "{}",
            describe(&status)
        );
    }

    #[test]
    fn any_other_status_is_named_by_its_code_and_cut_short() {
        let status = Status::internal("x".repeat(500));
        let InterruptCause::Status { code, message } = classify(&status, At::Stream) else {
            panic!("an Internal status is a Status cause");
        };
        assert_eq!(code, "Internal");
        assert_eq!(message.chars().count(), MESSAGE_CHARS + 1);
        let broken = broken(&status, At::Stream);
        assert!(broken.detail.is_some_and(|d| d.len() >= 500));
    }
}
