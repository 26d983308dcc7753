"""`oar-verl explain`: one pair or a file of pairs to an HTML page and PNGs, clear errors."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from oar_verl.cli import main
from oar_verl.tiny import byte_tokenizer, tiny_qwen2


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
        (["--model", str(model_dir), "--prompt", "a", "--response", "b\n#### 1", "--set", "nonsense=1"], "unknown ['nonsense']"),
    ]
    for args, message in cases:  # in this process: the exit status and message are main's
        with pytest.raises(SystemExit) as exit_status:
            main(["explain", *args, "--out", str(tmp_path / "x.html")])
        stderr = capsys.readouterr().err
        assert exit_status.value.code == 2, (args, stderr[-2000:])
        assert message in stderr, (message, stderr[-2000:])
    assert not (tmp_path / "x.html").exists()
