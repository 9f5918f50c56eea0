"""The published layouts xlp reads through `datasets` (xlp/data/hub.py), and how xlp's language codes name
their configs. A spec's `<task>.dataset.configs` overrides any entry; a language whose code is itself a
config of the dataset needs none.

- XNLI (`facebook/xnli`): a config per language (`all_languages` is ignored), splits train, validation, test;
  columns premise, hypothesis, label (0 entailment, 1 neutral, 2 contradiction). xlp trains on validation and
  tests on test, as it trains on the dev TSV and tests on the test TSV of XNLI-1.0.
- FLORES+ (`openlanguagedata/flores_plus`, gated): a config per language and script (`eng_Latn`), splits dev
  and devtest, one sentence a row in `text`. bpc reads devtest.
- Tatoeba as XTREME uses it (LASER's English-aligned test sets, 1,000 pairs for most languages;
  `mteb/tatoeba-bitext-mining`): a config per language paired with English (`deu-eng`), split test, columns
  sentence1 (the language's sentence) and sentence2 (its English translation)."""

from __future__ import annotations

XNLI_LABELS = ("entailment", "neutral", "contradiction")  # facebook/xnli's label ids, XNLI-1.0's gold_label

# the 94 languages of XLM-R's CC-100 without its romanised and Zawgyi sets; zh_Hant: Traditional Chinese
FLORES_PLUS = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "as": "asm_Beng", "az": "azj_Latn", "be": "bel_Cyrl",
    "bg": "bul_Cyrl", "bn": "ben_Beng", "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn", "cy": "cym_Latn",
    "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "eo": "epo_Latn", "es": "spa_Latn",
    "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn",
    "gd": "gla_Latn", "gl": "glg_Latn", "gu": "guj_Gujr", "ha": "hau_Latn", "he": "heb_Hebr", "hi": "hin_Deva",
    "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn", "is": "isl_Latn", "it": "ita_Latn",
    "ja": "jpn_Jpan", "jv": "jav_Latn", "ka": "kat_Geor", "kk": "kaz_Cyrl", "km": "khm_Khmr", "kn": "kan_Knda",
    "ko": "kor_Hang", "ku": "kmr_Latn", "ky": "kir_Cyrl", "lo": "lao_Laoo", "lt": "lit_Latn", "lv": "lvs_Latn",
    "mg": "plt_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl", "mr": "mar_Deva", "ms": "zsm_Latn",
    "my": "mya_Mymr", "ne": "npi_Deva", "nl": "nld_Latn", "no": "nob_Latn", "om": "gaz_Latn", "or": "ory_Orya",
    "pa": "pan_Guru", "pl": "pol_Latn", "ps": "pbt_Arab", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl",
    "sa": "san_Deva", "sd": "snd_Arab", "si": "sin_Sinh", "sk": "slk_Latn", "sl": "slv_Latn", "so": "som_Latn",
    "sq": "als_Latn", "sr": "srp_Cyrl", "su": "sun_Latn", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml",
    "te": "tel_Telu", "th": "tha_Thai", "tl": "tgl_Latn", "tr": "tur_Latn", "ug": "uig_Arab", "uk": "ukr_Cyrl",
    "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn", "xh": "xho_Latn", "yi": "ydd_Hebr", "zh": "zho_Hans",
    "zh_Hant": "zho_Hant",
}  # br, fy and la (Breton, Frisian, Latin) of the 94 are not in FLORES-200: name a config or use bpc.text

TATOEBA_PIVOT = "en"
# XTREME's 36 Tatoeba languages, LASER's codes
TATOEBA = {lang: f"{code}-eng" for lang, code in {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa", "et": "est",
    "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind",
    "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar",
    "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh", "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl",
    "tr": "tur", "ur": "urd", "vi": "vie", "zh": "cmn"}.items()}
