//! A sharded shopping cart: one entity per cart id, of kind `cart`, wherever the
//! cluster places it. A node hosts the kind with [`duologue::NodeBuilder::durable_entity`]
//! (or `NodeMain::durable_entity`, as `carts-node` does) and [`start`]; any node, or a
//! process that knows one node, reaches a cart with `node.entity::<Carts>("cart", id)`.
//!
//! A cart keeps its lines in the node's store (`--state sqlite:PATH` or
//! `--state postgres://...`) as a [`CartState`]: a change is answered only once the store
//! committed it, so when the cart's node dies the cart starts again on another node with
//! its lines. [`start_in_memory`] hosts carts on a node without a store instead (as
//! `duologue node` does without `--state`): their lines are gone with their node.

use duologue::state::{Durable, StateError};
use duologue::wire::Fault;
use duologue::{Entity, Node, Protocol};
use proto::cart_reply;
use proto::cart_request::{self, Kind};
use proto::{Add, CartReply, CartRequest, Checkout, Contents, Get, Line, Refused, Remove};
use ractor::{Actor, ActorProcessingErr, ActorRef};

pub use proto::CartState;

/// The messages of `proto/carts/v1/carts.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/carts.v1.rs"));
}

duologue::oneof!(CartRequest, kind: cart_request::Kind {
    Add(Add), Remove(Remove), Get(Get), Checkout(Checkout)
});
duologue::oneof!(CartReply, kind: cart_reply::Kind { Contents(Contents), Refused(Refused) });

/// The cart's protocol.
pub struct Carts;

impl Protocol for Carts {
    type Request = CartRequest;
    type Response = CartReply;
}

/// The entity kind's name.
pub const KIND: &str = "cart";

/// Starts the cart `id` on `node` with its lines as the store has them: the kind's
/// constructor for [`duologue::NodeBuilder::durable_entity`].
///
/// # Errors
/// Why the actor could not spawn.
pub async fn start(
    node: Node,
    id: String,
    lines: Durable<CartState>,
) -> Result<ActorRef<Entity<Carts>>, String> {
    spawn(Cart { id, node: node.identity().name.clone(), lines: Lines::Stored(lines) }).await
}

/// Starts the cart `id` on `node`, empty, its lines kept in memory only: the kind's
/// constructor for [`duologue::NodeBuilder::entity`] on a node without a store.
///
/// # Errors
/// Why the actor could not spawn.
pub async fn start_in_memory(node: Node, id: String) -> Result<ActorRef<Entity<Carts>>, String> {
    let lines = Lines::Memory(CartState::default());
    spawn(Cart { id, node: node.identity().name.clone(), lines }).await
}

async fn spawn(cart: Cart) -> Result<ActorRef<Entity<Carts>>, String> {
    let (cart, _) = Actor::spawn(None, CartActor, cart).await.map_err(|e| e.to_string())?;
    Ok(cart)
}

/// The cart entity.
pub struct CartActor;

/// One cart: its id, the node it runs on, and its lines.
pub struct Cart {
    id: String,
    node: String,
    lines: Lines,
}

/// Where a cart keeps its lines.
enum Lines {
    /// In the node's store: a change outlives the node once written.
    Stored(Durable<CartState>),
    /// In the actor: gone with the node.
    Memory(CartState),
}

impl Lines {
    fn get(&self) -> &CartState {
        match self {
            Self::Stored(durable) => durable.get(),
            Self::Memory(lines) => lines,
        }
    }

    /// Keeps `lines`, committed to the store first when the cart has one.
    async fn set(&mut self, lines: CartState) -> Result<(), StateError> {
        match self {
            Self::Stored(durable) => durable.set(lines).await,
            Self::Memory(kept) => {
                *kept = lines;
                Ok(())
            }
        }
    }
}

impl Cart {
    /// Applies `request`; the answer, once what it changed is written. A request that
    /// changes nothing (a get, a refusal) writes nothing.
    ///
    /// # Errors
    /// Why the store did not take the change: the cart is as it was.
    async fn answer(&mut self, request: CartRequest) -> Result<CartReply, StateError> {
        let mut lines = self.lines.get().clone();
        let reply = lines.apply(request, &self.id, &self.node);
        if lines != *self.lines.get() {
            self.lines.set(lines).await?;
        }
        Ok(reply)
    }
}

