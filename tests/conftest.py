"""Shared pytest setup: strict numerics and small helpers every test file may use."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
