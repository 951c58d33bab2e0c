"""A folder of plain-text (``.txt``) and Markdown (``.md``) files, chunked into passages.

``kb.passages`` is the folder; it is searched recursively, in sorted path order, skipping hidden
files and folders (names starting with ``.``). Files must be UTF-8. Each file is cut into chunks
of at most ``kb.chunk_words`` words; consecutive chunks of one section share ``kb.chunk_overlap``
words. Chinese has no spaces between words, so each CJK ideograph counts as one word there (a
Chinese chunk of 120 "words" is 120 characters) and is put back without spaces. Chunks end at paragraph breaks (blank lines) when that keeps them at least half full,
otherwise between sentences, and a sentence longer than a chunk is cut between words.

In Markdown files every heading (``# Title`` or an underlined ``Title`` / ``=====``) starts a
new section: a new chunk, without overlap, whose ``title`` is that heading's text. Text before
the first heading, and every chunk of a ``.txt`` file, is titled with the file's stem. Fenced code
blocks are kept whole (no headings inside them) and YAML front matter is skipped.

Passage ids are ``<relative/path.md>#<chunk number from 0>``; ``group`` is the relative path, so
a file never straddles a split. ``kb.questions``, when set, is a halluguard JSON Lines question
file (see :mod:`data_builders.sources.jsonl`) whose ``passage_id`` values use those ids.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from halluguard.errors import HalluguardError
from halluguard.kb import Passage, Question
from halluguard.language import mixed_tokens

log = logging.getLogger("halluguard.sources")

SUFFIXES = (".txt", ".md")
_ATX = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]」』]*$")

# A word is a string; one that begins a line in the source carries a leading "\n", so line
# structure (lists, tables, code) survives chunking while word counts stay exact. A word that
# followed the previous one with no space (a Chinese character) carries a leading _GLUE.
Paragraph = list[str]
_GLUE = "\x1d"


def _line_words(line: str) -> list[str]:
    out: list[str] = []
    for word in line.split():
        pieces = mixed_tokens(word)
        out.append(pieces[0])
        out += [_GLUE + p for p in pieces[1:]]
    return out


def load(kb_cfg) -> tuple[list[Passage], list[Question]]:
    if not kb_cfg.passages:
        raise HalluguardError("kb.passages is not set: the textdir format needs a folder of .txt/.md files")
    passages = load_folder(Path(kb_cfg.passages), int(kb_cfg.chunk_words), int(kb_cfg.chunk_overlap))
    questions: list[Question] = []
    if kb_cfg.questions:
        from data_builders.sources.jsonl import load_questions

        questions = load_questions(Path(kb_cfg.questions), {p.id for p in passages})
    return passages, questions


def load_folder(folder: Path, chunk_words: int = 120, chunk_overlap: int = 20) -> list[Passage]:
    if chunk_words <= 0 or not 0 <= chunk_overlap < chunk_words:
        raise HalluguardError(f"textdir chunking needs chunk_words > 0 and 0 <= chunk_overlap < chunk_words, "
                              f"got chunk_words={chunk_words}, chunk_overlap={chunk_overlap}")
    files = text_files(folder)
    passages: list[Passage] = []
    for path in files:
        rel = path.relative_to(folder).as_posix()
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise HalluguardError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); "
                                  f"convert it to UTF-8 or move it out of {folder}") from None
        except OSError as exc:
            raise HalluguardError(f"{path}: cannot read ({exc.strerror})") from None
        sections = parse_sections(text, markdown=path.suffix.lower() == ".md", default_title=path.stem)
        n = 0
        for title, paragraphs in sections:
            for chunk in chunk_paragraphs(paragraphs, chunk_words, chunk_overlap):
                passages.append(Passage(id=f"{rel}#{n}", text=render(chunk), title=title, group=rel))
                n += 1
        if n == 0:
            log.warning("%s: no text, skipped", path)
    if not passages:
        raise HalluguardError(f"{folder}: all {len(files)} .txt/.md files are empty; the knowledge base has no text")
    return passages


def text_files(folder: Path) -> list[Path]:
    """The folder's .txt and .md files, recursively, sorted by relative path; hidden ones skipped."""
    if not folder.exists():
        raise HalluguardError(f"knowledge-base folder not found: {folder}")
    if not folder.is_dir():
        raise HalluguardError(f"{folder}: the textdir format needs a folder of .txt/.md files, not a file")
    files = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.suffix.lower() in SUFFIXES and path.is_file() and not any(p.startswith(".") for p in rel.parts):
            files.append(path)
    if not files:
        raise HalluguardError(f"{folder}: no .txt or .md files in this folder or below it")
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def parse_sections(text: str, *, markdown: bool, default_title: str) -> list[tuple[str, list[Paragraph]]]:
    """``[(title, paragraphs)]``: one section per Markdown heading, after a first untitled one."""
    sections: list[tuple[str, list[Paragraph]]] = [(default_title, [])]
    lines: list[str] = []
    fence = ""

    def flush() -> None:
        words = [("\n" + w.lstrip(_GLUE)) if i == 0 else w for line in lines for i, w in enumerate(_line_words(line))]
        if words:
            sections[-1][1].append(words)
        lines.clear()

    source = text.splitlines()
    start = 0
    if markdown and source and source[0].strip() == "---":  # YAML front matter
        end = next((i for i in range(1, len(source)) if source[i].strip() in ("---", "...")), None)
        start = 0 if end is None else end + 1
    for line in source[start:]:
        if markdown and fence:
            lines.append(line)
            if line.strip().startswith(fence):
                fence = ""
            continue
        if markdown and _FENCE.match(line):
            flush()
            fence = _FENCE.match(line).group(1)
            lines.append(line)
            continue
        if not line.strip():
            flush()
            continue
        if markdown:
            atx = _ATX.match(line)
            if atx:
                flush()
                sections.append(((atx.group(1) or "").strip() or sections[-1][0], []))
                continue
            setext = _SETEXT.match(line)
            if setext and len(lines) == 1:  # "Title" underlined with === or ---
                title = lines[0].strip().lstrip("#").strip()
                lines.clear()
                sections.append((title or sections[-1][0], []))
                continue
            if setext and setext.group(1).startswith("-") and not lines:  # a thematic break
                continue
        lines.append(line)
    flush()
    return [(title, paras) for title, paras in sections if paras]


