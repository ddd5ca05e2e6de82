//! A sharded shopping cart: one entity per cart id, of kind `cart`, wherever the
//! cluster places it. A node hosts the kind with [`duologue::NodeBuilder::entity`] (or
//! `NodeMain::entity`, as `carts-node` does) and [`start`]; any node, or a process that
//! knows one node, reaches a cart with `node.entity::<Carts>("cart", id)`.
//!
//! A cart holds its lines in memory: when its node dies, the cart starts again elsewhere,
//! empty (entity state that outlives its node is the next step).

use std::collections::BTreeMap;

use duologue::{Entity, Node, Protocol};
use proto::cart_reply;
use proto::cart_request::{self, Kind};
use proto::{Add, CartReply, CartRequest, Checkout, Contents, Get, Line, Refused, Remove};
use ractor::{Actor, ActorProcessingErr, ActorRef};

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

/// Starts the cart `id` on `node`: the kind's constructor.
///
/// # Errors
/// Why the actor could not spawn.
pub async fn start(node: Node, id: String) -> Result<ActorRef<Entity<Carts>>, String> {
    let state = Cart { id, node: node.identity().name.clone(), lines: BTreeMap::new() };
    let (cart, _) = Actor::spawn(None, CartActor, state).await.map_err(|e| e.to_string())?;
    Ok(cart)
}

/// The cart entity.
pub struct CartActor;

/// One cart.
pub struct Cart {
    id: String,
    node: String,
    lines: BTreeMap<String, u32>,
}

impl Cart {
    /// Applies `request`; the answer.
    fn apply(&mut self, request: CartRequest) -> CartReply {
        let checked_out = match request.kind {
            Some(Kind::Add(Add { item, quantity })) => {
                if item.is_empty() || quantity == 0 {
                    return refused("add an item with a name, at least one");
                }
                let held = self.lines.entry(item).or_default();
                *held = held.saturating_add(quantity);
                false
            }
            Some(Kind::Remove(Remove { item, quantity })) => {
                if let Some(held) = self.lines.get_mut(&item) {
                    *held = held.saturating_sub(quantity);
                    if *held == 0 {
                        self.lines.remove(&item);
                    }
                }
                false
            }
            Some(Kind::Get(Get {})) => false,
            Some(Kind::Checkout(Checkout {})) => true,
            None => return refused("an empty request"),
        };
        let contents = Contents {
            cart: self.id.clone(),
            lines: self
                .lines
                .iter()
                .map(|(item, &quantity)| Line { item: item.clone(), quantity })
                .collect(),
            node: self.node.clone(),
            checked_out,
        };
        if checked_out {
            self.lines.clear();
        }
        contents.into()
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
                cart.apply(message);
            }
            Entity::Call { request, reply, .. } => {
                // The caller may have given up waiting; the cart changed all the same.
                let _ = reply.send(cart.apply(request));
            }
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
        let mut cart = Cart { id: "c".into(), node: "n".into(), lines: BTreeMap::new() };
        cart.apply(Add { item: "pear".into(), quantity: 2 }.into());
        cart.apply(Add { item: "apple".into(), quantity: 1 }.into());
        cart.apply(Remove { item: "pear".into(), quantity: 1 }.into());
        let Some(cart_reply::Kind::Contents(held)) = cart.apply(Checkout {}.into()).kind else {
            panic!("contents expected");
        };
        assert_eq!(describe(&held), "c@n checked out apple x1, pear x1");
        let Some(cart_reply::Kind::Contents(after)) = cart.apply(Get {}.into()).kind else {
            panic!("contents expected");
        };
        assert_eq!(describe(&after), "c@n (empty)");
        assert!(matches!(
            cart.apply(Add { item: String::new(), quantity: 1 }.into()).kind,
            Some(cart_reply::Kind::Refused(_))
        ));
    }
}
