"""What every decomposition backend provides: `generate(messages, image, settings) -> str`."""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np

from ..settings import DecomposeSettings


class BackendError(RuntimeError):
    """A backend could not produce an answer (unreachable server, bad model folder, ...)."""


class Cancelled(RuntimeError):
    """The caller asked to stop (ComfyUI's Cancel): not a model failure, so decompose() never falls back on it."""


CancelCheck = Callable[[], bool]  # True once the caller wants the work stopped


def never_cancelled() -> bool:
    return False


@runtime_checkable
class Backend(Protocol):
    name: str
    uses_model: bool  # False: decompose() skips generation and uses the rules directly

    def identity(self) -> dict:
        """What distinguishes this backend's answers (model, server): part of the cache key, no secrets."""

    def generate(self, messages: list[dict], image: np.ndarray | None, settings: DecomposeSettings) -> str:
        """The model's raw answer to the chat `messages` about `image` (uint8 [H, W, 3] or None).

        Backends that can stop early also take `cancel: CancelCheck` (keyword) and raise Cancelled."""
