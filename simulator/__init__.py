"""A Galio-compatible WebSocket server for the demo, the tests and the benchmark.

:mod:`simulator.frames` generates deterministic account frames with scripted incidents,
:mod:`simulator.server` streams them (or replays a recording) over a real WebSocket, and
:mod:`simulator.cli` runs it as ``python -m simulator``.
"""
