"""The dashboard's one text encoder per text-model setting, loading its language model only when needed.

Apart from `cached`: what it defers (torch, transformers, the weights: 4-6 s) is the reason
it exists, and that reason is in `LazyTextEncoder`'s docstring.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import streamlit as st

from interestgeo.config import Config


def text_encoder(config_json: str) -> Any:
    """The text encoder of this config: one per text-model setting, whatever the database."""
    return _text_encoder(json.dumps(json.loads(config_json)["text"], sort_keys=True))


@st.cache_resource(show_spinner=False, max_entries=2)
def _text_encoder(text_json: str) -> LazyTextEncoder:
    return LazyTextEncoder(Config.from_dict({"text": json.loads(text_json)}).text)


class LazyTextEncoder:
    """The text encoder, its language model loaded on the first use that needs it.

    Most pages only look up embeddings the store already caches by model id (the venues for
    next-interest predictions, the events' texts in the interest model), which needs the id and
    not the model; importing torch and transformers and loading the weights costs 4-6 s on the
    shared cores, so it waits for a new phrase or text to embed. Anything else asked of it
    (`encode`, `dim`, ...) loads the real encoder once, under a lock (sessions are threads).
    """

    def __init__(self, config: Any) -> None:
        from interestgeo.text import text_model_id

        self.config = config
        self.model_id = text_model_id(config)
        self._lock = threading.Lock()
        self._encoder: Any = None

    def _loaded(self) -> Any:
        with self._lock:
            if self._encoder is None:
                from interestgeo.text import encoder_for

                self._encoder = encoder_for(self.config)
            return self._encoder

    def __getattr__(self, name: str) -> Any:
        # only for attributes not set in __init__: the loaded encoder's
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._loaded(), name)
