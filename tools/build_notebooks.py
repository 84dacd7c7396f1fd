"""Builds notebooks/01_split.ipynb ... 07_baselines.ipynb: the notebooks' single source.

Edit the cells here and run `.venv/bin/python tools/build_notebooks.py` from the repository root;
tests/test_params.py checks that the committed notebooks equal this script's output. Notebooks hold
parameters, calls into lib/vitedit, tables and plots only.
"""
import sys
from pathlib import Path

import nbformat as nbf
from nbformat.v4 import new_code_cell as code
from nbformat.v4 import new_markdown_cell as md
from nbformat.v4 import new_notebook

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "notebooks"

def param_cell(src):
    c = code(src); c.metadata["tags"] = ["parameters"]; return c

def write(path, cells):
    for i, c in enumerate(cells):  # stable ids: regenerating changes nothing that did not change
        c["id"] = f"cell-{i:02d}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbf.validate(nb)
    nbf.write(nb, OUT / Path(path).name)

HEAD = "from vitedit import nb\n_before = set(globals())  # parameters defined after this line are validated"

write("notebooks/01_split.ipynb", [
    md("# 01 · Data and the 4-set protocol\n\n"
       "Loads the dataset (validated: file, MD5, keys, shapes, labels) and splits it:\n\n"
       "| set | source | used for |\n|---|---|---|\n"
       "| **FT-Train** | stratified `ft_train_ratio` of official train | fine-tuning, editing statistics |\n"
       "| **Edit-Discovery** | rest of official train | errors to edit (never trained on) |\n"
       "| **FT-Val** | official val | early stopping / model selection only |\n"
       "| **Test** | official test | final evaluation only |\n\n"
       "Writes `split_indices.npz`, `split_meta.json` and `data_split_info.csv` into the run folder."),
    code(HEAD),
    param_cell('dataset = "retinamnist"  # MedMNIST 2D flag, or liver4 / liver2s / liver2a\n'
               'size = 28  # MedMNIST image size: 28, 64, 128 or 224\n'
               'data_path = None  # file/folder; default search: $VITEDIT_DATA_ROOT, data/, ~/.medmnist\n'
               'download = False  # allow medmnist to download a missing file\n'
               'verify_md5 = True\n'
               'liver_split_seed = 0  # fixed 60/20/20 split of the liver data\n'
               'ft_train_ratio = 0.9\n'
               'seed = 42\n'
               'run_dir = None  # default: reports/runs/interactive_<dataset>_<hash>\n'
               'progress = True'),
    code('run = nb.start("01_split", globals(), _before)\nP = run.params\n'
         'import pandas as pd\nfrom vitedit import datasets, plots, splits\n\n'
         'data = datasets.load(P)\n'
         'print(f"{data.info.name}: {data.info.task}, {data.info.n_classes} classes, {data.info.n_channels} channel(s); file {data.path} (MD5 {data.md5})")\n'
         'pd.DataFrame({"class": range(data.info.n_classes), "name": data.info.label_names})'),
    md("## The split"),
    code('split = splits.make_split(data, P["ft_train_ratio"], P["seed"])\n'
         'splits.check_split(split, data)  # disjoint; FT-Train ∪ Edit-Discovery = official train\n'
         'run.begin()\nsplits.save(split, run.dir, data)\n'
         'counts = splits.counts_table(split, data)\ncounts'),
    code('plots.class_distribution(counts, data.info.label_names, path=run.figure("class_distribution.png"));'),
    md("## Example images (FT-Train)"),
    code('plots.example_images(split.images(data, "ft_train"), split.labels(data, "ft_train"), data.info.label_names,\n'
         '                      seed=P["seed"], path=run.figure("examples.png"));'),
    code('run.finish(split=split.digest)'),
])

