"""Reads a clickweight HTML report back: its table cells and its embedded images, each decoded."""
from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")
        if tag == "img":
            self.images.append(a["src"])
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def read_report(path: Path) -> tuple[list[str], list[tuple[int, int]]]:
    """(every table cell's text, (height, width) of every embedded image); fails on a network reference
    or an image that does not decode as PNG."""
    page = _Page()
    page.feed(Path(path).read_text())
    assert page.external == [], page.external
    shapes = []
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:40]
        pixels = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
        shapes.append(pixels.shape[:2])
    return page.cells, shapes
