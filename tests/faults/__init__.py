"""The fault suite: one scenario per single fault, against real processes (issue 9)."""
