"""Web UI at fleet scale: 1,000 GPUs against 8, in the same run, in headless Chromium.

A fleet simulator (bench/fleet_sim.py: 125 simulated nodes × 8 GPUs on one port) feeds one
real ``gpuwarden serve``; a second ``serve`` watches a single node of the same fleet (8 GPUs),
the baseline.  For the Overview and GPUs pages, each loaded cold in a fresh browser context
(signed in by cookie), it measures:

* first contentful paint (the browser's own FCP entry);
* first meaningful paint: the moment the page shows real numbers (Overview: the GPU total;
  GPUs: the first card), timed in the page by a MutationObserver;
* interactive: meaningful paint, or the end of the last main-thread long task (>50 ms) before
  1 s of quiet, whichever is later (the idea of Lighthouse's TTI);
* on the GPUs page: the latency of one filter click (state chip → grid re-rendered) and frame
  times while scrolling the whole virtualized grid;
and the gzipped size of the main bundle (what index.html loads before any page renders).

Targets: interactive < 1.5 s at 1,000 GPUs; main bundle < 300 KB gzipped.  Prints ratios
1,000 / 8.  Needs the built UI (cd web && npm ci && npm run build) and /usr/bin/chromium.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from gpuwarden.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
procs_started: list = []  # stopped on exit, whatever happens
DIST = ROOT / "src" / "gpuwarden" / "web" / "dist"
CHROMIUM = os.environ.get("GPUWARDEN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]
NODES, GPUS_PER_NODE = 125, 8
RUNS = int(os.environ.get("BENCH_WEB_RUNS", "3"))
TARGET_INTERACTIVE_MS = 1500
TARGET_BUNDLE_KB = 300

# Records when the page first shows real data, and every long task (in page time).
PROBE = """
(() => {
  const marks = (window.__bench = { meaningful: null, longtasks: [] });
  const selector = () => location.pathname === "/gpus"
      ? "[data-card]" : "[data-testid=ov-gpus-total][data-value]";
  const check = () => {
    if (marks.meaningful === null) {
      const el = document.querySelector(selector());
      if (el && (location.pathname === "/gpus" || Number(el.dataset.value) > 0))
        marks.meaningful = performance.now();
    }
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true,
                                                  attributes: true });
  try {
    new PerformanceObserver((l) => { for (const e of l.getEntries())
      marks.longtasks.push([e.startTime, e.startTime + e.duration]); })
      .observe({ type: "longtask", buffered: true });
  } catch (e) {}
})();
"""


def log(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := rx.search(line):
                    return m
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"timed out waiting for {pattern!r}:\n" + "\n".join(self.lines[-30:]))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()


def serve(names: list[str], fleet: str, tmp: Path, tag: str) -> tuple[Proc, str, str]:
    cfg = tmp / f"{tag}.yaml"
    cfg.write_text(f"cluster: {tag}\nscrape: {{interval: 5, timeout: 4}}\nnodes:\n" + "".join(
        f"  - {{name: {n}, url: '{fleet}/{n}', cost_per_hour: 16.0}}\n" for n in names))
    port = free_port()
    proc = Proc([sys.executable, "-m", "gpuwarden", "serve", "--config", str(cfg), "--port",
                 str(port)], env={"GPUWARDEN_HOME": str(tmp / tag)})
    procs_started.append(proc)
    proc.wait_for("shown this once", 60)
    token = proc.wait_for(r"^(gw_\S+)$", 10).group(1)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    want = len(names) * GPUS_PER_NODE
    while time.monotonic() < deadline:
        try:
            o = httpx.get(url + "/api/v1/overview", timeout=5,
                          headers={"Authorization": f"Bearer {token}"}).json()
            if o["gpus"]["total"] == want:
                return proc, url, token
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{tag}: the control plane did not see {want} GPUs in time")


def measure(browser, url: str, token: str, path: str) -> dict[str, float]:
    ctx = browser.new_context(base_url=url, viewport={"width": 1440, "height": 900})
    ctx.add_init_script(PROBE)
    page = ctx.new_page()
    page.goto(f"/login?token={token}")  # sets the session cookie; the redirect loads "/"
    page.wait_for_load_state("networkidle")
    page.goto("about:blank")
    page.goto(path)
    page.wait_for_function("() => window.__bench && window.__bench.meaningful !== null",
                           timeout=30_000)
    # wait for 1 s without a long task (at most 15 s)
    quiet_since = started = time.monotonic()
    seen = 0
    while time.monotonic() - quiet_since < 1.0 and time.monotonic() - started < 15:
        n = page.evaluate("() => window.__bench.longtasks.length")
        if n != seen:
            seen, quiet_since = n, time.monotonic()
        time.sleep(0.1)
    r = page.evaluate("""() => {
        const b = window.__bench;
        const fcp = performance.getEntriesByName("first-contentful-paint")[0];
        const after = b.longtasks.filter(t => t[1] >= 0).map(t => t[1]);
        return { fcp: fcp ? fcp.startTime : null, meaningful: b.meaningful,
                 interactive: Math.max(b.meaningful, ...after), longtasks: b.longtasks.length,
                 cards: document.querySelectorAll("[data-card]").length };
    }""")
    if path == "/gpus":
        log(f"  {path}: loaded in {r['interactive']:.0f} ms; filter click and scroll")
        r.update(gpus_interactions(page))
    ctx.close()
    return r


def gpus_interactions(page) -> dict[str, float]:
    """One filter click's latency, and frame times while scrolling the whole grid."""
    chip = page.get_by_test_id("filter-state-idle")
    lat = page.evaluate("""async () => {
        const chip = document.querySelector("[data-testid=filter-state-idle]");
        const t0 = performance.now();
        chip.click();
        await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
        return performance.now() - t0;
    }""")
    chip.click()  # back to all
    page.wait_for_timeout(200)
    frames = page.evaluate("""async () => {
        const deltas = []; let last = performance.now();
        const max = document.documentElement.scrollHeight - innerHeight;
        for (let y = 0; y <= max; y += 240) {
            window.scrollTo(0, y);
            await new Promise(r => requestAnimationFrame(r));
            const now = performance.now(); deltas.push(now - last); last = now;
        }
        deltas.sort((a, b) => a - b);
        return { frames: deltas.length, p50: deltas[Math.floor(deltas.length * 0.5)],
                 p95: deltas[Math.floor(deltas.length * 0.95)], max: deltas[deltas.length - 1] };
    }""")
    return {"filter_ms": lat, "scroll_frames": frames["frames"], "frame_p50": frames["p50"],
            "frame_p95": frames["p95"], "frame_max": frames["max"]}


