"""``POST /v1/route``: the routing decision alone, no backend call."""
