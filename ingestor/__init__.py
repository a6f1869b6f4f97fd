"""The ingestor: WebSocket clients that normalize account frames into snapshots on a Redis Stream."""
