"""The command line as a whole and `dantes-mlx init` (in-memory CliRunner, temp dirs, no network).

Run: pytest tests/test_project_cli.py -q
"""

from __future__ import annotations

import dataclasses
import re

import pytest
from click.testing import CliRunner

from dantes_mlx.cli import COMMANDS, main
from dantes_mlx.config import SECTIONS, CharacterConfig, LLMConfig, ProjectConfig, TrainConfig, load_yaml, section


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def squash(text: str) -> str:
    return " ".join(text.split())


def test_help_lists_every_command_with_one_line_help():
    result = run("--help")
    assert result.exit_code == 0
    listed = squash(result.output)
    for name, (_, _, help_text) in COMMANDS.items():
        assert "\n" not in help_text and help_text.endswith(".")
        assert f"{name} {squash(help_text)}" in listed, name


@pytest.mark.parametrize("command", ["init", "fetch", "clean"])
def test_stage_commands_have_help(command):
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    assert "--config" in result.output or command == "init"


def test_init_writes_every_setting_and_loads_back_to_the_defaults(tmp_path):
    path = tmp_path / "dantes.yaml"
    assert run("init", "-o", path).exit_code == 0
    text = path.read_text(encoding="utf-8")
    config = load_yaml(path)
    for name, cls in SECTIONS.items():
        assert section(cls, config) == cls(), name
        for f in dataclasses.fields(cls):
            assert re.search(rf"^  (# )?{f.name}:", text, re.M), f"{name}.{f.name} missing from dantes.yaml"
            assert f.metadata["help"].split()[0] in text


def test_commented_defaults_are_valid_yaml_once_uncommented(tmp_path):
    path = tmp_path / "dantes.yaml"
    run("init", "-o", path)
    names = {f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
    lines = path.read_text(encoding="utf-8").split("\n")
    live = [re.sub(r"^  # ", "  ", line) if re.match(rf"^  # ({'|'.join(names)}):", line) else line
            for line in lines]
    path.write_text("\n".join(live), encoding="utf-8")
    config = load_yaml(path)
    for name, cls in SECTIONS.items():
        assert set(config[name]) == {f.name for f in dataclasses.fields(cls)}, name
        assert section(cls, config) == cls(), name


def test_init_options_round_trip(tmp_path):
    path = tmp_path / "bovary.yaml"
    result = run("init", "-o", path, "--character", "Emma Bovary", "--alias", "Emma", "--alias", "Madame Bovary",
                 "--book", "2413", "--language", "fr", "--generator-model", "org/repo:model.gguf",
                 "--base-model", "mlx-community/Mistral-7B-Instruct-v0.3-4bit", "--data-dir", "work")
    assert result.exit_code == 0, result.output
    config = load_yaml(path)
    character = section(CharacterConfig, config)
    assert (character.name, character.aliases, character.language) == ("Emma Bovary", ["Emma", "Madame Bovary"], "fr")
    assert character.persona.startswith("Tu es Emma Bovary.")
    project = section(ProjectConfig, config)
    assert (project.books, project.data_dir) == (["2413"], "work")
    assert section(LLMConfig, config).model == "org/repo:model.gguf"
    assert section(TrainConfig, config).base_model == "mlx-community/Mistral-7B-Instruct-v0.3-4bit"


def test_init_for_a_new_character_without_books_says_what_to_do(tmp_path):
    path = tmp_path / "d.yaml"
    result = run("init", "-o", path, "--character", "Jean Valjean", "--language", "en")
    assert "project.books" in result.output
    config = load_yaml(path)
    assert section(ProjectConfig, config).books == []
    assert section(CharacterConfig, config).aliases == []
    assert section(CharacterConfig, config).persona.startswith("You are Jean Valjean.")


def test_init_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "dantes.yaml"
    path.write_text("project: {books: ['1']}\n", encoding="utf-8")
    result = run("init", "-o", path)
    assert result.exit_code != 0 and "already exists" in result.output and "--force" in result.output
    assert path.read_text(encoding="utf-8") == "project: {books: ['1']}\n"
    assert run("init", "-o", path, "--force").exit_code == 0
    assert section(ProjectConfig, load_yaml(path)) == ProjectConfig()


@pytest.mark.parametrize("args, needle", [(["--book", "moby"], "'moby'"), (["--language", "French"], "ISO 639-1")])
def test_init_rejects_bad_values(tmp_path, args, needle):
    result = run("init", "-o", tmp_path / "x.yaml", *args)
    assert result.exit_code != 0 and needle in result.output
    assert not (tmp_path / "x.yaml").exists()


def test_unknown_setting_names_the_config_file_and_line(tmp_path):
    from dantes_mlx.config import PrepareConfig, load_yaml, section
    from dantes_mlx.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("prepare:\n  split: 80/10/10\n  sead: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        section(PrepareConfig, load_yaml(bad))
    message = str(info.value.message)
    assert f"{bad}:3:" in message and "sead" in message and "[prepare]" in message and "seed" in message


@pytest.mark.parametrize("text, needle", [("train:\n  lerning_rate: 1e-4\n", "did you mean 'learning_rate'?"),
                                          ("trian:\n  iters: 10\n", "did you mean 'train'?")])
def test_misspelt_setting_or_section_gets_the_close_match(tmp_path, text, needle):
    from dantes_mlx.errors import ConfigError

    bad = tmp_path / "dantes.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        section(TrainConfig, load_yaml(bad))
    assert needle in info.value.message and str(bad) in info.value.message


def test_no_pytorch_advice_from_transformers_on_every_command():
    """transformers only tokenizes here; without torch (a Mac, CI) it advises at import: not on our terminal."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed: transformers gives no advice to hide")
    code = ("import dantes_mlx.cli\n"
            "import transformers")
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "PyTorch was not found" not in out.stderr, out.stderr
