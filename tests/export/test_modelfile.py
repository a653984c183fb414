"""Ollama Modelfile: golden files, Ollama's grammar (accepts what we write, rejects what Ollama rejects),
safe quoting, and `ollama create` through a fake executable. In-memory, no model, no network.

Run: /work/venv/bin/python -m pytest tests/export/test_modelfile.py -q
Regenerate the goldens after an intended change: DANTES_UPDATE_GOLDEN=1 pytest tests/export/test_modelfile.py
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dantes_mlx.config import DANTES_PERSONA
from dantes_mlx.errors import ConfigError, InputError, ModelError
from dantes_mlx.export.modelfile import (MISTRAL_TEMPLATE, STOP_TOKENS, build_modelfile, default_license,
                                         example_modelfile, instructions, ollama_create, parse_modelfile,
                                         parse_ollama_version, quote)

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
PARAMS = {"temperature": 0.7, "top_p": 0.9, "repeat_penalty": 1.1, "num_ctx": 4096}
MESSAGES = [{"role": "user", "content": "Qui êtes-vous ?"},
            {"role": "assistant", "content": "Je suis le comte de Monte-Cristo, madame.\n-- Et Edmond Dantès ?"}]


def golden_cases() -> dict[str, str]:
    """The Modelfiles the goldens pin down: the fused route and the adapter-only route."""
    license_text = default_license("mistralai/Mistral-7B-Instruct-v0.3", ["17989"])
    return {
        "Modelfile.fused": build_modelfile("./dantes-q4_k_m.gguf", system=DANTES_PERSONA, parameters=PARAMS,
                                           messages=MESSAGES, license_text=license_text,
                                           header="Ollama Modelfile written by `dantes-mlx export`."),
        "Modelfile.adapter": build_modelfile("mistral:7b-instruct-v0.3-fp16", adapter="./dantes-lora-f16.gguf",
                                             system=DANTES_PERSONA, parameters=PARAMS, license_text=license_text),
    }


@pytest.mark.parametrize("name", ["Modelfile.fused", "Modelfile.adapter"])
def test_golden(name):
    text = golden_cases()[name]
    if os.environ.get("DANTES_UPDATE_GOLDEN"):
        (GOLDEN / name).write_text(text, encoding="utf-8")
    assert text == (GOLDEN / name).read_text(encoding="utf-8"), (
        f"tests/golden/{name} differs; if the change is intended, rerun with DANTES_UPDATE_GOLDEN=1")


def test_committed_example_modelfile_is_what_the_module_writes():
    assert (REPO / "Modelfile").read_text(encoding="utf-8") == example_modelfile(), (
        "the root Modelfile drifted: python -m dantes_mlx.export.modelfile > Modelfile")


def test_every_instruction_we_write_is_accepted_and_reads_back():
    text = golden_cases()["Modelfile.fused"]
    got = instructions(parse_modelfile(text))
    assert got["model"] == ["./dantes-q4_k_m.gguf"]
    assert got["template"] == [MISTRAL_TEMPLATE]
    assert got["stop"] == list(STOP_TOKENS)
    assert got["temperature"] == ["0.7"] and got["num_ctx"] == ["4096"]
    assert got["system"] == [DANTES_PERSONA]
    assert got["message"] == [f"{m['role']}: {m['content']}" for m in MESSAGES]
    assert "Apache License" in got["license"][0] and "#17989" in got["license"][0]
    adapter = instructions(parse_modelfile(golden_cases()["Modelfile.adapter"]))
    assert adapter["model"] == ["mistral:7b-instruct-v0.3-fp16"] and adapter["adapter"] == ["./dantes-lora-f16.gguf"]


def test_template_is_mistral_v03_format():
    # System prompt before the last user turn, [INST] ... [/INST], assistant turns closed by </s>.
    assert "[INST] {{ if and $.System (eq (len (slice $.Messages $index)) 1) }}{{ $.System }}\n\n" in MISTRAL_TEMPLATE
    assert "{{ .Content }}[/INST]" in MISTRAL_TEMPLATE and "{{ .Content }}\n" in MISTRAL_TEMPLATE
    assert "{{- end }}</s>" in MISTRAL_TEMPLATE and "[TOOL_CALLS]" in MISTRAL_TEMPLATE


def test_template_sends_what_the_base_chat_template_makes(tiny_model_dir, tmp_path):
    """The tiny model carries Mistral v0.3's own chat template: the Modelfile's TEMPLATE agrees with it; a ChatML
    base (SmolLM2, Qwen) gets the ChatML TEMPLATE and stops; a base of a third format gets Mistral's and a warning,
    since Ollama would prompt it unlike training."""
    import shutil

    from dantes_mlx.export.modelfile import CHATML, MISTRAL, chat_format, ollama_rendering, template_mismatch

    assert template_mismatch(tiny_model_dir) is None and chat_format(tiny_model_dir) == (MISTRAL, None)
    # Mistral v0.3: system prompt before the last user turn, history replayed, a space before each answer.
    assert ollama_rendering([{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                             {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]) == \
        "[INST] Q1[/INST] A1</s>[INST] S\n\nQ2[/INST]"
    other = tmp_path / "chatml"
    shutil.copytree(tiny_model_dir, other)
    (other / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = json.loads((other / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    assert chat_format(other) == (CHATML, None)
    assert ollama_rendering([{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}], CHATML) == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n"
    text = build_modelfile("./m.gguf", template=CHATML.template, stop=CHATML.stops)
    assert instructions(parse_modelfile(text))["stop"] == ["<|im_end|>", "<|im_start|>"]
    (other / "chat_template.jinja").write_text(
        "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    fmt, warning = chat_format(other)
    assert fmt is MISTRAL and warning and "### user" in warning and "neither Mistral v0.3's nor ChatML" in warning


@pytest.mark.parametrize("path", ["./my model.gguf", '/tmp/a"b.gguf', '"leading-quote.gguf', " padded.gguf ",
                                  "C:\\Models\\dantès.gguf", "mistral:7b-instruct-v0.3-fp16"])
def test_paths_are_quoted_safely(path):
    text = build_modelfile(path, adapter=path)
    got = instructions(parse_modelfile(text))
    assert got["model"] == [path] and got["adapter"] == [path]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf", "Co", "Cn"),
                                      whitelist_characters="\n\t \"'#"), min_size=1))
def test_any_system_prompt_round_trips(text):
    if '"""' in text:
        with pytest.raises(ConfigError, match='"""'):
            build_modelfile("./m.gguf", system=text)
        return
    got = instructions(parse_modelfile(build_modelfile("./m.gguf", system=text)))
    assert got["system"] == [text]


