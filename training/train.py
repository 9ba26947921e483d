"""Train the adder, gate it, certify it and store it as a new version: `python -m training.train`.

The default trainer has three phases: Adam on random 8-bit pairs until all 16,384 sums are exact;
then on longer pairs, many with long carry chains, until the promotion gate passes at max_bits
(what 8 bits teach does not always carry over to thousands of bits); then fine-tune rounds that
push hidden units towards 0 or 1, each followed by the gate and the certifier, until the
certifier proves the model exact at every width. Only a certified model may go live.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training import rnn
from training.certify import Verdict, certify
from training.config import (
    FIELDS,
    FINISH_SECONDS,
    PRESETS,
    ConfigError,
    TrainConfig,
    certify_budgets,
    config_fields,
    config_from_request,
    make_config,
    request_schema,
    restart_round,
    work_seconds_estimate,
)
from training.evaluate import evaluate, exhaustive_accuracy
from training.gate import quick_check, run_gate
from training.predictor import Predictor
from training.store import GateFailed, ModelStore, NotCertified

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"  # what the image ships

__all__ = [
    "FIELDS", "PRESETS", "ConfigError", "NotCertified", "TrainConfig", "TrainResult",
    "config_from_request", "main", "make_config", "request_schema", "train", "train_and_save",
    "work_seconds_estimate",
]

Progress = Callable[[int, int, float, float], None]  # step, max_steps, loss, accuracy
Draw = Callable[[int], tuple[np.ndarray, np.ndarray]]  # width -> operands a, b
DEFAULT_MAX_BITS = 4096
# Long pairs give larger gradients; at the full rate 2 of seeds 0-19 unlearnt 8 bits for good.
LONG_LEARNING_RATE_SCALE = 0.3
CERTIFICATE = "certificate.npz"  # a certified version's proof, beside its weights
RESTART_SEED = 0x5EED  # mixed into the seed for the restarted fine-tune's pairs


@dataclass
class TrainResult:
    """What a run produced: parameters, how long it took, how the error fell, gate, proof."""

    params: rnn.Params
    steps: int
    seconds: float
    loss: float
    accuracy: float
    history: list[dict] = field(default_factory=list)
    gate: dict | None = None
    gate_seconds: float = 0.0  # spent checking against the gate (quick and full), in seconds
    verdict: Verdict | None = None  # the certifier's verdict on params (None: it did not run)
    certify_seconds: float = 0.0  # spent in the certifier's search, every round
    finetune: list[dict] = field(default_factory=list)  # per round: steps, gate, verdict
    stopped: str | None = None  # why the run ended before its goal (the deadline), if it did

    @property
    def certified(self) -> bool:
        """Whether the certifier proved params exact at every width."""
        return self.verdict is not None and self.verdict.status == "certified"

    def certificate_summary(self) -> dict[str, Any]:
        """What the record keeps of the proof: status, method, classes, seconds, why not."""
        if self.verdict is None:
            if self.stopped:
                reason = self.stopped
            elif self.gate is not None and not self.gate["passed"]:
                reason = f"the gate failed at {self.gate['failed']}, so the certifier did not run"
            elif self.finetune:
                reason = f"no fine-tune round certified ({self._rounds_text()})"
            else:
                reason = "certification is off for this config (certify false)"
            return {"status": "unknown", "certified": False, "reason": reason,
                    "rounds": self.finetune}
        summary = {**self.verdict.summary, "status": self.verdict.status,
                   "certified": self.certified, "seconds": round(self.verdict.seconds, 4)}
        if not self.certified:
            summary["reason"] = self.stopped or self.verdict.reason
        if self.verdict.counterexample is not None:
            summary["counterexample"] = _jsonable(self.verdict.counterexample)
        summary["rounds"] = self.finetune
        return summary

    def _rounds_text(self) -> str:
        """Each round's outcome, for a message."""
        return ", ".join(e["status"] or ("gate passed" if e["gate"] else "gate failed")
                         for e in self.finetune)


