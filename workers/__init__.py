"""RQ workers: the check functions and the framework that runs them (time, state, delivery)."""