def test_unicode_spaces_become_spaces_and_controls_are_refused():
    # Ollama drops non-printable runes: a French no-break space would vanish and glue the words.
    got = instructions(parse_modelfile(build_modelfile("./m.gguf", system="Qui êtes-vous\u00a0?\u202fBien.")))
    assert got["system"] == ["Qui êtes-vous ? Bien."]
    with pytest.raises(ConfigError, match=r"U\+0007"):
        build_modelfile("./m.gguf", system="bip\x07")


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="unknown Ollama parameter 'temprature'"):
        build_modelfile("./m.gguf", parameters={"temprature": 0.7})
    with pytest.raises(ConfigError, match="integer"):
        build_modelfile("./m.gguf", parameters={"num_ctx": 4096.5})
    with pytest.raises(ConfigError, match="role 'narrator'"):
        build_modelfile("./m.gguf", messages=[{"role": "narrator", "content": "x"}])
    assert quote("simple", "x") == "simple" and quote("a\nb", "x") == '"""a\nb"""'


# Ollama's grammar (parser/parser.go) on cases written for it here: (text, expected commands).
ACCEPTED = [
    ("FROM foo", [("model", "foo")]),
    ('FROM "FOO  BAR  "', [("model", "FOO  BAR  ")]),
    ("FROM     FOOO BAR    ", [("model", "FOOO BAR")]),
    ("# a comment\nfrom foo\n", [("model", "foo")]),
    ("PARAMETER temperature 0.5\nFROM foo", [("temperature", "0.5"), ("model", "foo")]),
    ('FROM foo\nSYSTEM """\nmulti\nline "quoted".\n"""\n', [("model", "foo"), ("system", '\nmulti\nline "quoted".\n')]),
    ('FROM foo\nSYSTEM """"""\n', [("model", "foo"), ("system", "")]),
    ('FROM foo\nSYSTEM ""\n', [("model", "foo"), ("system", "")]),
    ("FROM foo\nMESSAGE user Hey there!\nMESSAGE assistant Hello.",
     [("model", "foo"), ("message", "user: Hey there!"), ("message", "assistant: Hello.")]),
    ('FROM foo\nPARAMETER stop "### User: "\nPARAMETER stop </s>',
     [("model", "foo"), ("stop", "### User: "), ("stop", "</s>")]),
    ("FROM foo\nPARAMETER use_mmap true\nPARAMETER mirostat 1\n",
     [("model", "foo"), ("use_mmap", "true"), ("mirostat", "1")]),  # mirostat: deprecated, warned
    ("\ufeffFROM foo\r\nLICENSE MIT\r\n", [("model", "foo"), ("license", "MIT")]),
]
REJECTED = [
    ("", "no FROM line"),
    ("PARAMETER temperature 0.5", "no FROM line"),
    ("FROM foo\nBADCOMMAND param1 value1\n", "unknown instruction"),
    ("FROM\n", "command must be one of"),
    ("FROM foo\nPARAMETER temperature\n", "PARAMETER needs a name"),
    ("FROM foo\nMESSAGE badguy I'm a bad guy!\n", "MESSAGE role 'badguy'"),
    ("FROM foo\nMESSAGE system\n", "MESSAGE needs a role"),
    ('FROM foo\nSYSTEM """unterminated""\n', "unterminated"),
    ('FROM foo\nSYSTEM "\n', "unterminated"),
    ("FROM foo\nPARAMETER temprature 0.7\n", "unknown parameter 'temprature'"),
    ("FROM foo\nPARAMETER num_ctx 4k\n", "invalid int value"),
    ("FROM foo\nPARAMETER top_p high\n", "invalid float value"),
    ("FROM foo\nPARAMETER use_mmap yes\n", "invalid bool value"),
]


