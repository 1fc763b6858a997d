"""The README's screenshot of the playground page: `genre serve` on a bundle (a private state folder),
headless Chromium (Debian's chromium + chromedriver) forms a history from the search box, types an
instruction and saves the page.

    python benchmarks/playground_screenshot.py --bundle runs/quickstart/bundle --out docs/playground.png
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/playground.png"))
    ap.add_argument("--history", default="Star Wars,Toy Story,Fargo", help="titles to search and add, comma-separated")
    ap.add_argument("--query", default="something light and funny from the 90s, no horror")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1100)
    a = ap.parse_args(argv)
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        ap.error("needs Debian's chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ.setdefault("SE_OFFLINE", "true")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="genre-shot-"))
    srv = subprocess.Popen([sys.executable, "-m", "genre_edge.cli", "serve", "--bundle", str(a.bundle),
                            "--state-dir", str(tmp / "state"), "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    d = None
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
                    f"--window-size={a.width},{a.height}", f"--user-data-dir={tmp / 'profile'}"):
            opts.add_argument(arg)
        d = webdriver.Chrome(service=Service(driver), options=opts)
        wait = WebDriverWait(d, 30)
        d.get(base + "/")
        wait.until(lambda _: d.find_element(By.ID, "results").get_attribute("data-seq"))
        search = d.find_element(By.ID, "search")
        for title in [t.strip() for t in a.history.split(",") if t.strip()]:
            search.send_keys(Keys.CONTROL, "a")
            search.send_keys(title, Keys.ENTER)
            time.sleep(0.5)
        d.find_element(By.ID, "query").send_keys(a.query)
        time.sleep(1.0)
        wait.until(lambda _: not d.execute_script("return document.body.dataset.busy"))
        d.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        part = a.out.with_suffix(".tmp.png")
        d.save_screenshot(str(part))
        part.replace(a.out)
        print(a.out)
    finally:
        if d is not None:
            d.quit()
        srv.terminate()
        srv.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
