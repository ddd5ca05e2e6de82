//! A key-value store actor: get, put, and watch a key for changes, served over duologue
//! sessions to any process of the cluster.
//!
//! # Watchers that do not keep up
//!
//! Each key's watchers are a [`Fanout`] (its bounds: [`Store::watchers`]), under the
//! fan-out's policy, "slow is not stuck" (see [`duologue::flow::Fanout`]). What makes a key's
//! fan-out publish is `put`s of that key, so the sessions that put it **feed** it
//! ([`Fanout::feed_from`], until their session closes): those are the sessions held back
//! (paused) while one of its watchers is behind. A session that only watches feeds
//! nothing: a slow watcher never pauses the other watchers' sessions.
//!
//! - **A watcher that reads slowly slows the writers down and misses nothing.** While it
//!   keeps reading with [`FanoutConfig::hold_lag`] changes waiting for it, the key's
//!   writers are paused: their next `put` waits until the watcher has read down to half
//!   of that (a call's timeout counts from when it is sent). The watcher gets every
//!   change, in order; it is never let go for being slow.
//! - **A watcher that stops reading holds the writers back for at most
//!   [`FanoutConfig::hold_at_most`]**; then they go on and changes pile up for it. Once it
//!   has had changes waiting and taken none for [`FanoutConfig::stuck_after`], it is let
//!   go: its session is ended with a `LimitExceeded` farewell saying it was stuck.
//! - **The hard bound:** a watcher with [`FanoutConfig::max_lag`] changes waiting (or
//!   [`FanoutConfig::max_lag_bytes`], or more than its peer's or the node's replay budgets
//!   hold) is let go at once: its session is ended, `LimitExceeded`, saying which bound
//!   (the changes still waiting for it are not sent; the protocol has no notice to send
//!   after them).
//! - **A watcher whose stream broke** is neither: the store forwards its sessions'
//!   `Interrupted` and `Resumed` signals to the fan-outs, so while it resumes it holds no
//!   one back and is not judged stuck; it gets every change in order once it has resumed.
//!
//! A client reading its changes with `InboxReceiver::next_as` (as the `kv` binary does)
//! reads every change sent to it, in order; a watcher that was let go then gets
//! `Err(NoMessage::Lost(lost))`, `lost.reason` being `LostReason::PeerEnded` with a
//! `LimitExceeded` goodbye whose detail says why (`kv watch` prints that error and exits
//! with status 1). Nothing is skipped unannounced.

use std::collections::{HashMap, HashSet};

use duologue::{
    Mailbox, Protocol, SessionRef, SessionSignal,
    flow::{Fanout, FanoutConfig},
    wire::SessionId,
};
use proto::kv_request::{self, Kind};
use proto::{Changed, Get, KvRequest, KvResponse, Put, Value, Watch};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// The messages of `proto/kv/v1/kv.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/kv.v1.rs"));
}

duologue::oneof!(KvRequest, kind: kv_request::Kind { Get(Get), Put(Put), Watch(Watch) });
duologue::oneof!(KvResponse, kind: proto::kv_response::Kind { Value(Value), Changed(Changed) });

/// The store's protocol: requests in; replies and pushed changes out.
pub struct Kv;

impl Protocol for Kv {
    type Request = KvRequest;
    type Response = KvResponse;
}

/// The store actor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Store {
    /// The bounds of each key's watchers: when a slow one holds the key's writers back,
    /// and when one that stopped reading is let go (see the [crate doc](crate)).
    pub watchers: FanoutConfig,
}

/// The store's values, the sessions watching each key, and those writing it.
#[derive(Default)]
pub struct Data {
    values: HashMap<String, Vec<u8>>,
    watchers: HashMap<String, Fanout<SessionId, KvResponse>>,
    /// The keys each session put: it feeds their fan-outs until it closes.
    writes: HashMap<SessionId, HashSet<String>>,
    config: FanoutConfig,
}

impl Data {
    /// The watchers of `key`.
    fn watchers(&mut self, key: &str) -> &mut Fanout<SessionId, KvResponse> {
        let config = self.config;
        self.watchers.entry(key.to_owned()).or_insert_with(|| Fanout::new(config))
    }

    /// Serves one request that came on `session`.
    fn answer(&mut self, request: Kind, session: SessionRef) -> Value {
        let key = match request {
            Kind::Get(Get { key }) => key,
            Kind::Watch(Watch { key }) => {
                let id = session.id();
                let writes = self.writes.get(&id).is_some_and(|keys| keys.contains(&key));
                let watchers = self.watchers(&key);
                watchers.insert(id, session);
                // A member feeds its fan-out by default; only a writer of the key does here.
                if !writes {
                    watchers.stop_feeding(id);
                }
                key
            }
            Kind::Put(Put { key, value }) => {
                let change = KvResponse::from(Changed { key: key.clone(), value: value.clone() });
                // The writer is held back, from now on, while a watcher of the key is slow.
                if self.writes.entry(session.id()).or_default().insert(key.clone()) {
                    self.watchers(&key).feed_from(&session);
                }
                // A watcher let go (at the hard bound) has its session ended at once,
                // `LimitExceeded`, when its `Behind` is dropped: it is told why.
                drop(self.watchers(&key).publish(&change, None));
                return Value { value: self.values.insert(key.clone(), value), key };
            }
        };
        Value { value: self.values.get(&key).cloned(), key }
    }

    /// `session` is over: stop telling it, and stop holding it back.
    fn gone(&mut self, session: &SessionRef) {
        let id = session.id();
        self.watchers.values_mut().for_each(|w| drop(w.remove(&id)));
        for key in self.writes.remove(&id).unwrap_or_default() {
            if let Some(watchers) = self.watchers.get_mut(&key) {
                watchers.stop_feeding(id);
            }
        }
    }
}

impl Actor for Store {
    type Msg = Mailbox<Kv>;
    type State = Data;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, (): ()) -> Result<Data, ActorProcessingErr> {
        // Checks the bounds now (a bad one panics), not at the first watch.
        drop(Fanout::<SessionId, KvResponse>::new(self.watchers));
        Ok(Data { config: self.watchers, ..Data::default() })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        data: &mut Data,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Mailbox::Call { request: KvRequest { kind: Some(kind) }, reply, session, .. } => {
                let _ = reply.send(data.answer(kind, session));
            }
            Mailbox::Cast { message: KvRequest { kind: Some(kind) }, session, .. } => {
                data.answer(kind, session);
            }
            // Not a KvRequest (a call of it was already answered with a `decode` fault).
            Mailbox::Undecodable(undecodable) => eprintln!("kv store: {undecodable}"),
            // A watcher's or writer's session is over: forget it.
            Mailbox::Signal(SessionSignal::Closed { session, .. }) => data.gone(&session),
            Mailbox::Signal(SessionSignal::Lost(lost)) => data.gone(&lost.session),
            // A watcher whose stream broke is not a slow one, until it resumes.
            Mailbox::Signal(SessionSignal::Interrupted(session, _)) => {
                data.watchers.values_mut().for_each(|w| w.interrupted(&session.id()));
            }
            Mailbox::Signal(SessionSignal::Resumed(session, _)) => {
                data.watchers.values_mut().for_each(|w| w.resumed(&session.id()));
            }
            // Other signals; an empty request (a call of it is answered `no_reply`).
            _ => {}
        }
        Ok(())
    }
}
