"""Test and benchmark doubles that ship with the gateway (the benchmark needs them at run time)."""
