"""transformers_vlm reads model folders only inside the allowed roots: no `..`, no absolute paths
elsewhere, no symlinks out, and nothing of an outside folder is read."""

import os
from pathlib import Path

import pytest

from cogniedit.decompose import TransformersVLMBackend
from cogniedit.decompose.model_folders import check_model_folder, resolve_model_folder


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "models" / "LLM"
    (root / "good").mkdir(parents=True)
    (root / "good" / "config.json").write_text("{}")
    (root / "org" / "nested").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (outside / "model.safetensors").write_bytes(b"outside weights")
    return root, outside


def test_names_and_paths_inside_a_root_resolve(layout):
    root, _ = layout
    assert resolve_model_folder("good", [root]) == root.resolve() / "good"
    assert resolve_model_folder("org/nested", [root]) == root.resolve() / "org" / "nested"
    assert resolve_model_folder(str(root / "good"), [root]) == root.resolve() / "good"
    second = root.parent / "second"
    (second / "only-here").mkdir(parents=True)
    assert resolve_model_folder("only-here", [root, second]) == second.resolve() / "only-here"


@pytest.mark.parametrize("name", ["../../..", "../../outside", "good/../../..", "/etc", "/", "~"])
def test_escapes_and_outside_absolute_paths_are_refused(layout, name):
    root, _ = layout
    with pytest.raises(ValueError, match="outside the allowed model folders|no model folder") as error:
        resolve_model_folder(name, [root])
    assert "models/LLM" in str(error.value) and "\n" not in str(error.value)


def test_an_absolute_path_to_an_outside_folder_is_refused_and_nothing_is_read(layout, monkeypatch):
    root, outside = layout
    opened = []
    real_open = open

    def watching_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", watching_open)
    with pytest.raises(ValueError, match="outside the allowed model folders"):
        TransformersVLMBackend(str(outside), allowed_roots=[root])
    assert not any(str(outside) in path for path in opened)


def test_symlinks_that_escape_are_refused(layout):
    root, outside = layout
    os.symlink(outside, root / "link-out")
    with pytest.raises(ValueError, match="outside the allowed model folders"):
        resolve_model_folder("link-out", [root])
    os.symlink(outside / "model.safetensors", root / "good" / "model.safetensors")  # a weight file linked out
    with pytest.raises(ValueError, match="links to .*outside"):
        resolve_model_folder("good", [root])
    with pytest.raises(ValueError, match="links to .*outside"):
        check_model_folder(root / "good", [root])


def test_a_link_inside_the_root_and_a_root_that_is_a_link_are_fine(layout, tmp_path):
    root, _ = layout
    os.symlink(root / "good", root / "alias")
    assert resolve_model_folder("alias", [root]) == root.resolve() / "good"
    linked_root = tmp_path / "LLM-link"
    os.symlink(root, linked_root)  # the user's own choice: models/LLM -> /data/llm
    assert resolve_model_folder("good", [linked_root]) == root.resolve() / "good"


def test_the_user_allow_list_widens_the_roots(layout):
    root, outside = layout
    assert resolve_model_folder(str(outside), [root, outside.parent / "outside"]) == outside.resolve()


def test_missing_names_and_no_roots(layout):
    root, _ = layout
    with pytest.raises(ValueError, match="no model folder 'absent'"):
        resolve_model_folder("absent", [root])
    with pytest.raises(ValueError, match="needs 'model'"):
        resolve_model_folder("  ", [root])
    with pytest.raises(ValueError, match="no model folders are allowed"):
        resolve_model_folder("good", [])
    assert isinstance(resolve_model_folder("good", [Path(root)]), Path)
