"""Built-in checks. Each module defines one :class:`engine.checks.base.CheckSpec` named ``SPEC``."""
