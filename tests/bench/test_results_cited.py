"""Every file under benchmarks/results/ is cited by a doc, and every cited results file exists.

The rule, in full:

- Sources: the repository's Markdown files (README.md, docs/*.md and any other *.md), except the
  generated tables under benchmarks/results/ themselves and untracked work folders (runs/,
  .venv/, hidden folders...). Code (benchmarks/*.py docstrings, conf/ comments) is not a source:
  what it names is the default output target of a benchmark command, not a citation.
- A citation is a full repository-relative path, ``benchmarks/results/<name>``, found by the
  regex ``benchmarks/results/[A-Za-z0-9_.\\-/]+`` (trailing ``.`` and ``/`` dropped, so a
  sentence's full stop is not part of the name). A bare file name does not count: several are
  ambiguous (``weighting_quality.md`` is both a doc and a results table).
- A path followed by ``<`` is a template (``benchmarks/results/quality_<split>_<tag>.json``, what
  a command writes in general) and is neither a citation nor an error. A path followed by ``{``,
  ``*``, ``?`` or ``[`` is a brace or glob pattern: it is reported, since grep cannot find the
  files it means; name each file in full instead.
- Siblings: citing ``X.md`` also cites ``X.json`` and vice versa (a benchmark writes the pair;
  the doc quotes one). No other extension is implied (``.jsonl``, ``.png`` are cited by name).
- Folders: citing a folder (``benchmarks/results/quality_scores/``) cites every file under it: data
  a benchmark reads back (held-out scores kept across sessions), never quoted file by file.
- Exempt: files whose name starts with ``quality_dev_probe`` (runs of benchmarks/quality.py in
  progress write new ones before their doc section is written).

The test fails on (a) a results file that nobody cites, (b) a cited results file that does not
exist, (c) a brace or glob pattern in place of file names. No Spark; well under a second.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = "benchmarks/results"
CITATION = re.compile(r"benchmarks/results/([A-Za-z0-9_.\-/]+)")
TEMPLATE_NEXT = "<"
PATTERN_NEXT = "{*?["
SIBLINGS = {".md": ".json", ".json": ".md"}
EXEMPT_PREFIXES = ("quality_dev_probe",)
SKIP_DIRS = {"runs", "spark-warehouse", "metastore_db", "__pycache__", "node_modules", "shared"}


def results_files(root: Path = ROOT) -> set[str]:
    """Names (relative to benchmarks/results/) of the files on disk, hidden ones excluded."""
    base = root / RESULTS
    out = set()
    for path in base.rglob("*"):
        rel = path.relative_to(base)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.add(rel.as_posix())
    return out


def markdown_sources(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may cite results (see the module docstring)."""
    out = []
    results_dir = (root / RESULTS).resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d not in SKIP_DIRS and not d.endswith(".egg-info")
            and (here / d).resolve() != results_dir
            and not (here / d / "pyvenv.cfg").exists())
        out.extend(here / f for f in sorted(filenames) if f.endswith(".md"))
    return out


def find_citations(text: str) -> tuple[set[str], set[str]]:
    """(cited names relative to benchmarks/results/, brace or glob patterns) in one text."""
    cited, patterns = set(), set()
    for m in CITATION.finditer(text):
        name = m.group(1).rstrip("./")
        after = text[m.end():m.end() + 1]
        if after and after in TEMPLATE_NEXT:
            continue
        if after and after in PATTERN_NEXT:
            end = m.end()
            while end < len(text) and not text[end].isspace() and text[end] not in "`)'\"":
                end += 1
            patterns.add(text[m.start():end])
            continue
        if name:
            cited.add(name)
    return cited, patterns


def with_siblings(names: set[str]) -> set[str]:
    out = set(names)
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if dot and "." + ext in SIBLINGS:
            out.add(stem + SIBLINGS["." + ext])
    return out


def check(files: set[str], cited: set[str]) -> tuple[list[str], list[str]]:
    """(files nobody cites, cited files or folders that do not exist), both sorted."""
    covered = with_siblings(cited)
    folders = tuple(c + "/" for c in cited if any(f.startswith(c + "/") for f in files))
    uncited = sorted(f for f in files
                     if f not in covered and not f.startswith(EXEMPT_PREFIXES) and not f.startswith(folders))
    missing = sorted(c for c in cited if c not in files and c + "/" not in folders)
    return uncited, missing


def test_every_results_file_is_cited_and_every_citation_exists():
    cited: set[str] = set()
    where: dict[str, str] = {}
    patterns: list[str] = []
    for source in markdown_sources():
        names, pats = find_citations(source.read_text(encoding="utf-8"))
        rel = source.relative_to(ROOT).as_posix()
        cited |= names
        for name in names:
            where.setdefault(name, rel)
        patterns += [f"{rel}: {p}" for p in sorted(pats)]
    uncited, missing = check(results_files(), cited)
    problems = []
    if uncited:
        problems.append("results files no doc cites by full path (cite them or `git rm` them):\n  "
                        + "\n  ".join(f"{RESULTS}/{f}" for f in uncited))
    if missing:
        problems.append("cited results files that do not exist:\n  "
                        + "\n  ".join(f"{RESULTS}/{c} (in {where[c]})" for c in missing))
    if patterns:
        problems.append("brace or glob patterns instead of file names (name each file in full):\n  "
                        + "\n  ".join(patterns))
    assert not problems, "\n".join(problems)


def test_matching_rule_on_a_fake_tree():
    text = (
        "From `benchmarks/results/a.md`. Also benchmarks/results/b.json.\n"
        "[link](../benchmarks/results/c.png) and benchmarks/results/gone.json;\n"
        "writes `benchmarks/results/quality_<split>_<tag>.json` and benchmarks/results/\n"
        "(`benchmarks/results/d_seed{0,1}.json`, benchmarks/results/e*.md)\n"
        "a bare f.json does not count\n")
    cited, patterns = find_citations(text)
    assert cited == {"a.md", "b.json", "c.png", "gone.json"}
    uncited, missing = check({"a.md", "a.json", "b.json", "dir/x.parquet", "dir/y/z.parquet", "other.md"},
                             cited | {"dir"})
    assert uncited == ["other.md"]  # the folder covers its files, the sibling covers a.json
    assert missing == ["c.png", "gone.json"]
    assert patterns == {"benchmarks/results/d_seed{0,1}.json", "benchmarks/results/e*.md"}

    files = {"a.md", "a.json", "b.json", "b.md", "c.png", "c.json", "f.json",
             "quality_dev_probe_tower.md", "x.jsonl"}
    uncited, missing = check(files, cited)
    # a.json and b.md are covered as siblings; c.json is not (siblings pair .md and .json only)
    assert uncited == ["c.json", "f.json", "x.jsonl"]
    assert missing == ["gone.json"]
    assert check({"a.md"}, {"a.md"}) == ([], [])
