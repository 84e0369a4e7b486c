"""The documentation: README stays short and its tour runs; every docs page is in the site's
navigation; every relative link resolves; every benchmark table marker renders from
bench/results/ (the MkDocs hook, docs/hooks/bench_tables.py)."""
import importlib.util
import os
import pathlib
import re
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _hook():
    spec = importlib.util.spec_from_file_location("bench_tables", DOCS / "hooks" / "bench_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages() -> set[str]:
    return set(re.findall(r":\s*([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))


def test_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks[0].strip() == "pip install torch==2.13.0 -e . && featvis demo --out featvis-demo"
    assert blocks[1].strip() == 'pip install torch==2.13.0 -e ".[test]" && python -m pytest -q'


def test_every_docs_page_is_in_the_navigation_and_every_nav_entry_exists():
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages == _nav_pages()


@pytest.mark.parametrize("page", ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))])
def test_relative_links_resolve(page):
    path = ROOT / page
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = target.split("#", 1)[0]
        assert (path.parent / file).exists(), f"{page}: broken link {target}"


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_generated_table_renders(page):
    text = (DOCS / page).read_text()
    rendered = _hook().render(text)
    assert "<!-- bench-" not in rendered and "<!-- include:" not in rendered
    for name in re.findall(r"<!-- bench-(?:md|table): ([\w.-]+)", text):
        assert f"bench/results/{name}" in rendered or (ROOT / "bench" / "results" / f"{name}.md").exists()


def test_a_bench_table_selects_columns_and_rows():
    hook = _hook()
    out = hook.table("backprop-zoo-cpu-2026-12-04 | model, impl, peak_mib | impl=featvis; method=gradcam")
    rows = [line for line in out.splitlines() if line.startswith("| tv-")]
    assert len(rows) == 4 and all("| featvis |" in r for r in rows)
    with pytest.raises(ValueError, match="no column"):
        hook.table("backprop-zoo-cpu-2026-12-04 | model, nonexistent")
    with pytest.raises(ValueError, match="no row matches"):
        hook.table("backprop-zoo-cpu-2026-12-04 | model | impl=nobody")


def test_the_readme_tour_runs(tmp_path, monkeypatch):
    code = re.search(r"## A short tour\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    script = tmp_path / "tour.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    scope = runpy.run_path(os.fspath(script))
    assert (tmp_path / "similarity.png").stat().st_size > 0
    assert scope["gb"].shape == scope["x"].shape and scope["cam"].shape == (1, 7, 7)
    assert scope["imgs"].shape[0] == 2 and scope["inv"].shape == scope["x"].shape


def _api_objects():
    import importlib
    import inspect

    for name in re.findall(r"^::: (\S+)", (DOCS / "api.md").read_text(), re.M):
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr, None)
        if obj is not None and (inspect.isfunction(obj) or inspect.isclass(obj)):
            yield name, obj


@pytest.mark.parametrize("name,obj", list(_api_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_api_page_entry_documents_its_arguments_and_result(name, obj):
    """Google-style docstrings: an Args section naming every parameter, and Returns for functions."""
    import inspect

    doc = inspect.getdoc(obj) or ""
    try:
        params = [p for p in inspect.signature(obj).parameters if p not in ("self", "args", "kwargs")]
    except ValueError:  # an exception class: the builtin constructor
        params = []
    if params:
        assert "Args:" in doc, f"{name}: no Args section"
        for param in params:
            assert re.search(rf"^\s+{param}:", doc, re.M), f"{name}: Args does not describe {param!r}"
    if inspect.isfunction(obj) and inspect.signature(obj).return_annotation not in (None, "None"):
        assert "Returns:" in doc, f"{name}: no Returns section"
    assert "._" not in re.sub(r"`[^`]*`", "", doc.split("Args:")[0]), f"{name}: points users into a private module"
