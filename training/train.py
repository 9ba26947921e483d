"""Train the adder, gate it and store it as a new model version: `python -m training.train`.

The default trainer has two phases: Adam on random 8-bit pairs until all 16,384 sums are exact,
then on longer pairs, many with long carry chains, until the promotion gate passes at max_bits;
what 8 bits teach does not always carry over to thousands of bits.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import rnn
from training.config import (
    FIELDS,
    PRESETS,
    ConfigError,
    TrainConfig,
    config_fields,
    config_from_request,
    make_config,
    request_schema,
    work_seconds_estimate,
)
from training.evaluate import evaluate, exhaustive_accuracy
from training.gate import quick_check, run_gate
from training.predictor import Predictor
from training.store import GateFailed, ModelStore

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"  # what the image ships

__all__ = [
    "FIELDS", "PRESETS", "ConfigError", "TrainConfig", "TrainResult", "config_from_request",
    "main", "make_config", "request_schema", "train", "train_and_save", "work_seconds_estimate",
]

Progress = Callable[[int, int, float, float], None]  # step, max_steps, loss, accuracy
Draw = Callable[[int], tuple[np.ndarray, np.ndarray]]  # width -> operands a, b
DEFAULT_MAX_BITS = 4096
# Long pairs give larger gradients; at the full rate 2 of seeds 0-19 unlearnt 8 bits for good.
LONG_LEARNING_RATE_SCALE = 0.3


@dataclass
class TrainResult:
    """What a run produced: parameters, how long it took, how the error fell, the gate."""

    params: rnn.Params
    steps: int
    seconds: float
    loss: float
    accuracy: float
    history: list[dict] = field(default_factory=list)
    gate: dict | None = None
    gate_seconds: float = 0.0  # spent checking against the gate (quick and full), in seconds


def sources(config: TrainConfig) -> tuple[rnn.Params, Draw]:
    """Initial parameters and a sampler of training pairs, both from the config's seed.

    The original preset draws exactly as the original program: np.random.seed(seed), then
    w_i (H, 2), w_o (1, H), w_h (H, H) as 2 * random - 1, then a and b with randint per update.
    """
    size, count = config.hidden_size, config.batch_size
    if config.preset == "original":
        legacy = np.random.RandomState(config.seed)
        params = {
            "w_i": 2 * legacy.random_sample((size, 2)) - 1,
            "w_o": 2 * legacy.random_sample((1, size)) - 1,
            "w_h": 2 * legacy.random_sample((size, size)) - 1,
        }
        if config.biases:
            params.update(b_h=np.zeros(size), b_o=np.zeros(1))

        def draw_legacy(width: int) -> tuple[np.ndarray, np.ndarray]:
            high = 1 << (width - 1)
            return legacy.randint(high, size=count), legacy.randint(high, size=count)

        return params, draw_legacy
    rng = np.random.default_rng(config.seed)
    params = rnn.init_params(size, rng, config.biases)

    def draw(width: int) -> tuple[np.ndarray, np.ndarray]:
        high = 1 << (width - 1)  # operands below half the range, so sums never overflow
        a, b = rng.integers(0, high, count), rng.integers(0, high, count)
        if width > config.bits:
            # half the batch: b nearly the complement of a, so carries run across the operands
            half = count // 2
            b[:half] = ((high - 1) ^ a[:half]) + rng.integers(1, 16, half)
            b[:half] &= high - 1
        return a, b

    return params, draw


def train(
    config: TrainConfig, on_progress: Progress | None = None, *, max_bits: int = DEFAULT_MAX_BITS
) -> TrainResult:
    """Minimise the loss on random pairs until the goal of the config is reached.

    Every check_every updates a check runs. The exhaustive 8-bit check runs only once the batch
    is all exact (until then the whole set cannot be); the gate only once a quick subset passes.
    """
    params, draw = sources(config)
    # One flat vector behind every parameter, so an optimizer step is a few array operations.
    names = list(params)
    flat = np.concatenate([params[k].ravel() for k in names])
    offsets = np.cumsum([0] + [params[k].size for k in names])
    params = {k: flat[offsets[i] : offsets[i + 1]].reshape(params[k].shape)
              for i, k in enumerate(names)}
    optimizer = rnn.optimizer(config.optimizer, config.learning_rate, config.beta1)
    history: list[dict] = []
    gate: dict | None = None
    gate_seconds = 0.0
    width = config.bits
    started = time.perf_counter()
    running, count, step = 0.0, 0, 0
    while True:
        x, y = rnn.batch(*draw(width), width)
        cache = rnn.forward(params, x)
        running, count = running + rnn.loss(cache["p"], y), count + 1
        last = step == config.max_steps
        if last or (step and step % config.check_every == 0):
            exact = float(np.mean(np.all((cache["p"] > 0.5) == (y > 0.5), axis=0)))
            full, done, gate = None, False, None
            if last or exact == 1.0:
                predictor = Predictor(params)
                full = exhaustive_accuracy(predictor)
                if full == 1.0 and not config.long_bits:
                    done = True
                elif full == 1.0:
                    checking = time.perf_counter()
                    if quick_check(predictor, max_bits):
                        gate = run_gate(predictor, max_bits)
                        done = gate["passed"]
                    gate_seconds += time.perf_counter() - checking
                if full == 1.0 and not done and config.long_bits and width == config.bits:
                    # 8 bits learnt but not every width: now train on the long ones
                    width = config.long_bits
                    optimizer.learning_rate *= LONG_LEARNING_RATE_SCALE
            point = {"step": step, "loss": running / count, "bits": x.shape[0],
                     "batch_accuracy": exact, "accuracy": full}
            history.append(point)
            running, count = 0.0, 0
            if on_progress is not None:
                on_progress(step, config.max_steps, point["loss"], exact if full is None else full)
            if last or (done and config.early_stop):
                break
        grads = rnn.backward(params, cache, y)
        optimizer.step({"flat": flat}, {"flat": np.concatenate([grads[k].ravel() for k in names])})
        step += 1
    seconds = time.perf_counter() - started
    final = history[-1]
    accuracy = final["accuracy"]
    return TrainResult(
        {k: v.copy() for k, v in params.items()},
        step,
        seconds,
        float(final["loss"]),
        float(accuracy if accuracy is not None else exhaustive_accuracy(params)),
        history,
        gate,
        gate_seconds,
    )
def curve_png(history: list[dict[str, float]]) -> bytes | None:
    """The picture of errors falling, when matplotlib (an optional extra) is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [h["step"] for h in history]
    fig, left = plt.subplots(figsize=(7, 4))
    left.semilogy(steps, [h["loss"] for h in history], color="tab:red")
    left.set_xlabel("update")
    left.set_ylabel("loss (1/2 squared error per pair)", color="tab:red")
    right = left.twinx()
    right.plot(
        steps,
        [1.0 - h["batch_accuracy"] for h in history],
        color="tab:blue",
        label="wrong sums in the batch",
    )
    checked = [h for h in history if h["accuracy"] is not None]
    right.plot(
        [h["step"] for h in checked],
        [1.0 - h["accuracy"] for h in checked],
        "o",
        color="tab:green",
        label="wrong sums, all 16,384 pairs",
    )
    right.set_ylabel("fraction of wrong sums")
    right.legend(loc="upper right")
    left.set_title("rnnadd training")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def train_and_save(
    config: TrainConfig,
    store: ModelStore,
    *,
    activate: bool = False,
    max_bits: int = DEFAULT_MAX_BITS,
    on_progress: Progress | None = None,
) -> tuple[str, dict]:
    """Train, gate and save a version; with activate, it goes live only if it passes the gate.

    Returns the version id and its record; a failed gate with activate raises GateFailed
    (the version stays saved, inactive).
    """
    result = train(config, on_progress, max_bits=max_bits)
    gate = result.gate or run_gate(Predictor(result.params), max_bits)
    metrics = evaluate(result.params, seed=config.seed)
    metrics["final_loss"] = result.loss
    hyper = config_fields(config)
    record = {
        "hyperparameters": hyper,
        "seed": hyper.pop("seed"),
        "steps": result.steps,
        "training_seconds": round(result.seconds, 4),
        "metrics": metrics,
        "history": result.history,
        "parent": store.current(),
        "gate": gate,
    }
    png = curve_png(result.history)
    extra = {"training_curve.png": png} if png else None
    version = store.save(result.params, record, extra_files=extra, max_bits=max_bits)
    if activate:
        store.activate(version, max_bits=max_bits)
    return version, store.record(version)


