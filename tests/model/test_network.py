"""The interest model's shapes, causality and capacity (it can overfit one small batch)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from interestgeo.config import ModelConfig
from interestgeo.model import network as model_module
from interestgeo.model.network import N_NEXT_TIME, Batch, InterestModel, ModelData
from interestgeo.model.spacetime import N_CONT_FEATURES

V, K, E, B, T = 30, 5, 16, 3, 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model_data(seed: int = 0) -> ModelData:
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(V, E, generator=g), dim=1)
    return ModelData(
        venue_text=text,
        venue_lat=40.7 + 0.05 * torch.rand(V, generator=g),
        venue_lon=-74.0 + 0.05 * torch.rand(V, generator=g),
        venue_category=torch.arange(V) % K,
        category_text=torch.nn.functional.normalize(torch.randn(K, E, generator=g), dim=1),
        markov_src=torch.tensor([0, 1, 2]),
        markov_dst=torch.tensor([1, 2, 0]),
        markov_count=torch.tensor([3.0, 2.0, 1.0]),
        venue_count=torch.arange(V, dtype=torch.float32) % 4,
        candidate=torch.arange(V) < V - 3,  # the last three only through the pointer
        cell_sizes=[7, 4],
        centre=(40.72, -73.98),
    )


def random_batch(seed: int = 0, lengths: tuple[int, ...] = (T, 7, 4)) -> Batch:
    g = torch.Generator().manual_seed(seed)
    venue = torch.randint(0, V, (B, T), generator=g)
    data = model_data()
    for b, n in enumerate(lengths):
        venue[b, n:] = V  # padding
    return Batch(
        venue=venue,
        text=data.venue_text[venue.clamp(max=V - 1)],
        cells=torch.randint(0, 4, (B, T, 2), generator=g),
        lat=data.venue_lat[venue.clamp(max=V - 1)],
        lon=data.venue_lon[venue.clamp(max=V - 1)],
        cont=torch.randn(B, T, N_CONT_FEATURES, generator=g),
        next_time=torch.randn(B, T, N_NEXT_TIME, generator=g),
        next_time_given=torch.ones(B, T, dtype=torch.bool),
        length=torch.tensor(lengths),
        pre_venue=torch.tensor([[1, 2], [V, V], [3, V]]),
        pre_count=torch.tensor([[2.0, 1.0], [0.0, 0.0], [5.0, 0.0]]),
        # transitions before the window: from a venue of the window (they count when it is the
        # current venue) and from one it does not visit (they never count)
        pre_src=torch.tensor([[int(venue[0, 1]), V - 1], [V, V], [int(venue[2, 0]), V - 1]]),
        pre_dst=torch.tensor([[2, 5], [V, V], [4, 6]]),
        pre_tr_count=torch.tensor([[1.0, 2.0], [0.0, 0.0], [2.0, 1.0]]),
    )


def small_config(**changes: object) -> ModelConfig:
    """A tiny model; its scoring in float32 (the exact path: the bfloat16 one has its own test)."""
    base = ModelConfig(n_embd=16, n_head=2, n_layer=2, max_len=T, dropout=0.0, cell_resolutions=(10, 9),
                       score_bfloat16=False)
    return dataclasses.replace(base, **changes)


VARIANTS = {
    "full": {},
    "sasrec": dict(use_text=False, use_spacetime=False, use_copy=False, use_item_id=True),
    "no-text": dict(use_text=False),
    "no-spacetime": dict(use_spacetime=False),
    "no-copy": dict(use_copy=False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_and_log_probabilities(variant: str) -> None:
    torch.manual_seed(0)
    model = InterestModel(small_config(**VARIANTS[variant]), model_data()).eval()
    batch = random_batch()
    logp, loss = model(batch)
    assert logp.shape == (B, V) and loss is None
    assert torch.allclose(logp.exp().sum(-1), torch.ones(B), atol=1e-4)
    venue_scores, category_scores = model.score_last(batch)
    assert venue_scores.shape == (B, V) and category_scores.shape == (B, K)
    h = model.hidden(batch)
    assert h.shape == (B, T, 16)
    assert model.interest(h).shape == (B, T, E)  # interest vectors live in the text space
    targets = torch.where(batch.venue < V, batch.venue.roll(-1, 1), -1)
    targets[:, -1] = -1
    out, loss = model(batch, targets.clamp(max=V - 1).masked_fill(targets < 0, -1), targets % K)
    assert out.shape == (int((targets >= 0).sum()), V) and loss is not None and loss.ndim == 0


@pytest.mark.parametrize("variant", ["full", "sasrec"])
def test_changing_future_events_leaves_earlier_outputs_unchanged(variant: str) -> None:
    torch.manual_seed(0)
    model = InterestModel(small_config(**VARIANTS[variant]), model_data()).eval()
    batch = random_batch(lengths=(T, T, T))
    changed = dataclasses.replace(
        batch,
        venue=batch.venue.clone(),
        text=batch.text.clone(),
        cont=batch.cont.clone(),
        lat=batch.lat.clone(),
    )
    cut = 6
    changed.venue[:, cut:] = (changed.venue[:, cut:] + 7) % V
    changed.text[:, cut:] = torch.randn_like(changed.text[:, cut:])
    changed.cont[:, cut:] += 1.0
    changed.lat[:, cut:] += 0.01
    h1, h2 = model.hidden(batch), model.hidden(changed)
    assert torch.allclose(h1[:, :cut], h2[:, :cut], atol=1e-6)
    assert not torch.allclose(h1[:, cut:], h2[:, cut:])
    qb = torch.arange(B).repeat_interleave(cut)
    qt = torch.arange(cut).repeat(B)
    p1, _ = model.head(h1, batch, qb, qt)
    p2, _ = model.head(h2, changed, qb, qt)
    assert torch.allclose(p1, p2, atol=1e-5)  # next-venue scores up to each position: past only


@pytest.mark.parametrize("variant", ["full", "no-copy"])
def test_expected_text_is_the_head_distribution_times_venue_text(variant: str) -> None:
    torch.manual_seed(0)
    model = InterestModel(small_config(**VARIANTS[variant]), model_data()).eval()
    with torch.no_grad():  # every feature weight non-zero, so each feature term is exercised
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = random_batch()
    batch.venue[0, 3] = V  # an unknown venue inside a history (distances from its own coordinates)
    qb, qt = (torch.arange(T)[None, :] < batch.length[:, None]).nonzero(as_tuple=True)  # every real event
    h = model.hidden(batch)
    expected = model.head(h, batch, qb, qt)[0].exp() @ model.venue_text  # (N, E)
    workspace: dict[str, object] = {}
    half = len(qb) // 2  # two calls sharing one workspace: its scratch buffers must come back zeroed
    first = model.expected_text(h, batch, qb[half:], qt[half:], workspace)
    second = model.expected_text(h, batch, qb[:half], qt[:half], workspace)
    assert torch.allclose(torch.cat([second, first]), expected, atol=1e-5)
    assert not torch.allclose(expected[0], expected[-1])
    # sharpened expectations: under p^a / sum p^a, several from one pass
    p = model.head(h, batch, qb, qt)[0].exp()
    exact = (p**3 / (p**3).sum(1, keepdim=True)) @ model.venue_text
    sharp = model.expected_text(h, batch, qb, qt, workspace, sharpness=(1.0, 3.0))
    assert sharp.shape == (2, len(qb), E) and torch.allclose(sharp[0], expected, atol=1e-5)
    # sharpened rows leave out venues below EXPECTATION_PRUNE x the likeliest: close, and exact without
    assert torch.allclose(sharp[1], exact, atol=1e-3) and not torch.allclose(sharp[1], exact, atol=1e-7)
    assert torch.allclose(model_module.expectation(p, 3.0, model.venue_text, prune=0.0), exact, atol=1e-5)
    assert torch.allclose(model_module.expectation(p, 4.0, model.venue_text, prune=0.0),
                          model_module.sharpen(p, 4.0) @ model.venue_text, atol=1e-5)
    assert torch.allclose(model_module.sharpen(p, 40.0).argmax(1), p.argmax(1))


def test_expected_text_from_query_rows_equals_the_dense_tables() -> None:
    """A dynamic update's few queries take the transition and distance rows per query (no dense
    venue x venue tables): the numbers must be exactly the tables' ones, or an update would differ
    from a full score."""
    torch.manual_seed(0)
    model = InterestModel(small_config(), model_data()).eval()
    with torch.no_grad():  # every feature weight non-zero, so each feature term is exercised
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = random_batch()
    batch.venue[0, 3] = V  # an unknown venue: distances from the event's own coordinates
    qb, qt = (torch.arange(T)[None, :] < batch.length[:, None]).nonzero(as_tuple=True)
    with torch.no_grad():
        h = model.hidden(batch)
        rows = model.expected_text(h, batch, qb, qt, {})
        assert model._markov_dense is None  # answered from per-query rows
        model._tables()
        dense = model.expected_text(h, batch, qb, qt, {})
    assert torch.equal(rows, dense)


def every_feature_case() -> tuple[InterestModel, Batch, torch.Tensor, torch.Tensor]:
    """A model with every feature weight non-zero, a batch with an unknown venue inside a history
    (distances from the event's own coordinates) and every real event as a query (21 rows)."""
    torch.manual_seed(0)
    model = InterestModel(small_config(), model_data()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = random_batch()
    batch.venue[0, 3] = V
    qb, qt = (torch.arange(T)[None, :] < batch.length[:, None]).nonzero(as_tuple=True)
    return model, batch, qb, qt


@pytest.mark.parametrize("sparse_share", [1.0, 0.0])  # every block's kept venues as a sparse product / dense
def test_expected_text_in_blocks_equals_one_pass_over_all_rows(monkeypatch: pytest.MonkeyPatch, sparse_share: float) -> None:
    """expected_text runs its (rows, V) passes in blocks of EXPECTED_BLOCK_ROWS rows and collects
    the sharpened rows' kept venues across blocks: blocks of 4 rows (the last one partial, one with
    an unknown current venue) must give the head's distribution's expectations, plain and pruned."""
    model, batch, qb, qt = every_feature_case()
    monkeypatch.setattr(model_module, "EXPECTED_BLOCK_ROWS", 4)
    monkeypatch.setattr(model_module, "SPARSE_SHARE", sparse_share)
    with torch.no_grad():
        h = model.hidden(batch)
        p = model.head(h, batch, qb, qt)[0].exp()
        blocks = model.expected_text(h, batch, qb, qt, {}, sharpness=(1.0, 2.0, 4.0))
    assert torch.allclose(blocks[0], p @ model.venue_text, atol=1e-5)
    for s, a in ((1, 2.0), (2, 4.0)):  # the same venues left out as one `expectation` over all rows
        whole = model_module.expectation(p, a, model.venue_text)
        assert torch.allclose(blocks[s], whole, atol=1e-5)
        assert not torch.allclose(blocks[s], model_module.expectation(p, a, model.venue_text, prune=0.0), atol=1e-7)


def test_expected_text_in_bfloat16_stays_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """score_bfloat16: the logits product in bfloat16 (factors rounded to 8 significant bits,
    products summed in float32) moves logits of size ~2.5 here by ~1e-2 at most, and the expected
    vectors (unit venue texts) by 2e-4 (measured): bound 2e-3. It must differ (the bfloat16 path
    ran) and still be an expectation over venues (norm at most 1)."""
    model, batch, qb, qt = every_feature_case()
    monkeypatch.setattr(model_module, "_fast_bfloat16", lambda: True)  # the bfloat16 path on any CPU
    with torch.no_grad():
        h = model.hidden(batch)
        exact = model.expected_text(h, batch, qb, qt, {}, sharpness=(1.0, 2.0))
        model.config = dataclasses.replace(model.config, score_bfloat16=True)
        low = model.expected_text(h, batch, qb, qt, {}, sharpness=(1.0, 2.0))
    assert torch.allclose(low, exact, atol=2e-3) and not torch.equal(low, exact)
    assert (low[0].norm(dim=1) <= 1 + 1e-5).all()


def test_model_overfits_one_small_batch() -> None:
    torch.manual_seed(0)
    model = InterestModel(small_config(), model_data())
    batch = random_batch()
    targets = torch.randint(0, V - 3, (B, T), generator=torch.Generator().manual_seed(1))  # candidates
    targets[batch.venue == V] = -1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        _, loss = model(batch, targets, targets % K)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    logp, loss = model(batch, targets, targets % K)
    mask = targets >= 0
    accuracy = (logp.argmax(-1) == targets[mask]).float().mean()
    assert loss.item() < 0.2 * first and accuracy > 0.9


def test_unknown_venues_and_empty_pre_history_are_safe() -> None:
    model = InterestModel(small_config(), model_data()).eval()
    batch = random_batch()
    batch.venue[:, :] = V  # every event at a venue the model never saw
    logp, _ = model(batch)
    assert torch.isfinite(logp).all() and np.allclose(logp.detach().exp().sum(-1).numpy(), 1.0, atol=1e-4)


def world_of(n: int, seed: int) -> ModelData:
    """Another dataset's world: n venues elsewhere, other texts and counts."""
    g = torch.Generator().manual_seed(seed)
    return ModelData(
        venue_text=torch.nn.functional.normalize(torch.randn(n, E, generator=g), dim=1),
        venue_lat=35.6 + 0.05 * torch.rand(n, generator=g),
        venue_lon=139.7 + 0.05 * torch.rand(n, generator=g),
        venue_category=torch.arange(n) % 3,
        category_text=torch.nn.functional.normalize(torch.randn(3, E, generator=g), dim=1),
        markov_src=torch.tensor([0, 4]), markov_dst=torch.tensor([4, 0]), markov_count=torch.tensor([2.0, 1.0]),
        venue_count=torch.ones(n), candidate=torch.arange(n) >= 2,
        cell_sizes=[1], centre=(35.65, 139.72),
    )


def test_one_inductive_model_scores_a_world_of_another_size() -> None:
    torch.manual_seed(0)
    model = InterestModel(small_config(cell_resolutions=()), model_data()).eval()
    before = model.state_dict()
    n = 45
    model.set_world(world_of(n, seed=3))
    assert set(model.state_dict()) == set(before)  # the world is not part of the weights
    batch = random_batch()
    batch.venue[batch.venue < V] %= n
    batch.venue[0, :4] = torch.tensor([0, 1, 0, 1])  # non-candidates 0 and 1 in one history
    logp, _ = model(batch)
    p = logp.exp()
    assert logp.shape == (B, n) and torch.allclose(p.sum(-1), torch.ones(B), atol=1e-4)
    assert p[1:, :2].max() < 1e-9  # a non-candidate is reached only through its own history
    assert p[0, :2].sum() > 0.01


def test_a_model_with_learned_ids_refuses_another_world() -> None:
    model = InterestModel(small_config(use_item_id=True), model_data())
    with pytest.raises(ValueError, match="learned venue ids"):
        model.set_world(world_of(V + 5, seed=1))


def test_large_worlds_score_from_rows_with_the_dense_tables_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch, qb, qt = every_feature_case()
    targets = torch.where(batch.venue[qb, qt] < V - 3, batch.venue[qb, qt], 0)
    with torch.no_grad():
        h = model.hidden(batch)
        dense = model.head(h, batch, qb, qt)[0], model.head(h, batch, qb, qt, targets=targets)[0]
        monkeypatch.setattr(model_module, "MAX_DENSE_VENUES", V - 1)
        rows = model.head(h, batch, qb, qt)[0], model.head(h, batch, qb, qt, targets=targets)[0]
        expected = model.expected_text(h, batch, qb, qt, {})
    assert model._markov_dense is not None  # built before the limit moved; the rows path ignores it
    assert torch.allclose(dense[0], rows[0], atol=1e-5) and torch.allclose(dense[1], rows[1], atol=1e-5)
    assert torch.allclose(expected, dense[0].exp() @ model.venue_text, atol=1e-5)
