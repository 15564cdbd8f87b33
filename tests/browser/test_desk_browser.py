"""The review desk in a real browser: filters, keyboard decisions, override, escalate, bulk, charts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from governance.models import AuditEvent
from recommendations.models import Decision, Recommendation
from tests.browser.conftest import login
from tests.desk.factories import build_world, make_member, make_rec, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# `SCREENSHOT_DIR=docs/screenshots make test` refreshes the README's picture; by default the
# screenshot goes to var/ so a test run leaves the work tree clean.
SCREENSHOT = (
    Path(os.environ.get("SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "var" / "screenshots"))
    / "queue.png"
)


def status(rec) -> str:
    return Recommendation.objects.values_list("status", flat=True).get(pk=rec.pk)


def test_manager_works_the_queue_with_the_keyboard(live_server, role_users, page):
    world = build_world()
    r = world.recs
    for i, (tier, region) in enumerate([("gold", "south"), ("bronze", "east"), ("platinum", "west")]):
        make_rec(run=world.run, member=make_member(tier=tier, region=region), offer=world.discount,
                 priority=5 - i, probability=0.55 + i * 0.1, width=0.1 + i * 0.05, expected_value=8 - i)
    login(page, live_server, "manager")

    # filter: high churn risk only, state in the URL
    page.select_option("select[name=risk]", "high")
    page.click("form#filters button[type=submit]")
    page.wait_for_url("**risk=high**")
    shown = page.locator("tr.qrow").evaluate_all("rows => rows.map(r => Number(r.dataset.id))")
    assert shown == [r["top"].pk, r["stakes"].pk]
    page.click("text=Reset")
    page.wait_for_selector(f"#rec-{r['low'].pk}")
    page.wait_for_selector("body[data-desk-ready]")
    assert page.locator("tr.qrow").count() == 7
    assert page.locator(f"#rec-{r['top'].pk} svg.pbar circle.point").count() == 1
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # help overlay
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert page.locator("#help").is_hidden()

    # j selects the first row, a approves it in place (htmx, no reload)
    page.evaluate("window.__noReload = true")
    page.keyboard.press("j")
    assert page.locator(f"#rec-{r['top'].pk}").get_attribute("class").count("selected") == 1
    page.keyboard.press("a")
    page.wait_for_selector(f"#rec-{r['top'].pk} .status-label.st-approved")
    assert page.evaluate("window.__noReload") is True
    assert status(r["top"]) == "approved"

    # selection moved on to the next open item (the high-stakes upgrade): override it
    assert "selected" in page.locator(f"#rec-{r['stakes'].pk}").get_attribute("class")
    page.keyboard.press("o")
    form = page.locator(f"#override-{r['stakes'].pk}")
    assert form.is_visible()
    form.locator("select[name=chosen_offer_code]").select_option("discount_10")
    form.locator("select[name=reason_code]").select_option("too_costly")
    form.locator("input[name=reason_text]").fill("an upgrade is too much for this member")
    form.locator("button[type=submit]").click()
    page.wait_for_selector(f"#rec-{r['stakes'].pk} .status-label.st-overridden")
    d = Decision.objects.get(recommendation=r["stakes"])
    assert (d.action, d.chosen_offer.code, d.reason_code) == ("override", "discount_10", "too_costly")

    # next open item: escalate with a note
    assert "selected" in page.locator(f"#rec-{r['mid'].pk}").get_attribute("class")
    page.keyboard.press("e")
    note = page.locator(f"#escalate-{r['mid'].pk} textarea[name=note]")
    assert note.is_visible()
    note.fill("member complained last week, please check")
    page.locator(f"#escalate-{r['mid'].pk} button[type=submit]").click()
    page.wait_for_selector(f"#rec-{r['mid'].pk} .status-label.st-escalated")
    assert status(r["mid"]) == "escalated"

    # bulk: x toggles the selected row's checkbox; the confirmation states the count
    page.click(f"#rec-{r['low'].pk} td.age")  # clicking a row selects it
    page.keyboard.press("x")
    page.check(f"#rec-{r['low'].pk} ~ tr.qrow input.bulk-box >> nth=0")
    assert page.locator("#bulk-count").text_content() == "2"
    assert page.locator(f"#rec-{r['stakes'].pk} input.bulk-box").count() == 0  # decided rows have none
    page.click("#bulk-approve")
    page.wait_for_selector("text=Approve 2 selected items?")
    page.click("#bulk-confirm")
    page.wait_for_selector("text=Approved 2 of 2 selected.")
    assert status(r["low"]) == "approved"
    assert not page.js_errors, page.js_errors


def test_detail_page_renders_shap_chart_and_is_audited(live_server, role_users, page):
    world = build_world()
    rec = world.recs["esc"]
    login(page, live_server, "senior_manager")
    page.keyboard.press("j")
    page.keyboard.press("j")  # top, then the escalated item
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/queue/{rec.pk}/**")
    page.wait_for_selector("#shap-chart svg.main-svg")
    page.wait_for_selector("#alt-chart svg.main-svg")
    page.wait_for_selector("#history-chart svg.main-svg")
    # base, five features and the total: seven waterfall bars drawn as SVG paths
    assert page.locator("#shap-chart .waterfalllayer .point").count() == 7
    assert "EV above 50" in page.content()
    assert AuditEvent.objects.filter(action="member.view", member_pseudo_id=rec.member.pseudo_id).exists()
    # decide from the detail page: approve, back to the queue with a message
    page.click("form.act-approve button")
    page.wait_for_selector("text=Approved #")
    assert status(rec) == "approved"
    assert not page.js_errors, page.js_errors


def test_managers_see_who_is_reviewing_and_the_cursor_skips_it(live_server, role_users, page, browser, settings):
    settings.QUEUE_PRESENCE_SECONDS = 1  # the open queue asks what changed every second
    world = build_world()
    r = world.recs
    dana = make_user("dana", "manager")
    dana.first_name = "Dana"
    dana.save()
    claim_of = {key: f"/api/recommendations/{rec.pk}/claim/" for key, rec in r.items()}

    # Dana, in her own browser, walks down to the discount item and stays there.
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        dana_page = context.new_page()
        login(dana_page, live_server, "dana")
        with dana_page.expect_response(lambda resp: resp.url.endswith(claim_of["mid"])
                                       and resp.request.method == "POST") as claimed:
            for _ in range(3):  # top, stakes, mid: only the row she stops on is claimed
                dana_page.keyboard.press("j")
        assert claimed.value.json()["claimed"] is True

        # The other manager sees it on the row, and after approving the upgrade the cursor
        # skips Dana's item for the next one nobody has open.
        login(page, live_server, "manager")
        assert page.locator(f"#rec-{r['mid'].pk} .badge.claim").inner_text() == "Dana is reviewing"
        assert page.locator(f"#rec-{r['top'].pk} .badge.claim").count() == 0  # she only passed it
        page.click(f"#rec-{r['stakes'].pk} td.age")
        page.keyboard.press("a")
        page.wait_for_selector(f"#rec-{r['stakes'].pk} .status-label.st-approved")
        page.wait_for_selector(f"#rec-{r['low'].pk}.selected")
        # Dana moves on to the last item, which the manager's cursor claimed first: she is told
        # on the row, and her claim of the discount item goes.
        with dana_page.expect_response(lambda resp: resp.url.endswith(claim_of["mid"])
                                       and resp.request.method == "DELETE"), \
                dana_page.expect_response(lambda resp: resp.url.endswith(claim_of["low"])
                                          and resp.request.method == "POST"):
            dana_page.keyboard.press("j")
        dana_page.wait_for_selector(f"#rec-{r['low'].pk}.claimed .badge.claim")
        assert dana_page.locator(f"#rec-{r['low'].pk} .badge.claim").inner_text() == "manager is reviewing"
        # Without reloading, the manager's queue drops Dana's badge from the item she left ...
        page.wait_for_selector(f"#rec-{r['mid'].pk}:not(.claimed)")
        assert page.locator(f"#rec-{r['mid'].pk} .badge.claim").count() == 0
        # ... and, when Dana approves the top item from her desk, greys it out without buttons.
        dana_page.click(f"#rec-{r['top'].pk} td.age")
        dana_page.keyboard.press("a")
        dana_page.wait_for_selector(f"#rec-{r['top'].pk} .status-label.st-approved")
        page.wait_for_selector(f"#rec-{r['top'].pk}.changed .badge.changed")
        assert page.locator(f"#rec-{r['top'].pk} .badge.changed").inner_text() == "Now approved (decided elsewhere)"
        assert page.locator(f"#rec-{r['top'].pk} form.act-approve").count() == 0
    finally:
        context.close()
    assert not page.js_errors, page.js_errors
