import pytest

from training.config import ConfigError, load_config
from training.grpo import parse_args


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective:\n  name: sparse\n  window: 3\nrewards:\n  vlm_http:\n    enabled: true\n")
    config = load_config(path, ["objective.window=2", "lora.targets=[to_q, to_k]"])
    assert config["objective"]["name"] == "sparse" and config["objective"]["window"] == 2
    assert config["lora"]["targets"] == ["to_q", "to_k"]
    assert config["rewards"]["vlm_http"]["enabled"] is True
    assert config["rewards"]["vlm_http"]["retries"] == 3  # defaults kept under a partial section


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean objective.window"):
        load_config(None, ["objective.windw=3"])


def test_dotted_flags_become_overrides():
    args, overrides = parse_args(["--config", "x.yaml", "--objective.window", "4", "--rollout.eta=0.5",
                                  "--set", "seed=1", "--resume", "latest"])
    assert args.config == "x.yaml" and args.resume == "latest"
    assert overrides == ["seed=1", "objective.window=4", "rollout.eta=0.5"]


def test_group_mode_needs_groups():
    with pytest.raises(ConfigError, match="group_size >= 2"):
        load_config(None, ["rollout.group_size=1"])


@pytest.mark.parametrize("name", ["shapeedit_dense.yaml", "shapeedit_sparse.yaml"])
def test_shipped_configs_load(name):
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[2] / "training" / "configs" / name)
    assert config["objective"]["name"] in ("dense", "sparse")


def test_shipped_qwen_image_edit_config_needs_only_the_users_paths():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "training" / "configs" / "qwen_image_edit_dense.yaml"
    with pytest.raises(ConfigError, match="set data.records"):
        load_config(path)
    config = load_config(path, ["data.records=my_edits.jsonl"])
    assert config["model"]["family"] == "qwen_image_edit" and config["objective"]["window"] == 5


def test_numbers_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 reads 5e-4 as a string; the config reads it as the number it means (file and flag alike)."""
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\n")
    assert load_config(path)["optim"]["lr"] == 1e-4
    config = load_config(None, ["optim.lr=5e-4", "train.steps=7", "output_dir=runs/1e5x"])
    assert config["optim"]["lr"] == 5e-4 and config["train"]["steps"] == 7
    assert config["output_dir"] == "runs/1e5x"


def test_generated_cases_take_the_phrasings_of_a_list_in_turn():
    from cogniedit.shapes.cases import generate_cases
    from training.grpo import generated_cases

    data = load_config(None, ["data.n_cases=5", "data.seed=3", "data.phrasing=paraphrase, reasoning"])["data"]
    cases = generated_cases(data)
    paraphrases = generate_cases(3, seed=3, phrasing="paraphrase", split="train")
    reasonings = generate_cases(3, seed=3, phrasing="reasoning", split="train")
    expected = [paraphrases[0], reasonings[0], paraphrases[1], reasonings[1], paraphrases[2]]
    assert [c.to_dict() for c in cases] == [c.to_dict() for c in expected]
    assert [c.split for c in cases] == ["train"] * 5  # training never sees the held-out wording by default
    # the default is the template grammar the README's runs trained on, case for case
    template = generated_cases(load_config(None, ["data.n_cases=4", "data.seed=3"])["data"])
    assert [c.to_dict() for c in template] == [c.to_dict() for c in generate_cases(4, seed=3)]


@pytest.mark.parametrize("override, problem", [
    ("data.phrasing=paraphrse", "data.phrasing='paraphrse' must be one of template, paraphrase, reasoning, mixed"),
    ("data.phrasing=paraphrase,", "or a comma list of them"),
    ("data.split=test", "data.split='test' must be one of train, eval"),
])
def test_a_bad_phrasing_or_split_is_one_line(override, problem):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_the_config_offers_the_generators_phrasings_and_splits():
    from cogniedit.shapes.cases import PHRASINGS
    from cogniedit.shapes.phrasing import SPLITS
    from training.config import CASE_PHRASINGS, CASE_SPLITS

    assert CASE_PHRASINGS == PHRASINGS + ("mixed",) and set(CASE_SPLITS) == set(SPLITS)
