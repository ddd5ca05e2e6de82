//! What a node binary adds to the library's errors: the flags that fix them. The library
//! names settings (`NodeBuilder::tls`); a command line names its own flags.

use crate::error::{AdminGuard, ConnectError, NodeError, TlsFailure};

/// `error` as a command line reports it: the library's text, then the flags that fix
/// it, when some do.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> String {
    match flags_for(error) {
        Some(flags) => format!("{error} [flags: {flags}]"),
        None => error.to_string(),
    }
}

/// The flags that fix `error`, if any do.
fn flags_for(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if let Some(error) = error.downcast_ref::<NodeError>() {
        return match error {
            NodeError::PlaintextListen { .. } => {
                Some("--tls-cert FILE --tls-key FILE, or --insecure-plaintext")
            }
            NodeError::NotClustered => Some("--gossip-listen ADDR"),
            NodeError::GossipUnspecified { .. } => Some("--gossip-advertise ADDR"),
            NodeError::AdminUnguarded {
                guard: AdminGuard::Token,
                ..
            } => Some("--metrics-token-file FILE, or --insecure-metrics"),
            NodeError::AdminUnguarded {
                guard: AdminGuard::Tls,
                ..
            } => Some("--metrics-tls, or --insecure-plaintext"),
            _ => None,
        };
    }
    if let Some(ConnectError::Tls { failure, .. }) = error.downcast_ref::<ConnectError>() {
        return match failure {
            TlsFailure::ClientCertificateRequired => {
                Some("--tls-client-cert FILE --tls-client-key FILE")
            }
            TlsFailure::UntrustedPeer | TlsFailure::PlaintextToTls => Some("--tls-ca FILE"),
            TlsFailure::WrongName => Some("--tls-domain NAME"),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_error_gets_the_flags_that_fix_it() {
        let error = NodeError::PlaintextListen {
            addr: "0.0.0.0:7000".parse().unwrap(),
        };
        let text = explain(&error);
        assert!(text.starts_with(&error.to_string()), "{text}");
        assert!(text.ends_with("[flags: --tls-cert FILE --tls-key FILE, or --insecure-plaintext]"));
        let other = NodeError::Cluster("no".into());
        assert_eq!(explain(&other), other.to_string());
    }
}
