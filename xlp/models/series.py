"""Resolve the spec's checkpoints to an ordered series, each with an integer pretraining step: from local
folders (globs, names, xlp's or a Trainer's metadata) or hub revisions named the way their publishers name them."""

from __future__ import annotations

import fnmatch
import glob
import itertools
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from xlp.errors import XlpError
from xlp.models.checkpoints import METADATA_FILE, Checkpoint

# the hub's and trainers' names: step1000 (Pythia), global_step1000 (BLOOM, DeepSpeed), step1000-tokens4B and
# stage1-step1000-tokens4B (OLMo, OLMo 2), step-1000 (SmolLM2), step_1000, step_20k (MultiBERTs),
# checkpoint-1000 (HF Trainer), iter_0001000 (Megatron), ckpt_000 (LLM360: an index, not a step)
STEP = re.compile(r"(?<![a-z])(?P<kind>step|checkpoint|ckpt|iter)[-_]?(?P<n>\d+)(?P<mult>k)?(?![a-z0-9])",
                  re.IGNORECASE)
TOKENS = re.compile(r"(?<![a-z])tokens?[-_]?(?P<n>\d+(?:\.\d+)?)(?P<unit>[kmbt])?(?![a-z0-9])", re.IGNORECASE)
TOKEN_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}

@dataclass(frozen=True)
class StepName:
    """What a checkpoint's name says: its step, the tokens seen where the name carries them, and
    whether the number only counts checkpoints (LLM360's ckpt_N) rather than optimizer steps."""
    step: int
    tokens: int | None = None
    is_index: bool = False


def parse_step_name(name: str) -> StepName | None:
    """Step (and tokens seen) from a hub revision or folder name; the last step-like part wins."""
    steps = list(STEP.finditer(name))
    if not steps:
        return None
    m = steps[-1]
    step = int(m.group("n")) * (1000 if m.group("mult") else 1)
    t = list(TOKENS.finditer(name))
    tokens = round(float(t[-1].group("n")) * TOKEN_UNITS[(t[-1].group("unit") or "").lower()]) if t else None
    return StepName(step, tokens, m.group("kind").lower() == "ckpt")


def step_name_of(directory: Path) -> StepName | None:
    """Step and tokens from the folder name (step_1000, step1000-tokens4B, checkpoint-1000, ...) or its
    metadata file (xlp's own, or a Trainer's trainer_state.json with its tokens seen when recorded)."""
    named = parse_step_name(directory.name)
    if named is not None and named.tokens is not None:
        return named
    for meta, key, tokens_key in ((METADATA_FILE, "step", "tokens"), ("trainer_state.json", "global_step",
                                                                       "num_input_tokens_seen")):
        f = directory / meta
        if f.is_file():
            try:
                data = json.loads(f.read_text())
                step, tokens = int(data[key]), data.get(tokens_key)
                # a Trainer writes num_input_tokens_seen = 0 unless it was asked to count: unknown, not 0
                found = StepName(step, int(tokens) if tokens is not None and (tokens or not step) else None)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                if named is not None:
                    return named  # the name gives the step; the metadata only could have added tokens
                raise XlpError(f"{f}: cannot read the step ({key}): {e}") from None
            if named is None:
                return found
            # the name's step wins; the metadata adds the tokens seen where it speaks of the same step
            return replace(named, tokens=found.tokens) if found.step == named.step else named
    return named


def step_of(directory: Path) -> int | None:
    """Step from the folder name or its metadata file."""
    named = step_name_of(directory)
    return None if named is None else named.step


def _is_model_dir(d: Path) -> bool:
    return (d / "config.json").is_file()


