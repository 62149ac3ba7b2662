"""The interest model: a causal Transformer over a user's events whose output lives in text space.

Each event enters as the sum of its text embedding (projected), its space-time encoding
(spacetime.py) and optionally a learned venue-id embedding. Causal self-attention turns the
sequence into one hidden state per event; a linear map takes it to an *interest vector* in the
text-embedding space (384-d for MiniLM), so any venue, category or free phrase is scored by a
dot product with its text embedding.

Why the model is inductive: everything it ranks and counts comes from a `ModelData` ("world")
computed from the dataset being scored (its items' texts and places, popularity, transitions),
not from the training data. The world is a set of non-persistent buffers swapped by `set_world`,
so one checkpoint scores any city: its weights are functions of texts, times, distances and
counts, never of item ids (learned ids and cells remain as switches for ablations only, and
such a checkpoint is tied to its training venues).

Why the extra head around the Transformer: about three in four NYC check-ins return to a venue
the user has visited before, and plain sequence models lose to simple counting baselines there.
So the next-venue distribution is a gated mixture (a pointer-generator):
    p(v) = g * p_copy(v) + (1 - g) * softmax(gen)(v)
where p_copy is attention from the current state over the user's own history, scattered onto
venue ids, and `gen` is the dot-product score plus additive logits of the features a hand-tuned
blend uses (the user's visit counts, the user's and everyone's transitions from the current venue,
distance from the current location), each weighted by a learned function of the state.

nanoGPT conventions: small modules built from one `ModelConfig`, shape comments, and
`forward(batch, targets=None) -> (output, loss)`.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from interestgeo.config import ModelConfig
from interestgeo.model.spacetime import N_TIME_FEATURES, SpaceTimeEncoder

__all__ = ["Batch", "InterestModel", "ModelData", "expectation", "bfloat16_scoring", "sharpen"]

# Next-event time features at the query position: cyclic time of the next event (6) + log1p gap (1).
N_NEXT_TIME = N_TIME_FEATURES + 1
# Relative-distance buckets for the pointer's recency bias (exact up to 8 events back, then log-spaced).
N_REL_BUCKETS = 24
# Feature logits besides the dot product: user count, user transitions, global transitions, log dist,
# log dist^2, and the user's visits at a similar hour of day to the (given) next event's time.
N_FEATURES = 6
# Above this many venues the (V + 1, V) transition and distance tables (4 bytes x V^2 each: 270 MB
# at 8k) are not built; rows are computed per query instead (same numbers).
MAX_DENSE_VENUES = 8192


@dataclass
class Batch:
    """One padded batch of event windows (right-padded: events at 0..len-1, padding after).

    `venue` uses V for "unknown venue or padding" so it can index a (V+1)-column scatter.
    """

    venue: torch.Tensor  # (B, T) int64 in [0, V]
    text: torch.Tensor  # (B, T, E) float32 event text embeddings
    cells: torch.Tensor  # (B, T, R) int64 cell vocabulary indices
    lat: torch.Tensor  # (B, T) float32
    lon: torch.Tensor  # (B, T) float32
    cont: torch.Tensor  # (B, T, N_CONT_FEATURES) float32
    next_time: torch.Tensor  # (B, T, N_NEXT_TIME) float32 time features of the following event
    next_time_given: torch.Tensor  # (B, T) bool: whether next_time may be used at this position
    length: torch.Tensor  # (B,) int64 number of real events per row
    # The user's history before the window, summarised (so counts see the whole history, not just
    # the last max_len events): distinct venues with visit counts, and venue->venue transitions.
    pre_venue: torch.Tensor  # (B, P) int64 in [0, V], V = padding
    pre_count: torch.Tensor  # (B, P) float32
    pre_src: torch.Tensor  # (B, Q) int64 in [0, V], V = padding
    pre_dst: torch.Tensor  # (B, Q) int64 in [0, V]
    pre_tr_count: torch.Tensor  # (B, Q) float32

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ModelData:
    """What the model knows about one dataset's world: computed from that dataset (world.py), never
    saved with the weights, swapped with `InterestModel.set_world`."""

    venue_text: torch.Tensor  # (V, E) text embedding of each venue
    venue_lat: torch.Tensor  # (V,) float32
    venue_lon: torch.Tensor  # (V,) float32
    venue_category: torch.Tensor  # (V,) int64 index into categories
    category_text: torch.Tensor  # (C, E) text embedding of each category name
    markov_src: torch.Tensor  # (M,) int64 venue->venue transitions in the reference period (sparse counts)
    markov_dst: torch.Tensor  # (M,) int64
    markov_count: torch.Tensor  # (M,) float32
    venue_count: torch.Tensor  # (V,) float32 events at each venue in the reference period (popularity)
    candidate: torch.Tensor  # (V,) bool venues the generative softmax ranks; the others only via the pointer
    cell_sizes: list[int]
    centre: tuple[float, float]

    @property
    def n_venues(self) -> int:
        return int(self.venue_text.shape[0])


# The world's tensors, held by the model as non-persistent buffers (not in its state_dict).
WORLD_BUFFERS = (
    "venue_text", "venue_lat", "venue_lon", "venue_category", "category_text",
    "markov_src", "markov_dst", "markov_count", "venue_count", "candidate",
)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, nh, T, T) attention probabilities (explicit, for explanations; forward uses SDPA)."""
        B, T, C = x.size()
        q, k, _ = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        return F.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def relative_buckets(d: torch.Tensor) -> torch.Tensor:
    """Bucket of a non-negative event distance: exact below 8, then 4 buckets per doubling."""
    d = d.clamp(min=0)
    far = 8 + (torch.log2(d.clamp(min=8).float() / 8) * 4).long()
    return torch.where(d < 8, d, far).clamp(max=N_REL_BUCKETS - 1)