@pytest.mark.parametrize("text,expected", ACCEPTED)
def test_parser_accepts_what_ollama_accepts(text, expected):
    assert [(c.name, c.args) for c in parse_modelfile(text)] == expected


@pytest.mark.parametrize("text,message", REJECTED)
def test_parser_rejects_what_ollama_rejects(text, message):
    with pytest.raises(InputError, match=message):
        parse_modelfile(text, path="Modelfile")


def test_parser_errors_name_the_line():
    with pytest.raises(InputError, match=r"^Modelfile:3: unknown instruction 'TEMPERATURE'"):
        parse_modelfile("FROM foo\nSYSTEM hi\nTEMPERATURE 0.7\n", path="Modelfile")


# ---------------------------------------------------------------- ollama create
def fake_ollama(bin_dir: Path, exit_code: int = 0, version: str = "ollama version is 0.34.0") -> Path:
    """An `ollama` executable that records its argv and working folder as JSON; `--version` prints `version`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    record = bin_dir / "calls.jsonl"
    script = bin_dir / "ollama"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      f"open({str(record)!r}, 'a').write(json.dumps([sys.argv[1:], os.getcwd()]) + '\\n')\n"
                      f"if sys.argv[1:] == ['--version']:\n    print({version!r})\n    sys.exit(0)\n"
                      f"print('Error: could not connect to ollama app', file=sys.stderr) if {exit_code} else None\n"
                      f"sys.exit({exit_code})\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return record


def test_ollama_create_runs_the_right_argv(tmp_path, monkeypatch):
    record = fake_ollama(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    modelfile = tmp_path / "out dir" / "Modelfile"
    modelfile.parent.mkdir()
    modelfile.write_text(build_modelfile("./dantes-q4_k_m.gguf"))
    created, message = ollama_create("dantes", modelfile)
    assert created and "ollama run dantes" in message
    argv, cwd = json.loads(record.read_text().splitlines()[0])
    assert argv == ["create", "dantes", "-f", str(modelfile.resolve())]
    assert Path(cwd) == modelfile.parent.resolve()  # relative FROM paths resolve next to the Modelfile


def test_ollama_create_failure_says_what_to_do(tmp_path, monkeypatch):
    fake_ollama(tmp_path / "bin", exit_code=1)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "Modelfile").write_text("FROM ./x.gguf\n")
    with pytest.raises(ModelError, match="could not connect") as failure:
        ollama_create("dantes", tmp_path / "Modelfile")
    assert "ollama serve" in str(failure.value)


def test_ollama_create_that_hangs_or_cannot_run_is_a_clear_error(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ollama"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    (tmp_path / "Modelfile").write_text("FROM ./x.gguf\n")
    with pytest.raises(ModelError, match="did not finish within 1 s") as hung:
        ollama_create("dantes", tmp_path / "Modelfile", timeout=1)
    assert f"ollama create dantes -f {tmp_path / 'Modelfile'}" in str(hung.value)
    script.write_text("not a script, no shebang\n")  # exec format error: OSError
    with pytest.raises(ModelError, match="could not run") as broken:
        ollama_create("dantes", tmp_path / "Modelfile")
    assert "ollama create dantes -f" in str(broken.value)


def test_without_ollama_the_exact_commands_are_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    modelfile = tmp_path / "my export" / "Modelfile"
    created, message = ollama_create("dantes", modelfile)
    assert not created
    assert f"ollama create dantes -f '{modelfile.resolve()}'" in message and "ollama run dantes" in message


def test_model_name_cannot_become_an_option(tmp_path):
    with pytest.raises(ConfigError, match="valid Ollama model name"):
        ollama_create("-rf", tmp_path / "Modelfile")


# `ollama --version` outputs: a server and a client that agree, a client newer than its server, no server.
SERVER_0_34_0 = "ollama version is 0.34.0"
OLD_SERVER_NEW_CLIENT = "ollama version is 0.33.2\nWarning: client version is 0.35.0"
NO_SERVER_0_34_1 = "Warning: could not connect to a running Ollama instance\nWarning: client version is 0.34.1"


def test_parse_ollama_version_reads_server_and_client():
    assert parse_ollama_version(SERVER_0_34_0) == [(0, 34, 0)]
    assert parse_ollama_version(OLD_SERVER_NEW_CLIENT) == [(0, 33, 2), (0, 35, 0)]
    assert parse_ollama_version(NO_SERVER_0_34_1) == [(0, 34, 1)]
    assert parse_ollama_version("ollama version is 0.34.1-rc2") == [(0, 34, 1)]
    assert parse_ollama_version("command not understood") == []


def adapter_modelfile(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Modelfile.adapter").write_text(build_modelfile("./base-f16.gguf", adapter="./dantes-lora-f16.gguf"))
    return folder / "Modelfile.adapter"


@pytest.mark.parametrize("version", [NO_SERVER_0_34_1, OLD_SERVER_NEW_CLIENT, "ollama version is 0.34.1-rc2",
                                     "ollama version is 1.2.0"])
def test_adapter_modelfile_is_refused_before_create_by_ollama_0_34_1_and_later(tmp_path, monkeypatch, version):
    record = fake_ollama(tmp_path / "bin", version=version)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    modelfile = adapter_modelfile(tmp_path / "out")
    with pytest.raises(ModelError, match="refuses Modelfiles with ADAPTER") as refused:
        ollama_create("dantes", modelfile)
    assert "#14969" in str(refused.value) and "ollama create dantes -f" in refused.value.fix
    assert str(modelfile.with_name("Modelfile")) in refused.value.fix  # the fused route to use instead
    calls = [json.loads(line)[0] for line in record.read_text().splitlines()]
    assert calls == [["--version"]]  # `ollama create` never ran


def test_adapter_modelfile_is_created_with_ollama_0_34_0(tmp_path, monkeypatch):
    record = fake_ollama(tmp_path / "bin", version=SERVER_0_34_0)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    modelfile = adapter_modelfile(tmp_path / "out")
    created, _ = ollama_create("dantes", modelfile)
    calls = [json.loads(line)[0] for line in record.read_text().splitlines()]
    assert created and calls == [["--version"], ["create", "dantes", "-f", str(modelfile.resolve())]]


def test_fused_modelfile_needs_no_version_check(tmp_path, monkeypatch):
    record = fake_ollama(tmp_path / "bin", version="ollama version is 9.0.0")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "Modelfile").write_text(build_modelfile("./dantes-q4_k_m.gguf"))
    created, _ = ollama_create("dantes", tmp_path / "Modelfile")
    calls = [json.loads(line)[0] for line in record.read_text().splitlines()]
    assert created and calls == [["create", "dantes", "-f", str((tmp_path / "Modelfile").resolve())]]
