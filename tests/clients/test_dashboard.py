"""The dashboard (`/dashboard`) in a real browser: Debian's chromium, headless, driven
through its chromedriver by selenium, against `vbs serve` on the embedded default.

A bad token is refused with the service's own message; a signed-in user sees a volume,
starts its backup from the page and watches the progress move, restores it from the
page (the restored volume holds the same bytes), and an admin sees the nodes and the
repository. Screenshots of each step go to $VBS_SCREENSHOTS (target/screenshots).
"""
import hashlib
import os
import random
import time
import uuid
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from conftest import REPO, start_vbs

SHOTS = Path(os.environ.get("VBS_SCREENSHOTS", REPO / "target" / "screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
GIB = 1 << 30


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("vbs-dashboard")
    data = work / "data"
    data.mkdir()
    s = start_vbs(data, work / "vbs.log")
    yield s, data
    s.stop()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(what, check, timeout=60.0, every=0.1):
    """Polls `check` until it returns something truthy; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = check()
        except StaleElementReferenceException:  # the table was redrawn meanwhile
            got = None
        if got:
            return got
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def shot(driver, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def sign_in(driver, base, token, project=""):
    driver.get(f"{base}/dashboard")
    driver.find_element(By.ID, "token").send_keys(token)
    if project:
        driver.find_element(By.ID, "project").send_keys(project)
    driver.find_element(By.ID, "signin-button").click()


def cell_text(driver, table, row_id, column):
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr[data-id='{row_id}']")
    return rows[0].find_elements(By.TAG_NAME, "td")[column].text if rows else None


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def test_dashboard_in_chromium(server, browser):
    srv, data = server
    base = srv.url
    project = uuid.uuid4().hex
    user = f"alice:{project}"

    # The page itself needs no token; it is not the version document at /.
    page = requests.get(f"{base}/dashboard", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert requests.get(f"{base}/", timeout=10).json()["versions"]

    # A bad token (a noauth token without its project): the service's message, and no
    # project shown.
    sign_in(browser, base, "alice:", project)
    error = wait("the error", lambda: browser.find_element(By.ID, "error").text)
    assert error == "The request you have made requires authentication."
    assert not browser.find_element(By.ID, "app").is_displayed()
    shot(browser, "1-bad-token")

    # A volume with 2 GiB of random data (a backup of a few seconds), made through the API.
    api = requests.Session()
    api.headers.update({"X-Auth-Token": user})
    made = api.post(f"{base}/v3/{project}/volumes",
                    json={"volume": {"size": 2, "name": "web-data"}}, timeout=30)
    assert made.status_code == 202, made.text
    vol = made.json()["volume"]["id"]
    image = data / "volumes" / f"{vol}.img"
    rng = random.Random(14)
    with open(image, "r+b") as f:
        for _ in range(2 * GIB // (64 << 20)):
            f.write(rng.randbytes(64 << 20))

    # A daily policy at 03:00 UTC, on: the page shows when it runs next.
    made = api.post(f"{base}/v2/{project}/backuppolicy", json={
        "backup_policy_name": "nightly",
        "scheduled_policy": {"start_time": "03:00", "frequency": 1, "rentention_num": 7,
                             "status": "ON"}}, timeout=30)
    assert made.status_code == 200, made.text
    policy = made.json()["backup_policy_id"]

    sign_in(browser, base, user)
    assert wait("the volume row", lambda: cell_text(browser, "volumes", vol, 0)) == "web-data"
    next_run = wait("the policy row", lambda: cell_text(browser, "policies", policy, 5))
    assert next_run.endswith(" 03:00:00"), next_run
    assert browser.find_element(By.ID, "who").text == f"project {project}"
    shot(browser, "2-signed-in")

    # Back it up from the page and watch the progress move.
    browser.find_element(By.CSS_SELECTOR, f"button.backup[data-id='{vol}']").click()
    backup_row = wait("the backup row", lambda: browser.find_elements(
        By.CSS_SELECTOR, "#backups tbody tr[data-id]"))
    backup = backup_row[0].get_attribute("data-id")
    seen = []

    def progress_or_done():
        row = browser.find_element(By.CSS_SELECTOR, f"#backups tbody tr[data-id='{backup}']")
        status = row.get_attribute("data-status")
        pct = row.find_element(By.CSS_SELECTOR, ".progress").get_attribute("data-percent")
        if pct is not None and (not seen or seen[-1] != int(pct)):
            seen.append(int(pct))
            if len(seen) == 2:
                shot(browser, "3-backup-progress")
        return status == "available"

    wait("the backup to finish", progress_or_done, timeout=300, every=0.05)
    print(f"backup progress seen in the page: {seen}")
    assert len(seen) >= 2 and seen == sorted(seen), f"progress seen: {seen}"
    assert cell_text(browser, "backups", backup, 0) == "F"
    assert cell_text(browser, "backups", backup, 4).endswith("GiB")  # stored ~2 GiB
    shot(browser, "4-backup-done")

    # Restore it from the page: a new volume with the same bytes.
    before = {v["id"] for v in api.get(f"{base}/v3/{project}/volumes", timeout=30).json()["volumes"]}
    browser.find_element(By.CSS_SELECTOR, f"button.restore[data-id='{backup}']").click()
    wait("the restore to start", lambda: cell_text(browser, "backups", backup, 6) == "restoring"
         or len(api.get(f"{base}/v3/{project}/volumes", timeout=30).json()["volumes"]) > len(before))
    restored = wait("the restored volume", lambda: [
        v for v in api.get(f"{base}/v3/{project}/volumes/detail", timeout=30).json()["volumes"]
        if v["id"] not in before and v["status"] == "available"])[0]
    wait("the restored volume in the page",
         lambda: cell_text(browser, "volumes", restored["id"], 3) == "available")
    wait("the backup available again", lambda: cell_text(browser, "backups", backup, 6) == "available")
    assert sha256(data / "volumes" / f"{restored['id']}.img") == sha256(image)
    shot(browser, "5-restored")

    # An admin also sees the service: the live node and the repository.
    browser.find_element(By.ID, "signout").click()
    sign_in(browser, base, f"admin:{project}")
    wait("the admin section", lambda: browser.find_element(By.ID, "admin").is_displayed())
    nodes = wait("a node", lambda: browser.find_elements(By.CSS_SELECTOR, "#nodes tbody tr td"))
    assert "api" in nodes[1].text and "worker" in nodes[1].text
    packs = wait("the repository totals", lambda: [
        dd.text for dd in browser.find_elements(By.CSS_SELECTOR, "#repository dd")
        if "GiB" in dd.text or "MiB" in dd.text])
    assert packs, "repository totals shown"
    shot(browser, "6-admin")
