"""Issue 34 item 2: show one failing run per test of tests/test_fidelity_pins.py and tests/test_placement.py.

For every test function (one parameter of a parametrized one) a small, plausible bug of the kind the test targets is
applied as an exact (old -> new) string replacement in one source file of a THROWAWAY copy of the repository
(a temporary folder; this checkout is only read). The single test is run with the bug, the file is restored from
this checkout, and the same test is run again on the unmodified copy. A Markdown table is printed:
test | bug | result with the bug | result without.

    python scripts/fidelity_bug_demos.py          # ~5 min on 2 CPU cores; output: docs/mutation.md's last table
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MAIN = Path(__file__).resolve().parents[1]
COPY = Path(tempfile.gettempdir()) / "selectscale-bug-demos"
PYTHON = sys.executable
PARTS = ("selectscale", "tests", "configs", "pyproject.toml", "train.py", "README.md")
PINS, PLACE = "tests/test_fidelity_pins.py", "tests/test_placement.py"

# (test id, file, bug in one line, old, new)
BUGS = [
    (f"{PINS}::test_every_drop_layer_holds_the_curriculum_strength_at_every_step_of_a_fit[linear]",
     "selectscale/engine/steps.py",
     "_set_progress writes strength 1.0 into every drop layer while it returns (and the log shows) the "
     "curriculum value",
     "            layer.strength = strength\n",
     "            layer.strength = 1.0\n"),
    (f"{PINS}::test_schedule_defaults_and_edges",
     "selectscale/engine/schedule.py",
     "cosine LR not clamped at the last epoch (rises again past `epochs`)",
     "math.cos(math.pi * min(progress / epochs, 1.0))",
     "math.cos(math.pi * (progress / epochs))"),
    (f"{PINS}::test_identical_samples_in_one_batch_get_independent_draws[spatial_dropout]",
     "selectscale/drop/functional.py",
     "SpatialDropout draws one keep-mask per batch (1 x C) instead of one per sample",
     "keep = torch.rand(y.shape[:2], device=y.device) < retain",
     "keep = torch.rand((1, y.shape[1]), device=y.device) < retain"),
    (f"{PINS}::test_dropout_draws_every_element_of_a_sample_independently",
     "selectscale/drop/functional.py",
     "dropout draws one Bernoulli per (sample, map) (a SpatialDropout mask) instead of one per element",
     "factors = torch.empty_like(y).bernoulli_(retain)",
     "factors = torch.empty_like(y[:, :, :1, :1]).bernoulli_(retain)"),
    (f"{PINS}::test_map_wise_methods_draw_every_map_of_a_sample_independently[spatial_scale]",
     "selectscale/drop/functional.py",
     "SpatialScale draws one factor per sample, shared by all its maps",
     "return _apply_map_factors(y, _uniform_factors(retain, y.shape[:2], y.device))",
     "return _apply_map_factors(y, _uniform_factors(retain, (y.shape[0], 1), y.device))"),
    (f"{PINS}::test_selectscale_factors_are_independent_across_the_selected_maps_of_a_sample[SelectScale]",
     "selectscale/drop/functional.py",
     "SelectScale draws one factor per sample for all its k selected maps (not i.i.d. per map)",
     "candidate_factors = _uniform_factors(retain, candidates.shape, y.device)",
     "candidate_factors = _uniform_factors(retain, (candidates.shape[0], 1), y.device).expand(candidates.shape)"),
    (f"{PINS}::test_selectout_drops_a_uniformly_random_subset_of_the_candidates_in_every_sample",
     "selectscale/drop/functional.py",
     "Selectout always drops the first m candidates (in topk's order) instead of a random m-subset",
     "random_rank = torch.rand(candidates.shape, device=y.device).argsort(dim=1).argsort(dim=1)",
     "random_rank = torch.arange(candidates.shape[1], device=y.device).expand(candidates.shape)"),
    (f"{PINS}::test_top_count_rounds_exact_halves_up[0.5-5-3]",
     "selectscale/drop/functional.py",
     "round_half_up uses Python's round() (half to even): k = round(2.5) = 2",
     "return int(math.floor(value + 0.5 + _ROUND_EPS))",
     "return int(round(value))"),
    (f"{PINS}::test_selective_layers_act_on_round_half_up_maps[0.5-5-3]",
     "selectscale/drop/functional.py",
     "top_map_indices computes k inline with Python's round() (half-even) instead of num_top_maps "
     "(num_top_maps itself stays right)",
     "k = num_top_maps(top_rate, scores.shape[1], rounding)",
     "k = min(scores.shape[1], max(1, round(top_rate * scores.shape[1])))"),
    (f"{PINS}::test_selectout_drop_count_rounds_exact_halves_up[0.5-5-3]",
     "selectscale/drop/functional.py",
     "Selectout's m = torch.round((1 - p) * C) (half to even): m = round(2.5) = 2",
     "return torch.floor(value + 0.5 + _ROUND_EPS_FLOAT32)",
     "return torch.round(value)"),
    (f"{PINS}::test_apply_at_inference_restores_every_layers_own_state_when_the_body_raises",
     "selectscale/drop/__init__.py",
     "apply_at_inference restores the layers' state after `yield` without try/finally",
     "    try:\n        yield module\n    finally:\n"
     "        for layer, was_active in zip(layers, previous, strict=True):\n"
     "            layer.active_at_inference = was_active\n",
     "    yield module\n    for layer, was_active in zip(layers, previous, strict=True):\n"
     "        layer.active_at_inference = was_active\n"),
    (f"{PLACE}::test_cifar_resnets_and_wrns_drop_after_the_bn_of_every_block_convolution[resnet20-options0]",
     "selectscale/models/cifar_resnet.py",
     "BasicBlock's second drop placed before its BN (conv-[drop]-BN) instead of after",
     "out = self.drop2(self.bn2(self.conv2(out)))",
     "out = self.bn2(self.drop2(self.conv2(out)))"),
    (f"{PLACE}::test_resnext_drops_sit_before_and_after_every_group_convolution[False]",
     "selectscale/models/resnext.py",
     "ResNeXt's drop after the group conv acts before the ReLU (conv-BN-[drop]-ReLU)",
     "out = self.drop_group(F.relu(self.bn_group(self.conv_group(out))))",
     "out = F.relu(self.drop_group(self.bn_group(self.conv_group(out))))"),
    (f"{PLACE}::test_resnet50_drops_after_every_bn_of_groups_3_and_4[False]",
     "selectscale/models/resnet.py",
     "ResNet-50 drop groups miss layer3 (drops only in group 4)",
     'RESNET50_DROP_GROUPS = (("layer3", 0.5), ("layer4", 1.0))',
     'RESNET50_DROP_GROUPS = (("layer4", 1.0),)'),
    (f"{PLACE}::test_the_readme_insert_drops_example_gives_create_models_resnet50_placement[False-max]",
     "selectscale/drop/insert.py",
     "insert_drops ignores followed_by_relu (drops after bn1/bn2 act before the ReLU, |y| scores)",
     "relu_first = _matches(path, followed_by_relu)",
     "relu_first = False"),
    (f"{PLACE}::test_insert_drops_placement_options_refuse_patterns_that_match_nothing",
     "selectscale/drop/insert.py",
     "insert_drops does not refuse an exclude pattern that matches nothing",
     '_check_patterns_match("exclude", exclude, [path for _, path, _ in found])',
     "pass"),
]


# A subtler bug, run the same way: (test id, edits, label), each edit a (file, old, new). With the max score the drop
# placed just before its ReLU gives the same output as after it (equivalent there), so the README test has a
# score="mean" case, where it is not.
HOOK_BUG = ("selectscale/drop/insert.py",
            "module.register_forward_hook(_apply_inserted_drop_after_relu if relu_first else _apply_inserted_drop)",
            "module.register_forward_hook(_apply_inserted_drop)")
README_TEST = f"{PLACE}::test_the_readme_insert_drops_example_gives_create_models_resnet50_placement"
EXTRA = [
    (f"{README_TEST}[False-max]", [HOOK_BUG], "insert_drops keeps nonnegative_input=True for followed_by_relu "
     "positions but attaches the plain hook (drop before the ReLU); score max: equivalent"),
    (f"{README_TEST}[False-mean]", [HOOK_BUG], "the same bug; score mean"),
]


def fresh_copy() -> None:
    shutil.rmtree(COPY, ignore_errors=True)
    COPY.mkdir(parents=True)
    for part in PARTS:
        source = MAIN / part
        if source.is_dir():
            shutil.copytree(source, COPY / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, COPY / part)


def restore(path: str) -> None:
    shutil.copy(MAIN / path, COPY / path)  # a plain copy: new mtime; bytecode is never written anyway


def apply_bug(path: str, old: str, new: str) -> None:
    target = COPY / path
    text = target.read_text()
    count = text.count(old)
    if count != 1:
        raise SystemExit(f"{path}: the bug's old string occurs {count} times, not once: {old!r}")
    target.write_text(text.replace(old, new))


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
       "PYTHONPATH": str(COPY)}


def run_test(test_id: str) -> tuple[str, str]:
    """(pytest's summary line without the time, the first 'E ' line of the failure or '')."""
    result = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "--tb=short", test_id],
                            cwd=COPY, env=ENV, capture_output=True, text=True, timeout=1200)
    lines = result.stdout.strip().splitlines()
    summary = re.sub(r"\s+in [0-9.]+s.*$", "", lines[-1].strip("= ")) if lines else f"rc {result.returncode}"
    first_error = next((line[1:].strip() for line in lines if line.startswith("E ")), "")
    return summary, first_error


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    fresh_copy()
    where = subprocess.run([PYTHON, "-c", "import selectscale; print(selectscale.__file__)"], cwd=COPY, env=ENV,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(COPY)):
        raise SystemExit(f"the copy's selectscale is not the one imported: {where}")
    rows = []
    for test_id, path, bug, old, new in BUGS:
        apply_bug(path, old, new)
        try:
            with_bug, error = run_test(test_id)
        finally:
            restore(path)
        without, _ = run_test(test_id)
        print(f"{test_id}: with bug {with_bug} / without {without}", file=sys.stderr, flush=True)
        rows.append((test_id, f"`{path}`: {bug}", with_bug + (f": `{error}`" if error else ""), without))
    print(f"Bug demos (issue 34 item 2), copy {COPY} (imported selectscale: {where}); each test run alone, "
          "OMP_NUM_THREADS=1, `pytest -q -x`.\n")
    print("| test | bug (one line) | result with the bug | result without |")
    print("|---|---|---|---|")
    for test_id, bug, with_bug, without in rows:
        print(f"| `{cell(test_id)}` | {cell(bug)} | {cell(with_bug)} | {cell(without)} |")
    caught = sum("failed" in row[2] for row in rows)
    clean = sum(row[3].startswith("1 passed") and "failed" not in row[3] for row in rows)
    print(f"\n{caught} of {len(rows)} tests fail with their bug; {clean} of {len(rows)} pass without it.")
    print("\nA subtler variant: with score='max' a drop before the ReLU equals one after it (every factor is >= 0, "
          "so it commutes with the ReLU, and max y = max ReLU(y) for any map with a positive value), so the outputs "
          "stay equal bit for bit; with score='mean' they do not, and the test's mean case fails.\n")
    print("| test | bug (one line) | result with the bug | result without |")
    print("|---|---|---|---|")
    for test_id, edits, label in EXTRA:
        for path, old, new in edits:
            apply_bug(path, old, new)
        try:
            with_bug, error = run_test(test_id)
        finally:
            for path, _, _ in edits:
                restore(path)
        if len(edits) > 1:  # the same test edit, without the bug
            for path, old, new in edits[1:]:
                apply_bug(path, old, new)
            try:
                without, _ = run_test(test_id)
            finally:
                for path, _, _ in edits[1:]:
                    restore(path)
        else:
            without, _ = run_test(test_id)
        print(f"| `{cell(test_id)}` | {cell(label)} | {cell(with_bug + (f': `{error}`' if error else ''))} | "
              f"{cell(without)} |")


if __name__ == "__main__":
    main()
