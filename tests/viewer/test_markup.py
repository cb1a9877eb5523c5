"""The markup the viewer builds from corpus and LLM text: escaped, with acting characters shown."""

from __future__ import annotations

from autointerp.viewer.heatmap import heatmap
from autointerp.viewer.search import highlight
from autointerp.viewer.text import visible_text, visible_token


def test_characters_that_act_are_shown_as_symbols():
    hostile = "a\x1b[31mb\x00c\u202ed\u2066e\x85f\tg\nh"
    assert visible_token(hostile) == "a␛[31mb␀c⟨U+202E⟩d⟨U+2066⟩e⟨U+0085⟩f⇥g↵h"
    assert visible_text(hostile) == "a␛[31mb␀c⟨U+202E⟩d⟨U+2066⟩e⟨U+0085⟩f\tg\nh"
    assert visible_text(None) == "" and visible_text("plain text") == "plain text"


def test_a_heatmap_escapes_tokens_and_shades_them_by_step():
    html = heatmap(
        ["<script>", ' x="1"', "\n", "&"],
        [4.0, 2.4, -1.0, 0.0],
        scale=4.0,
        simulated=[10.0, 0.0, 6.0, None],
        missing=[3],
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert " x=&#34;1&#34;" in html or " x=&quot;1&quot;" in html
    spans = html.split("<span")[1:]
    assert spans[0].startswith(' class="a9 s9">')  # the neuron's largest, simulated 10
    assert spans[1].startswith(' class="a5">')
    assert spans[2].startswith(' class="n2 s5">↵')  # negative: its own colour
    assert spans[3].startswith(' class="m">&amp;')  # unanswered by the simulator
    assert 'data-act="4,2.4,-1,0"' in html and 'data-sim="10,0,6,"' in html


def test_search_matches_are_cut_out_for_highlighting():
    assert highlight("The King and the king", "king") == [
        ("The ", False),
        ("King", True),
        (" and the ", False),
        ("king", True),
    ]
