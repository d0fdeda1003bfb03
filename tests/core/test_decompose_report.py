"""The decomposition report stays a few kilobytes whatever the instruction and the model said."""

from cogniedit.decompose import Decomposition, FocusPhrase, decompose
from cogniedit.decompose.report import report_text


def test_a_10000_character_instruction_gives_a_bounded_report_with_counts():
    words = "make the left red circle three small blue squares on the top right and ".split()
    instruction = " ".join(words[i % len(words)] for i in range(2000))[:10_000]
    result = decompose(None, instruction, "rules")
    report = report_text(result)
    assert len(result.focus) > 1000 and len(report) < 4_000
    assert f"focus: {len(result.focus)} phrases (colour " in report and "more" in report
    assert "(10,000 characters)" in report


def test_many_targets_and_warnings_are_counted_not_listed():
    text = "make it red"
    result = Decomposition(enriched_instruction=text, targets=[f"target {i} " + "x" * 500 for i in range(16)],
                           focus=[FocusPhrase("red", "colour", 8, 11)], warnings=[f"w{i} " + "y" * 2000 for i in range(30)])
    report = report_text(result, notes=["a note"])
    assert len(report) < 4_000 and "+8 more" in report and "+21 more warnings" in report
    assert report.splitlines()[4] == "warning: a note" and "focus: 1 phrases (colour 1): red (colour)" in report
