"""The score histogram: counts per bin, drawn as an SVG that holds numbers only."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from autointerp.score.histogram import histogram, histogram_svg, svg_data_uri


def test_counts_fall_in_their_bins_and_the_edges_count():
    counts = histogram([-1.0, -0.95, 0.0, 0.8, 0.99, 1.0, 1.5, float("nan"), None], bins=20)
    assert len(counts) == 20 and sum(counts) == 6  # 1.5, NaN and None are left out
    assert counts[0] == 2 and counts[10] == 1 and counts[18] == 1 and counts[19] == 2


def test_the_svg_is_well_formed_and_travels_as_a_data_uri():
    svg = histogram_svg(histogram([0.1, 0.2, 0.85]))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len(root.findall("{http://www.w3.org/2000/svg}rect")) == 20
    uri = svg_data_uri(svg)
    assert uri.startswith("data:image/svg+xml;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]).decode() == svg
    assert histogram_svg([0] * 20)  # an empty layer still draws
