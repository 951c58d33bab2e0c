"""The refusal trade-off chart: which models it places, and where."""

from halluguard.evaluation.tradeoff import draw_tradeoff, tradeoff_points


def model(kind, over_refusal, recall, status="ok"):
    return {"status": status, "kind": kind,
            "summary": {"metrics": {"over_refusal_context_has_answer": {"value": over_refusal},
                                    "abstention_recall": {"value": recall}}}}


RESULTS = {"models": {"sft": model("policy", 0.629, 0.576), "ppo": model("policy", 0.586, 0.559),
                      "gate": model("baseline", 0.1, 0.395), "always_refuse": model("baseline", 1.0, 1.0),
                      "grpo": model("policy", None, None, status="failed"), "dpo": model("policy", None, 0.5)}}


def test_points_are_over_refusal_against_ook_refusal_for_models_with_both_rates():
    points = tradeoff_points(RESULTS)
    assert [p["name"] for p in points] == ["sft", "ppo", "gate"]  # corners, failures and missing rates left out
    assert points[1] == {"name": "ppo", "kind": "policy", "x": 0.586, "y": 0.559}


def test_several_runs_draw_on_one_figure(tmp_path):
    runs = {"cpu": tradeoff_points(RESULTS), "gpu": [{"name": "sft", "kind": "policy", "x": 0.6, "y": 0.7},
                                                     {"name": "ppo", "kind": "policy", "x": 0.66, "y": 0.72}]}
    path = draw_tradeoff(runs, tmp_path / "t.png")
    assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"