def sharpen(p: torch.Tensor, a: float) -> torch.Tensor:
    """(N, V) rows of p raised to the power a and renormalised (a = 1: p itself).

    Why: an expectation over many venues is a blurred text vector; ranking a person's next event
    by dot product with it works better when it leans on the likeliest venues (on Gowalla's held-out
    next events, MRR 0.077 at a = 1 and 0.120 at a = 2). Each dataset's a is chosen with its
    history weight (calibration.py), never fixed across data.
    """
    if a == 1:
        return p
    q = p.pow(a)
    return q.div_(q.sum(-1, keepdim=True).clamp(min=1e-30))


# Venues whose sharpened probability is below this share of the row's likeliest venue are left out of
# the expectation (`expectation`). Measured on the NYC demo (shipped model, sharpness 4): next-event MRR
# of the stored vectors unchanged, see README "Scale".
EXPECTATION_PRUNE = 1e-4
# Below this share of (row, venue) pairs kept, the pruned expectation is a sparse product; above, dense.
SPARSE_SHARE = 0.05
# Query rows per block of InterestModel.expected_text's (rows, V) passes: 64 x 5k venues x 4 bytes =
# 1.3 MB per buffer, inside a core's L2 cache.
EXPECTED_BLOCK_ROWS = 64


def expectation(
    p: torch.Tensor, a: float, venue_text: torch.Tensor, work: torch.Tensor | None = None,
    prune: float | None = None,
) -> torch.Tensor:
    """(N, E) = sharpen(p, a) @ venue_text, computed cheaply (`p` (N, V) is left as it is).

    * integer a (2, 4) by repeated multiplication, not pow (3x cheaper), into `work` (an (N, V)
      buffer that may be overwritten; a fresh one otherwise), and the renormalisation on the (N, E)
      result instead of the (N, V) weights;
    * venues below `prune` (default EXPECTATION_PRUNE) x the row's largest weight are dropped (and the rest renormalised):
      with a = 4 a handful of venues carry a row's weight, so the (N, V) x (V, E) product (the
      costliest step of scoring) becomes a sparse one over those few (a = 1 rows stay dense).
    """
    prune = EXPECTATION_PRUNE if prune is None else prune
    if prune > 0 and a != 1:
        rows, cols = kept_venues(p, a, prune)
        if len(rows) < SPARSE_SHARE * p.numel():
            return sparse_expectation(rows, cols, p[rows, cols], a, len(p), venue_text)
    if a == 1:
        q = p
    elif a in (2, 4):
        q = torch.mul(p, p, out=work) if work is not None and work is not p else p * p
        if a == 4:
            q.mul_(q)
    else:
        q = p.pow(a)
    if prune > 0 and a != 1:
        q = q.masked_fill(p < prune ** (1.0 / a) * p.amax(-1, keepdim=True), 0.0)
    total = q.sum(-1, keepdim=True).clamp(min=1e-30)  # (N, 1)
    return (q @ venue_text).div_(total)


