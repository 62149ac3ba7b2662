"""Named interest topics, each with a text embedding: the legend of every map and share chart.

Interest vectors live in the text-embedding space, so a topic is just a unit vector there with a
name; shares, dominant topics and the topic filter are all dot products with these vectors.

Where the topics come from, in order of precedence:

1. **Phrases in the config** (`analytics.topic_phrases`): the analyst's own vocabulary
   ("late-night food", "jazz"); each phrase's embedding is its vector.
2. **Category paths** (when at least `analytics.category_path_min_share` of events carry one): the
   top level of `category_path` (split on " > "), e.g. "Dining and Drinking". The vector is the
   normalised mean embedding of the *distinct* event texts under that top level, not the embedding
   of the label: the label ("Community and Government") is a taxonomy name that embeds poorly,
   while the centroid of "Town Hall", "City Hall, Government Building", ... is where those events
   really sit. Distinct texts (not events) so one heavily visited venue does not pull the centroid.
3. **Clusters** otherwise: k-means (scikit-learn's, k-means++ start, fixed seed) over the distinct
   unit text embeddings, each cluster labelled by its two most central texts, so uploads without a
   taxonomy still get readable topics. It replaced a 25-line numpy k-means that was faster here
   (the demo's 4,028 texts, k = 12: 75 ms against 0.35-1.1 s; 60k texts: 3.0 s against 5.0 s, on 2
   busy cores, Dec 2026): once per score run, well-kept library code is worth that.

Each event also gets an *event topic* (what the event itself is about): its category's top level
when it has one that is a topic, else the topic nearest to its text embedding. The topic filter
uses it. The *interest shares* of an interest vector are a softmax over its cosine similarity to
the topics (`topic_probabilities`): a distribution that sums to one and averages linearly over
users and regions.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Topics",
    "top_level",
    "topics_from_category_paths",
    "topics_from_clusters",
    "topics_from_phrases",
    "derive_topics",
    "assign_event_topics",
    "topic_probabilities",
    "topic_similarities",
    "probabilities_from_similarities",
]

PATH_SEPARATOR = " > "
# How many central texts name a cluster topic.
_CLUSTER_LABEL_TEXTS = 2


@dataclass(frozen=True, eq=False)
class Topics:
    """T named topics with unit vectors (T, D) in the text-embedding space."""

    labels: tuple[str, ...]
    vectors: np.ndarray  # (T, D) float32, rows L2-normalised
    source: str  # "phrases" | "category_path" | "clusters"

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, topic: int | str) -> int:
        """Position of a topic given by label or position; ValueError for an unknown topic."""
        if isinstance(topic, (int, np.integer)):
            if not 0 <= int(topic) < len(self.labels):
                raise ValueError(f"unknown topic #{topic}: there are {len(self.labels)} topics")
            return int(topic)
        try:
            return self.labels.index(topic)
        except ValueError:
            raise ValueError(f"unknown topic {topic!r}; topics are: {', '.join(self.labels)}") from None

    def to_json(self) -> str:
        """Labels and source as JSON (the vectors are stored separately as arrays)."""
        return json.dumps({"labels": list(self.labels), "source": self.source})


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def top_level(path: str | None) -> str | None:
    """'Dining and Drinking > Bar > Karaoke Bar' -> 'Dining and Drinking'; None/empty -> None."""
    if path is None or not isinstance(path, str):
        return None
    head = path.split(PATH_SEPARATOR, 1)[0].strip()
    return head or None


def topics_from_phrases(phrases: Sequence[str], phrase_vectors: np.ndarray) -> Topics:
    """Topics named by the given phrases, each represented by its own embedding."""
    if len(phrases) == 0:
        raise ValueError("no topic phrases given")
    return Topics(tuple(phrases), _normalise(np.asarray(phrase_vectors, dtype=np.float32)), "phrases")


def topics_from_category_paths(
    texts: Sequence[str], text_vectors: np.ndarray, category_paths: Sequence[str | None]
) -> Topics:
    """One topic per top-level category, vector = mean embedding of its distinct texts.

    A top level is the head of a multi-level path (all heads when no path has two levels).

    `texts`, `text_vectors` and `category_paths` are aligned (one row per event or per distinct
    text); duplicate (top level, text) pairs count once. Labels are sorted for a stable legend.
    """
    # Roots are the heads of multi-level paths: a one-level path such as "Bar" is a leaf category
    # whose path is unknown, not a top level (in NYC 15% of events), unless the taxonomy is flat.
    roots = {top_level(p) for p in category_paths if isinstance(p, str) and PATH_SEPARATOR in p}
    groups: dict[str, dict[str, int]] = {}
    for i, (text, path) in enumerate(zip(texts, category_paths)):
        head = top_level(path)
        if head is not None and (not roots or head in roots):
            groups.setdefault(head, {}).setdefault(text, i)
    if not groups:
        raise ValueError("no event has a category path")
    labels = tuple(sorted(groups))
    vectors = np.stack([text_vectors[list(groups[label].values())].mean(axis=0) for label in labels])
    return Topics(labels, _normalise(vectors), "category_path")


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means of unit rows with k-means++ seeding (scikit-learn): (unit centroids (k, D), labels (N,)).

    On unit vectors the squared distance is 2 - 2 cos, so Euclidean k-means clusters by cosine;
    the centroids are scaled back to unit length to be topic vectors. Rows with fewer distinct
    values than k give fewer non-empty clusters (the caller keeps the non-empty ones), which is
    not worth scikit-learn's ConvergenceWarning on a user's terminal."""
    from sklearn.cluster import KMeans  # ~1 s to import: only data without a taxonomy clusters
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed).fit(x)
    return _normalise(fitted.cluster_centers_.astype(np.float32)), fitted.labels_.astype(np.int64)


