//! A node hosting key-value stores: `kv-node --name NAME --secret-file FILE --actor kv-store:NAME`.

fn main() -> std::process::ExitCode {
    duologue::cli::NodeMain::new("kv-node")
        .actor("kv-store", "a key-value store (get, put, watch)", |_| {
            Ok((kv::Store::default(), ()))
        })
        .run()
}
