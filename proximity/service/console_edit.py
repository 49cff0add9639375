"""Small edits of the configuration documents the console makes (pause and resume a campaign).

The edit keeps the document as its author wrote it: YAML through ruamel's
round-trip mode (comments, order and quoting stay), JSON as JSON. The result is
submitted like any ``PUT /v1/campaigns``: validated, versioned, reloaded by
every worker.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from ruamel.yaml import YAML


def set_campaign_status(text: str, media_type: str, campaign_id: str, status: str) -> str:
    """``text`` with campaign ``campaign_id``'s ``status`` set; ``KeyError`` when there is no such campaign."""
    if "json" in media_type:
        doc = json.loads(text)
        _set(doc, campaign_id, status)
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    yaml = YAML(typ="rt")
    doc = yaml.load(text)
    item = _find(doc, campaign_id)
    if item.get("status", "active") == status:
        return text
    lines = text.splitlines(keepends=True)
    if "status" in item:  # replace the value where it is written
        line, col = item.lc.value("status")
        m = _STATUS_VALUE.match(lines[line], col)
        if m is not None:
            lines[line] = lines[line][: m.start()] + status + lines[line][m.end():]
            return "".join(lines)
    elif not item.fa.flow_style():  # a new line under the id, indented like it
        line, col = item.lc.key("id")
        lines.insert(line + 1, " " * col + f"status: {status}\n")
        return "".join(lines)
    _set(doc, campaign_id, status)  # anything else (flow style, odd quoting): ruamel writes it out
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


_STATUS_VALUE = re.compile(r"""(["']?)(active|paused)\1""")


def _find(doc: Any, campaign_id: str) -> Any:
    items = doc.get("campaigns") if isinstance(doc, dict) else None
    for item in items or ():
        if isinstance(item, dict) and str(item.get("id")) == campaign_id:
            return item
    raise KeyError(campaign_id)


def _set(doc: Any, campaign_id: str, status: str) -> bool:
    """Set the status in place; ``True`` when it changed."""
    item = _find(doc, campaign_id)
    if item.get("status", "active") == status:
        return False
    item["status"] = status
    return True


__all__ = ["set_campaign_status"]
