"""Knobs of a federated router run, one dataclass, read from Flower's run config.

Flower passes ``[tool.flwr.app.config]`` (flat kebab-case keys, see ``pyproject.toml``) to both
apps as ``context.run_config``; :meth:`FederationConfig.from_run_config` turns it into this class
and validates it, so the ServerApp, the ClientApp and ``junction federate simulate`` share one
definition. Defaults follow the federated-routing paper (Askin et al., arXiv 2601.22318)
where it gives them.

Groups:
- data: ``logs`` (a built-in data set or any evaluation-log file), ``clients``, ``alpha`` (task
  Dirichlet), ``model-alpha`` (logging-policy Dirichlet; small = strong per-client model skew),
  ``test-frac``, ``seed`` (every random choice of a run derives from it), ``held-out`` (the log's
  onboarding models: exclude, the default, or include);
- router: ``router`` (mlp | kmeans) and its knobs; MLP ``head`` (per-model | shared),
  ``model-dim``, ``prox-mu`` (FedProx); K-means ``kmeans-prior`` (validation | a number);
- FedAvg: ``rounds``, ``participation``, ``local-epochs``, ``client-dropout``, the server step
  ``server-opt`` (avg | momentum | adam) with ``server-lr`` and ``server-momentum``, and
  ``select-round`` (validation | last: which round of each FedAvg stage the server keeps), ``server-ema``
  (the router the server evaluates and keeps is an exponential moving average of the training
  rounds' global models; 0 = off);
- robustness: ``robust`` (none | clip | trimmed), ``clip-factor``, ``trim-frac``;
- simulation-only fault injection: ``attack`` (none | scale100 | nan) on ``attack-client``.

Usage::

    cfg = FederationConfig.from_run_config(context.run_config)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ROUTER_KINDS = ("mlp", "kmeans")
ROBUST_MODES = ("none", "clip", "trimmed")
ATTACKS = ("none", "scale100", "nan")
HELD_OUT = ("exclude", "include")
SERVER_OPTS = ("avg", "momentum", "adam")
CLIENT_OPTS = ("adamw", "sgd")
HEADS = ("per-model", "shared", "embedding")
SELECT_ROUNDS = ("validation", "last")


@dataclass
class FederationConfig:
    """One federated run. Usage: ``FederationConfig(logs="mmlu_pro", router="kmeans")``."""

    # data
    logs: str = field(default="routerbench", metadata={"help": "data set name or log file"})
    clients: int = field(default=10, metadata={"help": "number of clients (paper: 10)"})
    alpha: float = field(default=0.6, metadata={"help": "Dirichlet alpha of tasks over clients"})
    model_alpha: float = field(
        default=0.45, metadata={"help": "Dirichlet alpha of each client's logging policy"}
    )
    test_frac: float = field(default=0.25, metadata={"help": "client-local test fraction"})
    seed: int = field(default=0, metadata={"help": "seed of the partition and the training"})
    models: str = field(
        default="", metadata={"help": "comma-separated candidate models ('' = the log's)"}
    )
    held_out: str = field(
        default="exclude",
        metadata={"help": "the log's held-out (onboarding) models: exclude (default) or include"},
    )
    # router
    router: str = field(default="mlp", metadata={"help": "mlp or kmeans"})
    hidden: int = field(default=256, metadata={"help": "MLP trunk width (paper: 512)"})
    lr: float = field(
        default=1e-3, metadata={"help": "a federated client's learning rate (see client-opt)"}
    )
    lrs: str = field(
        default="",
        metadata={
            "help": "client lrs to choose from (comma list; MLP, simulate): one federated "
            "training each, "
            "the one whose kept round has the best AUC on the server's validation set is kept "
            "(ties to the earlier); '' trains at lr only"
        },
    )
    batch_size: int = field(default=128, metadata={"help": "local batch size"})
    client_opt: str = field(
        default="adamw",
        metadata={
            "help": "a federated client's optimiser for its local round: adamw (a fresh AdamW "
            "each round) or sgd (plain SGD); centralised and client-local routers use AdamW"
        },
    )
    head: str = field(
        default="per-model",
        metadata={
            "help": "MLP heads: per-model (one head each), shared (a head shared by every "
            "model, conditioned on a small learnt model embedding, plus a per-model bias) or "
            "embedding (one head conditioned on fixed model embeddings from the training rows' "
            "per-cluster accuracy and cost, k-global clusters; no per-model parameter)"
        },
    )
    model_dim: int = field(default=8, metadata={"help": "model-embedding size (head=shared)"})
    prox_mu: float = field(default=0.0, metadata={"help": "FedProx proximal weight (0 = off)"})
    kmeans_prior: str = field(
        default="validation",
        metadata={
            "help": "K-means shrinkage towards each model's mean: validation (chosen from "
            "training.routers.kmeans.PRIORS on the validation set: the server's own for the "
            "federated router, the same set for the centralised and client-local ones; the "
            "KMeansConfig default without a server validation set) or a number >= 0"
        },
    )
    k_local: int = field(default=15, metadata={"help": "K-means pass 1 clusters per client"})
    k_global: int = field(default=20, metadata={"help": "K-means global clusters"})
    # FedAvg
    rounds: int = field(default=30, metadata={"help": "FedAvg rounds"})
    participation: float = field(default=0.6, metadata={"help": "fraction of clients per round"})
    local_epochs: int = field(default=1, metadata={"help": "local epochs per round"})
    server_opt: str = field(
        default="avg",
        metadata={"help": "server step on the shared trunk: avg (FedAvg), momentum, adam"},
    )
    server_lr: float = field(default=1.0, metadata={"help": "server learning rate"})
    server_momentum: float = field(default=0.9, metadata={"help": "server momentum / Adam beta1"})
    select_round: str = field(
        default="validation",
        metadata={
            "help": "the round the server keeps in each FedAvg stage (training, then the join "
            "and expansion rounds): validation (the round, 0 = the model the stage started "
            "from, with the best AUC on the server's own validation set, ties to the earlier; "
            "needs server-eval, else the last round) or last"
        },
    )
    server_ema: float = field(
        default=0.0,
        metadata={
            "help": "decay of an exponential moving average of the training rounds' global models "
            "(from round 1 on): the router the server evaluates, selects and keeps; clients still "
            "train from the plain global model. 0 = off (the global model itself)"
        },
    )
    client_dropout: float = field(
        default=0.0,
        metadata={"help": "probability a sampled client drops out of a round (seeded)"},
    )
    # model expansion
    expand_model: str = field(
        default="", metadata={"help": "a model left out of training, then added as a new head"}
    )
    expand_rounds: int = field(default=10, metadata={"help": "rounds training the new head"})
    expand_epochs: int = field(
        default=20,
        metadata={"help": "local epochs per expansion round (a head on a small calibration set)"},
    )
    calibration_frac: float = field(
        default=0.1, metadata={"help": "fraction of prompts labelled with the new model"}
    )
    # new clients
    new_clients: int = field(
        default=0, metadata={"help": "the last N clients join after the first rounds (MLP)"}
    )
    join_rounds: int = field(default=10, metadata={"help": "rounds after new clients join"})
    # robustness
    robust: str = field(default="clip", metadata={"help": "none, clip or trimmed"})
    clip_factor: float = field(
        default=2.0, metadata={"help": "clip update norms at this multiple of the round's median"}
    )
    trim_frac: float = field(default=0.2, metadata={"help": "trimmed-mean fraction per side"})
    # fault injection (simulation only)
    attack: str = field(default="none", metadata={"help": "none, scale100 or nan"})
    attack_client: int = field(default=0, metadata={"help": "partition id of the attacker"})
    # outputs
    out_dir: str = field(default="", metadata={"help": "where the ServerApp saves the router"})
    server_eval: bool = field(
        default=False, metadata={"help": "server evaluates each round on the global test set"}
    )

    def __post_init__(self) -> None:
        if self.router not in ROUTER_KINDS:
            raise ValueError(f"router must be one of {ROUTER_KINDS}, not {self.router!r}")
        if self.robust not in ROBUST_MODES:
            raise ValueError(f"robust must be one of {ROBUST_MODES}, not {self.robust!r}")
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, not {self.attack!r}")
        if self.clients < 1 or self.rounds < 0 or self.local_epochs < 1:
            raise ValueError("clients and local-epochs must be >= 1, rounds >= 0")
        if not 0 < self.participation <= 1:
            raise ValueError("participation must be in (0, 1]")
        if self.alpha <= 0 or self.model_alpha <= 0:
            raise ValueError("Dirichlet alphas must be > 0")
        if not 0 < self.test_frac < 1:
            raise ValueError("test-frac must be in (0, 1)")
        if self.held_out not in HELD_OUT:
            raise ValueError(f"held-out must be one of {HELD_OUT}, not {self.held_out!r}")
        if self.server_opt not in SERVER_OPTS:
            raise ValueError(f"server-opt must be one of {SERVER_OPTS}, not {self.server_opt!r}")
        if self.client_opt not in CLIENT_OPTS:
            raise ValueError(f"client-opt must be one of {CLIENT_OPTS}, not {self.client_opt!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {self.head!r}")
        if self.select_round not in SELECT_ROUNDS:
            raise ValueError(
                f"select-round must be one of {SELECT_ROUNDS}, not {self.select_round!r}"
            )
        if self.kmeans_prior != "validation":
            try:
                bad = not 0 <= float(self.kmeans_prior) < float("inf")
            except ValueError:
                bad = True
            if bad:
                raise ValueError(
                    f"kmeans-prior must be 'validation' or a number >= 0, not {self.kmeans_prior!r}"
                )
        if self.head == "embedding" and self.expand_model and self.router == "mlp":
            raise ValueError(
                "head=embedding has no per-model head to add: model expansion needs "
                "head=per-model or shared"
            )
        if not 0 <= self.server_ema < 1:
            raise ValueError(f"server-ema must be in [0, 1), not {self.server_ema!r}")
        if not 0 <= self.client_dropout < 1 or self.prox_mu < 0 or self.server_lr <= 0:
            raise ValueError("client-dropout must be in [0, 1), prox-mu >= 0, server-lr > 0")
        try:
            lrs = self.lr_list
            bad_lrs = any(not 0 < x < float("inf") for x in lrs) or len(set(lrs)) < len(lrs)
        except ValueError:
            bad_lrs = True
        if bad_lrs:
            raise ValueError(
                f"lrs must be a comma list of distinct finite numbers > 0, not {self.lrs!r}"
            )
        if not 0 <= self.trim_frac < 0.5:
            raise ValueError("trim-frac must be in [0, 0.5)")

    @property
    def lr_list(self) -> list[float]:
        return [float(x) for x in self.lrs.split(",") if x.strip()]

    @property
    def baseline_lr(self) -> float:
        """The lr of the AdamW-trained routers beside the federated one (the matched-compute
        centralised and the unselected client-local MLPs): the run's lr, or the AdamW default
        where the clients run SGD, whose lr is on another scale."""
        from training.routers.mlp import MLPConfig  # torch: only where an MLP is trained

        return self.lr if self.client_opt == "adamw" else MLPConfig().lr

    @property
    def fixed_prior(self) -> float | None:
        """The K-means prior the run fixes, or None when it is chosen on validation."""
        return None if self.kmeans_prior == "validation" else float(self.kmeans_prior)

    @property
    def model_list(self) -> list[str]:
        return [m for m in self.models.split(",") if m]

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FederationConfig:
        """From Flower's flat kebab-case run config; unknown keys are an error (typos)."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in known:
                raise KeyError(f"unknown run-config key {key!r} (known: {sorted(known)})")
            default = known[name].default
            if isinstance(default, bool):
                kwargs[name] = value if isinstance(value, bool) else str(value).lower() == "true"
            elif isinstance(default, int):
                kwargs[name] = int(value)
            elif isinstance(default, float):
                kwargs[name] = float(value)
            else:
                kwargs[name] = str(value)
        return cls(**kwargs)

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """The flat kebab-case form Flower's run config uses."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}
