//! A node hosting shopping carts: `carts-node --name NAME --secret-file FILE
//! [--gossip-listen ADDR --seed ADDR]`. Every cart lives on the member that owns its
//! shard; all members hosting `cart` share the shards.

fn main() -> std::process::ExitCode {
    duologue::cli::NodeMain::new("carts-node").entity(carts::KIND, carts::start).run()
}
