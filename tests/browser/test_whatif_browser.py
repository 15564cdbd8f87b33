"""What-if in a real Chromium: a slider re-scores the member without a reload; a segment
scenario runs to completion in a real Celery worker while the page polls with htmx."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recommendations.models import Scenario
from tests.browser.conftest import login
from tests.whatif.support import whatif_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "var" / "screenshots"))


def test_manager_moves_a_slider_and_sees_the_member_rescored(live_server, role_users, page):
    world = whatif_world()
    login(page, live_server, "manager")
    page.goto(f"{live_server.url}/whatif/member/{world.member.member_id}/")
    page.wait_for_selector("body[data-whatif-ready]")
    page.wait_for_selector("#wi-shap-after.drawn")
    page.wait_for_selector("#wi-shap-before.drawn")
    page.evaluate("window.__noReload = true")
    prob_before = page.text_content("#wi-prob")
    base_prob = page.text_content("#wi-prob-base")
    x_before = page.evaluate("document.getElementById('wi-shap-after').data[0].x")
    assert page.locator("#range-age").is_disabled()

    # Drag the visits slider to its end with the keyboard, as a user would.
    slider = page.locator("#range-sessions_30d")
    slider.focus()
    page.keyboard.press("End")
    page.wait_for_function(f"document.getElementById('wi-prob').textContent !== {json.dumps(prob_before)}")
    page.wait_for_function(
        "JSON.stringify(document.getElementById('wi-shap-after').data[0].x) !== "
        + json.dumps(json.dumps(x_before, separators=(',', ':')))
    )
    assert page.evaluate("window.__noReload") is True
    assert page.text_content("#wi-prob-base") == base_prob  # the original stays alongside
    assert page.input_value("#num-sessions_30d") == slider.input_value()
    assert "changed" in page.get_attribute("#row-sessions_30d", "class")
    assert "adjusted" in page.get_attribute("#row-sessions_90d", "class")  # linked window followed
    assert "sessions 30d" in page.text_content("#wi-warnings")  # beyond the training range
    assert page.locator("#wi-offers-table tbody tr").count() >= 1
    assert page.text_content("#wi-prob-delta").endswith("points")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "whatif.png"), full_page=True)

    # Save it under a name and open the shared URL: the edit is restored.
    page.fill("#wi-save input[name=name]", "visits to the max")
    page.click("#wi-save button[type=submit]")
    page.wait_for_url("**scenario=*")
    page.wait_for_selector("body[data-whatif-ready]")
    scenario = Scenario.objects.get(name="visits to the max")
    assert page.input_value("#num-sessions_30d") == str(int(scenario.inputs["changes"]["sessions_30d"]))
    assert page.text_content("#wi-prob") == page.evaluate(
        "(100 * JSON.parse(document.getElementById('whatif-init').textContent).result.scenario.probability)"
        ".toFixed(1) + '%'"
    )
    assert page.js_errors == []


def test_segment_scenario_runs_to_completion_in_a_real_worker(live_server, role_users, page,
                                                                celery_worker_process):
    whatif_world()
    login(page, live_server, "manager")
    page.goto(f"{live_server.url}/whatif/")
    form = page.locator("#wi-segment-form")
    form.locator("select[name=tier]").select_option("silver")
    form.locator("select[name=feature]").select_option("points_balance")
    form.locator("select[name=op]").select_option("scale")
    form.locator("input[name=amount]").fill("1.2")
    form.locator("input[name=name]").fill("silver +20% points")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/whatif/scenarios/*/")
    page.wait_for_selector("#segment-state:text('succeeded')", timeout=90_000)
    page.wait_for_function("document.querySelectorAll('#segment-status .chart.drawn').length === 4")
    scenario = Scenario.objects.get(name="silver +20% points")
    assert scenario.status == "succeeded" and scenario.progress == 1.0
    assert page.locator("#segment-summary").is_visible()
    assert "Expected engaged members" in page.text_content("#segment-summary")
    page.screenshot(path=str(SCREENSHOTS / "whatif_segment.png"), full_page=True)
    assert celery_worker_process.log_path.read_text().count("recommendations.whatif_segment_run") >= 1
    assert page.js_errors == []
