"""Talking to model backends: the pooled upstream client, backend health, the replay backend."""
