"""Read the built site in a real browser, as a learner would, and fail on what they would see.

`make docs-check` builds the site for a sub-path (`SITE_URL=http://127.0.0.1:<port>/peft_course/`),
serves `site/` there, and loads every page, plus a missing one (the 404 page), in headless
Chromium through Selenium. A page fails on:

- an error in the browser console, or a request that failed or came back 4xx/5xx (the 404
  page itself aside);
- a request to anywhere but the local server (the site must work offline);
- raw TeX left in the rendered text once MathJax has run (code blocks aside);
- a code block whose lines are wider than the block (they would need a horizontal scroll), or
  a table or image wider than the content column that does not scroll inside its own box.

Each page is loaded again on a phone's screen (390 x 844, as a phone's browser lays it out) and
fails there on an element wider than the screen that does not sit in a box scrolling sideways
within the screen, and on math clipped or running out of its line: inline math wider than its
paragraph (make it a display equation). A display equation wider than the column scrolls in
its own box; it is printed as a note, not a failure (split it with `aligned`).

The home page fails if its first screen at 1280 x 900 does not hold the "Start here" link and
the whole chapter map. The search fails if a heading in its index holds raw TeX, if a fragment
(a page under `results/` or `images/`, which chapters include) can be found as a page of its
own, or if a query typed into the site's search box does not find its chapter first (SEARCHES).

A full-page screenshot of each page goes to `build/docs-check/` (the directory is printed).

    python tools/docs_check.py --site site --port 8765
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import sys
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

PREFIX = "/peft_course/"
WIDTH, HEIGHT = 1280, 900  # a common laptop screen; code lines of 100 characters must fit
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True}  # a common phone
LAPTOP = {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}  # its screen
# A query typed into the search box -> the page its first result must be on.
SEARCHES = {"LoRA": "lora/", "what is NF4": "qlora/", "DPO loss": "dpo/"}
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\(frac|sum|alpha|beta|sigma|log|mathrm|text|pi)\b")

# Runs in the page: the rendered text outside code, and every element that sticks out.
INSPECT = """
const article = document.querySelector('.md-content__inner');
const clone = article.cloneNode(true);
clone.querySelectorAll('pre, code, script, mjx-assistive-mml').forEach(e => e.remove());
const problems = [];
const column = article.getBoundingClientRect();
const page = document.querySelector('.md-content').getBoundingClientRect();
article.querySelectorAll('pre > code').forEach(code => {
  if (code.scrollWidth > code.clientWidth + 1) {
    const line = code.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '');
    const start = line.trim().slice(0, 60);
    problems.push(`code ${code.scrollWidth}px wide in a ${code.clientWidth}px box: "${start}"`);
  }
});
article.querySelectorAll('table, img').forEach(element => {
  const box = element.getBoundingClientRect();
  const scroller = element.closest('.md-typeset__scrollwrap');  // Material's scrolling box
  const contained = scroller && getComputedStyle(scroller).overflowX === 'auto'
      && scroller.getBoundingClientRect().right <= page.right + 1;
  if (box.right > column.right + 1 && !contained) {
    const name = element.tagName.toLowerCase();
    problems.push(`${name} ${Math.round(box.width)}px wide runs out of the column`);
  }
});
return {text: clone.innerText, problems: problems, height: document.body.scrollHeight};
"""


# Runs in the page on the phone's screen: what sticks out of the screen or out of its line.
PHONE_INSPECT = """
const screen = document.documentElement.clientWidth;
const problems = [];
const describe = e => {
  const text = (e.textContent || e.getAttribute('alt') || '').trim().replace(/\\s+/g, ' ');
  return `${e.tagName.toLowerCase()}${e.className && typeof e.className === 'string'
      ? '.' + e.className.split(' ')[0] : ''} "${text.slice(0, 50)}"`;
};
const scroller = e => {  // the nearest box that scrolls sideways, if it fits the screen
  for (let a = e.parentElement; a; a = a.parentElement) {
    const overflow = getComputedStyle(a).overflowX;
    if (overflow === 'auto' || overflow === 'scroll') {
      const box = a.getBoundingClientRect();
      return box.left >= -1 && box.right <= screen + 1 ? a : null;
    }
  }
  return null;
};
const article = document.querySelector('.md-content__inner');
const reported = new Set();
article.querySelectorAll('*').forEach(e => {
  const box = e.getBoundingClientRect();
  if (box.width === 0 || (box.right <= screen + 1 && box.left >= -1)) return;
  if (scroller(e) || [...reported].some(r => r.contains(e))) return;
  if (getComputedStyle(e).position === 'fixed') return;
  reported.add(e);
  problems.push(`phone: ${describe(e)} spans ${Math.round(box.left)}..${Math.round(box.right)}px `
      + `of a ${screen}px screen, outside a scrolling box`);
});
article.querySelectorAll('mjx-container').forEach(math => {
  const box = math.getBoundingClientRect();
  const display = math.getAttribute('display') === 'true';
  const line = (display ? math.closest('.arithmatex') : math.closest('p, li, td, th, div'))
      .getBoundingClientRect();
  const tex = (math.closest('.arithmatex') || math).textContent.trim().slice(0, 50);
  if (display && math.scrollWidth > line.width + 1 || display && box.width > line.width + 1) {
    problems.push(`note: phone: a display equation ${Math.round(box.width)}px wide scrolls in a `
        + `${Math.round(line.width)}px column (split it with aligned): "${tex}"`);
  } else if (!display && (box.right > line.right + 1 || box.left < line.left - 1)) {
    problems.push(`phone: inline math ${Math.round(box.width)}px wide runs out of its `
        + `${Math.round(line.width)}px line (make it a display equation): "${tex}"`);
  }
});
if (document.documentElement.scrollWidth > screen + 1) {
  problems.push(`phone: the page is ${document.documentElement.scrollWidth}px wide on a `
      + `${screen}px screen`);
}
return problems;
"""

# Runs in the home page at 1280 x 900: the start link and the chapter map on the first screen.
FIRST_SCREEN = """
const screen = window.innerHeight;
const problems = [];
const start = [...document.querySelectorAll('.md-content a.md-button--primary')]
    .find(a => a.getAttribute('href').includes('getting-started'));
