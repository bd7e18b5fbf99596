"""Converters for upstream data that GitHub serves in another form than the loaders read.

MedQuAD ships thousands of XML files; `medquad_jsonl` turns the repository's archive zip into one JSONL record
per answered question, byte for byte the form the pinned sha256 describes (docs/data.md).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

# Root tags of the files that hold QAPairs/QAPair/Question|Answer; four NINDS files use lowercase tags
# (doc/qaPairs/pair) and are left out, as in the pinned form.
MEDQUAD_ROOTS = ("Document", "DiseaseFile")


def _collapse_lines(text: str) -> str:
    """Each line's whitespace collapsed; empty lines dropped."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.split())


def medquad_jsonl(archive: Path) -> tuple[bytes, int]:
    """MedQuAD's archive zip -> (JSONL bytes, record count): answered pairs, files in byte-sorted order."""
    lines = []
    with zipfile.ZipFile(archive) as zf:
        names = sorted((n for n in zf.namelist() if n.endswith(".xml")), key=lambda n: n.encode())
        for name in names:
            root = ElementTree.fromstring(zf.read(name))
            if root.tag not in MEDQUAD_ROOTS:
                continue
            folder, focus = name.split("/")[1], root.findtext("Focus")
            for pair in root.iterfind("QAPairs/QAPair"):
                question, answer = pair.find("Question"), pair.findtext("Answer") or ""
                if question is None or not answer.strip():
                    continue
                record = {
                    "id": question.get("qid"),
                    "source": root.get("source"),
                    "folder": folder,
                    "qtype": question.get("qtype"),
                    "focus": focus,
                    "question": question.text,
                    "answer": _collapse_lines(answer),
                    "url": root.get("url"),
                }
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8"), len(lines)


CONVERTERS: dict[str, Callable[[Path], tuple[bytes, int]]] = {"medquad_jsonl": medquad_jsonl}
