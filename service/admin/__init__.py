"""The admin API: models, neighbours, portfolio, client keys, routers (admin token only)."""
