"""Custom socket types shared by the CogniEdit nodes (one definition, so links type-check)."""

from comfy_api.latest import io

# A cogniedit.decompose Decomposition (enriched instruction, targets, tagged focus phrases), as a dict.
Directives = io.Custom("COGNIEDIT_DIRECTIVES")
# Learned focus parameters loaded from a focus-weights file (cogniedit.focus.weights_file), handed
# from the CogniEdit Loader to the Token Focus node.
FocusWeights = io.Custom("COGNIEDIT_FOCUS_WEIGHTS")
