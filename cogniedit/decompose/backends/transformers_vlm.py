"""Any local transformers vision-language model folder (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, ...).

Loads with `AutoModelForImageTextToText` and the folder's processor; `trust_remote_code` is off
unless the caller turns it on, and nothing is fetched from a hub (`local_files_only`). With `allowed_roots`
(the ComfyUI node always passes them) the folder must lie inside one of them, links resolved, and is
checked again just before loading (model_folders.py). Without torchvision, transformers 5 cannot build the stock Qwen-VL
processors (their video slot needs it) and `AutoProcessor` quietly returns the bare tokenizer, so an
image-only processor around the PIL image processor is built instead (`image_only_processor`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..cache import folder_fingerprint
from ..model_folders import check_model_folder, resolve_model_folder
from ..settings import DecomposeSettings
from .base import BackendError, CancelCheck, Cancelled

# Turns {"type": "image"} parts into Qwen vision markers; used when a folder ships no chat template
# with image support (the stock Qwen tokenizer template is text-only).
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_PROCESSOR_BY_MODEL_TYPE = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
}


def image_only_processor(base_cls, image_processor, tokenizer, chat_template: str | None = None):
    """A Qwen-VL processor without the video slot (transformers derives its parts from __init__)."""
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyProcessor(base_cls):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.vision_start_token, self.vision_end_token = "<|vision_start|>", "<|vision_end|>"
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    ImageOnlyProcessor.__name__ = f"ImageOnly{base_cls.__name__}"
    return ImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer,
                              chat_template=chat_template or QWEN_VL_CHAT_TEMPLATE)


def _has_torchvision() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


def load_processor(folder: str, model_type: str, trust_remote_code: bool = False):
    import transformers

    local = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    if _has_torchvision():
        processor = transformers.AutoProcessor.from_pretrained(folder, **local)
        if hasattr(processor, "image_processor"):
            if not getattr(processor, "chat_template", None):
                processor.chat_template = QWEN_VL_CHAT_TEMPLATE
            return processor
    base_name = _PROCESSOR_BY_MODEL_TYPE.get(model_type)
    if base_name is None:
        raise BackendError(
            f"cannot build a processor for model type {model_type!r} without torchvision; "
            "install torchvision or use a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model"
        )
    image_processor = transformers.AutoImageProcessor.from_pretrained(folder, **local)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **local)
    template = getattr(tokenizer, "chat_template", None)
    template = template if template and "image" in template else None
    return image_only_processor(getattr(transformers, base_name), image_processor, tokenizer, template)


class TransformersVLMBackend:
    """A local VLM: pass a model folder, or an already built `model` and `processor`.

    allowed_roots: when given, `model_path` is a folder name (or a path) that must resolve inside one of
    these folders; ValueError otherwise. None trusts the caller's path (library use)."""

    name = "transformers_vlm"
    uses_model = True

    def __init__(self, model_path: str | None = None, *, model=None, processor=None, device: str = "cpu",
                 dtype: str | None = None, trust_remote_code: bool = False, model_id: str | None = None,
                 generate_kwargs: dict | None = None, allowed_roots=None):
        if model_path is None and (model is None or processor is None):
            raise ValueError("TransformersVLMBackend needs model_path, or both model= and processor=")
        self.allowed_roots = None if allowed_roots is None else list(allowed_roots)
        if model_path is not None and self.allowed_roots is not None:
            model_path = str(resolve_model_folder(model_path, self.allowed_roots))
        self.model_path = model_path
        self.model, self.processor = model, processor
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code
        self.model_id = model_id or (str(Path(model_path).resolve()) if model_path else type(model).__name__)
        self.extra_generate_kwargs = dict(generate_kwargs or {})  # e.g. repetition_penalty
        self._lock = threading.Lock()  # one generate at a time: the model is shared state

    def identity(self) -> dict:
        """Names the model folder's files too: an on-disk cache never serves a retrained folder's old answers."""
        folder = self.model_path
        files = folder_fingerprint(folder) if folder is not None and Path(folder).is_dir() else None
        return {"backend": self.name, "model": self.model_id, "generate": self.extra_generate_kwargs, "files": files}

    def load(self):
        if self.model is not None:
            return
        import transformers

        folder = Path(self.model_path)
        if self.allowed_roots is not None:
            check_model_folder(folder, self.allowed_roots)  # the folder may have changed since it was chosen
        if not (folder / "config.json").is_file():
            raise BackendError(f"{folder} is not a transformers model folder (no config.json); point model_path at one")
        kwargs = {"trust_remote_code": self.trust_remote_code, "local_files_only": True}
        if self.dtype:
            kwargs["dtype"] = self.dtype
        model = transformers.AutoModelForImageTextToText.from_pretrained(str(folder), **kwargs)
        self.processor = load_processor(str(folder), model.config.model_type, self.trust_remote_code)
        self.model = model.to(self.device).eval()

    def prepare(self, messages: list[dict], image: np.ndarray | None):
        """Processor inputs for one conversation (exposed so benchmarks can time generate alone)."""
        from PIL import Image

        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        images = [Image.fromarray(image)] if image is not None else None
        return self.processor(text=[text], images=images, return_tensors="pt").to(self.model.device)

    def generation_kwargs(self, settings: DecomposeSettings) -> dict:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        kwargs = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.temperature > 0,
                  "pad_token_id": tokenizer.pad_token_id}
        if settings.temperature > 0:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        kwargs.update(self.extra_generate_kwargs)
        return kwargs

    def beam_answers(self, messages, image, settings: DecomposeSettings, beams: int) -> list[str]:
        """The ``beams`` answers of a beam search, best first (deterministic), for a caller that can check
        answers and take the first usable one (the ShapeEdit editor, ``shapes.decomposer.beams``)."""
        import torch

        with self._lock:
            self.load()
            inputs = self.prepare(messages, image)
            kwargs = self.generation_kwargs(settings)
            for sampling_only in ("temperature", "top_p"):
                kwargs.pop(sampling_only, None)
            kwargs.update(do_sample=False, num_beams=beams, num_return_sequences=beams)
            with torch.inference_mode():
                output = self.model.generate(**inputs, **kwargs)
            return self.processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def generate(self, messages, image, settings, cancel: CancelCheck | None = None) -> str:
        import torch

        with self._lock:
            self.load()
            inputs = self.prepare(messages, image)
            if settings.temperature > 0:
                torch.manual_seed(settings.seed)
            kwargs = self.generation_kwargs(settings)
            if cancel is not None:
                kwargs["stopping_criteria"] = _stop_when(cancel)
            with torch.inference_mode():
                output = self.model.generate(**inputs, **kwargs)
            if cancel is not None and cancel():
                raise Cancelled("cancelled while the model generated")
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]


def _stop_when(cancel: CancelCheck):
    """transformers stopping criteria: checked after every generated token."""
    import torch
    import transformers

    class StopWhenCancelled(transformers.StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), bool(cancel()), dtype=torch.bool, device=input_ids.device)

    return transformers.StoppingCriteriaList([StopWhenCancelled()])
