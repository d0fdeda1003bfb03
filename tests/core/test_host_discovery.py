import subprocess
import sys
from pathlib import Path

from cogniedit.host import find_comfyui, is_comfyui_root

REPO = Path(__file__).resolve().parents[2]


def make_root(path: Path) -> Path:
    (path / "comfy").mkdir(parents=True)
    (path / "comfy" / "model_management.py").write_text("")
    (path / "main.py").write_text("")
    return path


def test_env_variable_wins(tmp_path):
    root = make_root(tmp_path / "ComfyUI")
    found = find_comfyui(pack_dir=tmp_path / "elsewhere" / "pack", environ={"COMFYUI_PATH": str(root), "HOME": str(tmp_path)})
    assert found.root == root.resolve() and "COMFYUI_PATH" in found.reason


def test_wrong_env_variable_is_named(tmp_path):
    found = find_comfyui(pack_dir=tmp_path / "pack", environ={"COMFYUI_PATH": str(tmp_path / "nope"), "HOME": str(tmp_path)})
    assert found.root is None and "COMFYUI_PATH" in found.reason


def test_custom_nodes_parent(tmp_path):
    root = make_root(tmp_path / "ComfyUI")
    pack = root / "custom_nodes" / "comfyui-cogniedit"
    pack.mkdir(parents=True)
    found = find_comfyui(pack_dir=pack, environ={"HOME": str(tmp_path / "home")})
    assert found.root == root.resolve()


def test_comfy_cli_default_workspace(tmp_path):
    root = make_root(tmp_path / "comfy" / "ComfyUI")
    found = find_comfyui(pack_dir=tmp_path / "pack", environ={"HOME": str(tmp_path)})
    assert found.root == root.resolve() and is_comfyui_root(root)


def test_nothing_found_names_the_fix(tmp_path):
    found = find_comfyui(pack_dir=tmp_path / "pack", environ={"HOME": str(tmp_path)})
    assert found.root is None and "set COMFYUI_PATH" in found.reason


def test_import_cogniedit_never_imports_comfyui():
    code = (
        "import sys, pkgutil, importlib, cogniedit\n"
        "names = [m.name for m in pkgutil.walk_packages(cogniedit.__path__, 'cogniedit.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'comfy_extras', 'folder_paths', 'nodes', 'node_helpers')]\n"
        "assert not bad, bad\n"
        "print(len(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 1
