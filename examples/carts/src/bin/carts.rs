//! A client of the carts of a cluster it is not a member of: `carts ADDR SECRET_FILE`,
//! then one request a line on stdin, `add CART ITEM [N]`, `remove CART ITEM [N]`,
//! `get CART` or `checkout CART`; one answer a line on stdout (`CART@NODE item xN, ...`),
//! or `error: ...` when the cart could not answer. The node at ADDR routes every request
//! to the cart's owner.

use std::time::Duration;

use carts::proto::{Add, CartRequest, Checkout, Get, Remove, cart_reply};
use carts::{Carts, KIND, describe};
use duologue::{Node, Secret};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, secret] = &args[..] else {
        return Err("usage: carts ADDR SECRET_FILE, then requests on stdin".into());
    };
    let node =
        Node::builder().name("carts-client").secret(Secret::from_file(secret)?).start().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let quantity = |at: usize| words.get(at).map_or(Ok(1), |n| n.parse::<u32>());
        let (cart, request): (&str, CartRequest) = match words[..] {
            ["add", cart, item, ..] => {
                (cart, Add { item: item.into(), quantity: quantity(3)? }.into())
            }
            ["remove", cart, item, ..] => {
                (cart, Remove { item: item.into(), quantity: quantity(3)? }.into())
            }
            ["get", cart] => (cart, Get {}.into()),
            ["checkout", cart] => (cart, Checkout {}.into()),
            [] => continue,
            _ => {
                println!("error: cannot read {line:?}");
                continue;
            }
        };
        let answer = match node.entity_via::<Carts>(addr, KIND, cart) {
            Ok(cart) => {
                cart.call(request, Duration::from_secs(10)).await.map_err(|e| e.to_string())
            }
            Err(error) => Err(error.to_string()),
        };
        match answer.map(|reply| reply.kind) {
            Ok(Some(cart_reply::Kind::Contents(contents))) => println!("{}", describe(&contents)),
            Ok(Some(cart_reply::Kind::Refused(refused))) => println!("refused: {}", refused.reason),
            Ok(None) => println!("error: an empty reply"),
            Err(error) => println!("error: {error}"),
        }
    }
    node.shutdown().await;
    Ok(())
}