impl CartState {
    /// Applies `request` to the lines (kept in item order); the answer of cart `cart` on
    /// `node`.
    pub fn apply(&mut self, request: CartRequest, cart: &str, node: &str) -> CartReply {
        let checked_out = match request.kind {
            Some(Kind::Add(Add { item, quantity })) => {
                if item.is_empty() || quantity == 0 {
                    return refused("add an item with a name, at least one");
                }
                match self.find(&item) {
                    Ok(at) => {
                        let held = &mut self.lines[at].quantity;
                        *held = held.saturating_add(quantity);
                    }
                    Err(at) => self.lines.insert(at, Line { item, quantity }),
                }
                false
            }
            Some(Kind::Remove(Remove { item, quantity })) => {
                if let Ok(at) = self.find(&item) {
                    let held = &mut self.lines[at].quantity;
                    *held = held.saturating_sub(quantity);
                    if *held == 0 {
                        self.lines.remove(at);
                    }
                }
                false
            }
            Some(Kind::Get(Get {})) => false,
            Some(Kind::Checkout(Checkout {})) => true,
            None => return refused("an empty request"),
        };
        let contents = Contents {
            cart: cart.to_owned(),
            lines: self.lines.clone(),
            node: node.to_owned(),
            checked_out,
        };
        if checked_out {
            self.lines.clear();
        }
        contents.into()
    }

    /// Where `item`'s line is, or would go.
    fn find(&self, item: &str) -> Result<usize, usize> {
        self.lines.binary_search_by(|line| line.item.as_str().cmp(item))
    }
}

fn refused(reason: &str) -> CartReply {
    Refused { reason: reason.into() }.into()
}

#[cfg_attr(feature = "ractor-async-trait", ractor::async_trait)]
impl Actor for CartActor {
    type Msg = Entity<Carts>;
    type State = Cart;
    type Arguments = Cart;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        cart: Cart,
    ) -> Result<Cart, ActorProcessingErr> {
        Ok(cart)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        cart: &mut Cart,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Entity::Cast { message, .. } => {
                if let Err(error) = cart.answer(message).await {
                    tracing::warn!(cart = %cart.id, %error, "a cast's change was not written");
                }
            }
            // The caller may have given up waiting: what was written stays written.
            Entity::Call { request, reply, .. } => match cart.answer(request).await {
                Ok(answer) => {
                    let _ = reply.send(answer);
                }
                Err(error) => {
                    let message = format!("cart {}: the change was not written: {error}", cart.id);
                    let _ = reply.fail(Fault { code: "state".into(), message });
                }
            },
            Entity::Local(never) => match never {},
        }
        Ok(())
    }
}

/// `contents` as one line: `CART@NODE item xN, ...` (or `(empty)`).
pub fn describe(contents: &Contents) -> String {
    let lines: Vec<String> =
        contents.lines.iter().map(|l| format!("{} x{}", l.item, l.quantity)).collect();
    let lines = if lines.is_empty() { "(empty)".to_owned() } else { lines.join(", ") };
    let checkout = if contents.checked_out { " checked out" } else { "" };
    format!("{}@{}{checkout} {lines}", contents.cart, contents.node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cart_adds_removes_and_checks_out() {
        let mut cart = CartState::default();
        let mut apply = |request: CartRequest| cart.apply(request, "c", "n");
        apply(Add { item: "pear".into(), quantity: 2 }.into());
        apply(Add { item: "apple".into(), quantity: 1 }.into());
        apply(Remove { item: "pear".into(), quantity: 1 }.into());
        let Some(cart_reply::Kind::Contents(held)) = apply(Checkout {}.into()).kind else {
            panic!("contents expected");
        };
        assert_eq!(describe(&held), "c@n checked out apple x1, pear x1");
        let Some(cart_reply::Kind::Contents(after)) = apply(Get {}.into()).kind else {
            panic!("contents expected");
        };
        assert_eq!(describe(&after), "c@n (empty)");
        assert!(matches!(
            apply(Add { item: String::new(), quantity: 1 }.into()).kind,
            Some(cart_reply::Kind::Refused(_))
        ));
    }

    #[test]
    fn only_a_change_changes_the_state() {
        let mut cart = CartState::default();
        cart.apply(Add { item: "fig".into(), quantity: 3 }.into(), "c", "n");
        let before = cart.clone();
        for request in [
            Get {}.into(),
            Add { item: "fig".into(), quantity: 0 }.into(),
            Remove { item: "kiwi".into(), quantity: 1 }.into(),
            CartRequest { kind: None },
        ] {
            cart.apply(request, "c", "n");
            assert_eq!(cart, before, "nothing to write");
        }
        cart.apply(Remove { item: "fig".into(), quantity: 5 }.into(), "c", "n");
        assert_eq!(cart, CartState::default(), "a line at 0 is gone");
    }
}
