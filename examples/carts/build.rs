// Compiles proto/ (no system protoc needed), with the `prost::Name` sessions need.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    duologue_build::messages(["carts/v1/carts.proto"], ["proto"])
}
