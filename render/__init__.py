"""Render stage: the only place that imports bpy (inside worker processes, never at import time)."""
