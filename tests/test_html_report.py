"""The HTML explorer: what it writes, what it escapes, its limits, and a headless browser's view of it.

The browser test needs Chromium (`.ci/run` installs Debian's `chromium`); without one it is skipped,
unless MRB_REQUIRE_BROWSER is set. With MRB_SCREENSHOT_DIR set it also writes the screenshots that
docs/report.md shows (`MRB_SCREENSHOT_DIR=docs python -m pytest tests/test_html_report.py -k browser`).
"""

import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

import mrb
from mrb.cli import main
from mrb.data import Record
from mrb.html.site import query_page
from mrb.html.thumbnails import SIZE
from mrb.results import read_per_query
from tests.browser import Browser, find_browser
from tests.packs import combo_task, write_task

INJECTION = '<script>window.injected = 1</script><img src="x" onerror="window.injected = 2"> & "both"'
QUERY_ID = "<i>q1</i>"  # ids may hold any printable character but spaces: it is data too


def png(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def site_results(tmp_path_factory):
    """random and oracle on mini and on Inject-T2I, a task whose query text and id are markup (read only)."""
    root = tmp_path_factory.mktemp("html")
    colours = [(200, 30, 30), (30, 160, 60), (40, 70, 200), (230, 200, 40)]
    write_task(
        root / "tasks",
        "Inject-T2I",
        type_code="t2i",
        queries=[Record(QUERY_ID, INJECTION), Record("q2", "a blue square")],
        documents=[Record(f"d{i}", image_bytes=png(c)) for i, c in enumerate(colours)],
        candidates=[(q, f"d{i}", i + 1, 1.0 - i / 10) for q in (QUERY_ID, "q2") for i in range(4)],
        qrels=[(QUERY_ID, "d3", 1), ("q2", "d2", 2), ("q2", "d0", 0)],
    )
    out = root / "results"
    for model in ("random", "oracle"):
        mrb.evaluate(model, "mini,Inject-T2I", task_dirs=[root / "tasks"], quiet=True, output_dir=out)
    return root


def write_site(root: Path, *extra: str) -> Path:
    site = root / "site"
    command = ["report", "--results", str(root / "results"), "--format", "html", "--output", str(site)]
    assert main([*command, "--task-dir", str(root / "tasks"), *extra]) == 0
    return site


def test_the_site_shows_each_task_the_queries_chosen_and_their_thumbnails_once(site_results, capsys):
    site = write_site(site_results, "--queries-per-task", "4", "--depths", "5,10")
    err = capsys.readouterr().err
    assert re.fullmatch(rf"site written to {re.escape(str(site))}/index\.html: \d+ pages, \d+ thumbnails, \d+\.\d MB\n", err)
    tasks = ["MiniFacts-T2T", "MiniPhotos-I2I", "MiniPhotos-T2I", "MiniPhotos-I2T", "MiniPhotoQA-IT2T", "Inject-T2I"]
    assert sorted(p.name for p in (site / "tasks").iterdir()) == sorted(f"{t}.html" for t in tasks)
    # per task, each model's 2 largest wins and 2 largest losses over the first stage get a page, nothing else
    for task in tasks:
        expected = set()
        for model in ("random", "oracle"):
            values = read_per_query(site_results / "results", model, task).set_index("query_id")
            delta = (values["value"] - values["first_stage_value"]).sort_index()
            expected |= set(delta[delta > 0].sort_values(ascending=False, kind="stable").index[:2])
            expected |= set(delta[delta < 0].sort_values(kind="stable").index[:2])
        written = {p.relative_to(site).as_posix() for p in (site / "queries").glob(f"{task}/*.html")}
        assert written == {query_page(task, q) for q in expected}, task
    # a thumbnail for every image shown, at most 256 px a side, one file per image
    shown = set()
    for page in site.rglob("*.html"):
        shown |= {src.rsplit("img/", 1)[1] for src in re.findall(r'<img src="([^"]+)"', page.read_text())}
    files = {p.name for p in (site / "img").iterdir()}
    assert shown == files and files
    for name in files:
        with Image.open(site / "img" / name) as image:
            assert image.format == "JPEG" and max(image.size) <= SIZE
    index = (site / "index.html").read_text()
    assert index.count("<svg") == 2 and "<h2>nDCG@10 by reranking depth (from one pass, ×100)</h2>" in index
    marker = json.loads((site / "mrb-site.json").read_text())
    assert (marker["queries_per_task"], marker["thumbnails"]) == (4, len(files))


def test_text_from_the_data_is_escaped(site_results):
    site = write_site(site_results)
    page = (site / query_page("Inject-T2I", QUERY_ID)).read_text()
    assert (
        '<p class="text query-text">&lt;script&gt;window.injected = 1&lt;/script&gt;&lt;img src=&quot;x&quot; '
        "onerror=&quot;window.injected = 2&quot;&gt; &amp; &quot;both&quot;</p>"
    ) in page
    assert "<title>Inject-T2I: query &lt;i&gt;q1&lt;/i&gt;</title>" in page
    assert "<script" not in page and "<i>" not in page  # a query page runs no script at all
    task = (site / "tasks" / "Inject-T2I.html").read_text()
    assert "&lt;script&gt;window.injected" in task and "<script>window" not in task


def test_the_site_is_bounded_and_replaces_only_a_site(site_results, capsys, tmp_path):
    out = tmp_path / "small"
    command = [
        "report",
        "--results",
        str(site_results / "results"),
        "--format",
        "html",
        "--task-dir",
        str(site_results / "tasks"),
    ]
    assert main([*command, "--output", str(out), "--max-size-mb", "0.05"]) == 2
    assert capsys.readouterr().err == (
        "mrb: error: the HTML report would pass --max-size-mb 0.05 while writing the pages of task MiniFacts-T2T: lower "
        f"--queries-per-task (now 20) or raise --max-size-mb; nothing was written to {out}\n"
    )
    assert not out.exists() and not list(tmp_path.iterdir())  # no staging folder left behind
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main([*command, "--output", str(taken)]) == 2
    assert capsys.readouterr().err == (
        f"mrb: error: {taken} exists and is not an MRB report site (no mrb-site.json): choose another --output folder\n"
    )
    assert main([*command, "--output", str(out), "--queries-per-task", "1"]) == 0
    first = {p.relative_to(out) for p in out.rglob("*")}
    assert main([*command, "--output", str(out), "--queries-per-task", "2"]) == 0  # a site is replaced whole
    assert first < {p.relative_to(out) for p in out.rglob("*")}
    assert main([*command, "--output", str(out), "--queries-per-task", "0"]) == 2
    assert capsys.readouterr().err.endswith("mrb: error: --queries-per-task must be at least 1, got 0\n")
    assert main([*command]) == 2
    assert capsys.readouterr().err == "mrb: error: --format html writes a site into a folder: give --output DIR\n"


def test_a_browser_opens_the_site_without_errors(site_results, tmp_path):
    binary = find_browser()
    if binary is None:
        if os.environ.get("MRB_REQUIRE_BROWSER"):
            pytest.fail("MRB_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium installed (.ci/run installs Debian's chromium)")
    site = write_site(site_results, "--compare", "random", "oracle")
    shots = Path(os.environ.get("MRB_SCREENSHOT_DIR") or tmp_path)
    browser = Browser(binary)
    try:
        browser.open(site / "index.html")
        assert browser.evaluate("document.querySelectorAll('.chart svg').length") == 1
        # the summary table sorts by a click on a header: ALL, best first, then worst first
        sort = "var th = Array.from(document.querySelectorAll('table')[0].tHead.rows[0].cells).find(c => c.textContent.startsWith('ALL')); th.click();"
        first_model = "document.querySelectorAll('table')[0].tBodies[0].rows[0].cells[0].textContent"
        assert browser.evaluate(f"{sort} {first_model}") == "oracle"
        assert browser.evaluate(f"{sort} {first_model}") == "random"
        browser.open(site / "index.html")  # afresh, in the order the report gives
        browser.screenshot(shots / "report-leaderboard.png")
        browser.open(site / query_page("MiniPhotos-T2I", "q01"))  # a text query, image documents
        images = browser.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) == 30 and all(done and width > 0 for done, width in images)  # 3 lists of 10
        lists = browser.evaluate(
            "Array.from(document.querySelectorAll('.list')).map(l => "
            "[l.querySelector('h2').textContent, l.querySelectorAll('li').length, l.querySelectorAll('img').length])"
        )
        assert lists == [["first stage", 10, 10], ["random", 10, 10], ["oracle", 10, 10]]
        browser.screenshot(shots / "report-query.png")
        (photo_question,) = sorted((site / "queries" / "MiniPhotoQA-IT2T").glob("*.html"))[:1]  # an image and text query
        browser.open(photo_question)
        assert browser.evaluate("[document.images.length, document.images[0].naturalWidth > 0]") == [1, True]
        assert browser.evaluate("document.querySelectorAll('.list .snippet').length") == 30  # passages, as text
        browser.open(site / query_page("Inject-T2I", QUERY_ID))
        assert browser.evaluate("document.querySelector('.query-text').textContent") == INJECTION
        assert browser.evaluate(
            "[document.title, typeof window.injected, document.querySelectorAll('img[src=\"x\"]').length]"
        ) == [
            f"Inject-T2I: query {QUERY_ID}",
            "undefined",
            0,
        ]
        browser.open(site / "tasks" / "Inject-T2I.html")
        assert browser.evaluate("typeof window.injected") == "undefined"
        assert browser.problems == []
    finally:
        browser.close()
    for name in ("report-leaderboard.png", "report-query.png"):
        with Image.open(shots / name) as image:
            assert image.width == 1280 and image.height > 600


