//! The initiator's way to its peer: one stream per dial, redialled with capped, jittered
//! exponential backoff while the session is interrupted.

use std::time::{Duration, Instant};

use tonic::Streaming;
use tonic::transport::Channel;

use super::cause::{self, At};
use super::outbound::OutboundFrames;
use super::task::Driver;
use super::{DriverConfig, StreamStart};
use crate::auth::VerifiedCert;
use crate::driver::transport::WireFrame;
use crate::driver::transport::stubs::duologue_client::DuologueClient;
use crate::error::InterruptCause;
use crate::session::{Broken, Session};

impl Driver {
    /// Initiator: the next stream to the peer, dialled again (after a backoff) until one
    /// opens; `None` when the session is over first, or when the first dial failed.
    pub(super) async fn redial(
        &mut self,
        client: DuologueClient<Channel>,
        verified: Option<VerifiedCert>,
    ) -> Option<StreamStart> {
        loop {
            let first = self.session_ref.is_none();
            if !first {
                let delay = backoff(self.attempt, &self.cx.config);
                self.attempt = self.attempt.saturating_add(1);
                self.drive_until(tokio::time::sleep(delay)).await?;
                self.shared
                    .with(|s| s.begin_resume(rand::random(), Instant::now()));
            }
            match self.dial(client.clone()).await? {
                Ok(inbound) => {
                    // The connection under the stream passed the TLS verifier, which
                    // recorded what it accepted: the session's proofs are bound to that.
                    if let Some(verified) = &verified {
                        self.shared.with(|s| s.tls_verified(verified.get()));
                    }
                    return Some(StreamStart {
                        inbound,
                        peeked: None,
                    });
                }
                Err(cause) => {
                    self.shared.with(|s| s.stream_broken(cause, Instant::now()));
                    self.handle_events();
                    if first || self.shared.read(Session::is_closed) {
                        return None;
                    }
                }
            }
        }
    }

    /// Opens one stream to the peer; `None` when the session ended meanwhile.
    async fn dial(
        &mut self,
        mut client: DuologueClient<Channel>,
    ) -> Option<Result<Streaming<WireFrame>, Broken>> {
        let outbound = OutboundFrames::current(self.shared.clone());
        let timeout = self.cx.config.handshake_timeout;
        // The core's handshake timer only starts mattering once frames flow; until the
        // peer's response headers arrive, this bound stands in for it.
        // Boxed: the call's future is several KiB (tonic's channel and encoder), and the
        // driver's task is as large as its largest await, so unboxed every session would
        // carry it for its whole life, idle or not; boxed, it lives only while dialling.
        let opened = Box::pin(tokio::time::timeout(
            timeout,
            client.converse(outbound.requests()),
        ));
        match self.drive_until(opened).await? {
            Ok(Ok(response)) => Some(Ok(response.into_inner())),
            Ok(Err(status)) => Some(Err(cause::broken(&status, At::Dial))),
            Err(_) => Some(Err(InterruptCause::NoAnswer { after: timeout }.into())),
        }
    }
}

/// Capped exponential backoff with equal jitter: never a tight loop, never in lockstep.
pub(crate) fn backoff(attempt: u32, config: &DriverConfig) -> Duration {
    let ceiling = config
        .reconnect_base
        .saturating_mul(1 << attempt.min(16))
        .min(config.reconnect_max);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_its_base_to_its_cap_and_jitters_the_upper_half() {
        let defaults = crate::config::NodeConfig::default();
        let config = DriverConfig {
            close_linger: defaults.close_linger,
            reconnect_base: defaults.reconnect_base,
            reconnect_max: defaults.reconnect_max,
            handshake_timeout: Duration::from_secs(1),
        };
        assert_eq!(
            (config.reconnect_base, config.reconnect_max),
            (Duration::from_millis(25), Duration::from_secs(1))
        );
        for attempt in 0..40 {
            let ceiling =
                (Duration::from_millis(25) * 2u32.pow(attempt.min(16))).min(Duration::from_secs(1));
            let delays: Vec<Duration> = (0..200).map(|_| backoff(attempt, &config)).collect();
            for delay in &delays {
                assert!(
                    *delay >= ceiling / 2 && *delay <= ceiling,
                    "attempt {attempt}: {delay:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
            // Jittered: two redialling sessions do not move in lockstep.
            assert!(delays.iter().any(|d| *d != delays[0]), "attempt {attempt}");
        }
    }
}
