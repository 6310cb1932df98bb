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

The search index fails too if a heading in it holds raw TeX or a fragment (a page under
`results/` or `images/`, which chapters include) can be found as a page of its own.

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


def check_page(
    chrome: webdriver.Chrome, url: str, origin: str, shot: Path, missing: bool
) -> list[str]:
    chrome.get(url)
    WebDriverWait(chrome, 30).until(
        lambda c: c.execute_script("return document.readyState") == "complete"
    )
    chrome.execute_async_script(  # MathJax typesets after load; wait for it where the page has it
        "const done = arguments[arguments.length - 1];"
        "if (window.MathJax && MathJax.startup) { MathJax.startup.promise.then(() => done()); }"
        "else { done(); }"
    )
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
    chrome.set_window_size(WIDTH, min(max(found["height"], HEIGHT), 16000))
    chrome.save_screenshot(str(shot))
    chrome.set_window_size(WIDTH, HEIGHT)
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
            failures += bool(problems)
            print(f"{'FAIL' if problems else 'ok  '} /{page}")
            for problem in problems:
                print(f"     {problem}")
    finally:
        chrome.quit()
        server.shutdown()
    searched = search_problems(args.site)
    failures += bool(searched)
    print(f"{'FAIL' if searched else 'ok  '} the search index")
    for problem in searched:
        print(f"     {problem}")
    print(f"{len(targets)} pages, {failures} with problems; screenshots in {args.screenshots}/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
