"""Sentiment of member feedback comments: the one place a comment becomes a number. No Django.

VADER (vaderSentiment) is a rule-based lexicon model; its lexicon ships inside the package,
so nothing is downloaded at run time and the same text always gets the same score. Its
``compound`` score lies in [-1, 1]; the package's own convention calls >= 0.05 positive and
<= -0.05 negative, and the features and the review desk use the same cut-offs.

Comments are personal data: callers decrypt them just before scoring and keep only the
score. Nothing here logs or stores text.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import numpy as np
import pandas as pd

POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05
# How much of a comment the review desk shows.
SHORT_CHARS = 140


@cache
def _analyzer():
    # Built lazily (it reads the lexicon file, ~40 ms), once per process.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def comment_sentiments(comments: Iterable[str | None]) -> np.ndarray:
    """VADER compound score per comment; NaN where there is no comment (None, NaN or blank).

    Each distinct text is scored once (a chunk's comments repeat: "great app", ...), so the
    cost grows with the number of distinct comments, not with the number of events.
    """
    texts = pd.Series(list(comments) if not isinstance(comments, pd.Series) else comments, dtype=object)
    codes, uniques = pd.factorize(texts.fillna("").astype(str).str.strip())
    analyzer = _analyzer()
    scores = np.array(
        [analyzer.polarity_scores(text)["compound"] if text else np.nan for text in uniques], dtype=float
    )
    out = np.full(len(codes), np.nan)
    known = codes >= 0
    out[known] = scores[codes[known]]
    return out


def feedback_sentiments(kinds: Iterable[str], comments: Iterable[str | None]) -> np.ndarray:
    """What ``Event.sentiment`` stores, computed once when events are written: the score of a
    feedback event's comment; NaN for other kinds (their text is never read) and no comment."""
    kinds = np.asarray(list(kinds) if not isinstance(kinds, pd.Series) else kinds, dtype=object)
    comments = pd.Series(list(comments) if not isinstance(comments, pd.Series) else comments, dtype=object)
    feedback = kinds == "feedback"
    out = np.full(len(kinds), np.nan)
    if feedback.any():
        out[feedback] = comment_sentiments(comments[feedback])
    return out


def sentiment_label(compound: float) -> str:
    """positive / neutral / negative, by VADER's cut-offs."""
    if compound >= POSITIVE_AT:
        return "positive"
    if compound <= NEGATIVE_AT:
        return "negative"
    return "neutral"


def shorten(text: str, limit: int = SHORT_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:") + "…"
