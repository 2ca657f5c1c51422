"""DVC stage `evaluate`: every registered metric of the EMA model (alae/metrics): FID, KID and
precision / recall of generations and of reconstructions, and the data floor, in the
`evaluate.features` space (resized for Inception as `evaluate.resize` says) against the
`evaluate.reference` split; PPL; the linear probe of E(x) beside the same probe on pixels; the
reconstruction error and distance (`evaluate.rec_distance`). Each metric's protocol (sample
sizes, reference split, KID's subsets, P/R's k, PPL's crop) is the MLflow tag
`alae.protocol.<metric>`.

The reference split's statistics come from the refstats stage's file (`--refstats`) when it was
made for this space, featurenet, split, data and the model's resolution; otherwise they are
computed here. Feature statistics are memoised in `.alae/cache/stats/` (alae/metrics/stats.py:
keyed by everything that moves them, so a cached number is the one a fresh pass computes;
`ALAE_STATS_CACHE=off` computes every time).
"""
import json
import sys
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.checkpoint import load_model  # noqa: E402
from alae.config import load_params  # noqa: E402
from alae.errors import CheckpointError, exits_cleanly  # noqa: E402
from alae.io import write_json  # noqa: E402
from alae.metrics import METRICS_PROTOCOL, note, provenance, run_metrics  # noqa: E402
from alae.devices import resolve_device  # noqa: E402
from alae.metrics.features import ClassifierFeatures, load_extractor  # noqa: E402
from alae.metrics.ppl import load_distance  # noqa: E402
from alae.metrics.refstats import load_reference  # noqa: E402
from alae.metrics.stats import StatsCache  # noqa: E402
from alae.tracking import pipeline_run, repo_root  # noqa: E402


def ppl_classifier(extractor, featurenet: str, device):
    """The featurenet for PPL's and the reconstructions' classifier distance: the FID extractor
    itself in classifier space; in another space the featurenet file when it is a classifier
    (the dataset had labels to train it), else None (a selfsup featurenet is not the classifier
    distance the keys name)."""
    if extractor.name == "classifier":
        return extractor
    try:
        found = ClassifierFeatures.from_file(featurenet, device)
    except CheckpointError:
        return None
    return found if found.name == "classifier" else None


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--model", "model_path", default="models/alae.pt", show_default=True)
@click.option("--featurenet", default="models/featurenet.pt", show_default=True)
@click.option("--refstats", default=None, help="test-split statistics from the refstats stage")
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--out", default="metrics/eval.json", show_default=True)
@exits_cleanly
def main(params_path: str, model_path: str, featurenet: str, refstats: str, shards: str,
         out: str) -> None:
    params = load_params(params_path)
    cfg = params.evaluate
    device = resolve_device(cfg.device, "evaluate.device")
    model, _, meta = load_model(model_path, device)
    extractor = load_extractor(cfg.features, featurenet, device, resize=cfg.resize)
    reference = None
    if refstats:
        reference = load_reference(refstats, extractor, shards, int(model.resolution),
                                   cfg.reference)
        if reference is None:
            note(f"{refstats} is at another resolution than the model's "
                 f"{model.resolution}; computing the reference here")
    classifier = ppl_classifier(extractor, featurenet, device) \
        if "classifier" in (cfg.ppl_distance, cfg.rec_distance) else None
    distance = load_distance(cfg.ppl_distance, classifier, device)
    rec_distance = load_distance(cfg.rec_distance, classifier, device, "evaluate.rec_distance")
    with pipeline_run(params, "evaluate") as run:
        results = run_metrics(model, extractor, shards, cfg, reference=reference,
                              ppl_distance=distance, rec_distance=rec_distance,
                              cache=StatsCache.default(repo_root()))
        metrics = {k: v for r in results for k, v in r.values.items()}
        # The protocol beside the numbers, so that `dvc exp show` shows which one each run used.
        write_json(out, {**metrics, "metrics_protocol": METRICS_PROTOCOL})
        run.log_metrics(metrics)
        # Every number is tied to its protocol and to the exact featurenet file it came from.
        run.set_tags({f"alae.{k}": v
                      for k, v in provenance(extractor, distance, rec_distance).items()})
        # ...and to what else fixed it: sample sizes, KID's subsets, P/R's k.
        run.set_tags({f"alae.protocol.{r.metric}": json.dumps(r.protocol, sort_keys=True)
                      for r in results})
        if meta.get("run_key") != run.key:
            run.set_tags({"alae.trained_by": meta.get("run_id", "unknown")})
    click.echo("evaluate: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
