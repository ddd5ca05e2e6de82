//! Links to peer nodes: one lazily dialled HTTP/2 connection per peer address, carrying
//! every session to that peer as its own stream.

use std::collections::HashMap;
use std::sync::Mutex;

use tonic::transport::{Channel, Endpoint};

use crate::config::NodeConfig;
use crate::error::ConnectError;
use crate::wire::pb::duologue_client::DuologueClient;

/// The connections this node dialled, by peer address.
#[derive(Debug, Default)]
pub(crate) struct Links {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Links {
    /// A client on the one connection to `addr`, dialled on first use.
    pub(crate) fn client(
        &self,
        addr: &str,
        config: &NodeConfig,
    ) -> Result<DuologueClient<Channel>, ConnectError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let channel = endpoint(addr, config)?.connect_lazy();
                channels.insert(addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(DuologueClient::new(channel)
            .max_decoding_message_size(config.frame_limit())
            .max_encoding_message_size(config.frame_limit()))
    }
}

fn endpoint(addr: &str, config: &NodeConfig) -> Result<Endpoint, ConnectError> {
    let invalid = |reason: String| ConnectError::InvalidAddress {
        addr: addr.to_owned(),
        reason,
    };
    if addr.contains("://") {
        return Err(invalid("give host:port, without a scheme".into()));
    }
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .http2_adaptive_window(false)
        .max_frame_size(config.max_frame_size))
}
