"""Report routes (``read`` scope, which admin keys include): ``GET /v1/campaigns/{campaign_id}/report``, a campaign's exposures,
conversions and lift against its holdout, from the counters the workers keep (Redis when shared)."""

from __future__ import annotations

from aiohttp import web

from proximity.service.codec import json_response
from proximity.service.errors import ApiError
from proximity.service.middleware import Handler, requires
from proximity.service.worker import service_of


@requires("read")
async def campaign_report(request: web.Request) -> web.Response:
    svc = service_of(request)
    campaign_id = request.match_info["campaign_id"]
    raw = request.query.get("min_exposed", "30")
    try:
        min_exposed = int(raw)
    except ValueError:
        min_exposed = 0
    if min_exposed < 1:
        raise ApiError(400, f"min_exposed must be a whole number of at least 1, not {raw!r}", field="min_exposed",
                       reason="bad_query")
    body = await svc.host.run(svc.host.campaign_report, campaign_id, min_exposed)
    if body is None:
        raise ApiError(404, f"no campaign {campaign_id!r} is loaded", field="campaign_id", reason="not_found")
    return json_response(body)


ROUTES: list[tuple[str, str, Handler]] = [("GET", "/v1/campaigns/{campaign_id}/report", campaign_report)]

__all__ = ["ROUTES", "campaign_report"]
