"""`oar-verl explain`: one pair or a file of pairs to an HTML page and PNGs, clear errors."""

import argparse
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from oar_verl import explain as cli
from oar_verl.cli import main
from oar_verl.explain import parse_settings
from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tokenizer = byte_tokenizer()
    tiny_qwen2(len(tokenizer), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def token_spans(page: str) -> int:
    return page.count('<span class="tok ')


def test_one_pair_to_html_and_png(model_dir, tmp_path, capsys):
    out = tmp_path / "one.html"
    response = "2+3 is 5\n#### 5"
    code = main(["explain", "--model", str(model_dir), "--prompt", "add:\n", "--response", response, "--method", "oar_p",
                 "--set", "quantile=0.3", "--out", str(out), "--png-dir", str(tmp_path / "png")])  # fmt: skip
    assert code == 0
    page = out.read_text()
    assert token_spans(page) == len(response)  # byte tokenizer: one token per character
    assert (tmp_path / "png" / "response_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_pairs_from_jsonl_and_parquet(model_dir, tmp_path):
    rows = [{"prompt": "q1\n", "response": "1+1=2\n#### 2", "reward": 1.0},
            {"prompt": [{"role": "user", "content": "q2"}], "response": "so 7\n#### 7", "reward": 0.0},
            {"prompt": "q3\n", "response": [50, 51, 10, 35, 35, 35, 35, 32, 51], "reward": 0.0}]  # fmt: skip
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("\n".join(json.dumps(row) for row in rows))
    parquet = tmp_path / "rows.parquet"
    chat_rows = [{**row, "prompt": [{"role": "user", "content": str(row["prompt"])}]} for row in rows[:2]]  # verl's parquet layout
    pd.DataFrame(chat_rows).to_parquet(parquet)
    for source, count in ((jsonl, 3), (parquet, 2)):
        out = tmp_path / f"{source.suffix[1:]}.html"
        assert main(["explain", "--model", str(model_dir), "--input", str(source), "--out", str(out)]) == 0
        page = out.read_text()
        assert page.count('<section class="heatmap"') == count
        assert token_spans(page) == sum(len(r["response"]) for r in rows[:count])
        assert "reward 1 ·" in page and "reward 0 ·" in page
    assert main(["explain", "--model", str(model_dir), "--input", str(jsonl), "--max-rows", "1", "--out", str(tmp_path / "m.html")]) == 0
    assert (tmp_path / "m.html").read_text().count('<section class="heatmap"') == 1


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "oar_verl.cli", "explain", *args], capture_output=True, text=True, check=False)


