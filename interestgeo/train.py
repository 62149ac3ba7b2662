"""Training, checkpoints and scoring for the interest model.

Why this module holds both training and the `InterestScorer`: both turn an events frame into the
same padded windows (`EventTable` -> `Batch`), and keeping that in one place is what guarantees
that the model is scored on exactly the inputs it was trained on.

Data flow: split (split.py) -> text vectors (text.py, cached in the store) -> `EventTable`
(per-event arrays) -> training windows of the user's training-period events -> AdamW with early
stopping on validation MRR -> checkpoint (safetensors weights + config/metrics/meta JSON),
registered in the store's `checkpoints` table. `InterestScorer.from_checkpoint` loads it back.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from interestgeo.config import Config, ModelConfig
from interestgeo.model import N_NEXT_TIME, Batch, InterestModel, ModelData
from interestgeo.spacetime import CellVocab, event_features
from interestgeo.calibration import calibration_cutoff
from interestgeo.metrics import rank_metrics
from interestgeo.world import World, world_from_events, world_from_split

if TYPE_CHECKING:
    from interestgeo.store import Store
    from interestgeo.text import Progress, TextEncoder

__all__ = [
    "ABLATIONS",
    "CheckpointError",
    "EventTable",
    "InterestScorer",
    "TrainResult",
    "checkpoint_dir",
    "load_checkpoint",
    "model_scorers",
    "SHIPPED_MODELS_DIR",
    "shipped_model_dir",
    "has_usable_checkpoint",
    "register_checkpoint",
    "save_checkpoint",
    "train_ablations",
    "train_model",
    "train_on_split",
]

# Ablations of the full model: same code, switches in ModelConfig (see the table).
ABLATIONS: dict[str, dict[str, Any]] = {
    "sasrec-id-only": dict(use_text=False, use_spacetime=False, use_copy=False, use_item_id=True),
    "no-text": dict(use_text=False),
    "no-spacetime": dict(use_spacetime=False),
    "no-copy": dict(use_copy=False),
}


# ---------------------------------------------------------------------------- data
@dataclass
class EventTable:
    """Per-event model inputs for one events frame (rows in frame order), plus per-user row ranges."""

    venue: np.ndarray  # (N,) int64 in [0, V]; V = unknown venue
    category: np.ndarray  # (N,) int64, -1 = unknown category
    text: np.ndarray  # (U + 1, E) float32 distinct text embeddings; row 0 zeros (padding, rows without inputs)
    text_row: np.ndarray  # (N,) int64 each event's row of `text`
    cells: np.ndarray  # (N, R) int64
    lat: np.ndarray  # (N,) float32
    lon: np.ndarray  # (N,) float32
    cont: np.ndarray  # (N, 8) float32
    next_time: np.ndarray  # (N, 7) float32 time features of the same user's next event (zeros if none)
    user_start: np.ndarray  # (N,) int64 first row of this event's user
    n_venues: int  # V: the venue id used for unknown venues and padding

    @classmethod
    def build(
        cls,
        events: pd.DataFrame,
        venue: np.ndarray,
        category: np.ndarray,
        text_vectors: np.ndarray,
        vocab: CellVocab,
        n_venues: int,
        rows: np.ndarray | None = None,
        text_codes: np.ndarray | None = None,
    ) -> EventTable:
        """`venue` (N,) each event's venue idx (`n_venues`: unknown) and `category` (N,) its
        category idx (-1: unknown), from a World; `text_vectors` is one row per event (per row of
        `rows`), or with `text_codes` (one per event / row of `rows`) the distinct vectors they index:
        a (N, E) copy per event would cost a fresh process more in page faults than its use.

        `rows` (N,) bool: only these rows get model inputs (text, cells, place, time); the others
        keep their venue and user only, which is all the visit and transition counts before a
        window read (a dynamic update reads a long history for the counts, but runs the model over
        a few windows of it). Their inputs are zeros.
        """
        n = len(events)
        venue = np.asarray(venue, dtype=np.int64)
        category = np.asarray(category, dtype=np.int64)
        user_start = user_starts(events)
        new_user = user_start == np.arange(n)
        if rows is None:
            at = np.arange(n)  # the rows whose inputs are built
        else:
            # the rows' features read the previous event (gap, distance) and the next (its time)
            rows = np.asarray(rows, dtype=bool)
            ctx = rows.copy()
            ctx[:-1] |= rows[1:] & ~new_user[1:]
            ctx[1:] |= rows[:-1] & ~new_user[1:]
            at = np.flatnonzero(ctx)
            events = events.iloc[at]
        category_at = category[at]
        feats = event_features(events)
        nt = np.zeros((len(at), N_NEXT_TIME), dtype=np.float32)  # time features of each row's next event
        if len(at) > 1:
            has_next = (at[1:] == at[:-1] + 1) & ~new_user[at[1:]]  # the next row is there, same user
            nxt = np.concatenate([feats.cont[1:, :6], np.log1p(feats.gap_hours[1:])[:, None]], axis=1)
            nt[:-1][has_next] = nxt[has_next]

        def spread(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
            """Values at the rows of `at` -> (N, ...) with only `rows` filled."""
            if rows is None:
                return values
            out = np.full((n, *values.shape[1:]), fill, dtype=values.dtype)
            keep = rows[at]
            out[at[keep]] = values[keep]
            return out

        text = np.asarray(text_vectors, dtype=np.float32)
        codes = np.arange(len(text)) if text_codes is None else np.asarray(text_codes, dtype=np.int64)
        text_row = np.zeros(n, dtype=np.int64)
        text_row[slice(None) if rows is None else rows] = codes + 1
        return cls(
            venue=venue,
            category=spread(category_at, -1),
            text=np.concatenate([np.zeros((1, text.shape[1]), dtype=np.float32), text]),
            text_row=text_row,
            cells=spread(vocab.lookup(events["cell"].to_numpy(dtype=np.int64))),
            lat=spread(feats.lat.astype(np.float32)),
            lon=spread(feats.lon.astype(np.float32)),
            cont=spread(feats.cont),
            next_time=spread(nt),
            user_start=user_start,
            n_venues=n_venues,
        )

    def _before_windows(self, windows: list[tuple[int, int]]) -> list[np.ndarray]:
        """Visit counts and transition counts of each window's user before the window starts."""
        V = self.n_venues
        visits, transitions = [], []
        for s, e in windows:
            u = int(self.user_start[s]) if s < len(self.user_start) else s
            before = self.venue[u:s]
            before = before[before < V]
            ids, counts = np.unique(before, return_counts=True)
            visits.append((ids, counts.astype(np.float32)))
            # transitions (i-1 -> i) for i in (u, s]: the one into the window's first event included
            src, dst = self.venue[u:s], self.venue[u + 1 : s + 1]
            ok = (src < V) & (dst < V)
            keys, tr_counts = np.unique(src[ok] * (V + 1) + dst[ok], return_counts=True)
            transitions.append((keys // (V + 1), keys % (V + 1), tr_counts.astype(np.float32)))
        pre_v, pre_c = _padded(visits, (V, 0.0), (np.int64, np.float32))
        pre_s, pre_d, pre_t = _padded(transitions, (V, V, 0.0), (np.int64, np.int64, np.float32))
        return [pre_v, pre_c, pre_s, pre_d, pre_t]

    def batch(self, windows: list[tuple[int, int]], max_len: int, time_given: np.ndarray | bool) -> Batch:
        """Right-padded Batch of row ranges [start, end); `time_given` per window or for all."""
        B = len(windows)
        T = max(1, max(e - s for s, e in windows))
        T = min(T, max_len)
        idx = np.zeros((B, T), dtype=np.int64)
        valid = np.zeros((B, T), dtype=bool)
        for b, (s, e) in enumerate(windows):
            L = e - s
            idx[b, :L] = np.arange(s, e)
            valid[b, :L] = True
        venue = np.where(valid, self.venue[idx], self.n_venues)
        given_rows = np.broadcast_to(np.asarray(time_given, dtype=bool), (B,))
        given = given_rows[:, None] & valid  # (B, T)
        pre_v, pre_c, pre_s, pre_d, pre_t = self._before_windows(windows)
        return Batch(
            pre_venue=torch.from_numpy(pre_v),
            pre_count=torch.from_numpy(pre_c),
            pre_src=torch.from_numpy(pre_s),
            pre_dst=torch.from_numpy(pre_d),
            pre_tr_count=torch.from_numpy(pre_t),
            venue=torch.from_numpy(venue),
            text=torch.from_numpy(self.text[np.where(valid, self.text_row[idx], 0)]),  # (B, T, E), padding 0
            cells=torch.from_numpy(self.cells[idx] * valid[..., None]),
            lat=torch.from_numpy(self.lat[idx]),
            lon=torch.from_numpy(self.lon[idx]),
            cont=torch.from_numpy(self.cont[idx] * valid[..., None]),
            next_time=torch.from_numpy(self.next_time[idx] * valid[..., None]),
            next_time_given=torch.from_numpy(np.ascontiguousarray(given)),
            length=torch.tensor([e - s for s, e in windows], dtype=torch.int64),
        )


def _padded(groups: list[tuple[np.ndarray, ...]], pads: tuple[float, ...], dtypes: tuple[Any, ...]) -> list[np.ndarray]:
    """Stack per-row arrays of different lengths into (B, max_len) arrays padded with `pads`."""
    width = max([len(g[0]) for g in groups] + [1])
    out = [np.full((len(groups), width), pad, dtype=dt) for pad, dt in zip(pads, dtypes)]
    for b, group in enumerate(groups):
        for arr, values in zip(out, group):
            arr[b, : len(values)] = values
    return out


def user_starts(events: pd.DataFrame) -> np.ndarray:
    """(N,) int64 first row of each row's user (events in store.events() order)."""
    n = len(events)
    new_user = np.ones(n, dtype=bool)
    if n > 1:  # a user is (dataset_id, user_id): compared column by column (joined keys cost 3x as much)
        dataset = events["dataset_id"].to_numpy()
        user = events["user_id"].to_numpy(dtype=object)
        new_user[1:] = (dataset[1:] != dataset[:-1]) | (user[1:] != user[:-1])
    starts = np.flatnonzero(new_user)
    return np.repeat(starts, np.diff(np.append(starts, n))).astype(np.int64)


def history_windows(starts: np.ndarray, ends: np.ndarray, max_len: int) -> list[tuple[int, int]]:
    """Row ranges [max(start, end - max_len), end) — the last max_len events before each end."""
    return [(int(max(s, e - max_len)), int(e)) for s, e in zip(starts, ends)]


def cover_windows(start: int, end: int, max_len: int) -> list[tuple[int, int, int]]:
    """Windows (s, e, first_owned) covering rows [start, end): each row is owned by exactly one
    window, in which it has at least max_len/2 rows of context (or every row before it).

    The windows sit on a fixed grid from the user's first row (every max_len/2 rows), so a row's
    output never depends on how many rows come after it: appending events changes nothing earlier.
    """
    half = max(1, max_len // 2)
    out = [(start, min(start + max_len, end), start)]
    s = start + half
    while s + half < end:
        out.append((s, min(s + max_len, end), s + half))
        s += half
    return out


# A batch of windows is cut where padding it to its longest window would waste more than this share
# of its positions and more than _PADDING_SLACK positions (small waste costs less than another call).
# Measured on a known-user update (NYC, 1,000 events): 12.5% / 1,024 padded 14% of the positions,
# 5% / 256 padded 7% and took 5-8% less time over the trunk and head.
_PADDING_SHARE = 0.05
_PADDING_SLACK = 256
# Positions (windows x padded length) per batch at most: the trunk's activations stay a few MB,
# cache-sized and reused from batch to batch (32k-position batches measured 5-10% slower per
# dynamic update, most of it in a fresh process's first batches; 2,048 a few % faster than 4,096,
# 1,024 slower again: per-batch steps).
_MAX_BATCH_POSITIONS = 2048


def length_batches(lengths: list[int], max_windows: int) -> list[tuple[int, int]]:
    """[i, j) ranges of `lengths` (window lengths, ascending) to run as one right-padded batch each.

    At most `max_windows` and _MAX_BATCH_POSITIONS positions per batch, and a new batch where the
    next window would make the padding too big (above): an update's windows range from a few
    events to max_len, and one batch padded them all to max_len (40% of the positions were padding).
    """
    out: list[tuple[int, int]] = []
    first, real = 0, 0
    for k, length in enumerate(lengths):
        size = k - first
        padded = (size + 1) * length  # positions if this window joins the batch
        too_big = size == max_windows or padded > _MAX_BATCH_POSITIONS
        if size and (too_big or padded - (real + length) > max(_PADDING_SHARE * (real + length), _PADDING_SLACK)):
            out.append((first, k))
            first, real = k, 0
        real += length
    if first < len(lengths):
        out.append((first, len(lengths)))
    return out


# ---------------------------------------------------------------------------- model inputs
@dataclass
class Prepared:
    """Everything training and scoring need for one split."""

    split: Any
    table: EventTable
    world: World
    vocab: CellVocab

    @property
    def data(self) -> ModelData:
        return self.world.data


def split_table(split: Any, world: World, vocab: CellVocab, text_of: Callable[[list[str]], np.ndarray]) -> EventTable:
    """The model inputs of every event of the split, against `world` (built from the same split)."""
    ev = split.events
    codes, uniq = pd.factorize(ev["text"].fillna("").astype(str))
    venue = np.where(ev["venue_idx"].to_numpy() >= 0, ev["venue_idx"].to_numpy(), world.n_venues)
    category = world.categories_of(ev)
    return EventTable.build(ev, venue, category, text_of(list(uniq)), vocab, world.n_venues, text_codes=codes)


def prepare(split: Any, config: ModelConfig, text_of: Callable[[list[str]], np.ndarray]) -> Prepared:
    """`text_of(texts) -> (N, E)` embeds texts (through the store cache in production)."""
    ev = split.events
    train = (ev["part"] == "train").to_numpy()
    vocab = CellVocab.build(ev.loc[train, "cell"].to_numpy(dtype=np.int64), tuple(config.cell_resolutions))
    world = world_from_split(split, text_of, vocab.sizes())
    return Prepared(split, split_table(split, world, vocab, text_of), world, vocab)


def training_windows(prep: Prepared, max_len: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Windows over each user's training-period events with (B, T) next-venue/category targets."""
    ev = prep.split.events
    t = prep.table
    train = (ev["part"] == "train").to_numpy()
    n = len(ev)
    target_v = np.full(n, -1, dtype=np.int64)
    target_c = np.full(n, -1, dtype=np.int64)
    nxt_same = np.zeros(n, dtype=bool)
    nxt_same[:-1] = t.user_start[1:] == t.user_start[:-1]
    ok = np.zeros(n, dtype=bool)
    ok[:-1] = nxt_same[:-1] & train[1:] & train[:-1] & (t.venue[1:] < prep.world.n_venues)
    target_v[:-1] = np.where(ok[:-1], t.venue[1:], -1)
    target_c[:-1] = np.where(ok[:-1], t.category[1:], -1)
    windows: list[tuple[int, int]] = []
    tv, tc = [], []
    starts = np.unique(t.user_start)
    ends = np.append(starts[1:], n)
    for s, e in zip(starts, ends):
        rows = np.flatnonzero(train[s:e])
        if len(rows) < 2:
            continue
        e_train = s + rows[-1] + 1  # training events are a time prefix of the user's events
        for ws, we, owned in cover_windows(int(s), int(e_train), max_len):
            windows.append((ws, we))
            v = target_v[ws:we].copy()
            c = target_c[ws:we].copy()
            v[: owned - ws] = -1
            c[: owned - ws] = -1
            tv.append(v)
            tc.append(c)
    T = max_len
    V = np.full((len(windows), T), -1, dtype=np.int64)
    C = np.full((len(windows), T), -1, dtype=np.int64)
    for i, (v, c) in enumerate(zip(tv, tc)):
        V[i, : len(v)] = v
        C[i, : len(c)] = c
    return windows, V, C


# ---------------------------------------------------------------------------- scoring
@torch.no_grad()
def score_histories(
    model: InterestModel,
    table: EventTable,
    history_start: np.ndarray,
    history_end: np.ndarray,
    time_given: bool,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, V) venue log-probs and (n, K) category scores for the event after rows [start, end).

    The model reads the last max_len rows of each history; with `time_given` it also sees the
    time of the predicted event (the time features of row `end`, the next row of that user).
    """
    model.eval()
    wins = history_windows(np.asarray(history_start), np.asarray(history_end), model.config.max_len)
    out_v = np.full((len(wins), model.n_venues), -np.inf, dtype=np.float32)
    out_c = np.full((len(wins), model.n_categories), -np.inf, dtype=np.float32)
    for i in range(0, len(wins), batch_size):
        w = wins[i : i + batch_size]
        keep = [j for j, (s, e) in enumerate(w) if e > s]  # an empty history cannot be scored
        if not keep:
            continue
        batch = table.batch([w[j] for j in keep], model.config.max_len, time_given)
        v, c = model.score_last(batch)
        out_v[i + np.array(keep)] = v.numpy()
        out_c[i + np.array(keep)] = c.numpy()
    return out_v, out_c


def score_rows(
    model: InterestModel, table: EventTable, samples: Any, time_given: bool, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores for split Samples (their history ranges)."""
    return score_histories(model, table, samples.history_start, samples.history_end, time_given, batch_size)


# ---------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    model: InterestModel
    prep: Prepared
    metrics: dict[str, Any]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train_on_split(
    split: Any,
    config: ModelConfig,
    text_of: Callable[[list[str]], np.ndarray],
    *,
    prep: Prepared | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    time_budget_s: float | None = None,
) -> TrainResult:
    """Train on the split's training events, early-stopping on validation MRR; returns the best model.

    `init_state`: warm-start from these weights (fine-tuning); their own validation MRR is the
    score to beat, so a fine-tune that does not help returns them unchanged. `time_budget_s`: stop
    after the batch that passes it (the epoch is validated, the best state kept). `progress`
    hears of each batch ("epoch N", batches done, batches, "loss=…"); `log` gets one line per epoch.
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    prep = prep or prepare(split, config, text_of)
    model = InterestModel(config, prep.data)
    if init_state is not None:
        model.load_state_dict(init_state, strict=True)
    windows, tv, tc = training_windows(prep, config.max_len)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n and not n.startswith(("id_", "spacetime.cells"))]
    other = [p for n, p in model.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    rng = np.random.default_rng(config.seed)
    best: dict[str, Any] = {"mrr": -1.0, "epoch": 0, "state": None}
    if init_state is not None:
        v, _ = score_rows(model, prep.table, split.val, config.use_target_time, config.eval_batch_size)
        start = rank_metrics(v, split.val.venue)
        best = {"mrr": start["mrr"], "epoch": 0, "state": {k: x.detach().clone() for k, x in model.state_dict().items()}}
        if log:
            log(f"warm start: val acc@1 {start['acc@1']:.4f}  val mrr {start['mrr']:.4f}")
    history = []
    t0 = time.perf_counter()
    bad = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(windows))
        losses = []
        starts = range(0, len(order), config.batch_size)
        for done, i in enumerate(starts, 1):
            idx = order[i : i + config.batch_size]
            given = rng.random(len(idx)) >= config.target_time_dropout
            batch = prep.table.batch([windows[j] for j in idx], config.max_len, given)
            T = batch.venue.shape[1]
            _, loss = model(batch, torch.from_numpy(tv[idx, :T]), torch.from_numpy(tc[idx, :T]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            if progress is not None:
                progress(f"epoch {epoch}", done, len(starts), f"loss={np.mean(losses[-20:]):.3f}")
            if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
                break
        out_of_time = time_budget_s is not None and time.perf_counter() - t0 > time_budget_s
        v, _ = score_rows(model, prep.table, split.val, config.use_target_time, config.eval_batch_size)
        val = rank_metrics(v, split.val.venue)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **{f"val_{k}": x for k, x in val.items()}})
        msg = f"epoch {epoch}: loss {np.mean(losses):.4f}  val acc@1 {val['acc@1']:.4f}  val mrr {val['mrr']:.4f}  ({time.perf_counter() - t0:.0f}s)"
        if log:
            log(msg)
        if val["mrr"] > best["mrr"]:
            best = {"mrr": val["mrr"], "epoch": epoch, "state": {k: x.detach().clone() for k, x in model.state_dict().items()}}
            bad = 0
        else:
            bad += 1
            if bad >= config.patience:
                break
        if out_of_time:
            if log:
                log(f"time budget of {time_budget_s / 60:g} min reached")
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    metrics = {
        "best_epoch": best["epoch"],
        "val_mrr": best["mrr"],
        "train_seconds": time.perf_counter() - t0,
        "history": history,
        "train_windows": len(windows),
    }
    return TrainResult(model, prep, metrics)


# ---------------------------------------------------------------------------- checkpoints
def checkpoint_dir(config: Config) -> Path:
    """Where checkpoints go: config.model.checkpoint_dir, else `models/` beside the database."""
    if config.model.checkpoint_dir is not None:
        return Path(config.model.checkpoint_dir)
    return Path(config.store.path).resolve().parent / "models"


def save_checkpoint(
    store: Store, config: Config, name: str, model: InterestModel, prep: Prepared, metrics: dict[str, Any],
    *, folder: Path | None = None, half: bool = False, trained_on: list[dict[str, Any]] | None = None,
) -> int:
    """Write weights (safetensors) + config/metrics/meta JSON to a new folder and register it.

    `folder`: write there (default: a new folder under checkpoint_dir); `half`: float tensors as
    float16 (the shipped model: half the size, the same rankings); `trained_on`: the datasets and
    periods the weights saw (`evaluate --dataset` refuses a checkpoint that saw its test period).
    """
    if folder is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = checkpoint_dir(config) / f"{name.replace(':', '-').replace('/', '-')}-{stamp}"
    folder.mkdir(parents=True, exist_ok=False)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    for res, cells in zip(prep.vocab.resolutions, prep.vocab.cells):
        tensors[f"vocab.cells.{res}"] = torch.from_numpy(np.ascontiguousarray(cells))
    save_file(tensors, str(folder / "model.safetensors"))
    config_json = json.dumps(config.to_dict(), indent=2)
    metrics_json = json.dumps(metrics, indent=2)
    meta = {
        "name": name,
        "cell_resolutions": list(prep.vocab.resolutions),
        "text_model_id": metrics.get("text_model_id"),
        "text_dim": model.text_dim,
        "tied_venues": model.tied_venues,
        "tied_categories": model.tied_categories,
        "trained_on": trained_on or [],
    }
    (folder / "config.json").write_text(config_json)
    (folder / "metrics.json").write_text(metrics_json)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return store.add_checkpoint(name, str(folder), config_json, metrics_json)


@dataclass
class LoadedCheckpoint:
    id: int
    name: str
    config: Config
    model: InterestModel  # weights only: its world is set by whoever scores (InterestScorer)
    vocab: CellVocab
    metrics: dict[str, Any]
    meta: dict[str, Any]

    @property
    def text_model_id(self) -> str | None:
        return self.meta.get("text_model_id") or self.metrics.get("text_model_id")

    @property
    def trained_on(self) -> list[dict[str, Any]]:
        return list(self.meta.get("trained_on") or [])


class CheckpointError(Exception):
    """No usable checkpoint (one-line message for users)."""


def load_checkpoint(store: Store, checkpoint_id: int | str | None = None, name: str | None = None) -> LoadedCheckpoint:
    """Load a registered checkpoint: by id, else the newest with `name`, else the newest "model"."""
    if checkpoint_id is not None:
        row = store.checkpoint(int(checkpoint_id))
    else:
        row = store.checkpoint(name=name or "model")
    if row is None:
        what = f"checkpoint {checkpoint_id}" if checkpoint_id is not None else f"checkpoint named {name or 'model'!r}"
        raise CheckpointError(f"no {what} in the store: run `interestgeo train` first")
    return read_checkpoint(Path(row["path"]), int(row["id"]), str(row["name"]))


def read_checkpoint(folder: Path, checkpoint_id: int = 0, name: str | None = None) -> LoadedCheckpoint:
    """The checkpoint in `folder` (safetensors + JSON), float32 on the CPU."""
    if not (folder / "model.safetensors").exists():
        raise CheckpointError(f"checkpoint {checkpoint_id} files are missing at {folder}")
    config = Config.from_dict(json.loads((folder / "config.json").read_text()))
    meta = json.loads((folder / "meta.json").read_text())
    if "text_dim" not in meta:
        raise CheckpointError(
            f"checkpoint {checkpoint_id} at {folder} was made by an older version whose model knew only its "
            "training venues: train again (`interestgeo train`) or use the shipped model (`interestgeo demo`)"
        )
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(folder / "model.safetensors")).items()}
    resolutions = tuple(meta["cell_resolutions"])
    vocab = CellVocab(resolutions, [tensors.pop(f"vocab.cells.{r}").numpy() for r in resolutions])
    model = InterestModel(config.model, placeholder_world(meta["text_dim"], meta.get("tied_venues"), meta.get("tied_categories"), vocab))
    model.load_state_dict(tensors, strict=True)
    model.eval()
    metrics = json.loads((folder / "metrics.json").read_text())
    return LoadedCheckpoint(checkpoint_id, name or str(meta.get("name", "model")), config, model, vocab, metrics, meta)


# The pretrained models that ship with the product, one folder per packaged text encoder (a model reads
# one encoder's vectors): float16 safetensors + JSON; `make model` rebuilds them.
SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "model"


def shipped_model_dir(text_model_id: str) -> Path:
    """The shipped pretrained model for text vectors of `text_model_id` (the folder may not exist)."""
    return SHIPPED_MODELS_DIR / text_model_id


def register_checkpoint(store: Store, folder: Path, name: str = "model") -> int:
    """Register a checkpoint folder written elsewhere (the shipped model) in this store; returns its id."""
    checkpoint = read_checkpoint(folder, name=name)  # refuses a folder that does not load
    return store.add_checkpoint(
        name, str(Path(folder).resolve()), json.dumps(checkpoint.config.to_dict(), indent=2),
        json.dumps(checkpoint.metrics, indent=2),
    )


def has_usable_checkpoint(store: Store, name: str = "model", text_model_id: str | None = None) -> bool:
    """Whether the newest `name` checkpoint loads (False for none, missing files, or an older format)
    and, when `text_model_id` is given, reads that encoder's vectors."""
    try:
        checkpoint = load_checkpoint(store, name=name)
    except CheckpointError:
        return False
    return text_model_id is None or checkpoint.text_model_id == text_model_id


def placeholder_world(text_dim: int, venues: int | None, categories: int | None, vocab: CellVocab) -> ModelData:
    """An empty world of the right shapes, to build a model before the data it scores is known."""
    V, K = venues or 1, categories or 1
    return ModelData(
        venue_text=torch.zeros(V, text_dim), venue_lat=torch.zeros(V), venue_lon=torch.zeros(V),
        venue_category=torch.zeros(V, dtype=torch.int64), category_text=torch.zeros(K, text_dim),
        markov_src=torch.zeros(0, dtype=torch.int64), markov_dst=torch.zeros(0, dtype=torch.int64),
        markov_count=torch.zeros(0), venue_count=torch.zeros(V), candidate=torch.ones(V, dtype=torch.bool),
        cell_sizes=vocab.sizes(), centre=(0.0, 0.0),
    )


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch CPU threads set to `n` inside (None: unchanged), the previous count restored after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- the scorer
class InterestScorer:
    """A trained model behind the Scorer protocol and the analytics API (stateful: model + text cache).

    `.score(split, samples)`: next-venue log-probs (n, V) over the split's venues and category scores.
    `.interest_vectors(events)`: (N, E) L2-normalised interest right after each event, in text space.
    `.attention_rollup(user_events)`: how much each of the user's events feeds the last vector.
    """

    def __init__(
        self, store: Store, checkpoint: LoadedCheckpoint, *, time_given: bool | None = None, name: str | None = None,
        encoder: TextEncoder | None = None, use_adapted: bool = False,
    ) -> None:
        self.store = store
        self.checkpoint = checkpoint
        self.model = checkpoint.model  # the model of the dataset being scored (see _enter)
        # with `use_adapted`, a dataset with a checkpoint adapted to it ("adapted:NAME") is scored by that one
        self.adapted: dict[int, LoadedCheckpoint] = self._adapted_checkpoints() if use_adapted else {}
        self.config = checkpoint.config
        self.max_len = self.config.model.max_len
        self.time_given = self.config.model.use_target_time if time_given is None else time_given
        self.name = name or checkpoint.name
        # a caller's text encoder is shared when it is the model the checkpoint was trained with
        # (loading one costs about 0.2 s, as much as a dynamic update spends on a tenth of its events)
        same = encoder is not None and encoder.model_id == checkpoint.text_model_id
        self._encoder: TextEncoder | None = encoder if same else None
        # per dataset: the world it is scored against, and the cutoff its counts stop at
        self._worlds: dict[int, World] = {}
        self._cutoffs: dict[int, pd.Timestamp | None] = {}
        self._split: tuple[int, World, EventTable] | None = None  # the evaluation split's world and table
        self._model_world: World | None = None  # the world the model holds now
        # model.expected_text's (rows, V) buffers, kept between calls (a fresh one costs page faults)
        self._workspace: dict[str, Any] = {}
        # texts without the store (a detached scorer): a lookup of every text it will meet
        self._text_lookup: Callable[[list[str]], np.ndarray] | None = None

    @classmethod
    def from_checkpoint(
        cls, store: Store, checkpoint_id: int | str | None = None, *, name: str | None = None,
        time_given: bool | None = None, scorer_name: str | None = None, encoder: TextEncoder | None = None,
    ) -> InterestScorer:
        """The newest "model" checkpoint (or one by id / name) as a scorer (`encoder`: see __init__)."""
        checkpoint = load_checkpoint(store, checkpoint_id, name)
        return cls(store, checkpoint, time_given=time_given, name=scorer_name, encoder=encoder)

    # -- inputs
    def text_vectors(self, texts: list[str]) -> np.ndarray:
        from interestgeo.text import embed_texts, encoder_for

        if self._text_lookup is not None:  # a detached scorer (see `detached`)
            return self._text_lookup(texts)
        if self._encoder is None:
            self._encoder = encoder_for(self.config.text)
        return embed_texts(self.store, self._encoder, texts, warn=None)

    def detached(self, datasets: list[int], text_vectors: Callable[[list[str]], np.ndarray]) -> InterestScorer:
        """A copy that scores `datasets` with no store and no text encoder: their worlds are built
        now, texts come from `text_vectors` (a picklable lookup: score.TextTable). It pickles, so a
        worker process or a Ray actor can hold one (score.chunk_state). Its models are copies:
        pointing them at a world does not move this scorer's."""
        for dataset_id in datasets:
            self.world(int(dataset_id))
        out = copy.copy(self)
        out.store = None  # type: ignore[assignment]
        out._encoder = None
        out._text_lookup = text_vectors
        out._worlds = {int(d): self._worlds[int(d)] for d in datasets}
        out._cutoffs = {int(d): self._cutoffs.get(int(d)) for d in datasets}
        out.checkpoint = copy.deepcopy(self.checkpoint)
        out.adapted = {d: copy.deepcopy(c) for d, c in self.adapted.items() if d in out._worlds}
        out.model = out.checkpoint.model
        out._split, out._model_world, out._workspace = None, None, {}
        return out

    def use_cutoffs(self, cutoffs: dict[int, pd.Timestamp | None]) -> None:
        """Score dataset d against its events before cutoffs[d] (see world.py); a dataset without
        one uses the cutoff its last calibration stored, else its own most recent tenth."""
        for dataset_id, cutoff in cutoffs.items():
            if dataset_id not in self._cutoffs or self._cutoffs[dataset_id] != cutoff:
                self._cutoffs[dataset_id] = cutoff
                self._worlds.pop(dataset_id, None)

    def world(self, dataset_id: int) -> World:
        """The world dataset `dataset_id` is scored against (built once per scorer from its events)."""
        if dataset_id not in self._worlds:
            events = self.store.events([dataset_id])
            if events.empty:
                raise LookupError(f"dataset {dataset_id} has no events")
            if dataset_id in self._cutoffs:
                cutoff = self._cutoffs[dataset_id]
            else:
                cutoff = self.store.calibration_cutoff(dataset_id)
                if cutoff is None:
                    cutoff = calibration_cutoff(events["ts"])
                self._cutoffs[dataset_id] = cutoff
            self._worlds[dataset_id] = world_from_events(events, cutoff, self.text_vectors, self.checkpoint.vocab.sizes())
        return self._worlds[dataset_id]

    def _adapted_checkpoints(self) -> dict[int, LoadedCheckpoint]:
        """{dataset id: the newest checkpoint adapted to it} for the store's datasets."""
        out = {}
        for dataset_id, name in zip(self.store.datasets()["dataset_id"], self.store.datasets()["name"]):
            row = self.store.checkpoint(name=adapted_name(str(name)))
            if row is not None:
                out[int(dataset_id)] = load_checkpoint(self.store, int(row["id"]))
        return out

    def _enter(self, world: World, dataset_id: int | None = None) -> None:
        """Point the model of `dataset_id` (its adapted one, else the checkpoint's) at `world`
        (its (rows, V) buffers go: V changes)."""
        model = self.adapted[dataset_id].model if dataset_id in self.adapted else self.checkpoint.model
        if self._model_world is not world or self.model is not model:
            self.model = model
            self.model.set_world(world.data)
            self._workspace.clear()
            self._model_world = world

    def table(self, events: pd.DataFrame, rows: np.ndarray | None = None) -> EventTable:
        """The model inputs of `events` against the current world (all rows, or only `rows`:
        see EventTable.build)."""
        if len(events):  # the events' dataset's world (one dataset: _by_dataset splits them)
            self._enter(self.world(int(events["dataset_id"].iloc[0])), int(events["dataset_id"].iloc[0]))
        world = self._model_world
        assert world is not None
        texts = events["text"] if rows is None else events["text"][rows]
        codes, uniq = pd.factorize(texts.fillna("").astype(str))  # hashing: no sort of the strings
        vecs = self.text_vectors(list(uniq)) if len(uniq) else np.zeros((0, self.model.text_dim), np.float32)
        return EventTable.build(
            events, world.venues_of(events), world.categories_of(events), vecs, self.checkpoint.vocab,
            world.n_venues, rows=rows, text_codes=codes,
        )

    def _by_dataset(
        self, events: pd.DataFrame, fn: Callable[[pd.DataFrame, slice], np.ndarray]
    ) -> list[np.ndarray]:
        """`fn(rows of one dataset, their slice of events)` for each dataset's (contiguous) rows,
        with the model in that dataset's world."""
        ds = events["dataset_id"].to_numpy()
        bounds = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1], True])
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            self._enter(self.world(int(ds[a])), int(ds[a]))
            parts.append(fn(events.iloc[a:b].reset_index(drop=True), slice(int(a), int(b))))
        return parts

    # -- Scorer protocol
    def score(self, split: Any, samples: Any) -> tuple[np.ndarray, np.ndarray]:
        """(n, V) venue log-probs over split.venues and (n, K) category scores over split.categories:
        the model scores the split's world (its training-period venues and counts), zero-shot when
        it was trained on other data."""
        key = id(split.events)
        if self._split is None or self._split[0] != key:
            world = world_from_split(split, self.text_vectors, self.checkpoint.vocab.sizes())
            self._split = (key, world, split_table(split, world, self.checkpoint.vocab, self.text_vectors))
        _, world, table = self._split
        self._enter(world)
        return score_histories(
            self.model, table, samples.history_start, samples.history_end,
            self.time_given, self.config.model.eval_batch_size,
        )

    # -- analytics API
    def _cover_jobs(self, user_start: np.ndarray, needed: np.ndarray | None = None) -> list[tuple[int, int, int]]:
        """The covering windows (start, end, first owned row) of every user, see cover_windows.

        `user_start` (N,): first row of each row's user. With `needed` (N,) bool, windows that own
        no needed row are left out (the model is causal, so the rows before them are context only).
        Sorted by length, so a batch pads little.
        """
        starts = np.unique(user_start)
        ends = np.append(starts[1:], len(user_start))
        jobs = [w for s, e in zip(starts, ends) for w in cover_windows(int(s), int(e), self.max_len)]
        if needed is not None:
            jobs = [(s, e, owned) for s, e, owned in jobs if needed[owned:e].any()]
        return sorted(jobs, key=lambda job: job[1] - job[0])

    def _jobs_table(self, events: pd.DataFrame, jobs: list[tuple[int, int, int]]) -> EventTable:
        """The table of `events` with inputs built for the rows some job reads only (all when all)."""
        edges = np.zeros(len(events) + 1, dtype=np.int64)
        np.add.at(edges, [s for s, _, _ in jobs], 1)
        np.add.at(edges, [e for _, e, _ in jobs], -1)
        rows = np.cumsum(edges[:-1]) > 0  # (N,) inside some job's window
        return self.table(events, None if rows.all() else rows)

    def interest_vectors(self, events: pd.DataFrame, neutralise_spacetime: bool = False) -> np.ndarray:
        """(N, E) float32 L2-normalised; row i uses only the same user's events up to i (causal)."""
        if len(events) == 0:
            return np.zeros((0, self.model.text_dim), dtype=np.float32)
        events = events.reset_index(drop=True)
        return np.concatenate(self._by_dataset(events, lambda part, _: self._bare_vectors(part, neutralise_spacetime)))

    @torch.inference_mode()
    def _bare_vectors(self, events: pd.DataFrame, neutralise_spacetime: bool) -> np.ndarray:
        out = np.zeros((len(events), self.model.text_dim), dtype=np.float32)
        jobs = self._cover_jobs(user_starts(events))
        table = self._jobs_table(events, jobs)
        for _, chunk, _, h in self._hidden_batches(table, jobs, neutralise_spacetime):
            z = self.model.interest(h)  # (B, T, E)
            for b, (s, e, owned) in enumerate(chunk):
                out[owned:e] = z[b, owned - s : e - s].numpy()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    # query positions per model.expected_text call: 1,024 x 5k venues x 4 bytes = 20 MB per (N, V) tensor
    _HEAD_ROWS = 1024

    def _hidden_batches(
        self, table: EventTable, jobs: list[tuple[int, int, int]], neutralise_spacetime: bool
    ) -> Iterator[tuple[int, list[tuple[int, int, int]], Batch, torch.Tensor]]:
        """Run the trunk over `jobs` (start, end, owned; sorted by length) in batches of similar
        lengths (length_batches), on `model.threads` torch threads: yields (index of the chunk's
        first job, the chunk, its batch, hidden (B, T, C))."""
        with torch_threads(self.config.model.threads):
            for i, j in length_batches([e - s for s, e, _ in jobs], self.config.model.eval_batch_size):
                chunk = jobs[i:j]
                batch = table.batch([(s, e) for s, e, _ in chunk], self.max_len, False)
                yield i, chunk, batch, self.model.hidden(batch, neutralise_spacetime=neutralise_spacetime)

    def expected_venue_vectors(
        self,
        events: pd.DataFrame,
        neutralise_spacetime: bool = False,
        needed: np.ndarray | None = None,
        last_only: bool = False,
        sharpness: float | dict[int, float] | tuple[float, ...] = 1.0,
    ) -> np.ndarray:
        """(N, E) float32, unnormalised: row i = the expected text embedding of the user's next
        venue after event i under the model's full prediction in the world of the event's dataset
        (see _expected_vectors; `needed`, `last_only` too).

        `sharpness` (model.sharpen): one for all, one per dataset id (1 where missing), or a tuple
        of them: then (S, N, E), one expectation per value, from one run of the model."""
        events = events.reset_index(drop=True)
        variants = isinstance(sharpness, tuple)
        if len(events) == 0:
            return np.zeros(((len(sharpness),) if variants else ()) + (0, self.model.text_dim), dtype=np.float32)

        def run(part: pd.DataFrame, rows: slice) -> np.ndarray:
            a = sharpness.get(int(part["dataset_id"].iloc[0]), 1.0) if isinstance(sharpness, dict) else sharpness
            return self._expected_vectors(part, neutralise_spacetime, None if needed is None else needed[rows], last_only, a)

        return np.concatenate(self._by_dataset(events, run), axis=1 if variants else 0)

    @torch.inference_mode()
    def _expected_vectors(
        self,
        events: pd.DataFrame,
        neutralise_spacetime: bool = False,
        needed: np.ndarray | None = None,
        last_only: bool = False,
        sharpness: float | tuple[float, ...] = 1.0,
    ) -> np.ndarray:
        """(N, E) float32, unnormalised: row i = the expected text embedding of the user's next venue
        after event i under the model's full prediction (model.expected_text), from the same
        covering windows as interest_vectors.

        `needed` (N,) bool: only these rows are computed (the others are zeros), and windows owning
        none of them are skipped. `last_only`: instead (users, E), each user's vector after their
        last event, read from their last max_len events (explanations need no more).
        Runs on `model.threads` torch threads: on 2 shared cores one thread scored 2-3x faster
        than two (OpenMP waits for a descheduled thread on every (N, V) op).
        """
        E = self.model.text_dim
        events = events.reset_index(drop=True)
        if len(events) == 0:
            return np.zeros((0, E), dtype=np.float32)
        user_start = user_starts(events)
        if last_only:
            starts = np.unique(user_start)
            ends = np.append(starts[1:], len(events))
            jobs = [(int(max(s, e - self.max_len)), int(e), int(e) - 1) for s, e in zip(starts, ends)]
            out_rows = np.arange(len(jobs))  # job j writes output row j
        else:
            jobs = self._cover_jobs(user_start, needed)
        # inputs for the rows in some window only: an update's older history is read for its counts
        table = self._jobs_table(events, jobs)
        lead = (len(sharpness),) if isinstance(sharpness, tuple) else ()  # (S,) variants first
        out = np.zeros(lead + (len(jobs) if last_only else len(events), E), dtype=np.float32)
        for i, chunk, batch, h in self._hidden_batches(table, jobs, neutralise_spacetime):
            qb = np.concatenate([np.full(e - owned, b) for b, (s, e, owned) in enumerate(chunk)])  # (n,)
            qt = np.concatenate([np.arange(owned - s, e - s) for s, e, owned in chunk])  # (n,)
            if last_only:
                rows = out_rows[i : i + len(chunk)]
            else:
                rows = np.concatenate([np.arange(owned, e) for s, e, owned in chunk])  # (n,) event rows
                if needed is not None:
                    wanted = needed[rows]
                    qb, qt, rows = qb[wanted], qt[wanted], rows[wanted]
            for k in range(0, len(rows), self._HEAD_ROWS):
                sl = slice(k, k + self._HEAD_ROWS)
                qb_t, qt_t = torch.from_numpy(qb[sl]), torch.from_numpy(qt[sl])
                expected = self.model.expected_text(h, batch, qb_t, qt_t, self._workspace, sharpness)
                out[..., rows[sl], :] = expected.numpy()  # ([S,] n, E)
        return out

    @torch.inference_mode()
    def next_venues(self, user_events: pd.DataFrame, k: int = 10) -> pd.DataFrame:
        """The model's own next-venue distribution after a person's last event (one dataset):
        the top `k` items of their dataset's world with their probabilities (pointer, counts,
        transitions, distance and interests together; the next event's time is not given), and
        the person's past venues among them. Columns: item_id, text, category, lat, lon, visits
        (everyone's, before the world's cutoff), probability."""
        events = user_events.reset_index(drop=True)
        if events.empty:
            raise LookupError("no events to predict from")
        dataset_id = int(events["dataset_id"].iloc[0])
        world = self.world(dataset_id)
        self._enter(world, dataset_id)
        start = max(0, len(events) - self.max_len)
        table = self.table(events.iloc[start:].reset_index(drop=True))
        logp, _ = self.model.score_last(table.batch([(0, len(events) - start)], self.max_len, False))
        p = logp[0].exp().numpy()
        top = np.argsort(-p, kind="stable")[:k]
        return world.items.iloc[top].assign(probability=p[top]).reset_index(drop=True)

    @torch.no_grad()
    def attention_rollup(self, user_events: pd.DataFrame) -> np.ndarray:
        """(T,) attention roll-up (Abnar & Zuidema 2020) from the last event back over the user's events.

        Per layer: heads averaged, the residual added as 0.5 * identity, rows renormalised; the
        layers' matrices multiplied. Events older than the model's window get 0. Sums to 1.
        """
        n = len(user_events)
        out = np.zeros(n, dtype=np.float64)
        if n == 0:
            return out
        events = user_events.reset_index(drop=True)
        self._enter(self.world(int(events["dataset_id"].iloc[0])), int(events["dataset_id"].iloc[0]))
        table = self.table(events)
        start = max(0, n - self.max_len)
        batch = table.batch([(start, n)], self.max_len, False)
        atts: list[torch.Tensor] = []
        self.model.hidden(batch, attentions=atts)
        T = n - start
        roll = torch.eye(T, dtype=torch.float64)
        for a in atts:
            a = a[0].mean(0).double()  # (T, T)
            a = 0.5 * a + 0.5 * torch.eye(T, dtype=torch.float64)
            a = a / a.sum(-1, keepdim=True)
            roll = a @ roll
        out[start:] = roll[-1].numpy()
        return out


# ---------------------------------------------------------------------------- entry points
def _split_and_text(
    store: Store, config: Config, progress: Progress | None, datasets: list[int] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[Any, Callable[[list[str]], np.ndarray], str]:
    from interestgeo.split import make_split
    from interestgeo.text import embed_texts, encoder_for

    events = store.events(datasets)
    if events.empty:
        raise CheckpointError("the store has no events: run `interestgeo demo` or `interestgeo ingest` first")
    split = make_split(events, config)
    if len(split.val) == 0:
        raise CheckpointError("no validation samples: the data is too small or too short to train on")
    encoder = encoder_for(config.text)
    return split, (lambda texts: embed_texts(store, encoder, texts, progress=progress, warn=warn)), encoder.model_id


def _test_metrics(model: InterestModel, prep: Prepared, split: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    variants = [("time_given", True), ("no_time", False)] if model.config.use_target_time and model.config.use_spacetime else [("no_time", False)]
    for label, given in variants:
        v, c = score_rows(model, prep.table, split.test, given, model.config.eval_batch_size)
        out[f"test_{label}"] = {"next_venue": rank_metrics(v, split.test.venue), "next_category": rank_metrics(c, split.test.category)}
    return out


def train_model(
    store: Store,
    config: Config,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    name: str = "model",
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    dataset: str | None = None,
    init_from: int | str | None = None,
    minutes: float | None = None,
    folder: Path | None = None,
    half: bool = False,
) -> int:
    """Train on the store's events (split.py protocol), save and register a checkpoint; returns its id.

    `dataset`: that dataset's events only. `init_from` (a checkpoint id or name): warm-start from
    it and fine-tune (its architecture, `model.finetune_learning_rate`); `minutes`: a time budget.
    `folder`/`half`: where and how the checkpoint is written (the shipped model: float16 in data/).
    `warn` hears that some texts are mostly unknown to the text model (text.embed_texts).
    """
    config = _with_overrides(config, epochs=epochs, seed=seed)
    try:
        dataset_ids = None if dataset is None else [store.require_dataset_id(dataset)]
    except LookupError as exc:
        raise CheckpointError(str(exc)) from None
    init = None
    if init_from is not None:
        by_id = isinstance(init_from, int) or str(init_from).isdigit()
        init = load_checkpoint(store, int(init_from) if by_id else None, None if by_id else str(init_from))
        if init.model.tied_venues is not None or init.vocab.resolutions:
            raise CheckpointError(f"checkpoint {init.id} has learned venue ids or cells: only an inductive model can be adapted")
        model_config = replace(
            init.config.model, epochs=config.model.epochs, seed=config.model.seed,
            learning_rate=config.model.finetune_learning_rate, threads=config.model.threads,
        )
        config = replace(config, model=model_config)
    split, text_of, model_id = _split_and_text(store, config, progress, dataset_ids, warn)
    if init is not None and init.text_model_id != model_id:
        raise CheckpointError(
            f"checkpoint {init.id} reads text vectors of {init.text_model_id!r}, this store's text model is {model_id!r}"
        )
    result = train_on_split(
        split, config.model, text_of, progress=progress, log=log,
        init_state=None if init is None else init.model.state_dict(),
        time_budget_s=None if minutes is None else 60.0 * minutes,
    )
    metrics = {
        **result.metrics, **_test_metrics(result.model, result.prep, split), "text_model_id": model_id,
        "warm_start": None if init is None else init.id,
    }
    trained_on = _trained_on(store, split) + ([] if init is None else init.trained_on)
    return save_checkpoint(store, config, name, result.model, result.prep, metrics, folder=folder, half=half, trained_on=trained_on)


def _trained_on(store: Store, split: Any) -> list[dict[str, Any]]:
    """The datasets a split trains on, each with its content hash and the end of the training period."""
    datasets = store.datasets().set_index("dataset_id")
    until = split.val_start.isoformat()
    return [
        {"dataset": str(datasets.loc[d, "name"]), "content_hash": str(datasets.loc[d, "content_hash"]), "train_until": until}
        for d in sorted(split.events["dataset_id"].unique().tolist())
    ]


def train_ablations(
    store: Store,
    config: Config,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    names: list[str] | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Train each ablation (ABLATIONS, same code with switches off) and register it as
    "ablation:<name>"; returns {name: checkpoint id}. The split and text vectors are shared."""
    config = _with_overrides(config, epochs=epochs, seed=seed)
    split, text_of, model_id = _split_and_text(store, config, progress, warn=warn)
    prep = prepare(split, config.model, text_of)
    ids = {}
    for ablation in names or list(ABLATIONS):
        cfg = replace(config, model=replace(config.model, **ABLATIONS[ablation]))
        if log:
            log(f"ablation {ablation}")
        result = train_on_split(split, cfg.model, text_of, prep=prep, progress=progress, log=log)
        metrics = {**result.metrics, **_test_metrics(result.model, prep, split), "text_model_id": model_id}
        ids[ablation] = save_checkpoint(store, cfg, f"ablation:{ablation}", result.model, prep, metrics)
    return ids


def model_scorers(store: Store, dataset: str | None = None) -> list[InterestScorer]:
    """Every scorer the evaluation table shows for the model: the newest "model" checkpoint with and
    without the next event's time, and the newest checkpoint of each ablation that exists.

    With `dataset`: the newest "model" (zero-shot there unless it trained on it) and the newest
    checkpoint adapted to that dataset ("adapted:NAME"), each with and without the next time;
    no ablations (their learned ids tie them to their training venues)."""
    scorers: list[InterestScorer] = []
    names = [("model", "model")] + ([(adapted_name(dataset), "model adapted")] if dataset else [])
    for checkpoint_name, label in names:
        try:
            ck = load_checkpoint(store, name=checkpoint_name)
        except CheckpointError:
            continue
        spec = ck.config.model
        if spec.use_target_time and spec.use_spacetime:
            scorers.append(InterestScorer(store, ck, time_given=True, name=label))
            scorers.append(InterestScorer(store, ck, time_given=False, name=f"{label} (next time not given)"))
        else:
            scorers.append(InterestScorer(store, ck, name=label))
    if dataset:
        return scorers
    for ablation in ABLATIONS:
        try:
            ck = load_checkpoint(store, name=f"ablation:{ablation}")
        except CheckpointError:
            continue
        scorers.append(InterestScorer(store, ck, name=f"ablation: {ablation}"))
    return scorers


def adapted_name(dataset: str) -> str:
    """The checkpoint name of a model adapted to one dataset (scoring that dataset prefers it)."""
    from interestgeo.store import adapted_checkpoint_name

    return adapted_checkpoint_name(dataset)


def _with_overrides(config: Config, *, epochs: int | None, seed: int | None) -> Config:
    model = config.model
    if epochs is not None:
        model = replace(model, epochs=int(epochs))
    if seed is not None:
        model = replace(model, seed=int(seed))
    return replace(config, model=model)