def _jsonable(value: object) -> object:
    """Big ints as decimal strings (as the gate stores them), containers walked."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, float | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value) if abs(int(value)) < 2**53 else str(int(value))
    return str(value)


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


def _flat_params(params: rnn.Params) -> tuple[rnn.Params, np.ndarray, list[str]]:
    """Views of one flat vector behind every parameter, so an optimizer step is one update."""
    names = list(params)
    flat = np.concatenate([params[k].ravel() for k in names])
    offsets = np.cumsum([0] + [params[k].size for k in names])
    views = {k: flat[offsets[i] : offsets[i + 1]].reshape(params[k].shape)
             for i, k in enumerate(names)}
    return views, flat, names


class _Clock:
    """The run's wall-clock deadline; says why it stopped once it has passed."""

    def __init__(self, config: TrainConfig, deadline: float | None) -> None:
        self.started = time.perf_counter()
        self.limit = config.deadline_seconds
        self.deadline = self.started + self.limit if deadline is None else deadline

    def left(self) -> float:
        """Seconds until the deadline (negative once past)."""
        return self.deadline - time.perf_counter()

    def stop_reason(self, step: int) -> str:
        """The message of a run cut short."""
        return (f"stopped at the deadline ({self.limit:g} s) after {step} updates, "
                f"{time.perf_counter() - self.started:.1f} s")


def train(
    config: TrainConfig,
    on_progress: Progress | None = None,
    *,
    max_bits: int = DEFAULT_MAX_BITS,
    deadline: float | None = None,
) -> TrainResult:
    """Minimise the loss on random pairs until the goal of the config is reached.

    Every check_every updates a check runs. The exhaustive 8-bit check runs only once the batch
    is all exact (until then the whole set cannot be); the gate only once a quick subset passes,
    and after each full gate the next waits twice as many checks as the last wait (so a run
    gates at most config.max_gate_runs(checks) times). With config.certify, fine-tune rounds
    and the certifier follow. Nothing runs past `deadline` (time.perf_counter() seconds; by
    default config.deadline_seconds from now) but the one gate or certification under way,
    and that certification is itself given only the time left.
    """
    clock = _Clock(config, deadline)
    params, draw = sources(config)
    params, flat, names = _flat_params(params)
    optimizer = rnn.optimizer(config.optimizer, config.learning_rate, config.beta1)
    history: list[dict] = []
    gate: dict | None = None
    gate_seconds = 0.0
    width = config.bits
    running, count, step = 0.0, 0, 0
    check_index, next_gate, gate_wait = 0, 0, 1
    stopped: str | None = None
    done = False
    while True:
        if clock.left() <= 0:
            stopped = clock.stop_reason(step)
            break
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
                elif full == 1.0 and check_index >= next_gate:
                    checking = time.perf_counter()
                    if quick_check(predictor, max_bits):
                        gate = run_gate(predictor, max_bits)
                        done = gate["passed"]
                        next_gate, gate_wait = check_index + gate_wait, 2 * gate_wait
                    gate_seconds += time.perf_counter() - checking
                if full == 1.0 and not done and config.long_bits and width == config.bits:
                    # 8 bits learnt but not every width: now train on the long ones
                    width = config.long_bits
                    optimizer.learning_rate *= LONG_LEARNING_RATE_SCALE
            check_index += 1
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
    trained = {k: v.copy() for k, v in params.items()}
    if not history:  # stopped before the first check
        history.append({"step": step, "loss": running / max(count, 1), "bits": width,
                        "batch_accuracy": 0.0, "accuracy": exhaustive_accuracy(trained)})
    final = history[-1]
    result = TrainResult(
        trained,
        step,
        0.0,
        float(final["loss"]),
        float(final["accuracy"] if final["accuracy"] is not None
              else exhaustive_accuracy(trained)),
        history,
        gate,
        gate_seconds,
        stopped=stopped,
    )
    if config.certify and stopped is None:
        _certify_phase(result, config, draw, max_bits, clock, on_progress)
    result.seconds = time.perf_counter() - clock.started
    return result


