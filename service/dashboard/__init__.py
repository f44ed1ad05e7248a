"""The operator's web page (``/dashboard``): the pool, the routing and the money at a glance."""
