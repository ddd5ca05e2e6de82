//! The standard gRPC services a node serves on its own port, beside `duologue.v1.Duologue`:
//!
//! - `grpc.health.v1.Health` (tonic-health): `SERVING` for the whole server (`""`) and
//!   for `duologue.v1.Duologue` while the node is up, `NOT_SERVING` from the moment
//!   [`Node::shutdown`](crate::Node::shutdown) begins. The server keeps answering through
//!   the drain (new sessions are refused, health says `NOT_SERVING`) and stops only when
//!   the drain is over.
//! - `grpc.reflection.v1` and `grpc.reflection.v1alpha` (tonic-reflection): the
//!   descriptors of `duologue.v1` (session.proto and control.proto, comments included,
//!   from the descriptor set `build.rs` writes) and of the health service, so grpcurl or
//!   grpcio's reflection client can list and describe them without the `.proto` files.
//!
//! ```text
//!  NodeBuilder::start ── Standard::new: SERVING
//!  Node::shutdown ────── draining: NOT_SERVING; sessions get their farewell
//!       drain over ───── stop: the server stops accepting, health watchers end
//! ```
//!
//! Neither service ever authenticates, so their streams do not take places among the
//! node's unauthenticated streams: the pre-authentication layer routes them by request
//! path ([`is_standard_path`]) to a small cap of their own
//! ([`AdmissionConfig::max_standard_streams`](crate::settings::AdmissionConfig::max_standard_streams)).

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};

use crate::driver::transport::stubs::duologue_server::SERVICE_NAME as DUOLOGUE;

/// The encoded descriptor set of `proto/duologue/v1/*.proto`, written by `build.rs`.
const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/duologue.v1.bin"));

/// The services whose health the node reports: the whole server, and the session service.
const REPORTED: [&str; 2] = ["", DUOLOGUE];

/// The health a node reports and the signal that stops its server. Cheap to clone; all
/// clones are the same.
#[derive(Clone, Debug)]
pub(crate) struct Standard {
    health: HealthReporter,
    /// Cancelled when the drain is over (or the node dropped): the server stops.
    stop: CancellationToken,
    /// Cancelled once the server dropped its listener: no new connection is taken.
    closed: CancellationToken,
}

impl Standard {
    /// Health `SERVING` for the server and the session service.
    pub(crate) async fn new() -> Self {
        let standard = Self {
            health: HealthReporter::new(),
            stop: CancellationToken::new(),
            closed: CancellationToken::new(),
        };
        standard.report(ServingStatus::Serving).await;
        standard
    }

    /// `router` with the health and reflection services added.
    pub(crate) fn add_to<L>(&self, router: Router<L>) -> Router<L> {
        let health = HealthService::from_health_reporter(self.health.clone());
        // The descriptor sets are build.rs's and tonic-health's, checked by a test below.
        let valid = "the descriptor sets of duologue.v1 and grpc.health.v1 are valid";
        let v1 = reflection().build_v1().expect(valid);
        let v1alpha = reflection().build_v1alpha().expect(valid);
        router
            .add_service(tonic_health::pb::health_server::HealthServer::new(health))
            .add_service(v1)
            .add_service(v1alpha)
    }

    /// The node began to shut down: health says `NOT_SERVING` from now on.
    pub(crate) async fn draining(&self) {
        self.report(ServingStatus::NotServing).await;
    }

    /// Dropped with the server's stream of connections: says the listener is closed.
    pub(crate) fn listening(&self) -> tokio_util::sync::DropGuard {
        self.closed.clone().drop_guard()
    }

    /// Resolves when the server should stop.
    pub(crate) fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    /// The drain is over: the server stops accepting, and every health `Watch` stream
    /// ends (with `OK`, after which a client retries and finds the port closed), so that
    /// the server's graceful shutdown does not wait for them. The watchers end only once
    /// the listener is closed (within `within`): a client that asks again at once must not
    /// find the server still accepting, with the health already cleared (`NOT_FOUND`).
    pub(crate) async fn stop(&self, within: std::time::Duration) {
        self.stop_now();
        let _ = tokio::time::timeout(within, self.closed.cancelled()).await;
        let mut health = self.health.clone();
        for service in REPORTED {
            health.clear_service_status(service).await;
        }
    }

    /// Stops the server without ending health watchers: for a node dropped, whose server
    /// task is aborted anyway.
    pub(crate) fn stop_now(&self) {
        self.stop.cancel();
    }

    async fn report(&self, status: ServingStatus) {
        for service in REPORTED {
            self.health.set_service_status(service, status).await;
        }
    }
}

/// A reflection service builder with the descriptors of `duologue.v1` and the health
/// service (and, as it adds by default, of reflection itself).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Whether a request (by its gRPC path, `/package.Service/Method`) is for a standard
/// service.
pub(crate) fn is_standard_path(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_sets_build_both_reflection_services() {
        reflection().build_v1().unwrap();
        reflection().build_v1alpha().unwrap();
    }

    #[test]
    fn standard_paths_are_health_and_reflection_only() {
        assert!(is_standard_path("/grpc.health.v1.Health/Check"));
        assert!(is_standard_path("/grpc.health.v1.Health/Watch"));
        assert!(is_standard_path(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(is_standard_path(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_standard_path("/duologue.v1.Duologue/Converse"));
        assert!(!is_standard_path("/grpc.health.v1.HealthX/Check"));
    }
}
