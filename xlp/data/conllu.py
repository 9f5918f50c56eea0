"""Universal Dependencies: read CoNLL-U files and find a language's treebank splits."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from xlp.data.text import decode
from xlp.errors import XlpError
from xlp.hashing import DataFile


@dataclass
class Sentence:
    sent_id: str
    text: str
    forms: list[str] = field(default_factory=list)
    upos: list[str] = field(default_factory=list)
    feats: list[str] = field(default_factory=list)  # FEATS, e.g. Number=Sing|Person=3 ('_': none)
    heads: list[int] = field(default_factory=list)  # 0 = root, else 1-based word index
    deprels: list[str] = field(default_factory=list)


def _finish(sent: Sentence, path: Path, first_line: int, lines: list[int]) -> Sentence:
    """Check the tree: a word's own fault names its line, a fault of the whole sentence its first line."""
    n = len(sent.forms)
    for i, head in enumerate(sent.heads):
        if head > n:
            raise XlpError(f"{path}:{lines[i]}: HEAD {head} of word {i + 1} is out of range: sentence "
                           f"{sent.sent_id!r} has {n} words")
        if head == i + 1:
            raise XlpError(f"{path}:{lines[i]}: word {i + 1} of sentence {sent.sent_id!r} is its own HEAD")
    if n and 0 not in sent.heads:
        raise XlpError(f"{path}:{first_line}: sentence {sent.sent_id!r} has no root (no word with HEAD 0)")
    state = [2] + [0] * n  # 0 unseen, 1 on the walk from word i, 2 known to reach the root
    for i in range(1, n + 1):
        walk, j = [], i
        while state[j] == 0:
            state[j] = 1
            walk.append(j)
            j = sent.heads[j - 1]
        if state[j] == 1:
            raise XlpError(f"{path}:{first_line}: sentence {sent.sent_id!r}: the HEADs of words "
                           f"{walk[walk.index(j):]} form a cycle")
        for k in walk:
            state[k] = 2
    if not sent.text:
        sent.text = " ".join(sent.forms)
    return sent


def _blocks(text: str):
    """(first line number, lines) of each blank-line-separated sentence block."""
    block: list[str] = []
    start = 0
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines(): forms may hold U+2028
        line = line.rstrip("\r")
        if line.strip():
            if not block:
                start = lineno
            block.append(line)
        elif block:
            yield start, block
            block = []
    if block:
        yield start, block


def _parse(lines: list[str], path: Path, start: int, default_id: str) -> Sentence | None:
    sent = Sentence(sent_id=default_id, text="")
    word_lines: list[int] = []
    for lineno, line in enumerate(lines, start=start):
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.strip() == "sent_id":
                sent.sent_id = value.strip()
            elif key.strip() == "text":
                sent.text = value.strip()
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise XlpError(f"{path}:{lineno}: expected 10 tab-separated columns, found {len(cols)}")
        wid = cols[0]
        if "-" in wid or "." in wid:
            continue
        if not wid.isdigit():
            raise XlpError(f"{path}:{lineno}: word ID {wid!r} is not an integer, a range (3-4) or an empty node (8.1)")
        if int(wid) != len(sent.forms) + 1:
            raise XlpError(f"{path}:{lineno}: word ID {wid} out of sequence (expected {len(sent.forms) + 1})")
        if not cols[6].isdigit():
            raise XlpError(f"{path}:{lineno}: HEAD {cols[6]!r} is not an integer")
        sent.forms.append(cols[1])
        sent.upos.append(cols[3])
        sent.feats.append(cols[5])
        sent.heads.append(int(cols[6]))
        sent.deprels.append(cols[7])
        word_lines.append(lineno)
    return _finish(sent, path, start, word_lines) if sent.forms else None


def read_conllu(path: str | Path, max_sentences: int | None = None, lenient: bool = False,
                skipped: list[str] | None = None) -> list[Sentence]:
    """Sentences of syntactic words; multiword ranges (3-4) and empty nodes (8.1) are skipped.

    Strict (default): malformed input raises XlpError naming the file and line. Lenient: a malformed
    sentence is skipped (its message appended to `skipped` when given).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise XlpError(f"cannot read {path}: {e.strerror}") from None
    text = decode(raw, path)  # a byte-order mark is no text; UTF-16 is refused by file and line
    sentences: list[Sentence] = []
    for start, lines in _blocks(text):
        if max_sentences is not None and len(sentences) >= max_sentences:
            break
        try:
            sent = _parse(lines, path, start, f"{path.stem}-{len(sentences) + 1}")
        except XlpError as e:
            if not lenient:
                raise
            if skipped is not None:
                skipped.append(str(e))
            continue
        if sent is not None:
            sentences.append(sent)
    return sentences


def in_train_part(sent_id: str, share: float) -> bool:
    """Whether a sentence falls in the train part when a test-only split is cut in two (data.split_test): a
    stable hash of its id below `share`, so the parts keep about that share, do not depend on the order of
    the file, and never change between runs."""
    return int(hashlib.sha256(sent_id.encode()).hexdigest()[:12], 16) / 16 ** 12 < share


Files = str | Path | DataFile | tuple[str | Path | DataFile, ...]  # one split: its file, or its parts


def split_paths(files: Files) -> list[Path]:
    """The paths of a split: its one file, or its parts in file-name order (a DataFile or a path each)."""
    return [Path(getattr(f, "path", f)) for f in (files if isinstance(files, (tuple, list)) else (files,))]


def split_name(files: Files) -> str:
    """A split as messages name it: its file, or its parts' files."""
    return ", ".join(map(str, split_paths(files)))


