//! Sessions at scale: not written yet.
fn main() {}
