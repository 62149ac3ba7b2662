"""Topics: category-path top levels, k-means clusters, phrases, event topics and shares."""

from __future__ import annotations

import numpy as np
import pytest

from interestgeo.topics import (
    assign_event_topics,
    derive_topics,
    top_level,
    topic_probabilities,
    topics_from_category_paths,
    topics_from_clusters,
    topics_from_phrases,
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_top_level_splits_the_path() -> None:
    assert top_level("Dining and Drinking > Bar > Karaoke Bar") == "Dining and Drinking"
    assert top_level("Retail") == "Retail"
    assert top_level(None) is None and top_level("") is None


def test_category_topics_are_roots_with_the_mean_of_their_distinct_texts() -> None:
    texts = ["Joe's, Bar", "Joe's, Bar", "Blue Note, Jazz Club", "JFK, Airport", "Home"]
    vectors = unit(np.eye(5, 8)[[0, 0, 1, 2, 3]] + 0.01)
    paths = [
        "Dining and Drinking > Bar", "Dining and Drinking > Bar", "Dining and Drinking > Nightlife",
        "Travel and Transportation > Airport", "Home (private)",  # one-level path: a leaf, not a root
    ]
    topics = topics_from_category_paths(texts, vectors, paths)
    assert topics.labels == ("Dining and Drinking", "Travel and Transportation")
    # the repeated text counts once: the centroid is halfway between the bar and the jazz club
    np.testing.assert_allclose(topics.vectors[0], unit(vectors[0] + vectors[2]), atol=1e-6)
    event_topics = assign_event_topics(topics, vectors, paths)
    assert event_topics[:4].tolist() == [0, 0, 0, 1]
    assert event_topics[4] == int(np.argmax(topics.vectors @ vectors[4]))  # no root: nearest topic


def test_clusters_find_planted_groups_and_are_named_by_central_texts() -> None:
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(3, 16)))
    texts, vectors = [], []
    for c in range(3):
        for i in range(10):
            texts.append(f"group {c} text {i}")
            vectors.append(centres[c] + 0.05 * rng.normal(size=16))
    topics = topics_from_clusters(texts, unit(np.array(vectors)), k=3, seed=0)
    assert len(topics) == 3
    found = sorted(int(np.argmax(centres @ v)) for v in topics.vectors)
    assert found == [0, 1, 2]
    for label, vector in zip(topics.labels, topics.vectors):
        assert label.startswith(f"group {int(np.argmax(centres @ vector))} ")


def test_derive_topics_uses_clusters_when_paths_are_missing() -> None:
    rng = np.random.default_rng(1)
    texts = [f"t{i}" for i in range(20)]
    vectors = unit(rng.normal(size=(20, 8)))
    assert derive_topics(texts, vectors, [None] * 20, clusters=4).source == "clusters"
    paths = ["A > x"] * 15 + [None] * 5
    assert derive_topics(texts, vectors, paths, min_path_share=0.5).source == "category_path"


def test_phrases_override_and_shares_sum_to_one() -> None:
    vectors = unit(np.random.default_rng(2).normal(size=(3, 8)))
    topics = topics_from_phrases(["jazz", "food", "kids"], vectors)
    assert topics.index("food") == 1 and topics.index(2) == 2
    with pytest.raises(ValueError, match="unknown topic"):
        topics.index("sports")
    probs = topic_probabilities(unit(np.random.default_rng(3).normal(size=(50, 8))), topics, 0.05)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # an interest vector equal to a topic's vector gives that topic the largest share
    assert np.argmax(topic_probabilities(vectors[1:2], topics, 0.05)) == 1


def test_more_clusters_than_distinct_vectors_keeps_the_non_empty_ones_without_a_warning() -> None:
    import warnings

    vectors = unit(np.repeat(np.eye(4)[:2], 3, axis=0))  # six texts, two distinct vectors
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        topics = topics_from_clusters([f"t{i}" for i in range(6)], vectors, k=5, seed=0)
    assert 2 <= len(topics) <= 5 and len(set(topics.labels)) == len(topics)
    assert {int(np.argmax(v)) for v in topics.vectors} == {0, 1}
