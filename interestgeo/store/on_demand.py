"""A read-only store for objects that outlive a request (see `StoreOnDemand`)."""

from __future__ import annotations

from pathlib import Path

from interestgeo.store.facade import Store

__all__ = ["StoreOnDemand"]


class StoreOnDemand:
    """A read-only store for objects that outlive a request (the dashboard's cached interest model):
    each method call opens a short read-only Store, makes the call and closes it.

    Such an object used to keep the dashboard's one connection, and with it the file, for the server's
    life. Everything a Store method returns is materialised (frames, arrays), so nothing reads from a
    closed connection later. `con` is not offered: SQL lives in Store's methods.
    """

    read_only = True

    def __init__(self, path: Path | str, config: object) -> None:
        self.path = Path(path)
        self.config = config

    def __getattr__(self, name: str) -> object:
        if name.startswith("_") or name == "con":
            raise AttributeError(name)
        member = getattr(Store, name)
        if isinstance(member, property):
            with Store.open(self.path, read_only=True, config=self.config) as store:  # type: ignore[arg-type]
                return getattr(store, name)
        if not callable(member):
            return member

        def call(*args: object, **kwargs: object) -> object:
            with Store.open(self.path, read_only=True, config=self.config) as store:  # type: ignore[arg-type]
                return getattr(store, name)(*args, **kwargs)

        return call
