//! paradigm_reconcile: not written yet (issue 6 is under way).
