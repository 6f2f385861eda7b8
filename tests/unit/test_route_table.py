"""docs/routes.md is generated from the code and current; every model-facing route goes through ModelService."""

from __future__ import annotations

from scripts import route_table


def test_routes_page_is_current() -> None:
    assert route_table.main(["--check"]) == 0, "run: python -m scripts.route_table"


def test_model_work_goes_through_the_service() -> None:
    page = route_table.render()
    rows = {line.split("|")[2].strip(" `"): line.split("|")[3] for line in page.splitlines() if line.startswith("| ")}
    assert "`infer`" in rows["/v2/models/{model}/infer"]
    assert "`generate`" in rows["/v1/chat/completions"] and "`generate`" in rows["/v1/completions"]
    assert "`embed`" in rows["/v1/embeddings"]
    # no route reaches a backend except through infer/generate/embed (a request's keep_alive only changes how
    # long the model stays loaded afterwards)
    for path, calls in rows.items():
        if path.startswith(("/v1/chat", "/v1/completions", "/v1/embeddings")) or path.endswith("/infer"):
            work = [c for c in calls.replace(",", " ").split() if c != "`set_keep_alive`"]
            assert len(work) == 1 and work[0] in ("`infer`", "`generate`", "`embed`"), (path, calls)
