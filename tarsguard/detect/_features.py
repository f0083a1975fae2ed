"""Features of an answer: cue-phrase hits by group and position, shape, and word n-grams of its opening.
Shared by the default detector and by the script that builds its weights."""

from __future__ import annotations

import bisect
import itertools
import math
import re
import string
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = [
    "LEAD_UNITS",
    "OPEN_TOKENS",
    "OPEN_UNITS",
    "Analysis",
    "Hit",
    "analyze",
    "features",
    "hand_features",
    "has_cjk",
    "ngrams",
    "normalize",
    "plan_features",
    "reasoning_cues",
    "reasoning_features",
    "tokenize",
]


_PUNCT = string.punctuation + (
    "\u201c\u201d\u201e\u00ab\u00bb\u2039\u203a\u300c\u300d\u300e\u300f\u3010\u3011\uff08\uff09\u3001\u3002"
    "\uff0c\uff01\uff1f\uff1a\uff1b\u2026\u2014\u2013\u00b7\u2022\u300a\u300b\u3008\u3009\u00bf\u00a1\u30fb"
)
_TO_SPACE = str.maketrans(dict.fromkeys(_PUNCT, " "))
_APOSTROPHE_CHARS = ("\u2019", "\u2018", "\u02bc", "\uff07")


class _Regexes(NamedTuple):
    masks: tuple[tuple[str, re.Pattern[str]], ...]
    single_quoted: re.Pattern[str]
    cjk: re.Pattern[str]
    list_line: re.Pattern[str]
    sentence_break: re.Pattern[str]
    punct: re.Pattern[str]


@lru_cache(maxsize=1)
def _regexes() -> _Regexes:
    """The patterns, compiled on first use (compiling them costs milliseconds that an import should not)."""
    return _Regexes(
        # Quoted or code spans: what they say is not the speaker's own decision. Each pattern runs only where
        # its opening character occurs; code first, so that quotes inside code go with it.
        masks=(
            ("```", re.compile(r"```.*?(?:```|\Z)", re.DOTALL)),
            ("`", re.compile(r"`[^`\n]{1,300}`")),
            ('"', re.compile(r'"[^"\n]{1,300}"')),
            ("\u201c", re.compile(r"\u201c[^\u201d\n]{1,300}\u201d")),
            ("\u201e", re.compile(r"\u201e[^\u201c\u201d\n]{1,300}[\u201c\u201d]")),
            ("\u00ab", re.compile(r"\u00ab[^\u00bb\n]{1,300}\u00bb")),
            ("\u300c", re.compile(r"\u300c[^\u300d\n]{1,200}\u300d")),
            ("\u300e", re.compile(r"\u300e[^\u300f\n]{1,200}\u300f")),
        ),
        single_quoted=re.compile(r"(?<![\w'])'[^\n]{1,200}?'(?![\w'])"),
        # Chinese and Japanese scripts: matched as substrings, positions counted in characters.
        cjk=re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]"),
        list_line=re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s", re.MULTILINE),
        sentence_break=re.compile(r"(?<=[.!?;:])\s+|[\u3002\uff01\uff1f\uff1b]+|\n+"),
        punct=re.compile("[" + re.escape(_PUNCT) + "]"),
    )


def has_cjk(text: str) -> bool:
    """Whether ``text`` has Chinese or Japanese characters."""
    return not text.isascii() and _regexes().cjk.search(text) is not None


LEAD_UNITS = 12
"""Cues starting within this many words (or two characters per unit in Chinese and Japanese) lead."""
OPEN_UNITS = 40
"""Cues starting within this many units are in the opening."""
TAIL_UNITS = 25
OPEN_TOKENS = 40
"""Words of the opening whose n-grams are features."""

