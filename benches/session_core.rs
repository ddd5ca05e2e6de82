//! Session core micro-benchmarks: not written yet.
fn main() {}
