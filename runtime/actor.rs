//! What reaches an actor: the messages and signals of its sessions
//! ([`mailbox`]: `Inbound`, `SessionSignal`, delivery into a ractor mailbox, the typed
//! `Mailbox<P>`), a session's messages read as a stream without an actor of one's own
//! ([`inbox`]), and one actor's messages fanned out to many sessions ([`fanout`]); who
//! owns a session, whatever its mailbox ([`owner`]).

pub(crate) mod fanout;
pub(crate) mod inbox;
pub(crate) mod mailbox;
pub(crate) mod owner;
