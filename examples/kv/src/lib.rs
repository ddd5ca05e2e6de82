//! A key-value store actor: get, put, and watch a key for changes, served over duologue
//! sessions to any process of the cluster.

use std::collections::HashMap;

use duologue::{Fanout, Mailbox, Protocol, SessionId, SessionRef, SessionSignal};
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
pub struct Store;

/// The store's values, and the sessions watching each key.
#[derive(Default)]
pub struct Data {
    values: HashMap<String, Vec<u8>>,
    watchers: HashMap<String, Fanout<SessionId, KvResponse>>,
}

impl Data {
    /// Serves one request that came on `session`.
    fn answer(&mut self, request: Kind, session: SessionRef) -> Value {
        let key = match request {
            Kind::Get(Get { key }) => key,
            Kind::Watch(Watch { key }) => {
                self.watchers.entry(key.clone()).or_default().insert(session.id(), session);
                key
            }
            Kind::Put(Put { key, value }) => {
                let change = KvResponse::from(Changed { key: key.clone(), value: value.clone() });
                // A watcher too far behind is let go: its session ends, telling it why.
                self.watchers.entry(key.clone()).or_default().publish(&change, None);
                return Value { value: self.values.insert(key.clone(), value), key };
            }
        };
        Value { value: self.values.get(&key).cloned(), key }
    }
}

impl Actor for Store {
    type Msg = Mailbox<Kv>;
    type State = Data;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, (): ()) -> Result<Data, ActorProcessingErr> {
        Ok(Data::default())
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
            // A watcher's session is over: stop telling it.
            Mailbox::Signal(SessionSignal::Closed { session, .. }) => {
                data.watchers.values_mut().for_each(|w| drop(w.remove(&session.id())));
            }
            // Other signals; an empty request (a call of it is answered `no_reply`).
            _ => {}
        }
        Ok(())
    }
}