def bundle_kb() -> tuple[float, float, list[str]]:
    html = (DIST / "index.html").read_text()
    assets = re.findall(r'(?:src|href)="/?(assets/[^"]+\.(?:js|css))"', html)
    js = sum(len(gzip.compress((DIST / a).read_bytes(), 9)) for a in assets if a.endswith(".js"))
    css = sum(len(gzip.compress((DIST / a).read_bytes(), 9)) for a in assets
              if a.endswith(".css"))
    return js / 1024, css / 1024, assets


def main() -> int:
    if not (DIST / "index.html").is_file():
        print(f"the web UI is not built ({DIST}): cd web && npm ci && npm run build")
        return 1
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get install -y chromium")
        return 1
    from playwright.sync_api import sync_playwright

    js_kb, css_kb, assets = bundle_kb()
    procs = procs_started
    with tempfile.TemporaryDirectory(prefix="bench-web-") as d:
        tmp = Path(d)
        try:
            port = free_port()
            fleet = Proc([sys.executable, str(ROOT / "bench" / "fleet_sim.py"), "--nodes",
                          str(NODES), "--gpus", str(GPUS_PER_NODE), "--port", str(port)])
            procs.append(fleet)
            fleet.wait_for("^ready", 120)
            log("fleet simulator ready")
            names = [f"n{i:04d}" for i in range(NODES)]
            base = f"http://127.0.0.1:{port}"
            big = serve(names, base, tmp, "fleet1000")
            small = serve(names[:1], base, tmp, "fleet8")
            log("both control planes see their GPUs")
            results: dict[tuple[str, str], list[dict[str, float]]] = {}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                for tag, (_, url, token) in (("8", small), ("1000", big)):
                    for path in ("/", "/gpus"):
                        measure(browser, url, token, path)  # warm-up (server caches, JIT)
                        results[(tag, path)] = [measure(browser, url, token, path)
                                                for _ in range(RUNS)]
                        log(f"measured {path} with {tag} GPUs")
                browser.close()
        finally:
            for pr in reversed(procs):
                pr.stop()

    def med(tag: str, path: str, key: str) -> float:
        vals = [r[key] for r in results[(tag, path)] if r.get(key) is not None]
        return statistics.median(vals) if vals else float("nan")

    print(f"web UI bench: {NODES} nodes × {GPUS_PER_NODE} GPUs vs 1 node × {GPUS_PER_NODE}; "
          f"median of {RUNS} cold loads each (headless Chromium)")
    print(f"{'page':10} {'metric':26} {'8 GPUs':>10} {'1000 GPUs':>10} {'ratio':>7}")
    worst_tti = 0.0
    for path, label in (("/", "Overview"), ("/gpus", "GPUs")):
        keys = [("fcp", "first contentful paint ms"), ("meaningful", "first meaningful paint ms"),
                ("interactive", "interactive ms"), ("longtasks", "long tasks (>50 ms)")]
        if path == "/gpus":
            # 8 cards fit on one screen, so the 8-GPU scroll figures are a floor, not a peer.
            keys += [("cards", "cards in the DOM"), ("filter_ms", "filter click → paint ms"),
                     ("frame_p50", "scroll frame p50 ms"), ("frame_p95", "scroll frame p95 ms"),
                     ("frame_max", "scroll frame max ms")]
        for key, name in keys:
            a, b = med("8", path, key), med("1000", path, key)
            ratio = f"{b / a:7.2f}" if a else f"{'–':>7}"
            print(f"{label:10} {name:26} {a:10.1f} {b:10.1f} {ratio}")
        worst_tti = max(worst_tti, med("1000", path, "interactive"))
    print(f"main bundle: {js_kb:.1f} KB JS + {css_kb:.1f} KB CSS gzipped "
          f"({', '.join(a.split('/')[-1] for a in assets)})")
    ok_tti = worst_tti < TARGET_INTERACTIVE_MS
    ok_size = js_kb + css_kb < TARGET_BUNDLE_KB
    print(f"target interactive < {TARGET_INTERACTIVE_MS} ms at 1000 GPUs: "
          f"{'PASS' if ok_tti else 'FAIL'} ({worst_tti:.0f} ms, worst page)")
    print(f"target main bundle < {TARGET_BUNDLE_KB} KB gzipped: "
          f"{'PASS' if ok_size else 'FAIL'} ({js_kb + css_kb:.1f} KB)")
    return 0 if ok_tti and ok_size else 1


if __name__ == "__main__":
    sys.exit(main())
