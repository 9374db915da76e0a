"""deploy/grafana/aivc-portal.json, the dashboard a lab imports, charts what /metrics serves."""

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "aivc-portal.json"


@pytest.mark.django_db
def test_every_metric_the_dashboard_charts_is_one_the_portal_serves(client):
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    charted = {name for expr in expressions for name in re.findall(r"\baivc_\w+", expr)}

    body = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    served = {sample.name for family in text_string_to_metric_families(body) for sample in family.samples}
    served |= {family.name for family in text_string_to_metric_families(body)}

    assert charted, "the dashboard charts nothing"
    assert charted <= served, charted - served
    # Imported with the lab's own Prometheus as its data source.
    assert [item["name"] for item in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