def test_a_damaged_run_file_is_named(site_results, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(site_results / "results", results)
    trec = results / "oracle" / "MiniFacts-T2T.trec"
    lines = trec.read_text().splitlines()
    lines[2] = lines[2].replace(" Q0 ", " ")
    trec.write_text("\n".join(lines) + "\n")
    out = tmp_path / "site"
    assert (
        main(
            [
                "report",
                "--results",
                str(results),
                "--format",
                "html",
                "--output",
                str(out),
                "--task-dir",
                str(site_results / "tasks"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err == f"mrb: error: {trec}, line 3: not 'qid Q0 docid rank score tag'\n"
    assert not out.exists()


def test_a_composite_task_shows_its_parts_queries(tmp_path, capsys):
    root = tmp_path / "tasks"
    combo_task(root)
    for model in ("random", "oracle"):
        mrb.evaluate(model, "Combo", task_dirs=[root], quiet=True, output_dir=tmp_path / "results")
    site = tmp_path / "site"
    command = ["report", "--results", str(tmp_path / "results"), "--format", "html", "--output", str(site)]
    assert main([*command, "--task-dir", str(root), "--compare", "first stage", "oracle"]) == 0
    # the oracle wins on every query of both parts over the first stage (a relevant document moves up), and loses none
    assert sorted(p.name for p in (site / "queries" / "Combo").iterdir()) == sorted(
        Path(query_page("Combo", q)).name for q in ("Combo-a/q1", "Combo-a/q2", "Combo-b/q1")
    )
    page = (site / query_page("Combo", "Combo-b/q1")).read_text()
    assert "task Combo · part Combo-b · query Combo-b/q1" in page
    assert re.findall(r'<span class="ids">([^<]+)</span>', page) == ["a", "b", "b", "a", "b", "a"]  # first stage, random, oracle


def test_rank_movement_is_counted_in_the_lists_as_evaluated_when_the_querys_own_id_is_dropped(tmp_path, capsys):
    """With ignore_identical_ids the query's own id (first-stage rank 1) is not in the evaluated lists: a document
    that keeps its place shows '=', and one the oracle lifts from the evaluated rank 3 to 1 shows ▲2."""
    write_task(
        tmp_path / "tasks",
        "Self-T2T",
        queries=[Record("qa", "find d3")],
        documents=[Record(d, f"text {d}") for d in ("qa", "d1", "d2", "d3")],
        candidates=[("qa", d, r, 1.0 - r / 10) for r, d in enumerate(("qa", "d1", "d2", "d3"), 1)],
        qrels=[("qa", "d3", 1)],
        extra_yaml="ignore_identical_ids: true\n",
    )
    for model in ("first-stage", "oracle"):
        mrb.evaluate(model, "Self-T2T", task_dirs=[tmp_path / "tasks"], quiet=True, output_dir=tmp_path / "results")
    site = tmp_path / "site"
    command = ["report", "--results", str(tmp_path / "results"), "--format", "html", "--output", str(site)]
    assert main([*command, "--task-dir", str(tmp_path / "tasks"), "--queries-per-task", "1"]) == 0
    page = (site / query_page("Self-T2T", "qa")).read_text()
    moves = re.findall(r'<span class="move \w+" title="first-stage rank (\d)">([^<]+)</span>', page)
    assert moves == [("1", "="), ("2", "="), ("3", "="), ("3", "▲2"), ("1", "▼1"), ("2", "▼1")]  # first-stage, oracle
