"""Full-page screenshots of every notebook on the real default preset, into docs/notebooks/.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/notebook_screenshots.py [01_dataset ...]

Serves notebooks/ with ``marimo run`` on 127.0.0.1 (the repository's loras/ and data/, the
default Gemma-3-270M preset), opens each notebook in Debian's Chromium (playwright), waits until
its cheap cells have run and saves ``docs/notebooks/<name>.png``. No run button is pressed
(building, training, generation are the heavy steps). Refresh them when the UI changes; it
takes several minutes on 2 CPU cores (the model loads once, the feature tables run forwards).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from saelora_core.reporting.export import find_browser

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "notebooks"
MARIMO = Path(sys.executable).with_name("marimo")
# Text each notebook shows once its cheap cells have run (case-sensitive), and an element that
# must be there too (plotly figures are <marimo-plotly>, latent dashboards .saelora-dashboard).
READY = {
    "01_dataset": ("Training target", "marimo-table"),
    "02_train": ("Estimated time:", "marimo-json-output, .markdown"),
    "03_features": ("Reads and writes per token", ".saelora-dashboard"),
    "04_logit_attribution": ("Press Run attribution", "marimo-plotly"),
    "05_sparsity": ("Press Run pruning sweep", "marimo-plotly"),
    "06_sae_repair": ("Run repair", "marimo-plotly"),
    "07_compare": ("Every answer counted as a hit", "marimo-plotly"),
}
TIMEOUT_MS = 600_000


def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAELORA_")}
    env.setdefault("OMP_NUM_THREADS", "1")
    server = subprocess.Popen(
        [str(MARIMO), "run", "notebooks", "--headless", "--no-token", "--port", str(port)],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=find_browser(), args=["--no-sandbox"])
            for name in names:
                t0 = time.monotonic()
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{url}/?file={name}.py")
                text, selector = READY[name]
                page.get_by_text(re.compile(re.escape(text))).first.wait_for(timeout=TIMEOUT_MS)
                page.locator(selector).first.wait_for(state="attached", timeout=TIMEOUT_MS)
                page.wait_for_timeout(3000)  # figures finish drawing
                errors = page.locator(".marimo-cell.has-error").count()
                # marimo scrolls inside a container, so "full page" is the viewport: grow the
                # viewport to the content's height instead.
                height = page.evaluate(
                    "() => Math.max(...[...document.querySelectorAll('*')]"
                    ".map(e => e.scrollHeight))"
                )
                page.set_viewport_size({"width": 1280, "height": min(int(height) + 40, 30000)})
                page.wait_for_timeout(2000)
                path = OUT / f"{name}.png"
                page.screenshot(path=str(path), full_page=True)
                print(
                    f"{path.relative_to(ROOT)}: {time.monotonic() - t0:.0f} s, {errors} cell errors"
                )
                page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main(sys.argv[1:] or list(READY))
