"""deploy/: every command, flag and setting the Dockerfile, the compose file and the load balancer use
exists and agrees with the others; the example webhook receiver verifies signatures and keeps each
offer once. (No container is built here: docker and haproxy are not assumed on test machines.)"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from proximity.service.config import load_config

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    return YAML(typ="safe").load((DEPLOY / "docker-compose.yml").read_text())


def dockerfile() -> dict[str, list[str]]:
    """Each instruction of the Dockerfile (continuation lines joined) by name."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, rest = line.strip().partition(" ")
            out.setdefault(name.upper(), []).append(rest.strip())
    return out


def help_of(*cmd: str) -> str:
    return subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def flags(args: list[str]) -> list[str]:
    return [a.split("=")[0] for a in args if a.startswith("--")]


def test_the_images_commands_and_flags_exist() -> None:
    doc = dockerfile()
    entry = json.loads(doc["ENTRYPOINT"][0])
    cmd = json.loads(doc["CMD"][0])
    assert entry == ["proximity"] and cmd[0] == "serve"
    serve_help = help_of(sys.executable, "-m", "proximity", "serve")
    service = compose()["services"]["proximity"]
    for args in (cmd[1:], service["command"][1:]):
        assert service["command"][0] == "serve"
        for flag in flags(args):
            assert re.search(rf"\s{re.escape(flag)}[\s,=]", serve_help), f"proximity serve has no {flag}"
    receiver = compose()["services"]["webhook"]["entrypoint"]
    assert receiver[:2] == ["python", "/app/deploy/webhook_receiver.py"]
    receiver_help = help_of(sys.executable, str(DEPLOY / "webhook_receiver.py"))
    for flag in flags(receiver[2:]):
        assert flag in receiver_help, f"webhook_receiver.py has no {flag}"


def test_the_image_runs_as_a_user_and_checks_readyz() -> None:
    doc = dockerfile()
    assert doc["USER"] == ["proximity"]
    assert "useradd" in " ".join(doc["RUN"]) and "--uid 10001" in " ".join(doc["RUN"])
    (check,) = doc["HEALTHCHECK"]
    assert "http://127.0.0.1:8080/readyz" in check
    for copy in doc["COPY"]:  # everything copied exists in the repository
        for src in shlex.split(copy)[:-1]:
            assert (ROOT / src).exists(), src
    from proximity.service.openapi import openapi_spec

    assert "/readyz" in openapi_spec()["paths"]


def test_every_setting_of_the_service_file_exists_and_agrees_with_compose() -> None:
    config = load_config(DEPLOY / "service.yaml")  # unknown or mistyped settings raise here
    services = compose()["services"]
    assert config.host == "0.0.0.0" and config.redis and config.workers >= 1
    redis_host = re.match(r"redis://([^:/]+):", config.redis).group(1)  # type: ignore[union-attr]
    assert redis_host in services
    hook = re.match(r"http://([^:/]+):(\d+)/", config.webhook_url or "")
    assert hook and hook.group(1) in services
    receiver = services["webhook"]["entrypoint"]
    assert receiver[receiver.index("--port") + 1] == hook.group(2)
    for name in ("proximity", "webhook"):
        assert config.webhook_secret_env in services[name]["environment"]
    assert "PROXIMITY_API_KEYS" in services["proximity"]["environment"]
    dockerfile_config = json.loads(dockerfile()["CMD"][0])
    assert dockerfile_config[dockerfile_config.index("--config") + 1] == "/etc/proximity/service.yaml"
    assert "deploy/service.yaml /etc/proximity/service.yaml" in " ".join(dockerfile()["COPY"])


def test_the_redis_cluster_has_a_replica_per_master() -> None:
    services = compose()["services"]
    nodes = [s for s in services if re.fullmatch(r"redis-\d+", s)]
    assert len(nodes) == 6
    for n in nodes:
        command = services[n]["command"]
        assert command[:3] == ["redis-server", "--cluster-enabled", "yes"]
    init = " ".join(services["redis-cluster-init"]["command"])
    assert "--cluster-replicas 1" in init and "--cluster create" in init


def test_the_load_balancer_checks_readyz_on_the_service_port() -> None:
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    config = load_config(DEPLOY / "service.yaml")
    assert "option httpchk GET /readyz" in cfg
    assert re.search(rf"server-template \w+ \d+ proximity:{config.port}\b", cfg)
    lb = compose()["services"]["lb"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]


async def test_the_webhook_receiver_keeps_each_offer_once(tmp_path: Path, aiohttp_client: Any) -> None:
    from campaigns import Offer
    from campaigns.dispatch import WebhookDispatcher

    spec = importlib.util.spec_from_file_location("webhook_receiver", DEPLOY / "webhook_receiver.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    out = tmp_path / "kept.jsonl"
    client = await aiohttp_client(module.make_app("s3cret", str(out)))
    url = str(client.make_url("/hook"))
    offer = Offer(offer_id="of_1", campaign_id="c", device_id="d", fence_id="f", ts=1.0, title="t")
    good = WebhookDispatcher(url, "s3cret", max_attempts=1)
    bad = WebhookDispatcher(url, "wrong", max_attempts=1)
    try:
        assert await good.deliver(offer) == 1 and await good.deliver(offer) == 1  # the repeat is answered 200
        try:
            await bad.deliver(offer)
            raise AssertionError("a bad signature was accepted")
        except Exception as exc:  # DeliveryError: HTTP 401, final
            assert "401" in str(exc)
    finally:
        await good.aclose()
        await bad.aclose()
    stats = await (await client.get("/healthz")).json()
    assert stats == {"received": 3, "kept": 1, "repeats": 1, "refused": 1}
    assert [json.loads(x)["offer_id"] for x in out.read_text().splitlines()] == ["of_1"]
