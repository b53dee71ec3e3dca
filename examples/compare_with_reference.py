"""Checks memprune's numbers against the independent reference implementation
(examples/reference_metrics.py) on the exact views memprune used:

    memprune measure unit  CKPT --dump-views D/unit  --json D/unit.json
    memprune measure layer CKPT --reference REF --dump-views D/layer --json D/layer.json
    python examples/compare_with_reference.py unit  CKPT D/unit D/unit.json
    python examples/compare_with_reference.py layer CKPT REF D/layer D/layer.json

Prints the largest absolute difference per quantity and exits non-zero above 1e-4.
"""
import json, os, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))


def reference(args):
    out = subprocess.run([sys.executable, os.path.join(here, "reference_metrics.py")] + args,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    kind = sys.argv[1]
    worst = {}

    def diff(what, a, b):
        worst[what] = max(worst.get(what, 0.0), abs(a - b))

    if kind == "unit":
        ckpt, views, mine = sys.argv[2:5]
        mine = json.load(open(mine))
        reduce = mine["extra"]["reduce"]
        ref = reference(["unit", "--model", ckpt, "--views-dir", views, "--reduce", reduce])
        for lm, lr in zip(mine["layers"], ref["layers"]):
            assert lm["name"] == lr["name"], (lm["name"], lr["name"])
            for u, x in enumerate(lm["units"]):
                diff("unit_mem", x["score"], lr["unit_mem"][u])
                diff("mu_max", x["mu_max"], lr["mu_max"][u])
                diff("mu_rest", x["mu_rest"], lr["mu_rest"][u])
                worst["argmax mismatches"] = worst.get("argmax mismatches", 0) + (x["argmax"] != lr["argmax"][u])
    else:
        ckpt, refckpt, views, mine = sys.argv[2:6]
        mine = json.load(open(mine))
        ref = reference(["layer", "--model", ckpt, "--reference", refckpt, "--views-dir", views])
        for lm, lr in zip(mine["layers"], ref["layers"]):
            assert lm["name"] == lr["name"]
            diff("layer_mem", lm["layer_mem"], lr["layer_mem"])
            if lr["dlayer_mem"] is not None:
                diff("dlayer_mem", lm["dlayer_mem"], lr["dlayer_mem"])
    for k, v in worst.items():
        print(f"{k:<20} {v:.3g}")
    bad = [k for k, v in worst.items() if v > 1e-4]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
