"""The optimizer as a short text spec, so it can be recorded, hashed and rebuilt.

A sweep's optimizer must survive in `manifest.json` (resume, verify, the config
fingerprint), which an optax object cannot. So it is written as optax calls:

    adam                                     # learning rate from --lr
    clip_by_global_norm(1.0), adam           # a chain, applied in order
    sgd(0.01, momentum=0.9)
    adamw(weight_decay=1e-4)

Every name is a public optax function; arguments are literals (numbers,
strings, booleans, None) or nested calls. An optimizer that takes a
`learning_rate` and is not given one gets the sweep's `lr`. No spec (None) is
the reference recipe: torch.optim.Adam's defaults.

The engine applies the transform to each replica on its own (`per_replica`), so
transforms that reduce across parameters (clipping by global norm) stay exact.
"""

from __future__ import annotations

import ast
import inspect

import jax
import jax.numpy as jnp
import optax

from sweep.errors import SweepError, one_line


def reference_adam(lr: float) -> optax.GradientTransformation:
    # torch.optim.Adam's defaults: betas (0.9, 0.999), eps 1e-8.
    return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)


def build(spec: str | None, lr: float) -> optax.GradientTransformation:
    """The optax transform a spec describes (None: the reference Adam)."""
    if spec is None:
        return reference_adam(lr)
    try:
        tree = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        raise _bad(spec, "is not a list of optax calls") from None
    parts = tree.elts if isinstance(tree, ast.Tuple) else [tree]
    if not parts:
        raise _bad(spec, "is empty")
    transforms = [_call(node, spec, lr) for node in parts]
    return transforms[0] if len(transforms) == 1 else optax.chain(*transforms)


def check(spec: str | None) -> None:
    """Refuse a spec that does not build or cannot step, with one line saying why.

    Arguments optax accepts when building may still fail when the transform is
    applied (`adam(learning_rate='x')`); tracing one step on a tiny stand-in
    for two replicas' parameters (no compile, no data) finds that before any
    training does.
    """
    if spec is not None:
        if not isinstance(spec, str):
            raise SweepError(
                f"optimizer must be a spec string such as 'clip_by_global_norm(1.0), "
                f"adam', got {type(spec).__name__}"
            )
        tx = per_replica(build(spec, lr=1e-3))
        params = {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32)}

        def step(params):
            state = tx.init(params)
            updates, _ = tx.update(params, state, params)
            return optax.apply_updates(params, updates)

        try:
            jax.eval_shape(step, params)
        except Exception as e:  # whatever the transform raises when it runs
            raise _bad(spec, f"fails when applied: {one_line(e, limit=200)}") from None


def per_replica(tx: optax.GradientTransformation, *, shared_scalars: bool = True
                ) -> optax.GradientTransformation:
    """`tx` applied to each replica separately: state leaves gain the axis R.

    Updating the stacked parameters with one `tx.update` is only right for
    elementwise transforms (Adam); anything that reduces over parameters (a
    global norm) would mix replicas. vmapping init and update keeps them apart.

    A scalar state leaf (a step count, a scheduled hyperparameter) stays one
    scalar shared by all replicas when vmap can prove it is the same for every
    replica (it depends on no batched value; replicas step in lockstep).
    That keeps Adam's compiled update, and so its numbers bit for bit, what it
    was when the stacked parameters were updated at once: with an (R,) count
    XLA rewrites the bias-correction divisions differently and the last bit of
    some updates moves. A scalar leaf that does depend on the replica (a count
    of non-finite steps) makes vmap refuse; then every leaf gets the axis R.

    `shared_scalars=False` gives every leaf the axis R regardless: for replicas
    that do not step in lockstep (a replica that sits a step out keeps its own
    step count; `make_train_step(isolated=True)`).
    """

    def axes(state):
        if not shared_scalars:
            return jax.tree.map(lambda leaf: 0, state)
        return jax.tree.map(lambda leaf: None if jnp.ndim(leaf) == 0 else 0, state)

    def init(params):
        if not shared_scalars:
            return jax.vmap(tx.init)(params)
        one = jax.eval_shape(tx.init, jax.tree.map(lambda p: p[0], params))
        try:
            shared = axes(one)
            state = jax.vmap(tx.init, out_axes=shared)(params)
            jax.eval_shape(update, params, state, params)  # must stay shared too
            return state
        except ValueError:  # a scalar that differs per replica
            return jax.vmap(tx.init)(params)

    def update(updates, state, params=None):
        # A batched leaf always has the axis R, so the state says which is which.
        ax = axes(state)
        return jax.vmap(tx.update, in_axes=(0, ax, 0), out_axes=(0, ax))(
            updates, state, params
        )

    return optax.GradientTransformation(init, update)


def _call(node: ast.expr, spec: str, lr: float, top: bool = True):
    if isinstance(node, ast.Name):  # "adam" is "adam()"
        node = ast.Call(func=node, args=[], keywords=[])
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise _bad(spec, f"has {ast.unparse(node)!r} where an optax call belongs")
    name = node.func.id
    fn = getattr(optax, name, None)
    if name.startswith("_") or not callable(fn):
        raise _bad(spec, f"names {name!r}, which is not an optax function")
    args = [_value(a, spec, lr) for a in node.args]
    kwargs = {k.arg: _value(k.value, spec, lr) for k in node.keywords}
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
        given = bound.arguments.get("learning_rate")
        if isinstance(given, (str, bool)):  # optax builds it, then fails mid-step
            raise _bad(spec, f"gives {name} learning_rate={given!r}; it takes a "
                       "number or an optax schedule")
        if "learning_rate" in inspect.signature(fn).parameters:
            if "learning_rate" not in bound.arguments:
                kwargs["learning_rate"] = lr
        out = fn(*args, **kwargs)
    except SweepError:
        raise
    except Exception as e:  # whatever optax says about its own arguments
        raise _bad(spec, f"fails at {name}: {' '.join(str(e).split())}") from None
    if top and not isinstance(out, optax.GradientTransformation):
        raise _bad(spec, f"has {name}(...), which is not a gradient transformation")
    return out


def _value(node: ast.expr, spec: str, lr: float):
    if isinstance(node, (ast.Call, ast.Name)):
        return _call(node, spec, lr, top=False)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise _bad(spec, f"has {ast.unparse(node)!r}, which is not a literal") from None


def _bad(spec: str, why: str) -> SweepError:
    return SweepError(
        f"--optimizer {spec!r} {why} (e.g. 'clip_by_global_norm(1.0), adam')"
    )