write("notebooks/02_train.ipynb", [
    md("# 02 · Fine-tuning on FT-Train\n\n"
       "Trains the configured timm ViT on **FT-Train only** and selects the epoch with the best **FT-Val** "
       "accuracy (early stopping). The checkpoint's name encodes everything that determined its weights; "
       "an identical checkpoint is reused. Writes `training_metrics.csv`, `checkpoint.json` (the exact "
       "checkpoint, by path and sha256) and `set_accuracy.csv` into the run folder."),
    code(HEAD),
    param_cell('# data (must match the run folder\'s split from 01)\n'
               'dataset = "retinamnist"\nsize = 28\ndata_path = None\ndownload = False\nverify_md5 = True\n'
               'liver_split_seed = 0\nft_train_ratio = 0.9\nseed = 42\n'
               '# model and training\n'
               'model = "vit_small_p4_28"  # see vitedit.models.MODEL_CONFIGS\n'
               'pretrained = None  # None: the model config decides (vit_base_patch16_224: ImageNet weights)\n'
               'weights_path = None  # local weights file for pretrained models\n'
               'epochs = 30\nbatch_size = 64\neval_batch_size = 256\nlr = 0.001\nweight_decay = 0.05\n'
               'warmup_frac = 0.1\nlabel_smoothing = 0.1\ndrop_path = 0.1\naugment = True\n'
               'patience = 10  # epochs without FT-Val improvement before stopping (0: never)\n'
               'resume = False\ncheckpoint_dir = "checkpoints"\n'
               'device = "auto"\npin_memory = None\nnum_threads = None\n'
               'run_dir = None  # default: reports/runs/interactive_<dataset>_<hash> (as in 01)\n'
               'progress = True'),
    code('run = nb.start("02_train", globals(), _before)\nP = run.params\n'
         'import pandas as pd\nfrom vitedit import datasets, evaluation, models, plots, splits, train\n\n'
         'data = datasets.load(P)\nsplit = splits.load(run.dir, expect=P)\n'
         'cfg = models.get_config(P["model"])\ndevice = models.resolve_device(P["device"])\n'
         'print(f"{P[\'model\']}: {cfg.description}; device {device}")'),
    md("## Training"),
    code('run.begin()\n'
         'result = train.fit(P, data, split, progress=P["progress"])\n'
         'ref = train.record_in_run(run.dir, result, split)\n'
         'result.history.to_csv(run.dir / "training_metrics.csv", index=False)\n'
         'print("checkpoint:", result.checkpoint, "(reused)" if result.reused else "(trained)")\n'
         'print(f"selected epoch {result.meta[\'best_epoch\']} of {len(result.history)}, FT-Val acc {result.meta[\'best_val_acc\']:.4f}")\n'
         'result.history.round(4)'),
    code('plots.training_curves(result.history, result.meta["best_epoch"], path=run.figure("training_curves.png"));'),
    md("## Accuracy of the selected checkpoint on every set\n\n"
       "FT-Val chose the epoch; Test is reported here only, never used for a choice. "
       "Edit-Discovery errors are the candidates for editing."),
    code('acc = evaluation.set_accuracy_table(result.model, data, split, cfg, P["eval_batch_size"], device)\n'
         'acc.to_csv(run.dir / "set_accuracy.csv", index=False)\nacc.round(4)'),
    code('run.finish(checkpoint=str(result.checkpoint), best_epoch=result.meta["best_epoch"],\n'
         '           val_acc=result.meta["best_val_acc"], test_acc=float(acc.loc[acc.set == "Test", "accuracy"].iloc[0]))'),
])

DATA_PARAMS = ('# data (must match the run folder\'s split from 01)\n'
               'dataset = "retinamnist"\nsize = 28\ndata_path = None\ndownload = False\nverify_md5 = True\n'
               'liver_split_seed = 0\nft_train_ratio = 0.9\nseed = 42\n')