def read_part(files: Files, max_sentences: int | None, lenient: bool, part: tuple[str, float] | None,
              skipped: list[str] | None = None) -> list[Sentence]:
    """The sentences of one split, its file or its parts one after another (the cap counts across them);
    with `part` = (side, share) the first `max_sentences` of that side ("train" or "test") of the split cut
    in two by `in_train_part`."""
    cap = None if part is not None else max_sentences
    sentences: list[Sentence] = []
    for path in split_paths(files):
        if cap is not None and len(sentences) >= cap:
            break
        sentences += read_conllu(path, None if cap is None else cap - len(sentences), lenient=lenient,
                                 skipped=skipped)
    if part is None:
        return sentences
    side, share = part
    return [s for s in sentences if in_train_part(s.sent_id, share) == (side == "train")][:max_sentences]


def require_sentences(path: str | Path, sentences: list[Sentence], skipped: int = 0) -> None:
    """Pre-flight: a file that gives no sentence (so no word) is refused by name, before any unit runs
    into it deep inside a run."""
    if not sentences:
        why = (f"all {skipped} of its sentences are malformed (data.conllu: lenient)" if skipped
               else "it holds no sentence with a word line")
        raise XlpError(f"{path}: no sentence to read: {why}")


def require_text(treebank: str, files: Files, sentences: list[Sentence]) -> None:
    """Pre-flight: a treebank published without its text (every FORM `_`, as UD_English-GUMReddit,
    UD_Japanese-BCCWJ, UD_Arabic-NYUAD or UD_French-FTB are) is refused rather than probed on underscores."""
    if sentences and all(form == "_" for s in sentences for form in s.forms):
        raise XlpError(f"{split_name(files)}: {treebank} is published without its text (every FORM is `_`): "
                       f"restore it with the treebank's own script (its README says how), then point "
                       f"data.ud_root at the restored files")


@dataclass(frozen=True)
class Treebank:
    lang: str
    folder: Path
    splits: dict[str, Path | tuple[Path, ...]]  # split name -> its file, or its parts in file-name order

    @property
    def name(self) -> str:
        return self.folder.name

    def split_file(self, split: str, fallback: str | None = None) -> tuple[str, Path | tuple[Path, ...]] | None:
        """(split actually used, its file or parts), falling back when the requested split is missing."""
        if split in self.splits:
            return split, self.splits[split]
        if fallback and fallback in self.splits:
            return fallback, self.splits[fallback]
        return None


def conllu_files(root: str | Path, pattern: str) -> list[Path]:
    """Files under `root` whose name matches `pattern`, at any depth, sorted.

    Unlike pathlib's `**`, directory symlinks are followed (users link treebanks into one folder);
    each real folder is read once, so a link cycle or a second link to a folder adds nothing.
    """
    seen: set[str] = set()
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        dirs.sort()  # the first path to a folder reached twice is the one kept, whatever the file system
        found += [Path(folder) / f for f in files if fnmatch.fnmatchcase(f, pattern)]
    return sorted(found)


def find_treebank(ud_root: str | Path, lang: str, treebank: str | None = None) -> Treebank:
    """The treebank of `lang` under `ud_root` (official layout `<code>_<tb>-ud-<split>.conllu`).

    With several treebanks for a language and none named, the one with a train or dev split is
    taken (the main treebank rather than a test-only PUD); a remaining tie is an error.
    """
    root = Path(ud_root)
    if not root.is_dir():
        raise XlpError(f"data.ud_root: {root} is not a folder")
    folders = {tb.folder: tb.splits for tb in treebanks(root, lang)}
    if treebank:
        folders = {d: s for d, s in folders.items() if d.name == treebank}
        if not folders:
            raise XlpError(f"data.treebanks.{lang}: no treebank folder {treebank!r} with {lang}_*-ud-*.conllu "
                           f"under {root}")
    if not folders:
        raise XlpError(f"data.languages: no CoNLL-U files for {lang!r} under {root} "
                       f"(looked for {lang}_<treebank>-ud-<split>.conllu)")
    if len(folders) > 1:
        mains = {d: s for d, s in folders.items() if "train" in s or "dev" in s}
        if len(mains) != 1:
            names = ", ".join(d.name for d in folders)
            raise XlpError(f"data.treebanks: {lang!r} has several treebanks ({names}); "
                           f"choose one, e.g. treebanks: {{{lang}: {next(iter(folders)).name}}}")
        folders = mains
    folder, splits = next(iter(folders.items()))
    return Treebank(lang=lang, folder=folder, splits=splits)


def treebanks(ud_root: str | Path, lang: str) -> list[Treebank]:
    """Every treebank of `lang` under `ud_root`, in folder order, each with its splits (a split published in
    parts also under its own name, see `_with_parts`)."""
    named: dict[Path, dict[str, Path]] = {}
    for f in conllu_files(ud_root, f"{lang}_*-ud-*.conllu"):
        split = f.name.rsplit("-ud-", 1)[1].removesuffix(".conllu")
        named.setdefault(f.parent, {})[split] = f
    return [Treebank(lang=lang, folder=d, splits=_with_parts(s)) for d, s in named.items()]


def _with_parts(splits: dict[str, Path]) -> dict[str, Path | tuple[Path, ...]]:
    """Each file under its split's name, and a split that a large treebank publishes in parts
    (cs_pdt-ud-train-c.conllu, -ca, ...; de_hdt-ud-train-a-1.conllu ... -b-2) also as the tuple of its parts
    in file-name order, under the split's own name (`train`), unless a whole file has that name."""
    parts: dict[str, list[Path]] = {}
    for name, f in splits.items():
        if "-" in name:
            parts.setdefault(name.split("-", 1)[0], []).append(f)
    return {**{base: tuple(sorted(fs, key=lambda f: f.name)) for base, fs in parts.items()}, **splits}
