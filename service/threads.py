"""The gateway's math threads: one per worker by default (``Settings.compute_threads``).

Usage::

    limit_compute_threads(settings.compute_threads)   # before the first request
"""

from __future__ import annotations


def limit_compute_threads(n: int) -> None:
    """One math thread per worker by default: a request's encoder and scoring work is a few
    milliseconds, and spinning BLAS/OpenMP pools in every worker fight over the cores (measured
    with 2 workers on 2 cores: routed p50 43 ms with default pools, 11 ms with one thread)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)
