//! `duologue demo edit`: collaborative editing across processes. Not built yet: issue 6 is under way.

use duologue::local_cluster::ClusterError;

pub(crate) async fn run() -> Result<(), ClusterError> {
    Err(ClusterError::Unexpected(
        "the edit demo is not built yet".into(),
    ))
}
