"""The playground page: catalog search and facets (Python API and HTTP), the page's files and policy,
and the page itself driven in headless Chromium against a live `genre serve` on loopback."""
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest

from genre_edge.errors import RequestError


def _get(base, path, headers=None):
    req = urllib.request.Request(base + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_search_orders_id_then_title_prefix_then_inner_by_popularity(tiny_bundle, tmp_path):
    from conftest import tiny_recommender

    rec = tiny_recommender(tiny_bundle, tmp_path)
    c = rec.catalog
    res = rec.search_items("m1", limit=5)
    assert res["items"][0]["id"] == "m1" and res["total"] >= 1
    # every title matching "comedy" is found, the ones starting with it before the others, each group by popularity
    got = rec.search_items("COMEDY", limit=200)
    want = [i for i, t in enumerate(c.titles) if "comedy" in t.lower() and c.active[i]]
    assert sorted(it["id"] for it in got["items"]) == sorted(c.ids[i] for i in want) and got["total"] == len(want)
    pops = [float(c.pop[c.index[it["id"]]]) for it in got["items"] if it["title"].lower().startswith("comedy")]
    assert pops == sorted(pops, reverse=True)
    # paging: offset continues where limit stopped
    a, b = rec.search_items("story", limit=3), rec.search_items("story", limit=3, offset=3)
    assert a["total"] == b["total"] and not {i["id"] for i in a["items"]} & {i["id"] for i in b["items"]}
    # an empty query lists everything by popularity; on-device items are marked, removed ones gone
    rec.add_items([{"id": "new1", "title": "Comedy night special", "categories": ["Comedy", "Stand-up"]}])
    rec.remove_items(["m1"])
    everything = rec.search_items("", limit=200)
    assert everything["total"] == len(c) and "m1" not in {i["id"] for i in everything["items"]}
    assert [i for i in rec.search_items("night special")["items"] if i["id"] == "new1"][0]["on_device"] is True
    assert rec.search_items("m1")["total"] == 0  # removed: neither its id nor a title ("... story 1 ...") matches
    facets = rec.info()
    assert "Stand-up" in facets["categories"] and facets["defaults"]["strategy"] in facets["strategies"]
    assert facets["years"][0] <= facets["years"][1]


@pytest.mark.parametrize("args, msg", [
    (("x" * 201,), "at most 200"), (("ok", 0), "limit"), (("ok", 201), "limit"), (("ok", 5, -1), "offset"),
    (("ok", True), "limit"), (("a\x00b",), "control"), ((7,), "string"),
])
def test_search_refuses_bad_input_naming_it(tiny_bundle, tmp_path, args, msg):
    from conftest import tiny_recommender

    rec = tiny_recommender(tiny_bundle, tmp_path)
    with pytest.raises(RequestError, match=msg):
        rec.search_items(*args)


def test_page_files_are_served_from_memory_with_a_strict_policy(tiny_bundle, tmp_path):
    pytest.importorskip("fastapi")
    from conftest import live_server

    with live_server(tiny_bundle, tmp_path, api_key="k3y", protect_reads=True) as base:
        st, h, body = _get(base, "/")  # the page holds no data: it loads without the key
        assert st == 200 and body.startswith(b"<!doctype html>") and h["content-type"].startswith("text/html")
        assert "script-src 'self'" in h["content-security-policy"] and h["x-content-type-options"] == "nosniff"
        st, h, js = _get(base, "/static/app.js")
        assert st == 200 and b"textContent" in js and h["content-type"].startswith("text/javascript")
        assert _get(base, "/static/style.css")[0] == 200
        for bad in ("/static/nope.js", "/static/..%2Fserver.py", "/static/%2e%2e/server.py"):
            assert _get(base, bad)[0] == 404, bad
        # the data the page reads is protected like every other read
        assert _get(base, "/items?q=m1")[0] == 401
        st, _, body = _get(base, "/items?q=m1&limit=2", {"X-API-Key": "k3y"})
        assert st == 200 and json.loads(body)["items"][0]["id"] == "m1"
        st, _, body = _get(base, "/items?limit=0", {"X-API-Key": "k3y"})
        assert st == 422 and json.loads(body)["error"] == "invalid_request"
    # every file the page references is one the server serves
    from importlib.resources import files

    from genre_edge.server import PAGE_FILES

    index = (files("genre_edge") / "static" / "index.html").read_text()
    for name in PAGE_FILES:
        assert name == "index.html" or f"static/{name}" in index


def _browser():
    """(chromium, chromedriver) paths, or None: Debian's packages (CI installs them; nothing is downloaded)."""
    chromium = os.environ.get("GENRE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("GENRE_CHROMEDRIVER") or shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.mark.skipif(_browser() is None, reason="no chromium + chromedriver installed (Debian: apt-get install "
                                                "chromium chromium-driver; `make test` does this where it can)")
def test_playground_in_headless_chromium_matches_the_api(tiny_bundle, tmp_path):
    """Keyboard only: form a history from the search box, type an instruction, move a knob, tick a filter,
    add an on-device item; after each step the rendered list is the API's answer for the same request.
    Every control is reachable with Tab; the page fits a phone's width; screenshots land in tmp_path."""
    pytest.importorskip("fastapi")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    from test_server import _serve_process

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for a browser download
    chromium, driver_path = _browser()
    proc, base = _serve_process(tiny_bundle, tmp_path)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1300,1000",
              f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver_path), options=opts)
    wait = WebDriverWait(d, 30)

    def settled():
        """The rendered answer of the newest request (the page numbers its requests)."""
        res = d.find_element(By.ID, "results")
        wait.until(lambda _: res.get_attribute("data-seq") and not d.execute_script("return document.body.dataset.busy"))
        time.sleep(0.4)  # let a debounced change fire, then wait for its answer
        wait.until(lambda _: not d.execute_script("return document.body.dataset.busy"))
        req = json.loads(res.get_attribute("data-request"))
        shown = ids("#items > li[data-id]")
        return req, shown

    def ids(css):  # read in the page (a list re-rendered meanwhile cannot leave stale element handles)
        return d.execute_script(f"return [...document.querySelectorAll({css!r})].map(e => e.dataset.id)")

    def api_ids(req):
        return [it["id"] for it in _post(base, "/recommend", req)["items"]]

    try:
        d.get(base + "/")
        settled()
        # the instruction's placeholder offers the catalog's own examples (it said "like Star Wars" for any catalog)
        info = json.loads(urllib.request.urlopen(base + "/info", timeout=10).read())
        assert info["example_instructions"]
        assert d.find_element(By.ID, "query").get_attribute("placeholder") == \
            "e.g. " + "; or: ".join(info["example_instructions"])
        search = d.find_element(By.ID, "search")
        search.click()
        for iid in ("m0", "m6", "m12"):
            search.send_keys(Keys.CONTROL, "a")
            search.send_keys(iid, Keys.ENTER)
            wait.until(lambda _: iid in ids("#history li"))
        d.find_element(By.ID, "query").send_keys("something funny and silly")
        req, shown = settled()
        # knobs left alone are not sent: the page's request is exactly what a client would write
        assert req == {"history": ["m0", "m6", "m12"], "k": 10, "explain": True, "query": "something funny and silly"}
        assert shown and shown == api_ids(req)
        assert "Understood" in d.find_element(By.ID, "parsed").text or d.find_element(By.ID, "parsed").get_attribute("hidden")
        bars = d.find_elements(By.CSS_SELECTOR, "#items > li .reasons li")
        assert bars and any("instruction" in b.text for b in bars)
        assert len(d.find_elements(By.CSS_SELECTOR, "#timings tbody tr")) >= 3
        # a knob moved with the keyboard, and a category filter ticked with the space bar
        mmr = d.find_element(By.ID, "mmr_lambda")
        mmr.send_keys(Keys.ARROW_LEFT * 6)
        summary = d.find_element(By.CSS_SELECTOR, "#include").find_element(By.XPATH, "..").find_element(By.TAG_NAME, "summary")
        summary.send_keys(Keys.ENTER)
        d.find_element(By.CSS_SELECTOR, "#include input[value='Comedy']").send_keys(Keys.SPACE)
        req, shown = settled()
        assert req["mmr_lambda"] == pytest.approx(0.7) and req["include_categories"] == ["Comedy"]
        assert shown == api_ids(req) and shown
        d.save_screenshot(str(tmp_path / "playground.png"))
        # an on-device item added from the page's form (Enter submits), found by the search box
        for field, text in (("new-id", "dev1"), ("new-title", "Comedy of silly errors"), ("new-categories", "Comedy")):
            d.find_element(By.ID, field).send_keys(text)
        d.find_element(By.ID, "new-categories").send_keys(Keys.ENTER)
        wait.until(lambda _: "Added" in d.find_element(By.ID, "catalog-status").text)
        wait.until(lambda _: d.execute_script("return !!document.querySelector(\"#search-results li[data-id='dev1'] .badge\")"))
        req, shown = settled()
        assert shown == api_ids(req)
        # every visible control is reachable with Tab alone
        controls = d.execute_script(
            "return [...document.querySelectorAll('input,select,textarea,button,summary,a[href]')]"
            ".filter(e => e.offsetParent !== null && !e.disabled).map(e => e.id || e.textContent.trim())")
        d.find_element(By.TAG_NAME, "body").click()
        reached = set()
        for _ in range(len(controls) * 2 + 10):
            d.switch_to.active_element.send_keys(Keys.TAB)
            reached.add(d.execute_script("const e = document.activeElement; return e.id || e.textContent.trim()"))
        assert set(controls) <= reached, set(controls) - reached
        # phone width: nothing scrolls sideways
        d.set_window_size(390, 844)
        wait.until(lambda _: d.execute_script("return window.innerWidth") <= 400)
        assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        d.save_screenshot(str(tmp_path / "playground-phone.png"))
        assert (tmp_path / "playground.png").stat().st_size > 10_000
        errors = [m for m in d.get_log("browser") if m["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        d.quit()
        proc.terminate()
        proc.wait(10)
