"""Re-make the README's report pictures from a fresh MiniLM run (needs '.[models,test]' and Chromium).

    HF_HUB_OFFLINE=1 python docs/make_images.py

Writes docs/images/report-minilm.png (the top of the page: the verdict, how to read it, the
smallest margins) and docs/images/report-minilm-interface.png (the first interface), so the
pictures always show what the code now draws. The README shows both.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMAGES = ("report-minilm.png", "report-minilm-interface.png")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        subprocess.run([sys.executable, "-m", "physgsa", "certify", "--out", str(out), "--quiet"], check=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto((out / "report.html").as_uri())
            # The top of the page, down to the end of the smallest margins.
            bottom = page.evaluate("document.getElementById('margins').getBoundingClientRect().bottom + scrollY")
            page.screenshot(path=str(HERE / "images" / IMAGES[0]), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1400, "height": bottom + 40})
            page.locator("details.interface").first.screenshot(path=str(HERE / "images" / IMAGES[1]))
            browser.close()


if __name__ == "__main__":
    main()
