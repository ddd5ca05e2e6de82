//! paradigm_pipeline: not written yet (issue 6 is under way).
