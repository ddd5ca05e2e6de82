//! The short way in: a message from another node's carrier for an entity running here
//! goes from the session straight into the entity's mailbox, without passing through
//! the kind's host (one task wake-up and one mailbox less per message). Everything else
//! (a first message, an entity stopping, a shard held or moving, a message to forward)
//! takes the long way, through the host, which alone decides what runs.
//!
//! The host keeps the [`Directory`]: an entity is *open* (reachable the short way) only
//! while it runs here and every carrier message for it that took the long way has been
//! handled by the host. That keeps one sender's order: a message never overtakes, by the
//! short way, one of the same sender still in the host's mailbox. The host closes an
//! entity (under the same lock the short way sends under) before it drains or stops it,
//! so nothing reaches the short way after the entity's last message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ractor::ActorRef;

use super::message::{Entity, EntityReply};
use super::router::HostMailbox;
use crate::actor::mailbox::{Credit, Deliver, FromSession, Inbound, Mailbox, Reply, SessionSignal};
use crate::handles::remote_ref::Protocol;
use crate::handles::session_ref::{SessionRef, decode_payload};
use crate::sync::lock;
use crate::wire::TypeUrl;
use crate::wire::pb::{EntityAnswer, EntityEnvelope};

/// One entity the directory knows of.
struct Route<P: Protocol, L> {
    /// Set while the entity may be reached the short way.
    open: Option<ActorRef<Entity<P, L>>>,
    /// Carrier messages for it on their way through the host.
    through_host: u32,
    /// When the short way last delivered to it.
    used: Option<Instant>,
}

/// The entities of one kind that the short way may reach, and what it needs to know of
/// the others. Shared by the kind's host (the only one to open and close entries) and
/// its [`ShortWay`].
pub(crate) struct Directory<P: Protocol, L> {
    routes: Mutex<HashMap<Arc<str>, Route<P, L>>>,
}

impl<P: Protocol, L: Send + 'static> Directory<P, L> {
    pub(crate) fn new() -> Self {
        Self {
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// Delivers a carrier message to its entity the short way if the entity is open;
    /// otherwise counts it on its way through the host and gives it back for the host.
    fn short_way(&self, mut message: HostMailbox<P>) -> Option<HostMailbox<P>> {
        let mut routes = lock(&self.routes);
        let route = match &message {
            Mailbox::Cast { message, .. } => routes.get_mut(message.id.as_str()),
            Mailbox::Call { request, .. } => routes.get_mut(request.id.as_str()),
            _ => return Some(message),
        };
        if let Some(route) = route {
            if route.through_host == 0
                && let Some(actor) = &route.open
            {
                match deliver(actor, message) {
                    Ok(()) => {
                        route.used = Some(Instant::now());
                        return None;
                    }
                    // It stopped by itself (the host hears of it and starts it again), or
                    // the message does not decode (the host says so, typed).
                    Err(back) => {
                        message = *back;
                        route.open = None;
                    }
                }
            }
            route.through_host += 1;
            return Some(message);
        }
        let id = match &message {
            Mailbox::Cast { message, .. } => message.id.as_str(),
            Mailbox::Call { request, .. } => request.id.as_str(),
            _ => return Some(message),
        };
        routes.insert(
            Arc::from(id),
            Route {
                open: None,
                through_host: 1,
                used: None,
            },
        );
        Some(message)
    }

    /// The host handled a carrier message for `id` that took the long way. Once none
    /// is left on its way, the entity is opened to the short way if `running` (it runs
    /// here, in a shard served here).
    pub(crate) fn handled(&self, id: &str, running: Option<&ActorRef<Entity<P, L>>>) {
        let mut routes = lock(&self.routes);
        let Some(route) = routes.get_mut(id) else {
            return;
        };
        route.through_host = route.through_host.saturating_sub(1);
        if route.through_host > 0 {
            return;
        }
        match running {
            Some(actor) => route.open = Some(actor.clone()),
            None if route.open.is_none() => {
                routes.remove(id);
            }
            None => {}
        }
    }

    /// Closes the short way to `id` (the host is about to drain or stop it): what it sent
    /// before is in the entity's mailbox, what comes after takes the long way.
    pub(crate) fn close(&self, id: &str) {
        let mut routes = lock(&self.routes);
        if let Some(route) = routes.get_mut(id) {
            route.open = None;
            route.used = None;
            if route.through_host == 0 {
                routes.remove(id);
            }
        }
    }

    /// When the short way last delivered to `id`, if it did since it was opened.
    pub(crate) fn used(&self, id: &str) -> Option<Instant> {
        lock(&self.routes).get(id).and_then(|route| route.used)
    }
}

/// The owner the kind's carrier sessions deliver into: the short way when it can, the
/// host otherwise.
pub(crate) struct ShortWay<P: Protocol, L> {
    pub(crate) host: ActorRef<HostMailbox<P>>,
    pub(crate) directory: Arc<Directory<P, L>>,
}

impl<P: Protocol, L: Send + 'static> Deliver for ShortWay<P, L> {
    fn inbound(&self, inbound: Inbound) -> Result<(), ()> {
        match self
            .directory
            .short_way(HostMailbox::<P>::from_inbound(inbound))
        {
            None => Ok(()),
            Some(message) => self.host.send_message(message).map_err(drop),
        }
    }

    fn signal(&self, signal: SessionSignal) -> Result<(), ()> {
        Deliver::signal(&self.host, signal)
    }

    fn is_alive(&self) -> bool {
        Deliver::is_alive(&self.host)
    }

    fn cell(&self) -> Option<ractor::ActorCell> {
        Deliver::cell(&self.host)
    }

    fn protocol(&self) -> Option<String> {
        Deliver::protocol(&self.host)
    }
}

