"""The generated JAX modules against optax's own losses: ``jax.jit(jax.value_and_grad(...))``, float32, CPU.

Four pairs at 2^20 elements: bce_logits against ``optax.sigmoid_binary_cross_entropy``, cross_entropy (class
indices, 1024 rows of 1024 classes) against ``optax.softmax_cross_entropy_with_integer_labels``, huber against
``optax.huber_loss`` and mse against ``optax.l2_loss`` (half the squared error, so the reference is twice its
mean). Each side is the mean over the batch and its gradient with respect to the prediction, compiled once by
``jax.jit`` (compilation is not timed); lossforge's gradient is its ``jax.custom_vjp``'s derived backward, optax's
JAX's autodiff of its forward. Values and gradients are checked to agree (rtol 1e-5 of the largest entry, see
``_timing.disagreement``) before timing; times are alternated medians, each call blocked until its result is
ready.
"""

from __future__ import annotations

import _timing as T
import numpy as np

import lossforge as lf

N = 2**20
CLASSES = 1024
RTOL = 1e-5


def cases():
    """``(loss, reference label, lossforge fn, optax fn, arrays)``, each fn ``f(prediction, target) -> mean``."""
    import jax.numpy as jnp
    import optax

    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal(N) * 4, jnp.float32)
    labels = jnp.asarray(rng.random(N) < 0.5, jnp.float32)
    pred, target = (jnp.asarray(rng.standard_normal(N), jnp.float32) for _ in range(2))
    rows = jnp.asarray(rng.standard_normal((N // CLASSES, CLASSES)) * 3, jnp.float32)
    classes = jnp.asarray(rng.integers(0, CLASSES, N // CLASSES), jnp.int32)
    module = {name: lf.compile(lf.builtin(name), "jax") for name in ("bce_logits", "cross_entropy", "huber", "mse")}
    return [
        ("bce_logits", "optax.sigmoid_binary_cross_entropy", module["bce_logits"].loss,
         lambda x, t: optax.sigmoid_binary_cross_entropy(x, t).mean(), (logits, labels)),
        ("cross_entropy", "optax.softmax_cross_entropy_with_integer_labels", module["cross_entropy"].loss,
         lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean(), (rows, classes)),
        ("huber", "optax.huber_loss", module["huber"].loss,
         lambda x, t: optax.huber_loss(x, t, delta=1.0).mean(), (pred, target)),
        ("mse", "2 * optax.l2_loss", module["mse"].loss,
         lambda x, t: 2.0 * optax.l2_loss(x, t).mean(), (pred, target)),
    ]


def jax_speed(reps: int) -> None:
    """Section 6."""
    import jax
    import optax

    rows, failures = [], []
    for name, label, ours, theirs, arrays in cases():
        fns = {}
        for side, fn in (("lossforge", ours), ("optax", theirs)):
            step = jax.jit(jax.value_and_grad(fn))

            def call(step=step, arrays=arrays):
                value, grad = step(*arrays)
                return value.block_until_ready(), grad.block_until_ready()

            fns[side] = call
        got, want = fns["lossforge"](), fns["optax"]()  # (the first call compiles)
        failures += T.mismatches(f"{name} lossforge vs {label}", got, want, RTOL)
        if failures:
            continue
        with T.OtherLoad() as load:
            res = T.alternated(fns, reps)
        shape = "x".join(map(str, arrays[0].shape))
        rows.append([name, shape, label, T.seconds(res["lossforge"].median), T.seconds(res["optax"].median),
                     T.ratio(res["lossforge"].median, res["optax"].median), f"{load.share:.0%}"])
    if failures:
        T.fail("lossforge disagrees with optax:\n" + "\n".join(failures))
    notes = [f"jax {jax.__version__} ({jax.default_backend()}), optax {optax.__version__}; float32, 2^20 elements, "
             f"{reps} repetitions each; jax.jit(jax.value_and_grad(mean loss)), compilation not timed",
             T.OTHERS_NOTE]
    T.table("6. JAX value_and_grad under jax.jit against optax, float32 (median per call)",
            ["loss", "shape", "optax reference", "lossforge", "optax", "lf/optax", "others"], rows, "lllrrrr", notes)


if __name__ == "__main__":
    jax_speed(11)