write("notebooks/03_locate.ipynb", [
    md("# 03 · Locate: causal tracing of the errors\n\n"
       "For the fine-tuned model's errors on **Edit-Discovery** (never trained on), the patch embeddings are "
       "corrupted with Gaussian noise (patch positions only) and, one restoration at a time, a clean activation "
       "is put back: the block's output (`block`), its MLP output (`mlp`) or its attention output (`attn`). "
       "The indirect effect IE = p(restored) − p(corrupted) of the class the model predicts, as a share of the "
       "total effect TE = p(clean) − p(corrupted), says how much of the wrong decision that layer carries.\n\n"
       "*Trivial cases:* restoring a block's output on **all** tokens makes the state clean, so `block`/`all` "
       "gives IE/TE = 1 at every layer (an identity check, computed in one row); restoring the last block's "
       "**CLS** state reproduces the clean output exactly, so `block`/`cls` rankings always favour the last "
       "layers. Add `cls` to `trace_scopes` for that picture (about 2.4x the tracing time). The layers handed "
       "to editing are ranked from the `mlp` kind (the module AlphaEdit edits) unless `rank_kind` says "
       "otherwise.\n\n"
       "Writes `layer_importance.csv`, `layer_statistics.csv`, `edit_layers.json` and `locate_summary.json`."),
    code(HEAD),
    param_cell(DATA_PARAMS +
               '# tracing\n'
               'max_samples = 50  # errors traced (first ones in Edit-Discovery order)\n'
               'num_ablations = 32  # noisy copies per sample\n'
               'noise_scale = 3.0  # noise std: noise_scale x std of FT-Train patch embeddings\n'
               'noise_std = None  # or a fixed value\n'
               'noise_samples = None  # FT-Train images for the std (None: all)\n'
               'noise_seed = None  # None: seed\n'
               'trace_kinds = ["block", "mlp", "attn"]\n'
               'trace_scopes = ["all"]  # any of "all", "cls", "patches"\n'
               'trace_window = 1  # >1: restore that many consecutive mlp/attn layers together\n'
               'min_total_effect = 0.05  # |TE| below this: left out of normalised averages\n'
               'trace_max_rows = 2048\n'
               '# layer selection: edit_layers > tracing (top num_edit_layers of rank_kind) > last three\n'
               'edit_layers = None\nnum_edit_layers = 3\nno_astra_layers = False\n'
               'rank_kind = "mlp"\nrank_scope = "all"\n'
               '# patch attribution (ASTRA)\n'
               'attribution_samples = 6\nattribution_masks = 64\nattribution_keep_prob = 0.5\n'
               'attribution_alpha = 0.02\n'
               '# run\n'
               'eval_batch_size = 256\ndevice = "auto"\nrun_dir = None\nprogress = True'),
    code('run = nb.start("03_locate", globals(), _before)\nP = run.params\n'
         'import time\nimport numpy as np\nimport pandas as pd\n'
         'from vitedit import datasets, evaluation, locate, models, plots, splits, train\n\n'
         'data = datasets.load(P)\nsplit = splits.load(run.dir, expect=P)\n'
         'device = models.resolve_device(P["device"])\n'
         'model, meta = train.load_run_model(run.dir, split, device, params=P)\n'
         'cfg = train.model_config_of(meta)\nn_layers = len(model.blocks)\n'
         'locate.check_choices(P["trace_kinds"], P["trace_scopes"], n_layers, P["edit_layers"] or [])\n'
         'print(f"model {meta[\'fields\'][\'model\'][\'name\']} ({n_layers} blocks), checkpoint {run.dir / \'checkpoint.json\'}")'),
    md("## Errors on Edit-Discovery"),
    code('t0 = time.perf_counter()\nrun.begin()\n'
         'y, pred, probs = evaluation.predictions(model, data, split, "edit_discovery", cfg, P["eval_batch_size"], device)\n'
         'all_errors = locate.select_errors(y, pred, None)\n'
         'errors = locate.select_errors(y, pred, P["max_samples"])\n'
         'print(f"{len(all_errors)} of {len(y)} Edit-Discovery samples misclassified; tracing {len(errors)}")\n'
         'pd.crosstab(pd.Series(y[all_errors], name="true"), pd.Series(pred[all_errors], name="predicted"))'),
    md("## Tracing"),
    code('ft_images = split.images(data, "ft_train")[: P["noise_samples"]]\n'
         'std = P["noise_std"] or P["noise_scale"] * locate.patch_embedding_std(model, ft_images, cfg, P["eval_batch_size"], device)\n'
         'n_patches, dim = model.patch_embed.num_patches, model.embed_dim\n'
         'noise = locate.make_noise(P["num_ablations"], (n_patches, dim), std,\n'
         '                          P["seed"] if P["noise_seed"] is None else P["noise_seed"])\n'
         'restores = locate.restorations(n_layers, P["trace_kinds"], P["trace_scopes"], P["trace_window"])\n'
         'print(f"noise std {std:.4f}; {len(restores)} restorations x {P[\'num_ablations\']} noisy copies per sample")\n'
         'ed_images = split.images(data, "edit_discovery")\n'
         'importance = locate.trace_errors(model, cfg, ed_images, y, pred, errors, restores, noise,\n'
         '                                 P["min_total_effect"], device, P["trace_max_rows"], P["progress"],\n'
         '                                 official_index=split.indices["edit_discovery"])\n'
         'stats = locate.layer_statistics(importance)\n'
         'importance.to_csv(run.dir / "layer_importance.csv", index=False)\n'
         'stats.to_csv(run.dir / "layer_statistics.csv", index=False)\n'
         'stats.round(3)'),
    md("## Where the wrong decision is carried"),
    code('if importance.empty:\n'
         '    print("No errors to trace: the figures are empty and editing will have nothing to do.")\n'
         'else:\n'
         '    for scope in P["trace_scopes"]:\n'
         '        plots.trace_means(stats, scope, path=run.figure(f"trace_means_{scope}.png"))\n'
         '        plots.trace_heatmaps(importance, scope, path=run.figure(f"trace_heatmaps_{scope}.png"))'),
    md("### Examples: clean, corrupted, and p(predicted class) when each layer is restored"),
    code('if not importance.empty:\n'
         '    shown = errors[:4]\n'
         '    views = [locate.corrupted_view(model, cfg, ed_images[s], noise[0]) for s in shown]\n'
         '    plots.trace_examples(ed_images, importance, shown, data.info.label_names, P["trace_scopes"][0],\n'
         '                         corrupted=views, path=run.figure("trace_examples.png"))'),
    md("### Patch attribution (ASTRA): which patches support the wrong class\n\n"
       "Random patch masks (kept with probability `attribution_keep_prob`), the model's probability of the "
       "predicted class on each masked image, and a Lasso fit from mask to probability; red patches push "
       "toward the wrong class."),
    code('picked = errors[: P["attribution_samples"]]\n'
         'maps = [locate.patch_attribution(model, cfg, ed_images[s], int(pred[s]), P["attribution_masks"],\n'
         '                                 P["attribution_keep_prob"], P["seed"] + int(s), P["attribution_alpha"], device)\n'
         '        for s in picked]\n'
         'if maps:\n'
         '    plots.attribution_maps(ed_images[picked], maps,\n'
         '                           [f"#{s} pred {data.info.label_names[pred[s]]}" for s in picked],\n'
         '                           path=run.figure("patch_attribution.png"))'),
    md("## Layers handed to editing"),
    code('choice = locate.choose_edit_layers(stats, n_layers, P["edit_layers"], P["num_edit_layers"],\n'
         '                                  P["no_astra_layers"], P["rank_kind"], P["rank_scope"])\n'
         'locate.save_edit_layers(run.dir, choice)\n'
         'summary = locate.summarize(importance, len(all_errors), len(y), std, len(restores), choice,\n'
         '                           time.perf_counter() - t0, n_layers)\n'
         'locate.save_summary(run.dir, summary)\n'
         'print(summary["message"])\n'
         'print(f"edit layers {choice[\'layers\']} ({choice[\'source\']}: {choice[\'reason\']})")'),
    code('run.finish(edit_layers=choice["layers"], n_errors=summary["n_errors"], n_traced=summary["n_traced"])'),
])

