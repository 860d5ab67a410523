"""The admin: deployment progress and drift on the IPR review page, read-only engines pages, the drift action."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from engines.models import Deployment, DriftReport, SimulatedObject
from tests.deployments.conftest import compute, doc

pytestmark = pytest.mark.django_db(transaction=True)


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_review_page_shows_the_deployment_and_the_drift(make_env, deploy, users):
    env = make_env()
    ipr = deploy(env, doc({"name": "net", "type": "network"}, compute("web", network="net")))
    SimulatedObject.objects.filter(environment=env.name, resource_name="web").delete()
    login(users["operator"]).post(
        reverse("admin:engines_environment_changelist"),
        {"action": "check_drift", "_selected_action": [env.pk]},
        follow=True,
    )
    body = login(users["reviewer"]).get(reverse("admin:iprs_ipr_change", args=[ipr.pk])).content.decode()
    assert 'id="ipr-deployment"' in body and "Deployment: succeeded" in body
    assert '<tr class="deploy-succeeded"><td>web</td><td>create</td><td>succeeded</td><td>1</td>' in body
    assert 'id="ipr-drift"' in body and "1 missing (web)" in body
    assert 'http-equiv="refresh"' not in body  # only while it is queued or deploying


def test_engines_pages_are_read_only_and_role_gated(make_env, deploy, users):
    env = make_env()
    ipr = deploy(env, doc(compute("web")))
    deployment = Deployment.objects.get(ipr_id=ipr.pk)
    reviewer = login(users["reviewer"])
    page = reviewer.get(reverse("admin:engines_deployment_change", args=[deployment.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Resource operations" in text and "succeeded" in text
    assert 'name="_save"' not in text  # nothing to save: read-only
    assert reviewer.get(reverse("admin:engines_environment_change", args=[env.pk])).status_code == 200
    assert reviewer.get(reverse("admin:engines_deployment_add")).status_code == 403
    assert login(users["author"]).get(reverse("admin:engines_deployment_changelist")).status_code == 403


def test_only_operators_run_the_drift_action(make_env, deploy, users):
    env = make_env()
    deploy(env, doc(compute("web")))
    url = reverse("admin:engines_environment_changelist")
    form = {"action": "check_drift", "_selected_action": [env.pk]}
    login(users["reviewer"]).post(url, form, follow=True)
    assert not DriftReport.objects.exists()  # the action is not offered to reviewers
    response = login(users["operator"]).post(url, form, follow=True)
    assert [str(m) for m in get_messages(response.wsgi_request)] == [f"{env.name}: no drift in 1 resource(s)"]
    assert DriftReport.objects.get(environment=env).status == "clean"
