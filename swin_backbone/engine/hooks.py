"""Exact replay after ``--resume``: the random generators' states go into Runner checkpoints.

mmengine 0.10.7 checkpoints hold the model, optimizer, schedulers and message hub but no
generator state: a resumed run re-seeds from ``randomness.seed`` and so draws other flips
(``RandomFlip`` uses numpy's global generator) and other drop-path masks (torch's) than the
run it continues. :class:`RandomStateHook` stores, for every process, the states of Python's
``random``, numpy's global ``RandomState``, torch's CPU generator and the current CUDA
device's generator in each checkpoint, and puts them back when training resumes from it.

* **What is stored**: the states at the end of the training iteration (epoch) the checkpoint
  follows, i.e. those the next training step starts from. Validation runs between the two in
  an uninterrupted run but not in a resumed one, so the hook also keeps validation out of the
  training streams (states taken in ``before_val``, put back in ``after_val``); training
  randomness then does not depend on ``val_interval`` either.
* **When they come back**: in ``before_train``, after mmengine's ``resume`` (which re-seeds
  when the config's seed differs from the checkpoint's). ``IterBasedTrainLoop`` then
  fast-forwards its dataloader over the trained iterations, running the data pipeline (and
  drawing numbers) in the main process when ``num_workers=0``, so there the states are put
  back after that fast-forward, right before the first new batch. A checkpoint loaded with
  ``load_from`` but without ``resume`` (fine-tuning) leaves the generators alone.
* **Several processes**: ``Runner.save_checkpoint`` runs on rank 0 only (a collective there
  would hang), so the states of all ranks are gathered (``all_gather``, ~16 KB per rank)
  beforehand, on every rank, exactly where a ``CheckpointHook`` will save: after the training
  iterations (epochs) its ``interval``, ``save_begin`` and ``save_last`` select, with the
  conditions of mmengine 0.10.7's ``after_train_iter`` (``after_train_epoch``), and in
  ``before_val`` when it has ``save_best`` (``after_val_epoch`` saves the best checkpoint
  and, after a new best, the regular one again). Elsewhere only this rank's state is kept;
  a checkpoint saved there anyway holds one entry, and resuming from it warns as for
  another world size. On resume each rank takes its own entry; with another world size
  each rank sees other data anyway, so the hook warns and leaves the freshly seeded
  generators.
* **Not covered**: generators inside dataloader workers. mmengine seeds each worker from
  ``seed``, its rank and its id whenever workers start, which replays exactly, except with
  ``persistent_workers=True`` in an epoch-based loop (the workers' streams run on across
  epochs and die with the process). And an epoch-based loop resumed from a mid-epoch
  checkpoint (``CheckpointHook(by_epoch=False)``) reruns that whole epoch in mmengine.

Everything is stored as tensors, ints, floats and tuples, so checkpoints still load with
``torch.load(weights_only=True)`` and ``RUNNER_CHECKPOINT_GLOBALS``, without new globals.
``tools/train.py`` adds the hook to every run (:func:`with_random_state_hook`).
"""
from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from mmengine.dist import get_comm_device, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import IterBasedTrainLoop

from ..registry import HOOKS
from .save_points import checkpoint_hooks, saves_after_epoch, saves_after_iter, saves_after_val

__all__ = ['RandomStateHook', 'get_rng_state', 'lists_hook', 'set_rng_state',
           'with_random_state_hook']

RngState = dict[str, Any]


def get_rng_state() -> RngState:
    """This process's generator states, as types ``weights_only`` loading accepts.

    Returns:
        ``python``: ``random.getstate()`` (a tuple of ints); ``numpy``: the legacy
        ``RandomState`` as ``key`` (a ``(624,)`` int64 tensor; numpy's own uint32 array would
        need another dtype class allow-listed), ``pos``, ``has_gauss``, ``gauss``; ``torch``:
        the CPU generator, a ``(5056,)`` uint8 tensor; ``cuda``: the current device's
        generator, or None without CUDA.
    """
    _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return dict(
        python=random.getstate(),
        numpy=dict(key=torch.from_numpy(key.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), gauss=float(gauss)),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state() if torch.cuda.is_available() else None)


def set_rng_state(state: RngState) -> None:
    """Put back what :func:`get_rng_state` returned (tensors may come back on a GPU through
    the Runner's ``map_location``). A CUDA state is skipped when CUDA is unavailable."""
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state['numpy']
    np.random.set_state(('MT19937', np_state['key'].cpu().numpy().astype(np.uint32),
                         np_state['pos'], np_state['has_gauss'], np_state['gauss']))
    torch.set_rng_state(state['torch'].cpu())
    if state.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'].cpu())


