"""int8 worth using? PSNR from fp32 and speed against bf16 of int8 recipes (issue 27, item 3).

    PYTHONPATH=. python benchmarks/int8_quality.py --photos ../shared/photos --weights ../random.pt
    PYTHONPATH=. python benchmarks/int8_quality.py ... --skip-speed     # PSNR only
    PYTHONPATH=. python benchmarks/int8_quality.py ... --accuracy-control  # + NNCF's AC
    PYTHONPATH=. python benchmarks/int8_quality.py ... --count 2 --size 128 --rounds 1  # check

Each recipe quantizes the generator's OpenVINO model with NNCF on the first 8 photos (as
`convert --precision int8` calibrates on a run's first 8 images), then styles every photo at
``--size`` on the dynamic-shape model; PSNR is against OpenVINO fp32 on the same photo
(mean and worst). Speed: model-only img/s at --shapes (batch 1, static, interleaved rounds)
against bf16, with the same-run matmul peak (benchmarks/peak.py) beside it.
Results: benchmarks/results/int8_quality_<date>_<cpu>.json / .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from animegan_cli.engines import openvino_engine as ove  # noqa: E402
from animegan_cli.media import data  # noqa: E402
from animegan_cli.model.variants import DEFAULT_VARIANT  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def photos_at(folder: Path, size: int, count: int) -> list[np.ndarray]:
    """uint8 (3, H, W) model inputs of the first ``count`` photos, prepared as convert does."""
    settings = data.PreprocessSettings(size=size, numpy=True)
    found = []
    for path in sorted(folder.iterdir()):
        item = data.prepare_image(len(found), path, settings)
        if item.pixels is not None:
            found.append(np.ascontiguousarray(item.pixels))
        if len(found) == count:
            break
    return found


def float_model(weights: Path):  # -> openvino.Model
    from animegan_cli.model.weights import load_generator, load_state_dict

    return ove.convert_generator(load_generator(load_state_dict(weights)))


def recipes(model, names: tuple[str, str]) -> dict[str, dict]:
    """NNCF arguments of each int8 recipe; ``names``: the first and last convolutions."""
    import nncf

    first_last = nncf.IgnoredScope(names=list(names))
    return {
        "int8 (today: all layers, performance preset)": {"fast_bias_correction": True},
        "int8 mixed preset": {"preset": nncf.QuantizationPreset.MIXED},
        "int8 mixed, first/last conv in bf16": {
            "preset": nncf.QuantizationPreset.MIXED, "ignored_scope": first_last},
        "int8 mixed, first/last conv + GroupNorm paths in bf16": {
            "preset": nncf.QuantizationPreset.MIXED,
            "ignored_scope": nncf.IgnoredScope(names=list(names),
                                               types=["GroupNormalization", "PRelu"])},
    }


def accuracy_controlled(model, photos: list[np.ndarray], floor_db: float):  # -> openvino.Model
    """NNCF's accuracy control: quantize (mixed preset), then put the layers it ranks most
    sensitive back to float until the PSNR from fp32 on ``photos`` is >= ``floor_db`` (the
    metric is the mean of PSNR/100 capped at the floor, so the original scores the cap)."""
    import nncf
    import openvino as ov

    from animegan_cli.engines import arrays
    from animegan_cli.tools.measure import psnr

    core = ov.Core()
    reference = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def styled(compiled, x: np.ndarray) -> np.ndarray:
        return arrays.pixels(np.asarray(next(iter(compiled([x]).values()))))

    inputs = [arrays.model_input(p[None]) for p in photos]
    items = [(x, styled(reference, x)) for x in inputs]

    def validate(compiled, validation) -> float:
        # Capped at the floor: the original scores the cap whatever precision NNCF runs it
        # in, so "no drop" means "every photo's mean at the floor or above".
        return float(np.mean([min(psnr(styled(compiled, x), ref), floor_db) / 100
                              for x, ref in validation]))

    return nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(items, lambda item: item[0]), nncf.Dataset(items), validate,
        max_drop=0.0005, drop_type=nncf.DropType.ABSOLUTE,
        preset=nncf.QuantizationPreset.MIXED, subset_size=len(items))


def conv_ends(model) -> tuple[str, str]:
    convs = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() == "Convolution"]
    return convs[0], convs[-1]


def quantized(model, calibration: list[np.ndarray], arguments: dict):  # -> openvino.Model
    import nncf

    from animegan_cli.engines import arrays

    samples = [arrays.model_input(img[None]) for img in calibration]
    return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples), **arguments)


def engines_for(models: dict[str, tuple[object, str]], cache: Path, shapes: str) -> dict:
    """An OpenVINOEngine per model (saved as a cached IR under a made-up checkpoint id)."""
    built = {}
    for i, (label, (model, precision)) in enumerate(models.items()):
        checkpoint = f"{i + 1:016x}" + "0" * 24  # its first 16 digits name the cached IR
        int8 = precision == "int8"
        xml = ove.ir_path(cache, checkpoint, False, int8)
        if not ove.ir_is_cached(xml):
            ove.save_ir_atomic(model, xml)
        built[label] = ove.OpenVINOEngine(None, checkpoint, precision, None, cache,
                                          calibration=list, shapes=shapes, align_corners=False,
                                          variant=DEFAULT_VARIANT)
    return built


def quality(engines: dict, photos: list[np.ndarray], reference: str) -> dict[str, dict]:
    from animegan_cli.tools.measure import psnr

    outputs = {label: [e.run(p[None])[0] for p in photos] for label, e in engines.items()}
    table = {}
    for label, outs in outputs.items():
        if label == reference:
            continue
        values = [psnr(a, b) for a, b in zip(outs, outputs[reference])]
        table[label] = {"mean_db": float(np.mean(values)), "worst_db": float(np.min(values)),
                        "photos": len(values)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--shapes", default="256x256,384x512")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--accuracy-control", action="store_true",
                        help="also NNCF's accuracy-controlled recipe (minutes: it reverts "
                             "layers one by one, validating each time)")
    parser.add_argument("--floor-db", type=float, default=41.0)
    parser.add_argument("--control-size", type=int, default=128)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    photos = photos_at(args.photos, args.size, args.count)
    model = float_model(args.weights)
    models: dict[str, tuple[object, str]] = {"fp32": (model, "fp32"), "bf16": (model, "bf16")}
    for label, arguments in recipes(model, conv_ends(model)).items():
        models[label] = (quantized(model, photos[:8], arguments), "int8")
    if args.accuracy_control:
        small = photos_at(args.photos, args.control_size, 4)
        label = (f"int8 accuracy control (>= {args.floor_db:g} dB on 4 photos "
                 f"at {args.control_size})")
        models[label] = (accuracy_controlled(model, small, args.floor_db), "int8")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        result: dict[str, object] = {
            "photos": len(photos), "size": args.size,
            "quality": quality(engines_for(models, cache, "dynamic"), photos, "fp32")}
        if not args.skip_speed:
            result["speed"] = speed(engines_for(models, cache, "static"), args)
    result["seconds"] = time.perf_counter() - started
    save(result, args)


def speed(engines: dict, args: argparse.Namespace) -> dict[str, object]:
    import peak

    from animegan_cli.tools.measure import interleaved_rates

    shapes = [(1, *map(int, s.split("x"))) for s in args.shapes.split(",")]
    rates = interleaved_rates({k: v for k, v in engines.items() if k != "fp32"}, shapes,
                              rounds=args.rounds, seconds=args.seconds)
    table: dict[str, dict] = {}
    for (label, shape), m in rates.items():
        table.setdefault(label, {})[f"{shape[1]}x{shape[2]}"] = m.images_per_second
    return {"img_per_s": table, "peak": peak.matmul_peak()}


def save(result: dict[str, object], args: argparse.Namespace) -> None:
    import peak

    name = args.name or f"int8_quality_{time.strftime('%Y-%m-%d')}_{peak.cpu_tag()}"
    lines = [f"# int8 recipes: PSNR from fp32, speed against bf16 ({peak.cpu_name()})", "",
             f"{result['photos']} photos at --size {result['size']}; calibrated on the first 8.",
             "", "| recipe | mean dB | worst dB | img/s per shape (x bf16) |", "|---|---|---|---|"]
    rates = result.get("speed", {}).get("img_per_s", {})  # type: ignore[union-attr]
    bf16 = rates.get("bf16", {})
    for label, q in {"bf16": None, **result["quality"]}.items():  # type: ignore[dict-item]
        if label == "bf16":
            q = result["quality"]["bf16"]  # type: ignore[index]
        cells = ", ".join(f"{s} {r:.2f} ({r / bf16[s]:.2f}x)"
                          for s, r in rates.get(label, {}).items() if bf16.get(s))
        lines.append(f"| {label} | {q['mean_db']:.1f} | {q['worst_db']:.1f} | {cells or '-'} |")
    if "speed" in result:
        lines += ["", f"Same-run matmul peak: {peak.describe(result['speed']['peak'])}"]  # type: ignore[index]
    markdown = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