COMMON_LOAD = ('import json\nimport numpy as np\nimport pandas as pd\n'
               'from vitedit import datasets, editing, evaluation, locate, models, paths, plots, splits, train\n\n'
               'data = datasets.load(P)\nsplit = splits.load(run.dir, expect=P)\n'
               'device = models.resolve_device(P["device"])\n'
               'model, meta = train.load_run_model(run.dir, split, device, params=P)\n'
               'cfg = train.model_config_of(meta)\nbase_ref = train.run_checkpoint_ref(run.dir)\n')
SELECT = ('y, pred, _ = evaluation.predictions(model, data, split, "edit_discovery", cfg, P["eval_batch_size"], device)\n'
          'errors = locate.select_errors(y, pred, P["max_edits"])\n'
          'stats_pos = editing.stats_positions(len(split.indices["ft_train"]), P["projection_samples"], P["seed"])\n'
          'edit_set = editing.edit_data(data, split, stats_pos, errors)\n'
          'print(f"editing {len(errors)} of {int((y != pred).sum())} Edit-Discovery errors; statistics from "\n'
          '      f"{len(stats_pos)} FT-Train samples, {len(split.indices[\'ft_train\']) - len(stats_pos)} held out")\n'
          'if len(errors) == 0:\n'
          '    print("No errors to edit: every editor returns the model unchanged.")')
EDIT_PARAMS = ('max_edits = 30  # errors edited (first ones in Edit-Discovery order)\n'
               'projection_samples = 500  # FT-Train samples for the statistics, or "all"\n')
