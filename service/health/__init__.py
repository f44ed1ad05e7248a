"""Health endpoints (no backend calls) and Prometheus metrics."""
