"""Code shared by every MonitorX process: models, settings, configuration, Redis keys and helpers."""