_CJK_TAIL_CHARS = 2000
_TAIL_TOKENS = 1000
MAX_HITS = 256
"""Cue hits read per answer at most: the first and the last half of them (bounds the time a looping answer costs)."""
_REFUSAL_GROUPS = ("REFUSE", "INABILITY", "WONT")
_LEN_BOUNDS = (8, 20, 50, 120, 300)
# Groups that hedge, warn, moralise or redirect; many of them per word means little content (an offer of
# other help is not one of them: it may come with the help).
_HEDGE_GROUPS = frozenset(
    {"DISAPPROVE", "NORMATIVE", "CAVEAT", "REDIRECT", "POLICY", "AI_SELF", "CLARIFY", "NO_INFO", "PREMISE"}
)
_IMPLICIT_GROUPS = ("DISAPPROVE", "PREMISE", "NORMATIVE", "NO_INFO", "AI_SELF", "REDIRECT", "CAVEAT")
_DENSITY_BOUNDS = (1, 3, 5, 8)
_LECTURE_GROUPS = frozenset({"MORAL", "CAVEAT", "NORMATIVE", "DISAPPROVE", "PREMISE", "REDIRECT", "POLICY"})
_LECTURE_BOUNDS = (20, 40, 60, 80)
_AFTER_BOUNDS = (10, 40, 120)


class Hit(NamedTuple):
    """A cue phrase found in the text: its group, where it starts and ends (in units), and its words."""

    group: str
    start: int
    end: int
    phrase: str


class Analysis(NamedTuple):
    """What the detector reads from an answer."""

    tokens: list[str]
    """Lower-cased words of the answer (see :func:`tokenize`), quoted and code spans left out."""
    hits: list[Hit]
    units: int
    """Length in words (Chinese and Japanese characters count half a word each)."""
    shape: tuple[str, ...]
    """Shape features: length bucket, lists, code, a closing question."""
    sentences: tuple[int, ...]
    """Where each sentence (or line) starts, in units."""


