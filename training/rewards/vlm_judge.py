"""A judge the user runs: any OpenAI-compatible vision chat server (vLLM, llama.cpp's server, Ollama, LM Studio)
scores each edit with the judging prompt (the paper's by default, judge_prompt.py).

One ``/v1/chat/completions`` request per edited image: the edited image, then the source (base64 PNG ``image_url``
data URIs, the paper's order), then the prompt with the instruction. Requests run ``concurrency`` at a time, each
under a wall-clock deadline, retried with bounded back-off (vlm_http.post_json). The API key, if the server wants
one, comes from the environment variable the trainer config names (``api_key_env``); it is sent to this url only
and appears in no message, log or file.

An answer the reader cannot find the scores in is not scored 0: it is counted, logged (a short excerpt), asked
again up to ``parse_retries`` times, and then each of its missing axes takes the batch mean of the answers that
have it (the authors' fallback for a missing axis: with batch-normalised advantages, the paper's, that axis then
adds nothing to the image's advantage), and the ``parsed`` dimension (1 / 0 per image, logged as
``r/vlm_judge.parsed``) marks it. Images with no answer after every retry are treated the same; a batch with no
answer at all, or a run where most answers hold no scores, stops with the fix.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from cogniedit.decompose.backends.openai_http import chat_completions_url

from ..config import ConfigError
from .base import check_batch, source_image
from .judge_prompt import AXES, NO_MISTAKES, PAPER_PROMPT, PLACEHOLDER, parse_judge_answer, render_prompt
from .vlm_http import RewardServerError, RewardServerUnreachable, png_base64, post_json, with_batch_mean

log = logging.getLogger(__name__)

DIMENSIONS = (*AXES, NO_MISTAKES)
NO_SIGNAL = 3.0  # an axis no answer of the batch scored: the same value for every image (mid-scale)
MIN_ANSWERS_FOR_GUARD = 16
EXCERPT = 160


def answer_text(reply) -> str | None:
    """The assistant's text of a chat completion (content parts joined), or None when it is not one."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else None


