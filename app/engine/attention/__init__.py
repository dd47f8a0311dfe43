"""Attention backends behind one interface (see backend.py); torch_ref is the oracle."""
from .metadata import AttentionMetadata

__all__ = ["AttentionMetadata"]
