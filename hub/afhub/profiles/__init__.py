"""Spawn profiles built from the resource registry, and server-side resolution of choices."""