def _finetune(params: rnn.Params, config: TrainConfig, draw: Draw, clock: _Clock,
              step: int, total: int, on_progress: Progress | None) -> tuple[int, float]:
    """One fine-tune round in place: Adam on long pairs, loss + saturation x mean h (1 - h).

    Returns the updates made (fewer than finetune_steps only at the deadline) and their loss.
    """
    views, flat, names = _flat_params(params)
    optimizer = rnn.Adam(config.finetune_learning_rate)
    width = config.long_bits or config.bits
    running, made = 0.0, 0
    for made in range(1, config.finetune_steps + 1):
        if clock.left() <= 0:
            made -= 1
            break
        x, y = rnn.batch(*draw(width), width)
        value, grads = rnn.loss_and_grads(views, x, y, config.saturation)
        running += value
        optimizer.step({"flat": flat}, {"flat": np.concatenate([grads[k].ravel() for k in names])})
        if on_progress is not None and made % config.check_every == 0:
            on_progress(step + made, total, value, 1.0)
    params.update({k: v.copy() for k, v in views.items()})
    return made, running / max(made, 1)


def _certify_phase(result: TrainResult, config: TrainConfig, draw: Draw, max_bits: int,
                   clock: _Clock, on_progress: Progress | None) -> None:
    """Fine-tune rounds, each followed by the gate and the certifier, until one certifies.

    A round starts from the last one's weights, but config.restart_round starts again from the
    trained ones on fresh pairs. The gate runs first (it is the fast falsifier, and a fine-tune
    can break a model); the certifier only on a model that passes it, with the budget of
    config.certify_budgets. The result takes the first certified weights; if none certify, it
    keeps the trained ones.
    """
    if result.gate is None or result.gate["max_bits"] != max_bits:
        result.gate = run_gate(Predictor(result.params), max_bits)
    if not result.gate["passed"]:
        return
    current = {k: v.copy() for k, v in result.params.items()}
    total = result.steps + config.finetune_rounds * config.finetune_steps
    step = result.steps
    for number in range(1, max(config.finetune_rounds, 1) + 1):
        if number == restart_round(config):
            current = {k: v.copy() for k, v in result.params.items()}
            draw = sources(dataclasses.replace(config, seed=config.seed ^ RESTART_SEED))[1]
        entry: dict[str, Any] = {"round": number, "steps": 0, "gate": None, "status": None}
        result.finetune.append(entry)
        started = time.perf_counter()
        loss = result.loss
        if config.finetune_rounds:
            made, loss = _finetune(current, config, draw, clock, step, total, on_progress)
            step += made
            entry.update(steps=made, loss=loss)
        accuracy = exhaustive_accuracy(current)
        gate = run_gate(Predictor(current), max_bits) if accuracy == 1.0 else None
        entry["gate"] = gate is not None and gate["passed"]
        if clock.left() <= 0:
            result.stopped = clock.stop_reason(step)
        elif gate is not None and gate["passed"] and certify_budgets(config)[number - 1]:
            budget = certify_budgets(config)[number - 1]
            # a new seed each round: the search's sampling differs, not only the weights
            verdict = certify(current, time_limit=min(budget, clock.left()), seed=number)
            result.certify_seconds += verdict.seconds
            entry.update(status=verdict.status, certify_seconds=round(verdict.seconds, 4))
            if not config.finetune_rounds:
                result.verdict = verdict  # the trained weights' own verdict
            if verdict.status == "certified":
                result.params, result.gate, result.verdict = current, gate, verdict
                result.steps, result.accuracy, result.loss = step, accuracy, float(loss)
                result.history.append({"step": step, "loss": float(loss),
                                       "bits": config.long_bits or config.bits,
                                       "batch_accuracy": 1.0, "accuracy": accuracy})
        entry["seconds"] = round(time.perf_counter() - started, 4)
        if result.certified or result.stopped:
            return
        if on_progress is not None:
            on_progress(step, total, float(loss), accuracy)