def _all_gather_states(state: RngState) -> tuple[list[RngState], list[Any]]:
    """Every rank's ``state``: serialised with ``torch.save``, gathered as padded byte
    tensors, read back with ``weights_only=True``.

    Returns:
        The states, rank by rank, and the collectives' ``Work`` handles. The caller keeps the
        handles until its next gather: ``all_gather_object`` drops them on return, and a gloo
        worker thread that then frees the last reference to the tensors needs the GIL, which
        aborts the process if the interpreter is already shutting down (seen at the end of a
        2-process CPU run: ``terminate called without an active exception``).
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    device = get_comm_device()
    payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(get_world_size())]
    size_work = dist.all_gather(sizes, torch.tensor([payload.numel()], device=device),
                                async_op=True)
    size_work.wait()
    lengths = [int(size.item()) for size in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=device)
    padded[:payload.numel()] = payload
    gathered = [torch.empty_like(padded) for _ in lengths]
    work = dist.all_gather(gathered, padded, async_op=True)
    work.wait()
    states = [torch.load(io.BytesIO(data[:n].cpu().numpy().tobytes()), weights_only=True)
              for data, n in zip(gathered, lengths)]
    return states, [size_work, work, sizes, padded, gathered]


class _RestoreBeforeNextBatch:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator``: passes ``skip`` batches
    through (mmengine's fast-forward), then sets ``state`` and hands the loop back its own
    iterator before fetching the first new batch."""

    def __init__(self, loop: IterBasedTrainLoop, skip: int, state: RngState) -> None:
        self._loop, self._iterator = loop, loop.dataloader_iterator
        self._skip, self._state = skip, state

    def __iter__(self) -> _RestoreBeforeNextBatch:
        return self

    def __next__(self) -> Any:
        if self._skip > 0:
            self._skip -= 1
            return next(self._iterator)
        set_rng_state(self._state)
        self._loop.dataloader_iterator = self._iterator
        return next(self._iterator)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save every rank's generator states in checkpoints; restore them on resume.

    See the module docstring for what is stored, when it comes back and what is not covered.
    Checkpoints gain a top-level ``rng_states``: a list with one :func:`get_rng_state` dict
    per rank.
    """

    # After the other hooks' end-of-step work, before CheckpointHook ('VERY_LOW') saves.
    priority = 'LOW'

    def __init__(self) -> None:
        self._states: list[RngState] | None = None  # every rank's, after the last step
        self._before_val: RngState | None = None
        self._loaded: tuple[int, list[RngState] | None] | None = None  # (iter, states)
        self._checkpoint_hooks: list[CheckpointHook] = []
        self._in_flight: list[Any] = []  # the last gather's Work handles and tensors

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = (checkpoint.get('meta', {}).get('iter', -1),
                        checkpoint.get('rng_states'))

    def before_train(self, runner) -> None:
        self._checkpoint_hooks = checkpoint_hooks(runner)
        if self._loaded is None:
            return
        (at_iter, states), self._loaded = self._loaded, None
        if runner.iter == 0 or at_iter != runner.iter:
            return  # load_from without resume: a new run that keeps its own seed
        if states is None:
            runner.logger.warning('RandomStateHook: the checkpoint has no random states; '
                                  'the generators restart from the seed')
        elif len(states) != get_world_size():
            runner.logger.warning(
                f'RandomStateHook: the checkpoint has the random states of {len(states)} '
                f'processes, this run has {get_world_size()}: not restored, the generators '
                'restart from the seed')
        elif isinstance(runner.train_loop, IterBasedTrainLoop):
            loop = runner.train_loop
            loop.dataloader_iterator = _RestoreBeforeNextBatch(loop, runner.iter,
                                                               states[get_rank()])
        else:
            set_rng_state(states[get_rank()])

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        self._capture(gather=saves_after_iter(self._checkpoint_hooks, runner))

    def after_train_epoch(self, runner) -> None:
        self._capture(gather=saves_after_epoch(self._checkpoint_hooks, runner))

    def before_val(self, runner) -> None:
        if saves_after_val(self._checkpoint_hooks):
            self._capture(gather=True)  # for the saves in CheckpointHook.after_val_epoch
        self._before_val = get_rng_state()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            set_rng_state(self._before_val)
            self._before_val = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_states'] = self._states or [get_rng_state()]

    def _capture(self, gather: bool) -> None:
        """Keep this rank's states; with ``gather`` (a collective: every rank must get the
        same value) and several processes, every rank's."""
        state = get_rng_state()
        if gather and get_world_size() > 1:
            self._states, self._in_flight = _all_gather_states(state)
        else:
            self._states = [state]


def lists_hook(custom_hooks: list | None, name: str) -> bool:
    """Whether ``custom_hooks`` holds a hook of class ``name``: a config dict whose ``type``
    is the name (scoped or not) or the class, or a hook instance."""
    for hook in custom_hooks or []:
        kind = hook.get('type') if isinstance(hook, dict) else type(hook)
        if getattr(kind, '__name__', str(kind)).split('.')[-1] == name:
            return True
    return False


def with_random_state_hook(custom_hooks: list[dict] | None) -> list[dict]:
    """``custom_hooks`` plus ``RandomStateHook``, unless it lists one (by name or class)."""
    hooks = list(custom_hooks or [])
    if lists_hook(hooks, 'RandomStateHook'):
        return hooks
    return [*hooks, dict(type='swin_backbone.RandomStateHook')]
