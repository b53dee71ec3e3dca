#!/usr/bin/env python3
"""The comparison table of docs/COMPRESSION.md: memprune's criteria x {no recovery, recovery}
x {one step, 3 steps} at 30 % and 50 % of the units, on the embedded ResNet9 and MAE ViT,
beside the unpruned model and Torch-Pruning's default (examples/compare_torch_pruning.py).

    python3 examples/compression_table.py run resnet9 l1-norm,unitmem [1rec,3norec,3rec]
    # appends to out/table/results.jsonl
    python3 examples/compression_table.py table                         # the markdown table

Each run is one policy (written to out/table/NAME.yaml): `prune` of `fraction` of every
layer's units (per layer, `mode: remove`), optionally `schedule: {steps: 3}` and a
`recover` with the default settings (with 3 steps, also a 5-epoch recovery between steps). A one-step run with
recovery also gives the no-recovery row: the report's probe "after pruning, before
recovery" is the one-step pruned model. Runs already in results.jsonl are skipped.
Plain Python (no PyTorch): it runs the memprune binary (target/release/memprune).
"""
import json
import os
import subprocess
import sys

MODELS = {
    "resnet9": "assets/models/resnet9-simclr-f.safetensors",
    "vit": "assets/models/vit-mae-f.safetensors",
}
OUT = "out/table"
RESULTS = os.path.join(OUT, "results.jsonl")
BIN = os.environ.get("MEMPRUNE", "target/release/memprune")


def policy(model, fraction, criterion, steps, recover, name):
    lines = [
        f"model: {MODELS[model]}",
        "metrics: {views: 10, seed: 0}",
        "actions:",
        f"  - prune: {{criterion: {criterion}, fraction: {fraction}, scope: per-layer, mode: remove}}",
    ]
    if recover:
        lines.append("  - recover: {}")
    if steps > 1:
        # Between steps a shorter recovery (5 epochs), then the policy's `recover`.
        lines.append(f"schedule: {{steps: {steps}{', recover: {epochs: 5}' if recover else ''}}}")
    lines += [
        "evaluation: {probe: true, knn: true, speed: true}",
        f"output: {{checkpoint: {OUT}/{name}.safetensors, json: {OUT}/{name}.json}}",
    ]
    return "\n".join(lines) + "\n"


def done():
    if not os.path.exists(RESULTS):
        return set()
    with open(RESULTS) as f:
        return {json.loads(l)["name"] for l in f if l.strip()}


def run(model, criteria, configs):
    """Cheap configurations first: every row of one configuration before the next."""
    os.makedirs(OUT, exist_ok=True)
    have = done()
    skip = set(os.environ.get("SKIP", "").split(","))
    for steps, recover in configs:
        for fraction in (0.3, 0.5):
            for criterion in criteria:
                name = f"{model}-{criterion}-{int(fraction * 100)}-{steps}step-{'rec' if recover else 'norec'}"
                if name in have or name in skip:
                    continue
                path = os.path.join(OUT, name + ".yaml")
                js = os.path.join(OUT, name + ".json")
                stdout = ""
                # A report already written for this policy (by an earlier, interrupted
                # driver) is taken as it is.
                if not (os.path.exists(js) and os.path.exists(path)
                        and os.path.getmtime(js) > os.path.getmtime(path)):
                    with open(path, "w") as f:
                        f.write(policy(model, fraction, criterion, steps, recover, name))
                    r = subprocess.run([BIN, "--policy", path, "-q"], capture_output=True, text=True)
                    if r.returncode != 0:
                        print(name, "failed:", r.stderr.strip(), file=sys.stderr)
                        continue
                    stdout = r.stdout
                j = json.load(open(js))
                row = {"name": name, "model": model, "fraction": fraction, "criterion": criterion,
                       "steps": steps, "recover": recover, "report": j, "stdout": stdout}
                with open(RESULTS, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(name, "done", flush=True)


def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def table():
    rows = [json.loads(l) for l in open(RESULTS) if l.strip()]
    tp = []
    if os.path.exists(os.path.join(OUT, "torch_pruning.jsonl")):
        tp = [json.loads(l) for l in open(os.path.join(OUT, "torch_pruning.jsonl")) if l.strip()]
    print("| model | units | criterion | steps | recovery | parameters | MACs | forward speed | probe top-1 % | kNN top-1 % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        b = mine[0]["report"]["before"]
        print(f"| {model} | unpruned | - | - | - | {b['cost']['params']:,} | {b['cost']['macs'] / 1e6:.1f} M | 1.00x "
              f"| {pct(b['probe_accuracy'])} | {pct((b.get('knn') or {}).get('top1'))} |")
        for fraction in (0.3, 0.5):
            for r in mine:
                if r["fraction"] != fraction:
                    continue
                rep, a = r["report"], r["report"]["after"]
                rec = rep.get("recovery") or {}
                speed = "-"
                if a["cost"].get("images_per_s") and rep["before"]["cost"].get("images_per_s"):
                    speed = f"{a['cost']['images_per_s'] / rep['before']['cost']['images_per_s']:.2f}x"
                common = (f"| {model} | {int(fraction * 100)} % | {r['criterion']} | {r['steps']} | "
                          )
                cost = f"{a['cost']['params']:,} | {a['cost']['macs'] / 1e6:.1f} M | {speed}"
                if r["steps"] == 1 and r["recover"]:
                    print(common + f"no | {cost} | {pct(rec.get('pruned_probe_accuracy'))} | "
                          f"{pct((rec.get('pruned_knn') or {}).get('top1'))} |")
                print(common + f"{'yes' if r['recover'] else 'no'} | {cost} | {pct(a['probe_accuracy'])} | "
                      f"{pct((a.get('knn') or {}).get('top1'))} |")
            for t in tp:
                if t["model"] == model and t["fraction"] == fraction:
                    a = t["report"]["before"]
                    print(f"| {model} | {int(fraction * 100)} % | Torch-Pruning {t['importance']} | {t['steps']} | no "
                          f"| {a['cost']['params']:,} | {a['cost']['macs'] / 1e6:.1f} M | - | {pct(a['probe_accuracy'])} "
                          f"| {pct((a.get('knn') or {}).get('top1'))} |")


if __name__ == "__main__":
    if sys.argv[1] == "run":
        configs = [(1, True), (3, False), (3, True)]
        if len(sys.argv) > 4:  # e.g. 1rec,3norec
            configs = [(int(c[0]), c[1:] == "rec") for c in sys.argv[4].split(",")]
        run(sys.argv[2], sys.argv[3].split(","), configs)
    else:
        table()