class VLMJudgeReward:
    name = "vlm_judge"

    def __init__(self, url: str, model: str, dimensions=("alignment", "style", "consistency"),
                 prompt: str = PAPER_PROMPT, api_key: str | None = None, timeout_s: float = 120.0, retries: int = 3,
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0, max_tokens: int = 2048,
                 temperature: float = 0.0, concurrency: int = 4, parse_retries: int = 1,
                 max_unparseable_frac: float = 0.5, extra_body: dict | None = None):
        unknown = [d for d in dimensions if d not in DIMENSIONS]
        if unknown:
            raise ConfigError(f"rewards.vlm_judge: unknown dimension(s) {unknown}; the judge scores {list(DIMENSIONS)}")
        if not str(url).startswith(("http://", "https://")):
            raise ConfigError(f"rewards.vlm_judge.url={url!r} must start with http:// or https:// "
                              f"(e.g. http://127.0.0.1:8000/v1)")
        if PLACEHOLDER not in prompt:
            raise ConfigError(f"rewards.vlm_judge.prompt must contain {PLACEHOLDER} where the instruction goes")
        # http://host:8000, .../v1 or the whole .../v1/chat/completions: the same endpoint
        self.url, self.model, self.prompt = chat_completions_url(url), str(model), prompt
        self.scored = tuple(dimensions)
        self.dimensions = (*self.scored, "parsed")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        self.max_backoff_s, self.parse_retries = float(max_backoff_s), int(parse_retries)
        self.max_tokens, self.temperature = int(max_tokens), float(temperature)
        self.concurrency, self.max_unparseable_frac = max(1, int(concurrency)), float(max_unparseable_frac)
        self.extra_body = dict(extra_body or {})
        self.counts = Counter()  # answers, unparseable, failed: over the plugin's life (the run)

    @classmethod
    def from_config(cls, section: dict, dimensions) -> "VLMJudgeReward":
        """From ``rewards.vlm_judge``; the key is read from the environment variable ``api_key_env`` names."""
        prompt = section.get("prompt") or PAPER_PROMPT
        if section.get("prompt_file"):
            path = Path(section["prompt_file"]).expanduser()
            try:
                prompt = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"rewards.vlm_judge.prompt_file {path}: cannot read it ({exc}); point it at a "
                                  f"UTF-8 text file holding the prompt with {PLACEHOLDER}") from None
        api_key = None
        if section.get("api_key_env"):
            api_key = os.environ.get(section["api_key_env"])
            if not api_key:
                raise ConfigError(f"rewards.vlm_judge.api_key_env names {section['api_key_env']}, which is not set "
                                  f"in your environment; export it, or set api_key_env: null for a server without "
                                  f"a key")
        keys = ("timeout_s", "retries", "backoff_s", "max_backoff_s", "max_tokens", "temperature", "concurrency",
                "parse_retries", "max_unparseable_frac", "extra_body")
        return cls(section["url"], section["model"], dimensions, prompt, api_key,
                   **{k: section[k] for k in keys if section.get(k) is not None})

    # ------------------------------------------------------------------------------------------- one image
    def _request(self, edited, source, instruction) -> dict:
        content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + png_base64(edited)}},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png_base64(source)}},
                   {"type": "text", "text": render_prompt(self.prompt, instruction)}]
        return {"model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_tokens, "temperature": self.temperature, "stream": False, **self.extra_body}

    def _ask(self, request: dict) -> tuple[dict | None, str, str]:
        """(scores, "ok" | "partial" | "unparseable" | "failed", an excerpt of the bad answer) for one image."""
        best, excerpt = None, ""
        for _ in range(self.parse_retries + 1):
            try:
                reply = post_json(self.url, request, self.timeout_s, self.retries, self.backoff_s,
                                  "start the judge server or set rewards.vlm_judge.enabled=false",
                                  headers=self._headers, max_backoff_s=self.max_backoff_s)
            except RewardServerUnreachable as exc:
                return best, ("partial" if best else "failed"), str(exc)
            text = answer_text(reply)
            scores = parse_judge_answer(text) if text is not None else {}
            got = {d: scores[d] for d in self.scored if d in scores}
            if len(got) == len(self.scored):
                return got, "ok", ""
            if got and (best is None or len(got) > len(best)):
                best = got
            excerpt = " ".join(str(text if text is not None else reply).split())[:EXCERPT]
        return best, ("partial" if best else "unparseable"), excerpt

    # ------------------------------------------------------------------------------------------- a batch
    def __call__(self, edited_images, cases):
        images = check_batch(edited_images, cases)
        requests = [self._request(img, source_image(case), case.instruction) for img, case in zip(images, cases)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            answers = list(pool.map(self._ask, requests))
        status = Counter(s for _, s, _ in answers)
        self.counts.update(answers=len(answers) - status["failed"], unparseable=status["unparseable"],
                           partial=status["partial"], failed=status["failed"])
        if status["failed"] == len(answers):
            raise RewardServerError(f"vlm_judge: no answer from {self.url} for any of {len(answers)} images "
                                    f"({answers[0][2]})")
        bad = [(s, e) for _, s, e in answers if s != "ok"]
        if bad:
            log.warning("vlm_judge: %d of %d answers without every score (%s); their missing scores take the batch "
                        "mean, marked parsed=0; e.g. %s: %r", len(bad), len(answers),
                        ", ".join(f"{k} {v}" for k, v in status.items() if k != "ok"), bad[0][0], bad[0][1])
        self._check_the_judge_reads_its_prompt(bad)
        out = {}
        for dim in self.scored:
            values = [(scores or {}).get(dim) for scores, _, _ in answers]
            out[dim] = with_batch_mean(values)
            if out[dim] is None:
                log.warning("vlm_judge: no answer of this batch scored %r; it gives no signal this step", dim)
                out[dim] = torch.full((len(values),), NO_SIGNAL, dtype=torch.float64)
        out["parsed"] = torch.tensor([float(s == "ok") for _, s, _ in answers], dtype=torch.float64)
        return out

    def _check_the_judge_reads_its_prompt(self, bad) -> None:
        """Most answers without scores over a run: the model or the prompt is wrong, and training on the batch
        mean would only waste the run."""
        answered, unparseable = self.counts["answers"], self.counts["unparseable"]
        if answered >= MIN_ANSWERS_FOR_GUARD and unparseable > self.max_unparseable_frac * answered:
            example = next((e for s, e in bad if s == "unparseable"), "")
            raise RewardServerError(f"vlm_judge: {unparseable} of {answered} answers from {self.model} at "
                                    f"{self.url} held no scores (e.g. {example!r}); check rewards.vlm_judge.model "
                                    f"and prompt: the answer must hold lines like 'Alignment Score (1-5): 4'")
