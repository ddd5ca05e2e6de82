//! Compiles the ready-made actors' protocols from the top-level `proto/` (messages only:
//! sessions carry them, so no gRPC service is generated).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    // Payloads stay `bytes::Bytes` end to end, so decoding does not copy them.
    config.bytes(["."]);
    duologue_build::messages_with(
        [
            "duologue/chat/v1/chat.proto",
            "duologue/edit/v1/edit.proto",
            "duologue/reconcile/v1/reconcile.proto",
            "duologue/pipeline/v1/pipeline.proto",
            "duologue/diag/v1/diag.proto",
        ],
        ["../proto"],
        config,
    )
}
