"""The judge's prompt (the paper's, by default) and a tolerant reader of its answers.

The paper's reward (section 4.6 of the reference notes) shows a vision model the edited image, then the source,
then this text with ``{instruction}`` in place of the caption; the model answers word-wise scores and four 1-5
scores, of which the authors keep alignment, style and consistency (weights 1.4 / 0.7 / 1.0). Models write the
scores in many ways (``**Alignment Score (1-5):** 4``, ``Alignment: 4/5``, JSON, a think block first), so the
reader takes the LAST score each axis is given, in any of those forms, within 0-5.
"""

from __future__ import annotations

import re

PLACEHOLDER = "{instruction}"
AXES = ("alignment", "coherence", "style", "consistency")
NO_MISTAKES = "no_mistakes"  # the word-wise score of [No_mistakes]: high = every element of the caption is right

PAPER_PROMPT = """You are presented with an edited image (the first image) and its original image (the second image), and the associated text caption of the edited image. Your task is to analyze the edited image across multiple dimensions in relation to the caption and its original image. Specifically:

1. Extract key word related to: subject, object, color, number, lighting, style and activities in the caption based on how well it is visually represented in the edited image.
   - A higher score indicates that the word is less well represented in the image.
   - The special token [No_mistakes] represents whether all elements in the caption were correctly depicted. A high score suggests no mistakes; a low score suggests missing or incorrect elements.

2. Provide overall assessments for the image along the following axes (each rated from 1 to 5):
- Alignment Score: How well the image matches the caption in terms of content.
- Coherence Score: How logically consistent the image is (object location error, absence of visual glitches, object distortions, object is missing or extra, color or quantity error etc.).
- Style Score: How aesthetically appealing the image looks, regardless of caption accuracy.
- Consistency Score: How well the edited image consistent to its original image.

Output your evaluation using the format below and also provide the reason why you give this score:

---

Word-wise Scores: [["key word1", score1], ..., ["[No_mistakes]", scoreM]]

Alignment Score (1-5): X
Coherence Score (1-5): Y
Style Score (1-5): Z
Consistency Score (1-5): W

Output the basis and reasons for the scores given above 
Your task is provided as follows:
Text Caption: [{instruction}]"""

# "Alignment Score (1-5): 4", "**Alignment Score (1-5):** 4.5/5", "alignment: 4", '"alignment": 4', "Alignment = 4"
_AXIS = re.compile(r"\b(" + "|".join(AXES) + r")\b[\"'*_]*\s*(?:score)?\s*(?:\(\s*1\s*[-\u2013~to ]+\s*5\s*\))?"
                   r"[\"'*_\s]*[:=][\"'*_\s]*([0-5](?:\.\d+)?)(?![\d.]*\d)", re.IGNORECASE)
_NO_MISTAKES = re.compile(r"\[?\s*[\"']?\s*\[?\s*no[_ ]mistakes?\s*\]?\s*[\"']?\s*,\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_WORD = re.compile(r"\[\s*[\"']([^\"'\[\]]{1,60})[\"']\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")
MAX_WORDS = 32


def render_prompt(template: str, instruction: str) -> str:
    """The template with the instruction in place (str.replace: a template may hold JSON braces)."""
    return template.replace(PLACEHOLDER, " ".join(str(instruction).split()))


def parse_judge_answer(text: str) -> dict:
    """``{axis: score}`` for every axis the answer scores (0-5), ``no_mistakes`` when the word-wise list has it,
    and ``words``: up to 32 ``(word, score)`` pairs of that list. An answer with no score gives ``{"words": []}``."""
    out: dict = {}
    for match in _AXIS.finditer(text or ""):
        out[match.group(1).lower()] = float(match.group(2))  # later mentions win (the answer after a think block)
    found = _NO_MISTAKES.findall(text or "")
    if found:
        out[NO_MISTAKES] = float(found[-1])
    out["words"] = [(w, float(s)) for w, s in _WORD.findall(text or "")[:MAX_WORDS]]
    return out