def _venue_runs(venues: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of venue ids (B, K) sorted: (sorted ids, the order that sorts them, whether a position
    starts a run of equal ids, each position's run index), all (B, K)."""
    ordered, order = venues.sort(dim=1)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return ordered, order, first, first.cumsum(1).sub_(1)


def _moves_from_window_venues(batch: Batch, V: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pre-window transitions (source, destination, count), (B, Q') each, that leave a venue of
    their row's window: only those can count for a query there (its current venue is one of them).
    A long history holds hundreds of transitions, a window's venues leave from few of them."""
    B, Q = batch.pre_src.shape
    offset = torch.arange(B, device=batch.pre_src.device)[:, None] * (V + 1)  # one id range per row
    useful = torch.isin(batch.pre_src + offset, batch.venue + offset) & (batch.pre_src < V)  # (B, Q)
    width = int(useful.sum(1).max()) if B and Q else 0
    keep = torch.argsort((~useful).to(torch.uint8), dim=1, stable=True)[:, :width]  # (B, Q') useful first
    useful = useful.gather(1, keep)
    return (batch.pre_src.gather(1, keep).masked_fill(~useful, V), batch.pre_dst.gather(1, keep).masked_fill(~useful, V),
            batch.pre_tr_count.gather(1, keep).masked_fill(~useful, 0.0))


def bfloat16_scoring(config: ModelConfig) -> bool:
    """Whether scoring runs its matrix products in bfloat16 (config.score_bfloat16), where the CPU
    has fast bfloat16 arithmetic (oneDNN's check); elsewhere bfloat16 would be emulated, slower."""
    return config.score_bfloat16 and _fast_bfloat16()


@functools.cache
def _fast_bfloat16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def kept_venues(p: torch.Tensor, a: float, prune: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns), row-major, of the entries of p (N, V) that `expectation` keeps at sharpness a:
    p^a >= prune x the row's largest p^a, i.e. p >= prune^(1/a) x the row's largest p."""
    threshold = prune ** (1.0 / a) * p.amax(-1, keepdim=True)  # (N, 1)
    if p.device.type == "cpu":  # numpy's compare and flatnonzero: several times torch's ge + nonzero
        at = torch.from_numpy(np.flatnonzero(p.numpy() >= threshold.numpy()))
        return at // p.shape[1], at % p.shape[1]
    rows, cols = (p >= threshold).nonzero(as_tuple=True)
    return rows, cols


def sparse_expectation(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, a: float, n_rows: int, venue_text: torch.Tensor,
) -> torch.Tensor:
    """(n_rows, E): row r = sum_k values_k^a * venue_text[cols_k] / sum_k values_k^a over its entries
    k (rows sorted ascending; a row without entries is zeros)."""
    q = values.pow(a)  # (K,)
    ptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=q.device)
    torch.cumsum(torch.bincount(rows, minlength=n_rows), 0, out=ptr[1:])
    total = torch.zeros(n_rows, device=q.device).index_add_(0, rows, q)[:, None].clamp_(min=1e-30)  # (n_rows, 1)
    with warnings.catch_warnings():  # torch calls its CSR tensors beta (the product is the stable part)
        warnings.simplefilter("ignore", UserWarning)
        weights = torch.sparse_csr_tensor(ptr, cols, q, size=(n_rows, len(venue_text)), check_invariants=False)
    return (weights @ venue_text).div_(total)


class InterestModel(nn.Module):
    """Events -> interest vectors in text space -> next-venue log-probabilities (and category scores)."""

    def __init__(self, config: ModelConfig, data: ModelData) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        V, E = data.venue_text.shape
        self.text_dim = E
        # Venue-count-dependent parameters (ids, no-text venue/category vectors) tie a model to the
        # world it was built with; an inductive model has none and takes any world.
        self.tied_venues = V if (config.use_item_id or not config.use_text) else None
        self.tied_categories = data.category_text.shape[0] if not config.use_text else None
        self._world_version = 0
        self.set_world(data)

        # --- input fusion ---
        self.wpe = nn.Embedding(config.max_len, C)
        if config.use_text:
            self.text_in = nn.Linear(E, C)
        if config.use_item_id:
            self.id_in = nn.Embedding(V + 1, C)  # row V: unknown venue / padding
        if config.use_spacetime:
            self.spacetime = SpaceTimeEncoder(config, data.cell_sizes, data.centre)
            if config.use_target_time:
                self.next_time_in = nn.Linear(N_NEXT_TIME, C)
                self.next_time_missing = nn.Parameter(torch.zeros(C))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(C)

        # --- output in text space ---
        self.to_text = nn.Linear(C, E)  # hidden -> interest vector
        if config.use_item_id or not config.use_text:
            # Per-venue offset in text space; it is the whole venue representation when text is off.
            init = 0.0 if config.use_text else 0.05
            self.id_out = nn.Parameter(torch.randn(V, E) * init)
        if not config.use_text:
            self.category_out = nn.Parameter(torch.randn(self.n_categories, E) * 0.05)
        # popularity enters as pop_weight * log1p(visits in the world's reference period): the
        # inductive stand-in for a learned per-venue bias
        self.pop_weight = nn.Parameter(torch.tensor(0.5))
        if config.use_copy:
            self.feature_weights = nn.Linear(C, N_FEATURES)  # per-state weights of the feature logits
            self.ptr_q = nn.Linear(C, C)
            self.ptr_k = nn.Linear(C, C)
            self.ptr_rel = nn.Embedding(N_REL_BUCKETS, 1)
            self.gate = nn.Linear(C, 1)
        elif config.use_spacetime:
            # Without the copy head, distance still enters with two global weights (a*log d + b*log^2 d).
            self.distance_weights = nn.Parameter(torch.tensor([[-0.5, 0.0]]))
        self.apply(self._init_weights)
        if config.use_copy:
            nn.init.zeros_(self.feature_weights.weight)
            with torch.no_grad():
                self.feature_weights.bias.copy_(torch.tensor([1.0, 1.0, 0.5, -0.5, 0.0, 0.5]))
            nn.init.zeros_(self.ptr_rel.weight)

    def set_world(self, data: ModelData) -> None:
        """Score and count against `data` from now on (the dataset's venues, popularity, transitions).

        Raises ValueError for a world a tied (non-inductive) model cannot take.
        """
        V, E = data.venue_text.shape
        if E != self.text_dim:
            raise ValueError(f"the world's text vectors have {E} dimensions, the model reads {self.text_dim}")
        if self.tied_venues is not None and V != self.tied_venues:
            raise ValueError(
                f"this model has learned venue ids ({self.tied_venues} venues) and cannot score a world of {V} venues"
            )
        if self.tied_categories is not None and data.category_text.shape[0] != self.tied_categories:
            raise ValueError("this model has learned category vectors and cannot score other categories")
        self.n_venues = V
        self.n_categories = data.category_text.shape[0]
        dtypes = {"venue_category": torch.int64, "markov_src": torch.int64, "markov_dst": torch.int64, "candidate": torch.bool}
        for name in WORLD_BUFFERS:
            self.register_buffer(name, getattr(data, name).to(dtypes.get(name, torch.float32)), persistent=False)
        self.register_buffer("centre", torch.tensor(data.centre, dtype=torch.float64), persistent=False)
        if hasattr(self, "spacetime"):
            self.spacetime.centre = data.centre
        self._markov_dense: torch.Tensor | None = None  # derived tables, see _tables()
        self._logd_dense: torch.Tensor | None = None
        self._log1p_markov_dense: torch.Tensor | None = None
        self._markov_rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # see _markov_rows_into()
        self._rows_without_tables = 0  # query rows expected_text answered without the dense tables
        self._world_version += 1

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ trunk
    def hidden(
        self, batch: Batch, neutralise_spacetime: bool = False, attentions: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """(B, T, C) causal hidden states.

        `neutralise_spacetime` drops the space-time input (what the interest would be from text
        and ids alone); `attentions`, when a list, receives each layer's (B, nh, T, T) weights.
        """
        cfg = self.config
        B, T = batch.venue.shape
        x = self.wpe(torch.arange(T, device=batch.venue.device))[None].expand(B, T, -1)  # (B, T, C)
        if cfg.use_text:
            x = x + self.text_in(batch.text)  # (B, T, C)
        if cfg.use_item_id:
            x = x + self.id_in(batch.venue)  # (B, T, C)
        if cfg.use_spacetime and not neutralise_spacetime:
            x = x + self.spacetime(batch.cells, batch.lat, batch.lon, batch.cont)  # (B, T, C)
            if cfg.use_target_time:
                given = batch.next_time_given.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
                x = x + given * self.next_time_in(batch.next_time) + (1 - given) * self.next_time_missing
        x = self.drop(x)
        for block in self.blocks:
            if attentions is not None:
                attentions.append(block.attn.weights(block.ln_1(x)))  # (B, nh, T, T)
            x = block(x)
        return self.ln_f(x)  # (B, T, C)

    def interest(self, h: torch.Tensor) -> torch.Tensor:
        """Interest vectors in text space (unnormalised: the norm is the model's confidence)."""
        return self.to_text(h)  # (..., E)

    def venue_repr(self) -> torch.Tensor:
        """(V, E) venue representations in text space: text embedding plus learned id offset."""
        rep = torch.zeros_like(self.venue_text)
        if self.config.use_text:
            rep = rep + self.venue_text
        if hasattr(self, "id_out"):
            rep = rep + self.id_out
        return rep

    # ------------------------------------------------------------------ head
    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(V + 1, V) log1p global transition counts and log distances between venues.

        Derived from the buffers once per process (not saved: the checkpoint keeps the sparse counts
        and coordinates). Row V stands for an unknown current venue: no transitions, and distances
        computed on the fly from the event's own coordinates.
        """
        if self._markov_dense is None or self._markov_dense.device != self.markov_count.device:
            V, dev = self.n_venues, self.markov_count.device
            counts = torch.zeros(V + 1, V, device=dev)
            counts.index_put_((self.markov_src, self.markov_dst), self.markov_count, accumulate=True)
            logd = torch.zeros(V + 1, V, device=dev)
            logd[:V] = self._log_distance(self.venue_lat[:, None], self.venue_lon[:, None])
            self._markov_dense = counts
            self._logd_dense = logd
        return self._markov_dense, self._logd_dense

    def _log_distance(
        self, lat: torch.Tensor, lon: torch.Tensor, out: torch.Tensor | None = None, work: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, V) log(km + 0.1) from points (N, 1) to every venue (equirectangular: city scale).

        In-place steps, in `out` and `work` ((N, V) buffers) when given: a dynamic update's
        per-query rows then allocate nothing (eight fresh (N, V) temporaries cost 30-50 ms of its
        ~200 ms prediction head, in-place steps ~12 ms).
        """
        coslat = math.cos(math.radians(float(self.centre[0])))
        dx = torch.sub(lon, self.venue_lon[None], out=out).mul_(111.32).mul_(coslat)  # (N, V) km
        dy = torch.sub(lat, self.venue_lat[None], out=work).mul_(110.57)  # (N, V) km
        return dx.mul_(dx).add_(dy.mul_(dy)).sqrt_().add_(0.1).log_()

    def _distances(self, batch: Batch, qb: torch.Tensor, qt: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """(N, V) log distance from each query event to every venue (table lookup for known venues)."""
        if self.n_venues > MAX_DENSE_VENUES:
            out = torch.empty(len(cur), self.n_venues, device=cur.device)
            return self._distance_rows_into(batch, qb, qt, cur, out, torch.empty_like(out))
        logd = self._tables()[1][cur]  # (N, V)
        unknown = (cur >= self.n_venues).nonzero().squeeze(1)
        if len(unknown):
            lat = batch.lat[qb[unknown], qt[unknown]][:, None]
            lon = batch.lon[qb[unknown], qt[unknown]][:, None]
            logd[unknown] = self._log_distance(lat, lon)
        return logd

    def _gen_bias(self, rep: torch.Tensor) -> torch.Tensor:
        """(V,) the dot-product logits' bias: to_text's bias, popularity, and -inf off the candidates."""
        bias = rep @ self.to_text.bias + self.pop_weight * torch.log1p(self.venue_count)
        return bias.masked_fill(~self.candidate, float("-inf"))

    def head(
        self, h: torch.Tensor, batch: Batch, qb: torch.Tensor, qt: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores at query positions (qb[n], qt[n]): (N, V) venue log-probs and (N, K) category logits.

        With `targets` (training), the event being predicted is left out of the global
        transition and popularity counts, so the model learns to weigh them as they behave on
        unseen data.
        """
        V = self.n_venues
        T = h.shape[1]
        N = len(qb)
        hq = h[qb, qt]  # (N, C)
        # gen = interest . venue_repr, computed as hq . (W^T venue_repr): the same numbers with the
        # (N, V) product done in C dimensions instead of E (3x fewer flops on the biggest matmul).
        rep = self.venue_repr()  # (V, E)
        rep_c = rep @ self.to_text.weight  # (V, C)
        gen = torch.addmm(self._gen_bias(rep), hq, rep_c.T)  # (N, V)
        if targets is not None:  # leave the target's own visit out of its popularity
            rows = (targets >= 0).nonzero().squeeze(1)
            c = self.venue_count[targets[rows]]
            loo = torch.log1p((c - 1).clamp(min=0)) - torch.log1p(c)  # (n,)
            gen = gen.index_put((rows, targets[rows]), self.pop_weight * loo, accumulate=True)
        cat_rep = self.category_text if self.config.use_text else self.category_out
        cat_logits = self.interest(hq) @ cat_rep.T  # (N, K)
        hist = batch.venue[qb]  # (N, T) venue ids of the query row's events
        cur = hist.gather(1, qt[:, None]).squeeze(1)  # (N,) current venue (V if unknown)
        if not self.config.use_copy:
            if self.config.use_spacetime:
                logd = self._distances(batch, qb, qt, cur)
                gen = gen + self.distance_weights[:, 0:1] * logd + self.distance_weights[:, 1:2] * 0.1 * logd * logd
            return F.log_softmax(gen, dim=-1), cat_logits

        w = self.feature_weights(hq)  # (N, F)
        pos = torch.arange(T, device=h.device)
        seen = (pos[None, :] <= qt[:, None]) & (hist < V)  # (N, T) history up to and including the query
        # the user's own visit counts per venue
        count = torch.zeros(N, V + 1, device=h.device).scatter_add_(1, hist, seen.float())
        count = count.scatter_add_(1, batch.pre_venue[qb], batch.pre_count[qb])[:, :V]  # (N, V)
        gen = torch.addcmul(gen, w[:, 0:1], torch.log1p(count))
        # the user's own transitions out of the current venue: s where event s-1 was at `cur`
        prev = torch.cat([torch.full_like(hist[:, :1], V), hist[:, :-1]], dim=1)  # (N, T)
        from_cur = seen & (prev == cur[:, None]) & (cur[:, None] < V)
        user_tr = torch.zeros(N, V + 1, device=h.device).scatter_add_(1, hist, from_cur.float())
        pre_from_cur = (batch.pre_src[qb] == cur[:, None]) & (cur[:, None] < V)  # (N, Q)
        user_tr = user_tr.scatter_add_(1, batch.pre_dst[qb], batch.pre_tr_count[qb] * pre_from_cur)[:, :V]
        gen = torch.addcmul(gen, w[:, 1:2], torch.log1p(user_tr))
        # everyone's transitions out of the current venue (the world's), leave-one-out in training
        if V > MAX_DENSE_VENUES:
            glob_tr = self._markov_rows_into(cur, torch.empty(N, V, device=h.device), log1p=False)
        else:
            glob_tr = self._tables()[0][cur]  # (N, V)
        if targets is not None:
            rows = ((cur < V) & (targets >= 0)).nonzero().squeeze(1)
            glob_tr[rows, targets[rows]] = (glob_tr[rows, targets[rows]] - 1).clamp(min=0)
        gen = torch.addcmul(gen, w[:, 2:3], torch.log1p(glob_tr))
        if self.config.use_spacetime:
            logd = self._distances(batch, qb, qt, cur)
            gen = torch.addcmul(gen, w[:, 3:4], logd)
            gen = torch.addcmul(gen, 0.1 * w[:, 4:5], logd * logd)
        if self.config.use_spacetime and self.config.use_target_time and self.config.hour_kernel > 0:
            # visits at a similar hour to the next event's (given) time: home at night, work by day
            nt = batch.next_time[qb, qt]  # (N, 7): sin/cos blocks, hour of day at 0 (sin) and 3 (cos)
            ev = batch.cont[qb]  # (N, T, 8)
            sim = nt[:, 0:1] * ev[..., 0] + nt[:, 3:4] * ev[..., 3]  # (N, T) cos(hour difference)
            given = batch.next_time_given[qb, qt].float()[:, None]  # (N, 1)
            kernel = torch.exp(self.config.hour_kernel * (sim - 1)) * seen.float() * given
            at_hour = torch.zeros(N, V + 1, device=h.device).scatter_add_(1, hist, kernel)[:, :V]
            gen = torch.addcmul(gen, w[:, 5:6], torch.log1p(at_hour))
        # pointer over the user's own past events, with a learned recency bias
        q = self.ptr_q(h)  # (B, T, C)
        k = self.ptr_k(h)  # (B, T, C)
        att = (q @ k.transpose(1, 2))[qb, qt] / math.sqrt(q.shape[-1])  # (B, T, T) -> (N, T)
        att = att + self.ptr_rel(relative_buckets(qt[:, None] - pos[None, :])).squeeze(-1)
        att = att.masked_fill(~seen, float("-inf"))
        any_seen = seen.any(1, keepdim=True)  # (N, 1): rows with no known past venue cannot copy
        att = torch.where(any_seen, att, torch.zeros_like(att))
        p_att = F.softmax(att, dim=-1) * seen.float()  # (N, T)
        p_copy = torch.zeros(N, V + 1, device=h.device).scatter_add_(1, hist, p_att)[:, :V]  # (N, V)
        g = torch.sigmoid(self.gate(hq)) * any_seen.float()  # (N, 1)
        p = torch.lerp(F.softmax(gen, dim=-1), p_copy, g)  # (N, V) = g * p_copy + (1 - g) * softmax
        return torch.log(p + 1e-12), cat_logits

    def _dense_tables_due(self, n: int) -> bool:
        """Whether expected_text takes its next `n` query rows from the dense (V + 1, V) tables.

        The tables cost about a second and 300 MB to build for 5k venues, more than a dynamic
        update or an explanation spends on everything else; so the rows are computed for the
        queries alone (_markov_rows_into, _distance_rows_into) until this model has answered V query
        rows that way: from then on the tables pay for themselves (a full score). Same numbers.
        """
        if self.n_venues > MAX_DENSE_VENUES:
            return False
        if self._markov_dense is not None or self._rows_without_tables + n > self.n_venues:
            return True
        self._rows_without_tables += n
        return False

    def _markov_rows_into(self, cur: torch.Tensor, out: torch.Tensor, log1p: bool = True) -> torch.Tensor:
        """(N, V) rows `cur` of _log1p_markov() (row V: zeros), computed from the sparse counts into
        `out`; the raw counts with `log1p=False`."""
        V = self.n_venues
        if self._markov_rows is None:  # counts sorted by source venue (duplicate pairs summed)
            key, inverse = torch.unique(self.markov_src * V + self.markov_dst, return_inverse=True)
            summed = torch.zeros(len(key), device=key.device).index_add_(0, inverse, self.markov_count)
            ptr = torch.searchsorted(key // V, torch.arange(V + 2, device=key.device))  # rows 0..V (V: none)
            self._markov_rows = (ptr, key % V, summed)
        ptr, dst, value = self._markov_rows
        if log1p:
            value = torch.log1p(value)
        n_out = ptr[cur + 1] - ptr[cur]  # (N,) transitions out of each query's venue
        row = torch.repeat_interleave(torch.arange(len(cur), device=cur.device), n_out)  # (M,)
        first = torch.repeat_interleave(ptr[cur] - (n_out.cumsum(0) - n_out), n_out)
        at = torch.arange(len(row), device=cur.device) + first  # (M,) index into the sorted transitions
        out.zero_()[row, dst[at]] = value[at]
        return out

    def _distance_rows_into(
        self, batch: Batch, qb: torch.Tensor, qt: torch.Tensor, cur: torch.Tensor, out: torch.Tensor, work: torch.Tensor
    ) -> torch.Tensor:
        """(N, V) log distances from each query's venue (unknown: the event's own place), computed
        in `out` (and the (N, V) buffer `work`)."""
        V = self.n_venues
        known = cur < V
        lat = torch.where(known, self.venue_lat[cur.clamp(max=V - 1)], batch.lat[qb, qt])  # (N,)
        lon = torch.where(known, self.venue_lon[cur.clamp(max=V - 1)], batch.lon[qb, qt])
        return self._log_distance(lat[:, None], lon[:, None], out, work)

    def _log1p_markov(self) -> torch.Tensor:
        """(V + 1, V) log1p of the global transition counts, derived once (the head takes it per query)."""
        counts = self._tables()[0]
        if self._log1p_markov_dense is None or self._log1p_markov_dense.device != counts.device:
            self._log1p_markov_dense = torch.log1p(counts)
        return self._log1p_markov_dense

    def _gen_table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(V,) bias, (C, V) matrix of the dot-product logits and that matrix centred over the
        venues in bfloat16 (see bfloat16_scoring), derived once per version of the weights."""
        params = [self.to_text.weight, self.to_text.bias, self.pop_weight] + ([self.id_out] if hasattr(self, "id_out") else [])
        key = (self._world_version, *((id(p), p._version) for p in params))
        if getattr(self, "_gen_key", None) != key:
            rep = self.venue_repr()  # (V, E)
            rep_c_t = (rep @ self.to_text.weight).T.contiguous()  # (C, V)
            # a row's logits may move by a constant (the softmax does not see it): centring the venues
            # halves the logits' size and with it bfloat16's rounding of them
            centred = (rep_c_t - rep_c_t.mean(1, keepdim=True)).to(torch.bfloat16)  # (C, V)
            self._gen_cache = (self._gen_bias(rep), rep_c_t, centred)
            self._gen_key = key
        return self._gen_cache

    @torch.inference_mode()
    def expected_text(
        self, h: torch.Tensor, batch: Batch, qb: torch.Tensor, qt: torch.Tensor,
        workspace: dict[str, Any] | None = None, sharpness: float | tuple[float, ...] = 1.0,
    ) -> torch.Tensor:
        """(N, E) expected venue text embedding sum_v p(v) * venue_text[v] at query positions (qb, qt).

        `sharpness` a: the expectation under p^a / sum p^a instead (a > 1 leans on the likeliest
        venues; `sharpen`); a tuple of them: (S, N, E), one expectation each, from one p.

        The same p as `head` (tests/model/test_network.py checks exp(head) @ venue_text against it), computed
        for inference with fewer and cheaper (N, V) passes:
        * the user's own count / transition / hour features are non-zero only at the venues of the
          user's history, so each is summed over those venues (N, K), not scattered onto (N, V);
          the pointer's mass is added at those venues too; the global transition table is
          log1p-ed once;
        * everything of size V runs in blocks of EXPECTED_BLOCK_ROWS rows whose buffers stay in a
          core's cache (about ten passes over 64 x V floats are several times cheaper there than
          over 1,024 x V in memory), taken from `workspace` (pass the same dict to every call);
        * with `config.score_bfloat16` (bfloat16_scoring) the logits product runs in bfloat16: an
          approximation (tests/model/test_network.py states its bound), everything after it float32.
        """
        if not self.config.use_copy:
            p = self.head(h, batch, qb, qt)[0].exp()  # (N, V)
            if isinstance(sharpness, tuple):
                return torch.stack([expectation(p, a, self.venue_text) for a in sharpness])
            return expectation(p, sharpness, self.venue_text)
        V = self.n_venues
        T = h.shape[1]
        N = len(qb)
        dev = h.device
        ws = {} if workspace is None else workspace
        hq = h[qb, qt]  # (N, C)
        w = self.feature_weights(hq)  # (N, F)
        hist = batch.venue[qb]  # (N, T)
        cur = hist.gather(1, qt[:, None]).squeeze(1)  # (N,)
        pos = torch.arange(T, device=dev)
        seen = (pos[None, :] <= qt[:, None]) & (hist < V)  # (N, T)
        # sparse features: visits, own transitions, visits at a similar hour, each summed per distinct
        # venue of the row's history, over the venues it can be non-zero at only (sorted once per
        # window: a run of equal venues is one venue); each distinct venue gets w_f * log1p(sum) once
        if ws.get("runs_of") is not batch:
            moves = _moves_from_window_venues(batch, V)  # (B, Q') source, destination, count
            ws["runs"], ws["moves"], ws["runs_of"] = {
                "visits": _venue_runs(torch.cat([batch.venue, batch.pre_venue], dim=1)),  # (B, T + P)
                "moves": _venue_runs(torch.cat([batch.venue, moves[1]], dim=1)),  # (B, T + Q')
                "hour": _venue_runs(batch.venue),  # (B, T)
            }, moves, batch
        ats, extras = [], []

        def add_feature(runs: str, values: torch.Tensor, weight: torch.Tensor) -> None:
            venues, order, first, run = (x[qb] for x in ws["runs"][runs])  # (N, K) each
            sums = torch.zeros(values.shape, device=dev).scatter_add_(1, run, values.gather(1, order))
            ats.append(venues.clamp(max=V - 1))
            extras.append((torch.log1p_(sums) * weight).gather(1, run) * (first & (venues < V)))  # padding adds 0

        add_feature("visits", torch.cat([seen.float(), batch.pre_count[qb]], dim=1), w[:, 0:1])
        prev = torch.cat([torch.full_like(hist[:, :1], V), hist[:, :-1]], dim=1)  # (N, T)
        from_cur = seen & (prev == cur[:, None]) & (cur[:, None] < V)
        pre_src, _, pre_tr_count = ws["moves"]
        pre_from_cur = (pre_src[qb] == cur[:, None]) & (cur[:, None] < V)  # (N, Q')
        add_feature("moves", torch.cat([from_cur.float(), pre_tr_count[qb] * pre_from_cur], dim=1), w[:, 1:2])
        if self.config.use_spacetime and self.config.use_target_time and self.config.hour_kernel > 0:
            given = batch.next_time_given[qb, qt]  # (N,)
            if given.any():  # without the next event's time the feature is 0 everywhere
                nt = batch.next_time[qb, qt]  # (N, 7)
                ev = batch.cont[qb]  # (N, T, 8)
                sim = nt[:, 0:1] * ev[..., 0] + nt[:, 3:4] * ev[..., 3]  # (N, T)
                kernel = torch.exp(self.config.hour_kernel * (sim - 1)) * seen.float() * given.float()[:, None]
                add_feature("hour", kernel, w[:, 5:6])
        at, extra = torch.cat(ats, dim=1), torch.cat(extras, dim=1)  # (N, K) where to add what
        # pointer over the user's own past events, exactly as in `head`
        if ws.get("pointer_of") is not h:  # the (B, T, T) pointer scores, once per hidden batch
            q = self.ptr_q(h)  # (B, T, C)
            k = self.ptr_k(h)  # (B, T, C)
            ws["pointer"], ws["pointer_of"] = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), h
        if ws.get("rel_of") != T:  # recency bias by distance d = qt - pos, d in [-(T-1), T-1]
            ws["rel"], ws["rel_of"] = self.ptr_rel(relative_buckets(torch.arange(-T + 1, T, device=dev))).squeeze(-1), T
        att = ws["pointer"][qb, qt] + ws["rel"][qt[:, None] - pos[None, :] + T - 1]  # (N, T)
        att = att.masked_fill(~seen, float("-inf"))
        any_seen = seen.any(1, keepdim=True)  # (N, 1)
        att = torch.where(any_seen, att, torch.zeros_like(att))
        g = torch.sigmoid(self.gate(hq)) * any_seen.float()  # (N, 1)
        copy = F.softmax(att, dim=-1) * seen.float() * g  # (N, T) g * p_copy at the history's venues
        keep = 1.0 - g  # (N, 1) the generative part's share
        # dense part, block by block
        R = EXPECTED_BLOCK_ROWS
        if "gen" not in ws or ws["gen"].shape != (R, V):
            ws.update(gen=torch.empty(R, V, device=dev), tmp=torch.empty(R, V, device=dev),
                      work=torch.empty(R, V, device=dev))
        dense = self._dense_tables_due(N)
        bias, rep_c_t, rep_low = self._gen_table()
        hq_low = hq.to(torch.bfloat16) if bfloat16_scoring(self.config) else None  # (N, C)
        if hq_low is not None and ws.get("gen_low", torch.empty(0)).shape != (R, V):
            ws["gen_low"] = torch.empty(R, V, dtype=torch.bfloat16, device=dev)
        log1p_markov = self._log1p_markov() if dense else None
        logd_table = self._tables()[1] if dense and self.config.use_spacetime else None
        variants = sharpness if isinstance(sharpness, tuple) else (sharpness,)
        out = torch.zeros(len(variants), N, self.text_dim, device=dev)
        kept: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in variants]  # sparse rows
        for i in range(0, N, R):
            j = min(N, i + R)
            gen, tmp = ws["gen"][: j - i], ws["tmp"][: j - i]
            if hq_low is None:
                torch.addmm(bias, hq[i:j], rep_c_t, out=gen)  # (n, V) interest . venue_repr + bias, as in `head`
            else:  # the same up to a constant per row, in bfloat16 (products summed in float32)
                torch.add(bias, torch.mm(hq_low[i:j], rep_low, out=ws["gen_low"][: j - i]), out=gen)
            c = cur[i:j]
            if log1p_markov is not None:  # everyone's transitions out of `cur`
                gen.addcmul_(w[i:j, 2:3], torch.index_select(log1p_markov, 0, c, out=tmp))
            else:
                gen.addcmul_(w[i:j, 2:3], self._markov_rows_into(c, tmp))
            if self.config.use_spacetime:  # distances from the current place
                if logd_table is not None:
                    logd = torch.index_select(logd_table, 0, c, out=tmp)  # (n, V), as _distances
                    unknown = (c >= V).nonzero().squeeze(1)
                    if len(unknown):
                        u = unknown + i
                        logd[unknown] = self._log_distance(batch.lat[qb[u], qt[u]][:, None], batch.lon[qb[u], qt[u]][:, None])
                else:
                    logd = self._distance_rows_into(batch, qb[i:j], qt[i:j], c, tmp, ws["work"][: j - i])
                gen.addcmul_(w[i:j, 3:4], logd)
                gen.addcmul_(0.1 * w[i:j, 4:5], logd.mul_(logd))
            gen.scatter_add_(1, at[i:j], extra[i:j])
            p = torch.ops.aten._softmax.out(gen, -1, False, out=tmp).mul_(keep[i:j])
            p.scatter_add_(1, hist[i:j].clamp(max=V - 1), copy[i:j])  # (n, V); padding carries 0
            for s, a in enumerate(variants):  # as `expectation`, its sparse products once per call
                rows, cols = kept_venues(p, a, EXPECTATION_PRUNE) if a != 1 and EXPECTATION_PRUNE > 0 else (None, None)
                if rows is None or len(rows) >= SPARSE_SHARE * p.numel():
                    out[s, i:j] = expectation(p, a, self.venue_text, gen)
                else:
                    kept[s].append((rows + i, cols, p[rows, cols]))
        for s, a in enumerate(variants):
            if kept[s]:  # rows that went dense have no entries here: they get zeros added
                rows, cols, values = (torch.cat(parts) for parts in zip(*kept[s]))
                out[s] += sparse_expectation(rows, cols, values, a, N, self.venue_text)
        return out if isinstance(sharpness, tuple) else out[0]

    # ------------------------------------------------------------------ API
    def forward(
        self, batch: Batch, targets: torch.Tensor | None = None, target_categories: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(venue log-probs at the query positions, loss or None).

        With targets (B, T) (-1 = no target), every position with a target is a query and the loss
        is next-venue NLL + category_loss_weight * next-category cross-entropy. Without, the query
        is the last real event of each row (scoring).
        """
        h = self.hidden(batch)  # (B, T, C)
        if targets is None:
            qb = torch.arange(h.shape[0], device=h.device)
            qt = batch.length - 1
            logp, _ = self.head(h, batch, qb, qt)
            return logp, None
        qb, qt = (targets >= 0).nonzero(as_tuple=True)
        y = targets[qb, qt]
        logp, cat_logits = self.head(h, batch, qb, qt, targets=y)
        loss = F.nll_loss(logp, y)
        if target_categories is not None and self.config.category_loss_weight > 0:
            yc = target_categories[qb, qt]
            loss = loss + self.config.category_loss_weight * F.cross_entropy(cat_logits, yc, ignore_index=-1)
        return logp, loss

    def score_last(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V) venue log-probs and (B, K) category scores after the last real event of each row."""
        h = self.hidden(batch)
        qb = torch.arange(h.shape[0], device=h.device)
        qt = batch.length - 1
        logp, cat_logits = self.head(h, batch, qb, qt)
        # Category: probability mass of its venues, plus the category head as a tie-breaker.
        mass = torch.zeros(len(qb), self.n_categories, device=h.device)
        mass.index_add_(1, self.venue_category, logp.exp())
        return logp, torch.log(mass + 1e-12) + 1e-3 * F.log_softmax(cat_logits, dim=-1)

