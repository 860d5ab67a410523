"""Cost estimation: line items by hand, multipliers, schedules, the reference sheet, deltas and price book sources."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from aicdn_project.errors import ValidationFailed
from blueprints.analysis import cost_delta, estimate_cost
from blueprints.analysis.cost import SHIPPED_PRICE_BOOK, price_book_errors, resolve_price_book
from tests.analysis.conftest import bp, res, web_stack


def test_line_items_are_quantity_times_unit_price(book: dict) -> None:
    document = bp(
        res("web", "compute", {"cpu": 2, "memory": "4GB", "storage": "40GB", "storage_tier": "ssd"}, count=2),
        provider="proxmox",
    )
    result = estimate_cost(document, book)
    sheet = book["sheets"]["proxmox"]
    items = {i["item"]: i for i in result["line_items"]}
    assert items["vcpu"]["quantity"] == 4 and items["vcpu"]["unit_price"] == sheet["vcpu_month"]
    assert items["ram"]["quantity"] == 8 and items["ram"]["unit"] == "GB RAM-month"
    assert items["storage (ssd)"]["quantity"] == 80
    assert items["instance overhead"]["quantity"] == 2
    expected = 4 * sheet["vcpu_month"] + 8 * sheet["ram_gb_month"] + 80 * 0.08 + 2 * sheet["instance_month"]
    assert result["monthly_total"] == pytest.approx(expected, abs=0.01)
    for item in result["line_items"]:
        assert item["monthly"] == pytest.approx(item["quantity"] * item["unit_price"], abs=0.01)
        assert item["resource"] == "web" and item["provider"] == "proxmox" and item["type"] == "compute"
    assert result["currency"] == "USD"
    assert result["price_book_version"] == book["version"]
    assert result["by_resource"] == {"web": result["monthly_total"]}
    assert result["provider_sheet"]["proxmox"]["sheet"] == "proxmox"
    # The same capacity on the public-cloud reference sheet costs more than amortised on-prem hardware.
    assert result["reference_cloud_total"] > result["monthly_total"]


def test_database_counts_standby_and_replicas_and_backups(book: dict) -> None:
    single = bp(res("db", "database", {"engine": "postgresql", "storage": "100GB"}))
    ha = bp(res("db", "database", {"engine": "postgresql", "storage": "100GB", "ha": True, "replicas": 2}))
    backed = bp(res("db", "database", {"engine": "postgresql", "storage": "100GB", "backups": True}))
    one = estimate_cost(single, book)["monthly_total"]
    assert estimate_cost(ha, book)["monthly_total"] == pytest.approx(4 * one, abs=0.02)
    items = {i["item"]: i for i in estimate_cost(backed, book)["line_items"]}
    assert items["backups"]["quantity"] == 100
    assert items["backups"]["unit"] == "GB backup-month"


def test_providers_use_their_sheets_and_simulator_is_priced_as_on_prem(book: dict) -> None:
    entry = {"cpu": 4, "memory": "8GB"}
    totals = {
        p: estimate_cost(bp(res("x", "compute", entry), provider=p), book)["monthly_total"]
        for p in ("proxmox", "simulator", "docker", "kubernetes")
    }
    assert totals["simulator"] == totals["proxmox"]
    assert len({totals["proxmox"], totals["docker"], totals["kubernetes"]}) == 3


def test_kubernetes_cluster_prices_nodes_and_control_plane(book: dict) -> None:
    result = estimate_cost(bp(res("k", "kubernetes_cluster", {"nodes": 5, "cpu": 4, "memory": "16GB"})), book)
    items = {i["item"]: i for i in result["line_items"]}
    assert items["vcpu"]["quantity"] == 20
    assert items["control plane"]["quantity"] == 1
    assert items["control plane"]["unit_price"] == book["sheets"]["proxmox"]["kubernetes_control_plane_month"]


def test_schedule_scales_compute_but_not_storage(book: dict) -> None:
    always = bp(res("dev", "compute", {"cpu": 4, "memory": "16GB", "storage": "100GB"}))
    scheduled = copy.deepcopy(always)
    scheduled["resources"][0]["specs"]["schedule"] = {"startup": "08:00", "shutdown": "20:00", "weekdays_only": True}
    a = {i["item"].split(" (")[0]: i for i in estimate_cost(always, book)["line_items"]}
    s = {i["item"].split(" (")[0]: i for i in estimate_cost(scheduled, book)["line_items"]}
    assert s["vcpu"]["quantity"] == pytest.approx(4 * 0.5 * 5 / 7, abs=1e-4)
    assert s["storage"]["quantity"] == a["storage"]["quantity"]
    assert "35.7% uptime" in next(i["item"] for i in estimate_cost(scheduled, book)["line_items"])


def test_load_balancer_network_and_volume(book: dict) -> None:
    document = bp(
        res("app", "container", {"cpu": 1, "memory": "1GB", "replicas": 3}),
        res("lb", "loadbalancer", {"targets": ["app"], "ha": True}),
        res("net", "network"),
        res("v", "volume", {"storage": "1TB", "storage_tier": "hdd"}),
    )
    result = estimate_cost(document, book)
    sheet = book["sheets"]["proxmox"]
    assert result["by_resource"]["lb"] == 2 * sheet["loadbalancer_month"]
    assert result["by_resource"]["net"] == sheet["network_month"]
    assert result["by_resource"]["v"] == pytest.approx(1024 * sheet["storage_gb_month"]["hdd"], abs=0.01)
    app_items = [i for i in result["line_items"] if i["resource"] == "app"]
    assert next(i for i in app_items if i["item"] == "vcpu")["quantity"] == 3


def test_cost_delta_between_versions(book: dict) -> None:
    old = web_stack()
    new = copy.deepcopy(old)
    new["resources"][2]["count"] = 4  # web x2 -> x4
    new["resources"].append(res("cache", "cache", {"engine": "redis"}))
    new["resources"] = [r for r in new["resources"] if r["name"] != "lb"]
    delta = cost_delta(old, new, book)
    web = delta["by_resource"]["web"]
    assert web["new"] == pytest.approx(2 * web["old"], abs=0.02)
    assert delta["by_resource"]["lb"]["new"] == 0 and delta["by_resource"]["lb"]["old"] > 0
    assert delta["by_resource"]["cache"]["old"] == 0
    assert delta["delta"] == pytest.approx(delta["new_total"] - delta["old_total"], abs=0.01)
    assert delta["delta_percent"] == pytest.approx(100 * delta["delta"] / delta["old_total"], abs=0.01)
    assert delta["currency"] == "USD"


def test_cost_delta_from_nothing(book: dict) -> None:
    delta = cost_delta(None, web_stack(), book)
    assert delta["old_total"] == 0
    assert delta["delta"] == delta["new_total"] > 0
    assert delta["delta_percent"] is None


def test_invalid_price_book_is_refused_with_paths(book: dict) -> None:
    broken = copy.deepcopy(book)
    del broken["sheets"]["docker"]["vcpu_month"]
    broken["sheets"]["proxmox"]["storage_gb_month"]["ssd"] = -1
    broken["reference_sheet"] = "moon"
    paths = {e["path"] for e in price_book_errors(broken)}
    assert "$.sheets.docker" in paths
    assert "$.sheets.proxmox.storage_gb_month.ssd" in paths
    fixed = copy.deepcopy(book)
    fixed["reference_sheet"] = "moon"
    assert price_book_errors(fixed) == [{"path": "$.reference_sheet", "message": "no sheet named 'moon'"}]
    with pytest.raises(ValidationFailed):
        estimate_cost(web_stack(), broken)


def test_shipped_price_book_is_valid() -> None:
    data = yaml.safe_load(Path(SHIPPED_PRICE_BOOK).read_text())
    assert price_book_errors(data) == []
    assert set(data["sheets"]) >= {"proxmox", "docker", "kubernetes", "public_cloud"}


@pytest.mark.django_db
def test_settings_file_overrides_the_shipped_price_book(tmp_path: Path, settings, book: dict) -> None:
    custom = copy.deepcopy(book)
    custom["version"] = "test-file-1"
    custom["sheets"]["proxmox"]["vcpu_month"] = 100.0
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(custom))
    settings.AICDN_PRICE_BOOK_PATH = str(path)
    result = estimate_cost(bp(res("x", "compute", {"cpu": 1, "memory": "1GB", "storage": "10GB"})))
    assert result["price_book_version"] == "test-file-1"
    assert next(i for i in result["line_items"] if i["item"] == "vcpu")["monthly"] == 100.0


@pytest.mark.django_db
def test_active_admin_price_book_wins_over_files(tmp_path: Path, settings, book: dict) -> None:
    from blueprints.models import PriceBook

    settings.AICDN_PRICE_BOOK_PATH = ""
    assert resolve_price_book(None)["version"] == book["version"]
    stored = copy.deepcopy(book)
    stored["version"] = "admin-7"
    PriceBook.objects.create(name="inactive", data={**stored, "version": "admin-inactive"}, is_active=False)
    assert resolve_price_book(None)["version"] == book["version"]
    PriceBook.objects.create(name="ours", data=stored, is_active=True)
    assert estimate_cost(web_stack())["price_book_version"] == "admin-7"
