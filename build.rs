//! Compiles the session protocol (`proto/duologue/v1/`) with protox (pure Rust, no system
//! `protoc`) and tonic-prost-build, and writes its descriptor set to `OUT_DIR` for the
//! node's reflection service (runtime/node/server/standard.rs).

use std::path::PathBuf;

// The ready-made actors' protocols are compiled by `actors/build.rs`.
const PROTOS: &[&str] = &[
    "proto/duologue/v1/session.proto",
    "proto/duologue/v1/control.proto",
    "proto/duologue/v1/entity.proto",
];

/// The encoded `FileDescriptorSet` of `PROTOS`, under `OUT_DIR`.
const DESCRIPTOR_SET: &str = "duologue.v1.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    // Source info keeps the protos' comments, which reflection clients show.
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join(DESCRIPTOR_SET),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();
    let mut config = tonic_prost_build::Config::new();
    // Payloads stay `bytes::Bytes` end to end, so decoding does not copy them.
    config.bytes(["."]);
    // `prost::Name` gives every message its type URL.
    config.enable_type_names();
    // Type URLs spelled as `google.protobuf.Any` spells them.
    config.type_name_domain(["."], "type.googleapis.com");
    // The messages by prost; the service by hand below, so that its stream carries
    // domain frames through duologue's own codec (runtime/driver/transport.rs), which encodes
    // and decodes a batch without prost's intermediate structs.
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .emit_rerun_if_changed(false)
        .compile_fds_with_config(fds, config)?;
    let converse = tonic_build::manual::Method::builder()
        .name("converse")
        .route_name("Converse")
        .comment("One session: both sides' frames, in order (proto/duologue/v1/session.proto).")
        .input_type("crate::driver::transport::WireFrame")
        .output_type("crate::driver::transport::WireFrame")
        .codec_path("crate::driver::transport::FrameCodec")
        .client_streaming()
        .server_streaming()
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("Duologue")
        .package("duologue.v1")
        .comment("The session protocol's one service (proto/duologue/v1/session.proto).")
        .method(converse)
        .build();
    tonic_build::manual::Builder::new()
        .out_dir(&out)
        .compile(&[service]);
    Ok(())
}