def test_bad_input_is_reported_with_the_setting_at_fault(model_dir, tmp_path, capsys):
    not_causal = tmp_path / "vision"
    not_causal.mkdir()
    (not_causal / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 8}))
    missing_column = tmp_path / "rows.jsonl"
    missing_column.write_text(json.dumps({"question": "q", "response": "a"}))
    cases = [
        (["--model", str(not_causal), "--prompt", "a", "--response", "b"], "not a causal LM (model_type 'vit')"),
        (["--model", str(tmp_path / "nowhere"), "--prompt", "a", "--response", "b"], "cannot read a model config"),
        (["--model", str(model_dir), "--input", str(missing_column)], "row 0: no 'prompt'"),
        (["--model", str(model_dir), "--input", str(tmp_path / "none.jsonl")], "no such file"),
        (["--model", str(model_dir), "--prompt", "a"], "--prompt needs --response"),
        (["--model", str(model_dir), "--prompt", "a", "--response", "b\n#### 1", "--set", "nonsense=1"], "--set nonsense: unknown setting"),
    ]
    for args, message in cases:  # in this process: the exit status and message are main's
        with pytest.raises(SystemExit) as exit_status:
            main(["explain", *args, "--out", str(tmp_path / "x.html")])
        stderr = capsys.readouterr().err
        assert exit_status.value.code == 2, (args, stderr[-2000:])
        assert message in stderr, (message, stderr[-2000:])
    assert not (tmp_path / "x.html").exists()


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the command loads a model: what it checks must come first."""

    def load_model(*args):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(cli, "load_model", load_model)


def explain_error(args, tmp_path, capsys) -> str:
    """stderr of a command that must stop with exit status 2 and one line, writing nothing."""
    with pytest.raises(SystemExit) as exit_status:
        main(["explain", *args, "--out", str(tmp_path / "x.html")])
    stderr = capsys.readouterr().err
    assert exit_status.value.code == 2, stderr[-2000:]
    messages = [line for line in stderr.splitlines() if line.startswith("oar-verl explain")]  # other lines: loading progress bars
    assert len(messages) == 1 and stderr.splitlines()[-1].startswith("oar-verl explain: error: "), stderr[-2000:]
    assert not (tmp_path / "x.html").exists()
    return messages[0]


WARNING = "oar-verl explain: warning: "


def warnings_of(stderr: str) -> list[str]:
    return [line.removeprefix(WARNING) for line in stderr.splitlines() if line.startswith(WARNING)]


def test_a_response_without_an_answer_is_a_warning_naming_the_pattern_that_finds_it(model_dir, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(row) for row in [{"prompt": "q\n", "response": "so 2+3=5\n#### 5"},
                                                           {"prompt": "q\n", "response": "so \\boxed{5}"}]))  # fmt: skip
    out = tmp_path / "page.html"
    assert main(["explain", "--model", str(model_dir), "--input", str(rows), "--answer-pattern", "gsm8k", "--out", str(out)]) == 0
    warnings = warnings_of(capsys.readouterr().err)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{rows}:2: row 1: --answer-pattern 'gsm8k' finds no answer")
    assert warnings[0].endswith("; --answer-pattern boxed would find one")
    sections = out.read_text().split('<section class="heatmap"')[1:]
    assert ['class="fallback"' in section for section in sections] == [False, True]
    assert "finds no answer" in sections[1]


def test_nothing_reweighted_is_exit_status_1_and_each_reason_is_given(model_dir, tmp_path, capsys):
    for response, reason in (("no answer here", "finds no answer in the response"), ("#### 5", "empty reasoning")):
        code = main(["explain", "--model", str(model_dir), "--prompt", "q\n", "--response", response, "--out", str(tmp_path / "x.html")])
        warnings = warnings_of(capsys.readouterr().err)
        assert code == 1
        assert warnings[0].startswith("row 0: ") and reason in warnings[0], warnings
        assert warnings[-1].startswith("no response was reweighted")
        assert "--answer-pattern" not in warnings[0].partition("(plain GRPO)")[2]  # auto already tries every built-in pattern


def test_a_pair_longer_than_the_context_is_a_warning_with_the_lengths(tmp_path, capsys):
    tokenizer = byte_tokenizer()
    short = tmp_path / "short"
    tiny_qwen2(len(tokenizer), seed=0, max_positions=24).save_pretrained(short)
    tokenizer.save_pretrained(short)
    response = "one two three four five six seven\n#### 7"  # byte tokenizer: one token per character
    assert main(["explain", "--model", str(short), "--prompt", "q:\n", "--response", response, "--out", str(tmp_path / "x.html")]) == 0
    warnings = warnings_of(capsys.readouterr().err)
    total, reasoning = 3 + len(response), response.index("####")
    expected = (f"row 0: prompt + response are 3 + {len(response)} = {total} tokens (reasoning {reasoning}), "
                "longer than the model's context (max_position_embeddings 24); its scores are unreliable")  # fmt: skip
    assert warnings == [expected]


def test_settings_take_training_names(model_dir, tmp_path):
    assert parse_settings(["perturbation_mode=taylor", "quantile=0.3", "preserve_mass=false"], "oar_p") == {
        "mode": "taylor", "quantile": 0.3, "preserve_mass": False}  # fmt: skip
    assert parse_settings(["mode=span_approx", "span=2", "target=null"], "oar_p") == {"mode": "span_approx", "span": 2}
    assert parse_settings(["noise_std=1e-3", "seed=3"], "oar_g") == {"noise_std": 0.001, "seed": 3}
    pages = {}
    for mode in ("taylor", "exact"):
        out = tmp_path / f"{mode}.html"
        assert main(["explain", "--model", str(model_dir), "--prompt", "add:\n", "--response", "2+3 is 5\n#### 5", "--method", "oar_p",
                     "--set", f"perturbation_mode={mode}", "--out", str(out)]) == 0  # fmt: skip
        pages[mode] = re.findall(r'data-score="([^"]+)"', out.read_text())
    assert pages["taylor"] != pages["exact"]  # the setting reached the method


def test_a_bad_setting_is_one_line_naming_it_before_the_model_loads(tmp_path, capsys, no_model):
    nowhere = ["--model", str(tmp_path / "nowhere"), "--prompt", "q", "--response", "a\n#### 1"]
    cases = [
        (["--set", "quantil=0.3"], "--set quantil: unknown setting for --method oar_g; did you mean quantile?"),
        (["--set", "perturbation_mod=taylor", "--method", "oar_p"], "did you mean perturbation_mode"),
        (["--set", "span=2"], "--set span: a setting of --method oar_p, not read by --method oar_g"),
        (["--set", "perturbation_mode=taylor"], "--set perturbation_mode: a setting of --method oar_p"),
        (["--set", "heatmap_freq=2"], "--set heatmap_freq: a training setting that explain does not use"),
        (["--set", "answer_pattern=gsm8k"], "--set answer_pattern: use the option --answer-pattern"),
        (["--set", "quantile=abc"], "--set quantile=abc: expected a number"),
        (["--set", "seed=1.5"], "--set seed=1.5: expected an integer"),
        (["--set", "preserve_mass=maybe"], "--set preserve_mass=maybe: expected true or false"),
        (["--set", "quantile=2"], "--set quantile: expected a value in (0, 1), got 2"),
        (["--set", "perturbation_mode=fast", "--method", "oar_p"], "--set perturbation_mode: unknown OAR-P mode 'fast'"),
        (["--answer-pattern", "(unclosed"], "--answer-pattern: '(unclosed' is neither one of"),
    ]
    for args, message in cases:
        stderr = explain_error([*nowhere, *args], tmp_path, capsys)
        assert message in stderr, (message, stderr)


def test_a_bad_setting_stops_the_installed_command_without_a_traceback(tmp_path):
    out = tmp_path / "x.html"
    result = run_cli("--model", str(tmp_path / "nowhere"), "--prompt", "q", "--response", "a", "--set", "quantil=0.3", "--out", str(out))
    assert result.returncode == 2
    expected = ("oar-verl explain: error: --set quantil: unknown setting for --method oar_g; did you mean quantile? "
                "valid: beta, max_tokens_per_pass, min_weight, noise_std, preserve_mass, quantile, seed, target")  # fmt: skip
    assert result.stderr.strip().splitlines() == [expected]
    assert not out.exists()


def test_a_bad_jsonl_line_is_named_by_its_number(tmp_path, capsys, no_model):
    rows = tmp_path / "rows.jsonl"
    good = json.dumps({"prompt": "q", "response": "a"})
    rows.write_text(f'{good}\n\n{good}\n{{"prompt": oops}}\n')
    stderr = explain_error(["--model", "nowhere", "--input", str(rows)], tmp_path, capsys)
    assert f"{rows}:4: not JSON: Expecting value (column 12)" in stderr
    assert [where for where, _ in cli.read_rows(rows, 2)] == [f"{rows}:1", f"{rows}:3"]  # blank lines count; --max-rows stops reading


def test_malformed_rows_are_named_with_the_problem(tmp_path, capsys, no_model):
    cases = [
        ({"prompt": 7, "response": "a"}, "'prompt' must be text, chat messages or token ids, got int 7"),
        ({"prompt": "q", "response": {"text": "a"}}, "'response' must be text or token ids, got dict {'text': 'a'}"),
        ({"prompt": "q", "response": [50, "x"]}, "'response': token ids must be integers >= 0, got str 'x' at position 1"),
        ({"prompt": "q", "response": [50, -1]}, "'response': token ids must be integers >= 0, got int -1 at position 1"),
        ({"prompt": "q", "response": "a", "reward": "good"}, "'reward' must be a number, got str 'good'"),
        ({"prompt": "q", "response": ""}, "'response' is empty"),
        ({"prompt": [{"content": "q"}], "response": "a"}, "'prompt': chat messages need a 'role' each"),
        (["q", "a"], "expected an object with 'prompt' and 'response', got list ['q', 'a']"),
    ]
    rows = tmp_path / "rows.jsonl"
    for row, message in cases:
        rows.write_text(json.dumps({"prompt": "fine", "response": "ok"}) + "\n" + json.dumps(row) + "\n")
        stderr = explain_error(["--model", "nowhere", "--input", str(rows)], tmp_path, capsys)
        assert f"{rows}:2: row 1: {message}" in stderr, stderr


def test_a_token_id_outside_the_vocabulary_is_named(model_dir, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "q", "response": [50, 10, 99999]}))
    stderr = explain_error(["--model", str(model_dir), "--input", str(rows)], tmp_path, capsys)
    assert f"{rows}:1: row 0: response token id 99999 is outside the model's vocabulary of 260" in stderr


def test_help_describes_every_option_with_its_default(capsys):
    parser = argparse.ArgumentParser(prog="oar-verl explain")
    cli.add_explain_options(parser)
    options = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    assert len(options) == 16
    for action in options:
        assert action.help and any(word in action.help for word in ("%(default)s", "default:", "required")), action.option_strings
    with pytest.raises(SystemExit) as exit_status:
        main(["explain", "--help"])
    assert exit_status.value.code == 0
    entries = [" ".join(entry.split()) for entry in re.split(r"\n  (?=-)", capsys.readouterr().out.partition("options:")[2])]
    for option, described in (("--method {oar_g,oar_p}", "oar_g (input gradient) or oar_p (perturbation) (default: oar_g)"),
                              ("--device DEVICE", "torch device the model runs on, e.g. cpu, cuda, cuda:1 (default: cpu)"),
                              ("--dtype {float32,bfloat16,float16}", "dtype the model is loaded in (default: float32)"),
                              ("--answer-pattern ANSWER_PATTERN", "(default: auto)"),
                              ("--prompt-key PROMPT_KEY", "(default: prompt)")):  # fmt: skip
        assert any(entry.startswith(f"{option} ") and entry.endswith(described) for entry in entries), (option, entries)
