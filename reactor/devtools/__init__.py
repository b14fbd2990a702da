"""Tooling for tests, exports and benchmarks: random checkpoints, a feedback-text generator, roofline maths.

Kept out of ``reactor.nlp`` on purpose: the daemon never imports this package, so nothing here can slow
its start or pull torch into it.
"""
