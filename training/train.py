"""Train the adder, evaluate it and store it as a new model version: `python -m training.train`."""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import rnn
from training.evaluate import evaluate, exhaustive_accuracy
from training.store import ModelStore

Progress = Callable[[int, int, float, float], None]  # step, max_steps, loss, accuracy


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run; the defaults are the fast trainer."""

    hidden_size: int = 16
    optimizer: str = "adam"
    learning_rate: float = 0.15
    beta1: float = 0.5  # Adam's first-moment decay; 0.5 reached 100% in fewer updates than 0.9
    batch_size: int = 32
    max_steps: int = 5000
    seed: int = 0
    bits: int = 8
    biases: bool = False
    check_every: int = 10
    target_accuracy: float = 1.0
    legacy_rng: bool = False
    preset: str | None = None


PRESETS = {
    # The original algorithm: per-sample SGD, lr 0.1, 10,000 updates, 16 units, no biases.
    "original": {
        "hidden_size": 16,
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "batch_size": 1,
        "max_steps": 10_000,
        "bits": 8,
        "biases": False,
        "check_every": 100,
        "legacy_rng": True,
    },
    "default": {},
}


def preset(name: str, **overrides: object) -> TrainConfig:
    """A named configuration, with explicit settings taking precedence."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], "preset": name, **overrides})


@dataclass
class TrainResult:
    """What a run produced: parameters, how long it took, and how the error fell."""

    params: rnn.Params
    steps: int
    seconds: float
    loss: float
    accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)


def validate(config: TrainConfig) -> None:
    """Refuse settings the trainer cannot honour, before any work is done."""
    if config.optimizer not in rnn.OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {sorted(rnn.OPTIMIZERS)}, got {config.optimizer!r}"
        )
    for name in ("hidden_size", "batch_size", "max_steps", "check_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1")
    if not 2 <= config.bits <= 64:
        raise ValueError("bits must be between 2 and 64")
    if not config.learning_rate > 0:
        raise ValueError("learning_rate must be positive")
    if not 0 <= config.beta1 < 1:
        raise ValueError("beta1 must be in [0, 1)")


def sources(config: TrainConfig) -> tuple[rnn.Params, Callable[[], tuple[np.ndarray, np.ndarray]]]:
    """Initial parameters and a sampler of training pairs, both from the config's seed.

    With legacy_rng the draws follow the original program: numpy's RandomState, the input,
    output and recurrent matrices in that order (row-vector layout), then a and b per update.
    """
    high = 1 << (config.bits - 1)  # operands below half the range, so sums never overflow
    size, count = config.hidden_size, config.batch_size
    if config.legacy_rng:
        legacy = np.random.RandomState(config.seed)
        params = {
            "w_i": (2 * legacy.random_sample((2, size)) - 1).T.copy(),
            "w_o": (2 * legacy.random_sample((size, 1)) - 1).T.copy(),
            "w_h": (2 * legacy.random_sample((size, size)) - 1).T.copy(),
        }
        if config.biases:
            params.update(b_h=np.zeros(size), b_o=np.zeros(1))
        return params, lambda: (legacy.randint(high, size=count), legacy.randint(high, size=count))
    rng = np.random.default_rng(config.seed)
    params = rnn.init_params(size, rng, config.biases)
    return params, lambda: (rng.integers(0, high, count), rng.integers(0, high, count))