def curve_available() -> bool:
    """Whether matplotlib (an optional extra) is installed, without importing it."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


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
    curve: bool = False,
) -> tuple[str, dict]:
    """Train, gate, certify and save a version; with activate, it goes live only if certified.

    The certificate is stored beside the weights (certificate.npz) and its summary in the record
    ("certificate"). Returns the version id and its record. With activate, a version that fails
    the gate raises GateFailed and one that is not certified NotCertified; either stays saved,
    inactive. With curve, the training curve is drawn too (training_curve.png, if matplotlib is
    installed).
    """
    started = time.perf_counter()
    reserve = min(FINISH_SECONDS, config.deadline_seconds / 10)  # for evaluating and saving
    result = train(config, on_progress, max_bits=max_bits,
                   deadline=started + config.deadline_seconds - reserve)
    gate = result.gate or run_gate(Predictor(result.params), max_bits)
    metrics = evaluate(result.params, seed=config.seed)
    metrics["final_loss"] = result.loss
    hyper = config_fields(config)
    summary = result.certificate_summary()
    record = {
        "hyperparameters": hyper,
        "seed": hyper.pop("seed"),
        "steps": result.steps,
        "training_seconds": round(result.seconds, 4),
        "metrics": metrics,
        "history": result.history,
        "parent": store.current(),
        "gate": gate,
        "certificate": summary,
    }
    extra: dict[str, bytes] = {}
    if result.certified:
        assert result.verdict is not None and result.verdict.certificate is not None
        extra[CERTIFICATE] = result.verdict.certificate.to_bytes()
    if curve and (png := curve_png(result.history)):
        extra["training_curve.png"] = png
    version = store.save(result.params, record, extra_files=extra, max_bits=max_bits)
    if activate:  # the store re-runs the gate and re-verifies the certificate it goes live on
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
    p.add_argument("--keep-models", type=positive, default=None, metavar="N",
                   help="after saving, keep only the newest N versions (and CURRENT, LAST_GOOD "
                   "and pinned ones), as the service's RNNADD_MODEL_HISTORY; default: keep all")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--curve", action="store_true",
                   help="also draw the training curve (training_curve.png; needs matplotlib)")
    return p.parse_args(argv)


def positive(text: str) -> int:
    """A whole number of at least 1, for argparse."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit 0 when the model was stored (and activated, if asked), 1 if it failed
    the gate or was not certified (then it is saved, not activated), 2 for bad flags."""
    args = parse_args(argv)
    values = {k: getattr(args, k) for k in FIELDS if getattr(args, k) is not None}
    try:
        config = make_config(values, bound_work=False)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    show = None if args.quiet else progress_line()
    store = ModelStore(args.model_dir, history=args.keep_models)
    if args.activate and Path(args.model_dir).resolve() == BUNDLED_DIR.resolve():
        print(f"note: this trains into {BUNDLED_DIR.name}/ of the checkout and, if the model is "
              "certified, changes its CURRENT: the model `make serve` and the image ship. Use "
              "--model-dir DIR to train elsewhere.", file=sys.stderr)
    if args.curve and not curve_available():
        print("note: --curve needs matplotlib (pip install matplotlib); no curve is drawn",
              file=sys.stderr)
    refused = None
    try:
        version, record = train_and_save(config, store, activate=args.activate,
                                          max_bits=args.max_bits, on_progress=show,
                                          curve=args.curve)
    except (GateFailed, NotCertified) as exc:
        version = exc.path.parent.name
        record = store.record(version)
        refused = exc
    if show is not None:
        sys.stderr.write("\n")
    m, gate, cert = record["metrics"], record["gate"], record["certificate"]
    active = store.current() == version
    print(f"version   {version}{'  (active)' if active else ''}")
    print(f"steps     {record['steps']} in {record['training_seconds']:.3f} s")
    print(f"loss      {m['final_loss']:.5f}")
    print("accuracy  " + "  ".join(f"{k.removeprefix('accuracy_')} {v:.2%}"
                                   for k, v in m.items() if k.startswith("accuracy_")))
    print(f"gate      {'passed' if gate['passed'] else 'FAILED at ' + str(gate['failed'])} "
          f"up to {gate['max_bits']} bits ({gate['seconds']:.2f} s)")
    if cert["certified"]:
        print(f"certified every width ({cert.get('method')}, {cert.get('classes')} classes, "
              f"search {cert['seconds']:.2f} s, {len(cert['rounds'])} fine-tune round(s))")
    else:
        print(f"certified NO: {cert['status']}: {cert.get('reason')}")
    if isinstance(refused, GateFailed):
        print(f"not activated: the gate failed at {gate['failed']}", file=sys.stderr)
    elif refused is not None:
        print(f"not activated: not certified ({cert['status']}: {cert.get('reason')})",
              file=sys.stderr)
    return 1 if refused is not None else 0


if __name__ == "__main__":
    sys.exit(main())
