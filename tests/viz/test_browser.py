"""The heatmap page in headless Chromium (Debian's `chromium` and `chromium-driver`,
which `.ci/run` installs): it renders, has one token span per response token, and its
colours are monotone in the weight, also for a long response."""

import os
import re
import shutil

import pytest
import torch

from oar_verl.core import explain
from oar_verl.tiny.models import byte_tokenizer, tiny_qwen2
from oar_verl.viz import TokenHeatmap, render_html

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        pytest.fail("CI needs chromium and chromium-driver (apt); .ci/run installs them", pytrace=False)
    pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

READ_TOKENS = """
return Array.from(document.querySelectorAll('span.tok')).map(e => {
  const box = e.getBoundingClientRect();
  return [getComputedStyle(e).backgroundColor, parseFloat(e.dataset.weight), box.width > 0 || e.textContent.includes('\\n')];
});
"""


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def signed_intensity(css_colour: str) -> float:
    """Position of a rendered colour on the diverging scale: +1 full red, -1 full blue."""
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    if red > blue:
        return (255 - green) / (255 - 39)
    if blue > red:
        return -(255 - red) / (255 - 31)
    return 0.0


def open_page(browser, tmp_path, heatmaps, name="page.html"):
    path = tmp_path / name
    path.write_text(render_html(heatmaps), encoding="utf-8")
    browser.get(path.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    return browser.execute_script(READ_TOKENS)


def test_a_real_explanation_renders_one_span_per_token_with_monotone_colour(browser, tmp_path):
    tokenizer = byte_tokenizer()
    model = tiny_qwen2(len(tokenizer), seed=3).eval()
    result = explain(model, tokenizer, "add:\n", '2+3 is 5, so <b>five</b> & "5"\n#### 5', method="oar_g", answer_pattern="gsm8k", quantile=0.3)
    heatmap = TokenHeatmap.from_explanation(result, tokenizer, reward=1.0)
    tokens = open_page(browser, tmp_path, [heatmap])
    assert len(tokens) == len(result.response_ids)
    assert all(visible for _, _, visible in tokens)
    assert browser.find_elements("css selector", "script") == []
    by_weight = sorted((weight, signed_intensity(colour)) for colour, weight, _ in tokens)
    intensities = [intensity for _, intensity in by_weight]
    assert all(a <= b + 1e-2 for a, b in zip(intensities, intensities[1:])), by_weight
    assert intensities[0] < -0.5 and intensities[-1] > 0.5  # both ends of the scale are used
    for weight, intensity in by_weight:
        assert (intensity > 0) == (weight > 1.0 + 1e-3) or abs(weight - 1.0) < 1e-3


def test_a_long_response_renders(browser, tmp_path):
    tokenizer = byte_tokenizer()
    ids = torch.randint(32, 127, (20_000,)).tolist()
    weights = torch.linspace(0.1, 2.0, len(ids)).tolist()
    heatmap = TokenHeatmap.build(tokenizer, ids, ["reasoning"] * len(ids), [0.0] * len(ids), weights)
    tokens = open_page(browser, tmp_path, [heatmap], "long.html")
    assert len(tokens) == len(ids)
    intensities = [signed_intensity(colour) for colour, _, _ in tokens]  # weights increase along the response
    assert all(a <= b + 1e-2 for a, b in zip(intensities, intensities[1:]))
