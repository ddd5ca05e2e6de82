//! paradigm_edit: not written yet (issue 6 is under way).
