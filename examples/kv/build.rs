// Compiles proto/ (no system protoc needed), with the `prost::Name` sessions need.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    duologue_build::messages(["kv/v1/kv.proto"], ["proto"])
}
