"""A resumable run in a real headless Chromium: ``new EventSource(stream_url)``, the page
goes offline mid-run and comes back, and ends with the exact full text.

The page is the README's few lines of JavaScript, served at the app's own origin (Playwright
answers that one URL); the app runs on uvicorn at 127.0.0.1 over a slow emulator.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, Route

from tests.browser_support import ARTIFACTS, BROWSER_MARKS, chat_requests, serve, wait_for

pytestmark = BROWSER_MARKS

REPLY_TOKENS = 160  # 8 s at the browser tests' 50 ms a token: time to drop and come back

PAGE = """<!doctype html>
<html lang="pt-BR"><head><meta charset="utf-8"><title>Execução retomável</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto}
#status{color:#555}#text{white-space:pre-wrap;border:1px solid #ccc;padding:1rem;
min-height:6rem}</style></head>
<body><h1>Uma história sobre o Brasil</h1>
<p>Estado: <span id="status">iniciando…</span> · reconexões: <span id="drops">0</span></p>
<div id="text"></div>
<script>
const show = (s) => { document.getElementById("status").textContent = s; };
const out = document.getElementById("text");
let drops = 0;

// Follow a run: EventSource resumes by itself with Last-Event-ID after a dropped
// connection; when the browser gives up (a reconnection failed) or the network comes
// back, open it again after the last event seen.
function follow(streamUrl) {
  let lastId = "", source = null;
  const open = () => {
    if (lastId) document.getElementById("drops").textContent = ++drops;
    source = new EventSource(lastId ? `${streamUrl}?last_event_id=${lastId}` : streamUrl);
    source.onopen = () => show("recebendo…");
    source.addEventListener("metadata", (e) => { lastId = e.lastEventId; });
    source.addEventListener("data", (e) => {
      lastId = e.lastEventId;
      out.textContent += JSON.parse(e.data);
    });
    source.addEventListener("end", () => { source.close(); show("concluída"); });
    source.addEventListener("error", (e) => {
      if (e.data) { source.close(); show("falhou: " + JSON.parse(e.data).message); return; }
      show("sem conexão, tentando de novo…");
      if (source.readyState === EventSource.CLOSED) setTimeout(open, 1000);
    });
  };
  // the network went away: stop now, and pick up after the last event when it is back
  addEventListener("offline", () => { source.close(); show("sem conexão"); });
  addEventListener("online", open);
  open();
}

(async () => {
  const started = await fetch("/story/runs", {method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify({input: {topic: "Brasil"}})});
  follow((await started.json()).stream_url);
})();
</script></body></html>"""


@pytest.mark.timeout(120)
def test_event_source_survives_going_offline_and_ends_with_the_full_text(page: Page) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    text = page.locator("#text")
    status = page.locator("#status")
    with serve(page, REPLY_TOKENS) as (emu, server):
        def answer(route: Route) -> None:
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=PAGE)

        page.route(f"{server.url}/demo/runs", answer)
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        page.goto(f"{server.url}/demo/runs")
        wait_for(lambda: len(text.text_content() or "") > 40, "the first words", page=page)

        page.context.set_offline(True)
        wait_for(lambda: status.inner_text() == "sem conexão", "the drop", page=page)
        at_drop = text.text_content() or ""
        sent_at_drop = chat_requests(emu)[0].chunks_sent
        page.wait_for_timeout(1500)
        offline_text = text.text_content() or ""
        assert chat_requests(emu)[0].chunks_sent > sent_at_drop, "the run must go on meanwhile"
        page.screenshot(animations="disabled", path=ARTIFACTS / "runs-offline.png", full_page=True)
        assert offline_text == at_drop, "text arrived while the page was offline"

        page.context.set_offline(False)
        wait_for(lambda: status.inner_text() == "concluída", "the end of the run", page=page)
        final = text.text_content() or ""
        page.screenshot(animations="disabled", path=ARTIFACTS / "runs-done.png", full_page=True)

        requests = chat_requests(emu)
        assert len(requests) == 1, "the model must be asked once"
        expected = emu.expected_text(requests[0].body["messages"])
        assert final == expected
        assert final.startswith(offline_text) and len(final) > len(offline_text)
        assert int(page.locator("#drops").inner_text()) >= 1
        resumed = [u for u in urls if "/stream?last_event_id=" in u]
        assert resumed and int(resumed[0].rsplit("=", 1)[1]) > 1
        assert requests[0].chunks_sent == REPLY_TOKENS and not requests[0].client_disconnected
