"""Keyset pagination with opaque page tokens, never capped at any page count.

A listing is sorted on a unique key (a few fields, e.g. frames by (time, file,
cadenceno)); a page token carries the sort key of the last item served plus a
fingerprint of the query it belongs to. The next page is "sort key > token", so a
page costs the same at item 10 and at item 10 million, and documents inserted
meanwhile never shift or repeat items (as skip/offset would).

Why two queries per page: the obvious keyset filter ``$or: [{a: {$gt}}, {a: x, b:
{$gt}}, ...]`` is evaluated row by row by nx-27017 (600 ms on 20k frames), while a
range on one indexed field is fast (10-30 ms). So a page is (1) the documents that
tie with the token on the leading sort field — few, since the leading field is
chosen nearly unique (a frame's time, a light curve's label) — filtered here on
the remaining fields, then (2) the documents strictly beyond it on the leading field.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from typing import Callable, Iterable

from pymongo import ASCENDING

TOKEN_VERSION = 1
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# A page with a filter evaluated here (cone search, quality bits) stops scanning after
# this many documents and hands out a token where it stopped: every request is bounded.
SCAN_LIMIT = 20_000


class PageTokenError(ValueError):
    """A page token that is malformed or belongs to another query."""


def fingerprint(endpoint: str, params: dict) -> str:
    """A short hash of the query (endpoint + its filters, not limit/page_token)."""
    canonical = json.dumps({"endpoint": endpoint, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _encode_value(value):
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return {"$str": str(value)}       # e.g. an ObjectId: compared as stored, via str()


def _decode_value(value):
    if isinstance(value, dict) and set(value) == {"$dt"} and isinstance(value["$dt"], str):
        parsed = dt.datetime.fromisoformat(value["$dt"][:40])
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dict) and set(value) == {"$str"} and isinstance(value["$str"], str):
        value = value["$str"]
    if isinstance(value, str) and (len(value) > 1000 or any(ord(c) < 32 for c in value)):
        raise PageTokenError("page_token is malformed (unexpected text)")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise PageTokenError("page_token is malformed (number out of range)")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise PageTokenError("page_token is malformed (unexpected value)")


def encode_token(query_fp: str, key: list) -> str:
    raw = json.dumps({"v": TOKEN_VERSION, "q": query_fp, "k": [_encode_value(v) for v in key]},
                     separators=(",", ":"), allow_nan=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, query_fp: str, n_keys: int) -> list:
    """The sort key a token resumes after; PageTokenError if it is not a token of
    this query (a token is only valid with the same filters it was issued with)."""
    if len(token) > 4096:
        raise PageTokenError("page_token is too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise PageTokenError("page_token is not a token this API issued") from None
    if not isinstance(data, dict) or data.get("v") != TOKEN_VERSION or not isinstance(data.get("k"), list):
        raise PageTokenError("page_token is not a token this API issued")
    if data.get("q") != query_fp:
        raise PageTokenError("page_token belongs to a different query: repeat the filters it "
                             "was issued with, or start again without page_token")
    if len(data["k"]) != n_keys:
        raise PageTokenError("page_token is malformed (wrong key length)")
    try:
        return [_decode_value(v) for v in data["k"]]
    except (ValueError, TypeError):
        raise PageTokenError("page_token is malformed") from None


def eq(value) -> dict:
    """An equality condition as ``{"$eq": value}``. Same meaning as a bare value on
    MongoDB, but nx-27017 turns a bare value on a field that does not end an index's
    name into an array-containment test that cannot use the index (a full scan: 0.6 s
    for a light curve among 2,000); the ``$eq`` form stays on the index (7 ms)."""
    return {"$eq": value}


def _sort_value(doc: dict, field: str):
    value = doc.get(field)
    return str(value) if field == "_id" and not isinstance(value, (str, int, float)) else value


def _after(doc: dict, sort: list[tuple[str, int]], key: list) -> bool:
    """Whether ``doc`` comes strictly after ``key`` in the sort order."""
    for (field, direction), last in zip(sort, key):
        value = _sort_value(doc, field)
        if value == last:
            continue
        try:
            greater = value > last
        except TypeError:             # None or mixed types: order by type name, stably
            greater = (type(value).__name__, str(value)) > (type(last).__name__, str(last))
        return greater if direction == ASCENDING else not greater
    return False


def _beyond(query: dict, field: str, direction: int, value) -> dict:
    """``query`` narrowed to ``field`` strictly beyond ``value`` (merging with any range
    the query already has on that field)."""
    op = "$gt" if direction == ASCENDING else "$lt"
    existing = query.get(field)
    if existing is None:
        return {**query, field: {op: value}}
    if isinstance(existing, dict) and existing and all(k.startswith("$") for k in existing):
        if op in existing:            # keep the tighter of the two strict bounds
            pick = max if op == "$gt" else min
            return {**query, field: {**existing, op: pick(existing[op], value)}}
        return {**query, field: {**existing, op: value}}   # both bounds apply (AND)
    return {**query, field: {"$in": []}}   # an equality on the leading field: nothing beyond


def keyset_page(collection, query: dict, sort: list[tuple[str, int]], limit: int,
                after: list | None, query_fp: str, projection: dict | None = None,
                match: Callable[[dict], bool] | None = None, scan_limit: int = SCAN_LIMIT):
    """One page: (documents, next_page_token or None). ``match``: a filter evaluated
    here on each document the query returns (a page may then hold fewer than
    ``limit`` items and still have a token, when the scan stopped at ``scan_limit``)."""
    lead, lead_dir = sort[0]
    projection = None if projection is None else {**projection, **{f: 1 for f, _ in sort}}

    def candidates() -> Iterable[dict]:
        if after is not None:
            ties = collection.find({**query, lead: eq(after[0])}, projection).sort(sort[1:] or [("_id", 1)])
            for doc in ties:
                if _after(doc, sort, after):
                    yield doc
            rest_query = _beyond(query, lead, lead_dir, after[0])
        else:
            rest_query = query
        cursor = collection.find(rest_query, projection).sort(sort)
        if match is None:
            cursor = cursor.limit(limit + 1)
        else:
            cursor = cursor.batch_size(min(max(limit * 4, 200), 5000))
        yield from cursor

    items: list[dict] = []
    scanned = 0
    last_scanned = None
    for doc in candidates():
        scanned += 1
        if match is None or match(doc):
            if len(items) == limit:   # one more than asked: there is a next page
                return items, encode_token(query_fp, [_sort_value(items[-1], f) for f, _ in sort])
            items.append(doc)
        last_scanned = doc
        if match is not None and scanned >= scan_limit:
            return items, encode_token(query_fp, [_sort_value(last_scanned, f) for f, _ in sort])
    return items, None
