//! python_client: not written yet (issue 6 is under way).
