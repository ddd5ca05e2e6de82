//! duologue beside ractor_cluster in one process. ractor_cluster turns on ractor's
//! `cluster` feature, under which ractor implements `ractor::Message` only for types that
//! say so; duologue's `ractor-cluster` feature makes its mailbox types say so. Here a
//! ractor_cluster node server, a ractor actor of ractor_cluster's kind and two duologue
//! nodes run side by side, and a typed duologue call crosses between the two nodes.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use duologue::{Mailbox, Node, Protocol, Secret};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeServer, RactorMessage};

const WAIT: Duration = Duration::from_secs(10);

/// A request: a number to double.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Double {
    /// The number.
    #[prost(uint64, tag = "1")]
    pub n: u64,
}

impl prost::Name for Double {
    const NAME: &'static str = "Double";
    const PACKAGE: &'static str = "beside.v1";
}

/// The protocol of the doubler.
pub struct Doubler;

impl Protocol for Doubler {
    type Request = Double;
    type Response = Double;
}

/// A duologue actor: doubles what it is asked, and counts for local askers.
pub struct DoublerActor;

/// Its local message: how many calls it answered.
pub struct Count(pub RpcReplyPort<u64>);

impl Actor for DoublerActor {
    type Msg = Mailbox<Doubler, Count>;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, (): ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        answered: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Mailbox::Call { request, reply, .. } => {
                *answered += 1;
                let _ = reply.send(Double { n: request.n * 2 });
            }
            Mailbox::Local(Count(port)) => {
                let _ = port.send(*answered);
            }
            _ => {}
        }
        Ok(())
    }
}

/// A ractor actor as ractor_cluster users write them (its message derives the trait).
pub struct Echo;

/// Its message.
#[derive(RactorMessage)]
pub enum EchoMsg {
    /// Answers with the same number.
    Echo(u64, RpcReplyPort<u64>),
}

impl Actor for Echo {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<EchoMsg>, (): ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<EchoMsg>,
        EchoMsg::Echo(n, port): EchoMsg,
        (): &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let _ = port.send(n);
        Ok(())
    }
}

async fn node(name: &str, listen: bool) -> Node {
    let mut builder = Node::builder()
        .name(name)
        .secret(Secret::new("beside ractor_cluster, 32 bytes!").unwrap());
    if listen {
        builder = builder.listen("127.0.0.1:0".parse().unwrap());
    }
    builder.start().await.unwrap()
}

#[tokio::test]
async fn duologue_and_ractor_cluster_share_a_process() {
    let server = NodeServer::new(
        0,
        "cookie".into(),
        "cluster-node".into(),
        "127.0.0.1".into(),
        None,
        None,
    )
    .with_listen_addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .expect("ractor_cluster node server");
    let (echo, _) = Actor::spawn(None, Echo, ()).await.unwrap();
    let echoed = ractor::call_t!(echo, EchoMsg::Echo, 1_000, 7).unwrap();
    assert_eq!(echoed, 7);

    let (a, b) = (node("a", true).await, node("b", false).await);
    let (doubler, _) = Actor::spawn(None, DoublerActor, ()).await.unwrap();
    a.register("doubler", &doubler).unwrap();
    let addr = a.local_addr().unwrap().to_string();
    let (remote, _inbox) = tokio::time::timeout(WAIT, b.connect::<Doubler>((&addr, "doubler")).inbox())
        .await
        .expect("connect in time")
        .expect("connect");
    let doubled = remote.call(Double { n: 21 }, WAIT).await.unwrap();
    assert_eq!(doubled.n, 42);
    let answered = ractor::call_t!(doubler, |port| Mailbox::Local(Count(port)), 1_000).unwrap();
    assert_eq!(answered, 1);

    b.shutdown().await;
    a.shutdown().await;
    for actor in [doubler.get_cell(), echo.get_cell(), server.get_cell()] {
        actor.stop(None);
    }
}
