"""The script each language is written in (its usual one), so findings can compare transfer between languages that
share a script with transfer across scripts. A language not listed has no script here and is left out of such
comparisons, as the finding says."""

from __future__ import annotations

_BY_SCRIPT = {
    "Latin": "af ca cs cy da de en es et eu fi fr ga gl hr hu id it la lt lv mt nl no pl pt ro sk sl sq sv sw tl tr "
             "vi wo yo",
    "Cyrillic": "be bg kk mk ru uk",
    "Greek": "el grc",
    "Arabic": "ar fa ug ur",
    "Hebrew": "he",
    "Devanagari": "hi mr ne sa",
    "Bengali": "bn",
    "Tamil": "ta",
    "Telugu": "te",
    "Han": "zh lzh",
    "Hangul": "ko",
    "Japanese": "ja",
    "Thai": "th",
    "Armenian": "hy",
    "Georgian": "ka",
}
SCRIPTS = {lang: script for script, langs in _BY_SCRIPT.items() for lang in langs.split()}


def script_of(lang: str) -> str | None:
    """The script `lang` (an ISO 639 code) is usually written in, or None where it is not known here."""
    return SCRIPTS.get(lang)