/// Hands a carrier message to `actor`, or gives it back (boxed: the rare way) when it
/// does not decode as a `P::Request` or the actor stopped.
fn deliver<P: Protocol, L: Send + 'static>(
    actor: &ActorRef<Entity<P, L>>,
    message: HostMailbox<P>,
) -> Result<(), Box<HostMailbox<P>>> {
    let (session, envelope, reply, credit) = match message {
        Mailbox::Cast {
            session,
            message,
            credit,
        } => (session, message, None, credit),
        Mailbox::Call {
            session,
            request,
            reply,
            credit,
        } => (session, request, Some(reply), credit),
        other => return Err(Box::new(other)),
    };
    let type_url = TypeUrl::from(envelope.type_url.as_str());
    let Ok(request) = decode_payload::<P::Request>(&type_url, &envelope.payload) else {
        return Err(Box::new(carrier_message(session, envelope, reply, credit)));
    };
    let entity = match reply {
        None => Entity::Cast {
            message: request,
            credit,
        },
        Some(reply) => Entity::Call {
            request,
            reply: EntityReply::remote(reply),
            credit,
        },
    };
    match actor.send_message(entity) {
        Ok(()) => Ok(()),
        Err(ractor::MessagingErr::SendErr(entity)) => {
            let (reply, credit) = match entity {
                Entity::Cast { credit, .. } => (None, credit),
                Entity::Call { reply, credit, .. } => (reply.into_remote(), credit),
                Entity::Local(_) => (None, Credit::none()),
            };
            Err(Box::new(carrier_message(session, envelope, reply, credit)))
        }
        // Not given back (ractor's other refusals): a call's caller is answered
        // `no_reply` as the reply drops.
        Err(error) => {
            tracing::warn!(id = %envelope.id, %error, "an entity refused a message; it is lost");
            Ok(())
        }
    }
}

/// The host's mailbox message for a carrier message: a call with its reply, else a cast.
fn carrier_message<P: Protocol>(
    session: SessionRef,
    envelope: EntityEnvelope,
    reply: Option<Reply<EntityAnswer>>,
    credit: Credit,
) -> HostMailbox<P> {
    match reply {
        Some(reply) => Mailbox::Call {
            session,
            request: envelope,
            reply,
            credit,
        },
        None => Mailbox::Cast {
            session,
            message: envelope,
            credit,
        },
    }
}
