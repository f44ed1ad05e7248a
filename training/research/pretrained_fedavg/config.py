"""Knobs of the ``pretrained-fedavg`` job (NOTES.md (j)).

Grouped by concern:
- data (the signal-noise patch model of Cao et al. 2022): x = [y mu, xi] with xi ~ N(0, sigma_p^2 I)
  orthogonal to mu, y in {-1, +1}; ``snr`` sets ||mu||;
- model: the two-layer ReLU CNN f(W, x) = F_+1 - F_-1, F_j = (1/m) sum_r sum_p relu(<w_j,r, x_p>),
  logistic loss; a filter w_j,r is aligned when <w_j,r, j mu> > 0;
- federation: N clients, FedAvg with ``local_steps`` full-batch GD steps per round; label skew puts
  ``skew`` of a client's samples in its majority class (half the clients per class);
- initialisations: random N(0, sigma_0^2), "pre-trained" (centralised GD on a related source task
  whose signal has cosine ``source_cosine`` with mu), and controlled ones with a given fraction of
  aligned filters (the sweep);
- digits check: sklearn's bundled digits, 3 vs 8, a small CNN pre-trained on the other digits.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PretrainedFedAvgConfig:
    # data
    dim: int = field(default=200, metadata={"help": "patch dimension d"})
    sigma_p: float = field(default=1.0, metadata={"help": "noise standard deviation sigma_p"})
    mu_norm: float = field(default=1.0, metadata={"help": "||mu||, the signal strength"})
    clients: int = field(default=10, metadata={"help": "clients N"})
    per_client: int = field(default=30, metadata={"help": "training samples per client"})
    test_size: int = field(default=2000, metadata={"help": "test samples"})
    skew: float = field(
        default=0.9, metadata={"help": "share of a client's majority class (non-IID)"}
    )
    # model and training
    filters: int = field(default=10, metadata={"help": "filters m per class"})
    sigma0: float = field(default=0.05, metadata={"help": "init standard deviation sigma_0"})
    lr: float = field(default=0.5, metadata={"help": "GD step size"})
    local_steps: int = field(default=5, metadata={"help": "local GD steps tau per round"})
    rounds: int = field(default=100, metadata={"help": "FedAvg rounds R"})
    # initialisations
    source_cosine: float = field(
        default=0.8, metadata={"help": "cosine between the source task's signal and mu"}
    )
    pretrain_steps: int = field(
        default=50, metadata={"help": "centralised GD steps on the source task"}
    )
    pretrain_samples: int = field(default=300, metadata={"help": "source-task samples"})
    aligned_fractions: str = field(
        default="0,0.25,0.5,0.75,1", metadata={"help": "aligned-filter fractions of the sweep"}
    )
    align_scale: float = field(
        default=0.1, metadata={"help": "the +-mu/||mu|| component of the controlled inits"}
    )
    # digits check
    digits_rounds: int = field(default=40, metadata={"help": "FedAvg rounds on digits"})
    digits_pretrain_epochs: int = field(
        default=30, metadata={"help": "full-batch epochs of pre-training on the other digits"}
    )
    flower: bool = field(default=True, metadata={"help": "repeat seed 0's headline runs on Flower"})
    flower_runs: int = field(
        default=4, metadata={"help": "how many of seed 0's four headline runs Flower repeats"}
    )

    def fraction_list(self) -> list[float]:
        return [float(x) for x in self.aligned_fractions.split(",")]
