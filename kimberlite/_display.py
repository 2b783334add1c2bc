"""HTML summaries for Jupyter (``_repr_html_`` of Record, Storage and Stream).

Kept apart, and imported only when a notebook asks for a summary, so that ``import
kimberlite`` does not import :mod:`html`.
"""

from __future__ import annotations

import html
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

from ._words import plural, short_hash

if TYPE_CHECKING:
    from ._record import Record
    from ._stream import _StorageLike, Stream

_REPR_PAYLOAD = 32   # payload bytes shown by a Record's table
_HTML_STREAMS = 20   # streams listed by a Storage's table before "... and N more"
_PREVIEW_ROWS = 5    # rows shown at each end by a Stream's table
_PREVIEW_BYTES = 40  # payload bytes shown per row

esc = html.escape


def _preview(payload: bytes) -> str:
    shown = repr(payload[:_PREVIEW_BYTES])
    return shown + ("…" if len(payload) > _PREVIEW_BYTES else "")


def record_html(r: Record) -> str:
    payload = r.payload
    shown = repr(payload[:_REPR_PAYLOAD]) + ("…" if len(payload) > _REPR_PAYLOAD else "")
    prev = "None (genesis)" if r.prev_hash is None else r.prev_hash.hex()
    rows = [
        ("offset", str(r.offset)),
        ("prev_hash", f"<code>{prev}</code>"),
        ("hash", f"<code>{r.compute_hash().hex()}</code>"),
        ("size", f"{len(payload)} bytes"),
        ("payload", f"<code>{esc(shown)}</code>"),
    ]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<div><b>kimberlite.Record</b><table>{body}</table></div>"


def storage_html(s: _StorageLike, name: str) -> str:
    """One row per stream (at most 20), never the data."""
    from ._errors import StorageError

    path = s.path
    title = f"<b>kimberlite.{esc(name)}</b>"
    if path is not None:
        title += f" <code>{esc(str(path))}</code>"
    if s.read_only:
        title += " (read-only)"
    if s.closed:
        return f"<div>{title}: closed</div>"
    try:
        ids = s.streams()
    except (StorageError, OSError) as e:
        return f"<div>{title}: <i>{esc(str(e))}</i></div>"
    rows = []
    for sid in ids[:_HTML_STREAMS]:
        try:
            events = s.next_offset(sid)
            segments = s.segment_count(sid)
            head = s.latest_chain_hash(sid)
            cells = [str(events), str(segments), f"<code>{short_hash(head)}</code>"]
        except (StorageError, OSError) as e:
            cells = ["", "", f"<i>{esc(str(e))}</i>"]
        rows.append(f"<tr><td>{sid}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    more = ""
    if len(ids) > _HTML_STREAMS:
        more = f"<tr><td colspan=4>… and {len(ids) - _HTML_STREAMS} more streams</td></tr>"
    head_row = "<tr><th>stream</th><th>events</th><th>segments</th><th>head hash</th></tr>"
    return (f"<div>{title}: {plural(len(ids), 'stream')}"
            f"<table>{head_row}{''.join(rows)}{more}</table></div>")


def _stream_row(r: Record) -> str:
    return (f"<tr><td>{r.offset}</td><td>{len(r.payload)}</td>"
            f"<td><code>{esc(_preview(r.payload))}</code></td>"
            f"<td><code>{short_hash(r.compute_hash())}</code></td></tr>")


def stream_html(view: Stream) -> str:
    """Counts, head, and the first and last few events."""
    title = f"<b>kimberlite.Stream {view.stream_id}</b>"
    if view.storage.closed:
        return f"<div>{title}: storage closed</div>"
    try:
        n = len(view)
        head = view.head
        segments = view.segments
        k = _PREVIEW_ROWS
        first = list(range(min(n, k)))
        last = list(range(max(k, n - k), n))
        rows = [_stream_row(view.record(i)) for i in first]
        if last and last[0] > k:
            rows.append("<tr><td colspan=4>⋮</td></tr>")
        rows += [_stream_row(view.record(i)) for i in last]
    except Exception as e:  # show the error, as read_from would raise it
        return f"<div>{title}: <i>{esc(type(e).__name__)}: {esc(str(e))}</i></div>"
    table = ("<table><tr><th>offset</th><th>size</th><th>payload</th><th>hash</th></tr>"
             + "".join(rows) + "</table>") if rows else ""
    return (f"<div>{title}: {plural(n, 'event')}, {plural(segments, 'segment')}, "
            f"head <code>{short_hash(head)}</code>{table}</div>")
