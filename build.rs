//! Compiles the session protocol (`proto/duologue/v1/`) with protox (pure Rust, no system `protoc`) and tonic-prost-build.

// The ready-made actors' protocols are compiled by `actors/build.rs`.
const PROTOS: &[&str] = &[
    "proto/duologue/v1/session.proto",
    "proto/duologue/v1/control.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let mut config = tonic_prost_build::Config::new();
    // Payloads stay `bytes::Bytes` end to end, so decoding does not copy them.
    config.bytes(["."]);
    // `prost::Name` gives every message its type URL.
    config.enable_type_names();
    // Type URLs spelled as `google.protobuf.Any` spells them.
    config.type_name_domain(["."], "type.googleapis.com");
    tonic_prost_build::configure()
        // Small initial stream buffers (see runtime/wire/codec.rs).
        .codec_path("crate::wire::codec::FrameCodec")
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