if (!start) {
  problems.push('home: no "Start here" button leading to Getting started');
} else if (start.getBoundingClientRect().bottom > screen) {
  const bottom = Math.round(start.getBoundingClientRect().bottom);
  problems.push(`home: the start link ends at ${bottom}px, below the first ${screen}px`);
}
const map = document.querySelector('.chapter-map');
if (!map) {
  problems.push('home: no chapter map (.chapter-map)');
} else if (map.getBoundingClientRect().bottom > screen) {
  const bottom = Math.round(map.getBoundingClientRect().bottom);
  problems.push(`home: the chapter map ends at ${bottom}px, below the first ${screen}px`);
}
return problems;
"""

# Types a query into the search box and returns the first result's link once results show.
SEARCH = """
const [query, done] = arguments;
const input = document.querySelector('input.md-search__input');
document.querySelector('#__search').checked = true;
input.focus();
input.value = query;
input.dispatchEvent(new Event('input', {bubbles: true}));
input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true, key: 'a'}));
const started = Date.now();
const poll = () => {
  const first = document.querySelector('.md-search-result__list a.md-search-result__link');
  const meta = document.querySelector('.md-search-result__meta');
  if (first && meta && !/type|initiali/i.test(meta.textContent)) {
    done(first.getAttribute('href'));
  } else if (Date.now() - started > 20000) {
    done(null);
  } else {
    setTimeout(poll, 100);
  }
};
poll();
"""


def search_problems(site: Path) -> list[str]:
    """Raw TeX in a heading the search shows, or a fragment (results/, images/) found by search."""
    index = json.loads((site / "search" / "search_index.json").read_text())
    problems = []
    for entry in index["docs"]:
        if RAW_TEX.search(entry["title"]):
            problems.append(f"raw TeX in the search title {entry['title']!r} ({entry['location']})")
        if entry["location"].startswith(("results/", "images/")):
            problems.append(f"a fragment is a search result: {entry['location']}")
    return problems


def serve(site: Path, port: int) -> http.server.ThreadingHTTPServer:
    """Serve `site` under PREFIX on 127.0.0.1, as a host that publishes it at a sub-path would."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            if not path.startswith(PREFIX):
                return str(site / "__outside_the_site__")
            return super().translate_path("/" + path[len(PREFIX) :])

        def send_error(self, code, message=None, explain=None):
            if code == 404 and (site / "404.html").is_file():  # what a static host does
                body = (site / "404.html").read_bytes()
                self.send_response(404)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().send_error(code, message, explain)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(Handler, directory=str(site))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pages(site: Path) -> list[str]:
    """Every built page, as its path under PREFIX (directory URLs, as mkdocs links them)."""
    found = []
    for html in sorted(site.rglob("index.html")):
        relative = html.parent.relative_to(site).as_posix()
        found.append("" if relative == "." else relative + "/")
    return found