write("notebooks/04_edit_alphaedit.ipynb", [
    md("# 04 · Edit: AlphaEdit and its MEMIT ablation\n\n"
       "Edits the MLP output projection `blocks[l].mlp.fc2` (optionally `attn.proj`) of the layers chosen by "
       "03 (`edit_layers.json`) so that the Edit-Discovery errors get their true label, while a null-space "
       "projection P keeps the outputs on FT-Train keys (AlphaEdit, Fang et al. ICLR 2025):\n\n"
       "ΔW = R Kᵀ P (K Kᵀ P + Kp Kpᵀ P + L2·I)⁻¹, with P = U Uᵀ over the eigenvectors of the keys' uncentred "
       "second moment (from `projection_samples` FT-Train images) whose eigenvalues are below "
       "`nullspace_threshold`. MEMIT is the same update with P = I: the comparison shows what the null "
       "space buys. Targets: one residual at the CLS token after the last edited layer, optimised so the "
       "model predicts the true label, spread over the edited layers as MEMIT does.\n\n"
       "Writes `edit_log.csv`, `edits/<method>.json` and the edited checkpoints under `edited/`."),
    code(HEAD),
    param_cell(DATA_PARAMS + '# editing\n' + EDIT_PARAMS +
               'edit_methods = ["alphaedit", "memit"]\n'
               'edit_modules = ["mlp"]  # and/or "attn"\n'
               'stats_scope = "cls+all"  # "cls", "all" or "cls+all"\n'
               'nullspace_threshold = 0.01\nnullspace_relative = None  # e.g. 0.01: bottom 1% of the energy\n'
               'L2 = 0.0001\nv_lr = 0.1\nv_num_grad_steps = 25\nv_weight_decay = 0.001\nclamp_norm_factor = 4.0\n'
               'edit_batch_size = None  # None: all errors in one batch\n'
               '# run\neval_batch_size = 256\ncheckpoint_dir = "checkpoints"  # the statistics cache lives in <checkpoint_dir>/stats\n'
               'device = "auto"\nrun_dir = None\nprogress = True'),
    code('run = nb.start("04_edit_alphaedit", globals(), _before)\nP = run.params\n' + COMMON_LOAD +
         'choice = locate.load_edit_layers(run.dir)\n'
         'print(f"editing layers {choice[\'layers\']} ({choice[\'source\']}: {choice[\'reason\']}), modules {P[\'edit_modules\']}")'),
    md("## The errors and the statistics samples"),
    code('run.begin()\n' + SELECT),
    md("## Edits"),
    code('settings = {k: P[k] for k in ["max_edits", "projection_samples", "edit_modules", "stats_scope",\n'
         '                             "nullspace_threshold", "nullspace_relative", "L2", "v_lr", "v_num_grad_steps",\n'
         '                             "v_weight_decay", "clamp_norm_factor", "edit_batch_size", "seed"]}\n'
         'settings["layers"] = choice["layers"]\n'
         'results, rows = {}, []\n'
         'for method in P["edit_methods"]:\n'
         '    editor = editing.AlphaEdit(choice["layers"], P["edit_modules"], null_space=method == "alphaedit",\n'
         '                               nullspace_threshold=P["nullspace_threshold"], nullspace_relative=P["nullspace_relative"],\n'
         '                               stats_scope=P["stats_scope"], l2=P["L2"], v_lr=P["v_lr"],\n'
         '                               v_num_grad_steps=P["v_num_grad_steps"], v_weight_decay=P["v_weight_decay"],\n'
         '                               clamp_norm_factor=P["clamp_norm_factor"], edit_batch_size=P["edit_batch_size"],\n'
         '                               cache_dir=paths.resolve(P["checkpoint_dir"]) / "stats",\n'
         '                               cache_key={"checkpoint": base_ref["sha256"]}, batch_size=P["eval_batch_size"],\n'
         '                               progress=P["progress"])\n'
         '    results[method] = editor.edit(model, cfg, edit_set, device)\n'
         '    editing.record(run.dir, results[method], base_ref, settings, edit_set)\n'
         '    rows.append(evaluation.edit_summary(method, results[method], model, data, split, stats_pos, cfg,\n'
         '                                        P["eval_batch_size"], device))\n'
         'summary = pd.DataFrame(rows)\nsummary.to_csv(run.dir / "edit_summary.csv", index=False)\n'
         'summary.round(4)'),
    md("Fix rate on the edited errors; stability / regression on FT-Train samples **held out** from the "
       "statistics (the in-sample columns use the samples that built P and are optimistic by construction). "
       "The full 4-level evaluation is notebook 06."),
    code('log = pd.concat([r.log.assign(method=m) for m, r in results.items()], ignore_index=True)\n'
         'log.to_csv(run.dir / "edit_log.csv", index=False)\n'
         'updates = editing.update_table(results)\nupdates.round(4)'),
    md("## Null space, spectra, update norms, edited samples"),
    code('if "alphaedit" in results and results["alphaedit"].info.get("layer_info"):\n'
         '    info = results["alphaedit"].info["layer_info"]\n'
         '    plots.nullspace_dims(info, path=run.figure("nullspace_dims.png"))\n'
         '    plots.eigen_spectra(info, None if P["nullspace_relative"] else P["nullspace_threshold"],\n'
         '                        path=run.figure("eigen_spectra.png"))'),
    code('if len(updates):\n'
         '    plots.update_norms(updates, path=run.figure("update_norms.png"))\n'
         'if len(log):\n'
         '    plots.edit_probabilities(log, path=run.figure("edit_probabilities.png"))'),
    code('run.finish(methods=list(results), n_edits=int(len(errors)),\n'
         '           fix_rate={m: float(r.log["fixed"].mean()) if len(r.log) else None for m, r in results.items()})'),
])

