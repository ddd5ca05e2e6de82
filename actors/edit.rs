//! The edit paradigm. Not built yet: issue 6 is under way.

use duologue::Node;

/// Starts this paradigm's server-side actor on `node` and registers it as `name`, for
/// `duologue node --actor edit:NAME`.
///
/// # Errors
/// Always, for now: the paradigm is not built yet.
pub async fn host(node: &Node, name: &str) -> Result<ractor::ActorCell, String> {
    let _ = (node, name);
    Err("the edit paradigm is not built yet".into())
}
