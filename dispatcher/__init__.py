"""The dispatcher: snapshot stream -> one RQ job per routed (instance, account) pair, latest wins."""
