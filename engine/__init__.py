"""The engine below every process: the check interface and registry, the plan (routing), the alert
state machine, schedules and hot reload. Processes import it and ``shared``; it imports only
``shared``."""