def resolve_checkpoints(specs: list, where: str = "checkpoints") -> list[Checkpoint]:
    """Expand globs, assign steps, sort by step; a repeated step is an error."""
    out: list[Checkpoint] = []
    for i, item in enumerate(specs):
        key = f"{where}[{i}]"
        if item.repo is not None and item.steps:  # one repository per checkpoint (MultiBERTs)
            for value in item.steps:
                repo = item.repo.replace("{step}", value)
                named = parse_step_name(repo.rsplit("/", 1)[-1])
                if item.step is None and named is None:
                    raise XlpError(f"{key}.steps: cannot derive a step from {repo!r}")
                out.append(_checkpoint(item.step, named, repo, "main"))
            continue
        if item.repo is not None:
            revisions = item.revisions
            if isinstance(revisions, str):
                revisions = hub_branches(item.repo, revisions, f"{key}.revisions")
            for rev in revisions:
                named = parse_step_name(rev)
                if item.step is None and named is None:
                    raise XlpError(f"{key}.revisions: cannot derive a step from revision {rev!r} (expected a name "
                                   f"such as step1000, global_step1000, step1000-tokens4B or checkpoint-1000, "
                                   f"or give `step:`)")
                out.append(_checkpoint(item.step, named, item.repo, rev))
            continue
        pattern = os.path.expanduser(item.path)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        dirs = [Path(p) for p in matches if Path(p).is_dir()]
        if not dirs:
            raise XlpError(f"{key}.path: no checkpoint directory matches {item.path!r}")
        if glob.has_magic(pattern):
            dirs = [d for d in dirs if _is_model_dir(d)]
            if not dirs:
                raise XlpError(f"{key}.path: no directory matching {item.path!r} holds a config.json")
        for d in dirs:
            if not _is_model_dir(d):
                raise XlpError(f"{key}.path: {d} is not a Hugging Face model directory (no config.json)")
            named = step_name_of(d)
            if item.step is None and named is None:
                if len(dirs) == 1 and len(specs) == 1:
                    named = StepName(0)
                else:
                    raise XlpError(f"{key}: cannot tell the step of {d}; name it step_<N> (or stepN, "
                                   f"global_stepN, stepN-tokensNB, checkpoint-N) or give `step:`")
            out.append(_checkpoint(item.step, named, str(d)))
    out.sort(key=lambda c: c.step)
    for a, b in itertools.pairwise(out):
        if a.step == b.step:
            raise XlpError(f"{where}: two checkpoints have step {a.step}: {a.name} and {b.name}")
    return out


def _checkpoint(step: int | None, named: StepName | None, location: str, revision: str | None = None) -> Checkpoint:
    """A spec's explicit `step:` wins over the name; the tokens seen still come from the name."""
    if step is not None:
        return Checkpoint(step, location, revision, tokens=named.tokens if named else None)
    return Checkpoint(named.step, location, revision, tokens=named.tokens, step_is_index=named.is_index)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_branches(repo: str, pattern: str, key: str) -> list[str]:
    """Branches of a hub repo matching `pattern` ('all': every branch with a step in its name), read
    from the hub, or from the local hub cache when HF_HUB_OFFLINE is set (Pythia/OLMo style series)."""
    from huggingface_hub import constants

    offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or constants.HF_HUB_OFFLINE
    if offline:
        cache = Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
        refs = cache / f"models--{repo.replace('/', '--')}" / "refs"
        names = [p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file()] if refs.is_dir() else []
        if not names:
            raise XlpError(f"{key}: HF_HUB_OFFLINE is set and the hub cache ({cache}) has no revisions of {repo}")
    else:
        from huggingface_hub import list_repo_refs

        try:
            names = [b.name for b in list_repo_refs(repo).branches]
        except Exception as e:  # noqa: BLE001 - network, auth or missing repo: all are the user's to fix
            raise XlpError(f"{key}: cannot list the branches of {repo}: {str(e).splitlines()[0]} "
                           f"(set HF_HUB_OFFLINE=1 to use the local cache)") from None
    chosen = sorted(n for n in names if (pattern == "all" or fnmatch.fnmatchcase(n, pattern))
                    and parse_step_name(n) is not None)
    if not chosen:
        raise XlpError(f"{key}: no branch of {repo} matches {pattern!r} and names a step "
                       f"(branches: {', '.join(sorted(names)[:10])})")
    return chosen


