"""The ShapeEdit decomposer: a small Qwen2.5-VL trained here to write the paper's four stages for ShapeEdit scenes
(docs/shapeedit-decomposer.md). The folder ships in the package (``weights/decomposer``) and is read by the pack's
``transformers_vlm`` backend like any other model folder.

``shipped_backend()`` is the process-wide backend on the shipped folder (what ``--decompose mllm`` uses); it
counts the seconds spent generating and remembers its answers (greedy decoding: the same prompt gives the same
answer), so ``decomposer_report`` can score the decompositions an editor run already made without generating again.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections import OrderedDict

from .folder import DEFAULT_FOLDER, DecomposerFolderError, load_backend, read_info

MEMO_ENTRIES = 4096


class TimedBackend:
    """A ``transformers_vlm`` backend that times each generation and remembers the answers it gave."""

    name = "transformers_vlm"
    uses_model = True

    def __init__(self, backend):
        self.backend = backend
        self.seconds, self.calls = 0.0, 0
        self._memo: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def identity(self) -> dict:
        return self.backend.identity()

    @staticmethod
    def _key(messages, image, settings) -> str:
        import json

        import numpy as np

        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode())
        digest.update(json.dumps(settings.identity(), sort_keys=True).encode())
        if image is not None:
            digest.update(str(image.shape).encode() + np.ascontiguousarray(image).tobytes())
        return digest.hexdigest()

    def generate(self, messages, image, settings) -> str:
        key = self._key(messages, image, settings) if settings.temperature == 0 else None
        with self._lock:
            if key is not None and key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        started = time.perf_counter()
        answer = self.backend.generate(messages, image, settings)
        with self._lock:
            self.seconds += time.perf_counter() - started
            self.calls += 1
            if key is not None:
                self._memo[key] = answer
                while len(self._memo) > MEMO_ENTRIES:
                    self._memo.popitem(last=False)
        return answer

    def beam_answers(self, messages, image, settings, beams: int) -> list[str]:
        """The backend's beams, their time counted with the generations'."""
        started = time.perf_counter()
        answers = self.backend.beam_answers(messages, image, settings, beams)
        with self._lock:
            self.seconds += time.perf_counter() - started
        return answers

    def seconds_per_call(self) -> float | None:
        return self.seconds / self.calls if self.calls else None


@functools.lru_cache(maxsize=1)
def shipped_backend() -> TimedBackend:
    return TimedBackend(load_backend(DEFAULT_FOLDER))


def decomposer_report(cases, backend: TimedBackend | None = None, cache=None) -> dict:
    """Accuracy, malformed and fallback rates of the decomposer on ``cases`` (``scoring``), and its seconds per
    generation; answers already generated for these prompts, or kept in ``cache`` (the editor's
    ``decompose_cache``), are reused."""
    from .evaluate import decompose_cases, report

    backend = backend or shipped_backend()
    decompositions, _ = decompose_cases(cases, backend, cache=cache)
    result = report(cases, decompositions, 0.0)
    result["seconds_per_case"] = backend.seconds_per_call()
    return result


def decomposer_summary(cases, run_seconds: float, cache=None) -> dict:
    """``decomposer_report`` plus the editor's own seconds per case (the run's time minus generation) and a
    printable line; for ``python -m cogniedit.shapes.evaluate --decompose mllm``."""
    backend = shipped_backend()
    result = decomposer_report(cases, backend, cache)
    n = max(1, len(cases))
    result["editor_seconds_per_case"] = max(0.0, run_seconds - backend.seconds) / n
    pct = lambda key: f"{100 * result[key]:.1f}%"  # noqa: E731
    per_case = result["seconds_per_case"]
    result["line"] = (f"decomposer (mllm, {result['n']} cases): accuracy {pct('correct')}, malformed "
                      f"{pct('malformed')}, fallback {pct('fallback')}; "
                      + (f"{round(per_case, 3)} s/case" if per_case is not None else "answers from the decompose cache")
                      + f" beside the editor's {result['editor_seconds_per_case']:.3f} s/case")
    return result


__all__ = ["DEFAULT_FOLDER", "DecomposerFolderError", "TimedBackend", "decomposer_report", "decomposer_summary",
           "load_backend",
           "read_info", "shipped_backend"]
