//! A node hosting shopping carts: `carts-node --name NAME --secret-file FILE
//! --state sqlite:PATH [--gossip-listen ADDR --seed ADDR]`. Every cart lives on the member
//! that owns its shard; all members hosting `cart` share the shards, and keep the carts'
//! lines in the store `--state` names (one SQLite file for nodes on one host, or
//! `postgres://...`), so a cart whose node died answers from another with its lines.

fn main() -> std::process::ExitCode {
    duologue::cli::NodeMain::new("carts-node").durable_entity(carts::KIND, carts::start).run()
}
