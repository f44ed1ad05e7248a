"""Offline research jobs: paper reproductions that end in a claims report.

Every job is one package under ``training/research/<job>/`` owning its config, model, training
and report, and is run as ``junction research <job> [--quick] [--seeds N] --out DIR``.

- :mod:`training.research.report`: the one report/claims helper (``report.json``, ``summary.md``).
- :mod:`training.research.federated`: federated rounds as plain data (:class:`FedExperiment`), run
  in-process here or on Flower by ``federation.research_app`` (``training`` never imports
  ``federation``; the command group in ``federation/research_cli.py`` passes the Flower backend in).
- :mod:`training.research.jobs`: the name registry of jobs (``JOBS``).
"""
