"""The execution page's event filter over plain HTTPS: by message type and source, in the page's
windows, the window links and the downloads; bad values are a 400 page."""

from __future__ import annotations

import html
import json
import logging

from .conftest import Client, RunningMaster, Runs


def _mixed(runs: Runs, agent_id: str) -> int:
    """An ended execution of 1300 lines: 1200 on stdout, then 60 warnings on stderr and 40 log
    records interleaved in blocks, so the filtered log is short and the unfiltered one is long."""
    lease = runs.start(agent_id)
    for block in range(0, 1200, 400):
        runs.lines(lease, [f"out {i:04d}" for i in range(block + 1, block + 401)])
        runs.lines(
            lease, [f"warn {block // 400}-{i:02d}" for i in range(20)], level=logging.WARNING, source="stderr"
        )
    runs.lines(lease, [f"log {i:02d}" for i in range(40)], source="log")
    runs.finish(lease)
    return lease.execution_id


def test_the_page_shows_only_the_messages_of_the_chosen_type_and_source(
    client: Client, master: RunningMaster, runs: Runs
) -> None:
    execution_id = _mixed(runs, master.add_worker("worker1"))
    client.sign_in("vera")
    whole = client.get(f"/executions/{execution_id}")
    assert "1300 messages." in whole.body and 'data-live="true"' in whole.body
    assert '<option value="any" selected>any</option>' in whole.body
    assert '<option value="warning">warning</option>' in whole.body
    assert "live tail is off" not in whole.body
    warnings = client.get(f"/executions/{execution_id}?type=warning&source=")
    assert warnings.status == 200 and "60 messages matching the filter." in warnings.body
    assert (
        warnings.body.count('class="msg"') == 60
        and "warn 2-19<" in warnings.body
        and "out 0001<" not in warnings.body
    )
    assert '<option value="warning" selected>warning</option>' in warnings.body
    assert 'data-live="false"' in warnings.body
    assert "Filtered: the live tail is off" in warnings.body
    assert f'<a href="/executions/{execution_id}">Unfiltered live view</a>' in warnings.body
    by_source = client.get(f"/executions/{execution_id}?type=any&source=log")
    assert by_source.body.count('class="msg"') == 40 and "log 39<" in by_source.body
    assert 'value="log"' in by_source.body, "the source stays in its field"
    family = client.get(f"/executions/{execution_id}?source=std")
    assert "1260 messages matching the filter." in family.body and "log 00<" not in family.body
    none = client.get(f"/executions/{execution_id}?type=error")
    assert "0 messages matching the filter." in none.body and 'class="msg"' not in none.body


def test_a_long_filtered_log_keeps_the_filter_in_its_windows_and_downloads(
    client: Client, master: RunningMaster, runs: Runs
) -> None:
    execution_id = _mixed(runs, master.add_worker("worker1"))
    client.sign_in("vera")
    page = client.get(f"/executions/{execution_id}?type=information&source=stdout")
    assert "1200 messages matching the filter." in page.body
    assert page.body.count('class="msg"') == 1000 and "200 messages not shown" in page.body
    body = html.unescape(page.body)
    assert 'href="?type=information&source=stdout&window=2">501–1000</a>' in body
    assert '<input type="hidden" name="type" value="information">' in body
    assert '<input type="hidden" name="source" value="stdout">' in body
    window = client.get(f"/executions/{execution_id}?type=information&source=stdout&window=3")
    assert window.body.count('class="msg"') == 200
    assert "out 1001<" in window.body and "out 1200<" in window.body and ">warn " not in window.body
    assert "Messages 1001 to 1200 of 1200 (window 3 of 3)" in window.body
    assert (
        f'/executions/{execution_id}?type=information&amp;source=stdout">First and last messages</a>'
        in window.body
    )
    assert '/log.txt?type=information&amp;source=stdout" download' in window.body, "window dropped"
    text = client.get(f"/executions/{execution_id}/log.txt?type=warning&source=stderr")
    assert text.status == 200
    lines = text.body.splitlines()
    assert len(lines) == 60 and all(" warning stderr: warn " in line for line in lines)
    rows = [
        json.loads(r) for r in client.get(f"/executions/{execution_id}/log.jsonl?source=lo").body.splitlines()
    ]
    assert [r["message"] for r in rows] == [f"log {i:02d}" for i in range(40)]
    assert {(r["type"], r["source"]) for r in rows} == {("information", "log")}
    everything = client.get(f"/executions/{execution_id}/log.jsonl")
    assert len(everything.body.splitlines()) == 1300, "no filter, every line"


def test_bad_filter_values_are_a_clear_400_page(client: Client, master: RunningMaster, runs: Runs) -> None:
    execution_id = _mixed(runs, master.add_worker("worker1"))
    client.sign_in("vera")
    for query, says in (
        ("type=loud", "type=&#39;loud&#39; in the address is not one of any, pre_validate"),
        ("type=70", "is not one of any"),
        ("source=" + "x" * 17, "is not a message source"),
        ("source=std%0Aout", "is not a message source"),
        ("type=warning&window=0", "out of range"),
    ):
        for path in (f"/executions/{execution_id}", f"/executions/{execution_id}/log.txt"):
            answer = client.get(f"{path}?{query}")
            if "window" in query and path.endswith(".txt"):
                continue  # a download has no windows
            assert answer.status == 400, (path, query, answer.body[:300])
            assert says in answer.body and answer.headers["Content-Type"].startswith("text/html"), (
                answer.body[:800]
            )
    assert client.get(f"/executions/{execution_id}/log.jsonl?type=nope").status == 400
