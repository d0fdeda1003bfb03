"""The model-free backend: decompose() answers from the rules alone."""

from __future__ import annotations


class RulesBackend:
    name = "rules"
    uses_model = False

    def identity(self) -> dict:
        return {"backend": self.name}

    def generate(self, messages, image, settings) -> str:
        return ""  # never called by decompose(); an empty answer would fall back to rules anyway