write("notebooks/05_edit_head.ipynb", [
    md("# 05 · Edit: the classifier head only\n\n"
       "The backbone stays bit-identical; only `model.head` (weight and bias) changes.\n\n"
       "- **gradient**: Adam on the errors' cross-entropy plus an EWC penalty ½λ Σ Fᵢ (θᵢ − θᵢ*)², whose "
       "diagonal Fisher is the expectation, under the model's own predictive distribution, of squared "
       "per-sample gradients of the log-likelihood over the statistics samples of FT-Train.\n"
       "- **closed_form**: a ridge solution that keeps the FT-Train logits and moves each error's true-class "
       "logit `head_margin` above the best other class, pulled toward the original head by `ridge_lambda`.\n\n"
       "The same errors (`max_edits`) and statistics samples (`projection_samples`) as notebook 04. Writes "
       "`head_edit_log.csv`, `edits/<method>.json` and the edited checkpoints under `edited/`."),
    code(HEAD),
    param_cell(DATA_PARAMS + '# editing (shared with 04)\n' + EDIT_PARAMS +
               '# head editing\n'
               'head_variants = ["gradient", "closed_form"]\n'
               'head_lr = 0.01\nhead_steps = 50\newc_lambda = 1000.0\n'
               'ridge_lambda = 1.0\nhead_margin = 1.0\nhead_error_weight = 10.0\n'
               '# run\neval_batch_size = 256\ndevice = "auto"\nrun_dir = None\nprogress = True'),
    code('run = nb.start("05_edit_head", globals(), _before)\nP = run.params\n' + COMMON_LOAD),
    md("## The errors and the statistics samples"),
    code('run.begin()\n' + SELECT),
    md("## Edits"),
    code('results, rows = {}, []\n'
         'for variant in P["head_variants"]:\n'
         '    editor = editing.HeadEditor(closed_form=variant == "closed_form", head_lr=P["head_lr"],\n'
         '                                head_steps=P["head_steps"], ewc_lambda=P["ewc_lambda"],\n'
         '                                ridge_lambda=P["ridge_lambda"], margin=P["head_margin"],\n'
         '                                error_weight=P["head_error_weight"], batch_size=P["eval_batch_size"])\n'
         '    settings = {k: P[k] for k in ["max_edits", "projection_samples", "head_lr", "head_steps", "ewc_lambda",\n'
         '                                 "ridge_lambda", "head_margin", "head_error_weight", "seed"]}\n'
         '    res = editor.edit(model, cfg, edit_set, device)\n'
         '    results[editor.name] = res\n'
         '    editing.record(run.dir, res, base_ref, settings, edit_set)\n'
         '    rows.append(evaluation.edit_summary(editor.name, res, model, data, split, stats_pos, cfg,\n'
         '                                        P["eval_batch_size"], device))\n'
         'summary = pd.DataFrame(rows)\nsummary.to_csv(run.dir / "head_edit_summary.csv", index=False)\n'
         'summary.round(4)'),
    code('log = pd.concat([r.log.assign(method=m) for m, r in results.items()], ignore_index=True)\n'
         'log.to_csv(run.dir / "head_edit_log.csv", index=False)\n'
         'pd.DataFrame([{"method": m, **{k: v for k, v in r.info.items() if k != "layer_info"}} for m, r in results.items()])'),
    code('if len(log):\n'
         '    plots.edit_probabilities(log, path=run.figure("head_edit_probabilities.png"))'),
    code('run.finish(methods=list(results), n_edits=int(len(errors)),\n'
         '           fix_rate={m: float(r.log["fixed"].mean()) if len(r.log) else None for m, r in results.items()})'),
])

write("notebooks/06_evaluate.ipynb", [
    md("# 06 · Evaluate: the same 4-level comparison for every edit method\n\n"
       "For each edited model recorded in `edits/` (AlphaEdit, MEMIT, head gradient, head closed form), "
       "against exactly the checkpoint it started from (its sha256 is checked):\n\n"
       "1. **Edit samples**: fix rate.\n"
       "2. **FT-Train held out from the editing statistics**: stability and regression rate (the samples "
       "that built P / Fisher / ridge are reported apart as in-sample).\n"
       "3. **Test**: accuracy before/after and delta with a bootstrap 95% CI, correct→wrong and wrong→correct, "
       "exact McNemar p-value, macro-F1, AUC, per-class change.\n"
       "4. **Edit-Discovery without the edited samples**: does the fix generalise to unedited errors; and "
       "Test errors sharing an edited sample's (true, predicted) pair.\n"
       "5. **FT-Val** (the selection level): accuracy change, fix and regression rates. A sweep chooses its "
       "configuration on this level and levels 1, 2 and 4, never on Test.\n\n"
       "Writes `comparative_evaluation_{edit_samples,projection_samples,test_set,edit_discovery_set,val_set}.csv`, "
       "`confusion_matrix_orig.csv`, `confusion_matrix_edit.csv`, `confusion_matrix.png` and `metrics.json`. "
       "Test is used here for reporting only; nothing is chosen on it."),
    code(HEAD),
    param_cell(DATA_PARAMS + '# evaluation\nbootstrap_samples = 2000\n'
               '# run\neval_batch_size = 256\ndevice = "auto"\nrun_dir = None\nprogress = True'),
    code('run = nb.start("06_evaluate", globals(), _before)\nP = run.params\n' + COMMON_LOAD),
    code('import time\nrun.begin()\n'
         'records = editing.list_edits(run.dir, kinds=("alphaedit", "memit", "head", "head_closed_form"))\n'
         'print("methods:", list(records) or "none (run 04 and 05 first)")\n'
         'evals, metrics = {}, {}\n'
         'for method, rec in records.items():\n'
         '    t0 = time.perf_counter()\n'
         '    edited, rec = editing.load_edited(run.dir, method, device)\n'
         '    assert rec["base_sha256"] == base_ref["sha256"], "edited from another checkpoint"\n'
         '    evals[method] = evaluation.four_level(method, model, edited, data, split, rec["edited_positions"],\n'
         '                                          rec["stats_positions"], cfg, P["eval_batch_size"], device,\n'
         '                                          P["seed"], P["bootstrap_samples"])\n'
         '    info = rec["info"]\n'
         '    metrics[method] = evaluation.summary_metrics(evals[method], info.get("edit_seconds"),\n'
         '        (info.get("edit_seconds") or 0) + (info.get("stats_seconds") or 0) + time.perf_counter() - t0)\n'
         'if evals:\n'
         '    evaluation.write_comparison(run.dir, evals, metrics, {"dataset": P["dataset"], "seed": P["seed"]})\n'
         'table = pd.DataFrame(metrics.values())\ntable.round(4)'),
    md("## The five levels"),
    code('from IPython.display import display\n'
         'for level in evaluation.LEVELS:\n'
         '    if evals:\n'
         '        print(level)\n'
         '        display(pd.DataFrame([ev["levels"][level] for ev in evals.values()]).round(4))'),
    md("## Confusion matrices, per-class changes, fixes vs regressions"),
    code('if evals:\n'
         '    plots.confusion_matrices(evals, data.info.label_names, path=run.dir / "confusion_matrix.png")\n'
         '    per_class = pd.concat([ev["per_class"] for ev in evals.values()], ignore_index=True)\n'
         '    per_class.to_csv(run.dir / "per_class_test_accuracy.csv", index=False)\n'
         '    plots.per_class_changes(per_class, path=run.figure("per_class_changes.png"))\n'
         '    plots.fix_vs_regression(table, path=run.figure("fix_vs_regression.png"))'),
    code('run.finish(methods=list(evals))'),
])

