//! What the tests and benches of `duologue-actors` share that needs the ready-made actors,
//! so it cannot live in `duologue-testkit` (which the `duologue` command depends on): a
//! legitimate chat member that checks a node under attack still serves ([`member`]), and
//! a cluster of sequence checkers on a network lab ([`cluster_lab`]). Helpers that take
//! the `duologue` binary take its path. Not runtime API.

pub mod cluster_lab;
pub mod member;
