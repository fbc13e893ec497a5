"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, through selenium) against
the running service: uvicorn and a real Celery worker. Every user action is done in the browser and is done
when its outcome shows in the DOM, checked against the API. axe-core audits each page; the forms are walked
with the keyboard. Screenshots of every page go to docs/img/."""

from __future__ import annotations

import json

import pytest

from tests.ui.browser import ADMIN, IMG, Stack, axe_violations, browser, drop_file, tab_order
from tests.workers.fixtures import jsonl, toy_rows

HP = {"learning_rate": 1e-2, "epochs": 2, "batch_size": 8, "patience": 0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_bert_dir):
    s = Stack(tmp_path_factory.mktemp("ui"))
    assert s.http.post("/v1/base-models", json={"path": str(tiny_bert_dir), "name": "tiny"}).status_code == 201
    yield s
    s.stop()


@pytest.fixture(scope="module")
def d(stack, tmp_path_factory):  # type: ignore[no-untyped-def]
    drv = browser(tmp_path_factory.mktemp("chrome"))
    IMG.mkdir(parents=True, exist_ok=True)
    yield drv
    drv.quit()


def ui(d):  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    class Wait(WebDriverWait):
        """On a timeout, say what the page said: its error banner and where it was."""

        def until(self, method, message: str = ""):  # type: ignore[no-untyped-def]
            try:
                return super().until(method, message)
            except TimeoutException:
                banner = d.execute_script("const e = document.getElementById('error'); return e && e.textContent")
                page = d.execute_script(
                    "const t = document.getElementById('view').innerText; return t.slice(0, 600) + ' [...] ' + t.slice(-900)"
                )
                raise AssertionError(f"timed out on {d.current_url}; error {banner!r}; the page:\n{page}") from None

    return Wait(d, 180), ec


def by(what: str):  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    return (By.CSS_SELECTOR, what)


def audit(d, page: str) -> None:  # type: ignore[no-untyped-def]
    bad = axe_violations(d)
    assert bad == [], f"axe-core on {page}: " + json.dumps(bad, indent=1)
    d.save_screenshot(str(IMG / f"{page}.png"))


def test_1_login_and_create_a_task_with_the_keyboard_only(stack, d):
    from selenium.webdriver.common.keys import Keys

    wait, ec = ui(d)
    d.get(stack.url + "/ui")
    key = wait.until(ec.visibility_of_element_located(by("#key")))
    assert d.execute_script("return document.activeElement.id") == "key"  # the key field has the focus
    key.send_keys(ADMIN, Keys.ENTER)
    d.get(stack.url + "/ui#/tasks")
    wait.until(ec.presence_of_element_located(by("#task-form")))
    audit(d, "tasks")
    order = ["task-name", "task-kind", "task-labels", "task-metric", "task-create"]
    assert tab_order(d, "task-name", 4) == order  # labels in reading order, no focus traps
    d.execute_script("document.getElementById('task-name').focus()")
    active = d.switch_to.active_element
    active.send_keys("sentiment", Keys.TAB, Keys.TAB)  # name; kind stays classification
    d.switch_to.active_element.send_keys("neg,pos", Keys.ENTER)  # labels, then submit from the keyboard
    wait.until(ec.presence_of_element_located(by("#upload-form")))
    t = stack.http.get("/v1/tasks/sentiment").json()
    assert (t["kind"], t["labels"], t["metric"]) == ("classification", ["neg", "pos"], "accuracy")


def test_2_a_bad_file_shows_its_line_and_stores_nothing(stack, d, tmp_path):
    wait, ec = ui(d)
    d.get(stack.url + "/ui#/tasks/sentiment")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(toy_rows(3)) + b'{"text": "fine", "label": "maybe"}\n')
    wait.until(ec.presence_of_element_located(by("#upload-file"))).send_keys(str(bad))
    err = wait.until(ec.visibility_of_element_located(by("#upload-error"))).text
    assert "bad.jsonl was not stored" in err and "line 4" in err and "label" in err
    assert stack.http.get("/v1/tasks/sentiment/datasets").json()["items"] == []
    audit(d, "task-upload-error")


def test_3_good_files_by_picker_and_by_drop(stack, d, tmp_path):
    from selenium.webdriver.support.ui import Select

    wait, ec = ui(d)
    d.get(stack.url + "/ui#/tasks/sentiment")
    good = tmp_path / "train.jsonl"
    good.write_bytes(jsonl(toy_rows(48, 0)))
    wait.until(ec.presence_of_element_located(by("#upload-file"))).send_keys(str(good))
    wait.until(ec.text_to_be_present_in_element(by("#upload-ok"), "48 train rows"))
    Select(d.find_element(*by("#upload-split"))).select_by_visible_text("validation")
    drop_file(d, "drop", "val.jsonl", jsonl(toy_rows(16, 1)).decode())
    wait.until(ec.text_to_be_present_in_element(by("#upload-ok"), "16 validation rows"))
    stored = stack.http.get("/v1/tasks/sentiment/datasets").json()["items"]
    assert sorted((x["split"], x["row_count"]) for x in stored) == [("train", 48), ("validation", 16)]
    rows = wait.until(lambda drv: len(drv.find_elements(*by("#datasets-table tbody tr"))) == 2 and drv)
    assert all(x["id"] in rows.find_element(*by("#datasets-table")).text for x in stored)
    audit(d, "task")


def test_4_submit_a_training_job_and_watch_it_succeed(stack, d):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    wait, ec = ui(d)
    d.get(stack.url + "/ui#/train?task=sentiment")
    lr = wait.until(ec.presence_of_element_located(by("#hp-learning_rate")))
    options = stack.http.get("/v1/jobs/options").json()["job_types"]["adapter"]["hyperparameters"]
    assert float(lr.get_attribute("value")) == options["learning_rate"]  # the defaults, shown
    assert int(d.find_element(*by("#hp-epochs")).get_attribute("value")) == options["epochs"]
    Select(d.find_element(*by("#train-method"))).select_by_visible_text("ST-A (seq_bn)")
    wait.until(ec.presence_of_element_located(by("#m-rf")))
    for field, value in (("#m-rf", 4), ("#hp-learning_rate", 0.01), ("#hp-epochs", 3), ("#hp-batch_size", 8)):
        box = d.find_element(*by(field))
        box.clear()
        box.send_keys(str(value))
    val = Select(d.find_element(*by("#train-val"))).first_selected_option.get_attribute("value")
    audit(d, "train")
    ActionChains(d).double_click(d.find_element(*by("#train-submit"))).perform()  # a double click ...
    wait.until(ec.presence_of_element_located(by("#job-status")))
    job_id = d.current_url.rsplit("/", 1)[1]
    job = stack.wait_job(job_id)
    assert job["status"] == "succeeded", job
    assert job["spec"]["validation_dataset"] == val and job["spec"]["hyperparameters"]["epochs"] == 3
    assert len(stack.http.get("/v1/jobs?type=adapter").json()["items"]) == 1  # ... makes one job
    wait.until(ec.text_to_be_present_in_element(by("#job-status"), "succeeded"))
    # the charts: uPlot with labelled axes, holding every loss and validation point the events carry
    events = stack.http.get(f"/v1/jobs/{job_id}/events").json()["items"]
    losses = [e for e in events if e["type"] == "progress" and "loss" in e["payload"]]
    evals = [e for e in events if e["type"] == "metric"]
    wait.until(lambda drv: drv.find_element(*by("#loss-chart")).get_attribute("data-points") == str(len(losses)))
    assert d.find_element(*by("#metric-chart")).get_attribute("data-points") == str(len(evals))
    named = [d.find_element(*by(c)).get_attribute("aria-label") for c in ("#loss-chart", "#metric-chart")]
    assert named[0].startswith("Training loss: loss (nats; MSE for regression) by step")
    assert named[1].startswith("Validation: validation accuracy by step")
    assert d.find_elements(*by("#loss-chart canvas")) and d.find_elements(*by("#metric-chart canvas"))
    assert d.find_element(*by("#metric-chart")).get_attribute("data-metric") == "accuracy"
    timeline = d.find_element(*by("#timeline")).text
    assert "status → running" in timeline and "status → succeeded" in timeline and "checkpoint at step" in timeline
    ck = d.find_element(*by("#ckpt-table")).text
    assert f"accuracy {evals[-1]['payload']['accuracy']:.4f}" in ck
    audit(d, "job")


def test_5_cancel_from_the_job_page_shows_in_the_timeline(stack, d):
    wait, ec = ui(d)
    ds = {x["split"]: x["id"] for x in stack.http.get("/v1/tasks/sentiment/datasets").json()["items"]}
    base = stack.http.get("/v1/base-models").json()[0]["id"]
    spec = {"type": "adapter", "task": "sentiment", "base_model": base, "train_dataset": ds["train"]}
    spec |= {"name": "long", "hyperparameters": {**HP, "epochs": 5000}}
    job_id = stack.http.post("/v1/jobs", json=spec).json()["id"]
    d.get(f"{stack.url}/ui#/jobs/{job_id}")
    wait.until(ec.text_to_be_present_in_element(by("#job-status"), "running"))
    d.find_element(*by("#cancel")).click()
    wait.until(ec.text_to_be_present_in_element(by("#timeline"), "cancel requested"))
    wait.until(ec.text_to_be_present_in_element(by("#job-status"), "cancelled"))
    assert stack.wait_job(job_id)["status"] == "cancelled"


def _datasets(stack) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {x["split"]: x["id"] for x in stack.http.get("/v1/tasks/sentiment/datasets").json()["items"]}


def test_6_request_a_fusion_and_read_its_comparison_heat_map_and_lineage(stack, d):
    wait, ec = ui(d)
    ds, base = _datasets(stack), stack.http.get("/v1/base-models").json()[0]["id"]
    spec = {"type": "adapter", "task": "sentiment", "base_model": base, "train_dataset": ds["train"]}
    spec |= {"validation_dataset": ds["validation"], "name": "second", "hyperparameters": HP}
    assert stack.wait_job(stack.http.post("/v1/jobs", json=spec).json()["id"])["status"] == "succeeded"
    ready = stack.http.get("/v1/adapters?status=ready&kind=st_a").json()["items"]
    assert len(ready) == 2
    d.get(stack.url + "/ui#/registry")
    for a in ready:
        wait.until(ec.element_to_be_clickable(by(f"#pick-{a['id']}"))).click()
    wait.until(lambda drv: drv.find_element(*by("#fuse-train")).get_attribute("value") == ds["train"])
    assert d.find_element(*by("#fuse-val")).get_attribute("value") == ds["validation"]  # picked from lists
    audit(d, "registry")
    d.find_element(*by("#fuse")).click()
    wait.until(ec.presence_of_element_located(by("#job-status")))
    job = stack.wait_job(d.current_url.rsplit("/", 1)[1])
    assert job["type"] == "fusion" and job["status"] == "succeeded", job
    assert sorted(job["spec"]["members"]) == sorted(a["id"] for a in ready)
    wait.until(ec.element_to_be_clickable(by("#result-adapter"))).click()
    table = wait.until(ec.presence_of_element_located(by("#comparison")))
    cmp = job["result"]["comparison"]
    text = table.text
    for mid, score in cmp["members"].items():  # each member's validation score, as the job measured it
        assert f"{score:.4f}" in text and f"{job['result']['mean_attention'][mid]:.3f}" in text
    assert d.find_element(*by("#fusion-score")).text == f"{cmp['fusion']:.4f}"
    assert "(best member)" in text and "Winning evaluation" in d.find_element(*by("#fusion-verdict")).text
    layers = job["result"]["attention_per_layer"]["layers"]
    heat = d.find_elements(*by("#heatmap tbody tr"))
    assert len(heat) == len(layers)
    first = [c.text for c in heat[0].find_elements(*by("td.cell"))]
    assert first == [f"{w:.2f}" for w in next(iter(layers.values()))]
    nodes = {n.get_attribute("data-id") for n in d.find_elements(*by("#lineage .lineage-node"))}
    fusion_id = job["result"]["adapter_id"]
    assert nodes == {base, fusion_id, job["id"], *(a["id"] for a in ready)}
    edges = {e.get_attribute("data-edge") for e in d.find_elements(*by("#lineage line.edge"))}
    assert {f"{a['id']}>{fusion_id}" for a in ready} | {f"{job['id']}>{fusion_id}"} <= edges
    audit(d, "fusion")


def test_6b_rank_sources_for_a_task_and_use_the_ranking(stack, d):
    wait, ec = ui(d)
    assert (
        stack.http.post(
            "/v1/tasks", json={"name": "target", "kind": "classification", "labels": ["neg", "pos"]}
        ).status_code
        == 201
    )
    up = stack.http.post(
        "/v1/tasks/target/datasets", data={"split": "train"}, files={"file": ("t.jsonl", jsonl(toy_rows(30, 21)))}
    )
    assert up.status_code == 201, up.text
    d.get(stack.url + "/ui#/tasks/target")
    wait.until(ec.element_to_be_clickable(by("#rank-run"))).click()
    rows = wait.until(lambda drv: drv.find_elements(*by("#rank-table tbody tr")))
    want = stack.http.post("/v1/tasks/target/recommendations", json={"estimator": "logme"}).json()
    assert [r.find_elements(*by("td"))[3].text for r in rows] == [i["source_task"] for i in want["items"]]
    assert [r.find_elements(*by("td"))[4].text for r in rows] == [f"{i['score']:.4f}" for i in want["items"]]
    audit(d, "sources")
    d.find_element(*by("#use-warm")).click()
    link = wait.until(ec.presence_of_element_located(by("#use-job")))
    job = stack.wait_job(link.text)
    assert job["status"] == "succeeded" and job["result"]["warm_start"]["from"] == want["items"][0]["adapter_id"], job
    cfg = {
        i["adapter_id"]: stack.http.get(f"/v1/adapters/{i['adapter_id']}").json()["method_config"]["config"]
        for i in want["items"]
    }
    top = want["items"][0]
    same = [
        i["adapter_id"]
        for i in want["items"]
        if i["kind"] == top["kind"] and cfg[i["adapter_id"]] == cfg[top["adapter_id"]]
    ]
    d.find_element(*by("#use-merge")).click()
    if len(same) >= 2:  # the top sources that share the top one's kind and config merge
        merged = wait.until(ec.presence_of_element_located(by("#use-merged")))
        row = stack.http.get("/v1/adapters/" + merged.get_attribute("href").rsplit("/", 1)[1]).json()
        assert row["method_config"]["merge"]["members"] == same[:3]
    else:  # the form trained "sentiment" with another config than "second": nothing to merge it with
        wait.until(lambda drv: "a merge needs 2" in drv.find_element(*by("#use-result")).text)


def test_7_create_an_ensemble_and_query_it(stack, d):
    from selenium.webdriver.support.ui import Select

    wait, ec = ui(d)
    ds, base = _datasets(stack), stack.http.get("/v1/base-models").json()[0]["id"]
    spec = {"type": "prompts", "task": "sentiment", "base_model": base, "train_dataset": ds["train"]}
    spec |= {"validation_dataset": ds["validation"], "k": 3, "prompt": {"length": 4}, "hyperparameters": HP}
    assert stack.wait_job(stack.http.post("/v1/jobs", json=spec).json()["id"])["status"] == "succeeded"
    d.get(stack.url + "/ui#/ensembles")
    name = wait.until(ec.presence_of_element_located(by("#ens-name")))
    name.send_keys("by-hand")
    assert len(d.find_elements(*by(".ens-pick:checked"))) == 3
    Select(d.find_element(*by("#ens-voting"))).select_by_visible_text("mean_prob")
    d.find_element(*by("#ens-create")).click()
    wait.until(ec.text_to_be_present_in_element(by("#ens-new"), "by-hand"))
    made = [e for e in stack.http.get("/v1/ensembles").json() if e["name"] == "by-hand"]
    assert len(made) == 1 and made[0]["voting"] == "mean_prob" and len(made[0]["prompts"]) == 3
    texts = ["good good film", "awful bad plot"]
    d.find_element(*by("#ensq-text")).send_keys("\n".join(texts))
    Select(d.find_element(*by("#ensq-voting"))).select_by_visible_text("majority")  # early exit is exact for it
    d.find_element(*by("#ensq-early")).click()
    d.find_element(*by("#ensq-run")).click()
    rows = wait.until(lambda drv: len(drv.find_elements(*by("#ensq-table tbody tr"))) == 2 and drv).find_elements(
        *by("#ensq-table tbody tr")
    )
    body = {"inputs": [{"text": t} for t in texts], "early_exit": True, "voting": "majority"}
    want = stack.http.post(f"/v1/ensembles/{made[0]['id']}/predict", json=body).json()["outputs"]
    for row, o in zip(rows, want, strict=True):  # the page shows what the endpoint answers
        cells = [c.text for c in row.find_elements(*by("td"))]
        assert cells[1] == o["label"] and cells[2] == f"{100 * o['agreement']:.0f}%"
        assert cells[3] == ("early exit" if o["early_exit"] else "all prompts")
        shown = ["skipped" if p.get("skipped") else f"{p['label']} ({p['probability']:.2f})" for p in o["per_prompt"]]
        assert cells[4:] == shown
    audit(d, "ensembles")


def test_7b_build_a_tree_try_it_and_save_it(stack, d):
    """Tick two adapters into a stack, predict, then make it an average with a head, and save it."""
    from selenium.webdriver.support.ui import Select

    wait, ec = ui(d)
    st_a = [a for a in stack.http.get("/v1/adapters?kind=st_a&status=ready").json()["items"]][:2]
    d.get(stack.url + "/ui#/try")
    for a in st_a:
        wait.until(ec.element_to_be_clickable(by(f"#tree-pick-{a['id']}"))).click()
    tree = {"stack": [a["id"] for a in st_a]}
    assert json.loads(d.find_element(*by("#tree-json")).get_attribute("value")) == tree
    d.find_element(*by("#tree-text")).send_keys("a good movie")
    d.find_element(*by("#tree-run")).click()
    want = stack.http.post("/v1/predict", json={"composition": tree, "inputs": [{"text": "a good movie"}]}).json()
    wait.until(ec.text_to_be_present_in_element(by("#try-out"), f"head {st_a[1]['id']}"))
    assert d.find_element(*by("#try-label")).text == want["outputs"][0]["label"]
    Select(d.find_element(*by("#tree-block"))).select_by_value("average")
    Select(d.find_element(*by("#tree-head"))).select_by_value(st_a[0]["id"])
    d.find_element(*by("#tree-weights")).send_keys("3, 1")
    d.find_element(*by("#tree-weights")).send_keys("\t")
    average = {"average": [a["id"] for a in st_a], "weights": [3, 1], "head": st_a[0]["id"]}
    wait.until(lambda drv: json.loads(drv.find_element(*by("#tree-json")).get_attribute("value")) == average)
    d.find_element(*by("#tree-name")).send_keys("ui-average")
    d.find_element(*by("#tree-save")).click()
    saved = wait.until(ec.presence_of_element_located(by("#tree-saved")))
    row = stack.http.get("/v1/adapters?kind=composition").json()["items"][0]
    assert row["name"] == "ui-average" and row["id"] in saved.text
    assert row["method_config"]["composition"] == average
    audit(d, "try-tree")


def test_8_try_a_fusion_and_an_expired_key(stack, d):
    from selenium.webdriver.support.ui import Select

    wait, ec = ui(d)
    fusion = stack.http.get("/v1/adapters?kind=fusion").json()["items"][0]
    d.get(stack.url + "/ui#/try")
    Select(wait.until(ec.presence_of_element_located(by("#try-target")))).select_by_value(f"adapter:{fusion['id']}")
    d.find_element(*by("#try-text")).send_keys("a good movie")
    d.find_element(*by("#try-run")).click()
    heat = wait.until(ec.presence_of_element_located(by("#try-heatmap")))
    want = stack.http.post("/v1/predict", json={"adapter": fusion["id"], "inputs": [{"text": "a good movie"}]}).json()
    assert d.find_element(*by("#try-label")).text == want["outputs"][0]["label"]
    assert len(heat.find_elements(*by("td.cell"))) >= 2
    audit(d, "try")
    d.get(stack.url + "/ui#/jobs")
    wait.until(ec.presence_of_element_located(by("#jobs-list table")))
    audit(d, "jobs")
    # a dataset that trained live adapters cannot be deleted: the page says what uses it, and it stays
    train = _datasets(stack)["train"]
    d.get(stack.url + "/ui#/tasks/sentiment")
    wait.until(ec.element_to_be_clickable(by(f'button.delete[data-id="{train}"]'))).click()
    err = wait.until(ec.visibility_of_element_located(by("#error"))).text
    assert f"dataset {train} is in use" in err and "adapter ad_" in err
    assert stack.http.get(f"/v1/datasets/{train}").status_code == 200
    # an expired key shows a clear message and asks for a key again
    d.execute_script("sessionStorage.setItem('composer-key', 'revoked-key-0000000000')")
    d.get(f"{stack.url}/ui#/registry")
    err = wait.until(ec.visibility_of_element_located(by("#error")))
    assert "unknown, revoked or expired" in err.text
    assert d.find_element(*by("#login")).is_displayed()


def test_9_a_killed_worker_shows_as_requeued_and_resumed_on_the_job_page(stack, d):
    wait, ec = ui(d)
    ds, base = _datasets(stack), stack.http.get("/v1/base-models").json()[0]["id"]
    spec = {"type": "adapter", "task": "sentiment", "base_model": base, "train_dataset": ds["train"]}
    spec |= {"name": "victim", "hyperparameters": {**HP, "epochs": 400, "batch_size": 2, "checkpoint_every_steps": 50}}
    job_id = stack.http.post("/v1/jobs", json=spec).json()["id"]
    d.execute_script(f"sessionStorage.setItem('composer-key', '{ADMIN}')")  # the last test ended logged out
    d.get(f"{stack.url}/ui#/jobs/{job_id}")
    wait.until(lambda drv: len(drv.find_elements(*by("#timeline .ev-checkpoint"))) >= 2)
    stack.restart_worker(kill=True)  # kill -9 mid-training; the new worker's sweep requeues the job
    wait.until(ec.text_to_be_present_in_element(by("#timeline"), "requeued (attempt 1)"))
    wait.until(ec.text_to_be_present_in_element(by("#timeline"), "resumed from the checkpoint at step"))
    wait.until(ec.text_to_be_present_in_element(by("#job-status"), "succeeded"))
    events = stack.http.get(f"/v1/jobs/{job_id}/events").json()["items"]
    resumed = next(e["payload"] for e in events if e["type"] == "resumed")
    assert (
        f"resumed from the checkpoint at step {resumed['from_step']} (attempt 2)"
        in d.find_element(*by("#timeline")).text
    )
    rows = "return [...document.querySelectorAll('#ckpt-table tbody tr')].map((r) => r.innerText.split(/\\s+/))"
    # the table is redrawn each second until the job ends: read it in one script, and wait for its last state
    kept = wait.until(lambda drv: (r := drv.execute_script(rows)) and r[-1][1] == "2" and r)
    assert int(kept[-1][0]) > resumed["from_step"]  # the checkpoint kept is the second attempt's, past the resume