write("notebooks/07_baselines.ipynb", [
    md("# 07 · Baselines: retraining and fine-tuning on the errors\n\n"
       "Through the same editor interface and the same 4-level evaluation as the edit methods, on the same "
       "errors (`max_edits`) and with the same held-out FT-Train samples:\n\n"
       "- **Baseline 1, retrain**: FT-Train plus the error samples, trained from the same initialisation as the "
       "original model (same seed / same pretrained weights) with the same recipe, `baseline_epochs` epochs, "
       "epoch selected on FT-Val.\n"
       "- **Baseline 2, fine-tune on errors**: continue from the fine-tuned checkpoint on the error samples "
       "only, at `baseline_lr` for `baseline_epochs`.\n\n"
       "A baseline with nothing to train on is recorded as **skipped** with its reason. Writes "
       "`baseline_retrain_summary.csv`, `baseline_finetune_errors_summary.csv`, and adds the baselines to the "
       "comparative CSVs and `metrics.json`."),
    code(HEAD),
    param_cell(DATA_PARAMS + '# the errors and held-out samples shared with 04-06\n' + EDIT_PARAMS +
               '# baselines\nbaseline_methods = ["retrain", "finetune"]\nbaseline_epochs = 10\nbaseline_lr = 1e-05\n'
               'bootstrap_samples = 2000\n'
               '# run\neval_batch_size = 256\ndevice = "auto"\nrun_dir = None\nprogress = True'),
    code('run = nb.start("07_baselines", globals(), _before)\nP = run.params\n' + COMMON_LOAD +
         'from vitedit import baselines\nimport time'),
    code('run.begin()\n' + SELECT),
    md("## Baselines"),
    code('makers = {"retrain": lambda: baselines.RetrainBaseline(P, data, split, P["baseline_epochs"], P["progress"]),\n'
         '          "finetune": lambda: baselines.FinetuneErrorsBaseline(P["baseline_lr"], P["baseline_epochs"],\n'
         '                                                               seed=P["seed"])}\n'
         'evals, metrics, skipped = {}, {}, {}\n'
         'for kind in P["baseline_methods"]:\n'
         '    t0 = time.perf_counter()\n'
         '    b = makers[kind]()\n'
         '    res = b.edit(model, cfg, edit_set, device)\n'
         '    if res.info.get("status") == "skipped":\n'
         '        skipped[b.name] = res.info["reason"]\n'
         '        editing.record_skipped(run.dir, b.name, res.info["reason"])\n'
         '        baselines.write_summary(run.dir, b.name, reason=res.info["reason"])\n'
         '        continue\n'
         '    settings = {k: P[k] for k in ["max_edits", "projection_samples", "baseline_epochs", "baseline_lr", "seed"]}\n'
         '    editing.record(run.dir, res, base_ref, settings, edit_set)\n'
         '    evals[b.name] = evaluation.four_level(b.name, model, res.model, data, split, errors, stats_pos, cfg,\n'
         '                                          P["eval_batch_size"], device, P["seed"], P["bootstrap_samples"])\n'
         '    metrics[b.name] = evaluation.summary_metrics(evals[b.name], res.info["edit_seconds"],\n'
         '                                                 time.perf_counter() - t0)\n'
         '    baselines.write_summary(run.dir, b.name, metrics[b.name])\n'
         'if evals:\n'
         '    evaluation.write_comparison(run.dir, evals, metrics, {"dataset": P["dataset"], "seed": P["seed"]})\n'
         'print("skipped:", skipped or "none")\n'
         'pd.DataFrame(metrics.values()).round(4)'),
    md("## Baselines against the edit methods (all from `metrics.json`)"),
    code('allm = evaluation.load_metrics(run.dir)\n'
         'cols = ["method", "edit_fix_ratio", "proj_regression_rate", "test_acc_before", "test_acc_after",\n'
         '        "test_acc_delta", "test_delta_ci_low", "test_delta_ci_high", "test_mcnemar_p", "edit_time_seconds"]\n'
         'allm[[c for c in cols if c in allm]].round(4)'),
    code('from IPython.display import display\n'
         'for level in evaluation.LEVELS:\n'
         '    if evals:\n'
         '        print(level)\n'
         '        display(pd.DataFrame([ev["levels"][level] for ev in evals.values()]).round(4))'),
    code('if len(allm):\n'
         '    plots.fix_vs_regression(allm, path=run.figure("fix_vs_regression_all.png"))\n'
         'if evals:\n'
         '    plots.confusion_matrices(evals, data.info.label_names, path=run.figure("confusion_matrix_baselines.png"))\n'
         '    per_class = pd.concat([ev["per_class"] for ev in evals.values()], ignore_index=True)\n'
         '    plots.per_class_changes(per_class, path=run.figure("per_class_changes_baselines.png"))'),
    code('run.finish(methods=list(evals), skipped=skipped)'),
])

