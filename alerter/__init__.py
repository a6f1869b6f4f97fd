"""The alerter: alerts stream -> sinks (console, JSONL file, Slack webhook, HTTP webhook), at most
one delivery per alert and sink, failures retried from the pending list, then dead-lettered."""