class _Lexicon:
    """Cue phrases compiled into a word trie and a substring list."""

    def __init__(self, groups: dict[str, dict[str, tuple[str, ...]]]) -> None:
        self.trie: dict[str, Any] = {}
        cjk: dict[str, str] = {}
        for group, by_language in groups.items():
            for entries in by_language.values():
                for entry in entries:
                    for phrase in _expand(entry):
                        words = tokenize(phrase)
                        if not words:
                            continue
                        if has_cjk(phrase):
                            cjk.setdefault("".join(words), group)
                        else:
                            self._add(words, group)
        self.cjk = cjk
        self.cjk_pattern = _trie_pattern(cjk)

    def _add(self, words: list[str], group: str) -> None:
        node = self.trie
        for word in words:
            node = node.setdefault(word, {})
        node.setdefault("", group)

    def find(self, tokens: list[str], limit: int | None = None) -> list[Hit]:
        """Longest matches, left to right, not overlapping. With ``limit``, at most the first ``limit // 2``
        matches and the last ``limit // 2`` of the closing words."""
        hits: list[Hit] = []
        root = self.trie
        n = len(tokens)
        free = 0
        head = limit // 2 if limit is not None else n + 1
        # Only the words that start some phrase are visited (found by C-level map and compress).
        for i in itertools.compress(range(n), map(root.get, tokens)):
            if i < free:
                continue
            if len(hits) == head:
                free = max(free, n - _TAIL_TOKENS)
                if i < free:
                    continue
            node: Any = root[tokens[i]]
            best = node.get("")
            best_end = i + 1
            j = i + 1
            while j < n:
                node = node.get(tokens[j])
                if node is None:
                    break
                j += 1
                group = node.get("")
                if group is not None:
                    best, best_end = group, j
            if best is not None:
                hits.append(Hit(best, i, best_end, " ".join(tokens[i:best_end])))
                free = best_end
        if limit is not None and len(hits) > limit:
            hits = hits[:head] + hits[-(limit - head) :]
        return hits

    def find_cjk(self, text: str, limit: int | None = None) -> list[Hit]:
        """Substring matches of the Chinese and Japanese phrases, not overlapping; a longer phrase wins an overlap.

        One regular-expression pass finds the longest phrase at each position; with ``limit``, only the first
        ``limit`` of those and the last ``limit`` of the text's closing part are kept."""
        found = self.cjk_pattern.finditer(text)
        if limit is None:
            candidates = [(m.start(), m.group(1)) for m in found]
        else:
            candidates = [(m.start(), m.group(1)) for m in itertools.islice(found, limit)]
            if len(candidates) == limit:
                tail_from = max(candidates[-1][0] + 1, len(text) - _CJK_TAIL_CHARS)
                tail = [(m.start(), m.group(1)) for m in self.cjk_pattern.finditer(text, tail_from)]
                candidates += tail[-limit:]
        taken = bytearray(len(text))
        hits: list[Hit] = []
        for at, phrase in sorted(candidates, key=lambda c: -len(c[1])):  # stable: the leftmost of equal lengths
            end = at + len(phrase)
            if not any(taken[at:end]):
                taken[at:end] = b"\x01" * (end - at)
                hits.append(Hit(self.cjk[phrase], at // 2, (end + 1) // 2, phrase))
        hits.sort(key=lambda h: h.start)
        return hits


def _trie_pattern(phrases: Iterable[str]) -> re.Pattern[str]:
    """A regular expression whose group 1 is the longest of ``phrases`` starting at each position (a look-ahead, so
    matches may overlap), built from their character trie: matching costs the trie's depth per position, not the
    number of phrases."""
    trie: dict[str, Any] = {}
    for phrase in phrases:
        node = trie
        for char in phrase:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return re.compile(f"(?=({build(trie) or '(?!)'}))")


def _expand(entry: str) -> Iterator[str]:
    parts = re.split(r"\(([^()]*)\)", entry)
    options = [[p] if k % 2 == 0 else p.split("|") for k, p in enumerate(parts)]
    for combo in itertools.product(*options):
        yield "".join(combo)


def tokenize(text: str) -> list[str]:
    """Lower-cased words, punctuation (apostrophes included) taken as space: "can't" is "can", "t"."""
    return _to_space(text.lower()).split()


def normalize(text: str) -> str:
    """The answer with typographic apostrophes made plain."""
    if text.isascii():
        return text
    for apostrophe in _APOSTROPHE_CHARS:
        if apostrophe in text:
            text = text.replace(apostrophe, "'")
    return text


def _to_space(text: str) -> str:
    """``text`` with punctuation turned into spaces (one C-level pass; ``str.translate`` is slow off ASCII)."""
    return text.translate(_TO_SPACE) if text.isascii() else _regexes().punct.sub(" ", text)


@lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    from ._lexicon import GROUPS  # built on first use: importing this module stays cheap

    return _Lexicon(GROUPS)


@lru_cache(maxsize=1)
def _reasoning_lexicon() -> _Lexicon:
    from ._lexicon import REASONING_GROUPS

    return _Lexicon(REASONING_GROUPS)


def _unquote(match: re.Match[str]) -> str:
    # Scare quotes around a word or two ("kill", 'right') stay: only quoted sentences and code are masked.
    span = match.group(0)
    return " " if span.count(" ") >= 2 or span.startswith("`") else span


def _mask(lowered: str) -> str:
    masked = lowered
    regexes = _regexes()
    for opening, pattern in regexes.masks:
        if opening in masked:
            masked = pattern.sub(_unquote, masked)
    if " '" in masked or "\n'" in masked or masked.startswith("'"):
        masked = regexes.single_quoted.sub(_unquote, masked)
    # A fully quoted answer is still the answer.
    return masked if masked is lowered or masked.strip() else lowered


def _bucket(value: int, bounds: tuple[int, ...]) -> int:
    for k, bound in enumerate(bounds):
        if value < bound:
            return k
    return len(bounds)


def analyze(answer: str) -> Analysis:
    """Read cue hits, words and shape from ``answer`` (already normalized with :func:`normalize`)."""
    lowered = _mask(answer.lower())
    regexes = _regexes()
    tokens: list[str] = []
    starts: list[int] = []
    chunks = regexes.sentence_break.split(lowered)
    for chunk in chunks:
        words = _to_space(chunk).split()
        if words:
            starts.append(len(tokens))
            tokens += words
    lexicon = _lexicon()
    hits = lexicon.find(tokens, MAX_HITS)
    units = len(tokens)
    if has_cjk(lowered):
        cjk_hits = lexicon.find_cjk(lowered, MAX_HITS)
        if cjk_hits:
            hits += cjk_hits
            hits.sort(key=lambda h: h.start)
        units = max(units, len(lowered) // 2)
        starts = [at // 2 for at in itertools.accumulate([0] + [len(c) for c in chunks[:-1]]) if at < len(lowered)]
    if len(hits) > MAX_HITS:
        # A model stuck repeating a phrase: its opening and its end say what it did; the middle only repeats.
        hits = hits[: MAX_HITS // 2] + hits[-MAX_HITS // 2 :]
    shape = [f"len:{_bucket(units, _LEN_BOUNDS)}"]
    if "\n" in answer:
        if len(regexes.list_line.findall(answer)) >= 2:
            shape.append("list")
        if "```" in answer:
            shape.append("code")
    if answer.rstrip().endswith(("?", "\uff1f")):
        shape.append("endq")
    return Analysis(tokens, hits, units, tuple(shape), tuple(starts))


def hand_features(analysis: Analysis) -> list[str]:
    """The cue and shape feature names of an analysed answer."""
    names = list(analysis.shape)
    hits = analysis.hits
    if all(hit.group == "MORAL" for hit in hits):
        names.append("nocue")
    units = analysis.units
    seen: dict[str, int] = {}
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    hedges = 0
    for hit in hits:
        group = hit.group
        if group == "MORAL":  # read only through the share of sentences that lecture
            continue
        seen.setdefault(group, hit.start)
        last[group] = hit.start
        count[group] = count.get(group, 0) + 1
        if group in _HEDGE_GROUPS:
            hedges += 1
    names.append(f"dens:{_bucket(100 * hedges // max(units, 1), _DENSITY_BOUNDS)}")
    marked = _lecturing(analysis)
    if marked:
        share = 100 * sum(marked) // len(marked)
        names += [f"lect:{_bucket(share, _LECTURE_BOUNDS)}", f"lect3:{sum(marked[:3])}"]
    for group, start in seen.items():
        names.append(f"{group}@any")
        if count[group] >= 2:
            names.append(f"{group}#2")
            if count[group] >= 4:
                names.append(f"{group}#4")
        if start < OPEN_UNITS:
            names.append(f"{group}@open")
            if start < LEAD_UNITS:
                names.append(f"{group}@lead")
        if units - last[group] <= TAIL_UNITS and units > OPEN_UNITS:
            names.append(f"{group}@tail")
    if not any(group in seen for group in _REFUSAL_GROUPS):
        # No stated refusal: a verdict on the request, a rejected premise or a lecture in the opening is how
        # some models decline.
        names.extend(f"implicit*{group}" for group in _IMPLICIT_GROUPS if seen.get(group, OPEN_UNITS) < OPEN_UNITS)
    refusal_open = [h for h in hits if h.group in _REFUSAL_GROUPS and h.start < OPEN_UNITS]
    if refusal_open:
        end = max(h.end for h in hits if h.group in _REFUSAL_GROUPS)
        rest = units - end
        after = _bucket(rest, _AFTER_BOUNDS)
        if "list" in analysis.shape:
            names.append("refusal*list")
        if any(h.group == "ALTERNATIVE" and h.start >= refusal_open[0].start for h in hits):
            names.append(f"refusal*alt:{min(after, 2)}")
        # A willing start or a reinterpretation after the refusal: help with something else follows.
        if any(h.group == "COMPLY" and h.start >= end for h in hits):
            names.append("refusal*comply")
        if any(h.group == "CLARIFY" and h.start >= end for h in hits):
            names.append("refusal*clarify")
        if rest >= 20:
            # What follows the refusal: more hedging and warning (a longer refusal) or content (partial help)?
            post = sum(1 for h in hits if h.start >= end and h.group in _HEDGE_GROUPS)
            names.append(f"post:{_bucket(100 * post // rest, _DENSITY_BOUNDS)}")
    return names


def _lecturing(analysis: Analysis) -> list[bool]:
    """For each sentence: whether it carries a warning, a judgement, a redirection or the vocabulary of duty
    and harm (how much of an answer admonishes instead of informing)."""
    starts = analysis.sentences
    marked = [False] * len(starts)
    k = 0
    for hit in analysis.hits:
        if hit.group in _LECTURE_GROUPS:
            k = max(bisect.bisect_right(starts, hit.start, lo=k) - 1, 0)
            marked[k] = True
    return marked


def ngrams(tokens: list[str]) -> dict[str, float]:
    """Word n-gram features: unigrams and bigrams of the opening.

    Their values are 1/sqrt(their count), so that their sum does not grow with the opening's length.
    """
    out: dict[str, float] = {}
    opening = tokens[:OPEN_TOKENS]
    if opening:
        value = 1.0 / math.sqrt(2 * len(opening) - 1)
        out.update((f"o:{w}", value) for w in opening)
        out.update((f"o:{a} {b}", value) for a, b in itertools.pairwise(opening))
    return out


def features(answer: str, reasoning: str | None = None) -> dict[str, float]:
    """Every feature of ``answer`` (and of the plan in ``reasoning``) with its value (the reference the fast
    scorer must agree with)."""
    analysis = analyze(normalize(answer))
    out = ngrams(analysis.tokens)
    hand = hand_features(analysis)
    out.update(dict.fromkeys(hand, 1.0))
    if reasoning is not None:
        out.update(dict.fromkeys(reasoning_features(reasoning), 1.0))
        out.update(dict.fromkeys(map(REASONED.__add__, hand), 1.0))
    return out


REASONED = "t:"
"""Prefix of the copy of each cue feature that fires only for outputs with a reasoning block (TARS's format): the
model learns shared weights plus what differs in that format (how its declines and safe answers read)."""
_PLAN_SENTENCES = 3
_PLAN_CHARS = 600
_PLAN_SHORT = {"R_DECLINE": "D", "R_PARTIAL": "P", "R_COMPLY": "C"}


def reasoning_cues(reasoning: str) -> list[Hit]:
    """Plan cues in the reasoning's closing sentences (where the model settles what it will do), in order."""
    text = normalize(reasoning).lower()
    chunks = [c for c in _regexes().sentence_break.split(text[-4 * _PLAN_CHARS :]) if c.strip()]
    tail = " ".join(chunks[-_PLAN_SENTENCES:])[-_PLAN_CHARS:]
    lexicon = _reasoning_lexicon()
    hits = lexicon.find(_to_space(tail).split())
    if has_cjk(tail):
        hits += lexicon.find_cjk(tail)
        hits.sort(key=lambda h: h.start)
    return hits


def reasoning_features(reasoning: str | None) -> list[str]:
    """The plan feature names of a reasoning (see :func:`plan_features`)."""
    return plan_features(reasoning_cues(reasoning) if reasoning and reasoning.strip() else None)


def plan_features(cues: list[Hit] | None) -> list[str]:
    """The plan feature names from a reasoning's cues (``None``: no reasoning): which plans its closing sentences
    state, and the last one."""
    if cues is None:
        return []
    if not cues:
        return ["r:none"]
    kinds = {_PLAN_SHORT[h.group] for h in cues}
    names = [f"r:{kind}" for kind in sorted(kinds)]
    names.append(f"r:last:{_PLAN_SHORT[cues[-1].group]}")
    if "D" in kinds and ("C" in kinds or "P" in kinds):
        names.append("r:D&help")  # declines one part and helps with another
    return names
