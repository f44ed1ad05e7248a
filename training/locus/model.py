"""LOCUS networks: a Set-Transformer encoder of evaluation sets and a correctness predictor.

Pure ``nn.Module``s: tensors in, tensors out, no I/O. Shapes use B = sets in a batch, N = set
size (padded), D = query-encoding size, d = model-embedding size, T = target queries per set.

- Token map: t_i = Linear([phi_i, y_i, phi_i * (2 y_i - 1)]) in R^d.
- MAB(Q, K) = LN(O + rFF(O)),  O = ReLU(LN(Q + W_o MHA(Q, K, K))).
- ISAB: H = MAB(U, X), X' = MAB(X, H) with r learned latents U, so the cost is O(N r).
- PMA: z = Linear(MAB(s, X)) with one learned seed s.
- No positional encodings: z is invariant to the order of the set. Padded slots are excluded
  from every attention that reads the set, so padding does not change z.
- Predictor: u = U phi(x), logit = MLP([z, u, z * u]).

Usage::

    model = LocusModel(LocusConfig())
    z = model.encoder(x_enc, y_enc, mask)      # [B, d]
    logits = model.predictor(z[:, None], x)    # [B, T]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.locus.config import LocusConfig


class MultiheadAttention(nn.Module):
    """Scaled dot-product attention with separate q/k/v projections and the output map W_o."""

    def __init__(self, d: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, query: Tensor, key: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """query [B, Nq, d], key [B, Nk, d], key_mask [B, Nk] (True = real) -> [B, Nq, d]."""
        b, nq, d = query.shape
        nk = key.shape[1]
        h = self.num_heads

        def split(t: Tensor, n: int) -> Tensor:
            return t.view(b, n, h, d // h).transpose(1, 2)  # [B, n, d] -> [B, h, n, d/h]

        q, k, v = split(self.q(query), nq), split(self.k(key), nk), split(self.v(key), nk)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, Nk]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, h, Nq, d/h]
        out = out.transpose(1, 2).reshape(b, nq, d)  # [B, Nq, d]
        return self.o(out)


class MAB(nn.Module):
    """Multihead attention block: LN(O + rFF(O)), O = ReLU(LN(Q + W_o MHA(Q, K, K)))."""

    def __init__(self, cfg: LocusConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.attn = MultiheadAttention(d, cfg.num_heads)
        self.ln0 = nn.LayerNorm(d)
        self.ln1 = nn.LayerNorm(d)
        # Row-wise feed-forward as in the Set Transformer reference code: ReLU(Linear(O)).
        self.rff = nn.Linear(d, d)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, query: Tensor, key: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """query [B, Nq, d], key [B, Nk, d] -> [B, Nq, d]."""
        o = F.relu(self.ln0(query + self.drop(self.attn(query, key, key_mask))))
        return self.ln1(o + self.drop(F.relu(self.rff(o))))


class ISAB(nn.Module):
    """Induced set attention: H = MAB(U, X), X' = MAB(X, H)."""

    def __init__(self, cfg: LocusConfig) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.empty(1, cfg.num_latents, cfg.d_model))
        nn.init.xavier_uniform_(self.latents)
        self.mab_latent = MAB(cfg)
        self.mab_set = MAB(cfg)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, N, d], mask [B, N] -> [B, N, d]; padded rows are junk but never read as keys."""
        latents = self.latents.expand(x.shape[0], -1, -1)  # [B, r, d]
        h = self.mab_latent(latents, x, mask)  # [B, r, d]
        return self.mab_set(x, h)  # [B, N, d]


class PMA(nn.Module):
    """Pooling by multihead attention with a single learned seed, then Linear -> z."""

    def __init__(self, cfg: LocusConfig) -> None:
        super().__init__()
        self.seed = nn.Parameter(torch.empty(1, 1, cfg.d_model))
        nn.init.xavier_uniform_(self.seed)
        self.mab = MAB(cfg)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, N, d], mask [B, N] -> z [B, d]."""
        seed = self.seed.expand(x.shape[0], -1, -1)  # [B, 1, d]
        return self.out(self.mab(seed, x, mask).squeeze(1))


class SetEncoder(nn.Module):
    """F_theta: a set of (query encoding, score) pairs -> one model embedding z."""

    def __init__(self, cfg: LocusConfig) -> None:
        super().__init__()
        self.token = nn.Linear(2 * cfg.input_dim + 1, cfg.d_model)
        self.isabs = nn.ModuleList(ISAB(cfg) for _ in range(cfg.num_isab))
        self.pma = PMA(cfg)

    def forward(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, N, D], y [B, N] in {0, 1}, mask [B, N] (True = real) -> z [B, d]."""
        y = y.unsqueeze(-1)  # [B, N, 1]
        tokens = self.token(torch.cat([x, y, x * (2 * y - 1)], dim=-1))  # [B, N, d]
        for isab in self.isabs:
            tokens = isab(tokens, mask)
        return self.pma(tokens, mask)


class CorrectnessPredictor(nn.Module):
    """G_psi: logit of P(model with embedding z answers query x correctly).

    The first MLP layer is stored as three d -> h blocks acting on z, u and z * u; that is the
    same map as one Linear on the concatenation, and lets inference fold the z-side ahead of time.
    """

    def __init__(self, cfg: LocusConfig) -> None:
        super().__init__()
        d, h = cfg.d_model, cfg.predictor_hidden
        self.query_proj = nn.Linear(cfg.input_dim, d)  # U
        self.hidden = nn.Linear(3 * d, h)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(h, 1)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        """z [..., d] and x [..., D], broadcast against each other -> logits [...]."""
        return self.head(z, self.query_proj(x))

    def head(self, z: Tensor, u: Tensor) -> Tensor:
        """z [..., d] and projected queries u [..., d], broadcast -> logits [...]."""
        z, u = torch.broadcast_tensors(z, u)
        hidden = F.relu(self.hidden(torch.cat([z, u, z * u], dim=-1)))  # [..., h]
        return self.out(self.drop(hidden)).squeeze(-1)


class LocusModel(nn.Module):
    """Encoder plus predictor: the one class used by training and inference."""

    def __init__(self, cfg: LocusConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = SetEncoder(cfg)
        self.predictor = CorrectnessPredictor(cfg)

    def forward(
        self, x_enc: Tensor, y_enc: Tensor, enc_mask: Tensor | None, x_dec: Tensor
    ) -> Tensor:
        """x_enc [B, N, D], y_enc [B, N], enc_mask [B, N], x_dec [B, T, D] -> logits [B, T]."""
        z = self.encoder(x_enc, y_enc, enc_mask)  # [B, d]
        return self.predictor(z.unsqueeze(1), x_dec)  # [B, 1, d] x [B, T, D] -> [B, T]
