"""Official Universal Dependencies releases: fetched once into the cache, unpacked per language.

`ud://2.16` in a spec's `data.ud_root` means "release 2.16 from the cache, fetched if missing".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from rich.console import Console

from xlp.data.download import download
from xlp.errors import XlpError
from xlp.paths import cache_dir

# The releases' published archives (LINDAT handle per version) and their SHA-256 digests.
RELEASE_URL = "https://lindat.mff.cuni.cz/repository/xmlui/bitstream/handle/11234/{handle}/ud-treebanks-v{version}.tgz"
RELEASES = {
    "2.10": ("1-4758", "f6deca6ab803abdfa8dca911600f6bc5f214267e348acbd59fd4c4b88db14ea6"),
    "2.11": ("1-4923", "d75f7df726761836f797fe6c001c7a1ecce93d93129414ef57cf2262d15707e8"),
    "2.12": ("1-5150", "24f876d5ad9dbdc639a33a73f02d12ddfe582e8d4e7f5d08978c8a86680d088c"),
    "2.13": ("1-5287", "d6538ed4c05508be3bb7d9c3448de1062f6f9958c833b93558df300e4b1d3781"),
    "2.14": ("1-5502", "a710e09f977fc1ca4aeaf200806a75fbbc46d2c0717c70933a94ad78129ee1af"),
    "2.15": ("1-5787", "24ddd9a7e6a291f3882c13febb4d97accfbc6f51633a867963c19e6004d7df97"),
    "2.16": ("1-5901", "87710204b6441736a8a9fed779585aa88b6eeafe231fa2ed9282c0cd9e30960b"),
}
LATEST = "2.16"
SCHEME = "ud://"
INDEX = "xlp-index.json"  # which languages are unpacked ("*" = all)


def release_source(version: str, url: str | None = None, sha256: str | None = None) -> tuple[str, str | None]:
    """The archive URL and its known digest; `XLP_UD_URL` (with `{version}`) overrides the URL."""
    template = url or os.environ.get("XLP_UD_URL")
    if template:
        return template.format(version=version), sha256
    if version not in RELEASES:
        raise XlpError(f"UD release {version!r} is not known to xlp (known: {', '.join(RELEASES)}); "
                       f"give its archive with --url (or XLP_UD_URL)")
    handle, known = RELEASES[version]
    return RELEASE_URL.format(handle=handle, version=version), sha256 or known


def _index(root: Path) -> set[str]:
    f = root / INDEX
    return set(json.loads(f.read_text())) if f.is_file() else set()


def _treebank_languages(tar: tarfile.TarFile) -> dict[str, set[str]]:
    """Treebank folder -> language codes, from its `<code>_<tb>-ud-<split>.conllu` file names."""
    langs: dict[str, set[str]] = {}
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if len(parts) >= 2 and m.isfile() and parts[-1].endswith(".conllu") and "-ud-" in parts[-1]:
            langs.setdefault(parts[-2], set()).add(parts[-1].split("_", 1)[0])
    return langs


def unpack(archive: Path, root: Path, languages: list[str] | None) -> None:
    """Unpack the treebank folders of `languages` (all if None) into root, each folder atomically."""
    remove_partial(root)
    with tarfile.open(archive) as tar:
        by_tb = _treebank_languages(tar)
        if not by_tb:
            raise XlpError(f"{archive}: no UD treebank folders (<folder>/<code>_<tb>-ud-<split>.conllu) inside")
        wanted = {tb for tb, codes in by_tb.items() if languages is None or codes & set(languages)}
        missing = sorted(set(languages or []) - {c for tb in wanted for c in by_tb[tb]})
        if missing:
            raise XlpError(f"{archive}: no treebank for language(s) {', '.join(missing)} in this UD release")
        todo = {tb for tb in wanted if not (root / tb).is_dir()}
        members = []
        for m in tar.getmembers():
            parts = Path(m.name).parts
            tb_at = next((i for i, p in enumerate(parts) if p in todo), None)
            if tb_at is not None and (m.isfile() or m.isdir()):
                members.append(m.replace(name="/".join(parts[tb_at:]), deep=False))
        with tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as tmp:
            tar.extractall(tmp, members=members, filter="data")
            for tb in sorted(todo):
                os.replace(Path(tmp) / tb, root / tb)


def fetch_ud(version: str = LATEST, languages: list[str] | None = None, dest: Path | None = None,
             url: str | None = None, sha256: str | None = None, *, console: Console | None = None,
             quiet: bool = False) -> Path:
    """The folder holding UD `version`'s treebanks for `languages` (all if None): a second call
    with the same or fewer languages touches nothing; the archive is kept for later languages."""
    if not re.fullmatch(r"\d+\.\d+", version):
        raise XlpError(f"UD version {version!r} should look like 2.16")
    root = Path(dest) if dest else cache_dir() / "ud" / version
    done = _index(root)
    if "*" in done or (languages is not None and set(languages) <= done):
        return root
    root.mkdir(parents=True, exist_ok=True)
    src, digest = release_source(version, url, sha256)
    archive = download(src, root / f"ud-treebanks-v{version}.tgz", digest, console=console, quiet=quiet)
    try:
        unpack(archive, root, languages)
    except tarfile.TarError as e:
        raise XlpError(f"{archive}: not a readable .tgz ({e}); delete it and fetch again") from None
    new = done | ({"*"} if languages is None else set(languages))
    tmp = root / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(sorted(new)))
    tmp.replace(root / INDEX)
    return root


def resolve_ud_root(ud_root: str | list[str], languages: list[str] | None, *, console: Console | None = None,
                    quiet: bool = False) -> Path:
    """A local folder for `data.ud_root`: a path, `ud://VERSION`, or a list of these, first usable wins."""
    choices = [ud_root] if isinstance(ud_root, str) else list(ud_root)
    for choice in choices:
        if choice.startswith(SCHEME):
            return fetch_ud(choice.removeprefix(SCHEME) or LATEST, languages, console=console, quiet=quiet)
        if Path(choice).is_dir():
            return Path(choice)
    raise XlpError(f"data.ud_root: none of {choices} is a folder (or a ud://VERSION release to fetch)")


def remove_partial(root: Path) -> None:
    """Drop leftovers of an interrupted unpack (never complete treebank folders)."""
    for tmp in root.glob(".unpack-*"):
        shutil.rmtree(tmp, ignore_errors=True)
