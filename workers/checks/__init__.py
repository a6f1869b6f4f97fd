"""Built-in checks. Each module defines one :class:`workers.checks.base.CheckSpec` named ``SPEC``."""
