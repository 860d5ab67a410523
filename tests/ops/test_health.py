"""Health: liveness without auth; the detailed check reports every dependency and degrades instead of failing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rest_framework.test import APIClient

from engines.models import Environment
from tests.conftest import make_user
from tests.ops.conftest import free_port

DETAILED = "/api/v1/monitoring/health/detailed"


class _ModelServer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/health"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}' if ok else b"{}")

    def log_message(self, *args) -> None:
        return


@pytest.fixture
def model_server() -> Iterator[str]:
    """A real HTTP server on loopback answering /health like llama.cpp's and vLLM's servers do."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModelServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def operator_api(db, token_for) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Token {token_for(make_user('op', 'operators'))}")


def test_liveness_needs_no_auth_and_touches_nothing():
    response = APIClient().get("/api/v1/monitoring/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_detailed_health_requires_authentication(db):
    assert APIClient().get(DETAILED).status_code == 401


def test_a_dead_model_server_and_no_worker_degrade_without_failing(operator_api, settings):
    settings.LLM_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.HEALTH_CHECK_TIMEOUT = 1.0
    response = operator_api.get(DETAILED)
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "degraded"
    checks = data["checks"]
    assert checks["database"]["status"] == "ok" and checks["redis"]["status"] == "ok"
    assert checks["model_server"]["status"] == "down" and "error" in checks["model_server"]
    for name in ("database", "redis", "celery", "model_server"):
        assert isinstance(checks[name]["latency_ms"], float)


def test_everything_up_is_ok_with_each_environment_engine(operator_api, settings, model_server, celery_worker):
    settings.LLM_BASE_URL = model_server
    Environment.objects.create(name="sim-up", engine="simulator", config={"cluster": "health-up"})
    response = operator_api.get(DETAILED)
    data = response.json()
    assert response.status_code == 200
    checks = data["checks"]
    port = model_server.split(":")[2].split("/")[0]
    assert checks["model_server"] == {
        **checks["model_server"],
        "status": "ok",
        "url": f"http://127.0.0.1:{port}/health",
    }
    assert checks["celery"]["status"] == "ok" and checks["celery"]["workers"]
    assert checks["engines"]["sim-up"]["status"] == "ok" and checks["engines"]["sim-up"]["engine"] == "simulator"
    assert data["status"] == "ok", checks


def test_an_unhealthy_engine_is_reported_per_environment(operator_api, settings, model_server, celery_worker):
    settings.LLM_BASE_URL = model_server
    Environment.objects.create(name="sim-ok", engine="simulator", config={"cluster": "a"})
    Environment.objects.create(name="sim-sick", engine="simulator", config={"cluster": "b", "healthy": False})
    Environment.objects.create(name="needs-secret", engine="simulator", secret_refs={"token": "AICDN_TEST_UNSET_VAR"})
    data = operator_api.get(DETAILED).json()
    engines = data["checks"]["engines"]
    assert engines["sim-ok"]["status"] == "ok"
    assert engines["sim-sick"]["status"] == "down" and "unhealthy" in engines["sim-sick"]["error"]
    assert engines["needs-secret"]["status"] == "down" and "AICDN_TEST_UNSET_VAR" in engines["needs-secret"]["error"]
    assert data["status"] == "degraded"
