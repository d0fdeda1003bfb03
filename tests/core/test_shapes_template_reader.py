"""read_template turns template-grammar text (a case's instruction or explicit answer) back into its ops."""

import pytest

from cogniedit.decompose.rules import decompose_rules
from cogniedit.shapes.cases import generate_cases
from cogniedit.shapes.template_reader import read_template


@pytest.mark.parametrize("phrasing", ["template", "paraphrase", "reasoning"])
def test_explicit_instructions_read_back_to_the_case_ops(phrasing):
    for case in generate_cases(200, seed=31, phrasing=phrasing):
        assert read_template(case.explicit_instruction, case.source, case.world) == case.ops, case.to_dict()


def test_rule_rewritten_paraphrases_read_back_to_the_case_ops():
    for case in generate_cases(200, seed=32, phrasing="paraphrase", split="eval"):
        assert read_template(decompose_rules(case.instruction).enriched_instruction, case.source) == case.ops


def test_not_in_the_grammar_or_ambiguous_is_a_value_error():
    case = next(c for c in generate_cases(40, seed=33) if c.kind == "colour")
    with pytest.raises(ValueError, match="not a template clause"):
        read_template("paint " + case.instruction.split(" ", 1)[1], case.source)
    twins = next(c for c in generate_cases(300, seed=33)
                 if c.kind == "colour" and c.instruction.split()[2] in ("left", "right", "top", "bottom"))
    words = twins.instruction.split()
    with pytest.raises(ValueError, match="names 2 objects|names 3 objects"):
        read_template(" ".join(words[:2] + words[3:]), twins.source)