def browser(chromium: str, driver: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def network_problems(chrome: webdriver.Chrome, origin: str, missing_page: bool) -> list[str]:
    """Failed requests, error statuses and requests that leave the site (the performance log)."""
    problems, urls = [], {}
    for entry in chrome.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            if not url.startswith((origin, "data:", "blob:", "about:")):
                problems.append(f"request outside the site: {url}")
        elif message["method"] == "Network.responseReceived":
            status, url = params["response"]["status"], params["response"]["url"]
            if status >= 400 and not (missing_page and params.get("type") == "Document"):
                problems.append(f"HTTP {status}: {url}")
        elif message["method"] == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(
                f"failed: {urls.get(params['requestId'], '?')} ({params.get('errorText')})"
            )
    return problems


def load(chrome: webdriver.Chrome, url: str) -> None:
    """Open `url` and wait until it has loaded and MathJax, where the page has it, has typeset."""
    chrome.get(url)
    WebDriverWait(chrome, 30).until(
        lambda c: c.execute_script("return document.readyState") == "complete"
    )
    chrome.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (window.MathJax && MathJax.startup) { MathJax.startup.promise.then(() => done()); }"
        "else { done(); }"
    )


def phone_problems(chrome: webdriver.Chrome, url: str, shot: Path) -> list[str]:
    """The page on a phone's screen: what runs off it, math clipped or out of its line."""
    chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    try:
        load(chrome, url)
        problems = chrome.execute_script(PHONE_INSPECT)
        chrome.save_screenshot(str(shot))
    finally:
        chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return problems


def search_results(chrome: webdriver.Chrome, home: str) -> list[str]:
    """Each query of SEARCHES typed into the search box; its first result must be its chapter."""
    problems = []
    for query, chapter in SEARCHES.items():
        load(chrome, home)
        href = chrome.execute_async_script(SEARCH, query)
        if href is None:
            problems.append(f"search {query!r}: no results shown")
            continue
        where = href.split(PREFIX, 1)[-1].lstrip("./")
        if not where.startswith(chapter):
            problems.append(f"search {query!r}: the first result is {where!r}, not {chapter!r}")
    return problems


def check_page(
    chrome: webdriver.Chrome, url: str, origin: str, shot: Path, missing: bool
) -> list[str]:
    load(chrome, url)
    found = chrome.execute_script(INSPECT)
    problems = list(found["problems"])
    tex = RAW_TEX.search(found["text"])
    if tex:
        start = max(tex.start() - 30, 0)
        problems.append(f"raw TeX in the text: ...{found['text'][start : tex.end() + 30]!r}...")
    problems += [
        f"console: {e['message']}"
        for e in chrome.get_log("browser")
        if e["level"] == "SEVERE" and not (missing and "404" in e["message"])
    ]
    problems += network_problems(chrome, origin, missing)
    if url.endswith(PREFIX):  # the home page, on a screen of exactly WIDTH x HEIGHT
        chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", LAPTOP)
        try:
            load(chrome, url)
            problems += chrome.execute_script(FIRST_SCREEN)
            chrome.save_screenshot(str(shot.with_name("index-first-screen.png")))
        finally:
            chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    chrome.set_window_size(WIDTH, min(max(found["height"], HEIGHT), 16000))
    chrome.save_screenshot(str(shot))
    chrome.set_window_size(WIDTH, HEIGHT)
    if not missing:
        problems += phone_problems(chrome, url, shot.with_name(shot.stem + "-phone.png"))
    chrome.get_log("browser"), chrome.get_log("performance")  # the phone's load, already read
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=Path("site"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--screenshots", type=Path, default=Path("build/docs-check"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--driver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    origin = f"http://127.0.0.1:{args.port}"
    server = serve(args.site.resolve(), args.port)
    args.screenshots.mkdir(parents=True, exist_ok=True)
    chrome = browser(args.chromium, args.driver)
    failures = 0
    try:
        chrome.get(origin + PREFIX)  # a first load, so that the logs below belong to each page
        chrome.get_log("browser"), chrome.get_log("performance")
        targets = [(page, False) for page in pages(args.site)] + [("no-such-page/", True)]
        for page, missing in targets:
            shot = args.screenshots / ((page.strip("/").replace("/", "-") or "index") + ".png")
            problems = list(
                dict.fromkeys(check_page(chrome, origin + PREFIX + page, origin, shot, missing))
            )
            failed = [problem for problem in problems if not problem.startswith("note: ")]
            failures += bool(failed)
            print(f"{'FAIL' if failed else 'ok  '} /{page}")
            for problem in problems:
                print(f"     {problem}")
        searched = search_problems(args.site) + search_results(chrome, origin + PREFIX)
    finally:
        chrome.quit()
        server.shutdown()
    failures += bool(searched)
    print(f"{'FAIL' if searched else 'ok  '} the search ({', '.join(map(repr, SEARCHES))})")
    for problem in searched:
        print(f"     {problem}")
    print(f"{len(targets)} pages, {failures} with problems; screenshots in {args.screenshots}/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
