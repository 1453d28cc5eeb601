"""``pacore view`` in a real browser (Debian's chromium, Playwright): a trace's graph, a study's
tables, the exported file offline, live updates, and hostile text that must stay text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pacore_agents.studies import extract_answer
from tests._browser import browser_context, browser_missing, viewer_server
from tests._viewer_fixtures import HOSTILE, make_study, make_trace

pytestmark = [pytest.mark.browser, pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or "")]
READY = "#app[data-ready='1']"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("viewer")
    make_trace(tmp / "trace.json")
    make_study(tmp / "study")
    return tmp


def watch(page: Any) -> list[str]:
    """Console errors, page errors and CSP violations of ``page``."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    return problems


def click_node(page: Any, node_id: str) -> None:
    """A real mouse click on the node's position on the graph's canvas."""
    pos = page.evaluate("id => { const p = window.pacoreView.cy.getElementById(id).renderedPosition(); return [p.x, p.y]; }",
                        node_id)
    box = page.locator("#graph").bounding_box()
    page.mouse.click(box["x"] + pos[0], box["y"] + pos[1])


def assert_inert(page: Any) -> None:
    """No hostile markup ran or became elements; it shows as the literal text."""
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#app img, #app b, #app textarea, #app strong:not(header strong)").count() == 0
    assert page.locator("script").count() <= 3  # the page's own (served: 2; exported: data + 2)


def check_sink(page: Any, trace: dict[str, Any]) -> None:
    sink = next(n for n in trace["nodes"] if n["id"] == trace["sink"])
    click_node(page, sink["id"])
    page.wait_for_selector("#node-title")
    assert page.text_content("#node-title").startswith(sink["id"])
    refs = page.eval_on_selector_all("#refs li", "els => els.map(e => e.dataset.node)")
    assert refs == sink["inputs"] and len(refs) == 3  # the references, in prompt order
    highlighted = page.evaluate("window.pacoreView.cy.edges('.ref').map(e => [e.source().id(), e.data('order')])")
    assert sorted(highlighted) == sorted([src, str(i + 1)] for i, src in enumerate(sink["inputs"]))
    assert page.evaluate("window.pacoreView.cy.nodes('.ref').map(n => n.id()).sort()") == sorted(sink["inputs"])
    prompt = page.text_content("#prompt-0")
    assert prompt == sink["prompt"][0]["content"] and "Reference 1" in prompt and HOSTILE.strip() in prompt
    assert HOSTILE in page.text_content("#node-message")
    assert_inert(page)


def test_trace_click_the_sink(data: Path) -> None:
    trace = json.loads((data / "trace.json").read_text())
    with viewer_server(data / "trace.json") as url, browser_context() as ctx:
        page = ctx.new_page()
        problems = watch(page)
        page.goto(url)
        page.wait_for_selector(READY)
        assert page.evaluate("window.pacoreView.cy.nodes().length") == 8
        check_sink(page, trace)
        assert page.locator("#rounds tbody tr").count() == 3
        assert page.text_content("#sink-answer").strip() == extract_answer(trace["answer"])
        assert problems == []


def test_study_sort_arms_and_open_a_run(data: Path) -> None:
    with viewer_server(data / "study") as url, browser_context() as ctx:
        page = ctx.new_page()
        problems = watch(page)
        page.goto(url)
        page.wait_for_selector(READY)
        labels = page.eval_on_selector_all("#arms tbody tr", "rs => rs.map(r => r.dataset.label)")
        assert labels == ["single", "sc@w2", "sc@w4", "w2", "w4"]  # the report's order
        page.click("#arms th[data-col='mean_ttc']")  # numbers sort high first
        ttcs = page.eval_on_selector_all("#arms tbody tr td:nth-child(5)", "tds => tds.map(t => Number(t.textContent.replace(/,/g, '')))")
        assert ttcs == sorted(ttcs, reverse=True) and len(ttcs) == 5
        page.click("#arms th[data-col='mean_ttc']")
        ttcs = page.eval_on_selector_all("#arms tbody tr td:nth-child(5)", "tds => tds.map(t => Number(t.textContent.replace(/,/g, '')))")
        assert ttcs == sorted(ttcs)
        assert page.locator("#pairs tbody tr").count() == 4 and page.locator("#scaling circle").count() == 2
        page.check("#filter-failed")
        shown = page.locator("#problem-table tbody tr").count()
        assert 0 < shown < 6
        page.click("#problem-table button[data-arm='w4']")
        page.wait_for_selector("#run-head")
        assert page.evaluate("window.pacoreView.cy.nodes().length") == 5
        assert page.text_content("#run-head").count("arith-") == 1
        assert_inert(page)
        page.go_back()
        page.wait_for_selector("#arms")
        assert problems == []


def test_exported_file_works_offline(data: Path, tmp_path: Path) -> None:
    from pacore_agents.viewer import ViewSource, export_html

    trace = json.loads((data / "trace.json").read_text())
    for path, check in ((data / "trace.json", "trace"), (data / "study", "study")):
        html = export_html(ViewSource(path), tmp_path / f"{check}.html")
        with browser_context(offline=True) as ctx:
            requests: list[str] = []

            def only_the_file(route: Any, asked: list[str] = requests) -> None:
                if route.request.url.startswith("file:"):
                    route.continue_()
                else:
                    asked.append(route.request.url)
                    route.abort()

            ctx.route("**/*", only_the_file)
            page = ctx.new_page()
            problems = watch(page)
            page.goto(html.as_uri())
            page.wait_for_selector(READY)
            if check == "trace":
                check_sink(page, trace)
            else:
                page.click("#problem-table button[data-arm='w2']")
                page.wait_for_selector("#run-head")
                page.click("#select-sink")
                page.wait_for_selector("#node-title")
                assert page.locator("#refs li").count() >= 1
                assert_inert(page)
            assert requests == []  # nothing but the file itself was asked for
            assert problems == []


def test_live_trace_dir(data: Path, tmp_path: Path) -> None:
    """A server's --trace-dir: a trace written while the view is open appears in its list."""
    live = tmp_path / "traces"
    live.mkdir()
    with viewer_server(live) as url, browser_context() as ctx:
        page = ctx.new_page()
        page.goto(url)
        page.wait_for_selector(READY)
        assert page.locator("#traces tbody tr").count() == 0
        shutil.copy(data / "trace.json", live / "chatcmpl-1.json")
        page.locator("#traces tbody tr").first.wait_for(timeout=15000)  # the page polls every 2 s
        assert page.locator("#traces tbody tr").count() == 1
        page.click("#traces a")
        page.wait_for_selector("#run-head")
        assert page.evaluate("window.pacoreView.cy.nodes().length") == 8


def test_api_key_is_asked_and_sent(data: Path) -> None:
    with viewer_server(data / "trace.json", api_key="view-secret-key") as url, browser_context() as ctx:
        page = ctx.new_page()
        page.goto(url)
        page.wait_for_selector("#key")
        page.fill("#key", "view-secret-key")
        page.click("form.key button")
        page.wait_for_selector(READY)
        assert page.evaluate("window.pacoreView.cy.nodes().length") == 8
