//! The node's gRPC server: the session service and the standard services (health,
//! reflection), behind the admission of its connections ([`admission`]), the counting of
//! unauthenticated streams ([`pre_auth`]) and, with a certificate, the node's own TLS
//! handshakes.

pub(crate) mod admission;
pub(crate) mod pre_auth;
pub(crate) mod service;
pub(crate) mod standard;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::Server;

use self::admission::{Admission, Descriptors, Port};
use self::pre_auth::{PreAuthLayer, StandardPlaces};
use self::service::Service;
use self::standard::Standard;
use super::sessions::Sessions;
use crate::config::NodeConfig;
use crate::cores::{Core, Cores};
use crate::driver::transport::stubs::duologue_server::DuologueServer;
use crate::tls::TlsAccept;

/// What the server of one node serves with.
pub(crate) struct Serving {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) listener: tokio::net::TcpListener,
    /// The connection budget it shares with the admin address.
    pub(crate) descriptors: Arc<Descriptors>,
    /// Its TLS, with a certificate.
    pub(crate) tls: Option<TlsAccept>,
    pub(crate) standard: Standard,
    pub(crate) standard_places: StandardPlaces,
    /// On a thread-per-core runtime, its cores: one server each, taking connections in
    /// turn.
    pub(crate) cores: Option<Cores>,
}

/// Serves sessions and the standard services until the standard services say the drain
/// is over: through the drain the server still answers (health with `NOT_SERVING`, new
/// sessions with a refusal), so that peers and probes learn the node is going rather than
/// find its port closed.
pub(crate) async fn serve(serving: Serving) {
    let Serving {
        sessions,
        config,
        listener,
        descriptors,
        tls,
        standard,
        standard_places,
        cores,
    } = serving;
    let listening = standard.listening();
    let incoming = Admission::new(
        listener,
        Port::Session,
        config.admission.connection_idle_timeout,
        descriptors,
    )
    // The guard goes with the stream: tonic drops it, listener and all, when it stops
    // accepting.
    .map(move |connection| {
        let _listening = &listening;
        connection
    });
    let service = DuologueServer::new(Service { sessions })
        .max_decoding_message_size(config.frame_limit())
        .max_encoding_message_size(config.frame_limit());
    let router = Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .initial_stream_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .http2_adaptive_window(Some(false))
        .max_frame_size(config.max_frame_size)
        .max_concurrent_streams(config.max_sessions_per_peer)
        .layer(PreAuthLayer::new(config.admission.clone(), standard_places))
        .add_service(service);
    let router = standard.add_to(router);
    // One server per core, each serving the connections dealt to it; without cores, one.
    // A macro, not a function: the plain and the TLS streams of connections differ in
    // type, and a function would have to name the layered router's type and bounds.
    macro_rules! serve {
        ($incoming:expr) => {
            match &cores {
                None => {
                    router
                        .serve_with_incoming_shutdown($incoming, standard.stopped())
                        .await
                }
                Some(cores) => {
                    let servers: Vec<_> = deal($incoming, cores, &standard)
                        .into_iter()
                        .map(|(core, connections)| {
                            let server = router
                                .clone()
                                .serve_with_incoming_shutdown(connections, standard.stopped());
                            AbortOnDropHandle::new(core.handle().spawn(server))
                        })
                        .collect();
                    let mut result = Ok(());
                    for server in servers {
                        if let Ok(Err(error)) = server.await {
                            result = Err(error);
                        }
                    }
                    result
                }
            }
        };
    }
    let result = match tls {
        None => serve!(incoming),
        // Handshakes done here, not in tonic, so that refusals are counted and said.
        Some(tls) => {
            let at_once = config.admission.max_connections;
            serve!(tls.incoming(incoming, at_once, |conn| Some(conn.info().remote)))
        }
    };
    if let Err(error) = result {
        tracing::error!(%error, "server stopped");
    }
}

/// Deals the connections of `incoming` to the cores in turn, until the server stops or
/// the listener ends: one stream of connections per core, each served there. The
/// listener (and what goes with it) stays with the dealer, on this core.
fn deal<T: Send + 'static>(
    incoming: impl Stream<Item = T> + Send + 'static,
    cores: &Cores,
    standard: &Standard,
) -> Vec<(Core, ReceiverStream<T>)> {
    let (feeds, streams): (Vec<_>, Vec<_>) = cores
        .all()
        .map(|core| {
            let (feed, connections) = tokio::sync::mpsc::channel(16);
            (feed, (core, ReceiverStream::new(connections)))
        })
        .unzip();
    let cores = cores.clone();
    let stopped = standard.stopped();
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        let mut stopped = std::pin::pin!(stopped);
        loop {
            let connection = tokio::select! {
                _ = &mut stopped => break,
                next = incoming.next() => match next {
                    Some(connection) => connection,
                    None => break,
                },
            };
            if feeds[cores.turn()].send(connection).await.is_err() {
                break;
            }
        }
    });
    streams
}
