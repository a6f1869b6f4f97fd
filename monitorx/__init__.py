"""MonitorX: the umbrella command line (``monitorx``) over the pipeline's processes."""