def train(config: TrainConfig, on_progress: Progress | None = None) -> TrainResult:
    """Minimise the loss on random pairs until exhaustive accuracy reaches the target.

    Every check_every steps a check runs; it evaluates all pairs only once the current batch
    is itself at the target accuracy, since until then the whole set cannot be (at 100%).
    """
    validate(config)
    params, draw = sources(config)
    # One flat vector behind every parameter, so an optimizer step is a few array operations.
    names = list(params)
    flat = np.concatenate([params[k].ravel() for k in names])
    offsets = np.cumsum([0] + [params[k].size for k in names])
    params = {
        k: flat[offsets[i] : offsets[i + 1]].reshape(params[k].shape) for i, k in enumerate(names)
    }
    optimizer = (
        rnn.Adam(config.learning_rate, beta1=config.beta1)
        if config.optimizer == "adam"
        else rnn.OPTIMIZERS[config.optimizer](config.learning_rate)
    )
    history: list[dict[str, float | None]] = []
    started = time.perf_counter()
    running, count, updates = 0.0, 0, 0
    while True:
        x, y = rnn.batch(*draw(), config.bits)
        cache = rnn.forward(params, x)
        running, count = running + rnn.loss(cache["p"], y), count + 1
        last = updates == config.max_steps
        if last or (updates and updates % config.check_every == 0):
            exact = float(np.mean(np.all((cache["p"] > 0.5) == (y > 0.5), axis=0)))
            full = exhaustive_accuracy(params) if exact >= config.target_accuracy or last else None
            point = {
                "step": updates,
                "loss": running / count,
                "batch_accuracy": exact,
                "accuracy": full,
            }
            history.append(point)
            running, count = 0.0, 0
            if on_progress is not None:
                on_progress(
                    updates, config.max_steps, point["loss"], exact if full is None else full
                )
            if last or (full is not None and full >= config.target_accuracy):
                break
        grads = rnn.backward(params, cache, y)
        optimizer.step({"flat": flat}, {"flat": np.concatenate([grads[k].ravel() for k in names])})
        updates += 1
    seconds = time.perf_counter() - started
    final = history[-1]
    return TrainResult(
        {k: v.copy() for k, v in params.items()},
        updates,
        seconds,
        float(final["loss"]),
        float(final["accuracy"]),
        history,
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
    activate: bool,
    min_accuracy: float | None = None,
    on_progress: Progress | None = None,
) -> tuple[str, dict, bool]:
    """Train, evaluate, save a version; activate it only if it passes the accuracy gate."""
    result = train(config, on_progress)
    metrics = evaluate(result.params, seed=config.seed)
    metrics["final_loss"] = result.loss
    hyper = dataclasses.asdict(config)
    seed = hyper.pop("seed")
    record = {
        "hyperparameters": hyper,
        "seed": seed,
        "steps": result.steps,
        "training_seconds": round(result.seconds, 4),
        "metrics": metrics,
        "history": result.history,
        "parent": store.current(),
    }
    promoted = activate and (min_accuracy is None or metrics["accuracy_8bit"] >= min_accuracy)
    png = curve_png(result.history)
    extra = {"training_curve.png": png} if png else None
    version = store.save(result.params, record, activate=promoted, extra_files=extra)
    return version, store.record(version), promoted


def progress_line(stream=sys.stderr) -> Progress:
    """A refreshing one-line progress bar: step, loss, accuracy."""

    def show(step: int, max_steps: int, loss: float, accuracy: float) -> None:
        filled = int(30 * step / max_steps)
        bar = "#" * filled + "." * (30 - filled)
        stream.write(f"\r[{bar}] step {step}/{max_steps}  loss {loss:.4f}  accuracy {accuracy:.2%}")
        stream.flush()

    return show


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags; a preset fills in whatever is not given explicitly."""
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--optimizer", choices=sorted(rnn.OPTIMIZERS))
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--beta1", type=float, help="Adam's first-moment decay")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--bits", type=int, help="training width in bits")
    p.add_argument("--biases", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--check-every", type=int, help="steps between exhaustive checks")
    p.add_argument("--target-accuracy", type=float, help="stop once exhaustive accuracy reaches it")
    p.add_argument(
        "--model-dir", type=Path, default=Path(__file__).resolve().parent.parent / "models"
    )
    p.add_argument(
        "--activate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="make the result the active version (only if it reaches --min-accuracy)",
    )
    p.add_argument("--min-accuracy", type=float, default=1.0)
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit 0 when the model was stored (and activated, if asked and accurate)."""
    args = parse_args(argv)
    keys = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "preset"]
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    try:
        config = preset(args.preset, **overrides)
        validate(config)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    show = None if args.quiet else progress_line()
    version, record, promoted = train_and_save(
        config,
        ModelStore(args.model_dir),
        activate=args.activate,
        min_accuracy=args.min_accuracy,
        on_progress=show,
    )
    if show is not None:
        sys.stderr.write("\n")
    m = record["metrics"]
    print(f"version   {version}{'  (active)' if promoted else ''}")
    print(f"steps     {record['steps']} in {record['training_seconds']:.3f} s")
    print(f"loss      {m['final_loss']:.5f}")
    print(
        "accuracy  "
        + "  ".join(
            f"{k.removeprefix('accuracy_')} {v:.2%}"
            for k, v in m.items()
            if k.startswith("accuracy_")
        )
    )
    if args.activate and not promoted:
        print(
            f"not activated: 8-bit accuracy {m['accuracy_8bit']:.2%} is below "
            f"{args.min_accuracy:.2%}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