def chunk_paragraphs(paragraphs: list[Paragraph], size: int, overlap: int) -> list[list[Paragraph]]:
    """Pack paragraphs into chunks of at most ``size`` words, the next starting with the last
    ``overlap`` words of the one before."""
    chunks: list[list[Paragraph]] = []
    current: list[Paragraph] = []
    length = 0  # words in current, overlap included
    new = 0  # words in current that no earlier chunk holds

    def close() -> None:
        nonlocal current, length, new
        chunks.append(current)
        current = _tail(current, overlap)
        length, new = sum(map(len, current)), 0

    for para in paragraphs:
        if new and length + len(para) > size and length >= size / 2:
            close()  # break at the paragraph boundary rather than mid-paragraph
        started = False  # whether current holds a list for this paragraph
        for piece in _pieces(para, size - overlap):
            if new and length + len(piece) > size:
                close()
                started = started and bool(current)  # the overlap then ends inside this paragraph
            if not started:
                current.append([])
                started = True
            current[-1].extend(piece)
            length += len(piece)
            new += len(piece)
    if new:
        chunks.append(current)
    return chunks


def _pieces(para: Paragraph, limit: int) -> list[list[str]]:
    """The paragraph's sentences, each cut into runs of at most ``limit`` words."""
    out: list[list[str]] = []
    sentence: list[str] = []
    for word in para:
        sentence.append(word)
        if _SENTENCE_END.search(word):
            out.append(sentence)
            sentence = []
    if sentence:
        out.append(sentence)
    return [s[i:i + limit] for s in out for i in range(0, len(s), limit)]


def _tail(chunk: list[Paragraph], n: int) -> list[Paragraph]:
    """The last ``n`` words of a chunk, keeping its paragraph breaks."""
    out: list[Paragraph] = []
    for para in reversed(chunk):
        if n <= 0:
            break
        take = para[-n:] if n < len(para) else para
        out.insert(0, list(take))
        n -= len(take)
    return out


def render(chunk: list[Paragraph]) -> str:
    return "\n\n".join(_render_paragraph(p) for p in chunk if p)


def _render_paragraph(words: Paragraph) -> str:
    return "".join(w if w.startswith("\n") else w[1:] if w.startswith(_GLUE) else " " + w for w in words).strip()