write("notebooks/08_sweep_report.ipynb", [
    md("# 08 · Sweep report\n\n"
       "The summary of one parameter sweep (`vitedit-sweep run`): every experiment's status and metrics, the "
       "configuration chosen per method, the fix-rate vs held-out-regression trade-off and each searched "
       "parameter's effect, with links to every run's report.\n\n"
       "**Selection is honest:** the configuration of each method is chosen on FT-Val and the edit / held-out "
       "FT-Train levels (the criterion is printed below; seeds of one configuration are averaged first). "
       "Test columns are reported for the chosen configuration and for all, and take no part in the choice."),
    param_cell('sweep_dir = None  # the sweep folder (reports/sweeps/<name>)'),
    code('import pandas as pd\nfrom IPython.display import HTML, display\nfrom vitedit import plots, sweep\n'
         'pd.set_option("display.max_columns", 80)\npd.set_option("display.max_colwidth", 90)\n\n'
         'ctx = sweep.report_context(sweep_dir)\nsummary, chosen, spec = ctx["summary"], ctx["chosen"], ctx["spec"]\n'
         'sel = ctx["selection"]\n'
         'print(f"sweep {spec.get(\'name\')}: {len(summary)} experiments; searched: {ctx[\'searched\'] or \'nothing\'}")\n'
         'print(f"selection: {sel[\'mode\']} {sel[\'metric\']}, ties: {sel[\'tie_breakers\']} (never Test)")\n'
         'sel_cols = [m for m, _ in sel["tie_breakers"]]\n'
         'sweep.status_counts(summary)'),
    md("## Chosen configuration per method\n\n"
       "`selection_value` is the validation criterion; the `test_*` columns are the chosen configuration's Test "
       "results (mean over its seeds), reported only."),
    code('shown = ["dataset", "method", "n_configs", "n_seeds", "selection_value", *sel_cols, *ctx["searched"],\n'
         '         "layers", "val_acc_delta", "test_acc_before", "test_acc_after", "test_acc_delta",\n'
         '         "test_correct_to_wrong", "test_wrong_to_correct", "edit_time_seconds", "experiments"]\n'
         'chosen[[c for c in dict.fromkeys(shown) if c in chosen]].round(4) if len(chosen) else print("no completed experiment to choose from")'),
    md("## Fix rate vs held-out regression (every configuration)"),
    code('if (summary.status == "ok").any():\n'
         '    plots.sweep_pareto(summary, chosen);'),
    md("## Metrics against each searched parameter"),
    code('for param in ctx["searched"]:\n'
         '    if param in summary and summary[param].nunique() > 1:\n'
         '        plots.metric_vs_param(summary, param)'),
    md("## Every experiment\n\nTest columns (`test_*`) are reported here for all configurations; they were "
       "not used to choose."),
    code('cols = ["experiment", "method", "status", *[c for c in ctx["searched"] if c in summary], "layers",\n'
         '        "edit_fix_ratio", "proj_regression_rate", "val_acc_delta", "test_acc_before", "test_acc_after",\n'
         '        "test_acc_delta", "edit_time_seconds", "job_seconds", "papermill_overhead_seconds"]\n'
         'summary[[c for c in dict.fromkeys(cols) if c in summary]].round(4)'),
    md("## Time\n\nEach invocation of the sweep (a resumed sweep has several), and per method the median of: wall "
       "time as the sweep saw it, papermill's share (process and kernel start, notebook I/O, HTML), the notebooks' "
       "setup (imports, data and model loading), the work itself, and the overhead beyond the work (wall - work)."),
    code('display(ctx["history"]) if len(ctx["history"]) else print("no invocation recorded (collected only)")\n'
         'sweep.timing_table(summary).round(2)'),
    md("## Failures"),
    code('failed = summary[summary.status == "failed"]\n'
         'failed[["experiment", "method", "error"]] if len(failed) else print("no failed experiment")'),
    md("## Run reports"),
    code('display(HTML(sweep.links_table(summary)))\n'
         'display(HTML("<p>Shared stages: " + ", ".join(f\'<a href="{s}">{s}</a>\' for s in ctx["shared"]) + "</p>"))'),
])