def progress_line(stream=sys.stderr) -> Progress:
    """A refreshing one-line progress bar: step, loss, accuracy."""

    def show(step: int, max_steps: int, loss: float, accuracy: float) -> None:
        filled = int(30 * step / max_steps)
        bar = "#" * filled + "." * (30 - filled)
        stream.write(f"\r[{bar}] step {step}/{max_steps}  loss {loss:.4f}  accuracy {accuracy:.2%}")
        stream.flush()

    return show


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags from FIELDS (a preset fills in whatever is not given), plus where to store."""
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    for name, spec in FIELDS.items():
        flags = [f"--{name.replace('_', '-')}"] + (["--lr"] if name == "learning_rate" else [])
        if spec.kind is bool:
            p.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{spec.help} (default {spec.default})")
        elif spec.kind is str:
            p.add_argument(*flags, dest=name, choices=spec.choices, default=None,
                           help=f"{spec.help} (default {spec.default})")
        else:
            low, high = ("(" if spec.exclusive_minimum else "["), (
                ")" if spec.exclusive_maximum else "]")
            p.add_argument(*flags, dest=name, type=spec.kind, default=None,
                           help=f"{spec.help}; in {low}{spec.minimum:g}, {spec.maximum:g}{high} "
                           f"(default {spec.default})")
    p.add_argument("--model-dir", type=Path,
                   default=BUNDLED_DIR,
                   help="the model store (default: the bundled models/)")
    p.add_argument("--activate", action=argparse.BooleanOptionalAction, default=True,
                   help="make the result the active version, if it passes the promotion gate")
    p.add_argument("--max-bits", type=int, default=DEFAULT_MAX_BITS,
                   help="widest sum the gate checks (the service's RNNADD_MAX_BITS)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit 0 when the model was stored (and activated, if asked), 1 if it failed
    the gate, 2 for bad flags."""
    args = parse_args(argv)
    values = {k: getattr(args, k) for k in FIELDS if getattr(args, k) is not None}
    try:
        config = make_config(values, bound_work=False)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    show = None if args.quiet else progress_line()
    store = ModelStore(args.model_dir)
    if args.activate and Path(args.model_dir).resolve() == BUNDLED_DIR.resolve():
        print(f"note: this trains into {BUNDLED_DIR.name}/ of the checkout and, if the gate "
              "passes, changes its CURRENT: the model `make serve` and the image ship. Use "
              "--model-dir DIR to train elsewhere.", file=sys.stderr)
    code = 0
    try:
        version, record = train_and_save(config, store, activate=args.activate,
                                          max_bits=args.max_bits, on_progress=show)
    except GateFailed as exc:
        version = exc.path.parent.name
        record = store.record(version)
        code = 1
    if show is not None:
        sys.stderr.write("\n")
    m, gate = record["metrics"], record["gate"]
    active = store.current() == version
    print(f"version   {version}{'  (active)' if active else ''}")
    print(f"steps     {record['steps']} in {record['training_seconds']:.3f} s")
    print(f"loss      {m['final_loss']:.5f}")
    print("accuracy  " + "  ".join(f"{k.removeprefix('accuracy_')} {v:.2%}"
                                   for k, v in m.items() if k.startswith("accuracy_")))
    print(f"gate      {'passed' if gate['passed'] else 'FAILED at ' + str(gate['failed'])} "
          f"up to {gate['max_bits']} bits ({gate['seconds']:.2f} s)")
    if code:
        print(f"not activated: the gate failed at {gate['failed']}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
