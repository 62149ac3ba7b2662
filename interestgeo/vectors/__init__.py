"""Interest vectors: run the trained model over every user's history and store what it says.

What is stored, and why:

* **Per event** (`event_vectors`): the user's interest vector right after each event, plus the
  event's own topic and its similarity to each topic (T floats). The vector is stored compact
  (int8 codes and one float32 scale per event, store/compact.py: a quarter of float32's size, cosine
  to the float vector >= 0.9999), and the scorer computes every aggregate below from those same
  dequantised values, so an answer from aggregates equals the per-event computation. Per-event rows
  answer what aggregates cannot: filters on dates, hours, days, regions or topics, one person's
  page, explanations and export (README "What each answer reads").
* **Per user x window** and **per cell x window** at `analytics.stored_resolutions` for
  `analytics.stored_windows` (`user_window_vectors`, `cell_window_vectors`), per dataset by week,
  day and hour of the week: user-weighted means with their people, which answer every question
  whose filters name only datasets without reading per-event vectors (analytics/stored.py).
  Stored *without* the k threshold (it depends on the reader's config); every reader applies it.
* **Topics** (`analytics_topics`): derived once and then kept, so legends and shares stay
  comparable across runs and dynamic updates (`refresh_topics=True` re-derives them; a changed
  `analytics.topic_phrases` does too).

**Which vector.** Not the model's bare interest vector: the model scores a venue as
interest . text PLUS a pointer over the user's own past venues (returns are three check-ins in
four), so the bare vector only says what a user would explore. Measured on NYC (1-epoch model,
15k events), MRR of the next event's text by dot product: bare vector 0.065, history alone 0.184,
expected next venue 0.298. So the stored vector is the expected next venue blended with recent
history, the blend chosen per dataset on its own most recent events, which also gives each score
run its quality figure (sources.py, calibration.py).

The modules: sources.py (what turns events into vectors), chunks.py (scoring whole users in
chunks, anywhere), staging.py (a full run's results before its one write), refresh.py (full runs,
dynamic updates, adaptation).
"""

from interestgeo.vectors.chunks import (
    ChunkRunner,
    ChunkScores,
    ChunkState,
    TextTable,
    chunk_state,
    local_chunks,
    process_chunks,
    score_chunk,
)
from interestgeo.vectors.refresh import ScoreReport, adapt_to_dataset, fill_missing_similarities, score_store
from interestgeo.vectors.sources import (
    BlendedSource,
    ExpectedVenueSource,
    RecencySource,
    VectorSource,
    interest_vectors,
    last_run_source,
    load_source,
    source_label,
    source_words,
)

__all__ = [
    "VectorSource",
    "RecencySource",
    "BlendedSource",
    "ExpectedVenueSource",
    "ScoreReport",
    "interest_vectors",
    "load_source",
    "last_run_source",
    "source_label",
    "source_words",
    "score_store",
    "ChunkRunner",
    "ChunkScores",
    "ChunkState",
    "TextTable",
    "chunk_state",
    "local_chunks",
    "process_chunks",
    "score_chunk",
    "adapt_to_dataset",
    "fill_missing_similarities",
]
