"""Instruction Decompose in the training loop: the policy is conditioned on the decomposer's enriched instruction,
as the CogniEdit editor and the nodes edit at inference (``cogniedit.decompose.decompose``, the same backends and
fallbacks; ``decompose.backend: mllm`` is the shipped ShapeEdit decomposer the editor's ``decomposer="mllm"`` uses).

Each case / record (by ``case_id``) is decomposed once per run and kept in memory, and model answers go to an
on-disk ``DecompositionCache`` (atomic JSON files keyed by backend, model-folder fingerprint, settings, image and
instruction), so N epochs ask the decomposer once per record and a rerun or a resumed run asks it not at all. A
backend that fails falls back to the rules, as at inference, and is counted (per step in the metrics, in total in
the log); a run whose decompositions mostly fall back stops with one line naming the backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from .config import ConfigError

log = logging.getLogger(__name__)

MIN_DECOMPOSITIONS_BEFORE_STOP = 8
MAX_NOTE_CHARS = 300


class CountedBackend:
    """A decomposition backend that counts the times it was asked; its identity (a model backend's names its
    folder's files) and answers are the wrapped backend's own."""

    uses_model = True

    def __init__(self, backend):
        self.backend, self.name, self.calls = backend, backend.name, 0

    def identity(self) -> dict:
        return self.backend.identity()

    def generate(self, messages, image, settings) -> str:
        self.calls += 1
        return self.backend.generate(messages, image, settings)


def _shipped_backend():
    """The shipped ShapeEdit decomposer (``cogniedit.shapes.decomposer``), or one line saying why it is missing."""
    try:
        from cogniedit.shapes.decomposer import shipped_backend
    except ImportError as exc:
        raise ConfigError(f"decompose.backend=mllm: the ShapeEdit decomposer is not in this install ({exc}); use "
                          "decompose.backend=rules, or transformers_vlm with decompose.model=<a model folder>"
                          ) from None
    try:
        return shipped_backend()
    except Exception as exc:  # noqa: BLE001 - its folder is missing or untrained: one line, the fix
        raise ConfigError(f"decompose.backend=mllm: the shipped ShapeEdit decomposer cannot be loaded: {exc}; or "
                          "use decompose.backend=rules") from None


def build_backend(section: dict):
    """The backend ``decompose.backend`` names, checked before training starts (one line when unavailable)."""
    from cogniedit.decompose import OpenAIHTTPBackend, RulesBackend, TransformersVLMBackend

    name = section["backend"]
    if name == "rules":
        return RulesBackend()
    if name == "mllm":
        return CountedBackend(_shipped_backend())
    if name == "transformers_vlm":
        folder = Path(section["model"]).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"decompose.model={section['model']} is not a transformers model folder (no "
                              "config.json); point it at a VLM folder such as Qwen2.5-VL-3B-Instruct")
        backend = TransformersVLMBackend(model_path=str(folder), device=section["device"])
        return CountedBackend(backend)
    api_key = None
    if section["api_key_env"]:
        api_key = os.environ.get(section["api_key_env"])
        if not api_key:
            raise ConfigError(f"decompose.api_key_env names {section['api_key_env']}, which is not set in your "
                              "environment; export it, or set decompose.api_key_env=null for a server without a key")
    return CountedBackend(OpenAIHTTPBackend(section["url"], section["model"], api_key=api_key))


def settings_from(section: dict):
    from cogniedit.decompose import DecomposeSettings

    return DecomposeSettings(max_new_tokens=int(section["max_new_tokens"]),
                             temperature=float(section["temperature"]),
                             image_max_pixels=int(section["image_max_pixels"]),
                             timeout_s=float(section["timeout_s"]), retries=int(section["retries"]))


@contextlib.contextmanager
def rng_untouched():
    """Global torch / NumPy / Python RNG states as they were: loading or sampling a decomposer model between two
    training steps must not move any other draw (a resumed run, whose decompositions come from the cache, draws
    exactly what the uninterrupted run drew)."""
    import torch

    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        yield
    random.setstate(py)
    np.random.set_state(np_state)


def source_image(case) -> np.ndarray:
    """The image the editor is given for this case: a record's own pixels, a ShapeEdit case's rendered source."""
    image = getattr(case, "source_image", None)
    if image is not None:
        return image
    from cogniedit.shapes.render import render_scene

    return render_scene(case.source, case.world)


class RolloutDecomposer:
    """``instruction(case)``: the enriched instruction the policy encodes for ``case`` (decomposed once)."""

    def __init__(self, backend, settings, cache_dir: Path | None, max_fallback_frac: float = 0.5,
                 backend_name: str = "rules", grammar_check: bool = True):
        from cogniedit.decompose import DecompositionCache

        self.backend, self.settings, self.backend_name = backend, settings, backend_name
        self.cache = DecompositionCache(max_entries=1, directory=cache_dir) if cache_dir is not None else None
        self.max_fallback_frac = float(max_fallback_frac)
        from cogniedit.shapes.decomposer.answer_check import checks_answers

        self.grammar_check = bool(grammar_check) and checks_answers(backend)
        self.results: dict = {}
        self.first_fallback = ""
        self.seconds = self._seconds_reported = 0.0  # spent decomposing (in the rollout time of the step)

    def decomposition(self, case):
        from cogniedit.decompose import decompose

        result = self.results.get(case.case_id)
        if result is None:
            started = time.perf_counter()
            with rng_untouched():
                result = decompose(source_image(case), case.instruction, backend=self.backend,
                                   settings=self.settings, cache=self.cache)
            if self.grammar_check and getattr(case, "source_image", None) is None:
                # a ShapeEdit case: what the CogniEdit editor would give the editor (decomposer.answer_check, with
                # beams where the answer does not read)
                from cogniedit.shapes.decomposer.beams import check_with_beams

                with rng_untouched():
                    result, _ = check_with_beams(result, source_image(case), case.instruction, self.backend,
                                                 world=case.world, settings=self.settings)
            self.seconds += time.perf_counter() - started
            self.results[case.case_id] = result
            if result.source == "fallback" and not self.first_fallback:
                note = "; ".join(result.warnings)
                self.first_fallback = note if len(note) <= MAX_NOTE_CHARS else note[:MAX_NOTE_CHARS - 1] + "…"
            self._check_fallbacks()
        return result

    def instruction(self, case) -> str:
        return self.decomposition(case).enriched_instruction

    def _check_fallbacks(self) -> None:
        n, fell = len(self.results), self.counts()["fallback"]
        if n >= MIN_DECOMPOSITIONS_BEFORE_STOP and fell > self.max_fallback_frac * n:
            raise ConfigError(f"decompose.backend={self.backend_name}: {fell} of {n} decompositions fell back to the "
                              f"rules ({self.first_fallback}); fix the backend, or set decompose.max_fallback_frac=1 "
                              "to train on the fallbacks")

    def counts(self, cases=None) -> dict:
        """Decompositions used (model answers or rules) and fallen back, of ``cases`` (default: all so far)."""
        results = self.results.values() if cases is None else [self.results[c.case_id] for c in cases]
        sources = [r.source for r in results]
        return {"used": sum(s != "fallback" for s in sources), "fallback": sources.count("fallback")}

    def step_metrics(self, cases) -> dict:
        """This step's cases used / fallen back, and the seconds spent decomposing since the last step."""
        counts = self.counts(cases)
        seconds, self._seconds_reported = self.seconds - self._seconds_reported, self.seconds
        return {"decompose/used": counts["used"], "decompose/fallback": counts["fallback"],
                "time_decompose_s": seconds}

    def summary(self) -> str:
        counts = self.counts()
        asked = getattr(self.backend, "calls", None)
        hits = self.cache.hits if self.cache is not None else 0
        line = (f"decomposition ({self.backend_name}): {len(self.results)} cases, {counts['used']} used, "
                f"{counts['fallback']} fell back to the rules; {hits} from the disk cache")
        if asked is not None:
            line += f", the model asked {asked} times"
        return line + (f" (first fallback: {self.first_fallback})" if self.first_fallback else "")

    def release(self) -> None:
        """Drop a loaded decomposer model once every case is decomposed (image records: before training)."""
        inner = getattr(self.backend, "backend", None)
        if inner is not None and hasattr(inner, "model") and hasattr(inner, "model_path") and inner.model_path:
            inner.model = inner.processor = None  # reloads from its folder if asked again


def build_decomposer(config: dict, out: Path) -> RolloutDecomposer | None:
    """From ``config["decompose"]``, or None when it is off (the trainer then runs exactly as without it)."""
    section = config["decompose"]
    if not section["enabled"]:
        return None
    cache = section["cache_dir"] or Path(config["data"]["cache_dir"] or Path(out) / "cache") / "decompose"
    return RolloutDecomposer(build_backend(section), settings_from(section), Path(cache),
                             float(section["max_fallback_frac"]), section["backend"], bool(section["grammar_check"]))


def prefill(config: dict) -> str:
    """Decompose every case of the run's data into its cache (so a timed run spends no time decomposing)."""
    from .grpo import load_cases

    decomposer = build_decomposer(config, Path(config["output_dir"]))
    if decomposer is None:
        raise ConfigError("decompose.enabled is false: nothing to decompose; set --set decompose.enabled=true")
    cases = load_cases(config["data"])
    for i, case in enumerate(cases):
        decomposer.decomposition(case)
        if (i + 1) % 100 == 0:
            log.info("%d of %d cases decomposed", i + 1, len(cases))
    return decomposer.summary()


def main(argv=None) -> int:
    """``python -m training.decomposition --config C [--set a.b=c ...]``: fill the run's decomposition cache."""
    from . import cli
    from .config import load_config
    from .grpo import parse_args

    argv = sys.argv[1:] if argv is None else argv

    def body() -> int:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        args, overrides = parse_args(argv)
        print(prefill(load_config(args.config, overrides)))
        return 0
    return cli.run(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
