"""ShapeEdit: a synthetic editing world where the right answer is known exactly (docs/shapeedit.md).

Scenes of coloured shapes on a grid (``scene``), alias-free rendering (``render``), generated edit cases with
a JSONL format (``cases``), an exact scorer (``scorer``) and the evaluation command (``evaluate``). The small
editor lives in ``editor/``. Import submodules explicitly; this package stays light.
"""