def topics_from_clusters(texts: Sequence[str], text_vectors: np.ndarray, k: int, seed: int = 0) -> Topics:
    """k-means topics over the distinct texts, labelled by their most central texts."""
    unique: dict[str, int] = {}
    for i, text in enumerate(texts):
        unique.setdefault(text, i)
    if not unique:
        raise ValueError("no texts to cluster")
    names = list(unique)
    x = _normalise(np.asarray(text_vectors, dtype=np.float32)[list(unique.values())])  # (U, D)
    k = max(1, min(k, len(names)))
    centroids, labels = _kmeans(x, k, seed)
    keep = [j for j in range(k) if np.any(labels == j)]
    out_labels: list[str] = []
    for j in keep:
        members = np.flatnonzero(labels == j)
        central = members[np.argsort(-(x[members] @ centroids[j]), kind="stable")[:_CLUSTER_LABEL_TEXTS]]
        label = " / ".join(names[m] for m in central)
        while label in out_labels:  # two clusters with the same central texts: keep labels unique
            label += "'"
        out_labels.append(label)
    return Topics(tuple(out_labels), centroids[keep], "clusters")


def derive_topics(
    texts: Sequence[str],
    text_vectors: np.ndarray,
    category_paths: Sequence[str | None] | None,
    *,
    min_path_share: float = 0.5,
    clusters: int = 12,
    seed: int = 0,
) -> Topics:
    """Data-derived topics: category-path top levels when enough events have one, else clusters."""
    if category_paths is not None and len(texts):
        has_path = sum(top_level(p) is not None for p in category_paths)
        if has_path / len(texts) >= min_path_share:
            return topics_from_category_paths(texts, text_vectors, category_paths)
    return topics_from_clusters(texts, text_vectors, clusters, seed)


def assign_event_topics(
    topics: Topics, text_vectors: np.ndarray, category_paths: Sequence[str | None] | None = None
) -> np.ndarray:
    """(N,) int16 topic of each event: its category's top level when that is a topic, else nearest."""
    nearest = np.argmax(np.asarray(text_vectors, dtype=np.float32) @ topics.vectors.T, axis=1).astype(np.int16)
    if category_paths is None or topics.source != "category_path":
        return nearest
    position = {label: i for i, label in enumerate(topics.labels)}
    heads = [position.get(top_level(p), -1) for p in category_paths]  # type: ignore[arg-type]
    by_path = np.asarray(heads, dtype=np.int16)
    return np.where(by_path >= 0, by_path, nearest).astype(np.int16)


def topic_similarities(vectors: np.ndarray, topics: Topics) -> np.ndarray:
    """(N, T) float32 cosine similarity of each (unit) vector to each topic: what the store keeps
    beside the vectors, so shares can be computed without reading them."""
    return np.asarray(vectors, dtype=np.float32) @ topics.vectors.T


def topic_probabilities(vectors: np.ndarray, topics: Topics, temperature: float) -> np.ndarray:
    """(N, T) float32 interest shares: softmax over cosine similarity to each topic / temperature."""
    return probabilities_from_similarities(topic_similarities(vectors, topics), temperature)


def probabilities_from_similarities(similarities: np.ndarray, temperature: float) -> np.ndarray:
    """`topic_probabilities` from stored `topic_similarities` (a new array; the input is kept)."""
    logits = np.asarray(similarities, dtype=np.float32) / np.float32(temperature)  # (N, T)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits
