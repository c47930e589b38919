"""The floor: what every stage may import, and which imports nothing above it.

Error types, the frame contract between render and labels, axis conventions, colour encoding,
atomic file writes and the device vocabulary. See docs/architecture.md.
"""
